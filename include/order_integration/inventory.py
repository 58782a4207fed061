"""Apply the backend's stock files to the storefront: the newest level per SKU (and location) wins.

Flow of one file (:func:`sync_stock_file`): read ``stock_dir/NAME`` → parse and validate
(:mod:`order_integration.backend.stock_files`) → decide every row against the ledger's
``stock_levels`` and the storefront (:func:`apply_stock_rows`) → write the changed levels in
batches, recording each batch in ``stock_levels`` as soon as the store answered → move the
file to ``stock_dir/archive/``, or to ``stock_dir/error/`` beside ``NAME.errors.json`` when a
row was refused or names an unknown SKU (after every good row was applied). Nothing there is
overwritten: a taken name gets ``-1``, ``-2``… before its extension. A transient storefront
failure (after the client's retries) or refused credentials raise instead and leave the file
in place; what was applied until then is recorded, so the retry does not write it again.

A *level* is a SKU's quantity at one of the storefront's locations: the store's
:class:`~order_integration.storefronts.base.StockClient` says whether it keeps one level per
SKU (``per_location`` false: WooCommerce) or one per SKU and location (Shopify), and maps a
row's ``location`` to its location key (``location_for``: the store config's
``stock_locations`` and ``default_stock_location``; a name it cannot place refuses the row).
The rules below are per level; nothing here knows a platform.

Outcome of a row (every row gets exactly one; ``FileResult.counts`` adds them up to the
file's row count, or the sync raises — a row is never lost)
=============  ===================================================================================
``applied``    the store showed another quantity (or none); the new one was written and recorded
``unchanged``  the quantity equals the level last applied (SKU and location): the same file dropped
               twice, or a newer snapshot in which the backend reports no change — then the store
               is not even asked, so its own decrements since (orders the backend has not seen
               yet) are not undone; or the store already shows this quantity; or the row repeats
               an identical row of this file. Newer ``as_of`` values are recorded, not written
``stale``      older than the level last applied (from any file, whatever the order the
               files arrived in), or than a newer row of the level in this file: skipped
``unknown_sku``  no item of the store has exactly this SKU (or several do)
``unmanaged``  the store keeps no level for the item (the platform says why, e.g. a variation
               whose parent holds the stock): reported and left alone, unless the store config
               says ``manage_stock_on_apply: true`` — then the write switches management on
``rejected``   a bad row (see the parser), a location the store cannot place, a duplicate
               contradicting another row of the level at the same ``as_of``, a level
               contradicting the one applied at the same ``as_of``, or an item the storefront
               refused
=============  ===================================================================================

``unknown_sku`` and ``rejected`` rows go to ``errors.json`` (line, sku, outcome, reason);
``unmanaged`` ones are counted and logged, and listed in ``errors.json`` when there is one
(they are a store setting, not a bad file, so alone they do not send the file to ``error/``).

Requests: the ledger settles stale rows, files seen before and levels the backend did not
change without the storefront; only SKUs whose level changed are looked up (the client
batches look-ups and writes as its platform allows) and only levels that differ from what the
store shows are written. A level the store changed by itself (a manual edit) is therefore
corrected when the backend's level for that SKU next changes.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pendulum

from order_integration.backend.sftp import FileTooLarge
from order_integration.backend.stock_files import (
    ParsedStockFile,
    RowError,
    StockRow,
    Superseded,
    list_stock_files,
    parse_stock_file,
    resolve_duplicates,
)
from order_integration.exceptions import InvariantViolation
from order_integration.status_sync import ARCHIVE_DIR, ERROR_DIR, ERRORS_SUFFIX, free_name
from order_integration.storefronts.base import (
    CatalogItem,
    StockClient,
    StockUpdate,
    StockWriteResult,
    UnknownLocation,
)

if TYPE_CHECKING:
    from order_integration.backend.sftp import SftpSession
    from order_integration.config import StoreConfig
    from order_integration.ledger import StockLevel, StockLevels

log = logging.getLogger(__name__)

APPLIED = "applied"
UNCHANGED = "unchanged"
STALE = "stale"
UNKNOWN_SKU = "unknown_sku"
UNMANAGED = "unmanaged"
REJECTED = "rejected"
#: Every outcome, in report order.
OUTCOMES: tuple[str, ...] = (APPLIED, UNCHANGED, STALE, UNKNOWN_SKU, UNMANAGED, REJECTED)
#: Outcomes that send the file to ``error/`` (listed in ``errors.json``).
FAILED: frozenset[str] = frozenset({UNKNOWN_SKU, REJECTED})
_LOGGED_SKUS = 20


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """What became of one row of a stock file."""

    line_number: int
    sku: str
    outcome: str
    reason: str = ""
    quantity: int | None = None

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED

    def as_dict(self) -> dict[str, Any]:
        return {"line_number": self.line_number, "sku": self.sku, "outcome": self.outcome,
                "reason": self.reason}


def count_outcomes(outcomes: Iterable[RowOutcome]) -> dict[str, int]:
    """outcome -> rows, every outcome present (zeros included)."""
    counts = Counter(o.outcome for o in outcomes)
    return {k: counts[k] for k in OUTCOMES}


@dataclass(frozen=True, slots=True)
class FileResult:
    """One stock file's fate: where it went and what each row did."""

    name: str
    moved_to: str
    errors_file: str | None
    outcomes: tuple[RowOutcome, ...]

    @property
    def counts(self) -> dict[str, int]:
        return count_outcomes(self.outcomes)

    @property
    def rows(self) -> int:
        return len(self.outcomes)


# --------------------------------------------------------------------------------------------
# deciding and applying
# --------------------------------------------------------------------------------------------


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _against_ledger(row: StockRow, last: StockLevel | None) -> RowOutcome | None:
    """The row's outcome when the ledger settles it alone (stale, seen before, no change);
    else ``None``: the storefront decides."""
    if last is None:
        return None
    if row.as_of > last.as_of:
        if row.quantity != last.quantity:
            return None
        # The backend reports the level we applied last: nothing changed in the warehouse. The
        # store's own decrements since (orders the backend has not seen yet) must not be undone.
        return RowOutcome(row.line_number, row.sku, UNCHANGED,
                          f"same level as applied for {_when(last.as_of)} (from {last.source_file})",
                          row.quantity)
    if row.as_of < last.as_of:
        return RowOutcome(row.line_number, row.sku, STALE,
                          f"as_of {_when(row.as_of)} is older than the level {last.quantity} applied "
                          f"for {_when(last.as_of)} (from {last.source_file})", row.quantity)
    if row.quantity == last.quantity:
        return RowOutcome(row.line_number, row.sku, UNCHANGED,
                          f"level already applied (from {last.source_file})", row.quantity)
    return RowOutcome(row.line_number, row.sku, REJECTED,
                      f"quantity {row.quantity} contradicts the level {last.quantity} applied for the same "
                      f"as_of {_when(row.as_of)} (from {last.source_file})", row.quantity)


def _at(row: StockRow, location: str | None) -> str:
    """`` at WH-1`` for a level of a per-location store, else nothing."""
    if location is None:
        return ""
    return f" at {row.location}" if row.location else " at the default location"


def _against_store(row: StockRow, location: str | None, item: CatalogItem | None, problem: str | None,
                   manage_on_apply: bool) -> RowOutcome | None:
    """The row's outcome when the store's answer settles it without a write; else ``None``."""
    if item is None:
        reason = problem or "no item of the store has this sku"
        return RowOutcome(row.line_number, row.sku, UNKNOWN_SKU, reason, row.quantity)
    if not item.managed and not manage_on_apply:
        why = item.unmanaged_reason or "the store does not manage its stock"
        return RowOutcome(row.line_number, row.sku, UNMANAGED,
                          f"{item.label}: {why} (manage_stock_on_apply is off)", row.quantity)
    if item.managed and location in item.levels and item.quantity(location) == row.quantity:
        return RowOutcome(row.line_number, row.sku, UNCHANGED,
                          f"the store already shows {row.quantity}{_at(row, location)}", row.quantity)
    return None


def _level(row: StockRow, location: str | None) -> dict[str, Any]:
    return {"sku": row.sku, "quantity": row.quantity, "as_of": row.as_of, "location": location,
            "file_location": row.location}


def _moot_outcomes(superseded: Iterable[Superseded], errors: Iterable[RowError]) -> list[RowOutcome]:
    outcomes = [RowOutcome(e.line_number, e.sku, REJECTED, e.reason) for e in errors]
    for moot in superseded:
        row = moot.row
        if moot.kind == "stale":
            outcomes.append(RowOutcome(row.line_number, row.sku, STALE,
                                       f"superseded by line {moot.by_line} (newer as_of)", row.quantity))
        else:
            outcomes.append(RowOutcome(row.line_number, row.sku, UNCHANGED,
                                       f"repeats line {moot.by_line}", row.quantity))
    return outcomes


def _place(rows: Sequence[StockRow], client: StockClient,
           outcomes: list[RowOutcome]) -> list[tuple[StockRow, str | None]]:
    """Each row with its level's location key (``client.location_for``); a row whose location
    the store cannot place is refused. Two names of one location (an alias, or the default
    location named in one row and implied in another) make one level: the parser's duplicate
    rule applies again, per (sku, location key)."""
    where: dict[int, str | None] = {}
    placed: list[StockRow] = []
    for row in rows:
        try:
            where[row.line_number] = client.location_for(row.location)
        except UnknownLocation as refused:
            outcomes.append(RowOutcome(row.line_number, row.sku, REJECTED, str(refused), row.quantity))
            continue
        placed.append(row)
    winners, superseded, errors = resolve_duplicates(
        placed, lambda r: (r.sku, where[r.line_number]), one_level_per_sku=not client.per_location)
    outcomes.extend(_moot_outcomes(superseded, errors))
    return [(row, where[row.line_number]) for row in winners]


def apply_stock_rows(
    store_id: str,
    parsed: ParsedStockFile,
    client: StockClient,
    stock_levels: StockLevels,
    *,
    source_file: str = "-",
    manage_stock_on_apply: bool = False,
) -> list[RowOutcome]:
    """Decide and apply every row of a parsed stock file; one outcome per row, in line order.

    Parse the file with ``per_location=client.per_location``: a file parsed for one level per
    SKU has at most one row per SKU anyway.

    Levels the store already shows and levels written are recorded in ``stock_levels``
    (written ones batch by batch, as the store confirms them). Storefront failures other
    than a refused item raise; what was applied before is recorded.

    :param source_file: the file name recorded in the ledger.
    :param manage_stock_on_apply: write to items whose stock the store does not manage (and
        switch management on) instead of reporting them as ``unmanaged``.
    """
    outcomes = _moot_outcomes(parsed.superseded, parsed.errors)
    levels = _place(parsed.rows, client, outcomes)
    last = stock_levels.levels(store_id, [row.sku for row, _ in levels])
    candidates: list[tuple[StockRow, str | None]] = []
    already: list[dict[str, Any]] = []  # unchanged levels with a newer as_of: the ledger moves forward
    for row, location in levels:
        previous = last.get((row.sku, location))
        settled = _against_ledger(row, previous)
        if settled is None:
            candidates.append((row, location))
        else:
            outcomes.append(settled)
            if settled.outcome == UNCHANGED and previous is not None and row.as_of > previous.as_of:
                already.append(_level(row, location))
    items = client.lookup(list(dict.fromkeys(row.sku for row, _ in candidates))) if candidates else {}
    updates: list[StockUpdate] = []
    for row, location in candidates:
        item = items.get(row.sku)
        settled = _against_store(row, location, item, client.problem(row.sku), manage_stock_on_apply)
        if settled is None and item is not None:
            updates.append(StockUpdate(item, row.quantity, key=row, location=location))
        elif settled is not None:
            outcomes.append(settled)
            if settled.outcome == UNCHANGED:
                already.append(_level(row, location))
    stock_levels.record(store_id, source_file, already)

    def record(results: list[StockWriteResult]) -> None:
        stock_levels.record(store_id, source_file,
                            [_level(r.update.key, r.update.location) for r in results if r.ok])

    for result in client.set_stock(updates, manage_stock=True, on_applied=record) if updates else []:
        row, location = result.update.key, result.update.location
        if result.ok:
            before = result.update.item.quantity(location)
            change = f"{'none' if before is None else before} -> {row.quantity}{_at(row, location)}"
            outcomes.append(RowOutcome(row.line_number, row.sku, APPLIED, change, row.quantity))
        else:
            outcomes.append(RowOutcome(row.line_number, row.sku, REJECTED,
                                       f"refused by the storefront: {result.error}", row.quantity))
    outcomes.sort(key=lambda o: (o.line_number, o.sku))
    if len(outcomes) != parsed.row_count:  # a bug, never bad input: refuse to report wrong counts
        raise InvariantViolation(
            f"store {store_id}: stock file {source_file}: {len(outcomes)} outcome(s) for "
            f"{parsed.row_count} row(s); a row would be lost from the report")
    return outcomes


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _error_report(store_id: str, name: str, moved_to: str, outcomes: Sequence[RowOutcome]) -> bytes:
    report = {
        "store_id": store_id, "file": name, "moved_to": moved_to,
        "processed_at": pendulum.now("UTC").isoformat(), "counts": count_outcomes(outcomes),
        "errors": [o.as_dict() for o in outcomes if o.failed],
        "unmanaged": [o.as_dict() for o in outcomes if o.outcome == UNMANAGED],
    }
    return json.dumps(report, ensure_ascii=False, indent=2).encode()


def _log_result(store_id: str, result: FileResult) -> None:
    counts = result.counts
    log.info("store %s: stock file %s: %d rows: %s -> %s", store_id, result.name, result.rows,
             " ".join(f"{k}={v}" for k, v in counts.items()), result.moved_to)
    for kind in (UNMANAGED, UNKNOWN_SKU):
        skus = [o.sku for o in result.outcomes if o.outcome == kind]
        if skus:
            more = f" and {len(skus) - _LOGGED_SKUS} more" if len(skus) > _LOGGED_SKUS else ""
            log.warning("store %s: stock file %s: %s: %s%s", store_id, result.name, kind,
                        ", ".join(skus[:_LOGGED_SKUS]), more)


def sync_stock_file(
    store: StoreConfig,
    name: str,
    sftp_session: SftpSession,
    client: StockClient,
    stock_levels: StockLevels,
) -> FileResult:
    """Read, apply, record and move one stock file of ``store.backend.stock_dir``.

    :raises FileNotFoundError: the file is gone (another run took it).
    :raises StorefrontError, BackendError: transient failures; the file stays for a re-run.
    """
    stock_dir = store.backend.stock_dir
    path = posixpath.join(stock_dir, name)
    try:
        parsed = parse_stock_file(sftp_session.read_bytes(path), name, per_location=client.per_location)
    except FileTooLarge as exc:  # refused unread, as an unreadable file: to error/ with the reason
        log.warning("store %s: stock file %s: %s", store.id, name, exc.reason)
        parsed = ParsedStockFile(errors=[RowError(1, "", exc.reason)], file_error=exc.reason)
    outcomes = apply_stock_rows(store.id, parsed, client, stock_levels, source_file=name,
                                manage_stock_on_apply=store.manage_stock_on_apply)
    failed = any(o.failed for o in outcomes)
    result_dir = posixpath.join(stock_dir, ERROR_DIR if failed else ARCHIVE_DIR)
    sftp_session.makedirs(result_dir)
    target = free_name(set(sftp_session.listdir(result_dir)), name, with_errors=failed)
    moved_to = posixpath.join(result_dir, target)
    errors_file = None
    if failed:
        # The report first: a crash before the move leaves the file to re-run (harmless: the
        # ledger settles what was applied) rather than a file in error/ without its reasons.
        report = _error_report(store.id, name, moved_to, outcomes)
        errors_file = sftp_session.upload_atomic(io.BytesIO(report), result_dir, target + ERRORS_SUFFIX)
    sftp_session.move(path, moved_to)
    result = FileResult(name, moved_to, errors_file, tuple(outcomes))
    _log_result(store.id, result)
    return result


@dataclass(slots=True)
class StockDirResult:
    """Every stock file one :func:`sync_stock_dir` call handled."""

    files: list[FileResult] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return count_outcomes(o for f in self.files for o in f.outcomes)


def sync_stock_dir(store: StoreConfig, sftp_session: SftpSession, client: StockClient,
                   stock_levels: StockLevels) -> StockDirResult:
    """:func:`sync_stock_file` for every stock file in ``stock_dir``, in name order.

    A file another run took meanwhile is skipped; any other failure raises (the files not yet
    handled stay for the next run)."""
    try:
        names = list_stock_files(sftp_session.listdir(store.backend.stock_dir))
    except FileNotFoundError:
        log.info("store %s: no stock directory %s yet", store.id, store.backend.stock_dir)
        return StockDirResult()
    result = StockDirResult()
    for name in names:
        try:
            result.files.append(sync_stock_file(store, name, sftp_session, client, stock_levels))
        except FileNotFoundError:
            log.info("store %s: stock file %s disappeared (taken by another run)", store.id, name)
    return result
