"""Shopify read bench (issue 14): the client's window scan, the bulk path and bare cursor paging.

    python bench/shopify_bench.py [--orders 10000 100000] [--repeat 1] [--throttled-orders 10000]

For each N: N seeded orders (``sandbox.generator``) modified over one hour in the past
(``export_bench.WINDOW_END``) are converted and served by ``SandboxShopify`` in its own process
(``python bench/shopify_bench.py --serve ...``), so server work is never client cost; its CPU is
reported apart (psutil). The sandbox charges ``nodes(ids:)`` per id as Shopify does
(``nodes_cost_per_id``). Steps, each timed in this process:

* ``floor``: one ``requests.Session`` + ``json.loads``, the client's own query strings and page
  sizes: ``orders(first: 250, sortKey: UPDATED_AT, query:)`` ids (``shopify.SCAN_QUERY``), then
  ``nodes(ids:)`` 10 at a time (``shopify.details_query``). No checks, no pacing (a THROTTLED
  answer is slept off and retried), the paging cap restarted from the last ``updatedAt``.
* ``floor-orders``: bare cursor paging of ``orders(...)`` asking every field the client asks
  (``order_fields`` + ``lineItems(first: 10)``); ``first`` is the largest page Shopify's 1,000-point
  query limit allows (10: ``first: 250`` would ask for ~23,000 points and is refused). Only for
  N <= ``--floor-orders-max`` (N/10 requests of full orders: slow).
* ``paged``: ``get_client("shopify", conn, sleep=...)`` + ``list(iter_orders(start, end))`` with the
  connection's ``extra.bulk_threshold`` 0 (never bulk) and ``index_settle_seconds`` 0.
* ``normalise``: ``client.normalise(raw, store)`` for every order read by ``paged``.
* ``bulk``: the same with ``bulk_threshold`` 1 (a bulk operation for any window).

Figures: wall, client CPU (``process_time``), server CPU, GraphQL requests, requested and actual
query cost (every answer's ``extensions.cost``, recorded inside the transport) per 1,000 orders,
seconds slept (throttle waits), THROTTLED answers. Every step must read exactly N orders (N distinct
ids for the reading steps).
The bucket is "unlimited" for the main runs; ``--throttled-orders`` repeats floor/paged/bulk with
Shopify's standard bucket (2000 points, 100/s, via ``/__sandbox/bucket``): the waits are real time.

Results: a table on stdout and JSON under ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import calendar
import json
import logging
import os
import platform
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_bench as eb

ROOT, RESULTS_DIR = eb.ROOT, eb.RESULTS_DIR
TOKEN = "shpat_bench"
STORE_ID = "bench"
CONN_PAGED, CONN_BULK = "bench_shopify_paged", "bench_shopify_bulk"
UNLIMITED = (1e12, 1e9)  # bucket size, restore rate: never throttles
STANDARD = (2000.0, 100.0)  # Shopify's standard plan (Plus: 20,000 / 1,000)
LINES = 10  # the client's default lines_per_order
DETAILS_BATCH = 8  # the client's default details_batch

#: ``extensions.cost`` of every answer this process reads (the client's transport and the floors).
COSTS: list[tuple[Any, Any]] = []


def _record_costs() -> None:
    """Record every ``extensions.cost`` the client's transport reads (it builds a ``Throttle`` from it)."""
    from order_integration.storefronts import shopify_graphql as sg

    original = sg.Throttle.from_cost.__func__  # type: ignore[attr-defined]

    def from_cost(cls: Any, cost: object, at: float) -> Any:
        if isinstance(cost, dict):
            COSTS.append((cost.get("requestedQueryCost"), cost.get("actualQueryCost")))
        return original(cls, cost, at)

    sg.Throttle.from_cost = classmethod(from_cost)  # type: ignore[method-assign,assignment]


class Sleeps:
    """The client's (and the floors') sleep: real, and counted."""

    def __init__(self) -> None:
        self.seconds, self.count = 0.0, 0

    def __call__(self, seconds: float) -> None:
        if seconds > 0:
            self.seconds += seconds
            self.count += 1
            time.sleep(seconds)


# --- the server (its own process) ------------------------------------------------------------------


def serve(n: int, seed: int, start: str, end: str) -> int:
    """Child process: generate N orders, serve them with SandboxShopify until SIGTERM."""
    import pendulum

    from sandbox.generator import generate_orders
    from sandbox.shopify_admin import SandboxShopify

    orders = generate_orders(n, start=pendulum.parse(start), end=pendulum.parse(end), seed=seed)
    shop = SandboxShopify(orders, token=TOKEN, bucket_size=UNLIMITED[0], restore_rate=UNLIMITED[1])
    shop.state.nodes_cost_per_id = True  # nodes(ids:) costs ids x node, as on Shopify
    del orders
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    shop.start()
    print(f"sandbox Shopify listening on {shop.base_url}", flush=True)
    while not stop.wait(0.5):
        pass
    shop.stop()
    return 0


class ShopProcess(eb.StorefrontProcess):
    """This file's ``--serve`` mode (the Shopify sandbox with N generated orders) in its own
    process; started, watched and stopped as the export bench's storefront process."""

    def __init__(self, n: int, seed: int, start: Any, end: Any) -> None:
        super().__init__(n, seed, start, end)
        self.args = [sys.executable, __file__, "--serve", str(n), "--seed", str(seed),
                     "--start", start.isoformat(), "--end", end.isoformat()]

    def __enter__(self) -> ShopProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def graphql_url(self) -> str:
        from order_integration.storefronts.shopify_graphql import DEFAULT_API_VERSION

        return f"{self.base_url}/admin/api/{DEFAULT_API_VERSION}/graphql.json"

    def set_bucket(self, size: float, rate: float) -> None:
        import requests

        requests.post(
            f"{self.base_url}/__sandbox/bucket", json={"size": size, "restore_rate": rate}, timeout=60
        ).raise_for_status()


# --- the floors ------------------------------------------------------------------------------------


class BarePoster:
    """One session, ``json.loads``; a THROTTLED answer is slept off (its own throttleStatus) and retried."""

    def __init__(self, url: str, sleep: Sleeps) -> None:
        import requests

        self.url, self.sleep, self.requests, self.throttled = url, sleep, 0, 0
        self.session = requests.Session()
        self.session.headers.update({"X-Shopify-Access-Token": TOKEN, "Content-Type": "application/json"})

    def __call__(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        while True:
            resp = self.session.post(
                self.url, data=json.dumps({"query": query, "variables": variables}), timeout=600
            )
            self.requests += 1
            resp.raise_for_status()
            body = json.loads(resp.content)
            cost = body.get("extensions", {}).get("cost", {})
            COSTS.append((cost.get("requestedQueryCost"), cost.get("actualQueryCost")))
            if not body.get("errors"):
                return body["data"]
            if body["errors"][0].get("extensions", {}).get("code") != "THROTTLED":
                raise RuntimeError(f"floor query refused: {str(body['errors'])[:300]}")
            self.throttled += 1
            status = cost["throttleStatus"]
            self.sleep((cost["requestedQueryCost"] - status["currentlyAvailable"]) / status["restoreRate"])

    def close(self) -> None:
        self.session.close()


def _cursor_pages(
    post: BarePoster, query: str, first: int, stop: int, per_page: int, extra: dict[str, Any]
) -> Any:
    """Pages of ``orders`` nodes over [first, stop); past Shopify's 25,000-item paging cap the chain
    restarts from the last ``updatedAt`` read (rows of that second come again: callers dedupe by id)."""
    from order_integration.storefronts.shopify import PAGING_CAP, window_filter

    lower, after, chain = first, None, 0
    last_updated = first
    while True:
        if after is not None and chain + per_page > PAGING_CAP:
            lower, after, chain = last_updated, None, 0
        conn = post(query, {"first": per_page, "after": after, "query": window_filter(lower, stop), **extra})
        conn = conn["orders"]
        nodes = conn["nodes"]
        chain += len(nodes)
        if nodes:
            last_updated = calendar.timegm(time.strptime(nodes[-1]["updatedAt"], "%Y-%m-%dT%H:%M:%SZ"))
        yield nodes
        if not conn["pageInfo"]["hasNextPage"]:
            return
        after = conn["pageInfo"]["endCursor"]


def floor_scan_nodes(url: str, first: int, stop: int, extended: bool, sleep: Sleeps) -> dict[str, Any]:
    """The client's plan, bare: id pages of 250, then ``nodes`` 10 ids at a time."""
    from order_integration.storefronts.shopify import MAX_PAGE, SCAN_QUERY, details_query

    post = BarePoster(url, sleep)
    try:
        ids: dict[str, None] = {}
        for nodes in _cursor_pages(post, SCAN_QUERY, first, stop, MAX_PAGE, {}):
            ids.update((node["id"], None) for node in nodes)
        wanted, orders, lines, more = list(ids), 0, 0, 0
        query = details_query(extended)
        for at in range(0, len(wanted), DETAILS_BATCH):
            data = post(query, {"ids": wanted[at : at + DETAILS_BATCH], "lines": LINES})
            for node in data["nodes"]:
                orders += 1
                lines += len(node["lineItems"]["nodes"])
                more += bool(node["lineItems"]["pageInfo"]["hasNextPage"])
    finally:
        post.close()
    return {
        "orders": orders,
        "distinct": len(ids),
        "lines": lines,
        "orders_with_more_lines": more,
        "requests": post.requests,
        "throttled": post.throttled,
    }


def orders_page_size(extended: bool) -> int:
    """The largest ``first`` of an ``orders`` query with every detail field within 1,000 points."""
    from order_integration.storefronts.shopify import detail_cost
    from order_integration.storefronts.shopify_graphql import MAX_QUERY_COST

    per_order = detail_cost(1, LINES, extended) - 1  # the connection's 2 points stand for nodes()'s 1
    return (MAX_QUERY_COST - 2) // per_order


def floor_orders(url: str, first: int, stop: int, extended: bool, sleep: Sleeps) -> dict[str, Any]:
    """Bare cursor paging of ``orders`` with the client's fields, at the largest page the cost
    limit allows."""
    from order_integration.storefronts.shopify import LINE_FIELDS, order_fields

    query = (
        "query FloorOrders($first: Int!, $after: String, $query: String!, $lines: Int!) {\n"
        "  orders(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {\n"
        f"    nodes {{ {order_fields(extended)}\n"
        f"      lineItems(first: $lines) {{ nodes {{ {LINE_FIELDS} }} "
        "pageInfo { hasNextPage endCursor } } }\n"
        "    pageInfo { hasNextPage endCursor }\n  }\n}"
    )
    post = BarePoster(url, sleep)
    seen: set[str] = set()
    lines = 0
    try:
        for nodes in _cursor_pages(post, query, first, stop, orders_page_size(extended), {"lines": LINES}):
            for node in nodes:
                if node["id"] not in seen:
                    seen.add(node["id"])
                    lines += len(node["lineItems"]["nodes"])
    finally:
        post.close()
    return {
        "orders": len(seen),
        "distinct": len(seen),
        "lines": lines,
        "requests": post.requests,
        "throttled": post.throttled,
    }


# --- the client ------------------------------------------------------------------------------------


def client_read(
    conn_id: str, start: Any, end: Any, extended: bool, sleep: Sleeps, keep: dict[str, Any]
) -> dict[str, Any]:
    from order_integration.storefronts import get_client

    client = get_client("shopify", conn_id, sleep=sleep, extended_fields=extended, timeout=600)
    raws = list(client.iter_orders(start, end))
    keep["client"], keep["raws"] = client, raws
    return {
        "orders": len(raws),
        "distinct": len({raw.get("id") for raw in raws}),
        "requests": client.requests_sent,
        "path": client.last_path,
        "downloads": int(client.last_path == "bulk"),
    }


def normalise_all(keep: dict[str, Any]) -> dict[str, Any]:
    client, raws = keep["client"], keep.pop("raws")
    flagged = sum(bool(client.normalise(raw, STORE_ID).parse_problems) for raw in raws)
    return {"orders": len(raws), "with_parse_problems": flagged, "requests": 0}


# --- measuring -------------------------------------------------------------------------------------


def measure(shop: ShopProcess, step: str, fn: Callable[[Sleeps], dict[str, Any]]) -> dict[str, Any]:
    import gc

    gc.collect()
    sleeps = Sleeps()
    COSTS.clear()
    server0 = eb._cpu_seconds(shop.psutil_proc)
    eb._reset_rss_peak()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = fn(sleeps)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    costs = list(COSTS)
    return {
        "step": step,
        "wall_s": wall,
        "client_cpu_s": cpu,
        "server_cpu_s": eb._cpu_seconds(shop.psutil_proc) - server0,
        "rss_peak_mb": eb._status_kb("VmHWM") / 1024,
        "sleep_s": sleeps.seconds,
        "sleeps": sleeps.count,
        "answers_with_cost": len(costs),
        "requested_points": sum(r for r, _a in costs if isinstance(r, int | float)),
        "actual_points": sum(a for _r, a in costs if isinstance(a, int | float)),
        "throttled_answers": sum(1 for _r, a in costs if a is None),
        **result,
    }


def _extended_fields(shop: ShopProcess, first: int, stop: int) -> bool:
    """Whether the sandbox serves the client's extended order fields (taxesIncluded...)."""
    from order_integration.storefronts.shopify import SCAN_QUERY, details_query, window_filter

    post = BarePoster(shop.graphql_url, Sleeps())
    try:
        ids = [
            n["id"]
            for n in post(SCAN_QUERY, {"first": 1, "after": None, "query": window_filter(first, stop)})[
                "orders"
            ]["nodes"]
        ]
        post(details_query(True), {"ids": ids, "lines": LINES})
        return True
    except RuntimeError:
        return False
    finally:
        post.close()


def bench_n(n: int, args: argparse.Namespace, start: Any, end: Any) -> list[dict[str, Any]]:
    from order_integration.storefronts.window import window_seconds

    first, stop = window_seconds(start, end)
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()
    with ShopProcess(n, args.seed, start, end) as shop:
        print(f"   sandbox up in {time.perf_counter() - began:.1f}s ({shop.base_url})", flush=True)
        for conn_id, threshold in ((CONN_PAGED, 0), (CONN_BULK, 1)):
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {
                    "conn_type": "http",
                    "host": shop.base_url,
                    "password": TOKEN,
                    "extra": {"bulk_threshold": threshold, "index_settle_seconds": 0},
                }
            )
        extended = args.extended if args.extended is not None else _extended_fields(shop, first, stop)
        print(f"   extended_fields={extended}", flush=True)
        buckets = [("unlimited", UNLIMITED, args.repeat)]
        if n in args.throttled_orders:
            buckets.append(("2000/100", STANDARD, 1))
        for bucket_name, (size, rate), repeat in buckets:
            passes: list[dict[str, dict[str, Any]]] = []
            for _ in range(repeat):
                keep: dict[str, Any] = {}
                steps: list[tuple[str, Callable[[Sleeps], dict[str, Any]]]] = [
                    ("floor", lambda s: floor_scan_nodes(shop.graphql_url, first, stop, extended, s))
                ]
                if n <= args.floor_orders_max and bucket_name == "unlimited":
                    steps.append(
                        ("floor-orders", lambda s: floor_orders(shop.graphql_url, first, stop, extended, s))
                    )
                steps += [
                    ("paged", lambda s, keep=keep: client_read(CONN_PAGED, start, end, extended, s, keep)),
                    ("normalise", lambda s, keep=keep: normalise_all(keep)),
                    ("bulk", lambda s: client_read(CONN_BULK, start, end, extended, s, {})),
                ]
                measured = {}
                for step, fn in steps:
                    shop.set_bucket(size, rate)  # full at every step's start
                    m = measure(shop, step, fn)
                    if m["orders"] != n or m.get("distinct", n) != n:
                        raise SystemExit(
                            f"N={n} {step}: read {m['orders']} orders ({m.get('distinct')} ids), not {n}"
                        )
                    measured[step] = m
                    print(
                        f"   [{bucket_name}] {step:<12} {m['wall_s']:8.2f}s wall "
                        f"{m['client_cpu_s']:7.2f}s cpu "
                        f"{m['server_cpu_s']:7.2f}s server {m['requests']:6} reqs {m['sleep_s']:7.1f}s slept",
                        flush=True,
                    )
                passes.append(measured)
            for step in passes[0]:
                runs = [p[step] for p in passes]
                row = dict(runs[0])
                for key in ("wall_s", "client_cpu_s", "server_cpu_s", "sleep_s"):
                    row[key] = statistics.median(r[key] for r in runs)
                row.update(
                    orders_n=n,
                    bucket=bucket_name,
                    repeats=len(runs),
                    extended_fields=extended,
                    walls=[r["wall_s"] for r in runs],
                )
                rows.append(row)
    return rows


def _derive(rows: list[dict[str, Any]]) -> None:
    floors = {(r["orders_n"], r["bucket"]): r for r in rows if r["step"] == "floor"}
    for r in rows:
        n, floor = r["orders_n"], floors[(r["orders_n"], r["bucket"])]
        r["orders_per_s"] = n / r["wall_s"]
        r["wall_over_floor"] = r["wall_s"] / floor["wall_s"]
        r["cpu_over_floor"] = r["client_cpu_s"] / max(floor["client_cpu_s"], 1e-9)
        r["requested_per_1k"] = r["requested_points"] * 1000 / n
        r["actual_per_1k"] = r["actual_points"] * 1000 / n


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'N':>7} {'bucket':<9} {'step':<12} {'orders/s':>9} {'wall s':>8} {'cli CPU':>8} {'srv CPU':>8} "
        f"{'reqs':>6} {'req pts/1k':>10} {'act pts/1k':>10} {'slept s':>8} {'thr':>4} {'wall/fl':>7} "
        f"{'CPU/fl':>7}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    last = None
    for r in rows:
        if last is not None and (r["orders_n"], r["bucket"]) != last:
            print()
        last = (r["orders_n"], r["bucket"])
        print(
            f"{r['orders_n']:>7} {r['bucket']:<9} {r['step']:<12} {r['orders_per_s']:>9.0f} "
            f"{r['wall_s']:>8.2f} "
            f"{r['client_cpu_s']:>8.2f} {r['server_cpu_s']:>8.2f} {r['requests'] + r.get('downloads', 0):>6} "
            f"{r['requested_per_1k']:>10.0f} {r['actual_per_1k']:>10.0f} {r['sleep_s']:>8.1f} "
            f"{r['throttled_answers']:>4} {r['wall_over_floor']:>7.2f} {r['cpu_over_floor']:>7.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--repeat", type=int, default=1, help="passes per N with the unlimited bucket (medians)"
    )
    parser.add_argument(
        "--throttled-orders",
        type=int,
        nargs="*",
        default=[],
        help="N values also run with Shopify's standard bucket 2000 points / 100 per s "
        "(~46,000 actual points per 1,000 orders: 1000 takes ~8 minutes a step)",
    )
    parser.add_argument(
        "--floor-orders-max",
        type=int,
        default=10_000,
        help="run the orders(first: 10) floor only up to this N (N/10 requests of full orders)",
    )
    parser.add_argument(
        "--extended-fields",
        dest="extended",
        default=None,
        type=lambda v: v.lower() in ("1", "true", "yes", "on"),
        help="ask for the extended order fields (default: whether the sandbox serves them)",
    )
    parser.add_argument("--seed", type=int, default=20260302)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args.serve, args.seed, args.start, args.end)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    signal.signal(signal.SIGTERM, eb._interrupted)
    signal.signal(signal.SIGINT, eb._interrupted)
    os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(RESULTS_DIR / f"shopify_bench_{stamp}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    lib = logging.getLogger("order_integration")
    lib.setLevel(logging.INFO)
    lib.addHandler(handler)
    lib.propagate = False

    load_before = eb._uptime()
    print(
        f"shopify bench {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()})\nload before: {load_before}",
        flush=True,
    )
    import airflow.providers.http.hooks.http  # noqa: F401
    import pendulum

    import order_integration.storefronts.shopify  # noqa: F401  (imported before any timing)

    eb._quiet()
    _record_costs()
    end = pendulum.parse(eb.WINDOW_END)
    start = end.subtract(hours=1)
    rows: list[dict[str, Any]] = []
    for n in args.orders:
        print(f"\n== N={n}: orders modified in [{start}, {end})", flush=True)
        rows += bench_n(n, args, start, end)
    load_after = eb._uptime()
    _derive(rows)
    _print_table(rows)
    print(f"\nload after: {load_after}")
    out = RESULTS_DIR / f"shopify_bench_{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_before": load_before,
                "load_after": load_after,
                "argv": sys.argv[1:],
                "window": [str(start), str(end)],
                "rows": rows,
            },
            indent=1,
            default=str,
        )
    )
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
