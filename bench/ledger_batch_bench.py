"""What the ledger's writes for one big batch cost (issue 18), as ``export.load`` makes them:
``claim`` (the claims, from a generator), ``batch_size`` and ``in_batch`` (which staged records
go in the file, asked a chunk at a time), ``complete_batch`` (deliveries, quarantine release)
and ``run_counts`` (what the run delivered), for N order versions on a fresh SQLite ledger,
each N in a fresh process. Prints CPU time and peak RSS growth; the versions are generated as
the staged file is read, never held as a list (as load reads them)::

    .venv/bin/python bench/ledger_batch_bench.py --versions 75000 750000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]



def child(n: int) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from export_bench import _reset_rss_peak, _status_kb

    from order_integration.ledger import Ledger, sqlite_engine
    from order_integration.ledger.db import chunks

    def versions():
        return ((str(1_000_000 + i), f"{i:016x}") for i in range(n))

    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(sqlite_engine(f"{tmp}/ledger.db"), create=True)
        deliveries = ledger.deliveries
        _reset_rss_peak()
        start, cpu = _status_kb("VmRSS") // 1024, time.process_time()
        batch = deliveries.claim("bench", "run", "W", "file:///src",
                                 ((oid, ver, ver[1:] + "b") for oid, ver in versions()))
        deliveries.set_batch_file(batch.batch_id, "file:///staged", "f.csv", n)
        assert deliveries.batch_size(batch.batch_id) == n
        rendered = sum(len(deliveries.in_batch(batch, chunk)) for chunk in chunks(versions(), 5_000))
        delivered = deliveries.complete_batch(deliveries.batch(batch.batch_id))
        counted, _resent, total = deliveries.run_counts("bench", "run", versions())
        cpu = time.process_time() - cpu
        peak = _status_kb("VmHWM") // 1024
    if not delivered == counted == total == rendered == n:
        raise SystemExit(f"wrong counts: delivered {delivered}, counted {counted} of {total}, "
                         f"rendered {rendered}, of {n}")
    print(json.dumps({"versions": n, "cpu_s": round(cpu, 2), "growth_mb": peak - start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, nargs="+", default=[75_000, 750_000])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.versions[0])
        return
    print(f"ledger batch bench {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'versions':>9} {'CPU s':>7} {'RSS growth MB':>14}")
    for n in args.versions:
        proc = subprocess.run([sys.executable, __file__, "--versions", str(n), "--child"],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{r['versions']:>9} {r['cpu_s']:>7.2f} {r['growth_mb']:>14}")


if __name__ == "__main__":
    main()
