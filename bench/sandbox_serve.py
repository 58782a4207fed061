"""The sandbox storefront for benchmarks: orders generated in chunks, optionally over HTTPS.

    python bench/sandbox_serve.py --orders 1000000 --chunk 50000 --start ... --end ... [--tls-dir DIR]

``python -m sandbox.storefront --orders N`` builds all N order dicts before encoding them
(about 13 KB of Python objects per order: ~13 GB at 1M) and files each order into its sorted
indexes with ``bisect.insort`` (quadratic: ~3.5 minutes of memmove at 1M). This helper serves
the same ``SandboxStorefront`` but generates ``--chunk`` orders at a time with
``sandbox.generator.generate_orders`` (chunk ``k`` uses ``seed + k`` and its own id range) and
encodes each chunk into the store before the next is made; the indexes are sorted once at the
end. Peak memory is the encoded store (~3.4 KB per order) plus one chunk.

With ``--chunk`` >= ``--orders`` the orders are exactly those of
``python -m sandbox.storefront --orders N --seed S`` (one chunk, ``seed``, ids from 1001).
Chunk ``k``'s orders get ids from ``1001 + k * (2 * chunk + 200)``: its refund ids (which
``generate_orders`` numbers after the orders) never collide with another chunk's ids.

``--tls-dir DIR``: serve HTTPS with a self-signed certificate for 127.0.0.1 made by
``tests.support.tls.self_signed`` into DIR (``DIR/cert.pem`` is what a client must trust).

Prints ``sandbox storefront listening on <url>`` once every order is served, like the module,
and serves until SIGTERM/SIGINT. A benchmark helper only: nothing in the package or the tests
imports it.
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_ID = 1001


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def fill(store: object, n: int, chunk: int, *, seed: int, start: datetime, end: datetime,
         timezone: str) -> int:
    """Generate ``n`` orders ``chunk`` at a time straight into ``store`` (an empty ``OrderStore``)."""
    import pendulum

    from sandbox.generator import generate_orders
    from sandbox.storefront import HIDDEN_STATUSES, _Record, wp_json

    records, by_created, by_modified = store.records, store.by_created, store.by_modified  # type: ignore[attr-defined]
    made = hidden = 0
    k = 0
    while made < n:
        size = min(chunk, n - made)
        first_id = FIRST_ID + k * (2 * chunk + 200)
        for order in generate_orders(size, start=pendulum.instance(start), end=pendulum.instance(end),
                                     seed=seed + k, first_id=first_id, store_timezone=timezone):
            # What OrderStore._put does for a new order, without its per-order bisect.insort.
            created, modified = store._normalise_dates(order)  # type: ignore[attr-defined]
            key = order["id"]
            rec = _Record(key, str(order.get("status", "")), created, modified, wp_json(order))
            records[key] = rec
            by_created.append((created, key))
            by_modified.append((modified, key))
            hidden += rec.status in HIDDEN_STATUSES
        made += size
        k += 1
        print(f"  generated {made}/{n}", file=sys.stderr, flush=True)
    by_created.sort()
    by_modified.sort()
    store.ids[:] = sorted(records)  # type: ignore[attr-defined]
    store.hidden = hidden  # type: ignore[attr-defined]
    store.version += 1  # type: ignore[attr-defined]
    store.snapshot()  # type: ignore[attr-defined]
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--orders", type=int, required=True)
    parser.add_argument("--chunk", type=int, default=50_000, help="orders generated at a time")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--start", type=_aware, required=True)
    parser.add_argument("--end", type=_aware, required=True)
    parser.add_argument("--key", default="ck_sandbox")
    parser.add_argument("--secret", default="cs_sandbox")
    parser.add_argument("--timezone", default="Europe/Berlin")
    parser.add_argument("--tls-dir", default="", help="serve HTTPS; the certificate is written here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    from sandbox.storefront import SandboxStorefront

    context = None
    if args.tls_dir:
        from tests.support.tls import self_signed

        cert, key = self_signed(Path(args.tls_dir), args.host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    shop = SandboxStorefront(None, host=args.host, port=args.port, consumer_key=args.key,
                             consumer_secret=args.secret, store_timezone=args.timezone, ssl_context=context)
    fill(shop.store, args.orders, max(1, args.chunk), seed=args.seed, start=args.start, end=args.end,
         timezone=args.timezone)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    shop.start()
    print(f"sandbox storefront listening on {shop.base_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        shop.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
