"""DAG parse cost of every file in ``dags/``, beyond importing Airflow.

    python bench/parse_bench.py [--repeat 5] [--stores 1 10 50]

Modes, each in fresh interpreters (``--repeat`` times, interleaved, after one discarded
warm-up each so ``.pyc`` files exist), timed inside the child from its first statement:

(a) ``import airflow.sdk`` and the symbols the DAG files take from it (``Asset``,
    ``CronDataIntervalTimetable``, ``dag``, ``task``, ``Param``) plus ``pendulum``;
(n) for each N of ``--stores``: (a), then ``runpy.run_path`` of every ``dags/*.py`` with a
    generated N-store config (``ORDER_INTEGRATION_CONFIG``), as the DAG processor parses them.

Reported: the median of each mode, (n)-(a) (target: under 0.5 s at 50 stores), the median
of the DAG-file part measured inside the same child, how many DAGs the files defined, and
which heavy modules (pandas, GX, paramiko...) the DAG files pulled in (there should be none).
JSON results go to ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = ("pandas", "numpy", "great_expectations", "paramiko", "asyncssh", "requests", "sqlalchemy",
         "tenacity", "airflow.providers.http", "airflow.providers.sftp")

# Runs in the child. argv: mode ("a" | "dag"), the heavy-module list (JSON), the DAG files.
CHILD = r"""
import sys, time
t0 = time.perf_counter()
import airflow.sdk
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task
import pendulum
t1 = time.perf_counter()
before = set(sys.modules)
dags = 0
if sys.argv[1] == "dag":
    import runpy
    for path in sys.argv[3:]:
        namespace = runpy.run_path(path, run_name="parse_bench")
        dags += sum(isinstance(v, airflow.sdk.DAG) for v in namespace.values())
t2 = time.perf_counter()
import json
new = set(sys.modules) - before
heavy = sorted(h for h in json.loads(sys.argv[2]) if h in new)
print(json.dumps({"import_s": t1 - t0, "dag_file_s": t2 - t1, "total_s": t2 - t0, "dags": dags,
                  "new_modules": len(new), "heavy_imported": heavy}))
"""


def stores_yaml(count: int) -> str:
    """A valid store config with ``count`` stores (varied schedules, formats and statuses)."""
    schedules = ("@hourly", "*/15 * * * *", "5 * * * *", "@daily")
    lines = ["stores:"]
    for i in range(1, count + 1):
        lines += [
            f"  - id: store_{i:03d}",
            "    platform: woocommerce",
            f"    storefront_conn_id: storefront_{i:03d}",
            f"    backend_conn_id: backend_sftp_{i:03d}",
            f"    schedule: \"{schedules[i % len(schedules)]}\"",
            f"    lookback_minutes: {5 + i % 10}",
            "    export_statuses: [processing, on-hold]",
            "    backend:",
            f"      inbound_dir: inbound/store_{i:03d}",
            f"      format: {'csv' if i % 3 else 'jsonl'}",
            "    validation:",
            "      max_quarantine_ratio: 0.05",
        ]
    return "\n".join(lines) + "\n"


def run_child(mode: str, env: dict[str, str]) -> dict[str, Any]:
    """One fresh interpreter; its own timings plus the wall time seen from outside."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "a" if mode == "a" else "dag", json.dumps(HEAVY), *map(str, DAG_FILES)],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"mode {mode} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"loadavg {os.getloadavg()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stores", type=int, nargs="+", default=[1, 10, 50])
    args = parser.parse_args(argv)

    base_env = dict(os.environ)
    base_env.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    base_env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    base_env["GX_ANALYTICS_ENABLED"] = "False"
    base_env.pop("ORDER_INTEGRATION_CONFIG", None)
    load_before = _uptime()
    print(f"parse bench {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()})")
    print(f"load before: {load_before}", flush=True)

    with tempfile.TemporaryDirectory(prefix="parse_bench_") as tmp:
        envs = {"a": base_env}
        for count in args.stores:
            config = Path(tmp) / f"stores_{count}.yaml"
            config.write_text(stores_yaml(count))
            envs[f"{count} stores"] = {**base_env, "ORDER_INTEGRATION_CONFIG": str(config)}
        for mode in envs:  # warm-up: byte-compile, fill the page cache
            run_child(mode, envs[mode])
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in envs}
        for _ in range(args.repeat):
            for mode, env in envs.items():  # interleaved: background load hits every mode alike
                runs[mode].append(run_child(mode, env))

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    summary = {
        mode: {"total_s": med(mode, "total_s"), "min_total_s": min(r["total_s"] for r in rs),
               "dag_file_s": med(mode, "dag_file_s"), "process_wall_s": med(mode, "process_wall_s"),
               "dags": rs[0]["dags"], "heavy_imported": rs[0]["heavy_imported"],
               "new_modules": rs[0]["new_modules"]}
        for mode, rs in runs.items()
    }
    beyond = {mode: summary[mode]["total_s"] - summary["a"]["total_s"] for mode in summary if mode != "a"}
    labels = {"a": "(a) import airflow.sdk + symbols",
              **{mode: f"(a) + {len(DAG_FILES)} DAG files, {mode}" for mode in beyond}}
    print(f"\nmedian of {args.repeat} fresh interpreters (seconds, timed inside the child; "
          "'process' includes interpreter start-up):")
    print(f"{'mode':<40} {'median':>7} {'min':>7} {'DAG part':>9} {'process':>8} {'DAGs':>5}  "
          "heavy modules pulled in")
    for mode, row in summary.items():
        heavy = ", ".join(row["heavy_imported"]) or "none"
        part = "-" if mode == "a" else f"{row['dag_file_s']:.3f}"
        print(f"{labels[mode]:<40} {row['total_s']:>7.3f} {row['min_total_s']:>7.3f} {part:>9} "
              f"{row['process_wall_s']:>8.3f} {row['dags']:>5}  {heavy if mode != 'a' else '-'}")
    verdict = "OK" if max(beyond.values()) < 0.5 else "OVER TARGET"
    print("\nbeyond importing Airflow: " + "   ".join(f"{m}: {v:.3f}s" for m, v in beyond.items())
          + f"   target < 0.5s: {verdict}")
    load_after = _uptime()
    print(f"load after: {load_after}")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"parse_bench_{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "load_before": load_before, "load_after": load_after,
        "repeat": args.repeat, "stores": args.stores, "summary": summary,
        "dag_files": [p.name for p in DAG_FILES], "beyond_import_s": beyond, "runs": runs,
    }, indent=1))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
