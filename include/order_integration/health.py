"""Integration health: what the operator's view shows for each store, read, aggregated and rendered.

Two sources, nothing copied into new state:

* **the ledger** (:func:`read_ledger`): open quarantine (``order_quarantine``), the status sync's
  recent files and their lines by outcome (``status_events``), the stock levels recently applied
  (``stock_levels``), the order versions delivered over the chart's span by the run that delivered
  them (``delivery_batches`` and their ``delivery_claims``; a real-time run's ``webhook_inbox`` rows
  say whether webhooks or the storefront poll announced them), the real-time stores' waiting inbox.
  One set-based query per table family for every store at once, each on an index of schema
  version 5 or 6 (``ledger/schema.py``; plans in bench/README.md);
* **Airflow's metadata database** (:func:`read_runs`, through the api-server's own session): the
  last runs of each store's DAGs and the summaries their tasks returned (XCom ``return_value``).
  The export's per-window counts come from there: ``publish`` returns
  ``extracted = delivered + quarantined + already_delivered + not_ready`` for its window, checked
  to add up before it returns. The ledger cannot give them: it records deliveries and quarantine
  entries, not the orders that were not ready or already delivered, and a quiet window writes
  no file at all — so freshness (the last window done) comes from the runs too. The REST API
  would give the same rows at one request per run's XCom (50 stores x 48 windows: thousands of
  requests per page); the session gives them in two queries. A delivery whose run the ledger cannot
  place by itself (an on-demand run: its id is ``manual__…`` like a manual run of the window's DAG)
  is placed by that run's DAG (:func:`read_run_dags`, one indexed query for those few runs).

Reasons of files in the backend's ``error/`` folders: a status file's are its lines' outcomes in
``status_events`` (the same words as its ``.errors.json``); a stock file's per-row reasons are only
in its ``.errors.json`` on the SFTP server, which a page view does not read (an SSH handshake per
store, a server that hangs would hang the page): the view shows the file's counts by outcome from
its run's summary and links that run's task log, which lists every refused row.

:func:`build_view` turns both into :class:`StoreHealth` values (plain data, unit-tested);
:func:`render_page` writes the HTML (no script, no CDN: an inline SVG chart).
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote

from sqlalchemy import Engine, and_, case, func, literal, or_, select

from order_integration.config import Config, StoreConfig, cron_of
from order_integration.ids import parse_order_id
from order_integration.ledger.db import chunks, utc
from order_integration.ledger.schema import (
    delivery_batches,
    delivery_claims,
    order_quarantine,
    status_events,
    stock_levels,
    webhook_inbox,
)
from order_integration.on_demand import MAX_ORDER_IDS
from order_integration.polling import TOPIC as POLL_TOPIC

WINDOWS = 48  # windows in the chart
RECENT_RUNS = 10  # runs of the syncs and the on-demand DAG looked at
QUARANTINE_SHOWN = 200  # open entries listed per store (the count is always whole)
SYNC_DAYS = 7  # status and stock files applied this recently are listed
REASONS_SHOWN = 5  # distinct reasons shown per file in error
DEFAULT_LATE_MINUTES = 60  # when a store's export_late_after_minutes is 0 (alerts off)

#: Task whose XCom ``return_value`` carries each DAG kind's summary.
SUMMARY_TASKS = ("publish", "validate", "sync_files")
FAILED_KINDS = ("refused", "error")  # status_events outcome kinds that send a file to error/

Kind = Literal["order_export", "order_export_on_demand", "order_status_sync", "inventory_sync",
               "order_export_realtime"]
KINDS: tuple[Kind, ...] = ("order_export", "order_export_on_demand", "order_status_sync", "inventory_sync")
BUCKETS = ("delivered", "quarantined", "not_ready", "already_delivered")

#: The paths an order version reaches the backend by, in the view's order; ``other``: a run Airflow
#: no longer knows (its runs cleaned up), shown only when there is one.
PATHS = ("window", "realtime_webhook", "realtime_poll", "on_demand")
PATH_LABELS = {"window": "scheduled window (the safety net)", "realtime_webhook": "real time, webhooks",
               "realtime_poll": "real time, storefront poll", "on_demand": "on demand (operator)",
               "other": "a run Airflow no longer has"}
#: The export DAGs whose runs deliver orders, and the path each is.
EXPORT_KINDS: tuple[Kind, ...] = ("order_export", "order_export_on_demand", "order_export_realtime")
#: Run id prefixes only the scheduled export makes (its schedule's runs and backfills): the ledger
#: places their deliveries without asking Airflow.
WINDOW_RUN_PREFIXES = ("scheduled__", "backfill__")


def dag_id(kind: Kind, store_id: str) -> str:
    return f"{kind}__{store_id}"


# -- Airflow's side ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunRecord:
    """One DAG run and the summaries its tasks returned (task id -> XCom ``return_value``)."""

    dag_id: str
    run_id: str
    run_type: str
    state: str
    run_after: datetime
    window_start: datetime | None = None
    window_end: datetime | None = None
    summaries: Mapping[str, Any] = field(default_factory=dict)

    def summary(self, task_id: str) -> dict[str, Any] | None:
        value = self.summaries.get(task_id)
        return value if isinstance(value, dict) else None


def read_runs(session: Any, dag_ids: Sequence[str], *, windows: int = WINDOWS,
              recent: int = RECENT_RUNS) -> list[RunRecord]:
    """The last ``windows`` runs of each ``order_export__*`` DAG and the last ``recent`` of the
    others in ``dag_ids``, with their summary XComs: two queries through Airflow's ORM session
    (the runs, by a window function over ``dag_run``'s ``(dag_id, run_after)``; then their XComs
    by ``dag_run_id``, the first column of XCom's primary key)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel

    rank = func.row_number().over(partition_by=DagRun.dag_id, order_by=DagRun.run_after.desc()).label("rank")
    ranked = (select(DagRun.id, DagRun.dag_id, DagRun.run_id, DagRun.run_type, DagRun.state,
                     DagRun.run_after, DagRun.data_interval_start, DagRun.data_interval_end, rank)
              .where(DagRun.dag_id.in_(list(dag_ids))).subquery())
    rows = session.execute(select(ranked).where(ranked.c.rank <= max(windows, recent))).all()
    rows = [r for r in rows if r.rank <= (windows if r.dag_id.startswith("order_export__") else recent)]
    summaries: dict[int, dict[str, Any]] = defaultdict(dict)
    for ids in chunks([r.id for r in rows]):
        xcoms = session.scalars(select(XComModel).where(
            XComModel.dag_run_id.in_(list(ids)), XComModel.key == "return_value",
            XComModel.task_id.in_(SUMMARY_TASKS), XComModel.map_index == -1))
        for xcom in xcoms:
            summaries[xcom.dag_run_id][xcom.task_id] = XComModel.deserialize_value(xcom)
    return [RunRecord(r.dag_id, r.run_id, str(getattr(r.run_type, "value", r.run_type)),
                      str(getattr(r.state, "value", r.state)), utc(r.run_after),
                      utc(r.data_interval_start) if r.data_interval_start else None,
                      utc(r.data_interval_end) if r.data_interval_end else None, summaries.get(r.id, {}))
            for r in rows]


# -- the ledger's side -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QuarantinedOrder:
    """An order with open quarantine entries: the rules its newest version failed, since when the
    first of its open versions is there, how many versions are open."""

    order_id: str
    rules: tuple[str, ...]
    since: datetime
    versions: int = 1


@dataclass(frozen=True, slots=True)
class SyncFile:
    """A status file as ``status_events`` holds it: lines by outcome kind; ``reasons`` the distinct
    refusals and errors (the file went to ``error/`` when there is one)."""

    name: str
    lines: Mapping[str, int]
    last_at: datetime
    reasons: tuple[str, ...] = ()

    @property
    def in_error(self) -> bool:
        return any(self.lines.get(kind) for kind in FAILED_KINDS)


@dataclass(frozen=True, slots=True)
class StockFile:
    """A stock file whose levels are the last applied for ``levels`` SKU/locations."""

    name: str
    levels: int
    last_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerFacts:
    quarantine_open: int = 0  # orders
    quarantine: tuple[QuarantinedOrder, ...] = ()
    status_files: tuple[SyncFile, ...] = ()
    stock_files: tuple[StockFile, ...] = ()
    stock_levels: int = 0
    stock_last_at: datetime | None = None
    paths: PathCounts | None = None


@dataclass(frozen=True, slots=True)
class PathCounts:
    """The order versions the store delivered since ``since``, by path, as the ledger places them:
    each delivered version's claim points at its batch (one orders file), the batch names its run.

    ``counts``: path -> versions for the runs the ledger itself places (a scheduled run's id; a
    real-time run, whose inbox rows it marked done name it, ``topic`` ``poll`` for the polling
    fallback); ``runs``: run id -> versions for the others (on-demand runs, a manually triggered
    window, a real-time run that did not get to mark its rows), placed by their DAG in Airflow.
    ``waiting``/``waiting_since``: orders waiting in the webhook inbox (real-time stores)."""

    since: datetime
    counts: Mapping[str, int] = field(default_factory=dict)
    runs: Mapping[str, int] = field(default_factory=dict)
    waiting: int = 0
    waiting_since: datetime | None = None


def _rules(reasons_json: str) -> tuple[str, ...]:
    try:
        reasons = json.loads(reasons_json)
    except ValueError:
        return (reasons_json[:200],)
    rules = [str(r.get("rule") or r) if isinstance(r, dict) else str(r) for r in reasons or ()]
    return tuple(dict.fromkeys(rules))


def ledger_queries(store_ids: Sequence[str], since: datetime,
                   shown: int = QUARANTINE_SHOWN, *, paths_since: Mapping[str, datetime] | None = None,
                   realtime: Iterable[str] = ()) -> dict[str, Any]:
    """The view's ledger queries, by name, for every store at once (bench/health_bench.py prints
    their plans), each on an index:

    * ``open_counts``, ``open_entries``: open quarantine per store — ``count(DISTINCT order_id)``
      and the oldest ``shown`` entries (``row_number()`` per store) — on the partial index
      ``ix_order_quarantine_open`` (``released_at IS NULL``: a year of released entries is never read);
    * ``status_lines``: status lines applied since ``since`` by (store, file, outcome), on
      ``ix_status_events_applied``;
    * ``stock_files``, ``stock_levels``: levels applied since ``since`` by (store, file), and every
      level per store, on ``ix_stock_levels_applied``;
    * ``delivery_paths``: the versions each store delivered since its ``paths_since`` (default
      ``since``) by path (:func:`delivery_paths_query`), on ``ix_delivery_batches_uploaded``;
    * ``inbox_waiting``: orders waiting in the webhook inbox of the ``realtime`` stores, and since
      when, on ``ix_webhook_inbox_waiting``."""
    stores = list(store_ids)
    q, e, s, w = order_quarantine.c, status_events.c, stock_levels.c, webhook_inbox.c
    is_open = q.released_at.is_(None)
    rank = func.row_number().over(partition_by=q.store_id,
                                  order_by=(q.quarantined_at, q.order_id)).label("rank")
    entries = select(q.store_id, q.order_id, q.reasons, q.quarantined_at, rank).where(
        q.store_id.in_(stores), is_open).subquery()
    return {
        "open_counts": select(q.store_id, func.count(func.distinct(q.order_id)))
        .where(q.store_id.in_(stores), is_open).group_by(q.store_id),
        "open_entries": select(entries).where(entries.c.rank <= shown),
        "status_lines": select(e.store_id, e.source_file, e.outcome, func.count(), func.max(e.applied_at))
        .where(e.store_id.in_(stores), e.applied_at >= since).group_by(e.store_id, e.source_file, e.outcome),
        "stock_files": select(s.store_id, s.source_file, func.count(), func.max(s.applied_at))
        .where(s.store_id.in_(stores), s.applied_at >= since).group_by(s.store_id, s.source_file),
        "stock_levels": select(s.store_id, func.count(), func.max(s.applied_at))
        .where(s.store_id.in_(stores)).group_by(s.store_id),
        "delivery_paths": delivery_paths_query(paths_since or dict.fromkeys(stores, since)),
        "inbox_waiting": select(w.store_id, func.count(func.distinct(w.order_id)), func.min(w.received_at))
        .where(w.store_id.in_(list(realtime)), w.done_at.is_(None)).group_by(w.store_id),
    }


def delivery_paths_query(since: Mapping[str, datetime]) -> Any:
    """The order versions each run delivered since its store's time, and the run's path as far as
    the ledger can tell: one row ``(store_id, run_id, path, versions)`` per run.

    The store's batches uploaded since then (``ix_delivery_batches_uploaded``; one ``IN`` per
    distinct time: stores sharing a schedule share it), their claims (``batch_id``'s index: a claim
    of an uploaded batch is a delivered version). The path: ``window`` for a run id only the schedule
    makes (``scheduled__``, ``backfill__``); else the webhook-inbox rows of its orders that the run
    marked done (``ix_webhook_inbox_order``): ``realtime_poll`` when they came from the storefront
    poll, ``realtime_webhook`` otherwise; else NULL, for Airflow to place (:func:`read_run_dags`).
    Grouped by run only, so the inbox is searched once per delivered version of a non-window run."""
    b, c, w = delivery_batches.c, delivery_claims.c, webhook_inbox.c
    by_time: dict[datetime, list[str]] = defaultdict(list)
    for store_id, at in since.items():
        by_time[at].append(store_id)
    in_span = or_(*(and_(b.store_id.in_(ids), b.uploaded_at >= at) for at, ids in by_time.items()))
    window_run = or_(*(b.run_id.startswith(prefix, autoescape=True) for prefix in WINDOW_RUN_PREFIXES))
    via_inbox = (select(func.min(case((w.topic == POLL_TOPIC, "realtime_poll"), else_="realtime_webhook")))
                 .where(w.store_id == c.store_id, w.order_id == c.order_id, w.done_by_run == b.run_id)
                 .scalar_subquery())
    path = func.min(case((window_run, literal("window")), else_=via_inbox))
    return (select(b.store_id, b.run_id, path.label("path"), func.count().label("versions"))
            .select_from(delivery_batches.join(delivery_claims, c.batch_id == b.batch_id))
            .where(in_span if by_time else literal(False))
            .group_by(b.store_id, b.run_id))


def read_ledger(engine: Engine, store_ids: Sequence[str], now: datetime, *, days: int = SYNC_DAYS,
                shown: int = QUARANTINE_SHOWN, config: Config | None = None) -> dict[str, LedgerFacts]:
    """Every store's ledger facts: the seven :func:`ledger_queries` in one connection (seven queries
    for all stores, not seven per store). With ``config``, the deliveries by path cover each store's
    chart (its last :data:`WINDOWS` windows, :func:`paths_span_start`) and its real-time stores' inbox
    is read; without, the last :data:`WINDOWS` hours and no inbox."""
    stores = list(store_ids)
    configs = {s.id: s for s in config.stores} if config is not None else {}
    paths_since = {sid: (paths_span_start(configs[sid], now) if sid in configs
                         else now - timedelta(hours=WINDOWS)) for sid in stores}
    realtime = [sid for sid in stores if sid in configs and configs[sid].mode == "realtime"]
    queries = ledger_queries(stores, now - timedelta(days=days), shown, paths_since=paths_since,
                             realtime=realtime)
    with engine.connect() as conn:
        rows = {name: conn.execute(query).all() for name, query in queries.items()}
    path_counts: dict[str, Counter[str]] = defaultdict(Counter)
    path_runs: dict[str, Counter[str]] = defaultdict(Counter)
    for store_id, run_id, path, versions in rows["delivery_paths"]:
        if path is None:
            path_runs[store_id][run_id] += int(versions)
        else:
            path_counts[store_id][path] += int(versions)
    waiting = {store_id: (int(n), utc(first) if first else None)
               for store_id, n, first in rows["inbox_waiting"]}
    open_counts = dict(rows["open_counts"])
    quarantine = _quarantined_orders(rows["open_entries"])
    status_files = _status_files(rows["status_lines"])
    stock_files: dict[str, list[StockFile]] = defaultdict(list)
    for store_id, name, levels, last_at in rows["stock_files"]:
        stock_files[store_id].append(StockFile(name, int(levels), utc(last_at)))
    levels_of = {store_id: (int(n), utc(last)) for store_id, n, last in rows["stock_levels"]}
    return {
        store_id: LedgerFacts(
            int(open_counts.get(store_id, 0)), tuple(quarantine.get(store_id, ())),
            tuple(status_files.get(store_id, ())),
            tuple(sorted(stock_files.get(store_id, ()), key=lambda f: f.last_at, reverse=True)),
            *levels_of.get(store_id, (0, None)),
            paths=PathCounts(paths_since[store_id], dict(path_counts.get(store_id, {})),
                             dict(path_runs.get(store_id, {})), *waiting.get(store_id, (0, None))))
        for store_id in stores
    }


@lru_cache(maxsize=256)
def _ticks_back(cron: str, end: datetime, count: int) -> datetime:
    from croniter import croniter

    it = croniter(cron, end)
    tick = end
    for _ in range(count):
        tick = it.get_prev(datetime)
    return tick


def paths_span_start(store: StoreConfig, now: datetime, windows: int = WINDOWS) -> datetime:
    """Where the deliveries by path start: the start of the oldest of the store's last ``windows``
    closed windows (the chart's span, with every window run as scheduled)."""
    cron = cron_of(store.schedule)
    return _ticks_back(cron, _last_tick(cron, now), windows)


def unplaced_runs(facts: Mapping[str, LedgerFacts] | None) -> dict[str, set[str]]:
    """Per store, the runs whose deliveries the ledger could not place (:class:`PathCounts`)."""
    return {store_id: set(f.paths.runs) for store_id, f in (facts or {}).items() if f.paths and f.paths.runs}


def read_run_dags(session: Any, runs: Mapping[str, Iterable[str]]) -> dict[tuple[str, str], str]:
    """``(store, run id) -> dag id`` of those runs among the store's export DAGs (scheduled, on
    demand, real time), from ``dag_run``'s unique ``(dag_id, run_id)``; a run Airflow no longer
    has is left out. Few runs: the ledger places scheduled and real-time runs itself."""
    from airflow.models.dagrun import DagRun

    found: dict[tuple[str, str], str] = {}
    for store_id, run_ids in runs.items():
        dags = [dag_id(kind, store_id) for kind in EXPORT_KINDS]
        for chunk in chunks(sorted(set(run_ids))):
            for dag, run_id in session.execute(select(DagRun.dag_id, DagRun.run_id).where(
                    DagRun.dag_id.in_(dags), DagRun.run_id.in_(list(chunk)))):
                found[(store_id, run_id)] = dag
    return found


def _quarantined_orders(rows: Iterable[Any]) -> dict[str, list[QuarantinedOrder]]:
    """One entry per order (its open versions merged: the newest version's rules, the oldest time)."""
    by_order: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in rows:  # oldest first per store
        by_order[(row.store_id, row.order_id)].append(row)
    found: dict[str, list[QuarantinedOrder]] = defaultdict(list)
    for (store_id, order_id), versions in by_order.items():
        found[store_id].append(QuarantinedOrder(order_id, _rules(versions[-1].reasons),
                                                utc(versions[0].quarantined_at), len(versions)))
    return found


def _status_files(rows: Iterable[Any]) -> dict[str, list[SyncFile]]:
    lines: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    reasons: dict[tuple[str, str], list[str]] = defaultdict(list)
    last: dict[tuple[str, str], datetime] = {}
    for store_id, name, outcome, count, last_at in rows:
        key = (store_id, name)
        kind = outcome.split(":", 1)[0]
        lines[key][kind] += int(count)
        if kind in FAILED_KINDS:
            reasons[key].append(outcome)
        last[key] = max(last.get(key, utc(last_at)), utc(last_at))
    found: dict[str, list[SyncFile]] = defaultdict(list)
    for (store_id, name), counts in lines.items():
        shown = tuple(sorted(reasons[(store_id, name)])[:REASONS_SHOWN])
        found[store_id].append(SyncFile(name, dict(counts), last[(store_id, name)], shown))
    for files in found.values():
        files.sort(key=lambda f: (f.last_at, f.name), reverse=True)
    return found


def open_quarantine_ids(engine: Engine, store_id: str, order_ids: Iterable[str]) -> set[str]:
    """Those of ``order_ids`` with an open quarantine entry in ``store_id``."""
    q = order_quarantine.c
    found: set[str] = set()
    with engine.connect() as conn:
        for chunk in chunks(sorted(set(order_ids))):
            found.update(conn.execute(select(q.order_id).distinct().where(
                q.store_id == store_id, q.order_id.in_(chunk), q.released_at.is_(None))).scalars())
    return found


# -- what the view shows ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Freshness:
    """The last window an export run completed, and how far behind the schedule that is.

    ``missing``: windows closed since then and not done (the one running counts); ``late``: the
    first of them closed more than the store's ``alerts.export_late_after_minutes`` ago."""

    last_window: tuple[datetime, datetime] | None
    due_end: datetime  # end of the last window that has closed
    missing: int
    late: bool
    late_after: timedelta

    @property
    def behind(self) -> timedelta | None:
        return None if self.last_window is None else max(self.due_end - self.last_window[1], timedelta(0))


@dataclass(frozen=True, slots=True)
class WindowBar:
    """One window of the chart: its latest run's state and the counts its ``publish`` returned
    (``None`` when the run did not get there: failed, or still running)."""

    start: datetime
    end: datetime
    run: RunRecord
    counts: Mapping[str, int] | None

    @property
    def failed(self) -> bool:
        return self.run.state == "failed"

    @property
    def report(self) -> str | None:
        for task_id in ("publish", "validate"):
            paths = (self.run.summary(task_id) or {}).get("report_paths") or []
            if paths:
                return str(paths[0])
        return None


@dataclass(frozen=True, slots=True)
class StockSync:
    """The inventory sync's last runs (their summaries) and the ledger's levels."""

    runs: tuple[RunRecord, ...]
    files: tuple[Mapping[str, Any], ...]  # per file: file, rows, counts, errors_file; newest run first
    outcomes: Mapping[str, int]

    @property
    def error_files(self) -> tuple[tuple[RunRecord, Mapping[str, Any]], ...]:
        return tuple((run, f) for run in self.runs
                     for f in (run.summary("sync_files") or {}).get("files") or ()
                     if isinstance(f, dict) and f.get("errors_file"))


@dataclass(frozen=True, slots=True)
class DeliveryPaths:
    """The order versions a store delivered since ``since``, by path, every run placed: ``counts``
    has each of :data:`PATHS` (and ``other`` when a run is not in Airflow any more). In real-time
    mode what the scheduled window delivered is what the real-time path missed (a webhook dropped
    or late, a poll that missed it): the window skips every version a real-time run delivered."""

    since: datetime
    counts: Mapping[str, int]
    realtime: bool  # the store is in mode realtime
    source: str  # its realtime_source: webhooks | polling
    waiting: int = 0  # orders waiting in the webhook inbox (real-time stores)
    waiting_since: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def by_realtime(self) -> int:
        return self.counts.get("realtime_webhook", 0) + self.counts.get("realtime_poll", 0)

    @property
    def caught(self) -> int:
        """Versions the safety-net window delivered (in real-time mode: the real-time path missed them)."""
        return self.counts.get("window", 0)


def delivery_paths(store: StoreConfig, paths: PathCounts, run_dags: Mapping[str, str]) -> DeliveryPaths:
    """Place the runs the ledger could not by their DAG (``run_dags``: run id -> dag id): the scheduled
    export is the window (a manual run of it too), the on-demand DAG on demand, the real-time DAG the
    store's ``realtime_source``."""
    realtime_path = "realtime_poll" if store.realtime_source == "polling" else "realtime_webhook"
    path_of = {dag_id("order_export", store.id): "window",
               dag_id("order_export_on_demand", store.id): "on_demand",
               dag_id("order_export_realtime", store.id): realtime_path}
    counts: Counter[str] = Counter(dict.fromkeys(PATHS, 0))
    counts.update(paths.counts)
    for run_id, versions in paths.runs.items():
        counts[path_of.get(run_dags.get(run_id, ""), "other")] += versions
    return DeliveryPaths(paths.since, dict(counts), store.mode == "realtime", store.realtime_source,
                         paths.waiting, paths.waiting_since)


@dataclass(frozen=True, slots=True)
class StoreHealth:
    store: StoreConfig
    freshness: Freshness
    windows: tuple[WindowBar, ...]
    facts: LedgerFacts | None  # None: the ledger could not be read
    status_runs: tuple[RunRecord, ...]
    stock: StockSync
    releases: tuple[RunRecord, ...]  # the on-demand DAG's last runs
    paths: DeliveryPaths | None = None  # None: the ledger could not be read

    @property
    def has_runs(self) -> bool:
        return bool(self.windows)


@dataclass(frozen=True, slots=True)
class HealthView:
    stores: tuple[StoreHealth, ...]
    generated_at: datetime
    ledger_error: str | None = None
    airflow_error: str | None = None


@lru_cache(maxsize=1024)  # croniter costs ~1 ms a call; stores share schedules and windows
def _ticks_between(cron: str, after: datetime, until: datetime,
                   cap: int = 10_000) -> tuple[int, datetime | None]:
    """How many schedule ticks fall in ``(after, until]``, and the first of them."""
    from croniter import croniter

    it = croniter(cron, after)
    first: datetime | None = None
    count = 0
    while count < cap:
        tick = it.get_next(datetime)
        if tick > until:
            break
        first = first or tick
        count += 1
    return count, first


@lru_cache(maxsize=256)
def _last_tick(cron: str, now: datetime) -> datetime:
    """The schedule's latest tick at or before ``now``: the end of the last window that has closed."""
    from croniter import croniter

    return croniter(cron, now + timedelta(microseconds=1)).get_prev(datetime)


def freshness(store: StoreConfig, export_runs: Sequence[RunRecord], now: datetime) -> Freshness:
    """From the export DAG's runs: the newest window a successful run covered, and the schedule's
    windows closed since (an interval timetable: a window closes at the tick that ends it)."""
    cron = cron_of(store.schedule)
    due_end = _last_tick(cron, now)
    minutes = store.alerts.export_late_after_minutes or DEFAULT_LATE_MINUTES
    late_after = timedelta(minutes=minutes)
    done = [(r.window_start, r.window_end) for r in export_runs
            if r.state == "success" and r.window_start is not None and r.window_end is not None]
    if not done:
        return Freshness(None, due_end, 0, False, late_after)
    last = max(done, key=lambda w: w[1])
    missing, first_missing = _ticks_between(cron, last[1], due_end)
    late = first_missing is not None and now - first_missing > late_after
    return Freshness(last, due_end, missing, late, late_after)  # type: ignore[arg-type]


def window_bars(export_runs: Sequence[RunRecord], windows: int = WINDOWS) -> tuple[WindowBar, ...]:
    """The last ``windows`` windows, oldest first; a window run more than once (a cleared or
    backfilled window) shows its latest run."""
    latest: dict[datetime, RunRecord] = {}
    for run in export_runs:
        if run.window_start is None or run.window_end is None:
            continue
        seen = latest.get(run.window_start)
        if seen is None or run.run_after > seen.run_after:
            latest[run.window_start] = run
    bars = []
    for start in sorted(latest)[-windows:]:
        run = latest[start]
        summary = run.summary("publish")
        counts = {k: int(summary.get(k) or 0) for k in BUCKETS} if summary else None
        bars.append(WindowBar(start, run.window_end or start, run, counts))
    return tuple(bars)


def stock_sync(runs: Sequence[RunRecord]) -> StockSync:
    newest = tuple(sorted(runs, key=lambda r: r.run_after, reverse=True))
    files: list[Mapping[str, Any]] = []
    outcomes: Counter[str] = Counter()
    for run in newest:
        summary = run.summary("sync_files") or {}
        files += [f for f in summary.get("files") or () if isinstance(f, dict)]
        outcomes.update({k: int(v) for k, v in (summary.get("counts") or {}).items()})
    return StockSync(newest, tuple(files), dict(outcomes))


def build_view(config: Config, runs: Sequence[RunRecord], facts: Mapping[str, LedgerFacts] | None,
               now: datetime, *, ledger_error: str | None = None, airflow_error: str | None = None,
               store_ids: Iterable[str] | None = None,
               run_dags: Mapping[tuple[str, str], str] | None = None) -> HealthView:
    """Each store's health from its runs and ledger facts (``facts`` None: the ledger failed).
    ``run_dags``: ``(store, run id) -> dag id`` of the runs the ledger could not place
    (:func:`read_run_dags`); ``runs`` place them too."""
    wanted = set(store_ids) if store_ids is not None else None
    by_dag: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_dag[run.dag_id].append(run)
    stores = []
    for store in config.stores:
        if wanted is not None and store.id not in wanted:
            continue
        export_runs = by_dag.get(dag_id("order_export", store.id), [])

        def newest(kind: Kind, store_id: str = store.id) -> tuple[RunRecord, ...]:
            found = sorted(by_dag.get(dag_id(kind, store_id), []), key=lambda r: r.run_after, reverse=True)
            return tuple(found[:RECENT_RUNS])

        store_facts = None if facts is None else facts.get(store.id, LedgerFacts())
        paths = None
        if store_facts is not None:
            placed = {run.run_id: run.dag_id for kind in EXPORT_KINDS
                      for run in by_dag.get(dag_id(kind, store.id), ())}
            placed.update({run_id: dag for (sid, run_id), dag in (run_dags or {}).items() if sid == store.id})
            counted = store_facts.paths or PathCounts(paths_span_start(store, now))
            paths = delivery_paths(store, counted, placed)
        stores.append(StoreHealth(
            store, freshness(store, export_runs, now), window_bars(export_runs), store_facts,
            newest("order_status_sync"), stock_sync(newest("inventory_sync")),
            newest("order_export_on_demand"), paths))
    return HealthView(tuple(stores), now, ledger_error, airflow_error)


# -- release -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReleasePlan:
    """What a release asks: the ids to trigger the on-demand run with, or why it is refused."""

    store_id: str
    order_ids: tuple[int, ...] = ()
    refusal: str | None = None

    @property
    def conf(self) -> dict[str, Any]:
        return {"order_ids": list(self.order_ids)}


def plan_release(engine: Engine, store_id: str, raw_ids: Iterable[str]) -> ReleasePlan:
    """Check a release: at least one id, at most the on-demand run's limit, every id an order
    number with an open quarantine entry in the store. Anything else is refused with a sentence
    and nothing is triggered (a partial release would hide the ids the operator got wrong)."""
    words = [w for raw in raw_ids for w in str(raw).replace(",", " ").split()]
    if not words:
        return ReleasePlan(store_id, refusal="Select at least one quarantined order to release.")
    bad = [w for w in words if parse_order_id(w) is None]
    if bad:
        return ReleasePlan(store_id, refusal=f"Not an order id: {', '.join(bad[:10])}. Nothing was released.")
    ids = tuple(dict.fromkeys(str(parse_order_id(w)) for w in words))
    if len(ids) > MAX_ORDER_IDS:
        return ReleasePlan(store_id, refusal=f"At most {MAX_ORDER_IDS} orders can be released at once "
                                             f"({len(ids)} selected). Nothing was released.")
    open_ids = open_quarantine_ids(engine, store_id, ids)
    missing = [i for i in ids if i not in open_ids]
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        verb = "is" if len(missing) == 1 else "are"
        return ReleasePlan(store_id, refusal=f"Order{'s' if len(missing) > 1 else ''} {shown} {verb} not in "
                                             f"quarantine for store {store_id}. Nothing was released.")
    return ReleasePlan(store_id, tuple(int(i) for i in ids))


# -- rendering ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Notice:
    """The answer to a release, shown above the stores: ``triggered`` (with the run) or ``refused``."""

    outcome: Literal["triggered", "refused"]
    text: str
    store_id: str
    run_id: str | None = None


@lru_cache(maxsize=16_384)  # the same runs' links on every page view
def _q(part: str) -> str:
    return quote(part, safe="")


@dataclass(frozen=True, slots=True)
class Links:
    """Where the page's links go: the Airflow UI (``ui``, '' at the server's root) and this app."""

    app: str
    ui: str = ""

    def run(self, dag: str, run_id: str) -> str:
        return f"{self.ui}/dags/{_q(dag)}/runs/{_q(run_id)}"

    def task(self, dag: str, run_id: str, task_id: str) -> str:
        return f"{self.run(dag, run_id)}/tasks/{_q(task_id)}"

    def dag(self, dag: str) -> str:
        return f"{self.ui}/dags/{_q(dag)}"

    def report(self, dag: str, run_id: str) -> str:
        return f"{self.app}/report/{_q(dag)}/{_q(run_id)}"

    def release(self, store_id: str) -> str:
        return f"{self.app}/stores/{_q(store_id)}/release"


COLOURS = {"delivered": "#2e7d32", "quarantined": "#ef6c00", "not_ready": "#9e9e9e",
           "already_delivered": "#64b5f6"}
CSS = """
body{font:14px system-ui,sans-serif;margin:1rem;color:#222}
section.store{border:1px solid #ccc;border-radius:6px;padding:.6rem 1rem;margin:0 0 1rem}
h2{margin:.2rem 0 .4rem;font-size:1.15rem} h3{font-size:1rem;margin:.8rem 0 .3rem}
.ok{color:#2e7d32}.late{color:#c62828;font-weight:600}
.panel{padding:.6rem 1rem;border-radius:6px;margin:.6rem 0}
.error{background:#fdecea;border:1px solid #c62828}.notice{background:#e8f5e9;border:1px solid #2e7d32}
.refused{background:#fff3e0;border:1px solid #ef6c00}
table{border-collapse:collapse}
td,th{border-bottom:1px solid #eee;padding:.15rem .5rem;text-align:left;vertical-align:top}
.muted{color:#777}.legend span{display:inline-block;margin-right:1rem}
.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}
"""


def _t(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} d"] * bool(days) + [f"{hours} h"] * bool(hours) + [f"{mins} min"]
    return " ".join(parts[:2])


def _last_windows(n: int) -> str:
    """The chart's header: "Last window" for one, "Last 48 windows" for more."""
    return "Last window" if n == 1 else f"Last {n} windows"


def _a(href: str, text: str, **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{html.escape(v)}"' for k, v in attrs.items())
    return f'<a href="{html.escape(href)}" target="_top"{extra}>{html.escape(text)}</a>'


def render_page(view: HealthView, links: Links, notice: Notice | None = None) -> str:
    """The whole page. Stable ids and ``data-test`` attributes for browser tests (docs/health.md)."""
    e = html.escape
    parts = ['<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Integration health</title>'
             f'<style>{CSS}</style></head><body>'
             f'<main id="health" data-generated-at="{_iso(view.generated_at)}"><h1>Integration health</h1>'
             f"<p class=\"muted\">As of {_t(view.generated_at)}; from the ledger and Airflow's runs.</p>"]
    if notice is not None:
        link = (" " + _a(links.run(dag_id("order_export_on_demand", notice.store_id), notice.run_id),
                         notice.run_id, id="release-run", data_test="release-run") if notice.run_id else "")
        css = "notice" if notice.outcome == "triggered" else "refused"
        parts.append(f'<div id="release-result" class="panel {css}" data-test="release-result" '
                     f'data-outcome="{notice.outcome}" data-store="{e(notice.store_id)}">'
                     f"{e(notice.text)}{link}</div>")
    for key, message in (("ledger-error", view.ledger_error), ("airflow-error", view.airflow_error)):
        if message:
            what = "The ledger" if key == "ledger-error" else "Airflow's run data"
            parts.append(f'<div id="{key}" class="panel error" data-test="{key}" role="alert"><strong>{what} '
                         f'could not be read.</strong> {e(message)}</div>')
    if not view.stores:
        parts.append('<p data-test="no-stores">No store in the config that you may see.</p>')
    parts += [_store(s, links) for s in view.stores]
    parts.append("</main></body></html>")
    return "".join(parts)


def _store(health: StoreHealth, links: Links) -> str:
    sid = health.store.id
    return (f'<section class="store" id="store-{sid}" data-test="store" data-store="{sid}">'
            f"<h2>{sid} <small class=\"muted\">{health.store.platform}, {health.store.schedule}</small></h2>"
            + _freshness(health, links) + _chart(health, links) + _paths(health, links)
            + _quarantine(health, links)
            + _status_sync(health, links) + _stock_sync(health, links) + "</section>")


def _freshness(health: StoreHealth, links: Links) -> str:
    sid, f = health.store.id, health.freshness
    export = dag_id("order_export", sid)
    if not health.has_runs:
        return (f'<p id="freshness-{sid}" data-test="freshness" data-late="false"><span data-test="no-runs">'
                f"no runs yet</span> ({_a(links.dag(export), export)})</p>")
    if f.last_window is None:
        return (f'<p id="freshness-{sid}" class="late" data-test="freshness" data-late="true">No window '
                f"exported yet: every run of {_a(links.dag(export), export)} so far failed or is running."
                "</p>")
    state = "late" if f.late else "ok"
    behind = ("up to date" if not f.missing else
              f"{f.missing} window{'s' if f.missing > 1 else ''} behind ({_span(f.behind or timedelta(0))})")
    return (f'<p id="freshness-{sid}" class="{state}" data-test="freshness" '
            f'data-late="{str(f.late).lower()}" data-last-window-end="{_iso(f.last_window[1])}" '
            f'data-missing="{f.missing}">Last window exported: '
            f"{_t(f.last_window[0])} – {_t(f.last_window[1])}; {behind}"
            + (f"; late (more than {_span(f.late_after)} after it closed)" if f.late else "") + "</p>")


def _chart(health: StoreHealth, links: Links) -> str:
    bars = health.windows
    if not bars:
        return ""
    width, height, step = 12, 100, 14
    top = max([sum(b.counts.values()) for b in bars if b.counts] + [1])
    export = dag_id("order_export", health.store.id)
    svg = [f'<svg id="chart-{health.store.id}" data-test="chart" role="img" width="{step * len(bars) + 4}" '
           f'height="{height + 14}" aria-label="last {len(bars)} windows">']
    for i, bar in enumerate(bars):
        x = 2 + i * step
        counts = bar.counts or {}
        data = " ".join(f'data-{k.replace("_", "-")}="{counts.get(k, 0)}"' for k in BUCKETS)
        title = (f"{_t(bar.start)} – {_t(bar.end)}: {bar.run.state}; "
                 + (", ".join(f"{k}={counts[k]}" for k in BUCKETS) if bar.counts else "no summary"))
        svg.append(f'<a href="{html.escape(links.run(export, bar.run.run_id))}" target="_top">'
                   f'<g data-test="window" data-start="{_iso(bar.start)}" data-state="{bar.run.state}" '
                   f"{data}>"
                   f"<title>{html.escape(title)}</title>")
        y = height
        for key in BUCKETS:
            h = round(counts.get(key, 0) * height / top)
            if h:
                y -= h
                svg.append(f'<rect x="{x}" y="{y}" width="{width}" height="{h}" fill="{COLOURS[key]}"/>')
        if bar.failed:
            svg.append(f'<rect data-test="failed" x="{x}" y="0" width="{width}" height="{height}" '
                       'fill="none" stroke="#c62828" stroke-width="2"/>'
                       f'<text x="{x + 2}" y="{height + 12}" fill="#c62828" font-size="11">✕</text>')
        elif bar.counts is None:
            svg.append(f'<rect x="{x}" y="{height - 3}" width="{width}" height="3" fill="#bbb"/>')
        svg.append("</g></a>")
    svg.append("</svg>")
    legend = "".join(f'<span><i style="background:{c}"></i>{k.replace("_", " ")}</span>'
                     for k, c in COLOURS.items())
    latest = bars[-1]
    run_links = [_a(links.run(export, latest.run.run_id), "latest run", data_test="latest-run"),
                 _a(links.task(export, latest.run.run_id, "publish"), "its summary log")]
    reported = next((b for b in reversed(bars) if b.report), None)
    if reported is not None:
        run_links.append(_a(links.report(export, reported.run.run_id), f"GX report ({_t(reported.start)})",
                            data_test="gx-report"))
    return (f"<h3>{_last_windows(len(bars))}</h3>{''.join(svg)}<div class=\"legend\">{legend}<span>"
            f'<i style="border:2px solid #c62828"></i>failed run</span></div><p>{" · ".join(run_links)}</p>')


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _paths(health: StoreHealth, links: Links) -> str:
    """Deliveries by path over the chart's span; in real-time mode what the safety net caught."""
    sid, paths = health.store.id, health.paths
    if paths is None:
        return ('<h3>Deliveries by path</h3><p class="muted" data-test="delivery-paths-unavailable">'
                "ledger unavailable</p>")
    dag_of = {"window": "order_export", "realtime_webhook": "order_export_realtime",
              "realtime_poll": "order_export_realtime", "on_demand": "order_export_on_demand"}
    counts = paths.counts
    rows = []
    for path in (*PATHS, "other"):
        if path == "other" and not counts.get(path):
            continue
        label = PATH_LABELS[path]
        name = _a(links.dag(dag_id(dag_of[path], sid)), label) if path in dag_of else html.escape(label)
        rows.append(f'<tr data-test="path" data-path="{path}" data-count="{counts.get(path, 0)}">'
                    f"<td>{name}</td><td>{counts.get(path, 0)}</td></tr>")
    data = " ".join(f'data-{p.replace("_", "-")}="{counts.get(p, 0)}"' for p in (*PATHS, "other"))
    parts = [f'<h3>Deliveries by path</h3><div id="paths-{sid}" data-test="delivery-paths" '
             f'data-since="{_iso(paths.since)}" data-total="{paths.total}" {data}>'
             f"<p>{_plural(paths.total, 'order version')} delivered since {_t(paths.since)} (the chart's "
             f"span), by the path that delivered each:</p><table>{''.join(rows)}</table>"]
    if paths.realtime:
        polled = paths.source == "polling"
        how = "the storefront poll missed them or was late" if polled else "webhooks dropped or late"
        inbox = "webhook inbox (filled by the storefront poll)" if polled else "webhook inbox"
        if paths.caught:
            share = f"{100 * paths.caught / paths.total:.0f} %"
            caught = (f"The safety-net window caught {_plural(paths.caught, 'order version')} the "
                      f"real-time path missed ({how}): {share} of all delivered; real time delivered "
                      f"{paths.by_realtime}.")
        else:
            caught = ("The safety-net window caught nothing the real-time path missed; real time delivered "
                      f"{paths.by_realtime}.")
        if paths.waiting:
            waiting = (f" {_plural(paths.waiting, 'order')} waiting in the {inbox}, the oldest since "
                       f"{_t(paths.waiting_since)}.")
        else:
            waiting = f" Nothing waiting in the {inbox}."
        parts.append(f'<p id="safety-net-{sid}" data-test="safety-net" data-caught="{paths.caught}" '
                     f'data-realtime="{paths.by_realtime}" data-waiting="{paths.waiting}">'
                     f"{caught}{waiting}</p>")
    else:
        parts.append('<p class="muted">Batch mode: the scheduled window is the path (a store in mode '
                     "realtime also shows here what its safety net caught).</p>")
    return "".join(parts) + "</div>"


def _quarantine(health: StoreHealth, links: Links) -> str:
    sid, facts = health.store.id, health.facts
    if facts is None:
        return ('<h3>Open quarantine</h3><p class="muted" data-test="quarantine-unavailable">'
                "ledger unavailable</p>")
    if not facts.quarantine_open:
        return (f'<h3>Open quarantine</h3><p id="quarantine-{sid}" data-test="quarantine" data-open="0">'
                "Nothing in quarantine.</p>")
    rows = "".join(
        f'<tr data-test="quarantined-order" data-order-id="{o.order_id}"><td><input type="checkbox" '
        f'name="order_id" value="{o.order_id}" id="release-{sid}-{o.order_id}"></td>'
        f"<td>{o.order_id}</td><td>{html.escape(', '.join(o.rules))}</td><td>{_t(o.since)}</td>"
        f"<td>{o.versions}</td></tr>" for o in facts.quarantine)
    hidden = facts.quarantine_open - len(facts.quarantine)
    more = f'<p class="muted">{hidden} more not listed (oldest first).</p>' if hidden > 0 else ""
    ondemand = dag_id("order_export_on_demand", sid)
    recent = "".join(f"<li>{_a(links.run(ondemand, r.run_id), r.run_id)} {r.state}</li>"
                     for r in health.releases[:3])
    return (f"<h3>Open quarantine: {facts.quarantine_open} order{'s' * (facts.quarantine_open != 1)}</h3>"
            f'<form id="release-form-{sid}" method="post" action="{html.escape(links.release(sid))}">'
            f'<table id="quarantine-{sid}" data-test="quarantine" data-open="{facts.quarantine_open}">'
            "<thead><tr>"
            "<th></th><th>order id</th><th>rules failed</th><th>since</th><th>versions</th></tr></thead>"
            f'<tbody>{rows}</tbody></table>{more}<button type="submit" id="release-button-{sid}" '
            f'data-test="release">Release selected (runs {ondemand})</button></form>'
            + (f'<p>Recent on-demand runs:</p><ul data-test="on-demand-runs">{recent}</ul>'
               if recent else ""))


def _outcomes(counts: Mapping[str, int], test: str) -> str:
    return "".join(f'<li data-test="{test}" data-outcome="{html.escape(k)}" data-count="{v}">'
                   f"{html.escape(k)}: {v}</li>" for k, v in sorted(counts.items()))


def _status_sync(health: StoreHealth, links: Links) -> str:
    sid, facts = health.store.id, health.facts
    sync = dag_id("order_status_sync", sid)
    last = health.status_runs[0] if health.status_runs else None
    run = (f"last run {_a(links.run(sync, last.run_id), last.run_id)} {last.state}, "
           f"{_a(links.task(sync, last.run_id, 'sync_files'), 'log')}" if last else "no runs yet")
    if facts is None:
        return f"<h3>Status sync</h3><p>{run}</p>"
    files = facts.status_files
    lines: Counter[str] = Counter()
    for f in files:
        lines.update(f.lines)
    errors = "".join(
        f'<li data-test="status-error-file" data-file="{html.escape(f.name)}">{html.escape(f.name)} '
        f"({_t(f.last_at)}): {html.escape('; '.join(f.reasons))}</li>" for f in files if f.in_error)
    applied = sum(1 for f in files if not f.in_error)
    return (f'<h3>Status sync</h3><div id="status-sync-{sid}" data-test="status-sync" '
            f'data-files-applied="{applied}" data-files-in-error="{len(files) - applied}">'
            f"<p>Last {SYNC_DAYS} days: "
            f"{applied} file{'s' * (applied != 1)} applied, {len(files) - applied} in the error/ folder; "
            f"{run}.</p><ul>{_outcomes(lines, 'status-outcome')}</ul>"
            + ('<p>Files in the error/ folder (their reasons, as in <code>.errors.json</code>):</p>'
               f"<ul>{errors}</ul>" if errors else "") + "</div>")


def _stock_sync(health: StoreHealth, links: Links) -> str:
    sid, stock, facts = health.store.id, health.stock, health.facts
    sync = dag_id("inventory_sync", sid)
    last = stock.runs[0] if stock.runs else None
    run = f"last run {_a(links.run(sync, last.run_id), last.run_id)} {last.state}" if last else "no runs yet"
    errors = "".join(
        f'<li data-test="stock-error-file" data-file="{html.escape(str(f.get("file")))}">'
        f'{html.escape(str(f.get("file")))}: '
        + html.escape(", ".join(f"{k}={v}" for k, v in sorted((f.get("counts") or {}).items()) if v))
        + f" — reasons in {html.escape(str(f.get('errors_file')))} and the "
        f"{_a(links.task(sync, r.run_id, 'sync_files'), 'task log')}</li>" for r, f in stock.error_files)
    levels = ("" if facts is None else
              f"; the ledger holds {facts.stock_levels} level{'s' * (facts.stock_levels != 1)}, last applied "
              f"{_t(facts.stock_last_at)} ({len(facts.stock_files)} file{'s' * (len(facts.stock_files) != 1)}"
              f" in the last {SYNC_DAYS} days)")
    last_runs = "Last run" if len(stock.runs) == 1 else f"Last {len(stock.runs)} runs"
    return (f'<h3>Stock sync</h3><div id="stock-sync-{sid}" data-test="stock-sync" '
            f'data-files="{len(stock.files)}" data-files-in-error="{len(stock.error_files)}">'
            f"<p>{last_runs}: {len(stock.files)} file{'s' * (len(stock.files) != 1)}, "
            f"{len(stock.error_files)} in the error/ folder; {run}{levels}.</p>"
            f"<ul>{_outcomes(stock.outcomes, 'stock-outcome')}</ul>"
            + (f"<p>Files in the error/ folder:</p><ul>{errors}</ul>" if errors else "") + "</div>")
