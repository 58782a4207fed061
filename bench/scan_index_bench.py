"""The WooCommerce scan's in-memory index alone (issue 18): the dict it was, the arrays it is.

    python bench/scan_index_bench.py [--orders 100000 1000000]

For each N and structure, a fresh interpreter (``--child``) builds the row stream a keyset scan
produces: N distinct ids over seconds of 1..40 orders, pages of 100 rows, each page after the
first re-reading the last second of the one before (about 17% of the rows are an id seen
again, as in the bench's 1,172 requests for 100k orders). Rows are tiny (``b'{"id":N,"v":P}'``,
P the page): what is measured is the index, not the spool, which is a temporary file in both.

* ``old``: ``_Scan`` as it was until issue 18's compact index (copied below verbatim): a dict
  ``id -> (second, offset, length)``, sorted by ``(second, id)`` at the end; the per-row work is
  ``_absorb``'s old ``seen.get`` + ``keep``.
* ``new``: ``woocommerce._Scan`` of this checkout, ``offer`` per row, ``reserve(N)`` after the
  first page (``_absorb`` does it with the first page's ``X-WP-Total``).

Both read ``len(seen)`` / ``orders`` after every page, as ``_absorb`` does. Figures: peak RSS
growth (``VmHWM`` after resetting it through ``/proc/self/clear_refs``, minus ``VmRSS`` once
the stream was built) and CPU seconds (``process_time``) of the rows' ``keep`` and of reading
every kept row back; the digest of the rows read back must be the same for old and new.
Linux only (``/proc``). Cheap: about 15 s for 100k and 1M, both structures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "include"))

PER_PAGE = 100
SECOND_MAX = 40  # orders in one second: 1..SECOND_MAX


@dataclass(slots=True)
class OldScan:
    """``woocommerce._Scan`` before the compact index (verbatim, less the docstring)."""

    stop: int
    spool: IO[bytes]
    seen: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    end: int = 0  # bytes written to the spool so far
    pages: int = 0
    estimate: int | None = None

    def keep(self, order_id: int, second: int, row: bytes) -> None:
        self.spool.write(row)
        self.seen[order_id] = (second, self.end, len(row))
        self.end += len(row)

    def kept_rows(self) -> Iterator[bytes]:
        """The kept rows' bytes in (modified, id) order."""
        self.spool.flush()
        seen = self.seen
        for key in sorted(seen, key=lambda k: (seen[k][0], k)):
            _second, offset, length = seen[key]
            self.spool.seek(offset)
            yield self.spool.read(length)


def stream(n: int) -> tuple[array, array, list[bytes]]:
    """(ids, seconds, rows) of the rows a keyset scan of n orders reads, in read order."""
    import random

    rng = random.Random(18)
    modulus = 8 * n + 1  # ids: a permutation of 1..modulus-1 (i * P mod M), spread, distinct
    ids, seconds = array("Q"), array("q")
    second, made = 1_700_000_000, 0
    while made < n:  # the store's (second, id) order
        count = min(rng.randint(1, SECOND_MAX), n - made)
        for order_id in sorted((made + k + 1) * 2_654_435_761 % modulus for k in range(count)):
            ids.append(order_id)
            seconds.append(second)
        made += count
        second += rng.randint(1, 3)
    out_ids, out_seconds, rows = array("Q"), array("q"), []
    start, page = 0, 0
    while start < n:  # pages of 100 from the cursor; the next one re-reads the last second
        end = min(start + PER_PAGE, n)
        for i in range(start, end):
            out_ids.append(ids[i])
            out_seconds.append(seconds[i])
            rows.append(b'{"id":%d,"v":%d}' % (ids[i], page))
        page += 1
        if end == n:
            break
        last = seconds[end - 1]
        first_of_last = end - 1
        while first_of_last > start and seconds[first_of_last - 1] == last:
            first_of_last -= 1
        start = first_of_last if first_of_last > start else end
    return out_ids, out_seconds, rows


def _status(name: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(name)


def child(kind: str, n: int) -> dict:
    from order_integration.storefronts.woocommerce import _Scan  # both: the same imports

    ids, seconds, rows = stream(n)
    digest = hashlib.blake2b(digest_size=12)
    with tempfile.TemporaryFile() as spool:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # VmHWM := VmRSS
        base = _status("VmRSS")
        cpu = time.process_time()
        if kind == "old":
            scan = OldScan(stop=0, spool=spool)
            seen = scan.seen
            for number, (order_id, second, row) in enumerate(zip(ids, seconds, rows, strict=True), 1):
                previous = seen.get(order_id)
                if previous is None or second >= previous[0]:
                    data = bytes(row)
                    scan.keep(order_id, second, data.replace(b"\n", b" ") if b"\n" in data else data)
                if number % PER_PAGE == 0:
                    len(seen)
            distinct = len(seen)
        else:
            scan = _Scan(stop=0, spool=spool)
            for number, (order_id, second, row) in enumerate(zip(ids, seconds, rows, strict=True), 1):
                scan.offer(order_id, second, row)
                if number % PER_PAGE == 0:
                    scan.orders  # noqa: B018 (as _absorb reads it)
                    if number == PER_PAGE:
                        scan.reserve(n)  # as _absorb does with the first page's X-WP-Total
            distinct = scan.orders
        keep_cpu = time.process_time() - cpu
        cpu = time.process_time()
        read = 0
        for row in scan.kept_rows():
            digest.update(row)
            digest.update(b"\n")
            read += 1
        read_cpu = time.process_time() - cpu
        peak = _status("VmHWM")
    return {"kind": kind, "orders": n, "rows": len(rows), "distinct": distinct, "read": read,
            "growth_mb": peak - base, "keep_cpu": keep_cpu, "read_cpu": read_cpu,
            "digest": digest.hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    results = []
    for n in args.orders:
        for kind in ("old", "new"):
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(n)],
                                 check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out))
    print("| N orders | rows offered (re-read) | index | peak RSS growth MB | CPU s keep "
          "| CPU s read back | CPU s total |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['orders']:,} | {r['rows']:,} ({r['rows'] / r['orders'] - 1:.0%}) | {r['kind']} | "
              f"{r['growth_mb']:.0f} | {r['keep_cpu']:.2f} | {r['read_cpu']:.2f} | "
              f"{r['keep_cpu'] + r['read_cpu']:.2f} |")
    for n in args.orders:
        old, new = (next(r for r in results if r["orders"] == n and r["kind"] == k) for k in ("old", "new"))
        same = (old["digest"], old["read"], old["distinct"]) == (new["digest"], new["read"], new["distinct"])
        print(f"{n:,}: old and new read back {'the same' if same else 'DIFFERENT'} "
              f"{new['read']:,} rows (digest {new['digest']})")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
