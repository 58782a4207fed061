"""The Shopify sandbox's ordered window search (``updated_at`` bounds, sortKey UPDATED_AT, bisected
out of ``ShopState.by_updated``) answers exactly as the full scan (filter and sort every order): the
same orders in the same order, the same cursors, counts, paging-cap errors and cursor errors, with
edits moving orders in and out of a window and a lagging search index. In process (no HTTP)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pendulum
import pytest

from sandbox.generator import generate_orders
from sandbox.shopify_admin import SandboxShopify, resolvers
from sandbox.shopify_admin import data as d
from sandbox.shopify_admin import graph as g

pytestmark = pytest.mark.unit
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(hours=2)
ORDERS = generate_orders(200, start=pendulum.instance(START), end=pendulum.instance(NOW), seed=14)
PAGE_Q = """query($q: String, $first: Int, $last: Int, $after: String, $before: String) {
  orders(first: $first, last: $last, after: $after, before: $before, sortKey: UPDATED_AT, query: $q) {
    edges { cursor node { id updatedAt note } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""
COUNT_Q = "query($q: String) { ordersCount(query: $q, limit: null) { count precision } }"


def _iso(when: datetime, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    return when.strftime(fmt)


def _queries() -> list[str]:
    a, b = START + timedelta(minutes=20), START + timedelta(minutes=70)
    return [
        f"updated_at:>='{_iso(a)}' updated_at:<'{_iso(b)}'",  # the client's window
        f"updated_at:>={_iso(a)} updated_at:<={_iso(b)}",
        f"updated_at:>'{_iso(a)}' updated_at:<'{_iso(b)}'",
        f"updated_at:>='{a.isoformat()}'",  # open above, with an offset
        f"updated_at:<'{_iso(b)}'",
        f"updated_at:>='{_iso(a + timedelta(microseconds=500_000), '%Y-%m-%dT%H:%M:%S.%fZ')}' "
        f"updated_at:<'{_iso(b + timedelta(microseconds=1), '%Y-%m-%dT%H:%M:%S.%fZ')}'",  # fractions
        f"updated_at:{_iso(pendulum.parse(ORDERS[5]['date_modified_gmt'] + 'Z'))}",  # one second
        f"updated_at:>='{_iso(b)}' updated_at:<'{_iso(a)}'",  # empty
        f"updated_at:>='{_iso(NOW + timedelta(minutes=3))}'",  # only edited orders
        f"updated_at:>='{_iso(a)}' status:any",  # another term: full scan either way
    ]


def _shop(**kwargs) -> SandboxShopify:
    return SandboxShopify(ORDERS, bucket_size=1e12, restore_rate=1e9, **kwargs)


def _ask(shop: SandboxShopify, variables: dict, query: str = PAGE_Q) -> dict:
    reply = shop.app.graphql("2026-10", set(shop.state.tokens[shop.token]), query, variables, None)
    body = json.loads(reply.body)
    body.pop("extensions", None)
    return body


def _walk(shop: SandboxShopify, q: str, page: int) -> list[dict]:
    """Every answer of paging ``q`` forwards by ``page`` and back from the end by ``page``."""
    answers = [_ask(shop, {"q": q}, COUNT_Q)]
    for direction, size, cursor in (("after", "first", "endCursor"), ("before", "last", "startCursor")):
        at = None
        for _ in range(1000):
            body = _ask(shop, {"q": q, size: page, direction: at})
            answers.append(body)
            conn = (body.get("data") or {}).get("orders")
            more = "hasNextPage" if direction == "after" else "hasPreviousPage"
            if not conn or not conn["pageInfo"][more]:
                break
            at = conn["pageInfo"][cursor]
    return answers


def _both(shop: SandboxShopify, monkeypatch: pytest.MonkeyPatch, q: str, page: int) -> tuple[list, list, int]:
    used = []
    real = resolvers._range_rows

    def counting(info, query):
        rows = real(info, query)
        used.append(rows is not None)
        return rows

    monkeypatch.setattr(resolvers, "_range_rows", counting)
    fast = _walk(shop, q, page)
    monkeypatch.setattr(resolvers, "_range_rows", lambda info, query: None)
    full = _walk(shop, q, page)
    monkeypatch.setattr(resolvers, "_range_rows", real)
    return fast, full, sum(used)


def _compare_all(shop: SandboxShopify, monkeypatch: pytest.MonkeyPatch) -> int:
    bisected = 0
    for i, q in enumerate(_queries()):
        fast, full, used = _both(shop, monkeypatch, q, (29, 250)[i % 2])
        assert fast == full, q
        bisected += used
    return bisected


def test_the_window_search_answers_as_the_full_scan(monkeypatch):
    shop = _shop()
    assert _compare_all(shop, monkeypatch) > 0
    # edits move orders in and out of windows (and to the same second as others: ties by id)
    for i, order in enumerate(ORDERS[::7]):
        when = START + timedelta(minutes=(i * 13) % 130) if i % 3 else NOW + timedelta(minutes=5)
        shop.touch_order(order["id"], when, note=f"edit {i}")
    assert _compare_all(shop, monkeypatch) > 0
    # a lagging index (the index's clock stopped meanwhile): edits the filter does not see yet, then sees
    clock = [time.monotonic()]
    monkeypatch.setattr(g, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    shop.set_index_lag(1.5)
    for i, order in enumerate(ORDERS[3::11]):
        shop.touch_order(order["id"], START + timedelta(minutes=(i * 17) % 120), note=f"lagged {i}")
    shop.touch_order(ORDERS[4]["id"], NOW + timedelta(minutes=5))
    shop.touch_order(ORDERS[4]["id"], START + timedelta(minutes=30))  # two versions pending
    assert _compare_all(shop, monkeypatch) > 0
    lagged = _ask(shop, {"q": _queries()[8], "first": 250})["data"]["orders"]["edges"]
    assert ORDERS[4]["id"] not in {d.parse_gid(e["node"]["id"])[1] for e in lagged}
    clock[0] += 1.6
    assert _compare_all(shop, monkeypatch) > 0


def test_the_paging_cap_and_bad_cursors_are_the_same(monkeypatch):
    shop = _shop()
    shop.state.paging_cap = 40
    q = _queries()[0]
    fast, full, used = _both(shop, monkeypatch, q, 9)
    assert used and fast == full
    assert any("Pagination limit exceeded" in e["message"] for body in fast for e in body.get("errors", []))
    for cursor in (d.encode_cursor(1, "text"), d.encode_cursor(1, None), "not a cursor",
                   d.encode_cursor(ORDERS[0]["id"], 0), d.encode_cursor(10**9, 10**12)):
        answers = []
        for rows in (resolvers._range_rows, lambda info, query: None):
            monkeypatch.setattr(resolvers, "_range_rows", rows)
            answers.append([_ask(shop, {"q": q, "first": 5, "after": cursor}),
                            _ask(shop, {"q": q, "last": 5, "before": cursor})])
        assert answers[0] == answers[1], cursor


def test_without_read_all_orders_the_full_scan_answers(monkeypatch):
    shop = _shop(scopes=["read_orders"])
    fast, full, used = _both(shop, monkeypatch, _queries()[0], 7)
    assert fast == full and not used and fast[1]["data"]["orders"]["edges"]
