"""Validate alone, in a fresh process, on a staged ``raw_orders.jsonl`` (issue 18).

The export bench runs every step in one process, so a step's "RSS +" depends on the heap the
steps before it freed. This runs ``export.validate`` as the validate task does, in a process
that has imported what a task process imports (Airflow's SDK, pandas, GX, the package), and
prints its CPU time and peak RSS growth. Get a staged file with
``bench/export_bench.py --orders 100000 --no-tracemalloc --save-staging DIR``::

    .venv/bin/python bench/validate_bench.py DIR/n100000/raw_orders.jsonl --chunk 5000 10000 20000

Each chunk size runs in its own child process; the deliverable files are compared (they must
be byte-identical whatever the chunk size).

``--forked`` runs validate as a deployment with the preload does (README "Task start-up"): the
child imports ``order_integration.preload`` and forks the task from it, so the imported modules
are shared copy-on-write. Besides RSS (which counts shared pages in full) it prints the task's
PSS and USS (its own pages) at the end of the step, from ``/proc/self/smaps_rollup``.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]



def _smaps_mb() -> tuple[int, int]:
    """(PSS, USS) of this process in MB, from ``/proc/self/smaps_rollup``."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return fields["Pss"] // 1024, (fields["Private_Clean"] + fields["Private_Dirty"]) // 1024


def child(raw: str, chunk: int, *, forked: bool = False, profile: str = "", gx_rows: int = 0) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    os.environ.setdefault("AIRFLOW_CONN_BENCH_STOREFRONT", json.dumps(
        {"conn_type": "http", "host": "http://127.0.0.1:9", "login": "k", "password": "s"}))
    import airflow.sdk  # noqa: F401 - what a task process has imported
    import great_expectations  # noqa: F401
    import pandas  # noqa: F401
    if forked:  # the process tasks fork from in a deployment with the preload
        import order_integration.preload  # noqa: F401

        sys.stdout.flush()
        pid = os.fork()
        if pid:
            _, status = os.waitpid(pid, 0)
            sys.exit(os.waitstatus_to_exitcode(status))
    from airflow.sdk import ObjectStoragePath
    from export_bench import _reset_rss_peak, _status_kb, _store_config

    from order_integration import export
    from order_integration.ledger import Ledger, sqlite_engine
    from order_integration.storefronts import get_client
    from order_integration.validation import gx_runner

    export.VALIDATE_CHUNK = chunk
    if gx_rows:
        gx_runner.GX_ROWS = gx_rows
    store = _store_config()
    with tempfile.TemporaryDirectory() as tmp:
        client = get_client(store.platform, store.storefront_conn_id)
        ledger = Ledger(sqlite_engine(f"{tmp}/ledger.db"), create=True)
        _reset_rss_peak()  # VmHWM from here on
        start = _status_kb("VmRSS") // 1024
        profiler = cProfile.Profile() if profile else None
        cpu = time.process_time()
        if profiler is not None:
            profiler.enable()
        out = export.validate(store, ObjectStoragePath(f"file://{tmp}/"), ObjectStoragePath(f"file://{raw}"),
                              client, ledger)
        if profiler is not None:
            profiler.disable()
        cpu = time.process_time() - cpu
        if profiler is not None:
            profiler.dump_stats(profile)
        peak = _status_kb("VmHWM") // 1024
        pss, uss = _smaps_mb()  # at the step's end: CPython rarely gives its heap back, so near its peak
        digest = hashlib.sha256(Path(tmp, "deliverable.jsonl").read_bytes()).hexdigest()[:12]
    print(json.dumps({"chunk": chunk, "gx_rows": gx_runner.GX_ROWS, "cpu_s": round(cpu, 2),
                      "rss_start_mb": start, "rss_peak_mb": peak,
                      "growth_mb": peak - start, "pss_end_mb": pss, "uss_end_mb": uss,
                      "deliverable": out["deliverable"], "not_ready": out["not_ready"], "digest": digest}),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", help="a staged raw_orders.jsonl")
    parser.add_argument("--chunk", type=int, nargs="+", default=[10_000])
    parser.add_argument("--forked", action="store_true",
                        help="fork the task from a process that imported order_integration.preload")
    parser.add_argument("--profile", metavar="FILE", default="",
                        help="run under cProfile, stats to FILE (one chunk size; CPU inflated)")
    parser.add_argument("--gx-rows", type=int, nargs="+", default=[0],
                        help="orders GX validates at a time (gx_runner.GX_ROWS; 0: the default)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raw = str(Path(args.raw).resolve())
    if args.child:
        child(raw, args.chunk[0], forked=args.forked, profile=args.profile, gx_rows=args.gx_rows[0])
        return
    print(f"validate bench {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average "
          f"{os.getloadavg()[0]:.2f}; {raw}{' (forked from a preloaded process)' if args.forked else ''}")
    print(f"{'chunk':>7} {'GX rows':>8} {'CPU s':>7} {'RSS start MB':>13} {'RSS peak MB':>12} "
          f"{'growth MB':>10} {'PSS end MB':>11} {'USS end MB':>11} {'deliverable':>12} {'digest':>13}")
    digests = set()
    for chunk, gx_rows in itertools.product(args.chunk, args.gx_rows):
        proc = subprocess.run([sys.executable, __file__, raw, "--chunk", str(chunk),
                               "--gx-rows", str(gx_rows), "--child",
                               *(["--forked"] if args.forked else []),
                               *(["--profile", str(Path(args.profile).resolve())] if args.profile else [])],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        digests.add(r["digest"])
        print(f"{r['chunk']:>7} {r['gx_rows']:>8} {r['cpu_s']:>7.2f} {r['rss_start_mb']:>13} "
              f"{r['rss_peak_mb']:>12} {r['growth_mb']:>10} {r['pss_end_mb']:>11} {r['uss_end_mb']:>11} "
              f"{r['deliverable']:>12} {r['digest']:>13}")
    print("deliverable identical for every chunk size and GX rows" if len(digests) == 1
          else f"DELIVERABLE DIFFERS between chunk sizes or GX rows: {sorted(digests)}")
    if len(digests) != 1:
        sys.exit(1)


if __name__ == "__main__":
    main()
