"""Integration-health view: time to render the page for 50 stores over a year of ledger rows, and
the plans of the view's ledger queries.

A synthetic ledger (SQLite always; PostgreSQL with ``--postgres``, a throw-away cluster from
``tests.support.infra.Postgres``) holds ``--rows`` rows (default 1,000,000) spread over ``--stores``
stores and one year, shaped like a year of hourly exports:

* ``order_deliveries`` 60 %, ``status_events`` 30 % (files of 50 lines, 1 % refused),
  ``order_quarantine`` 6 % (95 % released since), ``stock_levels`` 4 %;
* beside them, as a load leaves them (not counted in ``--rows``): a ``delivery_claims`` row per
  delivery and a ``delivery_batches`` row per orders file — one file per store and hour for the
  scheduled window; the first ``--realtime`` stores are in mode realtime (the first half of them fed
  by webhooks, the rest by polling): 80 % of their deliveries by real-time runs (one file per store
  and minute, each order's ``webhook_inbox`` row done by the run, topic ``poll`` for polling), 18 % by
  the window; 2 % of every store's deliveries by on-demand runs (one a day);

and each store has the Airflow runs the page reads (48 export windows with their ``publish``
summaries, 10 runs each of the on-demand, status-sync and inventory DAGs), as
:class:`order_integration.health.RunRecord` values: Airflow's metadata queries are measured on
a real Airflow database with ``--airflow`` (a migrated SQLite metadata DB in a temp home, the
runs and XComs inserted, then :func:`order_integration.health.read_runs` through Airflow's session).

Timed, median of ``--repeat`` passes after one warm-up: ``read_ledger`` (the five queries),
``build_view`` + ``render_page``, and their sum; the first (cold) pass too. Prints a table and the
plans; writes JSON to bench/results/.

    .venv/bin/python bench/health_bench.py                      # SQLite, 1M rows, 50 stores
    .venv/bin/python bench/health_bench.py --postgres --airflow  # + PostgreSQL, + Airflow's side
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, create_engine, insert, text  # noqa: E402

from order_integration import health  # noqa: E402
from order_integration.config import parse_config  # noqa: E402
from order_integration.ledger import migrate, sqlite_engine  # noqa: E402
from order_integration.ledger.schema import (  # noqa: E402
    delivery_batches,
    delivery_claims,
    order_deliveries,
    order_quarantine,
    status_events,
    stock_levels,
    webhook_inbox,
)

NOW = datetime(2026, 12, 5, 12, 30, tzinfo=UTC)
YEAR = timedelta(days=365)
CHUNK = 20_000


def store_ids(n: int) -> list[str]:
    return [f"store_{i:02d}" for i in range(n)]


def realtime_stores(stores: list[str], n: int) -> dict[str, str]:
    """The first ``n`` stores in mode realtime: store -> realtime_source (webhooks, then polling)."""
    return {s: ("webhooks" if i < (n + 1) // 2 else "polling") for i, s in enumerate(stores[:n])}


def _delivery(i: int, stores: list[str], realtime: dict[str, str], rnd: random.Random) -> dict[str, Any]:
    """Delivery ``i``: its store, order version, run (hence path), file and upload time."""
    span = YEAR.total_seconds()
    store = stores[i % len(stores)]
    at = NOW - timedelta(seconds=rnd.random() * span)
    draw = rnd.random()
    hour = at.replace(minute=0, second=0, microsecond=0)
    source = realtime.get(store)
    if draw < 0.02:  # on demand, one run a day
        day = at.replace(hour=0, minute=0, second=0, microsecond=0)
        run_id, uploaded, topic = f"manual__{day.isoformat()}", day + timedelta(hours=12), None
    elif source and draw < 0.82:  # real time, one run a minute
        minute = at.replace(second=0, microsecond=0)
        run_id, uploaded = f"asset_triggered__{minute.isoformat()}", minute + timedelta(seconds=15)
        topic = "poll" if source == "polling" else "order.updated"
    else:  # the window that ends after it
        run_id, uploaded, topic = f"scheduled__{hour.isoformat()}", hour + timedelta(hours=1, minutes=2), None
    uploaded = min(uploaded, NOW)
    return {"store": store, "order_id": str(100_000 + i // len(stores)), "version": f"v{i % 7}",
            "run_id": run_id, "batch_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{store}/{run_id}")),
            "uploaded": uploaded, "topic": topic}


def _delivery_rows(stores: list[str], n: int, seed: int, realtime: dict[str, str]) -> dict[Any, Any]:
    """The deliveries and what the load and the receiver write beside them, from one replayed draw."""

    def replay(n: int):  # the same deliveries for every table that records them
        own = random.Random(seed + 1)
        for i in range(n):
            yield i, _delivery(i, stores, realtime, own)

    def deliveries(n: int):
        for _i, d in replay(n):
            yield {"store_id": d["store"], "order_id": d["order_id"], "order_version": d["version"],
                   "file_name": f"orders_{d['batch_id']}.csv", "delivered_at": d["uploaded"]}

    def claims(n: int):
        for _i, d in replay(n):
            yield {"store_id": d["store"], "order_id": d["order_id"], "order_version": d["version"],
                   "batch_id": d["batch_id"]}

    def inbox(n: int):
        for i, d in replay(n):
            if d["topic"] is not None:
                yield {"store_id": d["store"], "order_id": d["order_id"], "topic": d["topic"],
                       "delivery_id": f"d{i}", "body_digest": "0" * 64,
                       "received_at": d["uploaded"] - timedelta(seconds=10), "done_at": d["uploaded"],
                       "done_by_run": d["run_id"]}

    return {order_deliveries: deliveries(n), delivery_claims: claims(n),
            delivery_batches: _batches(replay(n)), webhook_inbox: inbox(n)}


def _batches(replayed: Any):
    """One ``delivery_batches`` row per distinct file of the replayed deliveries."""
    seen: set[str] = set()
    for _i, d in replayed:
        if d["batch_id"] in seen:
            continue
        seen.add(d["batch_id"])
        yield {"batch_id": d["batch_id"], "store_id": d["store"], "run_id": d["run_id"], "window_label": "w",
               "source_path": f"file:///staging/{d['store']}/{d['run_id']}/deliverable.jsonl",
               "staged_path": f"file:///staging/{d['store']}/{d['run_id']}/orders.csv",
               "file_name": f"orders_{d['batch_id']}.csv", "orders": 1, "created_at": d["uploaded"],
               "uploaded_at": d["uploaded"]}


def _rows(stores: list[str], total: int, seed: int, realtime: dict[str, str] | None = None) -> dict[Any, Any]:
    """Generators of each table's rows (dicts), shaped as in the module docstring."""
    rnd = random.Random(seed)
    span = YEAR.total_seconds()
    realtime = realtime or {}

    def when() -> datetime:
        return NOW - timedelta(seconds=rnd.random() * span)

    def quarantine(n: int):
        for i in range(n):
            at = when()
            released = None if (i // len(stores)) % 20 == 0 else at + timedelta(hours=1 + rnd.random() * 48)
            yield {
                "store_id": stores[i % len(stores)],
                "order_id": str(900_000 + i // len(stores)),
                "order_version": "v1",
                "quarantined_at": at,
                "released_at": released,
                "reasons": json.dumps([{"rule": "email_valid", "detail": "x"}]),
            }

    def events(n: int):
        for i in range(n):
            file_no = i // 50
            store = stores[file_no % len(stores)]
            refused = i % 100 == 7
            yield {
                "store_id": store,
                "source_file": f"status_{file_no}.csv",
                "line_number": i % 50 + 1,
                "order_id": str(100_000 + i),
                "event": "shipped",
                "applied_at": NOW - timedelta(seconds=(file_no * 7919) % int(span)),
                "outcome": f"refused: order {i} is cancelled" if refused else "applied",
            }

    def levels(n: int):
        for i in range(n):
            yield {
                "store_id": stores[i % len(stores)],
                "sku": f"SKU-{i // len(stores)}",
                "quantity": i % 40,
                "as_of": when(),
                "applied_at": when(),
                "source_file": f"stock_{i % 500}.csv",
                "location": "",
            }

    n_deliveries = int(total * 0.60)
    tables = _delivery_rows(stores, n_deliveries, seed, realtime)
    return {
        order_deliveries: tables.pop(order_deliveries),
        status_events: events(int(total * 0.30)),
        order_quarantine: quarantine(int(total * 0.06)),
        stock_levels: levels(int(total * 0.04)),
        **tables,
    }


#: Tables the load and the receiver write beside each delivery: not counted in ``--rows``.
BESIDE = ("delivery_claims", "delivery_batches", "webhook_inbox")


def fill(engine: Engine, stores: list[str], total: int, seed: int,
         realtime: dict[str, str] | None = None) -> dict[str, int]:
    migrate(engine)
    written: dict[str, int] = {}
    for table, rows in _rows(stores, total, seed, realtime).items():
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == CHUNK:
                with engine.begin() as conn:
                    conn.execute(insert(table), batch)
                written[table.name] = written.get(table.name, 0) + len(batch)
                batch = []
        if batch:
            with engine.begin() as conn:
                conn.execute(insert(table), batch)
            written[table.name] = written.get(table.name, 0) + len(batch)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return written


def synthetic_runs(stores: list[str]) -> list[health.RunRecord]:
    runs = []
    due = NOW.replace(minute=0)
    for store in stores:
        for h in range(48):
            start = due - timedelta(hours=48 - h)
            failed = h == 40
            summary = (
                None
                if failed
                else {
                    "delivered": 20 + h % 5,
                    "quarantined": h % 3,
                    "not_ready": 4,
                    "already_delivered": 2,
                    "report_paths": [f"file:///s/{h}.html"],
                }
            )
            runs.append(
                health.RunRecord(
                    f"order_export__{store}",
                    f"scheduled__{start.isoformat()}",
                    "scheduled",
                    "failed" if failed else "success",
                    start + timedelta(hours=1),
                    start,
                    start + timedelta(hours=1),
                    {"publish": summary} if summary else {},
                )
            )
        for k in range(10):
            at = NOW - timedelta(minutes=10 * k)
            runs.append(
                health.RunRecord(
                    f"order_status_sync__{store}",
                    f"scheduled__{k}",
                    "scheduled",
                    "success",
                    at,
                    summaries={"sync_files": {"files": 1, "counts": {"applied": 50}}},
                )
            )
            runs.append(
                health.RunRecord(
                    f"inventory_sync__{store}",
                    f"scheduled__{k}",
                    "scheduled",
                    "success",
                    at,
                    summaries={
                        "sync_files": {
                            "files": [
                                {
                                    "file": f"stock_{k}.csv",
                                    "rows": 100,
                                    "errors_file": None,
                                    "counts": {"applied": 90, "unchanged": 10},
                                }
                            ],
                            "counts": {"applied": 90, "unchanged": 10},
                        }
                    },
                )
            )
            runs.append(
                health.RunRecord(f"order_export_on_demand__{store}", f"manual__{k}", "manual", "success", at)
            )
    return runs


def config_of(stores: list[str], realtime: dict[str, str] | None = None) -> Any:
    realtime = realtime or {}
    return parse_config({"stores": [
        {"id": s, "storefront_conn_id": "sf", "backend_conn_id": "be"}
        | ({"mode": "realtime", "realtime_source": realtime[s]} if s in realtime else {})
        for s in stores]})


def time_page(engine: Engine, stores: list[str], runs: list[health.RunRecord], repeat: int,
              realtime: dict[str, str] | None = None) -> dict[str, Any]:
    config = config_of(stores, realtime)
    links = health.Links(app="/order-integration-health")
    passes = []
    page = ""
    facts: dict[str, Any] = {}
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        facts = health.read_ledger(engine, stores, NOW, config=config)
        t1 = time.perf_counter()
        # the few runs the ledger cannot place (the on-demand ones) as Airflow's dag_run names them
        run_dags = {(s, r): f"order_export_on_demand__{s}" for s, ids in health.unplaced_runs(facts).items()
                    for r in ids}
        page = health.render_page(health.build_view(config, runs, facts, NOW, run_dags=run_dags), links)
        t2 = time.perf_counter()
        passes.append((t1 - t0, t2 - t1))
    paths = {s: dict(f.paths.counts) for s, f in facts.items() if f.paths}
    unplaced = sum(len(ids) for ids in health.unplaced_runs(facts).values())
    warm = passes[1:]
    return {
        "cold_ledger_s": round(passes[0][0], 4),
        "cold_total_s": round(sum(passes[0]), 4),
        "ledger_s": round(statistics.median(p[0] for p in warm), 4),
        "render_s": round(statistics.median(p[1] for p in warm), 4),
        "total_s": round(statistics.median(sum(p) for p in warm), 4),
        "page_bytes": len(page),
        "open_quarantine_rows": page.count('data-test="quarantined-order"'),
        "paths_first_store": paths.get(stores[0]),
        "paths_last_store": paths.get(stores[-1]),
        "paths_versions": sum(sum(c.values()) for c in paths.values()),
        "unplaced_runs": unplaced,
    }


def _migrate_from(engine: Engine, version: int, names: tuple[str, ...]) -> tuple[float, list[str]]:
    with engine.begin() as conn:
        for name in names:
            conn.execute(text(f"DROP INDEX {name}"))
        conn.execute(text("DELETE FROM ledger_schema"))
        conn.execute(text("INSERT INTO ledger_schema (version, migrated_at) VALUES (:v, :t)"),
                     {"v": version, "t": NOW})
    t0 = time.perf_counter()
    done = migrate(engine)
    return round(time.perf_counter() - t0, 2), list(done.created_indexes)


def time_migration(engine: Engine) -> dict[str, Any]:
    """Upgrades of the filled ledger (what a year-old ledger costs): version 4 -> 6 (the version-5
    and version-6 indexes dropped), then version 5 -> 6 (the version-6 index dropped)."""
    v6 = ("ix_delivery_batches_uploaded",)
    four, created = _migrate_from(engine, 4, ("ix_order_quarantine_open", "ix_status_events_applied",
                                              "ix_stock_levels_applied", *v6))
    with engine.begin() as conn:
        conn.execute(text(f"DROP INDEX {v6[0]}"))
    without = _time_paths_query(engine)  # what the deliveries by path cost without the version-6 index
    five, created_6 = _migrate_from(engine, 5, ())
    return {"migrate_4_to_6_s": four, "migrate_5_to_6_s": five, "created_indexes": created,
            "created_indexes_5_to_6": created_6, "paths_query_without_index_s": without,
            "paths_query_s": _time_paths_query(engine)}


def _time_paths_query(engine: Engine, repeat: int = 3) -> float:
    """Median seconds of the deliveries-by-path query for every store (the 48 hours before NOW)."""
    with engine.connect() as conn:
        stores = list(conn.execute(text("SELECT DISTINCT store_id FROM order_deliveries")).scalars())
    query = health.delivery_paths_query(dict.fromkeys(stores, NOW - timedelta(hours=health.WINDOWS)))
    timings = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(query).all()
        timings.append(time.perf_counter() - t0)
    return round(statistics.median(timings[1:]), 4)


def plans(engine: Engine, stores: list[str], realtime: dict[str, str] | None = None) -> dict[str, list[str]]:
    found = {}
    config = config_of(stores, realtime)
    queries = health.ledger_queries(
        stores, NOW - timedelta(days=health.SYNC_DAYS), realtime=list(realtime or ()),
        paths_since={s.id: health.paths_span_start(s, NOW) for s in config.stores})
    with engine.connect() as conn:
        for name, query in queries.items():
            sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
            if engine.dialect.name == "sqlite":
                found[name] = [str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
            else:
                found[name] = [r[0] for r in conn.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}")]
    return found


def airflow_side(stores: list[str], runs: list[health.RunRecord], repeat: int) -> dict[str, Any]:
    """read_runs on a real (SQLite) Airflow metadata database holding ``runs`` and their XComs."""
    import os
    import subprocess

    home = Path(tempfile.mkdtemp(prefix="health_bench_airflow_"))
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    os.environ.update({k: env[k] for k in ("AIRFLOW_HOME", "AIRFLOW__CORE__LOAD_EXAMPLES")})
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    dag_ids = sorted({r.dag_id for r in runs})
    xcoms: list[tuple[Any, ...]] = []
    with create_session() as session:
        session.execute(insert(DagBundleModel.__table__), {"name": "dags-folder", "active": True})
        session.execute(
            insert(DagModel.__table__),
            [
                {
                    "dag_id": d,
                    "is_paused": True,
                    "is_stale": False,
                    "fileloc": "x.py",
                    "bundle_name": "dags-folder",
                    "max_active_tasks": 16,
                    "max_consecutive_failed_dag_runs": 0,
                    "has_task_concurrency_limits": False,
                    "has_import_errors": False,
                    "timetable_type": "",
                }
                for d in dag_ids
            ],
        )
        for run in runs:
            dr = DagRun(
                dag_id=run.dag_id,
                run_id=run.run_id,
                run_type=run.run_type,
                state=run.state,
                run_after=run.run_after,
                logical_date=run.window_start,
                data_interval=(run.window_start, run.window_end) if run.window_start else None,
            )
            session.add(dr)
            session.flush()
            xcoms += [(dr.id, task_id, -1, "return_value", run.dag_id, run.run_id, json.dumps(value),
                       run.run_after.isoformat(sep=" ")) for task_id, value in run.summaries.items()]
    # XCom rows reference task instances (a foreign key); the bench makes runs, not task instances,
    # so the rows go in with SQLite's foreign keys off, as JSON text as Airflow stores them.
    import sqlite3

    raw = sqlite3.connect(home / "airflow.db")
    with raw:
        raw.execute("PRAGMA foreign_keys=OFF")
        raw.executemany('INSERT INTO xcom (dag_run_id, task_id, map_index, "key", dag_id, run_id, value, '
                        "timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", xcoms)
    raw.close()
    timings = []
    read: list[health.RunRecord] = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        with create_session() as session:
            read = health.read_runs(session, [health.dag_id(k, s) for s in stores for k in health.KINDS])
        timings.append(time.perf_counter() - t0)
    with create_session() as session:
        engine = session.get_bind()
        from sqlalchemy import func, select

        rank = func.row_number().over(partition_by=DagRun.dag_id, order_by=DagRun.run_after.desc())
        sql = str(
            select(DagRun.id, rank)
            .where(DagRun.dag_id.in_(dag_ids[:3]))
            .compile(engine, compile_kwargs={"literal_binds": True})
        )
        plan = [str(r[-1]) for r in session.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
    return {
        "runs": len(runs),
        "read": len(read),
        "with_summary": sum(1 for r in read if r.summaries),
        "cold_s": round(timings[0], 4),
        "read_runs_s": round(statistics.median(timings[1:]), 4),
        "dag_run_plan": plan,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=50)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--realtime", type=int, default=5, help="stores in mode realtime (the first ones)")
    parser.add_argument("--postgres", action="store_true", help="also on a throw-away PostgreSQL cluster")
    parser.add_argument("--airflow", action="store_true", help="also read_runs on a real Airflow metadata DB")
    args = parser.parse_args(argv)
    stores = store_ids(args.stores)
    realtime = realtime_stores(stores, args.realtime)
    runs = synthetic_runs(stores)
    results: dict[str, Any] = {"stores": args.stores, "rows": args.rows, "runs": len(runs),
                               "realtime": realtime}
    with tempfile.TemporaryDirectory(prefix="health_bench_") as tmp:
        engines = {"sqlite": sqlite_engine(Path(tmp) / "ledger.db")}
        pg = None
        if args.postgres:
            from tests.support.infra import Postgres

            pg = Postgres(Path(tmp) / "pg").start()
            engines["postgresql"] = create_engine(pg.create_database("health_bench"))
        try:
            for name, engine in engines.items():
                t0 = time.perf_counter()
                written = fill(engine, stores, args.rows, args.seed, realtime)
                fill_s = time.perf_counter() - t0
                results[name] = {
                    "written": sum(n for t, n in written.items() if t not in BESIDE),
                    "beside": {t: written.get(t, 0) for t in BESIDE},
                    "fill_s": round(fill_s, 1),
                    **time_migration(engine),
                    **time_page(engine, stores, runs, args.repeat, realtime),
                    "plans": plans(engine, stores, realtime),
                }
                engine.dispose()
        finally:
            if pg is not None:
                pg.stop()
    print(f"{args.stores} stores, {args.rows:,} ledger rows, {len(runs)} runs (median of {args.repeat})")
    print(
        f"{'database':<11} {'rows':>9} {'ledger s':>9} {'render s':>9} {'total s':>8} "
        f"{'cold s':>7} {'page KB':>8} {'4->6 s':>7} {'5->6 s':>7}"
    )
    for name in ("sqlite", "postgresql"):
        if name in results:
            r = results[name]
            print(
                f"{name:<11} {r['written']:>9,} {r['ledger_s']:>9.4f} {r['render_s']:>9.4f} "
                f"{r['total_s']:>8.4f} "
                f"{r['cold_total_s']:>7.3f} {r['page_bytes'] / 1024:>8.0f} {r['migrate_4_to_6_s']:>7.2f} "
                f"{r['migrate_5_to_6_s']:>7.2f}"
            )
            print(f"{'':<11} deliveries-by-path query: {r['paths_query_s']} s "
                  f"(without ix_delivery_batches_uploaded: {r['paths_query_without_index_s']} s)")
            print(f"{'':<11} beside: {r['beside']}; deliveries by path in the span: {r['paths_versions']:,} "
                  f"versions, {r['unplaced_runs']} runs placed by Airflow; "
                  f"{stores[0]}: {r['paths_first_store']}, {stores[-1]}: {r['paths_last_store']}")
    for name in ("sqlite", "postgresql"):
        for query, plan in results.get(name, {}).get("plans", {}).items():
            print(f"\n[{name}] {query}:\n  " + "\n  ".join(plan))
    if args.airflow:
        results["airflow"] = airflow_side(stores, runs, args.repeat)
    if "airflow" in results:
        a = results["airflow"]
        print(
            f"\nAirflow read_runs: {a['read']} runs ({a['with_summary']} with a summary) "
            f"in {a['read_runs_s']} s "
            f"(cold {a['cold_s']} s); dag_run plan: {' | '.join(a['dag_run_plan'])}"
        )
    out = ROOT / "bench" / "results" / f"health_bench_{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
