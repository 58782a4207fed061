"""Status files the backend drops in ``outbound_dir``: names, parsing and validation.

Contract (binding, from the backend)
------------------------------------
Any ``*.csv`` in ``outbound_dir`` whose name does not start with ``.`` (a leading dot marks a
file still being written, as our own uploads do). UTF-8, a BOM is tolerated. One header row
naming exactly the columns ``order_id,event,occurred_at,carrier,tracking_number,tracking_url,
sku,quantity,note``, optionally followed by ``amount,currency,reference`` (any order; a
missing, unknown or repeated column makes the whole file invalid: we would otherwise guess
what the backend meant). Empty lines are ignored.

Line rules (a broken line is a :class:`LineError` naming the rule and the value; the other
lines of the file still count):

* ``order_id`` is an order id: ASCII digits in ``1 … MAX_ORDER_ID``
  (:mod:`order_integration.ids`; ``²`` or Arabic-Indic ``٣`` pass ``str.isdigit`` but are
  no id, and must not become a crash or another order further on);
* ``event`` is one of ``accepted``, ``shipped``, ``cancelled``, ``rejected``, ``paid``,
  ``refunded``;
* ``occurred_at`` is ISO 8601 *with* a UTC designator (``Z`` or ``+00:00``): a naive time
  is ambiguous and another offset breaks the contract, both are refused;
* ``quantity``, when given, is a positive integer (ASCII digits, at most ``MAX_QUANTITY``)
  — the units of ``sku`` shipped by this event, not a running total;
* ``sku`` and ``quantity`` come together or not at all, and only with ``shipped`` or
  ``refunded`` (a line refund; a partial cancel or accept does not exist: applying it to the
  whole order would be wrong);
* ``shipped`` needs ``carrier`` or ``tracking_number``: the customer is told how the parcel
  travels, a shipment note without either tells them nothing;
* ``tracking_url``, when given, is an ``http(s)://`` URL (it ends up in a customer note);
* ``rejected`` needs the reason in ``note``;
* the optional columns ``amount``, ``currency``, ``reference`` (after ``note`` in the
  contract; a header without them stays valid): ``amount`` is a plain decimal (ASCII digits,
  one optional ``.``; no sign, exponent or thousands separator) greater than zero with at most
  the currency's minor digits (JPY ``1200``, EUR ``12.30``, KWD ``12.300``); ``currency`` an
  ISO 4217 code (upper case); the two come together or not at all;
* ``paid`` and ``refunded`` need ``reference`` (the backend's payment or credit-note id, the
  idempotency key on the storefront: printable, at most ``MAX_REFERENCE`` characters);
  ``refunded`` needs ``amount`` and ``currency`` (how much money the backend gave back);
* the file ends with a line break: a last line without one may be cut off (a half-written
  file) and is not applied.

Tracking columns on non-``shipped`` lines and money columns on lines other than ``paid``/
``refunded`` are kept but unused. ``line_number`` counts
physical lines with the header as line 1 (the line where a record starts).

Each good line becomes a frozen :class:`StatusEvent` whose ``event_key`` is a digest of its
content (not of the file name or line number), so the same event dropped again in another
file is recognised. Two events with identical content are one event to us: a backend that
ships the same SKU twice must tell them apart (``occurred_at``, tracking number).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal, get_args

import pendulum

from order_integration.currency import format_money, is_valid_currency, minor_units
from order_integration.ids import MAX_ORDER_ID, is_order_id

EventType = Literal["accepted", "shipped", "cancelled", "rejected", "paid", "refunded"]
EVENTS: tuple[str, ...] = get_args(EventType)
#: The header of a status file (contract order; the file may order them differently).
STATUS_COLUMNS: tuple[str, ...] = (
    "order_id", "event", "occurred_at", "carrier", "tracking_number", "tracking_url", "sku",
    "quantity", "note",
)
#: Optional columns after ``note`` (a file without them is valid): money of ``paid``/``refunded``.
MONEY_COLUMNS: tuple[str, ...] = ("amount", "currency", "reference")
#: Events that move money and need a ``reference``.
MONEY_EVENTS: tuple[str, ...] = ("paid", "refunded")
#: Events that may name one line (``sku`` + ``quantity``).
LINE_EVENTS: tuple[str, ...] = ("shipped", "refunded")
#: Longest ``reference`` (it is stored on the storefront: a transaction id, a refund's meta).
MAX_REFERENCE = 100
_AMOUNT = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
_QUANTITY = re.compile(r"[0-9]+")
#: Most units one ``shipped`` line may carry (a storefront's integer quantity).
MAX_QUANTITY = 2**31 - 1
_URL = re.compile(r"https?://[^\s]+", re.IGNORECASE)
_BOM = "\ufeff"
#: Longest value we echo back in a reason (a whole garbage line helps nobody).
_ECHO = 60


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One valid line of a status file."""

    line_number: int
    order_id: str
    event: EventType
    occurred_at: pendulum.DateTime
    carrier: str
    tracking_number: str
    tracking_url: str
    sku: str | None
    quantity: int | None
    note: str
    event_key: str
    #: ``paid``/``refunded`` only (else ``None``/empty): the money and the backend's id for it.
    amount: Decimal | None = None
    currency: str = ""
    reference: str = ""

    @property
    def is_partial(self) -> bool:
        """A partial shipment or a line refund: ``quantity`` units of ``sku`` (not the whole order)."""
        return self.sku is not None


@dataclass(frozen=True, slots=True)
class LineError:
    """A line (or, with ``order_id`` empty and line 0/1, the whole file) that cannot be applied.

    ``event`` is the line's raw event text when there was one (for the ledger)."""

    line_number: int
    order_id: str
    reason: str
    event: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"line_number": self.line_number, "order_id": self.order_id, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """What a status file holds: its valid events and its bad lines, both in file order."""

    events: list[StatusEvent] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    #: Set when nothing of the file could be read (encoding, header); ``errors`` says why too.
    file_error: str | None = None
    #: Data records after the header (each ends as one event or one error, unless file_error).
    records: int = 0


# --------------------------------------------------------------------------------------------
# file names
# --------------------------------------------------------------------------------------------


def list_status_files(names: Iterable[str]) -> list[str]:
    """The status files among ``names`` (a directory listing): ``*.csv`` not starting with ``.``,
    sorted. The suffix is case-sensitive, as the contract's glob is. A name with ``/`` or NUL
    (no file system has one; only a broken or hostile server lists it) is never a file of
    this folder: joined to the folder it would point elsewhere."""
    return sorted(n for n in names if n.endswith(".csv") and not n.startswith(".") and n != ".csv"
                  and "/" not in n and "\x00" not in n)


def unique_name(existing: set[str], name: str) -> str:
    """``name``, or ``stem-1.ext``, ``stem-2.ext``… — the first one not in ``existing``.

    The suffix goes before the last extension (``a.csv`` → ``a-1.csv``; ``a`` → ``a-1``)."""
    if name not in existing:
        return name
    stem, ext = posixpath.splitext(name)
    if not stem:  # a name like ".csv": splitext sees no extension
        stem, ext = name, ""
    n = 1
    while f"{stem}-{n}{ext}" in existing:
        n += 1
    return f"{stem}-{n}{ext}"


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


def _echo(value: str) -> str:
    return repr(value if len(value) <= _ECHO else value[:_ECHO] + "…")


def event_key(
    order_id: str, event: str, occurred_at: pendulum.DateTime, carrier: str, tracking_number: str,
    tracking_url: str, sku: str | None, quantity: int | None, note: str,
    money: tuple[str, str, str] | None = None,
) -> str:
    """SHA-256 (hex) of the event's content in a canonical form (UTC time, stripped texts).

    ``money`` (amount, currency, reference) is part of the content of ``paid``/``refunded``
    only, so the keys of the other events stay what earlier releases recorded."""
    content: list[object] = [
        order_id, event, occurred_at.in_timezone("UTC").isoformat(), carrier, tracking_number,
        tracking_url, sku, quantity, note,
    ]
    if money is not None:
        content.extend(money)
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()


def parse_occurred_at(value: str) -> pendulum.DateTime | str:
    """The time as aware UTC, or the reason it is refused."""
    return parse_utc_time(value, "occurred_at")


def parse_utc_time(value: str, column: str) -> pendulum.DateTime | str:
    """``value`` (ISO 8601 with ``Z`` or ``+00:00``) as aware UTC, or why it is refused.

    Shared by the status and stock files: ``column`` names the cell in the reason."""
    if not value:
        return f"{column} is missing"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"{column} {_echo(value)} is not an ISO 8601 time"
    offset = parsed.utcoffset()
    if offset is None:
        return f"{column} {_echo(value)} has no time zone; the contract wants UTC (Z or +00:00)"
    if offset.total_seconds() != 0:
        return f"{column} {_echo(value)} is not UTC (offset {offset}); the contract wants Z or +00:00"
    return pendulum.instance(parsed).in_timezone("UTC")


def check_header(header: list[str], columns: tuple[str, ...] = STATUS_COLUMNS,
                 optional: tuple[str, ...] = ()) -> str | None:
    """Why ``header`` is not exactly ``columns`` (+ any of ``optional``) in any order; ``None`` if it is."""
    names = [h.strip() for h in header]
    if names and names[0].startswith(_BOM):  # a second BOM, or one utf-8-sig did not eat
        names[0] = names[0][1:].strip()
    missing = [c for c in columns if c not in names]
    unknown = [n for n in names if n not in columns and n not in optional]
    repeated = sorted({n for n in names if names.count(n) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(_echo(u) for u in unknown)}")
    if repeated:
        problems.append(f"repeated column(s) {', '.join(repeated)}")
    if problems:
        extra = f" [+ {','.join(optional)}]" if optional else ""
        return f"header: {'; '.join(problems)} (expected {','.join(columns)}{extra})"
    return None


def parse_quantity(text: str) -> int | None:
    """``text`` as units shipped: ASCII digits (leading zeros allowed) for 1 … ``MAX_QUANTITY``,
    else ``None``. The length is checked before ``int``, which refuses more than 4,300 digits
    with a ``ValueError`` (a crash on every run of the file, not a line error)."""
    significant = text.lstrip("0")
    if not _QUANTITY.fullmatch(text) or not significant or len(significant) > len(str(MAX_QUANTITY)):
        return None
    number = int(significant)
    return number if number <= MAX_QUANTITY else None


def _validate(values: dict[str, str]) -> tuple[list[str], pendulum.DateTime | None]:
    """Every broken rule of one line (empty when the line is good), and its parsed time."""
    problems: list[str] = []
    event, sku, quantity = values["event"], values["sku"], values["quantity"]
    if not values["order_id"]:
        problems.append("order_id is missing")
    elif not is_order_id(values["order_id"]):
        problems.append(f"order_id {_echo(values['order_id'])} is not an order id "
                        f"(ASCII digits 1..{MAX_ORDER_ID})")
    if event not in EVENTS:
        problems.append(f"event {_echo(event)} is not one of {', '.join(EVENTS)}")
    occurred = parse_occurred_at(values["occurred_at"])
    if isinstance(occurred, str):
        problems.append(occurred)
        occurred = None
    if quantity and parse_quantity(quantity) is None:
        problems.append(f"quantity {_echo(quantity)} is not a positive integer (at most {MAX_QUANTITY})")
    if bool(sku) != bool(quantity):
        given, absent = ("sku", "quantity") if sku else ("quantity", "sku")
        problems.append(f"{given} {_echo(values[given])} is given without {absent}; give both or neither")
    if (sku or quantity) and event in EVENTS and event not in LINE_EVENTS:
        problems.append(f"sku/quantity are only allowed with 'shipped' or 'refunded', not with {event!r}")
    if event == "shipped" and not values["carrier"] and not values["tracking_number"]:
        problems.append("shipped needs carrier or tracking_number")
    if values["tracking_url"] and not _URL.fullmatch(values["tracking_url"]):
        problems.append(f"tracking_url {_echo(values['tracking_url'])} is not an http(s) URL")
    if event == "rejected" and not values["note"]:
        problems.append("rejected needs the reason in note")
    if event in MONEY_EVENTS:
        problems.extend(money_problems(event, values["amount"], values["currency"], values["reference"]))
    return problems, occurred


def parse_amount(text: str, currency: str) -> Decimal | str:
    """``text`` as an amount of ``currency`` (ISO 4217), or why it is refused: a plain decimal
    (ASCII digits, one optional ``.``), greater than zero, with at most the currency's minor
    digits. ``Decimal`` alone would take ``1e3``, ``-5``, ``NaN``, `` 1_000`` and Arabic-Indic
    digits; none of them is an amount the backend meant."""
    match = _AMOUNT.fullmatch(text)
    if match is None:
        return f"amount {_echo(text)} is not a plain decimal (digits with an optional '.')"
    whole, fraction = match.group(1), match.group(2) or ""
    digits = minor_units(currency)
    if len(fraction) > digits:
        return f"amount {_echo(text)} has {len(fraction)} decimals; {currency} has {digits}"
    if len(whole.lstrip("0")) > 15:  # no order is worth 10^15; keeps Decimal and the platforms exact
        return f"amount {_echo(text)} is too large"
    amount = Decimal(text)
    if amount <= 0:
        return f"amount {_echo(text)} is not greater than zero"
    return amount


def money_problems(event: str, amount: str, currency: str, reference: str) -> list[str]:
    """The broken money rules of a ``paid``/``refunded`` line (see the module docstring)."""
    problems = []
    if not reference:
        problems.append(f"{event} needs reference (the backend's payment or credit-note id)")
    elif len(reference) > MAX_REFERENCE or not reference.isprintable():
        problems.append(f"reference {_echo(reference)} is not printable text of at most "
                        f"{MAX_REFERENCE} characters")
    if currency and not is_valid_currency(currency):
        problems.append(f"currency {_echo(currency)} is not an ISO 4217 code")
    if bool(amount) != bool(currency):
        given, absent = ("amount", "currency") if amount else ("currency", "amount")
        problems.append(f"{given} {_echo(amount or currency)} is given without {absent}; "
                        "give both or neither")
    elif event == "refunded" and not amount:
        problems.append("refunded needs amount and currency")
    if amount and is_valid_currency(currency):
        parsed = parse_amount(amount, currency)
        if isinstance(parsed, str):
            problems.append(parsed)
    return problems


def _event(line_number: int, values: dict[str, str], occurred_at: pendulum.DateTime) -> StatusEvent:
    sku = values["sku"] or None
    quantity = parse_quantity(values["quantity"]) if values["quantity"] else None
    money = None
    amount: Decimal | None = None
    if values["event"] in MONEY_EVENTS:
        parsed = parse_amount(values["amount"], values["currency"]) if values["amount"] else None
        amount = parsed if isinstance(parsed, Decimal) else None
        # the amount in canonical form: "12.3" and "12.30" EUR are one payment
        money = ("" if amount is None else format_money(amount, values["currency"]), values["currency"],
                 values["reference"])
    key = event_key(
        values["order_id"], values["event"], occurred_at, values["carrier"], values["tracking_number"],
        values["tracking_url"], sku, quantity, values["note"], money,
    )
    return StatusEvent(
        line_number=line_number, order_id=values["order_id"], event=values["event"],  # type: ignore[arg-type]
        occurred_at=occurred_at, carrier=values["carrier"], tracking_number=values["tracking_number"],
        tracking_url=values["tracking_url"], sku=sku, quantity=quantity, note=values["note"],
        event_key=key, amount=amount, currency=values["currency"] if money else "",
        reference=values["reference"] if money else "",
    )


def read_csv_records(data: bytes, name: str) -> tuple[list[tuple[int, list[str]]], LineError | None]:
    """The non-blank CSV records of ``data`` (UTF-8, a BOM tolerated) with the line each starts on.

    Reading stops at the first undecodable byte or CSV syntax error (strict mode, e.g. a quote
    left open): the records before it are returned with a :class:`LineError` saying where and
    why (``line_number`` the line reading stopped at). Shared by the status and stock files."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        reason = f"{name}: not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}, line {line})"
        return [], LineError(line, "", reason)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    error = None
    try:
        end = 0
        for row in reader:
            rows.append((end + 1, row))  # a record starts on the line after the previous one ended
            end = reader.line_num
    except csv.Error as exc:
        reason = f"{name}: not readable as CSV at line {reader.line_num}: {exc}"
        error = LineError(reader.line_num, "", reason)
    return [(n, r) for n, r in rows if any(cell.strip() for cell in r)], error


def parse_status_file(data: bytes, name: str) -> ParsedFile:
    """Parse and validate one status file (see the module docstring). Never raises on content.

    :param data: the file's bytes.
    :param name: the file name, used in messages only (the event keys do not depend on it).
    """
    rows, unreadable = read_csv_records(data, name)
    if unreadable is not None:
        return ParsedFile(errors=[unreadable], file_error=unreadable.reason)
    if not rows:
        reason = f"{name}: empty file, no header"
        return ParsedFile(errors=[LineError(1, "", reason)], file_error=reason)
    header_line, header = rows[0]
    problem = check_header(header, optional=MONEY_COLUMNS)
    if problem is not None:
        reason = f"{name}: {problem}"
        return ParsedFile(errors=[LineError(header_line, "", reason)], file_error=reason)
    columns = [h.strip().lstrip(_BOM).strip() for h in header]
    # No final line break: the last line may have been cut off mid-write (as stock files).
    truncated = not data.endswith((b"\n", b"\r"))
    parsed = ParsedFile(records=len(rows) - 1)
    for position, (line_number, row) in enumerate(rows[1:], start=2):
        if len(row) != len(columns):
            order_id = row[columns.index("order_id")].strip() if len(row) > columns.index("order_id") else ""
            parsed.errors.append(LineError(
                line_number, order_id, f"line has {len(row)} fields, the header has {len(columns)}"
            ))
            continue
        values = dict.fromkeys(MONEY_COLUMNS, "")
        values.update({col: cell.strip() for col, cell in zip(columns, row, strict=True)})
        if truncated and position == len(rows):
            parsed.errors.append(LineError(
                line_number, values["order_id"], "the file does not end with a line break: its last "
                "line may be cut off (a half-written file?); the line is not applied", values["event"]))
            continue
        problems, occurred_at = _validate(values)
        if problems or occurred_at is None:
            parsed.errors.append(LineError(line_number, values["order_id"], "; ".join(problems),
                                           values["event"]))
        else:
            parsed.events.append(_event(line_number, values, occurred_at))
    return parsed
