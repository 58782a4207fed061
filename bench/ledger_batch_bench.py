"""What the ledger's writes for one big batch cost (issue 18): ``open_batch`` (claims),
``batch_claims``, ``complete_batch`` (deliveries, quarantine release) and ``claim_runs``, as
``export.load`` calls them, for N order versions on a fresh SQLite ledger, each N in a fresh
process. Prints CPU time and peak RSS growth (the versions and their digests are allocated
before the measurement, as load holds them)::

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

    versions = [(str(1_000_000 + i), f"{i:016x}") for i in range(n)]
    bases = {v: f"{i:015x}b" for i, v in enumerate(versions)}
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(sqlite_engine(f"{tmp}/ledger.db"), create=True)
        deliveries = ledger.deliveries
        _reset_rss_peak()
        start, cpu = _status_kb("VmRSS") // 1024, time.process_time()
        batch, won = deliveries.open_batch("bench", "run", "W", "file:///src", versions, bases)
        del won
        deliveries.set_batch_file(batch.batch_id, "file:///staged", "f.csv", n)
        claims = deliveries.batch_claims(batch.batch_id)
        del claims
        delivered = deliveries.complete_batch(deliveries.batch(batch.batch_id))
        owners = deliveries.claim_runs("bench", versions)
        counted = sum(1 for v in versions if owners.get(v) == "run")
        cpu = time.process_time() - cpu
        peak = _status_kb("VmHWM") // 1024
    if delivered != n or counted != n:
        raise SystemExit(f"wrong counts: delivered {delivered}, counted {counted}, of {n}")
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
