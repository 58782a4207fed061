"""Status sync benchmark: backend status files applied to the storefront, next to the floor.

    python bench/status_sync_bench.py [--orders 5000] [--events 10000] [--profile]

The sandbox storefront runs in its own process (``python -m sandbox.storefront``, started by
``export_bench.StorefrontProcess``); before each scenario it is reset (``POST /__sandbox/reset``)
to the same ~5,000 generated orders (``sandbox.generator``, only ``processing``/``on-hold``/
``pending`` ones), notes and request log cleared. The client side is called as the status sync
task does: ``parse_status_file`` on the CSV bytes, then ``WooCommerceWriter(conn_id)`` +
``Ledger(sqlite_engine(tmp))`` + ``status_sync.apply_file`` (writer and ledger built inside the
timing). Scenarios:

(a) status only: every order set to ``pending``/``on-hold``; two ``accepted`` events per order
    (the first moves it to ``processing``, the second, later one is note only). 10,000 events.
(b) mixed: accepted + whole shipment, accepted + partial shipments per SKU, rejected then
    accepted, cancelled, accepted only; orders in their generated active status. 10,000 events.
(c) the file of (b) applied again with the same ledger (every event a ledger duplicate).
(c') the same file once more with a FRESH ledger (the ledger lost): the storefront notes decide.

The FLOOR of (a)/(b) sends the writes the sync actually made (one ``POST notes`` per applied
event, the status changes as ``POST /orders/batch`` of 100 in file order) with one
``requests.Session`` and no logic, on a freshly reset store.

Requests are counted from the sandbox's request log, by method and path kind.
Results: a table on stdout and JSON under ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import json
import math
import os
import platform
import pstats
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_bench import KEY, SECRET, StorefrontProcess, _uptime

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
STORE_ID = "bench"
CONN_ID = "bench_status_storefront"
KINDS = ("GET orders", "GET notes", "POST notes", "PUT order", "POST batch", "other")
ACTIVE = ("processing", "on-hold", "pending")
#: Generated orders spread over this span; events happen after it.
SPAN_START, SPAN_END = "2026-03-01T00:00:00+00:00", "2026-03-02T00:00:00+00:00"
BATCH = 100


# --- data ---------------------------------------------------------------------------------------------


def make_orders(n_active: int, seed: int) -> list[dict[str, Any]]:
    """About ``n_active`` generated orders, keeping only processing/on-hold/pending ones."""
    import pendulum

    from sandbox.generator import generate_orders

    generated = generate_orders(int(n_active / 0.85) + 50, start=pendulum.parse(SPAN_START),
                                end=pendulum.parse(SPAN_END), seed=seed)
    return [o for o in generated if o["status"] in ACTIVE][:n_active]


def _csv(rows: list[dict[str, Any]]) -> bytes:
    from order_integration.backend.status_files import STATUS_COLUMNS

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=STATUS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in STATUS_COLUMNS})
    return buf.getvalue().encode()


def _time(minute: int) -> str:
    day, rest = divmod(minute, 24 * 60)
    return f"2026-03-{2 + day:02d}T{rest // 60:02d}:{rest % 60:02d}:00Z"


def file_status_only(orders: list[dict[str, Any]], n_events: int) -> bytes:
    """Two accepted events per order (the second later, note only), interleaved by time."""
    per_order = max(1, math.ceil(n_events / len(orders)))
    rows = []
    for k in range(per_order):
        for i, order in enumerate(orders):
            if len(rows) < n_events:
                rows.append({"order_id": order["id"], "event": "accepted",
                             "occurred_at": _time(k * 600 + i % 600)})
    return _csv(rows)


def file_mixed(orders: list[dict[str, Any]], n_events: int, seed: int) -> bytes:
    """A realistic mix; per order a story, stories interleaved in time, cut at ``n_events``."""
    rng = random.Random(seed)
    stories: list[list[dict[str, Any]]] = []
    total = 0
    for order in orders:
        if total >= n_events:
            break
        oid = order["id"]
        tracking = {"carrier": "DHL", "tracking_number": f"JD{oid:012d}",
                    "tracking_url": f"https://track.example.com/{oid}"}
        skus: dict[str, int] = {}
        for line in order["line_items"]:
            if line.get("sku"):
                skus[line["sku"]] = skus.get(line["sku"], 0) + int(line["quantity"])
        has_plain = any(not line.get("sku") for line in order["line_items"])
        roll = rng.random()
        story: list[dict[str, Any]]
        if roll < 0.45:
            story = [{"event": "accepted"}, {"event": "shipped", **tracking}]
        elif roll < 0.65 and skus and not has_plain:
            story = [{"event": "accepted"}]
            for sku, qty in skus.items():
                if qty > 1:  # two parcels for this SKU
                    story.append({"event": "shipped", "sku": sku, "quantity": qty - 1, **tracking})
                    story.append({"event": "shipped", "sku": sku, "quantity": 1, **tracking})
                else:
                    story.append({"event": "shipped", "sku": sku, "quantity": qty, **tracking})
        elif roll < 0.75:
            story = [{"event": "rejected", "note": "Address incomplete"}, {"event": "accepted"}]
        elif roll < 0.85:
            story = [{"event": "cancelled", "note": "Out of stock"}]
        else:
            story = [{"event": "accepted"}]
        start = rng.randrange(0, 8 * 60)
        for k, ev in enumerate(story):
            ev.update(order_id=oid, occurred_at=_time(start + 90 * k))
        stories.append(story)
        total += len(story)
    rows = sorted((ev for s in stories for ev in s), key=lambda e: (e["occurred_at"], e["order_id"]))
    return _csv(rows[:n_events])


# --- measuring -----------------------------------------------------------------------------------------


def kind_of(method: str, path: str) -> str:
    p = path.split("?", 1)[0]
    if re.fullmatch(r"/wp-json/wc/v3/orders", p) and method == "GET":
        return "GET orders"
    if re.fullmatch(r"/wp-json/wc/v3/orders/\d+/notes", p):
        return f"{method} notes" if method in ("GET", "POST") else "other"
    if re.fullmatch(r"/wp-json/wc/v3/orders/\d+", p) and method == "PUT":
        return "PUT order"
    if p == "/wp-json/wc/v3/orders/batch" and method == "POST":
        return "POST batch"
    return "other"


class Shop:
    """Control of the storefront process: reset to the scenario's orders, read the request log."""

    def __init__(self, proc: StorefrontProcess) -> None:
        import requests

        self.base = proc.base_url
        self.http = requests.Session()

    def reset(self, orders: list[dict[str, Any]]) -> None:
        resp = self.http.post(f"{self.base}/__sandbox/reset", json={"orders": orders}, timeout=120)
        resp.raise_for_status()

    def log(self) -> list[list[Any]]:
        resp = self.http.get(f"{self.base}/__sandbox/requests", timeout=120)
        resp.raise_for_status()
        return resp.json()


def measure(shop: Shop, fn: Any, *, profile: Path | None = None) -> dict[str, Any]:
    before = len(shop.log())
    prof = cProfile.Profile() if profile else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    result = fn()
    if prof:
        prof.disable()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if prof and profile:
        prof.dump_stats(profile)
    entries = shop.log()[before:]
    kinds = Counter(kind_of(m, p) for m, p, _s in entries)
    bad = [e for e in entries if not 200 <= e[2] < 300]
    return {"wall_s": wall, "cpu_s": cpu, "requests": len(entries),
            "by_kind": {k: kinds.get(k, 0) for k in KINDS}, "non_2xx": len(bad), "result": result}


def run_sync(data: bytes, ledger_path: Path, name: str) -> dict[str, Any]:
    from order_integration import status_sync
    from order_integration.backend.status_files import parse_status_file
    from order_integration.ledger import Ledger, sqlite_engine
    from order_integration.storefronts.woocommerce_writes import WooCommerceWriter

    t0 = time.perf_counter()
    parsed = parse_status_file(data, name)
    parse_s = time.perf_counter() - t0
    assert not parsed.errors, parsed.errors[:3]
    with WooCommerceWriter(CONN_ID) as writer:
        outcomes = status_sync.apply_file(STORE_ID, parsed.events, writer,
                                          Ledger(sqlite_engine(ledger_path), create=True).status_events,
                                          source_file=name)
    return {"parse_s": parse_s, "outcomes": outcomes}


def writes_of(outcomes: list[Any]) -> tuple[list[tuple[int, str, bool]], list[tuple[int, str]]]:
    """The writes a run made: notes (order, text, customer) and status changes, in file order."""
    notes, statuses = [], []
    for o in sorted(outcomes, key=lambda o: o.event.line_number):
        if o.outcome == "applied":
            notes.append((int(o.event.order_id), o.note, o.event.event == "shipped"))
            if o.new_status:
                statuses.append((int(o.event.order_id), o.new_status))
    return notes, statuses


def floor(base: str, notes: list[tuple[int, str, bool]], statuses: list[tuple[int, str]]) -> dict[str, int]:
    """The least: each write once, one session, no reads, no logic."""
    import requests

    api = f"{base}/wp-json/wc/v3/orders"
    with requests.Session() as s:
        s.auth = (KEY, SECRET)
        for oid, text, customer in notes:
            s.post(f"{api}/{oid}/notes", json={"note": text, "customer_note": customer},
                   timeout=60).raise_for_status()
        for start in range(0, len(statuses), BATCH):
            chunk = [{"id": oid, "status": st} for oid, st in statuses[start:start + BATCH]]
            s.post(f"{api}/batch", json={"update": chunk}, timeout=60).raise_for_status()
    return {"notes": len(notes), "status_updates": len(statuses)}


def summarise_profile(path: Path, top: int = 12) -> list[dict[str, Any]]:
    stats = pstats.Stats(str(path))
    rows = []
    for (fn, line, func), (_cc, calls, tt, ct, _c) in stats.stats.items():  # type: ignore[attr-defined]
        short = fn.split("site-packages/")[-1].split("/include/")[-1].split("lib/python3.11/")[-1]
        rows.append({"function": f"{short}:{line}({func})", "calls": calls, "tottime_s": round(tt, 3),
                     "cumtime_s": round(ct, 3)})
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return rows[:top]


# --- driver --------------------------------------------------------------------------------------------


def _interrupted(signum: int, _frame: Any) -> None:
    raise SystemExit(f"interrupted by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=20260302)
    parser.add_argument("--profile", action="store_true",
                        help="an extra cProfile pass of scenario (b) (.prof in bench/results)")
    args = parser.parse_args(argv)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    import pendulum

    load_before = _uptime()
    print(f"status sync bench {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()})", flush=True)
    print(f"load before: {load_before}", flush=True)
    orders = make_orders(args.orders, args.seed)
    held = [{**o, "status": ("pending", "on-hold")[i % 2]} for i, o in enumerate(orders)]
    files = {"a": file_status_only(held, args.events), "b": file_mixed(orders, args.events, args.seed)}
    counts = {k: v.count(b"\n") - 1 for k, v in files.items()}
    print(f"{len(orders)} orders ({dict(Counter(o['status'] for o in orders))}); events {counts}", flush=True)

    # The CLI generates 1 order; every scenario resets the store to its own orders.
    proc = StorefrontProcess(1, args.seed, pendulum.parse(SPAN_START), pendulum.parse(SPAN_END))
    work = Path(tempfile.mkdtemp(prefix="status_sync_bench_"))
    res: dict[str, dict[str, Any]] = {}
    profile_top: list[dict[str, Any]] = []
    try:
        proc.start()
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
            {"conn_type": "http", "host": proc.base_url, "login": KEY, "password": SECRET})
        shop = Shop(proc)
        # Warm-up, not measured: one-off imports (Airflow SDK, http hook) and the first connection
        # lookup; a task process pays them once, they are not per-event cost.
        shop.reset(orders)
        warm = b"\n".join(files["b"].split(b"\n")[:21]) + b"\n"
        run_sync(warm, work / "ledger_warm.db", "warm.csv")
        scen_orders = {"a": held, "b": orders}
        for sc in ("a", "b"):
            shop.reset(scen_orders[sc])
            m = measure(shop, lambda sc=sc: run_sync(files[sc], work / f"ledger_{sc}.db", f"status_{sc}.csv"))
            outcomes = m["result"]["outcomes"]
            m["parse_s"] = m["result"]["parse_s"]
            m["outcomes"] = dict(Counter(o.kind for o in outcomes))
            m["events"] = len(outcomes)
            notes, statuses = writes_of(outcomes)
            m["writes"] = {"notes": len(notes), "status_updates": len(statuses)}
            res[sc] = m
            if sc == "b":  # (c) and (c') on the state (b) left
                for label, ledger in (("c", "ledger_b.db"), ("c'", "ledger_fresh.db")):
                    mc = measure(shop, lambda ledger=ledger: run_sync(files["b"], work / ledger, "again.csv"))
                    oc = mc["result"]["outcomes"]
                    mc["parse_s"] = mc["result"]["parse_s"]
                    mc["outcomes"] = dict(Counter(o.kind for o in oc))
                    mc["events"] = len(oc)
                    mc["writes"] = {"notes": 0, "status_updates": 0}
                    res[label] = mc
            shop.reset(scen_orders[sc])
            mf = measure(shop, lambda n=notes, st=statuses: floor(proc.base_url, n, st))
            res[f"floor_{sc}"] = mf
            print(f"  ({sc}) sync {m['wall_s']:.2f}s, floor {mf['wall_s']:.2f}s", flush=True)
        if args.profile:
            shop.reset(orders)
            prof = RESULTS_DIR / f"status_sync_profile_{stamp}_b.prof"
            mp = measure(shop, lambda: run_sync(files["b"], work / "ledger_prof.db", "prof.csv"),
                         profile=prof)
            profile_top = summarise_profile(prof)
            print(f"  profiled (b): {mp['wall_s']:.2f}s under cProfile; {prof.relative_to(ROOT)}")
    finally:
        proc.stop()
        shutil.rmtree(work, ignore_errors=True)

    for m in res.values():
        m.pop("result", None)
    table = render(res)
    print(table)
    if profile_top:
        print("\ncProfile of (b), top own time:")
        for r in profile_top:
            print(f"  {r['tottime_s']:7.2f}s own {r['cumtime_s']:7.2f}s cum {r['calls']:>8}  {r['function']}")
    load_after = _uptime()
    print(f"load after: {load_after}")
    out = RESULTS_DIR / f"status_sync_bench_{stamp}.json"
    out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "argv": sys.argv[1:], "orders": len(orders),
        "load_before": load_before, "load_after": load_after, "results": res,
        "profile_top_own_time": profile_top, "table": table,
    }, indent=1, default=str))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


def render(res: dict[str, dict[str, Any]]) -> str:
    short = {"GET orders": "GETo", "GET notes": "GETn", "POST notes": "POSTn", "PUT order": "PUT",
             "POST batch": "batch", "other": "oth"}
    head = (f"{'scenario':<14} {'events':>6} {'wall s':>7} {'ev/s':>7} {'reqs':>6} {'/1k ev':>7} "
            + " ".join(f"{short[k]:>6}" for k in KINDS)
            + f" {'w/o notes/1k':>12} {'floor s':>8} {'/floor':>7} {'floor reqs':>10}  outcomes")
    lines = ["per 1,000 events by kind: GETo = GET /orders, GETn/POSTn = GET/POST notes, "
             "PUT = PUT /orders/{id}, batch = POST /orders/batch", head, "-" * len(head)]
    for sc in ("a", "b", "c", "c'"):
        m = res[sc]
        n = m["events"] or 1
        fl = res.get(f"floor_{sc}")
        bk = m["by_kind"]
        no_notes = sum(v for k, v in bk.items() if "notes" not in k)
        name = {"a": "(a) status", "b": "(b) mixed", "c": "(c) again", "c'": "(c') no ledger"}[sc]
        lines.append(
            f"{name:<14} {m['events']:>6} {m['wall_s']:>7.2f} {m['events'] / m['wall_s']:>7.0f} "
            f"{m['requests']:>6} {1000 * m['requests'] / n:>7.1f} "
            + " ".join(f"{1000 * bk[k] / n:>6.1f}" for k in KINDS)
            + f" {1000 * no_notes / n:>12.1f} "
            + (f"{fl['wall_s']:>8.2f} {m['wall_s'] / fl['wall_s']:>7.2f} {fl['requests']:>10}"
               if fl else f"{'-':>8} {'-':>7} {'-':>10}")
            + f"  {m['outcomes']}"
        )
    lines.append("")
    for sc in ("a", "b"):
        m, fl = res[sc], res[f"floor_{sc}"]
        lines.append(f"({sc}) writes needed: {m['writes']['notes']} notes + {m['writes']['status_updates']} "
                     f"status changes; parse {m['parse_s']:.2f}s (inside wall); client CPU sync "
                     f"{m['cpu_s']:.2f}s vs floor {fl['cpu_s']:.2f}s; non-2xx: sync {m['non_2xx']}, "
                     f"floor {fl['non_2xx']}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
