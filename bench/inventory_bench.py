"""Inventory sync benchmark: a 50k-SKU stock snapshot applied to the sandbox storefront.

    python bench/inventory_bench.py [--skus 50000] [--variation-share 0.1] [--variations-each 10]
                                    [--changed-share 0.1] [--update 1000]

The sandbox storefront runs in its own process (``python -m sandbox.storefront``, started by
``export_bench.StorefrontProcess`` with no orders) and is seeded through
``POST /__sandbox/products`` with a managed catalogue of ``--skus`` SKUs
(``sandbox.storefront.generate_products``): simple products, and ``--variation-share`` of the
SKUs as variations, ``--variations-each`` per variable product. The client side is called as
the inventory task does, minus SFTP: ``parse_stock_file`` on the CSV bytes, then
``WooCommerceStock(conn_id)`` + ``Ledger(sqlite_engine(tmp))`` + ``inventory.apply_stock_rows``
(client built inside the timing, Airflow imported before; one ledger across the scenarios, as
in production).

Scenarios, in order:
(a) first full snapshot: every SKU's level differs from the store (all changed);
(b) the same snapshot again under another name: no request at all, no write;
(c) the next full snapshot (newer ``as_of``), ``--changed-share`` of the SKUs changed;
(d) a small update file: ``--update`` SKUs changed.

Requests are counted from the sandbox's request log, by kind: ``GET lookup``
(``/products?sku=…``), ``POST products/batch`` and ``POST variations/batch``.
"requests per 1,000 changed" = all storefront requests of the scenario / applied rows × 1000.
Results: a table on stdout and JSON under ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
CONN_ID = "bench_inventory_storefront"
KINDS = ("GET lookup", "POST products/batch", "POST variations/batch", "other")
AS_OF = ("2026-03-01T10:00:00Z", "2026-03-01T10:15:00Z", "2026-03-01T10:30:00Z")


def catalogue(skus: int, variation_share: float, variations_each: int) -> list[dict[str, Any]]:
    from sandbox.storefront import generate_products

    variable = round(skus * variation_share / variations_each) if variations_each else 0
    return generate_products(skus - variable * variations_each, variable, variations_each, first_id=100_000)


def levels_of(products: list[dict[str, Any]]) -> dict[str, int]:
    """sku -> the seeded stock of every managed SKU (simple products and variations)."""
    out: dict[str, int] = {}
    for product in products:
        for item in [product, *(product.get("variations") or [])]:
            if item.get("manage_stock"):
                out[item["sku"]] = item["stock_quantity"]
    return out


def stock_csv(levels: dict[str, int], as_of: str) -> bytes:
    return ("sku,quantity,as_of\n" + "".join(f"{s},{q},{as_of}\n" for s, q in levels.items())).encode()


def kind(method: str, path: str) -> str:
    if method == "GET" and "/products?" in path:
        return "GET lookup"
    if method == "POST" and path.endswith("/variations/batch"):
        return "POST variations/batch"
    if method == "POST" and path.endswith("/products/batch"):
        return "POST products/batch"
    return "other"


def request_log(base_url: str) -> list[list[Any]]:
    import requests

    resp = requests.get(f"{base_url}/__sandbox/requests", timeout=120)
    resp.raise_for_status()
    return resp.json()


def scenario(name: str, data: bytes, file_name: str, ledger: Any, base_url: str) -> dict[str, Any]:
    from order_integration.backend.stock_files import parse_stock_file
    from order_integration.inventory import apply_stock_rows, count_outcomes
    from order_integration.storefronts.woocommerce_products import WooCommerceStock

    seen = len(request_log(base_url))
    started = time.perf_counter()
    parsed = parse_stock_file(data, file_name)
    with WooCommerceStock(CONN_ID, timeout=120) as client:
        outcomes = apply_stock_rows(STORE_ID, parsed, client, ledger.stock_levels, source_file=file_name)
    seconds = time.perf_counter() - started
    log = request_log(base_url)[seen:]
    kinds = Counter(kind(m, p) for m, p, _status in log)
    counts = count_outcomes(outcomes)
    total = len(log)
    per_1000 = round(total / counts["applied"] * 1000, 2) if counts["applied"] else None
    row = {
        "scenario": name, "rows": parsed.row_count, **counts, "requests": total,
        **{k: kinds[k] for k in KINDS}, "seconds": round(seconds, 2),
        "requests_per_1000_changed": per_1000,
        "writes": kinds["POST products/batch"] + kinds["POST variations/batch"],
        "failed_http": sum(1 for _m, _p, status in log if status >= 400),
    }
    print(f"{name:<34} rows={row['rows']:>6} applied={counts['applied']:>6} "
          f"unchanged={counts['unchanged']:>6} stale={counts['stale']:>3} requests={total:>5} "
          f"(lookup {kinds['GET lookup']}, product batches {kinds['POST products/batch']}, "
          f"variation batches {kinds['POST variations/batch']}) per 1k changed={per_1000} "
          f"time={seconds:.1f}s", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=50_000)
    parser.add_argument("--variation-share", type=float, default=0.1)
    parser.add_argument("--variations-each", type=int, default=10)
    parser.add_argument("--changed-share", type=float, default=0.1)
    parser.add_argument("--update", type=int, default=1000)
    args = parser.parse_args(argv)

    # Airflow's import (~3-12 s, paid once per task process anyway) stays out of the timings.
    import airflow.providers.http.hooks.http  # noqa: F401
    import pendulum
    import requests

    from order_integration.ledger import Ledger, sqlite_engine

    products = catalogue(args.skus, args.variation_share, args.variations_each)
    initial = levels_of(products)
    shop = StorefrontProcess(0, 1, pendulum.parse(AS_OF[0]), pendulum.parse(AS_OF[1])).start()
    rows: list[dict[str, Any]] = []
    try:
        for start in range(0, len(products), 5000):
            requests.post(f"{shop.base_url}/__sandbox/products", json=products[start:start + 5000],
                          timeout=300).raise_for_status()
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
            {"conn_type": "http", "host": shop.base_url, "login": KEY, "password": SECRET})
        print(f"catalogue: {len(initial)} SKUs ({sum(1 for p in products if p.get('type') == 'variable')} "
              f"variable products); {_uptime()}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            ledger = Ledger(sqlite_engine(Path(tmp) / "ledger.db"), create=True)
            first = {sku: q + 1 for sku, q in initial.items()}
            rows.append(scenario("(a) first snapshot, all changed", stock_csv(first, AS_OF[0]), "snap_1.csv",
                                 ledger, shop.base_url))
            rows.append(scenario("(b) same snapshot again", stock_csv(first, AS_OF[0]), "snap_1_again.csv",
                                 ledger, shop.base_url))
            step = max(1, round(1 / args.changed_share)) if args.changed_share else 0
            second = {sku: q + (3 if step and n % step == 0 else 0)
                      for n, (sku, q) in enumerate(first.items())}
            rows.append(scenario(f"(c) next snapshot, {args.changed_share:.0%} changed",
                                 stock_csv(second, AS_OF[1]), "snap_2.csv", ledger, shop.base_url))
            picked = list(second)[1 :: max(1, len(second) // args.update)][: args.update]
            update = {sku: second[sku] + 5 for sku in picked}
            rows.append(scenario(f"(d) update of {len(update)} SKUs", stock_csv(update, AS_OF[2]),
                                 "upd_1.csv", ledger, shop.base_url))
    finally:
        shop.stop()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = pendulum.now("UTC").strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"inventory_{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "python": platform.python_version(), "uptime": _uptime(),
                               "scenarios": rows}, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
