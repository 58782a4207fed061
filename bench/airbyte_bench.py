"""Airbyte's WooCommerce source next to the package's extraction and bare paging, same orders.

Airbyte runs from its OWN virtualenv, never from the project's requirements::

    uv venv /tmp/airbyte-venv --python 3.11
    uv pip install --python /tmp/airbyte-venv/bin/python airbyte-source-woocommerce
    # measured with airbyte-source-woocommerce 0.4.12 on airbyte-cdk 4.6.2

    .venv/bin/python bench/airbyte_bench.py --orders 10000 100000 --rounds 3 1 \\
        [--airbyte-venv /tmp/airbyte-venv]

Nothing in the package or the tests imports this file.

For each N, ``bench/sandbox_serve.py`` generates the N orders of ``export_bench.py`` (same seed,
window ``2026-03-02T10:00Z``-``11:00Z``) and serves them over HTTPS (Airbyte's manifest hard-codes
``https://{shop}``) with a self-signed certificate made for this run by
``tests.support.tls.self_signed``. Every client goes over that same TLS listener:

* **floor**: ``export_bench.floor_export`` (one ``requests.Session``, ``orderby=modified``,
  the package's window query, ``json.loads`` per page, one CSV row per line item), in this process;
  the certificate is trusted through ``REQUESTS_CA_BUNDLE`` set in this process for the run.
* **package extract**: ``get_client`` + ``export.extract`` as ``export_bench.py`` calls them, in
  this process after the one-off imports; the connection's ``verify`` extra names the certificate.
* **package extract (own process)**: the same in a fresh interpreter, imports included: what a
  task process pays, comparable with Airbyte's whole process.
* **airbyte read**: ``source-woocommerce read`` with a configured catalog holding only ``orders``
  (incremental, no state, ``start_date`` = the window's day). The certificate is trusted by that
  process only: airbyte-cdk sends with ``Session.send``, which ignores ``REQUESTS_CA_BUNDLE``, so a
  ``sitecustomize`` on its PYTHONPATH points ``certifi.where()`` at certifi's roots + this run's
  certificate (see ``SITECUSTOMIZE``). Its stdout (the Airbyte messages) goes to a file that is
  parsed after the timing.
* **startup** of each whole-process client: ``source-woocommerce spec`` for Airbyte; the fresh
  interpreter importing what extract needs for the package. The net figure is whole - startup.

Rounds are interleaved (round r runs the clients in an order rotated by r). Measured: wall
(``perf_counter``), client CPU (``process_time`` in this process; ``wait4`` user+sys for a child),
peak RSS (in this process ``VmHWM`` reset before the step, shown as growth over the step's start;
for a child its maximum RSS from ``/usr/bin/time -f %M``, absolute), server CPU (psutil), API
requests (the sandbox's request log) and records: Airbyte's RECORD messages are counted, their
ids compared with the ids the floor read. Results: stdout and ``bench/results/airbyte_bench_<stamp>.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import export_bench as eb  # noqa: E402  (a sibling script: the floor, the meter, the run set-up)

DEFAULT_VENV = "/tmp/airbyte-venv"


# --- the sandbox over TLS --------------------------------------------------------------------------


class TlsShop:
    """``bench/sandbox_serve.py --tls-dir``: the N orders over HTTPS, in its own process."""

    def __init__(self, n: int, seed: int, start: Any, end: Any, work: Path, chunk: int) -> None:
        self.tls_dir = work / "tls"
        self.tls_dir.mkdir(parents=True)
        self.cert = self.tls_dir / "cert.pem"
        self.args = [sys.executable, str(ROOT / "bench" / "sandbox_serve.py"), "--orders", str(n),
                     "--chunk", str(chunk), "--seed", str(seed), "--start", start.isoformat(),
                     "--end", end.isoformat(), "--key", eb.KEY, "--secret", eb.SECRET,
                     "--tls-dir", str(self.tls_dir)]
        self.proc: subprocess.Popen[str] | None = None
        self.psutil_proc: Any = None
        self.base_url = ""
        self._session: Any = None

    def start(self) -> TlsShop:
        import psutil
        import requests

        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (https://\S+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"sandbox storefront did not start: {line!r}")
        self.base_url = match.group(1)
        self.psutil_proc = psutil.Process(self.proc.pid)
        self._session = requests.Session()
        self._session.verify = str(self.cert)
        return self

    def request_log(self) -> list[Any]:
        resp = self._session.get(f"{self.base_url}/__sandbox/requests", timeout=120)
        resp.raise_for_status()
        return resp.json()

    def request_count(self) -> int:
        return len(self.request_log())

    def stop(self) -> None:
        if self._session is not None:
            self._session.close()
        if self.proc is not None:
            eb._terminate(self.proc)
        self.proc = None


# --- children --------------------------------------------------------------------------------------


def _run_child(cmd: list[str], *, env: dict[str, str], stdout: Any, shop: TlsShop) -> dict[str, Any]:
    """Run a child to its end: wall, user+sys CPU and ru_maxrss from wait4, server CPU, requests."""
    requests0 = shop.request_count()
    server0 = eb._cpu_seconds(shop.psutil_proc)
    # A child forked from this process inherits its RSS high-water mark (ru_maxrss would read
    # >= this process's ~300 MB): /usr/bin/time, a small process, forks it and reports its %M.
    with tempfile.TemporaryFile() as errfile, tempfile.NamedTemporaryFile("r") as timefile:
        wall0 = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", timefile.name, *cmd], env=env,
                                stdout=stdout, stderr=errfile, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # CPU: the child's (and /usr/bin/time's ~1 ms)
        wall = time.perf_counter() - wall0
        proc.returncode = os.waitstatus_to_exitcode(status)
        errfile.seek(0)
        err = errfile.read().decode(errors="replace")
        maxrss_kb = int(timefile.read().split()[-1]) if proc.returncode == 0 else 0
    if proc.returncode != 0:
        tail = Path(stdout.name).read_text(errors="replace")[-3000:] if hasattr(stdout, "name") else ""
        raise SystemExit(f"{cmd[:3]} exited {proc.returncode}:\n{err[-3000:]}\n{tail}")
    return {
        "wall_s": wall, "client_cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_mb": maxrss_kb / 1024,
        "server_cpu_s": eb._cpu_seconds(shop.psutil_proc) - server0,
        "requests": shop.request_count() - requests0, "stderr_tail": err[-500:],
    }


def _airbyte_files(work: Path, shop: TlsShop, window: Any) -> tuple[Path, Path]:
    config = work / "airbyte_config.json"
    config.write_text(json.dumps({
        "api_key": eb.KEY, "api_secret": eb.SECRET, "shop": shop.base_url.removeprefix("https://"),
        "start_date": window.start.to_date_string(),  # a date: the connector's spec allows no time
    }))
    return config, work / "airbyte_catalog.json"


#: airbyte-cdk 4.x sends every request with ``Session.send``, which never reads
#: ``REQUESTS_CA_BUNDLE``: requests then trusts ``certifi.where()`` only. For the Airbyte
#: process alone, a ``sitecustomize`` on its PYTHONPATH points ``certifi.where`` at a bundle of
#: certifi's roots plus this run's certificate before requests is imported.
SITECUSTOMIZE = """import os
if os.environ.get("AIRBYTE_BENCH_CA_BUNDLE"):
    import certifi
    import certifi.core
    _bundle = os.environ["AIRBYTE_BENCH_CA_BUNDLE"]
    certifi.where = certifi.core.where = lambda: _bundle
"""


def _airbyte_env(cert: Path, venv: Path, work: Path) -> dict[str, str]:
    """The Airbyte child's environment: no project paths or connections, this run's CA trusted."""
    site = work / "airbyte_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    roots = subprocess.run([str(venv / "bin" / "python"), "-c", "import certifi; print(certifi.where())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    bundle = work / "airbyte_ca_bundle.pem"
    bundle.write_bytes(Path(roots).read_bytes() + b"\n" + cert.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "PYTHON"))}
    env["PYTHONPATH"] = str(site)
    env["AIRBYTE_BENCH_CA_BUNDLE"] = str(bundle)
    env["REQUESTS_CA_BUNDLE"] = env["SSL_CERT_FILE"] = str(cert)  # what a user would try; not enough
    return env


def _airbyte_catalog(exe: Path, config: Path, catalog: Path, env: dict[str, str]) -> dict[str, Any]:
    """Discover (no request is made), keep only ``orders``, incremental from no state."""
    out = subprocess.run([str(exe), "discover", "--config", str(config)], env=env, capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    streams = next(m["catalog"]["streams"] for m in map(json.loads, out.splitlines())
                   if m.get("type") == "CATALOG")
    orders = next(s for s in streams if s["name"] == "orders")
    configured = {"streams": [{"stream": orders, "sync_mode": "incremental",
                               "cursor_field": orders.get("default_cursor_field") or ["date_modified_gmt"],
                               "destination_sync_mode": "append"}]}
    catalog.write_text(json.dumps(configured))
    return {"sync_modes": orders.get("supported_sync_modes"),
            "cursor": configured["streams"][0]["cursor_field"]}


def _read_airbyte_output(path: Path) -> dict[str, Any]:
    kinds: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    ids: set[int] = set()
    records = 0
    modified: list[str] = []
    with path.open("rb") as fh:
        for line in fh:
            if not line.startswith(b"{"):
                kinds["(not json)"] += 1
                continue
            msg = json.loads(line)
            kinds[msg.get("type", "?")] += 1
            if msg.get("type") == "RECORD" and msg["record"]["stream"] == "orders":
                data = msg["record"]["data"]
                records += 1
                ids.add(data["id"])
                statuses[data.get("status")] += 1
                modified.append(data.get("date_modified_gmt") or "")
    return {"records": records, "distinct_ids": len(ids), "ids": ids, "messages": dict(kinds),
            "statuses": dict(statuses), "modified_min": min(modified, default=""),
            "modified_max": max(modified, default="")}


def _floor_ids(csv_path: Path) -> set[int]:
    import csv

    with csv_path.open(newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh)
        next(rows)
        return {int(r[0]) for r in rows}


def child_extract(work: str, imports_only: bool) -> int:
    """A fresh interpreter: the imports extract needs, then (unless imports_only) one extract."""
    os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    # The package imports airflow.sdk and the http hook lazily, inside extract: startup includes them.
    import airflow.providers.http.hooks.http
    import airflow.sdk  # noqa: F401
    import pendulum

    from order_integration import export, tasks  # noqa: F401  (what the extract task imports)
    from order_integration.storefronts import get_client, woocommerce  # noqa: F401
    from order_integration.windows import Window

    if imports_only:
        return 0
    end = pendulum.parse(eb.WINDOW_END)
    run = eb._new_run(eb._store_config(), Window(end.subtract(hours=1), end), Path(work), "child")
    result = run.extract()
    (Path(work) / "child.json").write_text(json.dumps({"extracted": result["extracted"]}))
    return 0


# --- one N -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _shop(n: int, args: argparse.Namespace, window: Any, work: Path) -> Iterator[TlsShop]:
    shop = TlsShop(n, args.seed, window.start, window.end, work, args.gen_chunk)
    began = time.perf_counter()
    try:
        shop.start()
        print(f"   storefront up in {time.perf_counter() - began:.1f}s ({shop.base_url})", flush=True)
        yield shop
    finally:
        shop.stop()


def _step(m: Any, records: int) -> dict[str, Any]:
    """A step measured in this process (``export_bench.Meter``) as a result row."""
    return {"wall_s": m.wall_s, "client_cpu_s": m.client_cpu_s, "server_cpu_s": m.server_cpu_s,
            "requests": m.requests, "rss_growth_mb": m.rss_peak_mb - m.rss_start_mb,
            "rss_peak_mb": m.rss_peak_mb, "records": records}


class Clients:
    """The clients of one N against one TLS storefront; each call is one measured run."""

    def __init__(self, n: int, shop: TlsShop, window: Any, work: Path, exe: Path) -> None:
        from order_integration.storefronts.woocommerce import window_query

        self.n, self.shop, self.window, self.work, self.exe = n, shop, window, work, exe
        self.store = eb._store_config()
        span = window.with_lookback(self.store.lookback_minutes)
        self.params = window_query(span.start, span.end)
        assert self.params is not None
        cert = shop.cert
        os.environ["REQUESTS_CA_BUNDLE"] = str(cert)  # the floor's plain requests.Session, this run
        os.environ[f"AIRFLOW_CONN_{eb.STOREFRONT_CONN.upper()}"] = json.dumps(
            {"conn_type": "http", "host": shop.base_url, "login": eb.KEY, "password": eb.SECRET,
             "extra": {"verify": str(cert)}})
        self.child_env = dict(os.environ)
        self.ab_env = _airbyte_env(cert, exe.parent.parent, work)
        self.config, self.catalog = _airbyte_files(work, shop, window)
        self.checks: dict[str, Any] = {"airbyte_catalog": _airbyte_catalog(exe, self.config, self.catalog,
                                                                          self.ab_env)}
        self.floor_ids: set[int] = set()
        self.meter = eb.Meter(shop)  # type: ignore[arg-type]  # TlsShop has what Meter reads

    def floor(self, label: str) -> dict[str, Any]:
        out = self.work / label / "floor.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        m = self.meter.run("floor", lambda: eb.floor_export(self.shop.base_url, self.params, out))
        if not self.floor_ids:
            self.floor_ids = _floor_ids(out)
            self.checks["floor_orders"] = len(self.floor_ids)
        return _step(m, m.result["orders"])

    def extract(self, label: str) -> dict[str, Any]:
        run = eb._new_run(self.store, self.window, self.work, label)
        m = self.meter.run("extract", run.extract)
        return _step(m, m.result["extracted"])

    def extract_process(self, label: str) -> dict[str, Any]:
        (self.work / label).mkdir(parents=True, exist_ok=True)
        r = _run_child([sys.executable, __file__, "--child-extract", str(self.work / label)],
                       env=self.child_env, stdout=subprocess.DEVNULL, shop=self.shop)
        r["records"] = json.loads((self.work / label / "child.json").read_text())["extracted"]
        return r

    def extract_startup(self, label: str) -> dict[str, Any]:
        cmd = [sys.executable, __file__, "--child-extract", str(self.work / label), "--imports-only"]
        r = _run_child(cmd, env=self.child_env, stdout=subprocess.DEVNULL, shop=self.shop)
        return {**r, "records": 0}

    def airbyte(self, label: str) -> dict[str, Any]:
        (self.work / label).mkdir(parents=True, exist_ok=True)
        out = self.work / label / "airbyte.jsonl"
        log0 = self.shop.request_count()
        with out.open("wb") as fh:
            cmd = [str(self.exe), "read", "--config", str(self.config), "--catalog", str(self.catalog)]
            r = _run_child(cmd, env=self.ab_env, stdout=fh, shop=self.shop)
        seen = _read_airbyte_output(out)
        ids = seen.pop("ids")
        r.update(records=seen["records"], output=seen)
        if "airbyte_ids_equal_floor_ids" not in self.checks and self.floor_ids:
            self.checks["airbyte_ids_equal_floor_ids"] = ids == self.floor_ids
            self.checks["airbyte_only"] = len(ids - self.floor_ids)
            self.checks["floor_only"] = len(self.floor_ids - ids)
        if "airbyte_output" not in self.checks:  # the queries it sends, and what it emitted
            entries = self.shop.request_log()[log0:]
            self.checks["airbyte_requests_first"] = entries[:2]
            self.checks["airbyte_requests_last"] = entries[-12:]
            self.checks["airbyte_output"] = seen
        out.unlink()
        return r

    def airbyte_startup(self, label: str) -> dict[str, Any]:
        r = _run_child([str(self.exe), "spec"], env=self.ab_env, stdout=subprocess.DEVNULL, shop=self.shop)
        return {**r, "records": 0}


def bench_n(n: int, rounds: int, args: argparse.Namespace, window: Any, work: Path) -> dict[str, Any]:
    exe = Path(args.airbyte_venv) / "bin" / "source-woocommerce"
    results: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    with _shop(n, args, window, work) as shop:
        c = Clients(n, shop, window, work, exe)
        clients = {"floor": c.floor, "package extract": c.extract,
                   "package extract (own process)": c.extract_process, "airbyte read": c.airbyte}
        for r in range(rounds):
            names = list(clients)
            names = names[r % len(names):] + names[:r % len(names)]  # interleaved: rotated each round
            for name in names:
                label = f"n{n}_r{r}_{name.split()[0]}{len(name)}"
                res = clients[name](label)
                print(f"   round {r} {name}: wall {res['wall_s']:.2f}s cpu {res['client_cpu_s']:.2f}s "
                      f"reqs {res['requests']} records {res['records']}", flush=True)
                if res["records"] != n:
                    print(f"   !! {name} emitted {res['records']} records, the window has {n}", flush=True)
                results[name].append(res)
                shutil.rmtree(work / label, ignore_errors=True)
        for name, fn in (("airbyte startup (spec)", c.airbyte_startup),
                         ("package startup (imports)", c.extract_startup)):
            for r in range(rounds):
                results[name].append(fn(f"n{n}_startup{r}"))
    for runs in results.values():
        for run in runs:
            run.pop("output", None)
    return {"orders": n, "rounds": rounds, "runs": dict(results), "checks": c.checks,
            "medians": {name: {k: statistics.median(x[k] for x in runs) for k in runs[0]
                               if isinstance(runs[0][k], int | float)} for name, runs in results.items()}}


def _print(results: list[dict[str, Any]]) -> None:
    head = (f"{'N':>7} {'client':<30} {'wall s':>8} {'cli CPU':>8} {'srv CPU':>8} {'reqs':>6} {'records':>8} "
            f"{'RSS peak':>9} {'RSS +':>7}")
    print("\nMedians (RSS peak: a child's maximum RSS, absolute; in this process VmHWM during the step; "
          "RSS + only in this process):")
    print(head)
    print("-" * len(head))
    for res in results:
        for name, m in res["medians"].items():
            peak = m.get("maxrss_mb", m.get("rss_peak_mb", 0.0))
            growth = f"{m['rss_growth_mb']:.0f}" if "rss_growth_mb" in m else "-"
            print(f"{res['orders']:>7} {name:<30} {m['wall_s']:>8.2f} {m['client_cpu_s']:>8.2f} "
                  f"{m['server_cpu_s']:>8.2f} {m['requests']:>6.0f} {m['records']:>8.0f} {peak:>9.0f} "
                  f"{growth:>7}")
        print(f"  checks: {json.dumps(res['checks'], default=str)[:1500]}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, nargs="+", default=[3, 1],
                        help="interleaved rounds per N (the last value repeats for further N)")
    parser.add_argument("--seed", type=int, default=20260302)
    parser.add_argument("--gen-chunk", type=int, default=100_000, help="see bench/sandbox_serve.py")
    parser.add_argument("--airbyte-venv", default=DEFAULT_VENV)
    parser.add_argument("--child-extract", metavar="WORK", help=argparse.SUPPRESS)
    parser.add_argument("--imports-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_extract:
        return child_extract(args.child_extract, args.imports_only)
    exe = Path(args.airbyte_venv) / "bin" / "source-woocommerce"
    if not exe.exists():
        raise SystemExit(f"{exe} is missing: create the venv as this file's docstring says")
    signal.signal(signal.SIGTERM, eb._interrupted)
    signal.signal(signal.SIGINT, eb._interrupted)
    os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    eb.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    # The library logs at INFO like in a task; into a file, so stdout stays the report.
    handler = logging.FileHandler(eb.RESULTS_DIR / f"airbyte_bench_{stamp}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("order_integration", "bench"):
        lib = logging.getLogger(name)
        lib.setLevel(logging.INFO)
        lib.addHandler(handler)
        lib.propagate = False
    code = ("import importlib.metadata as m; "
            "print(m.version('airbyte-source-woocommerce'), m.version('airbyte-cdk'))")
    versions = subprocess.run([str(Path(args.airbyte_venv) / "bin" / "python"), "-c", code],
                              capture_output=True, text=True, check=True).stdout.split()
    load_before = eb._uptime()
    print(f"airbyte bench {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()}); "
          f"airbyte-source-woocommerce {versions[0]}, airbyte-cdk {versions[1]}")
    print(f"load before: {load_before}", flush=True)
    eb._quiet()
    imports = {name: s for name, s in eb._time_imports().items()
               if name in ("requests", "airflow.sdk", "airflow.providers.http.hooks.http",
                           "order_integration.storefronts.woocommerce")}
    eb._quiet()
    import pendulum

    from order_integration.windows import Window

    end = pendulum.parse(eb.WINDOW_END)
    window = Window(end.subtract(hours=1), end)
    work = Path(tempfile.mkdtemp(prefix="airbyte_bench_"))
    results = []
    try:
        for i, n in enumerate(args.orders):
            rounds = args.rounds[min(i, len(args.rounds) - 1)]
            print(f"\n== N={n}: {rounds} interleaved rounds, orders modified in {window}; {eb._uptime()}",
                  flush=True)
            results.append(bench_n(n, rounds, args, window, work / f"n{n}"))
            print(f"   done; {eb._uptime()}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = eb._uptime()
    _print(results)
    print(f"load after: {load_after}")
    out = eb.RESULTS_DIR / f"airbyte_bench_{stamp}.json"
    out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "airbyte_source_woocommerce": versions[0],
        "airbyte_cdk": versions[1],
        "load_before": load_before, "load_after": load_after, "argv": sys.argv[1:], "window": str(window),
        "imports_s": imports, "bench_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "results": results,
    }, indent=1, default=str))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
