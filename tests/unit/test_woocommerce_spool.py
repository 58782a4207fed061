"""The WooCommerce scan's spool: rows wait on disk, only a small index stays in memory.

The HTTP layer is replaced by an in-process fake that answers the scan's keyset queries the
way WooCommerce core does (strict bounds, ``orderby=modified`` with id as tie-breaker, offset
``page``), building each page's bytes on request, so the fake itself holds no rows. The page
bytes still go through the client's real decoding (``_read``).
"""

from __future__ import annotations

import bisect
import contextlib
import io
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pendulum
import pytest
import requests

from order_integration.exceptions import StorefrontError
from order_integration.storefronts.base import write_window_jsonl
from order_integration.storefronts.window import format_gmt
from order_integration.storefronts.woocommerce import WooCommerceClient

pytestmark = pytest.mark.unit

T0 = pendulum.datetime(2026, 11, 29, 10, 0, 0, tz="UTC")
START = T0.int_timestamp


class FakeOrders:
    """``id -> (modification second, version)``; a row's body is built when a page is asked for."""

    def __init__(self, seconds: dict[int, int], padding: int = 0) -> None:
        self.orders = {order_id: (second, 1) for order_id, second in seconds.items()}
        self._keys: list[tuple[int, int]] | None = None  # (second, id) sorted; None after a change
        self.padding = "x" * padding
        self.requests = 0
        self.before_request: Callable[[int], None] = lambda number: None

    def edit(self, order_id: int, second: int) -> None:
        self.orders[order_id] = (second, self.orders[order_id][1] + 1)
        self._keys = None

    def body(self, order_id: int) -> bytes:
        second, version = self.orders[order_id]
        # key order, spacing and an escaped character that a re-encoding would change
        return (
            f'{{"id": {order_id},  "status": "processing", "date_modified_gmt": "{_gmt(second)}", '
            f'"note": "caf\\u00e9 v{version}", "pad": "{self.padding}"}}'
        ).encode()

    def page(self, params: dict[str, str]) -> requests.Response:
        self.requests += 1
        self.before_request(self.requests)
        after = pendulum.parse(params["modified_after"], tz="UTC").int_timestamp
        before = pendulum.parse(params["modified_before"], tz="UTC").int_timestamp
        per_page, number = int(params["per_page"]), int(params["page"])
        if self._keys is None:
            self._keys = sorted((s, i) for i, (s, _v) in self.orders.items())
        low = bisect.bisect_left(self._keys, (after + 1, -1))
        high = bisect.bisect_left(self._keys, (before, -1))
        first = low + (number - 1) * per_page
        chosen = self._keys[first : min(first + per_page, high)]
        response = requests.Response()
        response.status_code = 200
        response._content = b"[" + b",\n".join(self.body(i) for _s, i in chosen) + b"]"
        response.headers["X-WP-Total"] = str(high - low)
        return response


def _gmt(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def make_client(monkeypatch: pytest.MonkeyPatch, fake: FakeOrders, per_page: int = 100) -> WooCommerceClient:
    c = WooCommerceClient("storefront_spool_test", per_page=per_page, max_attempts=1, sleep=lambda s: None)
    monkeypatch.setattr(c, "_open_session", lambda endpoint: (None, contextlib.nullcontext(), "url"))
    monkeypatch.setattr(c, "_get_page", lambda hook, session, url, params: c._read(fake.page(params)))
    return c


def staged(c: WooCommerceClient, end: pendulum.DateTime) -> tuple[int, list[bytes]]:
    out = io.BytesIO()
    count = write_window_jsonl(c, T0, end, out)
    return count, out.getvalue().splitlines()


def test_rows_come_in_modified_then_id_order_as_the_store_sent_them(monkeypatch: pytest.MonkeyPatch) -> None:
    seconds = {7: START + 3, 3: START + 3, 9: START, 1: START + 5, 4: START + 3, 2: START + 1}
    fake = FakeOrders(seconds)
    count, lines = staged(make_client(monkeypatch, fake, per_page=2), T0.add(minutes=1))
    assert count == 6
    assert [msgspec.json.decode(line)["id"] for line in lines] == [9, 2, 3, 4, 7, 1]
    # the bytes the store sent, not a re-encoding (key order, double space, the \u escape)
    assert lines == [fake.body(i) for i in (9, 2, 3, 4, 7, 1)]


def test_an_order_modified_mid_scan_comes_once_in_its_newest_version(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeOrders({i: START + i for i in range(1, 11)})

    def drift(number: int) -> None:
        if number == 2:  # order 1 was on page 1; it is edited and moves to a later second
            fake.edit(1, START + 8)

    fake.before_request = drift
    c = make_client(monkeypatch, fake, per_page=3)
    count, lines = staged(c, T0.add(minutes=1))
    rows = [msgspec.json.decode(line) for line in lines]
    assert count == 10 == len({r["id"] for r in rows})
    newest = next(r for r in rows if r["id"] == 1)
    assert newest["note"] == "café v2" and newest["date_modified_gmt"] == format_gmt(START + 8)
    assert [r["id"] for r in rows] == [2, 3, 4, 5, 6, 7, 1, 8, 9, 10]  # (second 8, id 1) before (8, 8)
    # iter_orders gives the same orders as dicts
    assert [r["id"] for r in c.iter_orders(T0, T0.add(minutes=1))] == [2, 3, 4, 5, 6, 7, 1, 8, 9, 10]


def _spool_fds(folder: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(folder)):
                found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_failure_mid_scan_writes_nothing_and_leaves_no_spool(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_dir))
    fake = FakeOrders({i: START + i for i in range(1, 11)})
    open_during_scan: list[list[str]] = []

    def fail(number: int) -> None:
        open_during_scan.append(_spool_fds(spool_dir))
        if number == 3:
            raise StorefrontError("the store went away")

    fake.before_request = fail
    out = io.BytesIO()
    with pytest.raises(StorefrontError, match="went away"):
        write_window_jsonl(make_client(monkeypatch, fake, per_page=3), T0, T0.add(minutes=1), out)
    assert out.getvalue() == b""
    assert open_during_scan[1], "the spool should be open (in spool_dir) while the scan runs"
    assert _spool_fds(spool_dir) == [] and os.listdir(spool_dir) == []


def _peak_while_staging(monkeypatch: pytest.MonkeyPatch, n: int, padding: int) -> tuple[int, int]:
    """(tracemalloc peak while staging n orders of about ``padding`` bytes, bytes staged)."""
    fake = FakeOrders({i: START + i * 3600 // n for i in range(n)}, padding=padding)
    c = make_client(monkeypatch, fake)
    with open(os.devnull, "wb") as sink:
        written = _CountingSink(sink)
        tracemalloc.start()
        try:
            count = write_window_jsonl(c, T0, T0.add(hours=1), written)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == n
    return peak, written.bytes


class _CountingSink:
    def __init__(self, sink: Any) -> None:
        self.sink, self.bytes = sink, 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return self.sink.write(data)


def test_memory_held_does_not_grow_with_the_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of ~2 KB: the scan holds an index entry per order, never the rows themselves."""
    small_peak, _small_bytes = _peak_while_staging(monkeypatch, 2_000, padding=2_000)
    large_peak, large_bytes = _peak_while_staging(monkeypatch, 20_000, padding=2_000)
    assert large_bytes > 40_000_000
    # what the scan holds is a small fraction of what it staged (about 350 B an order here) ...
    assert large_peak < 0.25 * large_bytes, (large_peak, large_bytes)
    # ... and each extra order adds an index entry (a few hundred bytes), not its 2 KB row
    per_extra_order = (large_peak - small_peak) / 18_000
    assert per_extra_order < 700, (small_peak, large_peak)


def test_a_client_without_raw_rows_is_encoded_from_its_dicts() -> None:
    """Shopify (and any client that only yields dicts) stages the same JSON Lines as before."""

    class DictClient:
        def iter_orders(self, modified_from: Any, modified_to: Any) -> Any:
            return iter([{"id": 2, "total": "1.50"}, {"id": 1, "note": "café"}])

    out = io.BytesIO()
    assert write_window_jsonl(DictClient(), T0, T0.add(hours=1), out) == 2  # type: ignore[arg-type]
    assert out.getvalue() == b'{"id":2,"total":"1.50"}\n{"id":1,"note":"caf\xc3\xa9"}\n'


# -- the compact index (issue 18): same rows, same order, same counts as the dict it replaced --


class StampedOrders(FakeOrders):
    """Each row also says which request carried it, so a re-read row is told from the first."""

    def body(self, order_id: int) -> bytes:
        return super().body(order_id)[:-1] + f', "request": {self.requests}}}'.encode()


def test_an_id_re_read_on_the_next_page_comes_once_as_its_latest_row(monkeypatch: pytest.MonkeyPatch) -> None:
    # pages of 3: the last second of each page (START + 1, then START + 3) is read again
    seconds = {1: START, 2: START + 1, 3: START + 1, 4: START + 2, 5: START + 3, 6: START + 3, 7: START + 4}
    fake = StampedOrders(seconds)
    pages: list[tuple[int, int]] = []
    c = make_client(monkeypatch, fake, per_page=3)
    c.on_page = lambda number, orders, _estimate: pages.append((number, orders))
    count, lines = staged(c, T0.add(minutes=1))
    rows = [msgspec.json.decode(line) for line in lines]
    assert count == 7 and [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    # pages of 3 from the cursor: 1 2 3 | 2 3 4 (re-reads START + 1) | 4 5 6 | 5 6 7 | 7 (short)
    assert [r["request"] for r in rows] == [1, 2, 2, 3, 4, 4, 5]
    assert pages == [(1, 3), (2, 4), (3, 6), (4, 7), (5, 7)]  # distinct orders after each page


def test_order_is_modified_then_id_also_for_ids_above_two_to_the_63(monkeypatch: pytest.MonkeyPatch) -> None:
    big = 2**64 - 1
    seconds = {big: START + 1, 2**63: START + 1, 2**63 - 1: START + 1, 5: START + 1, big - 1: START,
               7: START + 2, 2**63 + 7: START + 2}
    fake = StampedOrders(seconds)
    count, lines = staged(make_client(monkeypatch, fake, per_page=2), T0.add(minutes=1))
    rows = [msgspec.json.decode(line) for line in lines]
    assert count == 7
    assert [r["id"] for r in rows] == [big - 1, 5, 2**63 - 1, 2**63, big, 7, 2**63 + 7]
    assert len({r["id"] for r in rows}) == 7


class _DictScan:
    """The index as it was before issue 18's compact one: ``_absorb``'s ``seen.get`` + ``keep``."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[int, bytes]] = {}

    def offer(self, order_id: int, second: int, row: bytes) -> bool:
        previous = self.seen.get(order_id)
        if previous is None or second >= previous[0]:
            self.seen[order_id] = (second, row.replace(b"\n", b" "))
        return previous is None

    def kept_rows(self) -> list[bytes]:
        return [self.seen[k][1] for k in sorted(self.seen, key=lambda k: (self.seen[k][0], k))]


@pytest.mark.parametrize("in_order", [True, False], ids=["seconds-ascending", "seconds-shuffled"])
@pytest.mark.parametrize("seed", range(4))
def test_the_compact_index_keeps_what_the_dict_kept(seed: int, in_order: bool) -> None:
    """Random offers (strided and huge ids, ids no store sends, re-reads, older versions) give
    the same new-id answers, counts and rows, in the same order, as the dict it replaced."""
    import random

    from order_integration.storefronts.woocommerce import _Scan

    rng = random.Random(seed)
    pool = ([i << 20 for i in range(1, 3000)] + [2**64 - i for i in range(1, 400)]
            + [2**63 + i for i in range(-200, 200)] + [0, -1, -(2**70), 2**64, 2**80])
    offers = []
    for _ in range(12_000):
        order_id = rng.choice(pool)
        second = rng.randrange(START, START + 500)
        offers.append((order_id, second, f'{{"id": {order_id},\n"n": {len(offers)}}}'.encode()))
    if in_order:
        offers.sort(key=lambda offer: offer[1])
    reference = _DictScan()
    with tempfile.TemporaryFile() as spool:
        scan = _Scan(stop=START + 500, spool=spool)
        for number, (order_id, second, row) in enumerate(offers):
            assert scan.offer(order_id, second, msgspec.Raw(row)) == reference.offer(order_id, second, row)
            assert scan.orders == len(reference.seen)
            if number == 50:
                scan.reserve(10)  # smaller than what is there: changes nothing
        assert scan._bits > 10  # the table grew (no reserve for the lot)
        assert list(scan.kept_rows()) == reference.kept_rows()


def test_reserve_sizes_the_index_once_and_caps_a_store_s_total() -> None:
    from order_integration.storefronts.woocommerce import _RESERVE_MAX, _Scan

    with tempfile.TemporaryFile() as spool:
        scan = _Scan(stop=START + 10, spool=spool)
        scan.reserve(100_000)
        assert scan._bits == 18 and len(scan._ids) == 125_000  # 70% of 262,144 slots; 1.25 rows an id
        scan.reserve(10**12)  # X-WP-Total can say anything: the reserve stops at _RESERVE_MAX
        assert scan._bits == 21 and len(scan._ids) == _RESERVE_MAX * 5 // 4
