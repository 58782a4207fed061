"""Chaos benchmark: hundreds of export and status-sync runs under a seeded random schedule of faults.

    python bench/chaos_bench.py [--seeds 1 2 3 4 5 6 7 8] [--hours 36] [--orders-per-hour 12]

Each seed is one schedule of ``tests/support/chaos.py`` (the same one the fault suite runs with
fewer hours): a day and a half of hourly exports against the sandbox storefront and OpenSSH,
every task tried in a forked process and killed (SIGKILL) or failed at random failpoints,
storefront faults queued at random, older windows re-run, the ERP's status files applied
under crashes too; then a clean sweep over the whole span and the checks.

Prints one line per seed and the totals: runs, task tries, faults injected (by family and
by point), orders, versions delivered, status lines, and **lost** and **duplicated** — both
must be 0; the exit status is 1 otherwise. JSON goes to ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7, 8])
    parser.add_argument("--hours", type=int, default=36, help="hourly runs per seed (default 36)")
    parser.add_argument("--orders-per-hour", type=int, default=12)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))  # `tests.support` is not an installed package
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import logging

    from tests.support.chaos import Chaos
    from tests.support.sshd import start_sshd

    logging.basicConfig(level=logging.ERROR)  # the tasks' own INFO lines would drown the figures
    stamp = time.strftime("%Y%m%dT%H%M%S")
    print(f"chaos bench {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()}): seeds {args.seeds}, "
          f"{args.hours} hours each, {args.orders_per_hour} orders/hour", flush=True)
    work = Path(tempfile.mkdtemp(prefix="chaos_bench_"))
    reports = []
    try:
        sshd = start_sshd(work / "sshd")
        try:
            for seed in args.seeds:
                with Chaos(work / f"seed_{seed}", sshd.airflow_connection(), sshd.root, seed=seed,
                           orders_per_hour=args.orders_per_hour) as chaos:
                    report = chaos.run(args.hours)
                reports.append(report)
                print(f"  {report.line()}", flush=True)
                for problem in report.problems:
                    print(f"    PROBLEM: {problem}", flush=True)
        finally:
            sshd.stop()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    total = Counter()
    kinds: Counter[str] = Counter()
    for r in reports:
        total.update({k: v for k, v in asdict(r).items() if isinstance(v, int | float) and k != "seed"})
        kinds.update(r.faults_by_kind)
    faults = total["kills"] + total["raises"] + total["transport_faults"]
    print(f"TOTAL: runs={total['runs']} task tries={total['task_tries']} faults injected={faults} "
          f"(kill={total['kills']} raise={total['raises']} transport={total['transport_faults']}) "
          f"orders={total['orders']} versions delivered={total['versions_delivered']} "
          f"status lines={total['status_lines']} | LOST={total['lost']} DUPLICATED={total['duplicated']} "
          f"in {total['seconds']:.0f}s")
    print("faults by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"chaos_bench_{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "reports": [asdict(r) for r in reports],
                               "total": dict(total), "faults_by_kind": dict(kinds)}, indent=1))
    print(f"results: {out}")
    bad = total["lost"] or total["duplicated"] or any(r.problems for r in reports)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
