"""Real-time latency bench: order placed -> file renamed on SFTP, through webhooks and through polling.

    python bench/realtime_bench.py [--orders 200] [--seconds 120] [--paths webhooks polling]
                                   [--poll-seconds 5]

One deployment, the one the real-time integration test runs (``tests/support/airflow_services.py``):
a fresh SQLite Airflow home, api-server (the package's plugin: the webhook receiver) + scheduler +
dag-processor + triggerer (LocalExecutor, ``AIRFLOW__CORE__PARALLELISM=4``, loopback only), OpenSSH
(``tests/support/sshd.py``), and two stores in ``mode: realtime`` — one per path, each with its own
WooCommerce sandbox storefront (in this process) and inbound folder:

* **webhooks**: the sandbox sends a signed ``order.created`` webhook for every order placed, as
  WooCommerce does (``shop.send_webhooks``, sandbox/webhook_sender.py: 2 sender threads);
* **polling**: ``realtime_source: polling`` — no webhooks; the triggerer asks the storefront for the
  orders modified since its last scan.

Both realtime DAGs are active from their first parse; every other DAG is paused once the stack is
up, so nothing else competes (a real deployment also runs its schedules). Then, per path in turn:
``--orders`` orders placed at an even rate over ``--seconds`` (each a new order in an exportable
status, dated when it is placed), and a wait until every one is in a file on SFTP.

Figures per path (bench/README.md, "Real-time latency"):

* **latency**: from placing the order (the sandbox's ``add_orders``) to the rename of the file that
  holds it in the inbound folder (the file's ``ctime``: the rename is its last inode change); p50,
  p95, max;
* **runs**: real-time DAG runs created; **CPU s/order**: user+system CPU of the four Airflow
  components' process trees (task processes included) during the phase, per order;
* **where the time goes** (medians over orders): placed -> in the inbox (webhook POST, or the poll
  that found it); inbox -> its run queued (the trigger's poll, the Asset event, and waiting for the
  run before it: ``max_active_runs=1``); run queued -> its first task running (scheduler and
  executor); first task -> file renamed (the tasks; per task median durations and the gaps
  between tasks, which are task start-up and queueing);
* ``import great_expectations`` in a fresh interpreter, timed separately (the validate task pays it).

The machine's load average is printed before and after: a bench on a shared machine says so.
Results: a table on stdout and JSON under ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
EXPORTABLE = {"processing", "on-hold"}
SECRET = "bench-webhook-secret"
TASKS = ("take_waiting", "extract", "validate", "load", "publish", "mark_done")


def _tree_cpu(services: Any) -> float:
    """User + system CPU of every component's process tree (reaped children included)."""
    import psutil

    total = 0.0
    for proc in services.procs.values():
        try:
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def _ts(text: str | None) -> float | None:
    from datetime import datetime

    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _med(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


class SftpWatch:
    """Notes, for every file renamed into ``folder``, its rename time (``ctime``) and order ids."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, float] = {}
        self.order_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import csv
        import io

        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                for path in self.folder.iterdir():
                    if path.name.startswith(".") or path.name in self.files:
                        continue
                    renamed = path.stat().st_ctime
                    self.files[path.name] = renamed
                    for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")):
                        self.order_at.setdefault(row["order_id"], renamed)
            self._stop.wait(0.2)

    def __enter__(self) -> SftpWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _orders(n: int, first_id: int, seed: int) -> list[dict[str, Any]]:
    """``n`` order bodies in an exportable status (dated when they are placed)."""
    import pendulum

    from sandbox.generator import generate_orders

    now = pendulum.now("UTC")
    pool = generate_orders(n * 3, start=now, end=now.add(seconds=1), seed=seed, first_id=first_id)
    paid = [o for o in pool if o["status"] in EXPORTABLE][:n]
    if len(paid) < n:
        raise SystemExit(f"the generator gave {len(paid)} paid orders of {n * 3}; raise the pool")
    return paid


def _dated(order: dict[str, Any], order_id: int) -> dict[str, Any]:
    """The order, its id ``order_id``, created and modified now (paid now when it was paid)."""
    import pendulum

    now = pendulum.now("UTC")
    wall = "%Y-%m-%dT%H:%M:%S"
    gmt, local = now.strftime(wall), now.in_timezone("Europe/Berlin").strftime(wall)
    out = {**order, "id": order_id, "number": str(order_id)}
    for field in ("date_created", "date_modified"):
        out[f"{field}_gmt"], out[field] = gmt, local
    if out.get("date_paid_gmt"):
        out["date_paid_gmt"], out["date_paid"] = gmt, local
    return out


def _place(path: str, d: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Place the orders of one path at an even rate; wait until each is on SFTP and the runs are over."""
    services, api = d["services"], d["services"].api
    harness, shop, dag_id = d[path]["harness"], d[path]["shop"], d[path]["dag"]
    first_id = 100_000 if path == "webhooks" else 200_000
    bodies = _orders(args.orders, first_id, args.seed)
    sender = None
    if path == "webhooks":
        url = f"{services.base_url}/order-integration/webhooks/{harness.store_id}"
        sender = shop.send_webhooks(url, SECRET, workers=2, seed=args.seed)
    placed: dict[str, float] = {}
    interval = args.seconds / max(args.orders - 1, 1)
    load_before = os.getloadavg()
    cpu0, own0 = _tree_cpu(services), time.process_time()
    t0 = time.time()
    with SftpWatch(harness.inbound_dir) as watch:
        for i, body in enumerate(bodies):
            time.sleep(max(0.0, t0 + i * interval - time.time()))
            order = _dated(body, first_id + i)
            placed[str(order["id"])] = time.time()
            shop.add_orders([order])
        last_placed = time.time()
        while set(placed) - set(watch.order_at) and time.time() < last_placed + args.timeout:
            time.sleep(0.5)
        done = time.time()
        while time.time() < done + 120:  # every run over (the last one may still mark its rows done)
            runs = _runs_since(api, dag_id, t0)
            if runs and all(r["state"] in ("success", "failed") for r in runs):
                break
            time.sleep(1)
    cpu_s, own_s = _tree_cpu(services) - cpu0, time.process_time() - own0
    if sender is not None:
        shop.stop_webhooks()
    return {"placed": placed, "order_at": dict(watch.order_at), "files": len(watch.files), "t0": t0,
            "placed_over_s": last_placed - t0, "cpu_s": cpu_s, "own_s": own_s, "load_before": load_before,
            "load_after": os.getloadavg(), "sender": sender.summary() if sender is not None else None}


def _runs_since(api: Any, dag_id: str, t0: float) -> list[dict[str, Any]]:
    return [r for r in api.runs(dag_id) if (_ts(r.get("queued_at")) or 0) >= t0 - 1]


def _stages(d: dict[str, Any], path: str, m: dict[str, Any], runs: dict[str, Any],
            tis: dict[str, dict[str, dict[str, Any]]]) -> dict[str, list[float]]:
    """Per order: placed -> inbox row; -> its run queued; -> the run's first task; -> file renamed."""
    rows = {r["order_id"]: r for r in d["inbox"].rows(d[path]["harness"].store_id)}
    stages: dict[str, list[float]] = {"to_inbox": [], "inbox_to_run_queued": [], "queued_to_first_task": [],
                                      "first_task_to_file": []}
    for oid, at in m["placed"].items():
        row = rows.get(oid)
        if row is None or oid not in m["order_at"]:
            continue
        received = row["received_at"]
        received = (received if received.tzinfo is not None else received.replace(tzinfo=UTC)).timestamp()
        stages["to_inbox"].append(received - at)
        run = runs.get(row["done_by_run"] or "")
        if run is None:
            continue
        queued = _ts(run["queued_at"])
        first = _ts((tis[run["dag_run_id"]].get("take_waiting") or {}).get("start_date"))
        if queued is not None:
            stages["inbox_to_run_queued"].append(queued - received)
        if queued is not None and first is not None:
            stages["queued_to_first_task"].append(first - queued)
        if first is not None:
            stages["first_task_to_file"].append(m["order_at"][oid] - first)
    return stages


def _gaps(tis: dict[str, dict[str, dict[str, Any]]], tasks: tuple[str, ...]) -> list[list[float]]:
    """Per run, the gaps between its tasks (one task's end to the next one's start)."""
    out = []
    for r in tis.values():
        chain = [r.get(t) for t in tasks]
        if all(c and c.get("start_date") and c.get("end_date") for c in chain):
            out.append([_ts(b["start_date"]) - _ts(a["end_date"]) for a, b in itertools.pairwise(chain)])
    return out


def run_path(path: str, d: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Place the orders of one path, wait for every one on SFTP, and take the figures."""
    api, dag_id = d["services"].api, d[path]["dag"]
    m = _place(path, d, args)
    placed, order_at = m["placed"], m["order_at"]
    values = [order_at[oid] - at for oid, at in placed.items() if oid in order_at]
    runs = {r["dag_run_id"]: r for r in _runs_since(api, dag_id, m["t0"])}
    tis = {rid: {ti["task_id"]: ti for ti in api.task_instances(dag_id, rid)} for rid in runs}
    durations = {t: [ti["duration"] for r in tis.values() if (ti := r.get(t)) and ti.get("duration")]
                 for t in TASKS}
    return {
        "path": path, "orders": len(placed), "placed_over_s": round(m["placed_over_s"], 1),
        "delivered": len(values), "missing": sorted(set(placed) - set(order_at), key=int)[:20],
        "files": m["files"], "p50_s": round(_pct(values, 0.5), 1), "p95_s": round(_pct(values, 0.95), 1),
        "max_s": round(max(values), 1) if values else None,
        "min_s": round(min(values), 1) if values else None,
        "runs": len(runs),
        "runs_skipped": sum(1 for r in tis.values()
                            if (r.get("take_waiting") or {}).get("state") == "skipped"),
        "runs_failed": sum(1 for r in runs.values() if r["state"] == "failed"),
        "cpu_s": round(m["cpu_s"], 1), "cpu_s_per_order": round(m["cpu_s"] / max(len(placed), 1), 3),
        "bench_process_cpu_s": round(m["own_s"], 1),
        "stage_medians_s": {k: _med(v) for k, v in _stages(d, path, m, runs, tis).items()},
        "task_median_s": {t: _med(v) for t, v in durations.items()},
        "gap_between_tasks_median_s": _med([g for run in _gaps(tis, TASKS) for g in run]),
        "gap_between_tasks_sum_median_s": _med([sum(run) for run in _gaps(tis, TASKS[:4])]),
        "load_before": [round(x, 2) for x in m["load_before"]],
        "load_after": [round(x, 2) for x in m["load_after"]], "webhooks_sent": m["sender"],
    }


def _gx_import_s() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import great_expectations"], check=True, capture_output=True,
                   env={**os.environ, "GX_ANALYTICS_ENABLED": "False"})
    return round(time.perf_counter() - t, 2)


def _one_config(main: Any, *others: Any) -> None:
    """One config file for the deployment: every harness's store (each keeps its own folders)."""
    import yaml

    stores = [yaml.safe_load(h.config_path.read_text())["stores"][0] for h in (main, *others)]
    main.config_path.write_text(yaml.safe_dump({"stores": stores}))


def bench(args: argparse.Namespace, work: Path, sshd: Any) -> dict[str, Any]:
    from order_integration.config import load_config
    from order_integration.ledger import WebhookInbox, sqlite_engine
    from order_integration.pools import pools_for
    from tests.support.airflow_run import migrate_airflow_db, sandbox_stores
    from tests.support.airflow_services import LEAN_SETTINGS, AirflowServices

    home = work / "home"
    migrate_airflow_db(home)
    with sandbox_stores(home, sshd, work / "stores") as make:
        realtime = {"mode": "realtime", "realtime_poll_seconds": args.poll_seconds}
        wh, wh_shop = make([], **realtime)
        pl, pl_shop = make([], realtime_source="polling", **realtime)
        _one_config(wh, pl)
        env = {k: v for k, v in {**pl.env(), **wh.env()}.items() if os.environ.get(k) != v}
        env[f"AIRFLOW_CONN_STOREFRONT_{wh.store_id.upper()}"] = json.dumps(
            {**wh.storefront_connection(), "extra": {"webhook_secret": SECRET}})
        env.update(LEAN_SETTINGS)
        env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"  # the watchers start at first parse
        env["AIRFLOW__CORE__FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
        dags = {"webhooks": f"order_export_realtime__{wh.store_id}",
                "polling": f"order_export_realtime__{pl.store_id}"}
        t = time.perf_counter()
        with AirflowServices(home, env, dag_ids=list(dags.values())) as services:
            start_s = time.perf_counter() - t
            api = services.api
            api.ensure_pools(pools_for(load_config(wh.config_path).stores))
            for store in (wh.store_id, pl.store_id):
                for kind in ("order_export", "order_export_on_demand", "order_status_sync", "inventory_sync"):
                    with contextlib.suppress(Exception):
                        api.set_paused(f"{kind}__{store}", True)
            log = services.log_file("triggerer")
            deadline = time.time() + 240
            while time.time() < deadline:
                text = log.read_text(errors="replace") if log.exists() else ""
                if f"store {wh.store_id}: watching" in text and f"store {pl.store_id}: polling" in text:
                    break
                time.sleep(1)
            else:
                raise SystemExit(f"the triggerer did not start both watchers:\n{services.diagnostics()}")
            time.sleep(5)  # the scheduled runs made at start (paused now) settle
            d = {"services": services, "inbox": WebhookInbox(sqlite_engine(home / "order_ledger.db")),
                 "webhooks": {"harness": wh, "shop": wh_shop, "dag": dags["webhooks"]},
                 "polling": {"harness": pl, "shop": pl_shop, "dag": dags["polling"]}}
            results = []
            for path in args.paths:
                print(f"  {path}: placing {args.orders} orders over {args.seconds:g}s "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
                results.append(run_path(path, d, args))
                r = results[-1]
                print(f"  {path}: p50 {r['p50_s']} s, p95 {r['p95_s']} s, max {r['max_s']} s, "
                      f"{r['delivered']}/{r['orders']} delivered, {r['runs']} runs", flush=True)
    return {"services_start_s": round(start_s, 1), "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=120.0, help="placed evenly over this long")
    parser.add_argument("--paths", nargs="+", choices=("webhooks", "polling"),
                        default=["webhooks", "polling"])
    parser.add_argument("--poll-seconds", type=int, default=5, help="realtime_poll_seconds of both stores")
    parser.add_argument("--timeout", type=float, default=600.0, help="after the last order, seconds")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the Airflow home and logs")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))  # `tests.support` (the harness) is not an installed package
    from tests.support.sshd import start_sshd

    stamp = time.strftime("%Y%m%dT%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    print(f"real-time bench {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()}), {args.orders} orders over "
          f"{args.seconds:g}s per path, realtime_poll_seconds {args.poll_seconds}, load {os.getloadavg()}",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="realtime_bench_"))
    try:
        sshd = start_sshd(work / "sshd")
        try:
            out = bench(args, work, sshd)
        finally:
            sshd.stop()
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out["gx_import_s"] = _gx_import_s()

    header = (f"{'path':>8} {'orders':>7} {'p50 s':>6} {'p95 s':>6} {'max s':>6} {'runs':>4} "
              f"{'CPU s/order':>11} {'to inbox':>8} {'->queued':>8} {'->1st task':>10} {'->file':>7} "
              f"{'load 1m':>11}")
    print(header)
    print("-" * len(header))
    for r in out["results"]:
        s = r["stage_medians_s"]
        print(f"{r['path']:>8} {r['delivered']:>3}/{r['orders']:<3} {r['p50_s']:>6} {r['p95_s']:>6} "
              f"{r['max_s']:>6} {r['runs']:>4} {r['cpu_s_per_order']:>11} {s['to_inbox']!s:>8} "
              f"{s['inbox_to_run_queued']!s:>8} {s['queued_to_first_task']!s:>10} "
              f"{s['first_task_to_file']!s:>7} {r['load_before'][0]:>5}->{r['load_after'][0]:<5}")
        print(f"{'':>8} task medians s: " + " ".join(f"{k}={v}" for k, v in r["task_median_s"].items())
              + f"; gap between tasks median {r['gap_between_tasks_median_s']} s, "
              f"sum to load {r['gap_between_tasks_sum_median_s']} s")
    print(f"services start {out['services_start_s']} s; import great_expectations (fresh interpreter) "
          f"{out['gx_import_s']} s")
    result_file = RESULTS_DIR / f"realtime_bench_{stamp}.json"
    result_file.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "args": vars(args), **out,
    }, indent=1, default=str))
    print(f"results: {result_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
