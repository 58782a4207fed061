"""Backfill benchmark: the same 24-window backfill on LocalExecutor and on Celery with two workers.

    python bench/celery_bench.py [--windows 24] [--orders-per-hour 50] [--executors local celery]

Each executor gets a fresh loopback deployment of docker-compose.yaml's topology
(``tests.support.infra.loopback_cluster``: PostgreSQL for metadata DB and ledger, Redis, the S3
server for ``s3://`` staging, OpenSSH, api-server, scheduler, dag-processor, triggerer), with
two Celery workers of concurrency 1 for ``celery`` and ``LocalExecutor`` with parallelism 2 for
``local`` (the same two task slots: the comparison is of executors, not of slot counts). The
sandbox storefront holds ``orders-per-hour`` orders for each of the ``windows`` hours; the
backfill of ``order_export__demo`` covers them with ``max_active_runs`` = windows. Timed: from
``airflow backfill create`` to the backfill complete (start-up excluded, reported apart).

Results: a table on stdout and JSON under ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pendulum

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.generator import generate_orders  # noqa: E402
from sandbox.storefront import SandboxStorefront  # noqa: E402
from tests.support.infra import loopback_cluster  # noqa: E402

START = pendulum.datetime(2026, 3, 2, tz="UTC")
EXPORT = "order_export__demo"
EXECUTORS = {
    "local": ((), {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "2"}),
    "celery": (("worker-1", "worker-2"), {}),
}


def run_one(kind: str, windows: int, per_hour: int, base: Path) -> dict:
    workers, executor_env = EXECUTORS[kind]
    orders = generate_orders(per_hour * windows, start=START, end=START.add(hours=windows), seed=24)
    t0 = time.monotonic()
    with (
        SandboxStorefront(orders) as shop,
        loopback_cluster(base / kind, shop, workers=workers, executor_env=executor_env,
                         dag_ids=[EXPORT]) as cluster,
    ):
        startup = time.monotonic() - t0
        cluster.api.unpause(EXPORT)
        first, last = START, START.add(hours=windows - 1)
        t1 = time.monotonic()
        backfill = cluster.services.backfill(EXPORT, first.to_iso8601_string(), last.to_iso8601_string(),
                                             max_active_runs=windows)
        runs = cluster.api.wait_for_backfill(backfill["id"], timeout=3600)
        elapsed = time.monotonic() - t1
        hosts: dict[str, int] = {}
        for run in runs:
            for ti in cluster.api.task_instances(EXPORT, run["dag_run_id"]):
                hosts[ti["hostname"]] = hosts.get(ti["hostname"], 0) + 1
    states = [r["state"] for r in runs]
    return {"executor": kind, "runs": len(runs), "success": states.count("success"),
            "seconds": round(elapsed, 1), "startup_seconds": round(startup, 1), "orders": len(orders),
            "task_instances_by_host": hosts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--orders-per-hour", type=int, default=50)
    parser.add_argument("--executors", nargs="+", choices=sorted(EXECUTORS), default=["local", "celery"])
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="celery-bench-") as tmp:
        for kind in args.executors:
            print(f"{kind}: starting ...", flush=True)
            results.append(run_one(kind, args.windows, args.orders_per_hour, Path(tmp)))
            print(f"{kind}: {results[-1]}", flush=True)
    print(f"\n{'executor':<8} {'runs':>5} {'ok':>4} {'backfill s':>11} {'start-up s':>11}  tasks by host")
    for r in results:
        print(f"{r['executor']:<8} {r['runs']:>5} {r['success']:>4} {r['seconds']:>11} "
              f"{r['startup_seconds']:>11}  {r['task_instances_by_host']}")
    by = {r["executor"]: r for r in results}
    if {"local", "celery"} <= set(by):
        print(f"\ncelery / local = {by['celery']['seconds'] / by['local']['seconds']:.2f}")
    out = ROOT / "bench" / "results" / f"celery_bench_{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "platform": platform.platform(), "cpus": os.cpu_count(),
                               "load_average": os.getloadavg(), "results": results}, indent=1))
    print(f"written {out}")
    return 0 if all(r["success"] == r["runs"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
