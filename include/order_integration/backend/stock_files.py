"""Stock files the backend drops in ``stock_dir``: names, parsing and validation.

Contract (binding, from the backend)
------------------------------------
Any ``*.csv`` in ``stock_dir`` whose name does not start with ``.`` (a dot marks a file still
being written). UTF-8, a BOM is tolerated. One header row naming the columns ``sku``,
``quantity``, ``as_of`` and optionally ``location``, in any order; a missing, unknown or
repeated column makes the whole file invalid. Empty lines are ignored. Each row is the
*absolute* quantity available for sale of ``sku`` at ``as_of``, not a delta.

Row rules (a broken row is a :class:`RowError` naming the rule and the value; the other rows
of the file still count):

* ``sku`` is present (at most 128 characters);
* ``quantity`` is a whole number of units, ``0`` or more, written with digits only: a
  negative (``-2``), fractional (``1.5``, also ``3.0``) or non-numeric (``ten``) quantity is
  refused, so is one beyond 2,147,483,647 (what WooCommerce and the ledger store);
* ``as_of`` is ISO 8601 *with* a UTC designator (``Z`` or ``+00:00``): a missing, naive or
  other-offset time is refused (the newest-wins rule compares these times);
* ``location`` (optional) names where the quantity is available. What it means depends on
  the storefront: one that keeps a level per location (``per_location``, e.g. Shopify) takes
  the level of the SKU *at that location* (the store config maps the name to the platform's
  location; a row without one is the default location's); one that keeps one level per SKU
  (WooCommerce) needs the SKU's total over all locations, and the name is only recorded in the
  ledger for operators — two rows of one SKU are then duplicates whatever their locations.

Duplicates in one file (rows of the same *level*: the same SKU, and with ``per_location`` the
same location): the row with the newest ``as_of`` wins and the older ones are *superseded*
(counted as stale). Rows at the same newest ``as_of`` with the same quantity are one level (the
repeats are *repeated*, counted as unchanged); with different quantities they contradict each
other and all of them are refused — no level is taken for it from this file.

A half-written file: names are the upload protocol (a file is written under a dot name and
renamed when complete), as for status files. Still, a file whose last byte is not a line
break may have been cut off, and a cut-off quantity is a valid but wrong number (``120``
read as ``12``); its last row is refused as possibly truncated. A quote left open or another
CSV syntax error refuses the rest of the file from that line; the rows before it count.

``line_number`` counts physical lines with the header as line 1 (the line where a record starts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

import pendulum

from order_integration.backend.status_files import (
    check_header,
    list_status_files,
    parse_utc_time,
    read_csv_records,
)

#: Required columns, in contract order (a file may order them differently).
STOCK_COLUMNS: tuple[str, ...] = ("sku", "quantity", "as_of")
#: Optional columns.
STOCK_OPTIONAL_COLUMNS: tuple[str, ...] = ("location",)
#: The largest quantity we accept (a signed 32-bit integer, as WooCommerce and the ledger keep it).
MAX_QUANTITY = 2**31 - 1
#: The longest SKU the ledger keeps.
MAX_SKU_LENGTH = 128
_DIGITS = re.compile(r"[0-9]+")
_NEGATIVE = re.compile(r"-\s*[0-9]+(?:[.,][0-9]*)?")
_FRACTION = re.compile(r"\+?[0-9]*[.,][0-9]+|\+?[0-9]+[.,]")
_BOM = "\ufeff"
_ECHO = 60


@dataclass(frozen=True, slots=True)
class StockRow:
    """One valid row of a stock file."""

    line_number: int
    sku: str
    quantity: int
    as_of: pendulum.DateTime
    location: str | None = None


@dataclass(frozen=True, slots=True)
class RowError:
    """A row (or, with an empty ``sku``, a part of the file) that cannot be applied."""

    line_number: int
    sku: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"line_number": self.line_number, "sku": self.sku, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Superseded:
    """A valid row that this file itself makes moot: ``kind`` is ``stale`` (a newer row of the
    SKU is in the file) or ``repeated`` (an identical level at the same ``as_of``)."""

    row: StockRow
    kind: str
    by_line: int


@dataclass(slots=True)
class ParsedStockFile:
    """What a stock file holds, every row accounted for exactly once:

    ``rows`` (one per level — per SKU, or per SKU and location — to apply, in file order),
    ``superseded`` (moot
    duplicates), ``errors`` (refused rows). ``file_error`` is set when nothing of the file
    could be read (encoding, header); ``errors`` then says why too."""

    rows: list[StockRow] = field(default_factory=list)
    superseded: list[Superseded] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    file_error: str | None = None

    @property
    def row_count(self) -> int:
        """Data rows read (valid or not); a file-level error counts as one."""
        return len(self.rows) + len(self.superseded) + len(self.errors)


def list_stock_files(names: Iterable[str]) -> list[str]:
    """The stock files among ``names`` (a directory listing): ``*.csv`` not starting with ``.``,
    sorted — the same rule as for status files."""
    return list_status_files(names)


def _echo(value: str) -> str:
    return repr(value if len(value) <= _ECHO else value[:_ECHO] + "…")


def parse_quantity(value: str) -> int | str:
    """A quantity cell as units, or the reason it is refused (see the module docstring)."""
    if not value:
        return "quantity is missing"
    if _DIGITS.fullmatch(value):
        significant = value.lstrip("0") or "0"
        # length first: int() refuses more than 4,300 digits with a ValueError (found by fuzzing)
        if len(significant) > len(str(MAX_QUANTITY)) or int(significant) > MAX_QUANTITY:
            return f"quantity {_echo(value)} is too large (at most {MAX_QUANTITY})"
        return int(significant)
    if _NEGATIVE.fullmatch(value):
        return f"quantity {_echo(value)} is negative"
    if _FRACTION.fullmatch(value):
        return f"quantity {_echo(value)} is fractional; stock is counted in whole units"
    return f"quantity {_echo(value)} is not a whole number"


def _row(line_number: int, values: dict[str, str],
         times: dict[str, pendulum.DateTime | str]) -> StockRow | RowError:
    sku = values["sku"]
    problems: list[str] = []
    if not sku:
        problems.append("sku is missing")
    elif len(sku) > MAX_SKU_LENGTH:
        problems.append(f"sku {_echo(sku)} is longer than {MAX_SKU_LENGTH} characters")
    quantity = parse_quantity(values["quantity"])
    if isinstance(quantity, str):
        problems.append(quantity)
    as_of = times.get(values["as_of"])
    if as_of is None:  # a file's rows mostly share one as_of: parse each text once
        as_of = times[values["as_of"]] = parse_utc_time(values["as_of"], "as_of")
    if isinstance(as_of, str):
        problems.append(as_of)
    if problems or isinstance(quantity, str) or isinstance(as_of, str):
        return RowError(line_number, sku, "; ".join(problems))
    return StockRow(line_number, sku, quantity, as_of, values.get("location") or None)


def resolve_duplicates(
    rows: Iterable[StockRow], key: Callable[[StockRow], Hashable], *, one_level_per_sku: bool = True
) -> tuple[list[StockRow], list[Superseded], list[RowError]]:
    """Rows of one level (same ``key``) reduced to one: (winners in line order, superseded, errors).

    The newest ``as_of`` wins; older rows are superseded as stale; equal rows at the newest
    ``as_of`` are repeats; different quantities there refuse every row of that level.
    ``one_level_per_sku``: the storefront keeps one level per SKU, so a contradiction between
    locations gets the hint to send the total."""
    by_key: dict[Hashable, list[StockRow]] = {}
    for row in rows:
        by_key.setdefault(key(row), []).append(row)
    winners: list[StockRow] = []
    superseded: list[Superseded] = []
    errors: list[RowError] = []
    for group in by_key.values():
        newest = max(r.as_of for r in group)
        top = [r for r in group if r.as_of == newest]
        for older in (r for r in group if r.as_of != newest):
            superseded.append(Superseded(older, "stale", top[0].line_number))
        if len({r.quantity for r in top}) > 1:
            lines = ", ".join(str(r.line_number) for r in top)
            levels = ", ".join(f"{r.quantity}" + (f" at {r.location}" if r.location else "") for r in top)
            hint = ("; this storefront keeps one level per SKU: send the total over all locations"
                    if one_level_per_sku and len({r.location for r in top}) > 1 else "")
            for r in top:
                errors.append(RowError(
                    r.line_number, r.sku,
                    f"duplicate sku with different quantities ({levels}) at the same as_of "
                    f"{newest.isoformat()} (lines {lines}){hint}"))
            continue
        winners.append(top[0])
        superseded.extend(Superseded(r, "repeated", top[0].line_number) for r in top[1:])
    winners.sort(key=lambda r: r.line_number)
    return winners, superseded, errors


def _by_sku(row: StockRow) -> Hashable:
    return row.sku


def _by_sku_and_location(row: StockRow) -> Hashable:
    return (row.sku, row.location)


def parse_stock_file(data: bytes, name: str, *, per_location: bool = False) -> ParsedStockFile:
    """Parse and validate one stock file (see the module docstring). Never raises on content.

    :param data: the file's bytes.
    :param name: the file name, used in messages only.
    :param per_location: the storefront keeps a level per location (``StockClient.per_location``):
        duplicates are resolved per (sku, location), and two locations of one SKU are two levels.
    """
    records, unreadable = read_csv_records(data, name)
    if not records:
        reason = unreadable.reason if unreadable is not None else f"{name}: empty file, no header"
        line = unreadable.line_number if unreadable is not None else 1
        return ParsedStockFile(errors=[RowError(line, "", reason)], file_error=reason)
    header_line, header = records[0]
    problem = check_header(header, STOCK_COLUMNS, STOCK_OPTIONAL_COLUMNS)
    if problem is not None:
        reason = f"{name}: {problem}"
        return ParsedStockFile(errors=[RowError(header_line, "", reason)], file_error=reason)
    columns = [h.strip().lstrip(_BOM).strip() for h in header]
    sku_at = columns.index("sku")
    truncated = unreadable is None and bool(data.strip()) and not data.endswith((b"\n", b"\r"))
    parsed = ParsedStockFile()
    valid: list[StockRow] = []
    times: dict[str, pendulum.DateTime | str] = {}
    body = records[1:]
    for position, (line_number, cells) in enumerate(body):
        sku = cells[sku_at].strip() if len(cells) > sku_at else ""
        if len(cells) != len(columns):
            parsed.errors.append(RowError(
                line_number, sku, f"row has {len(cells)} fields, the header has {len(columns)}"))
            continue
        if truncated and position == len(body) - 1:
            parsed.errors.append(RowError(
                line_number, sku, "the file does not end with a line break: its last row may be "
                "cut off (a half-written file?); the row is not applied"))
            continue
        result = _row(line_number, {c: v.strip() for c, v in zip(columns, cells, strict=True)}, times)
        if isinstance(result, RowError):
            parsed.errors.append(result)
        else:
            valid.append(result)
    if unreadable is not None:
        parsed.errors.append(RowError(unreadable.line_number, "",
                                      f"{unreadable.reason}; the rest of the file is not applied"))
    winners, superseded, duplicates = resolve_duplicates(
        valid, _by_sku_and_location if per_location else _by_sku, one_level_per_sku=not per_location)
    parsed.rows.extend(winners)
    parsed.superseded.extend(superseded)
    parsed.errors.extend(duplicates)
    parsed.errors.sort(key=lambda e: e.line_number)
    return parsed
