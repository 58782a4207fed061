"""The sandbox storefront behaves like WooCommerce where our client depends on it.

Servers run in-process on port 0 (loopback only); requests go over real HTTP with ``requests``.
"""

from __future__ import annotations

import base64
import json
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.client import HTTPConnection
from typing import Any
from zoneinfo import ZoneInfo

import pendulum
import pytest
import requests

from order_integration.currency import minor_units
from sandbox.generator import INVALID_KINDS, generate_orders, make_invalid, totals_add_up
from sandbox.storefront import SandboxStorefront

pytestmark = pytest.mark.unit

AUTH = ("ck_sandbox", "cs_sandbox")
START = pendulum.datetime(2026, 3, 20, tz="UTC")
END = pendulum.datetime(2026, 3, 27, tz="UTC")
BERLIN = ZoneInfo("Europe/Berlin")
ORDERS_PATH = "/wp-json/wc/v3/orders"
MONEY_KEYS = ("discount_total", "discount_tax", "shipping_total", "shipping_tax", "cart_tax", "total", "total_tax")


def _orders(n: int = 120, seed: int = 7) -> list[dict[str, Any]]:
    return generate_orders(n, start=START, end=END, seed=seed)


def _wall(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S")


def _gmt(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def orders() -> list[dict[str, Any]]:
    return _orders()


@pytest.fixture(scope="module")
def shop(orders: list[dict[str, Any]]):
    """A read-only shop shared by the tests that do not change orders or queue faults."""
    with SandboxStorefront(orders) as running:
        yield running


@pytest.fixture
def fresh(orders: list[dict[str, Any]]):
    """A private shop for tests that change orders, queue faults or read the request log."""
    clock = {"now": datetime(2026, 4, 1, 12, 0, 0, tzinfo=UTC)}
    with SandboxStorefront(orders, clock=lambda: clock["now"]) as running:
        running.test_clock = clock  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def http() -> requests.Session:
    session = requests.Session()
    session.auth = AUTH
    return session


def _list(shop: SandboxStorefront, http: requests.Session, **params: Any) -> requests.Response:
    return http.get(shop.base_url + ORDERS_PATH, params=params, timeout=10)


def _ids(resp: requests.Response) -> list[int]:
    assert resp.status_code == 200, resp.text
    return [o["id"] for o in resp.json()]


# --- generator ------------------------------------------------------------------------------------


def test_generator_is_deterministic_per_seed() -> None:
    assert _orders(40, seed=3) == _orders(40, seed=3)
    assert _orders(40, seed=3) != _orders(40, seed=4)


def test_totals_add_up_for_every_order_in_every_currency() -> None:
    orders = _orders(800, seed=11)
    assert {o["currency"] for o in orders} >= {"EUR", "USD", "GBP", "JPY", "KWD", "SEK"}
    for order in orders:
        cur, decimals = order["currency"], minor_units(order["currency"])
        money = re.compile(r"^-?\d+$" if decimals == 0 else rf"^-?\d+\.\d{{{decimals}}}$")
        lines, fees = order["line_items"], order["fee_lines"]
        for key in MONEY_KEYS:
            assert money.match(order[key]), (order["id"], cur, key, order[key])
        subtotal = sum((Decimal(li["subtotal"]) for li in lines), Decimal(0))
        fee_total = sum((Decimal(f["total"]) for f in fees), Decimal(0))
        expected = (subtotal - Decimal(order["discount_total"]) + Decimal(order["shipping_total"]) + fee_total
                    + Decimal(order["total_tax"]))
        assert expected == Decimal(order["total"]), order["id"]
        assert Decimal(order["total_tax"]) == Decimal(order["cart_tax"]) + Decimal(order["shipping_tax"])
        line_and_fee_tax = sum((Decimal(x["total_tax"]) for x in [*lines, *fees]), Decimal(0))
        assert line_and_fee_tax == Decimal(order["cart_tax"])
        shipping_tax = sum((Decimal(s["total_tax"]) for s in order["shipping_lines"]), Decimal(0))
        assert shipping_tax == Decimal(order["shipping_tax"])
        for line in lines:
            assert money.match(line["total"]) and money.match(line["subtotal"])
            assert isinstance(line["price"], int | float)
            assert Decimal(str(line["price"])) * line["quantity"] == pytest.approx(Decimal(line["total"]))
        assert totals_add_up(order)


def test_generated_orders_look_like_woocommerce() -> None:
    orders = _orders(600, seed=5)
    ids = [o["id"] for o in orders]
    assert ids == list(range(1001, 1601))
    statuses = Counter(o["status"] for o in orders)
    assert 0.55 < statuses["processing"] / 600 < 0.75
    assert {"pending", "on-hold", "completed", "cancelled"} <= set(statuses)
    names = {o["billing"]["first_name"] + " " + o["billing"]["last_name"] for o in orders}
    assert any(ch in "".join(names) for ch in "ëŁ山")  # unicode names are in the mix
    virtual = [o for o in orders if not o["shipping_lines"]]
    assert virtual and all(o["shipping"]["country"] == "" and o["shipping"]["address_1"] == "" for o in virtual)
    assert any(o["coupon_lines"] for o in orders) and any(o["fee_lines"] for o in orders)
    assert {len(o["line_items"]) for o in orders} >= {1, 2, 3, 4}
    for order in orders:
        assert order["number"] == str(order["id"])
        assert order["billing"]["phone"].startswith("+")
        created, modified = _gmt(order["date_created_gmt"]), _gmt(order["date_modified_gmt"])
        assert START <= modified < END and created <= modified
        # Local fields are the store's wall time of the GMT ones.
        assert order["date_modified"] == _wall(modified.astimezone(BERLIN))
        assert order["date_paid_gmt"] is None or order["date_paid_gmt"] <= order["date_modified_gmt"]
        assert (order["date_completed"] is None) == (order["status"] not in ("completed", "refunded"))


@pytest.mark.parametrize("kind", INVALID_KINDS)
def test_make_invalid_breaks_one_thing_and_leaves_the_original(kind: str) -> None:
    original = next(o for o in _orders(30, seed=2) if o["shipping_lines"] and len(o["line_items"]) > 1)
    before = json.dumps(original, sort_keys=True)
    broken = make_invalid(original, kind)
    assert json.dumps(original, sort_keys=True) == before
    assert broken != original
    expected = {
        "negative_quantity": lambda b: b["line_items"][0]["quantity"] < 0,
        "bad_currency": lambda b: b["currency"] == "EURO",
        "missing_currency": lambda b: not b["currency"],
        "total_mismatch": lambda b: not totals_add_up(b),
        "bad_email": lambda b: "@" not in b["billing"]["email"],
        "bad_country": lambda b: b["shipping"]["country"] == "Germany",
        "no_lines": lambda b: b["line_items"] == [],
        "negative_price": lambda b: Decimal(b["line_items"][0]["subtotal"]) < 0 and b["line_items"][0]["price"] < 0,
        "missing_id": lambda b: b["id"] is None,
        "non_numeric_total": lambda b: b["total"] == "12,50",
    }[kind]
    assert expected(broken)
    if kind in ("negative_quantity", "no_lines", "negative_price", "bad_email", "bad_country"):
        assert totals_add_up(broken)  # only the named rule fails


def test_make_invalid_refuses_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        make_invalid(_orders(1)[0], "nonsense")


# --- listing ---------------------------------------------------------------------------------------


def test_paging_headers_and_links(shop: SandboxStorefront, http: requests.Session) -> None:
    first = _list(shop, http, per_page=25)
    assert first.headers["X-WP-Total"] == "120"
    assert first.headers["X-WP-TotalPages"] == "5"
    assert 'rel="next"' in first.headers["Link"] and 'rel="prev"' not in first.headers["Link"]
    assert "page=2" in first.links["next"]["url"]
    middle = _list(shop, http, per_page=25, page=3)
    assert set(middle.links) == {"prev", "next"}
    last = _list(shop, http, per_page=25, page=5)
    assert set(last.links) == {"prev"} and len(last.json()) == 20
    beyond = _list(shop, http, per_page=25, page=9)
    assert beyond.json() == [] and beyond.headers["X-WP-Total"] == "120"
    assert len(_list(shop, http).json()) == 10  # per_page defaults to 10


def test_pages_cover_every_order_once_in_each_ordering(shop: SandboxStorefront, http: requests.Session,
                                                       orders: list[dict[str, Any]]) -> None:
    by_id = {o["id"]: o for o in orders}
    for orderby, field in (("modified", "date_modified_gmt"), ("date", "date_created_gmt"), ("id", "id")):
        for direction in ("asc", "desc"):
            seen: list[int] = []
            for page in range(1, 6):
                seen += _ids(_list(shop, http, per_page=30, page=page, orderby=orderby, order=direction))
            assert sorted(seen) == sorted(by_id)
            keys = [(by_id[i][field], i) for i in seen]  # ties broken by id, in the same direction
            assert keys == sorted(keys, reverse=direction == "desc")


def test_default_order_is_newest_created_first(shop: SandboxStorefront, http: requests.Session,
                                               orders: list[dict[str, Any]]) -> None:
    newest = sorted(orders, key=lambda o: (o["date_created_gmt"], o["id"]), reverse=True)[:10]
    assert _ids(_list(shop, http)) == [o["id"] for o in newest]


def test_filters_match_a_brute_force_answer(shop: SandboxStorefront, http: requests.Session,
                                            orders: list[dict[str, Any]]) -> None:
    rng = random.Random(1)
    statuses = ["processing", "on-hold", "pending", "completed"]
    for _ in range(25):
        params: dict[str, Any] = {"per_page": 100, "dates_are_gmt": "true",
                                  "orderby": rng.choice(["modified", "date", "id"]), "order": "asc"}
        after = _wall(START + timedelta(hours=rng.randint(0, 100)))
        before = _wall(START + timedelta(hours=rng.randint(100, 170)))
        params[rng.choice(["modified_after", "after"])] = after
        params[rng.choice(["modified_before", "before"])] = before
        if rng.random() < 0.5:
            params["status"] = ",".join(rng.sample(statuses, 2))
        field = {"modified": "date_modified_gmt", "date": "date_created_gmt", "id": "id"}[params["orderby"]]

        def keep(o: dict[str, Any], p: dict[str, Any] = params) -> bool:
            ok = "status" not in p or o["status"] in p["status"].split(",")
            for name, column in (("modified_after", "date_modified_gmt"), ("after", "date_created_gmt")):
                ok = ok and (name not in p or o[column] > p[name])
            for name, column in (("modified_before", "date_modified_gmt"), ("before", "date_created_gmt")):
                ok = ok and (name not in p or o[column] < p[name])
            return ok

        expected = [o["id"] for o in sorted((o for o in orders if keep(o)), key=lambda o: (o[field], o["id"]))]
        resp = _list(shop, http, **params)
        assert _ids(resp) == expected, params
        assert resp.headers["X-WP-Total"] == str(len(expected))


def test_status_and_include_filters(shop: SandboxStorefront, http: requests.Session,
                                    orders: list[dict[str, Any]]) -> None:
    on_hold = sorted(o["id"] for o in orders if o["status"] == "on-hold")
    assert sorted(_ids(_list(shop, http, status="on-hold", per_page=100))) == on_hold
    assert len(_ids(_list(shop, http, status="any", per_page=100))) == 100
    picked = [1050, 1003, 1077]
    assert _ids(_list(shop, http, include="1050,1003,1077", orderby="include")) == picked
    assert _ids(_list(shop, http, include="1050,1003,1077", orderby="id", order="asc")) == sorted(picked)


# --- date bounds -----------------------------------------------------------------------------------


def _probe(shop: SandboxStorefront, http: requests.Session, order: dict[str, Any], **params: Any) -> bool:
    """Is ``order`` in the answer to this query (include= keeps the answer to that one order)?"""
    return order["id"] in _ids(_list(shop, http, include=str(order["id"]), **params))


def test_modified_bounds_are_exclusive_against_gmt(shop: SandboxStorefront, http: requests.Session,
                                                   orders: list[dict[str, Any]]) -> None:
    order = orders[40]
    at = _gmt(order["date_modified_gmt"])
    one = timedelta(seconds=1)
    gmt = {"dates_are_gmt": "true"}
    assert not _probe(shop, http, order, modified_after=_wall(at), **gmt)
    assert _probe(shop, http, order, modified_after=_wall(at - one), **gmt)
    assert not _probe(shop, http, order, modified_before=_wall(at), **gmt)
    assert _probe(shop, http, order, modified_before=_wall(at + one), **gmt)
    created = _gmt(order["date_created_gmt"])
    assert not _probe(shop, http, order, after=_wall(created), **gmt)
    assert _probe(shop, http, order, after=_wall(created - one), before=_wall(created + one), **gmt)
    # The same through the index path (no other filter), counted against a brute force.
    text = order["date_modified_gmt"]
    later = _list(shop, http, orderby="modified", order="asc", per_page=100, modified_after=text, **gmt)
    assert later.headers["X-WP-Total"] == str(sum(o["date_modified_gmt"] > text for o in orders))
    assert order["id"] not in _ids(later)
    earlier = _list(shop, http, orderby="modified", order="asc", per_page=100, modified_before=text, **gmt)
    assert earlier.headers["X-WP-Total"] == str(sum(o["date_modified_gmt"] < text for o in orders))


def test_bounds_without_dates_are_gmt_use_store_local_time(shop: SandboxStorefront, http: requests.Session,
                                                           orders: list[dict[str, Any]]) -> None:
    order = orders[41]
    local = datetime.fromisoformat(order["date_modified"])
    one = timedelta(seconds=1)
    assert local != datetime.fromisoformat(order["date_modified_gmt"])  # Berlin is never UTC
    assert not _probe(shop, http, order, modified_after=_wall(local))
    assert _probe(shop, http, order, modified_after=_wall(local - one))
    assert not _probe(shop, http, order, modified_before=_wall(local))
    assert _probe(shop, http, order, modified_before=_wall(local + one))
    # The GMT value without dates_are_gmt is read as local time: an hour or two off.
    gmt_text = order["date_modified_gmt"]
    assert _probe(shop, http, order, modified_after=gmt_text) != _probe(
        shop, http, order, modified_after=gmt_text, dates_are_gmt="true")


def test_offset_suffix_is_converted_to_store_time_like_wordpress(shop: SandboxStorefront, http: requests.Session,
                                                                 orders: list[dict[str, Any]]) -> None:
    order = orders[42]
    at = _gmt(order["date_modified_gmt"])
    one = timedelta(seconds=1)
    # Local comparison: a Z value is converted to store time first, so it means the real instant.
    assert not _probe(shop, http, order, modified_after=_wall(at) + "Z")
    assert _probe(shop, http, order, modified_after=_wall(at - one) + "Z")
    assert _probe(shop, http, order, modified_after=_wall((at - one).astimezone(BERLIN)) + "+01:00") == (
        (at - one).astimezone(BERLIN).utcoffset() == timedelta(hours=1))
    # With dates_are_gmt=true WordPress still converts the Z value to store wall time and then
    # compares it with the GMT column: the bound moves by the store's UTC offset (1-2 h in Berlin).
    offset = at.astimezone(BERLIN).utcoffset()
    assert offset
    shifted = _wall(at - offset - one) + "Z"  # as wall time in Berlin this is at - 1 s
    assert _probe(shop, http, order, modified_after=shifted, dates_are_gmt="true")
    assert not _probe(shop, http, order, modified_after=_wall(at - one) + "Z", dates_are_gmt="true")


def test_invalid_dates_and_params_are_refused_like_wordpress(shop: SandboxStorefront,
                                                             http: requests.Session) -> None:
    resp = _list(shop, http, modified_after="2026-03-20", order="sideways")
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "rest_invalid_param"
    assert set(body["data"]["params"]) == {"modified_after", "order"}
    assert _list(shop, http, status="shipped").status_code == 400
    assert _list(shop, http, page=0).status_code == 400


@pytest.mark.parametrize("per_page", [101, 500, 0, -1, "ten"])
def test_per_page_outside_1_to_100_is_refused(shop: SandboxStorefront, http: requests.Session,
                                              per_page: Any) -> None:
    resp = _list(shop, http, per_page=per_page)
    assert resp.status_code == 400
    assert resp.json()["code"] == "rest_invalid_param"
    assert "per_page" in resp.json()["data"]["params"]


def test_per_page_100_is_allowed(shop: SandboxStorefront, http: requests.Session) -> None:
    assert len(_ids(_list(shop, http, per_page=100))) == 100


# --- auth and encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, ("ck_sandbox", "wrong"), ("ck_other", "cs_sandbox")])
def test_missing_or_wrong_credentials_get_401(shop: SandboxStorefront, auth: Any) -> None:
    resp = requests.get(shop.base_url + ORDERS_PATH, auth=auth, timeout=10)
    assert resp.status_code == 401
    body = resp.json()
    assert body["code"] == "woocommerce_rest_cannot_view" and body["data"]["status"] == 401
    assert requests.get(f"{shop.base_url}{ORDERS_PATH}/1001", auth=auth, timeout=10).status_code == 401


def test_credentials_in_the_query_string_are_accepted(shop: SandboxStorefront) -> None:
    params = {"consumer_key": "ck_sandbox", "consumer_secret": "cs_sandbox"}
    assert requests.get(shop.base_url + ORDERS_PATH, params=params, timeout=10).status_code == 200


def test_bodies_are_encoded_like_wp_json_encode(shop: SandboxStorefront, http: requests.Session,
                                                orders: list[dict[str, Any]]) -> None:
    resp = http.get(f"{shop.base_url}{ORDERS_PATH}/1001", timeout=10)
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.content.isascii() and b"\\/" in resp.content
    assert resp.json() == orders[0]
    missing = http.get(f"{shop.base_url}{ORDERS_PATH}/999999", timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == "woocommerce_rest_shop_order_invalid_id"


# --- faults ----------------------------------------------------------------------------------------


def test_429_and_503_carry_retry_after(fresh: SandboxStorefront, http: requests.Session) -> None:
    fresh.inject_faults([{"type": "429", "retry_after": 7}, {"type": "503"}])
    first, second, third = (_list(fresh, http) for _ in range(3))
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert (second.status_code, second.headers["Retry-After"]) == (503, "1")
    assert third.status_code == 200
    assert [entry[2] for entry in fresh.request_log] == [429, 503, 200]


def test_500_is_a_wordpress_json_error(fresh: SandboxStorefront, http: requests.Session) -> None:
    fresh.inject_faults([{"type": "500", "times": 2}])
    assert [_list(fresh, http).status_code for _ in range(3)] == [500, 500, 200]
    body = http.get(fresh.base_url + ORDERS_PATH, timeout=10)
    assert body.status_code == 200
    fresh.inject_faults([{"type": "500"}])
    error = _list(fresh, http).json()
    assert error["code"] == "internal_server_error" and error["data"]["status"] == 500


def test_html_fault_is_a_200_html_page(fresh: SandboxStorefront, http: requests.Session) -> None:
    fresh.inject_faults([{"type": "html"}])
    resp = _list(fresh, http)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        resp.json()


def test_truncated_fault_cuts_the_real_body(fresh: SandboxStorefront, http: requests.Session) -> None:
    whole = _list(fresh, http, per_page=5).content
    fresh.inject_faults([{"type": "truncated"}])
    cut = _list(fresh, http, per_page=5)
    assert cut.status_code == 200 and cut.headers["Content-Type"].startswith("application/json")
    assert cut.content == whole[: len(whole) // 2]
    assert int(cut.headers["Content-Length"]) == len(cut.content)
    with pytest.raises(ValueError):
        json.loads(cut.content)
    assert _list(fresh, http, per_page=5).content == whole  # the keep-alive connection still works


def test_faults_can_target_a_path_and_queue_over_http(fresh: SandboxStorefront, http: requests.Session) -> None:
    control = requests.post(fresh.base_url + "/__sandbox/faults",
                            json=[{"type": "500", "path": "/orders/1002"}], timeout=10)
    assert control.status_code == 200
    assert _list(fresh, http).status_code == 200  # not the targeted path: the fault waits
    assert http.get(f"{fresh.base_url}{ORDERS_PATH}/1002", timeout=10).status_code == 500
    assert requests.get(fresh.base_url + "/__sandbox/faults", timeout=10).json() == []
    bad = requests.post(fresh.base_url + "/__sandbox/faults", json=[{"type": "boom"}], timeout=10)
    assert bad.status_code == 400


def _naive_offset_client(shop: SandboxStorefront, http: requests.Session, **query: Any) -> list[int]:
    """Pages with page=1,2,... over one fixed query - the client drift is meant to hurt."""
    seen: list[int] = []
    page = 1
    while True:
        resp = _list(shop, http, page=page, **query)
        seen += _ids(resp)
        if page >= int(resp.headers["X-WP-TotalPages"]):
            return seen
        page += 1


def test_drift_makes_a_naive_offset_client_miss_orders(fresh: SandboxStorefront, http: requests.Session,
                                                       orders: list[dict[str, Any]]) -> None:
    bound = _wall(END)
    query = {"per_page": 20, "orderby": "modified", "order": "asc", "dates_are_gmt": "true",
             "modified_after": _wall(START - timedelta(seconds=1)), "modified_before": bound}
    assert sorted(_naive_offset_client(fresh, http, **query)) == sorted(o["id"] for o in orders)

    fresh.reset()
    fresh.inject_faults([{"type": "drift", "count": 3}])
    seen = _naive_offset_client(fresh, http, **query)
    missed = {o["id"] for o in orders} - set(seen)
    assert len(missed) == 3  # the three orders that slid into the gap between pages 1 and 2
    first_page = seen[:20]
    bumped = [i for i in first_page if fresh.get_order(i)["date_modified_gmt"] != orders[i - 1001]["date_modified_gmt"]]
    assert len(bumped) == 3
    for order_id in bumped:
        order = fresh.get_order(order_id)
        assert order["date_modified_gmt"] == _wall(_gmt(bound) - timedelta(seconds=1))
        assert order["date_modified"] == _wall(_gmt(order["date_modified_gmt"]).astimezone(BERLIN))
    assert fresh.pending_faults == []
    # Nothing is lost on the server: a fresh sweep still finds every order.
    assert sorted(_naive_offset_client(fresh, http, **{**query, "per_page": 100})) == sorted(
        o["id"] for o in orders)


def test_drift_waits_until_the_query_has_served_a_page(fresh: SandboxStorefront, http: requests.Session) -> None:
    fresh.inject_faults([{"type": "drift"}])
    _list(fresh, http, orderby="modified", order="asc", page=1)
    assert len(fresh.pending_faults) == 1
    _list(fresh, http, orderby="modified", order="desc", page=2)
    assert len(fresh.pending_faults) == 1  # another query: nothing of it served yet
    _list(fresh, http, orderby="modified", order="asc", page=2)
    assert fresh.pending_faults == []


def test_drift_also_hits_a_keyset_client_moving_its_lower_bound(fresh: SandboxStorefront, http: requests.Session) -> None:
    fresh.inject_faults([{"type": "drift", "count": 2}])
    _list(fresh, http, orderby="modified", order="asc", page=1)
    assert len(fresh.pending_faults) == 1
    _list(fresh, http, orderby="modified", order="asc", modified_after="2026-03-21T00:00:00", page=1)
    assert fresh.pending_faults == []  # same scan, cursor moved: the fault fired


# --- writes ----------------------------------------------------------------------------------------


def test_put_updates_status_and_bumps_date_modified(fresh: SandboxStorefront, http: requests.Session) -> None:
    fresh.test_clock["now"] = datetime(2026, 4, 2, 8, 30, 15, 500, tzinfo=UTC)  # type: ignore[attr-defined]
    resp = http.put(f"{fresh.base_url}{ORDERS_PATH}/1005", json={"status": "completed", "id": 1}, timeout=10)
    assert resp.status_code == 200, resp.text
    order = resp.json()
    assert order["id"] == 1005 and order["status"] == "completed"
    assert order["date_modified_gmt"] == "2026-04-02T08:30:15"
    assert order["date_modified"] == "2026-04-02T10:30:15"  # Berlin, summer time
    assert order["date_completed_gmt"] == "2026-04-02T08:30:15"
    assert fresh.get_order(1005) == order
    newest = _ids(_list(fresh, http, orderby="modified", per_page=1))
    assert newest == [1005]
    assert http.put(f"{fresh.base_url}{ORDERS_PATH}/5", json={"status": "completed"}, timeout=10).status_code == 404
    bad = http.put(f"{fresh.base_url}{ORDERS_PATH}/1005", json={"status": "shipped"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["code"] == "rest_invalid_param"
    assert http.put(f"{fresh.base_url}{ORDERS_PATH}/1005", data=b"{nope", timeout=10).status_code == 400


def test_ids_in_routes_and_bodies_are_ascii_digits_as_in_wordpress(fresh: SandboxStorefront,
                                                                    http: requests.Session) -> None:
    """WordPress routes match ids with PCRE ``\\d`` (ASCII without the ``u`` flag) and ``absint``
    reads ASCII digits only: ``²`` is no route (``str.isdigit`` took it and ``int`` raised: a
    500) and Arabic-Indic ``١٠٠١`` is not order 1001."""
    # A client percent-encodes these, but the server reads a raw request line as Latin-1 (b"\\xb2" is ²).
    for path in ("orders/\u00b2", "orders/\u0661\u0660\u0660\u0661", "orders/\u0661\u0660\u0660\u0661/notes",
                 "products/\u00b2", "products/\u0663/variations", "products/1/variations/\u00b2"):
        resp = fresh.app.route("GET", f"/wp-json/wc/v3/{path}", {}, b"")
        assert (resp.status, json.loads(resp.body)["code"]) == (404, "rest_no_route"), (path, resp.body)
    for path in ("orders/\u00b2", "orders/\u0661\u0660\u0660\u0661", "products/\u00b2"):
        resp = fresh.control("GET", f"/__sandbox/{path}", b"")
        assert (resp.status, json.loads(resp.body)["code"]) == (404, "sandbox_no_route"), (path, resp.body)
    base = f"{fresh.base_url}{ORDERS_PATH}"
    batch = http.post(f"{base}/batch", json={"update": [{"id": "\u0661\u0660\u0661\u0660", "status": "on-hold"}]},
                      timeout=10).json()
    assert batch["update"][0]["error"]["code"] == "woocommerce_rest_shop_order_invalid_id"
    assert _ids(_list(fresh, http, include="\u0661\u0660\u0660\u0661,1002")) == [1002]
    assert fresh.get_order(1010)["status"] != "on-hold"  # type: ignore[index]


def test_notes_can_be_added_and_listed(fresh: SandboxStorefront, http: requests.Session) -> None:
    url = f"{fresh.base_url}{ORDERS_PATH}/1007/notes"
    created = http.post(url, json={"note": "Exported to ERP as batch 42 – ✓"}, timeout=10)
    assert created.status_code == 201
    assert created.json()["note"] == "Exported to ERP as batch 42 – ✓"
    assert created.json()["customer_note"] is False
    http.post(url, json={"note": "Your parcel is on its way", "customer_note": True}, timeout=10)
    notes = http.get(url, timeout=10).json()
    assert [n["customer_note"] for n in notes] == [True, False]  # newest first
    assert [n["note"] for n in http.get(url, params={"type": "customer"}, timeout=10).json()] == [
        "Your parcel is on its way"]
    assert http.post(url, json={}, timeout=10).status_code == 400
    assert http.post(f"{fresh.base_url}{ORDERS_PATH}/9/notes", json={"note": "x"}, timeout=10).status_code == 404


def test_set_paid_completes_payment_only_where_woocommerce_wants_one(fresh: SandboxStorefront,
                                                                      http: requests.Session) -> None:
    base = f"{fresh.base_url}{ORDERS_PATH}"
    for oid, status in ((1011, "pending"), (1012, "on-hold")):
        fresh.upsert_order({**fresh.get_order(oid), "status": status, "date_paid_gmt": None, "date_paid": None,  # type: ignore[dict-item]
                            "transaction_id": ""})
    paid = http.put(f"{base}/1011", json={"set_paid": True, "transaction_id": "PAY-1"}, timeout=10).json()
    assert (paid["status"], paid["transaction_id"], bool(paid["date_paid_gmt"])) == ("processing", "PAY-1", True)
    held = http.put(f"{base}/1012", json={"set_paid": True}, timeout=10).json()
    assert (held["status"], held["date_paid_gmt"]) == ("on-hold", None)  # set_paid does nothing there
    moved = http.put(f"{base}/1012", json={"status": "processing", "transaction_id": "PAY-2"}, timeout=10).json()
    assert (moved["status"], moved["transaction_id"], bool(moved["date_paid_gmt"])) == ("processing", "PAY-2", True)


def test_refunds_follow_wc_create_refund(fresh: SandboxStorefront, http: requests.Session) -> None:
    order = {**fresh.get_order(1013), "status": "processing", "payment_method": "bacs", "refunds": [],  # type: ignore[dict-item]
             "total": "30.00"}
    fresh.upsert_order(order)
    url = f"{fresh.base_url}{ORDERS_PATH}/1013/refunds"
    line = order["line_items"][0]
    # api_refund defaults to true: bank transfer has no gateway refund
    gateway = http.post(url, json={"amount": "10.00"}, timeout=10)
    assert gateway.status_code == 500 and "does not support automatic refunds" in gateway.json()["message"]
    first = http.post(url, json={"amount": "10.00", "api_refund": False, "reason": "r (backend reference CN-1)",
                                 "line_items": [{"id": line["id"], "quantity": 1, "refund_total": "10.00"}],
                                 "meta_data": [{"key": "order_integration_reference", "value": "CN-1"}]},
                     timeout=10)
    assert first.status_code == 201, first.text
    refund = first.json()
    assert (refund["amount"], refund["refunded_payment"], refund["meta_data"][0]["value"]) == ("10.00", False, "CN-1")
    assert [(li["sku"], li["quantity"]) for li in refund["line_items"]] == [(line["sku"], -1)]
    too_much = http.post(url, json={"amount": "20.01", "api_refund": False}, timeout=10)
    assert (too_much.status_code, too_much.json()["message"]) == (500, "Invalid refund amount.")
    assert http.post(url, json={"amount": "-1", "api_refund": False}, timeout=10).status_code == 400
    assert fresh.get_order(1013)["status"] == "processing"  # type: ignore[index]
    assert http.post(url, json={"amount": "20.00", "api_refund": False}, timeout=10).status_code == 201
    after = fresh.get_order(1013)
    assert after is not None and after["status"] == "refunded"
    assert [r["total"] for r in after["refunds"]] == ["-10.00", "-20.00"]
    assert [r["amount"] for r in http.get(url, timeout=10).json()] == ["20.00", "10.00"]  # newest first
    assert http.get(f"{fresh.base_url}{ORDERS_PATH}/9/refunds", timeout=10).status_code == 404


def test_batch_updates_orders_and_caps_at_100(fresh: SandboxStorefront, http: requests.Session) -> None:
    url = f"{fresh.base_url}{ORDERS_PATH}/batch"
    resp = http.post(url, json={"update": [{"id": 1010, "status": "on-hold"}, {"id": 4242, "status": "on-hold"}]},
                     timeout=10)
    assert resp.status_code == 200
    first, second = resp.json()["update"]
    assert first["id"] == 1010 and first["status"] == "on-hold"
    assert second["id"] == 4242 and second["error"]["code"] == "woocommerce_rest_shop_order_invalid_id"
    assert fresh.get_order(1010)["status"] == "on-hold"
    too_many = http.post(url, json={"update": [{"id": 1001, "status": "completed"}] * 101}, timeout=10)
    assert too_many.status_code == 413


# --- control endpoints and in-process helpers -----------------------------------------------------


def test_control_endpoints_upsert_read_and_reset(fresh: SandboxStorefront, http: requests.Session,
                                                 orders: list[dict[str, Any]]) -> None:
    extra = {**orders[0], "id": 5001, "number": "5001", "status": "pending"}
    assert requests.post(fresh.base_url + "/__sandbox/orders", json=[extra], timeout=10).json() == {"upserted": 1}
    assert requests.get(fresh.base_url + "/__sandbox/orders/5001", timeout=10).json()["status"] == "pending"
    assert _list(fresh, http).headers["X-WP-Total"] == "121"
    log = requests.get(fresh.base_url + "/__sandbox/requests", timeout=10).json()
    assert log == [["GET", ORDERS_PATH, 200]]
    assert requests.post(fresh.base_url + "/__sandbox/reset", timeout=10).status_code == 200
    assert fresh.get_order(5001) is None and fresh.request_log == []
    assert _list(fresh, http).headers["X-WP-Total"] == "120"


def test_touch_moves_an_order_to_the_end_of_modified_order(fresh: SandboxStorefront,
                                                           http: requests.Session) -> None:
    fresh.touch_order(1003, END + timedelta(hours=1))
    assert _ids(_list(fresh, http, orderby="modified", per_page=1)) == [1003]
    assert fresh.get_order(1003)["date_modified_gmt"] == _wall(END + timedelta(hours=1))


def test_a_broken_order_without_id_is_still_listed(fresh: SandboxStorefront, http: requests.Session,
                                                   orders: list[dict[str, Any]]) -> None:
    broken = make_invalid({**orders[5], "date_modified_gmt": _wall(END)}, "missing_id")
    fresh.upsert_order(broken)
    newest = _list(fresh, http, orderby="modified", per_page=2).json()
    assert newest[0]["id"] is None and newest[0]["billing"] == broken["billing"]


def test_keep_alive_connections_are_reused(fresh: SandboxStorefront) -> None:
    conn = HTTPConnection(fresh.host, fresh.port, timeout=10)
    token = base64.b64encode(b"ck_sandbox:cs_sandbox").decode()
    sockets = []
    for path in (ORDERS_PATH, f"{ORDERS_PATH}/1001", f"{ORDERS_PATH}?per_page=100"):
        conn.request("GET", path, headers={"Authorization": f"Basic {token}"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Length") is not None
        resp.read()
        sockets.append(conn.sock)
    conn.close()
    assert sockets[0] is not None and sockets.count(sockets[0]) == 3  # one TCP connection served all


def test_cli_serves_generated_orders_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.storefront", "--port", "0", "--orders", "12", "--seed", "3",
         "--start", "2026-03-01T00:00:00Z", "--end", "2026-03-02T00:00:00Z", "--key", "ck_cli", "--secret", "cs_cli"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"sandbox storefront listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        resp = requests.get(match.group(1) + ORDERS_PATH, auth=("ck_cli", "cs_cli"), timeout=10)
        assert resp.headers["X-WP-Total"] == "12"
        expected = generate_orders(12, start=pendulum.datetime(2026, 3, 1, tz="UTC"),
                                   end=pendulum.datetime(2026, 3, 2, tz="UTC"), seed=3)
        assert {o["id"]: o for o in resp.json()} == {o["id"]: o for o in expected if o["id"] in _ids(resp)}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
