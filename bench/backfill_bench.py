"""Backfill benchmark: wall time of ``airflow backfill create`` over N hourly windows, by max_active_runs.

    python bench/backfill_bench.py [--windows 24] [--orders-per-hour 5] [--max-active-runs 1 2 4]

For each ``max_active_runs`` value, a fresh deployment — the same one the scheduler integration
test runs (``tests/support/airflow_services.py``): ``airflow db migrate`` of a new SQLite home,
api-server + scheduler + dag-processor + triggerer (LocalExecutor, ``AIRFLOW__CORE__PARALLELISM=4``,
loopback only, log servers off), one store wired to the sandbox storefront (in this process)
and OpenSSH (``tests/support/sshd.py``), the store's pools created, the DAG unpaused. Then
``airflow backfill create --dag-id order_export__<store> --from-date D 00:00 --to-date D 23:00
--max-active-runs M`` and a wait until the scheduler marks the backfill complete.

Figures per value (see bench/README.md):

* **wall s**: from starting the CLI until every run of the backfill has finished (runs polled
  every second through the API; the scheduler's own "backfill complete" mark comes up to 30 s
  later and is not waited for); **cli s**: the ``backfill create`` command alone (imports + run
  creation);
* **runs/min**, **s/window**: N / wall;
* **task s** (sum of the task instances' durations) and **busy**: task s / wall, how many
  task processes were running on average;
* **queue wait s**: median of (task start - task queued): how long a ready task waited for an
  executor slot or a pool slot (``storefront__…`` 2 slots, ``order_load__…`` 1 slot);
* **sched CPU s**: CPU of the scheduler's process tree during the backfill — the LocalExecutor
  runs every task as its child, so this is nearly all the work (task processes included).

The bench refuses to report a backfill that is not a correct export: every run must succeed and
every eligible order (status ``processing``/``on-hold``, modified in the backfilled span
including the first window's lookback) must be delivered exactly once.

``[scheduler] use_job_schedule`` is off so that no scheduled run of the current hour competes.
Results: a table on stdout and JSON under ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DAY = "2026-11-02"
EXPORTABLE = {"processing", "on-hold"}


def _sched_cpu(services: Any) -> float:
    """User + system CPU of the scheduler and every process below it (reaped children included)."""
    import psutil

    proc = services.procs.get("scheduler")
    if proc is None:
        return 0.0
    total = 0.0
    try:
        root = psutil.Process(proc.pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    except psutil.Error:
        return 0.0
    return total


def _seconds(a: str | None, b: str | None) -> float | None:
    from datetime import datetime

    if not a or not b:
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(b) - parse(a)).total_seconds()


def bench_one(max_active_runs: int, args: argparse.Namespace, work: Path, sshd: Any) -> dict[str, Any]:
    import pendulum

    from order_integration.config import load_config
    from order_integration.pools import pools_for
    from sandbox.generator import generate_orders
    from tests.support.airflow_run import migrate_airflow_db, sandbox_stores
    from tests.support.airflow_services import LEAN_SETTINGS, AirflowServices

    day = pendulum.parse(DAY, tz="UTC")
    start, end = day, day.add(hours=args.windows)
    orders = generate_orders(args.orders_per_hour * args.windows, start=start, end=end, seed=args.seed)
    home = work / f"home_mar{max_active_runs}"
    t = time.perf_counter()
    migrate_airflow_db(home)
    migrate_s = time.perf_counter() - t

    overrides: dict[str, Any] = {}
    if args.storefront_concurrency:
        overrides["storefront_concurrency"] = args.storefront_concurrency
    with sandbox_stores(home, sshd, work / f"stores_mar{max_active_runs}") as make:
        harness, _shop = make(orders, **overrides)
        env = {k: v for k, v in harness.env().items() if os.environ.get(k) != v}
        env.update(LEAN_SETTINGS)
        env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
        t = time.perf_counter()
        with AirflowServices(home, env, dag_ids=[harness.dag_id]) as services:
            start_s = time.perf_counter() - t
            api = services.api
            api.ensure_pools(pools_for(load_config(harness.config_path).stores))
            api.unpause(harness.dag_id)
            load_before = os.getloadavg()
            cpu0 = _sched_cpu(services)
            t0 = time.perf_counter()
            backfill = services.backfill(harness.dag_id, start.to_iso8601_string(),
                                         end.subtract(hours=1).to_iso8601_string(),
                                         max_active_runs=max_active_runs)
            cli_s = time.perf_counter() - t0
            runs = api.wait_for_backfill(backfill["id"], run_ids=backfill["run_ids"], timeout=args.timeout,
                                         poll=1.0)
            wall_s = time.perf_counter() - t0
            cpu_s = _sched_cpu(services) - cpu0
            load_after = os.getloadavg()
            tis = [ti for r in runs for ti in api.task_instances(harness.dag_id, r["dag_run_id"])]

        bad = [r["dag_run_id"] for r in runs if r["state"] != "success"]
        if len(runs) != args.windows or bad:
            raise SystemExit(f"max_active_runs={max_active_runs}: {len(runs)} runs, not successful: {bad}")
        lookback = pendulum.duration(minutes=harness_lookback(harness))
        eligible = {str(o["id"]) for o in orders if o["status"] in EXPORTABLE
                    and start - lookback <= pendulum.parse(o["date_modified_gmt"] + "Z") < end}
        delivered = harness.delivered_versions()
        ids = sorted(oid for oid, _ in delivered)
        if ids != sorted(eligible):
            raise SystemExit(f"max_active_runs={max_active_runs}: delivered {len(ids)} orders "
                             f"({len(set(ids))} distinct), {len(eligible)} eligible")

    task_s = sum(ti["duration"] or 0.0 for ti in tis)
    waits = [w for ti in tis if (w := _seconds(ti["queued_when"], ti["start_date"])) is not None]
    by_task: dict[str, list[float]] = {}
    for ti in tis:
        by_task.setdefault(ti["task_id"], []).append(ti["duration"] or 0.0)
    run_walls = [w for r in runs if (w := _seconds(r["start_date"], r["end_date"])) is not None]
    return {
        "max_active_runs": max_active_runs, "windows": args.windows, "orders": len(orders),
        "eligible": len(eligible), "delivered": len(delivered), "files": len(harness.inbound_files()),
        "wall_s": round(wall_s, 1), "cli_s": round(cli_s, 1),
        "runs_per_min": round(60 * args.windows / wall_s, 2),
        "s_per_window": round(wall_s / args.windows, 1), "task_s": round(task_s, 1),
        "busy": round(task_s / wall_s, 2), "queue_wait_median_s": round(statistics.median(waits), 1),
        "queue_wait_max_s": round(max(waits), 1), "run_wall_median_s": round(statistics.median(run_walls), 1),
        "task_median_s": {k: round(statistics.median(v), 1) for k, v in by_task.items()},
        "scheduler_cpu_s": round(cpu_s, 1), "migrate_s": round(migrate_s, 1),
        "services_start_s": round(start_s, 1),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
    }


def harness_lookback(harness: Any) -> int:
    from order_integration.config import load_config

    return load_config(harness.config_path).stores[0].lookback_minutes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=24, help="hourly windows to backfill (default 24)")
    parser.add_argument("--orders-per-hour", type=int, default=5)
    parser.add_argument("--max-active-runs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--storefront-concurrency", type=int, default=None,
                        help="slots of the storefront pool (default: the store config's default)")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--timeout", type=float, default=3600.0, help="per backfill, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the Airflow homes and logs")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))  # `tests.support` (the harness) is not an installed package
    from tests.support.sshd import start_sshd

    stamp = time.strftime("%Y%m%dT%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    print(f"backfill bench {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()}), {args.windows} windows, "
          f"{args.orders_per_hour} orders/hour, load {os.getloadavg()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="backfill_bench_"))
    results: list[dict[str, Any]] = []
    try:
        sshd = start_sshd(work / "sshd")
        try:
            for mar in args.max_active_runs:
                result = bench_one(mar, args, work, sshd)
                results.append(result)
                print(f"  max_active_runs={mar}: {result['wall_s']} s "
                      f"(load {result['load_before'][0]} -> {result['load_after'][0]})", flush=True)
        finally:
            sshd.stop()
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    header = (f"{'max_active_runs':>15} {'wall s':>7} {'cli s':>6} {'s/window':>8} {'runs/min':>8} "
              f"{'task s':>7} {'busy':>5} {'q wait med':>10} {'q wait max':>10} {'run med s':>9} "
              f"{'sched CPU s':>11} {'load 1m':>12}  task medians s")
    print(header)
    print("-" * len(header))
    for r in results:
        tm = " ".join(f"{k}={v}" for k, v in r["task_median_s"].items())
        print(f"{r['max_active_runs']:>15} {r['wall_s']:>7} {r['cli_s']:>6} {r['s_per_window']:>8} "
              f"{r['runs_per_min']:>8} {r['task_s']:>7} {r['busy']:>5} {r['queue_wait_median_s']:>10} "
              f"{r['queue_wait_max_s']:>10} {r['run_wall_median_s']:>9} {r['scheduler_cpu_s']:>11} "
              f"{r['load_before'][0]:>5}->{r['load_after'][0]:<5}  {tm}")
    if results:
        base = results[0]["wall_s"]
        print("speed-up vs the first: "
              + ", ".join(f"{r['max_active_runs']}: {base / r['wall_s']:.2f}x" for r in results))
    out = RESULTS_DIR / f"backfill_bench_{stamp}.json"
    out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "args": vars(args), "results": results,
    }, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
