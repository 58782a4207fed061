"""The one-way export of one store and one window: extract -> validate -> load -> summary.

Plain functions over staging paths; Airflow appears only in :mod:`order_integration.tasks`.
Each step reads what the previous one staged (``ObjectStoragePath``, so ``file://`` and
``s3://`` behave alike) and returns a small JSON-able dict of counts and paths.

Every order the storefront returns ends in exactly one bucket, and the summary proves it::

    extracted = delivered + quarantined + already_delivered + not_ready
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any

import msgspec

from order_integration.backend.formats import write_orders
from order_integration.config import StoreConfig
from order_integration.exceptions import InvariantViolation, QuarantineRatioExceeded
from order_integration.failpoints import failpoint
from order_integration.ledger.db import ROWS_PER_TRANSACTION, chunks
from order_integration.model import Order, Problem, status_free_version
from order_integration.quarantine import quarantine_table
from order_integration.storefronts.base import write_window_jsonl
from order_integration.windows import Window

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from order_integration.backend.sftp import SftpBackend
    from order_integration.ledger import Batch, Deliveries, Ledger
    from order_integration.storefronts.base import Normaliser, StorefrontClient
    from order_integration.validation.gx_runner import Found

log = logging.getLogger(__name__)

RAW_FILE = "raw_orders.jsonl"
DELIVERABLE_FILE = "deliverable.jsonl"
QUARANTINE_FILE = "quarantine.json"
VALIDATION_FILE = "validation_result.json"
#: Orders normalised, classified and validated at a time: the validate task holds one chunk's
#: orders, records, frames and GX result, not the window's. Measured on a 100k window in a fresh
#: process (bench/README.md, issue 18), raw orders dropped as soon as they are normalised:
#: growth +70 MB at 5k, +118 MB at 10k, +211 MB at 20k (each raw order held until its chunk was
#: normalised, it was +158 MB at 5k, +1.9 GB unchunked); each chunk costs GX about 0.2 s of CPU
#: (one validation call per frame, on the run's one GX context): validate's CPU at 100k is 21.4 s
#: at 5k, 16.5 s at 10k, 17.2 s at 20k (``bench/validate_bench.py``). The run still reads as one:
#: see ``SuiteRun``.
VALIDATE_CHUNK = 10_000
#: Quarantined ids a run's summary names (XCom, run note); the ledger and the report have all.
MAX_IDS_REPORTED = 20
#: Of those, the ones the one-line summary shows before "+N more".
IDS_IN_LINE = 5
#: A run's staging folder: at most this much of the sanitised run id, then a digest of the raw
#: one (48 bits; Airflow's run ids are at most 250 characters, the folder name fits NAME_MAX).
_RUN_NAME_CHARS = 200
_RUN_DIGEST_CHARS = 12


def run_dir(base: ObjectStoragePath, store_id: str, window: Window, run_id: str) -> ObjectStoragePath:
    """Staging folder of one run: ``<base>/<store>/<window>/<run id>_<digest>/``.

    The run id is sanitised to stay readable, and ``<digest>`` (of the raw run id) keeps the
    mapping one-to-one: sanitising alone gives ``a:b`` and ``a+b`` one folder, where two runs
    would overwrite each other's staged orders."""
    # Airflow's run ids may hold dots and dashes ("..", "-rf" are run ids too): the name starts
    # with neither, so it never climbs up, hides, or reads as a command option.
    safe_run = re.sub(r"[^A-Za-z0-9_.\-]+", "_", run_id).lstrip(".-")[:_RUN_NAME_CHARS] or "_"
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:_RUN_DIGEST_CHARS]
    path = base / store_id / window.label / f"{safe_run}_{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path


# Staging files are JSON Lines written and read with msgspec (already an Airflow dependency):
# about 6x faster to encode and 25% faster to decode than the json module, same bytes format.
def _read_jsonl(path: ObjectStoragePath, as_type: Any = Any) -> Iterator[Any]:
    """Each non-blank line of ``path`` decoded (as ``as_type``: a msgspec Struct decodes only its
    fields and skips the rest)."""
    decode = msgspec.json.Decoder(as_type).decode
    return (decode(line) for line in _jsonl_lines(path))


def _jsonl_lines(path: ObjectStoragePath) -> Iterator[bytes]:
    """Each non-blank line of ``path``, as bytes."""
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield line


def _write_jsonl(path: ObjectStoragePath, items: Iterable[Any]) -> int:
    encode = msgspec.json.Encoder().encode
    count = 0
    with path.open("wb") as fh:
        for item in items:
            fh.write(encode(item) + b"\n")
            count += 1
    return count


# -- extract -------------------------------------------------------------------------------
def extract(
    store: StoreConfig, window: Window, staging: ObjectStoragePath, client: StorefrontClient,
    *, order_ids: Sequence[int] = (),
) -> dict[str, Any]:
    """Stage every order modified in ``[window.start - lookback, window.end)``, once each; or,
    given ``order_ids``, those orders as they are now (ids the store does not know are
    reported in ``unknown_ids``, not fatal)."""
    target = staging / RAW_FILE
    if order_ids:
        log.info("store %s: fetching %d order(s) by id", store.id, len(order_ids))
        seen: list[str] = []

        def noting(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for row in rows:  # the platform's normaliser knows where its raw order keeps the id
                seen.append(client.normalise(row, store.id).order_id)
                yield row

        count = _write_jsonl(target, noting(client.fetch_orders(order_ids)))
        unknown = sorted(set(map(str, order_ids)) - set(seen), key=int)
        if unknown:
            log.warning("store %s: %d order id(s) not found in the storefront: %s",
                        store.id, len(unknown), ", ".join(unknown))
        log.info("store %s: fetched %d of %d orders to %s", store.id, count, len(order_ids), target)
        failpoint("extract.after_staging", store=store.id)
        return {"raw_path": str(target), "extracted": count, "unknown_ids": unknown}
    span = window.with_lookback(store.lookback_minutes)
    log.info("store %s: extracting orders modified in %s (window %s, lookback %d min)",
             store.id, span, window, store.lookback_minutes)
    with target.open("wb") as fh:  # the store's bytes, as they came (see write_window_jsonl)
        count = write_window_jsonl(client, span.start, span.end, fh)
    log.info("store %s: extracted %d orders to %s", store.id, count, target)
    failpoint("extract.after_staging", store=store.id)
    return {"raw_path": str(target), "extracted": count, "unknown_ids": []}


# -- validate ------------------------------------------------------------------------------
@dataclass
class ValidateCounts:
    extracted: int = 0
    already_delivered: int = 0
    not_ready: int = 0
    validated: int = 0
    quarantined: int = 0
    newly_quarantined: int = 0
    deliverable: int = 0
    echoes: int = 0  # of already_delivered: our own status write-back seen again
    not_ready_by_status: dict[str, int] = field(default_factory=dict)


def validate(
    store: StoreConfig, staging: ObjectStoragePath, raw_path: ObjectStoragePath,
    normaliser: Normaliser, ledger: Ledger, *, resend: bool = False, dry_run: bool = False,
    by_ids: bool = False, window: Window | None = None, run_id: str = "",
) -> dict[str, Any]:
    """Normalise, classify against the ledger, validate the rest and stage what may go out.

    * a version already claimed for delivery is ``already_delivered`` (not validated again),
      unless ``resend`` asks for it to go out again;
    * an order never delivered whose status is not in ``export_statuses`` is ``not_ready``;
    * everything else is validated; invalid orders go to quarantine with every reason.

    The window is read in chunks of :data:`VALIDATE_CHUNK` orders (memory stays bounded); the
    staged files and counts are those of one run over all of them (see ``SuiteRun``).

    The quarantine is recorded before the circuit breaker may fail the run (see
    :func:`_check_breaker`). A ``dry_run`` writes nothing to the ledger and only warns where
    the breaker would fail the run. ``window`` and ``run_id`` name the HTML report."""
    from order_integration.validation.gx_runner import SuiteRun, merge_problems

    counts = ValidateCounts()
    run = SuiteRun()  # one GX run over every chunk
    encode = msgspec.json.Encoder().encode
    # By position among the validated orders: those with parse problems (order_id, version,
    # problems), never spooled; and the rules any order failed, as the run reports them. The
    # records of the others wait in a local spool until every rule has run (GX validates
    # several chunks at once, and order_id_unique needs the whole run); an order a rule failed
    # is then taken back out. Staged after the quarantine is recorded.
    unparsed: dict[int, tuple[str, str, Sequence[Problem]]] = {}
    failed: dict[int, list[Found]] = {}
    spooled = 0
    with tempfile.TemporaryFile() as spool:
        for orders, claimed in _normalised(store, raw_path, normaliser, ledger, counts):
            candidates, records = _classify(store, orders, claimed, ledger, counts, resend=resend)
            del orders
            for position, order in enumerate(candidates, start=counts.validated):
                record = records[id(order)]
                if order.parse_problems:
                    unparsed[position] = (order.order_id, record["order_version"], order.parse_problems)
                else:
                    spool.write(encode(record) + b"\n")
                    spooled += 1
            counts.validated += len(candidates)
            _add_failures(failed, run.validate_chunk(candidates))
            del candidates, records
        rest, gx_result = run.finish()
        _add_failures(failed, rest)
        spool.seek(0)
        caught = _spooled_versions(spool, unparsed, set(failed) - set(unparsed))
        entries: list[tuple[str, str, list[dict[str, str]]]] = []
        for position in sorted({*unparsed, *failed}):
            oid, ver, parse_problems = unparsed.get(position) or (*caught[position][:2], ())
            problems = merge_problems(parse_problems, failed.get(position, ()))
            entries.append((oid, ver, [p.as_dict() for p in problems]))
        deliverable = spooled - len(caught)
        if deliverable + len(entries) != counts.validated:
            raise InvariantViolation(f"store {store.id}: validation returned {deliverable} valid + "
                                     f"{len(entries)} invalid of {counts.validated} orders")
        before = ledger.quarantine.unreleased_versions(store.id, (oid for oid, _ver, _why in entries))
        if not dry_run:
            ledger.quarantine.record(store.id, entries)
            failpoint("validate.after_quarantine", store=store.id)
        counts.quarantined = len(entries)
        counts.newly_quarantined = sum(1 for oid, ver, _ in entries if (oid, ver) not in before)

        deliverable_path = staging / DELIVERABLE_FILE
        spool.seek(0)
        counts.deliverable = _copy_lines(spool, deliverable_path, skip={line for *_, line in caught.values()})
    if counts.deliverable != deliverable:
        raise InvariantViolation(f"store {store.id}: staged {counts.deliverable} deliverable orders "
                                 f"of {deliverable} valid")
    quarantine_path = staging / QUARANTINE_FILE
    quarantine_path.write_text(json.dumps(
        [{"order_id": oid, "order_version": ver, "reasons": reasons} for oid, ver, reasons in entries],
        ensure_ascii=False, indent=1,
    ))
    (staging / VALIDATION_FILE).write_text(json.dumps(gx_result, default=str, indent=1))
    report_path = _write_report(store, staging, window, run_id, counts.validated, entries,
                                gx_result.get("expectations", []), by_ids=by_ids)
    if entries:
        log.warning("store %s: %d order(s) %squarantined:\n%s", store.id, len(entries),
                    "would be " if dry_run else "", quarantine_table(
                        {"order_id": oid, "order_version": ver, "reasons": reasons}
                        for oid, ver, reasons in entries))
    log.info("store %s: %s", store.id, ", ".join(f"{k}={v}" for k, v in asdict(counts).items()))
    log.info("store %s: validation report (HTML): %s", store.id, report_path)

    _check_breaker(store, counts, by_ids=by_ids, dry_run=dry_run)
    quarantined_ids = sorted({oid for oid, _ver, _reasons in entries if oid}, key=lambda i: (len(i), i))
    return {"deliverable_path": str(deliverable_path), "quarantine_path": str(quarantine_path),
            "report_paths": [report_path], "quarantined_ids": quarantined_ids[:MAX_IDS_REPORTED],
            **asdict(counts)}


@dataclass(frozen=True, slots=True)
class _SetAside:
    """A staged order whose status is not exported, kept unnormalised (its line) until the
    ledger says whether a version of it was claimed before: only then is it normalised."""

    order_id: str
    status: str
    line: bytes


def _normalised(
    store: StoreConfig, raw_path: ObjectStoragePath, normaliser: Normaliser, ledger: Ledger,
    counts: ValidateCounts,
) -> Iterator[tuple[list[Order], Mapping[str, set[str]]]]:
    """The staged orders, :data:`VALIDATE_CHUNK` at a time: normalised, with the versions of
    them the ledger holds as claimed. An order not ready (never claimed, its status not
    exported; a quarter of the bench's orders) is counted and never normalised:
    its id and status are all it needs (``Normaliser.identify``). Each raw order is dropped
    as soon as it is normalised or set aside: a chunk holds Orders and lines, not raw dicts."""
    exportable = set(store.export_statuses)
    decode = msgspec.json.Decoder().decode

    def read() -> Iterator[Order | _SetAside]:
        for line in _jsonl_lines(raw_path):
            raw = decode(line)
            order_id, status = normaliser.identify(raw)
            yield (normaliser.normalise(raw, store.id) if status in exportable
                   else _SetAside(order_id, status, line))

    for chunk in chunks(read(), VALIDATE_CHUNK):
        counts.extracted += len(chunk)
        claimed = ledger.deliveries.claimed_versions(store.id, (item.order_id for item in chunk))
        orders = []
        for item in chunk:
            if not isinstance(item, _SetAside):
                orders.append(item)
            elif claimed.get(item.order_id):  # delivered before: its new status is a change to send
                orders.append(normaliser.normalise(decode(item.line), store.id))
            else:
                _not_ready(counts, item.status)
        del chunk
        yield orders, claimed


def _not_ready(counts: ValidateCounts, status: str) -> None:
    counts.not_ready += 1
    counts.not_ready_by_status[status] = counts.not_ready_by_status.get(status, 0) + 1


def _classify(
    store: StoreConfig, orders: list[Order], claimed: Mapping[str, set[str]], ledger: Ledger,
    counts: ValidateCounts, *, resend: bool,
) -> tuple[list[Order], dict[int, dict[str, Any]]]:
    """The orders of a chunk to validate, and their records (by ``id(order)``); counts the
    ``not_ready`` and ``already_delivered`` ones (see :func:`validate`). ``claimed``: the
    versions of them the ledger holds as claimed (``Deliveries.claimed_versions``)."""
    exportable = set(store.export_statuses)
    records: dict[int, dict[str, Any]] = {}
    changed = []
    for order in orders:
        versions = claimed.get(order.order_id)
        # The rule itself, on the normalised order: _normalised only spares the normalising of
        # the orders whose identify() already says so (the two are tested to agree).
        if not versions and order.status not in exportable:
            _not_ready(counts, order.status)
            continue
        record = order.record()  # only now: rendering the content is the costly part
        if versions and record["order_version"] in versions and not resend:
            counts.already_delivered += 1
        else:
            records[id(order)] = record
            changed.append(order)
    candidates = changed if resend else _drop_echoes(store.id, changed, records, ledger, counts)
    return candidates, records


def _add_failures(failed: dict[int, list[Found]], more: Mapping[int, list[Found]]) -> None:
    """Add the rules orders failed (by run position) that a GX call returned to ``failed``."""
    for position, found in more.items():
        failed.setdefault(position, []).extend(found)


def _spooled_versions(
    spool: IO[bytes], unspooled: Mapping[int, Any], wanted: set[int],
) -> dict[int, tuple[str, str, int]]:
    """Position -> (order_id, order_version, line in the spool) of the ``wanted`` positions,
    whose records are in ``spool`` (one line per validated position not in ``unspooled``)."""
    found: dict[int, tuple[str, str, int]] = {}
    if not wanted:
        return found
    decode = msgspec.json.Decoder().decode
    position = 0
    for line_number, line in enumerate(spool):
        while position in unspooled:
            position += 1
        if position in wanted:
            record = decode(line)
            found[position] = (record["order_id"], record["order_version"], line_number)
        position += 1
    return found


def _copy_lines(source: IO[bytes], target: ObjectStoragePath, *, skip: set[int]) -> int:
    """Copy the lines of ``source`` to ``target`` but those numbered in ``skip``; returns how many."""
    count = 0
    with target.open("wb") as fh:
        if not skip:  # the usual case: copy in blocks, count the lines
            while block := source.read(1 << 20):
                fh.write(block)
                count += block.count(b"\n")
            return count
        for number, line in enumerate(source):
            if number not in skip:
                fh.write(line)
                count += 1
    return count


def _check_breaker(store: StoreConfig, counts: ValidateCounts, *, by_ids: bool, dry_run: bool) -> None:
    """Fail the run when the newly quarantined share of a window passes the store's
    ``max_quarantine_ratio``: that smells of an API change, not of bad orders. Not for a run
    by order ids (an operator's list, often of orders known to be broken), nor for a window
    that validated fewer than ``min_validated_for_ratio`` orders (one bad order in three is
    no trend)."""
    limits = store.validation
    if by_ids or counts.validated < max(limits.min_validated_for_ratio, 1):
        return
    if counts.newly_quarantined / counts.validated > limits.max_quarantine_ratio:
        error = QuarantineRatioExceeded(store.id, counts.newly_quarantined, counts.validated,
                                        limits.max_quarantine_ratio)
        if not dry_run:
            raise error
        log.warning("store %s: dry run: a real run would fail here: %s", store.id, error)


def _write_report(
    store: StoreConfig, staging: ObjectStoragePath, window: Window | None, run_id: str, validated: int,
    entries: Sequence[tuple[str, str, list[dict[str, str]]]], expectations: Sequence[Mapping[str, Any]],
    *, by_ids: bool = False,
) -> str:
    """The run's HTML validation report (self-contained), in staging beside its other files."""
    from order_integration.validation.report import render_report

    label = window.label if window is not None else "no_window"
    if window is None:
        scope = "-"
    else:  # an id run's window is only the trigger second that names its files
        scope = f"order ids (run of {window.start.to_iso8601_string()})" if by_ids else f"window {window}"
    target = staging / f"validation_report_{store.id}_{label}.html"
    target.write_text(render_report(
        store_id=store.id, scope=scope, run_id=run_id or "-",
        validated=validated, expectations=expectations,
        quarantined=({"order_id": oid, "order_version": ver, "reasons": why} for oid, ver, why in entries),
    ))
    return str(target)


def _drop_echoes(
    store_id: str, orders: list[Order], records: dict[int, dict[str, Any]], ledger: Ledger,
    counts: ValidateCounts,
) -> list[Order]:
    """Orders whose only change since a delivered version is the status this package wrote
    back (status sync) are the echo of our own write: already delivered, not a new version."""
    ids = [o.order_id for o in orders if o.order_id]
    written = ledger.status_events.statuses_written(store_id, ids) if ids else {}
    if not written:
        return orders
    bases = ledger.deliveries.claimed_bases(store_id, written)
    kept = []
    for order in orders:
        ours = written.get(order.order_id)
        base = status_free_version(records[id(order)])
        if ours == order.status and base in bases.get(order.order_id, ()):
            counts.already_delivered += 1
            counts.echoes += 1
        else:
            kept.append(order)
    return kept


# -- load ----------------------------------------------------------------------------------
def load(
    store: StoreConfig, window: Window, run_id: str, staging: ObjectStoragePath,
    deliverable_path: ObjectStoragePath, deliveries: Deliveries, backend: SftpBackend,
    *, resend: bool = False, dry_run: bool = False,
) -> dict[str, Any]:
    """Deliver the staged orders not delivered yet, crash-safe (:mod:`order_integration.ledger.deliveries`).

    Batches left pending by an earlier attempt (of this run or another) are finished first;
    then the versions still unclaimed are claimed, rendered, uploaded and recorded. With
    ``resend``, versions delivered before go out again too, recorded in ``order_resends``.
    A ``dry_run`` only renders the file into staging: no upload, no ledger write."""
    if dry_run:
        return _dry_run(store, window, staging, deliverable_path)
    # The staged records are streamed, never held: one pass claims their keys a chunk at a
    # time, one renders the file, one counts (memory does not grow with the window's orders).
    with backend.session() as sftp:
        for batch in deliveries.pending_batches(store.id):
            log.info("store %s: finishing batch %s left by run %s", store.id, batch.batch_id, batch.run_id)
            _finish_batch(store, staging, deliveries, sftp, batch)
        keys = ((r["order_id"], r["order_version"], status_free_version(r))
                for r in _read_jsonl(deliverable_path))
        first = next(keys, None)
        if first is not None:
            batch = deliveries.claim(store.id, run_id, window.label, str(deliverable_path),
                                     itertools.chain([first], keys), resend=resend)
            failpoint("load.after_claim", store=store.id)
            _finish_batch(store, staging, deliveries, sftp, batch)
    # Counted from the ledger, so a retry after a crash reports what the run delivered in all.
    delivered, resent, total = deliveries.run_counts(store.id, run_id, _versions(deliverable_path))
    files = deliveries.run_files(store.id, run_id)
    log.info("store %s: delivered %d orders (%d of them sent again on request) in %s; "
             "%d were delivered by other runs", store.id, delivered, resent,
             ", ".join(files) or "no file", total - delivered)
    return {"delivered": delivered, "resent": resent, "already_delivered": total - delivered, "files": files}


def _versions(path: ObjectStoragePath) -> Iterator[tuple[str, str]]:
    """(order_id, order_version) of each staged record of ``path``, decoding nothing else."""
    return ((key.order_id, key.order_version) for key in _read_jsonl(path, _RecordKey))


class _RecordKey(msgspec.Struct):
    """The two fields of a staged record that name its version (the others are skipped)."""

    order_id: str
    order_version: str


def _dry_run(
    store: StoreConfig, window: Window, staging: ObjectStoragePath, deliverable_path: ObjectStoragePath
) -> dict[str, Any]:
    """Render what a real run would upload, under ``dry_run/`` in staging, and say where."""
    fmt = store.backend.format
    folder = staging / "dry_run"
    folder.mkdir(parents=True, exist_ok=True)
    # The name carries the content's digest: render to a working name, then name it.
    rendering = folder / f"rendering.{fmt}"
    with rendering.open("wb") as fh:
        written = write_orders(_read_jsonl(deliverable_path), fmt, fh)
    if not written.orders:
        rendering.unlink()
        log.info("store %s: dry run: nothing would be delivered; no file", store.id)
        return {"delivered": 0, "would_deliver": 0, "already_delivered": 0, "files": [], "dry_run_file": None}
    target = folder / f"orders_{store.id}_{window.label}_{written.digest}.{fmt}"
    rendering.rename(target)
    log.warning("store %s: DRY RUN: %d orders would be delivered; nothing uploaded, nothing recorded. "
                "The file is in staging: %s", store.id, written.orders, target)
    return {"delivered": 0, "would_deliver": written.orders, "already_delivered": 0, "files": [],
            "dry_run_file": str(target)}


def _finish_batch(
    store: StoreConfig, staging: ObjectStoragePath, deliveries: Deliveries, sftp: Any,
    batch: Batch,
) -> None:
    """Render (if not yet), upload and record one batch; an empty batch is dropped. The file is
    rendered from the batch's staged source records, streamed."""
    path = type(staging)  # the staging path's class makes the batch's other paths (file://, s3://)
    if not deliveries.batch_size(batch.batch_id):
        deliveries.drop_batch(batch.batch_id)
        return
    fmt = store.backend.format
    if batch.staged_path is None or batch.file_name is None:
        staged = staging / f"batch-{batch.batch_id}.{fmt}"
        records = _in_batch(deliveries, batch, _read_jsonl(path(batch.source_path)))
        with staged.open("wb") as fh:
            written = write_orders(records, fmt, fh)
        # The batch's own window names the file, whichever run finishes it.
        name = f"orders_{store.id}_{batch.window_label}_{written.digest}.{fmt}"
        deliveries.set_batch_file(batch.batch_id, str(staged), name, written.orders)
        failpoint("load.after_render", store=store.id)
        batch = deliveries.batch(batch.batch_id)
    if batch.staged_path is None or batch.file_name is None:
        raise InvariantViolation(
            f"store {store.id}: batch {batch.batch_id} (window {batch.window_label}) has no rendered "
            f"file in the ledger right after rendering it; its row was changed meanwhile, so the "
            f"load stops rather than upload an unknown file")
    with path(batch.staged_path).open("rb") as fh:
        remote = sftp.upload_atomic(
            fh, store.backend.inbound_dir, batch.file_name,
            progress=lambda _sent, _size: failpoint("sftp.upload.partial", store=store.id),
        )
    failpoint("load.after_upload", store=store.id)
    count = deliveries.complete_batch(batch)
    log.info("store %s: uploaded %s (%d orders)", store.id, remote, count)


def _in_batch(
    deliveries: Deliveries, batch: Batch, rows: Iterable[dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    """The records of ``rows`` that go out in ``batch``, in their order; the ledger is asked
    about a chunk of them at a time (a big batch's claims are never held in memory)."""
    for chunk in chunks(rows, ROWS_PER_TRANSACTION):
        members = deliveries.in_batch(batch, [(r["order_id"], r["order_version"]) for r in chunk])
        yield from (r for r in chunk if (r["order_id"], r["order_version"]) in members)


# -- summary -------------------------------------------------------------------------------
def summarise(
    store_id: str, window: Window, validated: dict[str, Any], loaded: dict[str, Any],
    unknown_ids: Sequence[str] = (), order_ids: Sequence[int | str] = (),
) -> dict[str, Any]:
    """The run's counts; raises if they do not add up (that would be a lost or doubled order).
    ``order_ids``: the ids a run by ids was given (on demand or real time; its ``window`` is only
    the trigger second that names its files)."""
    summary = {
        "store_id": store_id,
        "window_start": window.start.to_iso8601_string(),
        "window_end": window.end.to_iso8601_string(),
        "extracted": validated["extracted"],
        "delivered": loaded["delivered"],
        "quarantined": validated["quarantined"],
        "already_delivered": validated["already_delivered"] + loaded["already_delivered"],
        "not_ready": validated["not_ready"],
        "files": loaded["files"],
        "resent": loaded.get("resent", 0),
        "unknown_ids": list(unknown_ids),
        "order_ids": [str(i) for i in order_ids],
        "dry_run_file": loaded.get("dry_run_file"),
        "would_deliver": loaded.get("would_deliver", 0),
        "report_paths": validated.get("report_paths", []),
        "quarantined_ids": list(validated.get("quarantined_ids") or ()),
    }
    buckets = ("delivered", "would_deliver", "quarantined", "already_delivered", "not_ready")
    if sum(summary[k] for k in buckets) != summary["extracted"]:
        raise InvariantViolation(
            f"store {store_id} {window}: counts do not add up: extracted={summary['extracted']} but "
            + " + ".join(f"{k}={summary[k]}" for k in buckets) + f" = {sum(summary[k] for k in buckets)}")
    return summary


def _first_ids(ids: Sequence[str], count: int) -> str:
    """The first :data:`IDS_IN_LINE` of ``count`` ids, then ``+N more``."""
    shown = ids[:IDS_IN_LINE]
    more = count - len(shown)
    return ",".join(shown) + (f" +{more} more" if more > 0 else "")


def summary_line(summary: dict[str, Any]) -> str:
    """``order export S [start, end): extracted=N = delivered=… + quarantined=… + …; files=…``"""
    dry = summary.get("dry_run_file") is not None or summary.get("would_deliver")
    delivered = (f"would_deliver={summary['would_deliver']}" if dry else f"delivered={summary['delivered']}")
    line = (
        f"order export {summary['store_id']} [{summary['window_start']}, {summary['window_end']}): "
        f"extracted={summary['extracted']} = {delivered} + "
        f"quarantined={summary['quarantined']} + already_delivered={summary['already_delivered']} + "
        f"not_ready={summary['not_ready']}; files={','.join(summary['files']) or '-'}"
    )
    if summary.get("resent"):
        line += f"; resent={summary['resent']}"
    if summary.get("quarantined") and summary.get("quarantined_ids"):
        line += f"; quarantined_ids={_first_ids(summary['quarantined_ids'], summary['quarantined'])}"
    if summary.get("order_ids"):
        line += f"; order_ids={_first_ids(summary['order_ids'], len(summary['order_ids']))}"
    if summary.get("unknown_ids"):
        line += f"; unknown_ids={','.join(summary['unknown_ids'])}"
    if summary.get("quarantined") and summary.get("report_paths"):
        line += f"; report={summary['report_paths'][0]}"
    if dry:
        line += f"; DRY RUN, nothing uploaded: {summary.get('dry_run_file') or 'no file'}"
    return line
