"""Export benchmark: extract / validate / load against the sandboxes, next to the floor.

    python bench/export_bench.py [--orders 10000 100000] [--repeat 1] [--profile validate]

For each N: N seeded orders modified over one hour are served by the sandbox storefront
(``python -m sandbox.storefront``, its own process) and the embedded SFTP server
(``python -m sandbox.sftp_server``, its own process), so server work is never counted as client
cost (the client process is measured; the servers' CPU is reported apart). Connections are
``AIRFLOW_CONN_*`` environment variables, the ledger a temporary SQLite file, staging a temporary
``file://`` ``ObjectStoragePath``. The steps are called exactly as ``order_integration.tasks``
calls them (``get_client`` + ``export.extract``; a new client and ledger + ``export.validate``;
a new ledger + ``SftpBackend`` + ``export.load``), one after the other in this process.

The FLOOR is the least any export must do for the same window: page the orders with one
``requests.Session`` (``per_page=100``, ``orderby=modified&order=asc``, the same bounds) and write
one CSV row per line item (``json.loads`` per page, ``csv.writer`` per line).

Figures (see bench/README.md): wall seconds per step; client CPU (``time.process_time`` of this
process, all threads); server CPU (the storefront process, psutil); pages requested; peak RSS
*per step* (``VmHWM`` after resetting it through ``/proc/self/clear_refs`` before the step, so
it is attributable); ``tracemalloc`` peak per step (Python allocations only, in a separate
pass because tracing slows allocation-heavy code); ``ru_maxrss`` of the whole process at the end.
One-off imports (GX, pandas, the hooks) are timed first, outside the steps: a real task pays
them once per task process (none, with the preload). Then the bench imports
``order_integration.preload`` as a deployment's task processes have (README "Task start-up":
GX, pandas and the task modules imported, then ``gc.freeze()``), unless ``--no-preload``.

Results: a table on stdout and JSON under ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import csv
import gc
import importlib
import json
import logging
import os
import platform
import pstats
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
KEY, SECRET = "ck_bench", "cs_bench"
STORE_ID = "bench"
STOREFRONT_CONN, BACKEND_CONN = "bench_storefront", "bench_backend"
#: The benchmark window: one hour, fixed so every run serves the same orders.
WINDOW_END = "2026-03-02T11:00:00+00:00"
PER_PAGE = 100
FLOOR_FIELDS = ("order_id", "status", "date_modified_gmt", "currency", "sku", "quantity", "line_total")
#: Imported before any step, each timed on its own (a task process pays them once).
ONE_OFF_IMPORTS = (
    "requests",
    "airflow.sdk",
    "airflow.providers.http.hooks.http",
    "order_integration.storefronts.woocommerce",
    "pandas",
    "great_expectations",
    "order_integration.validation.gx_runner",
    "airflow.providers.sftp.hooks.sftp",
    "paramiko",
)
STEPS = ("floor", "extract", "validate", "load")

log = logging.getLogger("bench")


# --- measuring ---------------------------------------------------------------------------------------


def _status_kb(field_name: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``); 0 where /proc is missing."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field_name}:\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) if match else 0


def _reset_rss_peak() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _cpu_seconds(proc: Any) -> float:
    """User + system CPU of a psutil process (its threads included); 0 when unknown."""
    if proc is None:
        return 0.0
    try:
        t = proc.cpu_times()
    except Exception:  # the server exited: the step will fail loudly on its own
        return 0.0
    return t.user + t.system


@dataclass
class Measured:
    """One step of one run."""

    step: str
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float
    requests: int
    rss_start_mb: float
    rss_peak_mb: float  # VmHWM during the step (absolute), None-equivalent 0 if unsupported
    trace_peak_mb: float | None = None  # tracemalloc peak above the step's start, tracing pass only
    result: dict[str, Any] = field(default_factory=dict)


class Meter:
    """Measures steps: wall, CPU of both sides, request count, per-step RSS and tracemalloc peaks."""

    def __init__(self, shop: StorefrontProcess, *, trace: bool = False, gc_off: bool = False) -> None:
        self.shop = shop
        self.trace = trace
        self.gc_off = gc_off

    def run(self, step: str, fn: Callable[[], dict[str, Any]], *,
            profile: Path | None = None) -> Measured:
        gc.collect()
        requests0 = self.shop.request_count()
        server0 = _cpu_seconds(self.shop.psutil_proc)
        _reset_rss_peak()
        rss0 = _status_kb("VmRSS")
        traced0 = 0
        if self.trace:
            tracemalloc.reset_peak()
            traced0 = tracemalloc.get_traced_memory()[0]
        profiler = cProfile.Profile() if profile is not None else None
        if self.gc_off:  # what-if: the cyclic GC off during the step (refcounting still frees)
            gc.disable()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        try:
            result = fn()
        finally:
            if profiler is not None:
                profiler.disable()
            gc.enable()
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        server = _cpu_seconds(self.shop.psutil_proc) - server0
        trace_peak = None
        if self.trace:
            trace_peak = (tracemalloc.get_traced_memory()[1] - traced0) / 2**20
        peak = _status_kb("VmHWM")
        if profiler is not None and profile is not None:
            profiler.dump_stats(profile)
        return Measured(
            step=step, wall_s=wall, client_cpu_s=cpu, server_cpu_s=server,
            requests=self.shop.request_count() - requests0,
            rss_start_mb=rss0 / 1024, rss_peak_mb=peak / 1024, trace_peak_mb=trace_peak,
            result={k: v for k, v in result.items() if isinstance(v, int | float | str)},
        )


# --- the servers (separate processes) -------------------------------------------------------------


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 15 s; closes a captured stdout."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


class StorefrontProcess:
    """``python -m sandbox.storefront`` generating and serving N orders on a free port."""

    def __init__(self, orders: int, seed: int, start: Any, end: Any, gen_chunk: int = 0) -> None:
        # gen_chunk > 0: bench/sandbox_serve.py generates the orders that many at a time (1M orders).
        server = ["-m", "sandbox.storefront"] if gen_chunk <= 0 else [
            str(ROOT / "bench" / "sandbox_serve.py"), "--chunk", str(gen_chunk)]
        self.args = [
            sys.executable, *server, "--port", "0", "--orders", str(orders),
            "--seed", str(seed), "--start", start.isoformat(), "--end", end.isoformat(),
            "--key", KEY, "--secret", SECRET,
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.psutil_proc: Any = None
        self.base_url = ""

    def start(self) -> StorefrontProcess:
        import psutil

        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once the orders are generated and loaded
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"sandbox storefront did not start: {line!r}")
        self.base_url = match.group(1)
        self.psutil_proc = psutil.Process(self.proc.pid)
        return self

    def request_count(self) -> int:
        """API requests served so far (the sandbox's own request log)."""
        import requests

        resp = requests.get(f"{self.base_url}/__sandbox/requests", timeout=60)
        resp.raise_for_status()
        return len(resp.json())

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc)
        self.proc = None


class SftpProcess:
    """``python -m sandbox.sftp_server`` on a free port; its connection JSON comes via a file."""

    def __init__(self, work: Path) -> None:
        self.root = work / "sftp_root"
        self.keys = work / "sftp_keys"
        self.conn_file = work / "sftp_conn.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.connection: dict[str, Any] = {}

    def start(self) -> SftpProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.sftp_server", "--root", str(self.root), "--keys",
             str(self.keys), "--port", "0", "--conn-file", str(self.conn_file)],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not self.conn_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("embedded SFTP server did not start")
            time.sleep(0.05)
        self.connection = json.loads(self.conn_file.read_text())
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc)
        self.proc = None


# --- the floor and the pipeline --------------------------------------------------------------------


def floor_export(base_url: str, params: dict[str, str], out: Path) -> dict[str, Any]:
    """The minimum: page the window with one session, one CSV row per line item."""
    import requests

    url = f"{base_url}/wp-json/wc/v3/orders"
    orders = rows = pages = 0
    with requests.Session() as session, out.open("w", newline="", encoding="utf-8") as fh:
        session.auth = (KEY, SECRET)
        writer = csv.writer(fh)
        writer.writerow(FLOOR_FIELDS)
        page = 1
        while True:
            resp = session.get(url, timeout=60, params={
                **params, "orderby": "modified", "order": "asc", "per_page": str(PER_PAGE), "page": str(page),
            })
            resp.raise_for_status()
            batch = json.loads(resp.content)
            pages += 1
            for order in batch:
                for line in order["line_items"]:
                    writer.writerow((order["id"], order["status"], order["date_modified_gmt"],
                                     order["currency"], line["sku"], line["quantity"], line["total"]))
                    rows += 1
            orders += len(batch)
            if len(batch) < PER_PAGE:
                break
            page += 1
    return {"orders": orders, "rows": rows, "pages": pages}


@dataclass
class Run:
    """Everything one pipeline run needs: config, window, and its own ledger and staging."""

    store: Any
    window: Any
    run_id: str
    staging: Any  # ObjectStoragePath of this run's folder
    ledger_path: Path
    extracted: dict[str, Any] = field(default_factory=dict)
    validated: dict[str, Any] = field(default_factory=dict)
    loaded: dict[str, Any] = field(default_factory=dict)

    # Each step builds what its task builds (client, ledger, backend) inside the timing.
    def extract(self) -> dict[str, Any]:
        from order_integration import export, tasks
        from order_integration.storefronts import get_client

        client = get_client(self.store.platform, self.store.storefront_conn_id,
                            on_page=tasks._progress(self.store.id))
        self.extracted = export.extract(self.store, self.window, self.staging, client)
        return self.extracted

    def validate(self) -> dict[str, Any]:
        from airflow.sdk import ObjectStoragePath

        from order_integration import export
        from order_integration.ledger import Ledger, sqlite_engine
        from order_integration.storefronts import get_client

        client = get_client(self.store.platform, self.store.storefront_conn_id)
        raw_path = ObjectStoragePath(self.extracted["raw_path"])
        self.validated = export.validate(self.store, self.staging, raw_path, client,
                                         Ledger(sqlite_engine(self.ledger_path), create=True))
        return self.validated

    def load(self) -> dict[str, Any]:
        from airflow.sdk import ObjectStoragePath

        from order_integration import export
        from order_integration.backend.sftp import SftpBackend
        from order_integration.ledger import Ledger, sqlite_engine

        self.loaded = export.load(
            self.store, self.window, self.run_id, self.staging,
            ObjectStoragePath(self.validated["deliverable_path"]),
            Ledger(sqlite_engine(self.ledger_path), create=True).deliveries,
            SftpBackend(self.store.backend_conn_id),
        )
        return {"delivered": self.loaded["delivered"], "files": len(self.loaded["files"])}


def _store_config() -> Any:
    from order_integration.config import parse_config

    return parse_config({"stores": [{
        "id": STORE_ID, "storefront_conn_id": STOREFRONT_CONN, "backend_conn_id": BACKEND_CONN,
        "schedule": "@hourly", "lookback_minutes": 10, "export_statuses": ["processing", "on-hold"],
        "backend": {"format": "csv"}, "validation": {"max_quarantine_ratio": 0.05},
    }]}).store(STORE_ID)


def _new_run(store: Any, window: Any, work: Path, label: str) -> Run:
    from airflow.sdk import ObjectStoragePath

    from order_integration import export

    folder = work / label
    folder.mkdir(parents=True)
    staging = export.run_dir(ObjectStoragePath(f"file://{folder / 'staging'}"), store.id, window,
                             f"manual__bench_{label}")
    return Run(store, window, f"manual__bench_{label}", staging, folder / "ledger.db")


# --- profiles --------------------------------------------------------------------------------------


def _group(filename: str, func: str) -> str:
    """A readable owner of a profile entry: package, library module or builtin."""
    if filename == "~":
        return f"builtin {func}"
    path = filename.replace("\\", "/")
    if "/order_integration/" in path:
        return "order_integration/" + path.split("/order_integration/", 1)[1]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/lib/python3" in path:
        return "stdlib " + path.rsplit("/", 1)[-1]
    return path.rsplit("/", 1)[-1]


def summarise_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """Top functions by own time and by package, each with its share of the profiled step."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt or 1e-9
    entries = []
    groups: dict[str, float] = {}
    for (filename, line, func), (_cc, calls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        entries.append({"function": f"{_short(filename)}:{line}({func})", "calls": calls,
                        "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3), "share": round(tt / total, 4)})
        owner = _group(filename, func)
        groups[owner] = groups.get(owner, 0.0) + tt
    entries.sort(key=lambda e: e["tottime_s"], reverse=True)
    by_cum = sorted((e for e in entries if "order_integration" in e["function"]),
                    key=lambda e: e["cumtime_s"], reverse=True)
    owners = sorted(groups.items(), key=lambda kv: kv[1], reverse=True)
    return {
        "profile": str(path), "total_s": round(total, 3), "top_own_time": entries[:top],
        "top_library_cumulative": by_cum[:top],
        "by_owner": [{"owner": k, "tottime_s": round(v, 3), "share": round(v / total, 4)}
                     for k, v in owners[:top]],
    }


def _short(filename: str) -> str:
    path = filename.replace("\\", "/")
    for marker in ("site-packages/", "/include/", "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _print_profile(step: str, n: int, summary: dict[str, Any]) -> None:
    print(f"\n-- cProfile of {step} at N={n} (profiled total {summary['total_s']:.2f}s; "
          f"cProfile inflates call-heavy code) --")
    print("  own time by owner:")
    for row in summary["by_owner"][:10]:
        print(f"    {row['share']:6.1%}  {row['tottime_s']:8.2f}s  {row['owner']}")
    print("  top functions by own time:")
    for row in summary["top_own_time"][:10]:
        print(f"    {row['share']:6.1%}  {row['tottime_s']:8.2f}s  {row['calls']:>9}  {row['function']}")
    print("  library functions by cumulative time:")
    for row in summary["top_library_cumulative"][:8]:
        print(f"    {row['cumtime_s']:8.2f}s  {row['function']}")


# --- driver ----------------------------------------------------------------------------------------


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"loadavg {os.getloadavg()}"


def _interrupted(signum: int, _frame: Any) -> None:
    raise SystemExit(f"interrupted by signal {signum}")


def _quiet() -> None:
    """Per-connection chatter of the SSH and GX libraries would drown the report."""
    for noisy in ("paramiko", "great_expectations", "airflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _time_imports() -> dict[str, float]:
    """Seconds to import each module the steps need, in order (each includes what it pulls in first)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    timings: dict[str, float] = {}
    for name in ONE_OFF_IMPORTS:
        started = time.perf_counter()
        importlib.import_module(name)
        timings[name] = time.perf_counter() - started
    return timings


@contextlib.contextmanager
def _servers(n: int, seed: int, start: Any, end: Any, work: Path,
             gen_chunk: int = 0) -> Iterator[StorefrontProcess]:
    shop = StorefrontProcess(n, seed, start, end, gen_chunk)
    sftp = SftpProcess(work)
    try:
        began = time.perf_counter()
        shop.start()
        sftp.start()
        print(f"   servers up in {time.perf_counter() - began:.1f}s (storefront {shop.base_url}, "
              f"sftp port {sftp.connection['port']})", flush=True)
        os.environ[f"AIRFLOW_CONN_{STOREFRONT_CONN.upper()}"] = json.dumps(
            {"conn_type": "http", "host": shop.base_url, "login": KEY, "password": SECRET})
        os.environ[f"AIRFLOW_CONN_{BACKEND_CONN.upper()}"] = json.dumps(sftp.connection)
        yield shop
    finally:
        shop.stop()
        sftp.stop()


def bench_n(n: int, args: argparse.Namespace, work: Path, window: Any) -> dict[str, Any]:
    from order_integration.storefronts.woocommerce import window_query

    store = _store_config()
    span = window.with_lookback(store.lookback_minutes)
    params = window_query(span.start, span.end)
    assert params is not None
    runs: list[dict[str, Measured]] = []
    extra: dict[str, Any] = {}
    with _servers(n, args.seed, window.start, window.end, work / f"servers_{n}", args.gen_chunk) as shop:
        passes: list[tuple[str, bool, set[str]]] = [("timing", False, set())] * args.repeat
        if args.tracemalloc:
            passes.append(("tracemalloc", True, set()))
        if args.profile:
            passes.append(("profile", False, set(args.profile)))
        for number, (kind, trace, profiled) in enumerate(passes):
            label = f"n{n}_{kind}{number}"
            if trace:
                tracemalloc.start()
            meter = Meter(shop, trace=trace, gc_off=args.gc_off)
            run = _new_run(store, window, work, label)
            prof = {s: RESULTS_DIR / f"profile_{args.stamp}_{s}_{n}.prof" for s in profiled}
            floor_csv = work / label / "floor.csv"
            measured = {
                "floor": meter.run("floor", lambda out=floor_csv: floor_export(shop.base_url, params, out),
                                   profile=prof.get("floor")),
                "extract": meter.run("extract", run.extract, profile=prof.get("extract")),
                "validate": meter.run("validate", run.validate, profile=prof.get("validate")),
                "load": meter.run("load", run.load, profile=prof.get("load")),
            }
            if trace:
                tracemalloc.stop()
            _check(n, measured)
            if args.save_staging and kind == "timing" and not runs:  # the first timing pass's files
                shutil.copytree(Path(run.staging.path), Path(args.save_staging) / f"n{n}", dirs_exist_ok=True)
            shutil.rmtree(work / label, ignore_errors=True)
            walls = ", ".join(f"{s} {m.wall_s:.2f}s" for s, m in measured.items())
            print(f"   {kind} pass: {walls}", flush=True)
            if kind == "timing":
                runs.append(measured)
            elif kind == "tracemalloc":
                extra["tracemalloc"] = {s: m.trace_peak_mb for s, m in measured.items()}
            else:
                extra["profiles"] = {}
                for step, path in prof.items():
                    summary = summarise_profile(path)
                    summary["wall_s_under_profiler"] = measured[step].wall_s
                    extra["profiles"][step] = summary
                    _print_profile(step, n, summary)
    return _aggregate(n, runs, extra)


def _check(n: int, measured: dict[str, Measured]) -> None:
    """The bench measures a correct export or nothing: every order read, counts adding up."""
    floor, ext, val, load = (measured[s].result for s in STEPS)
    if floor["orders"] != n or ext["extracted"] != n:
        raise SystemExit(f"N={n}: floor read {floor['orders']}, extract {ext['extracted']} orders")
    buckets = val["already_delivered"] + val["not_ready"] + val["quarantined"] + val["deliverable"]
    if buckets != n or load["delivered"] != val["deliverable"]:
        raise SystemExit(f"N={n}: counts do not add up: validate {val}, load {load}")


def _aggregate(n: int, runs: list[dict[str, Measured]], extra: dict[str, Any]) -> dict[str, Any]:
    def med(step: str, attr: str) -> float:
        return statistics.median(getattr(r[step], attr) for r in runs)

    out: dict[str, Any] = {"orders": n, "repeats": len(runs), "runs": [
        {s: asdict(m) for s, m in r.items()} for r in runs]}
    steps = {}
    for step in STEPS:
        steps[step] = {a: med(step, a) for a in ("wall_s", "client_cpu_s", "server_cpu_s", "requests",
                                                  "rss_start_mb", "rss_peak_mb")}
        steps[step]["trace_peak_mb"] = extra.get("tracemalloc", {}).get(step)
    out["steps"] = steps
    # The ratio of medians, so one noisy repeat does not decide it.
    total = sum(steps[s]["wall_s"] for s in ("extract", "validate", "load"))
    out["total_s"] = total
    out["floor_s"] = steps["floor"]["wall_s"]
    out["total_over_floor"] = total / out["floor_s"]
    out["extract_over_floor"] = steps["extract"]["wall_s"] / out["floor_s"]
    # The same ratio in client CPU seconds: what other processes on the machine do not blur.
    cpu = sum(steps[s]["client_cpu_s"] for s in ("extract", "validate", "load"))
    out["total_cpu_over_floor_cpu"] = cpu / max(steps["floor"]["client_cpu_s"], 1e-9)
    out["orders_per_s"] = n / total
    out["floor_orders_per_s"] = n / out["floor_s"]
    out["counts"] = {k: v for k, v in runs[0]["validate"].result.items() if isinstance(v, int)}
    out.update(extra)
    return out


def _print_table(results: list[dict[str, Any]], imports: dict[str, float]) -> None:
    print("\nOne-off imports (once per task process; not in the step times):")
    for name, seconds in imports.items():
        print(f"  {seconds:7.2f}s  import {name}")
    head = (f"{'N':>7} {'step':<9} {'wall s':>8} {'/floor':>7} {'cli CPU':>8} {'srv CPU':>8} {'reqs':>6} "
            f"{'RSS peak':>9} {'RSS +':>7} {'trace pk':>9}")
    print("\nPer step (median of repeats; MB; RSS peak = VmHWM during the step, RSS + = peak - start;"
          " trace pk = tracemalloc peak, separate pass):")
    print(head)
    print("-" * len(head))
    for res in results:
        floor = res["floor_s"]
        for step in STEPS:
            s = res["steps"][step]
            trace = "-" if s["trace_peak_mb"] is None else f"{s['trace_peak_mb']:.0f}"
            print(f"{res['orders']:>7} {step:<9} {s['wall_s']:>8.2f} {s['wall_s'] / floor:>7.2f} "
                  f"{s['client_cpu_s']:>8.2f} {s['server_cpu_s']:>8.2f} {s['requests']:>6.0f} "
                  f"{s['rss_peak_mb']:>9.0f} {s['rss_peak_mb'] - s['rss_start_mb']:>7.0f} {trace:>9}")
        print()
    gx = imports.get("great_expectations", 0.0) + imports.get("pandas", 0.0)
    head = (f"{'N':>7} {'extract':>8} {'validate':>9} {'load':>7} {'total':>8} {'floor':>7} "
            f"{'total/floor':>11} {'extract/floor':>13} {'CPU ratio':>9} {'orders/s':>9} {'floor o/s':>9} "
            f"{'w/ pandas+GX import':>19}")
    print("Summary (seconds, median of repeats; target total/floor <= 1.5; CPU ratio = client CPU of the"
          " three steps / client CPU of the floor):")
    print(head)
    print("-" * len(head))
    for res in results:
        st = res["steps"]
        print(f"{res['orders']:>7} {st['extract']['wall_s']:>8.2f} {st['validate']['wall_s']:>9.2f} "
              f"{st['load']['wall_s']:>7.2f} {res['total_s']:>8.2f} {res['floor_s']:>7.2f} "
              f"{res['total_over_floor']:>11.2f} {res['extract_over_floor']:>13.2f} "
              f"{res['total_cpu_over_floor_cpu']:>9.2f} "
              f"{res['orders_per_s']:>9.0f} {res['floor_orders_per_s']:>9.0f} "
              f"{(res['total_s'] + gx) / res['floor_s']:>18.2f}x")
    for res in results:
        print(f"  N={res['orders']}: counts {res['counts']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=1, help="timing passes per N (medians are reported)")
    parser.add_argument("--seed", type=int, default=20260302)
    parser.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false",
                        help="skip the extra pass that measures tracemalloc peaks")
    parser.add_argument("--profile", nargs="*", choices=STEPS, default=[],
                        help="one extra pass with cProfile around these steps (.prof in bench/results)")
    parser.add_argument("--gc-off", action="store_true",
                        help="what-if: disable the cyclic garbage collector during every step (floor too)")
    parser.add_argument("--no-preload", dest="preload", action="store_false",
                        help="do not import order_integration.preload (which freezes the imported "
                             "objects out of the cyclic GC, as in a deployment's task processes)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    parser.add_argument("--gen-chunk", type=int, default=0, metavar="K",
                        help="serve through bench/sandbox_serve.py, generating K orders at a time "
                             "(needed for 1M orders: the module builds all N first, ~13 GB at 1M); "
                             "K >= N serves the same orders as the default")
    parser.add_argument("--save-staging", metavar="DIR", default="",
                        help="copy the first timing pass's staging folder to DIR/n<N> (to compare runs)")
    args = parser.parse_args(argv)
    args.stamp = time.strftime("%Y%m%dT%H%M%S")
    # SIGTERM (and SIGINT, which a shell's background job ignores) must still stop the servers.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)

    os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    # The library logs at INFO like in a task; into a file, so stdout stays the report.
    handler = logging.FileHandler(RESULTS_DIR / f"export_bench_{args.stamp}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("order_integration", "bench"):
        lib = logging.getLogger(name)
        lib.setLevel(logging.INFO)
        lib.addHandler(handler)
        lib.propagate = False

    load_before = _uptime()
    print(f"export bench {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()})")
    print(f"load before: {load_before}", flush=True)
    _quiet()
    imports = _time_imports()
    if args.preload:  # as a deployment's task processes are (README "Task start-up")
        import gc

        importlib.import_module("order_integration.preload")
        print(f"preloaded order_integration.preload: {gc.get_freeze_count():,} objects frozen", flush=True)
    _quiet()  # again: GX sets its loggers' levels when imported

    import pendulum

    from order_integration.windows import Window

    end = pendulum.parse(WINDOW_END)
    window = Window(end.subtract(hours=1), end)
    work = Path(tempfile.mkdtemp(prefix="export_bench_"))
    results = []
    try:
        for n in args.orders:
            print(f"\n== N={n}: generating and serving {n} orders modified in {window}", flush=True)
            results.append(bench_n(n, args, work, window))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_after = _uptime()
    _print_table(results, imports)
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step_peak = max(s["rss_peak_mb"] for r in results for s in r["steps"].values())
    # Resetting VmHWM (clear_refs) also resets the high-water mark ru_maxrss reads, so
    # ru_maxrss alone would only cover the last step: the process peak is the larger of both.
    print(f"\nprocess peak RSS (all N, all passes): {max(maxrss_mb, step_peak):.0f} MB "
          f"(ru_maxrss at exit {maxrss_mb:.0f} MB covers only the time since the last per-step reset)")
    print(f"load after: {load_after}")

    out = RESULTS_DIR / f"export_bench_{args.stamp}.json"
    out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "load_before": load_before, "load_after": load_after,
        "argv": sys.argv[1:], "window": str(window), "imports_s": imports,
        "ru_maxrss_mb": maxrss_mb, "process_peak_rss_mb": max(maxrss_mb, step_peak), "results": results,
    }, indent=1, default=str))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
