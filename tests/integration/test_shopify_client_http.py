"""The Shopify read client against the Shopify sandbox over real HTTP (sandbox/shopify_admin).

The sandbox answers Shopify's real 2026-10 schema subset, the extended order fields
(``taxesIncluded``, ``requiresShipping``, tips, duties, additional fees) included; every query the
client sends is also validated against Shopify's real schema in tests/unit/test_shopify_client.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pendulum
import pytest

from order_integration.currency import to_minor
from order_integration.exceptions import ConfigError, StorefrontAuthError, StorefrontError
from order_integration.storefronts import get_client, get_status_applier, get_stock_client
from order_integration.storefronts.shopify import ShopifyClient
from sandbox.generator import generate_orders
from sandbox.shopify_admin import SandboxShopify

pytestmark = pytest.mark.integration

CONN_ID = "shopify_it"
TOKEN = "shpat_it"
NOW = datetime.now(UTC).replace(microsecond=0)
START = pendulum.instance(NOW - timedelta(hours=3))
END = pendulum.instance(NOW - timedelta(minutes=1))
ORDERS = generate_orders(120, start=START, end=END, seed=11)


def _in_window(order, start, end):
    modified = pendulum.parse(order["date_modified_gmt"] + "Z")
    return start <= modified < end


@pytest.fixture
def shop(monkeypatch):
    with SandboxShopify(ORDERS, token=TOKEN) as s:
        _connect(monkeypatch, s.base_url)
        yield s


def _connect(monkeypatch, host, **extra):
    conn = {"conn_type": "http", "host": host, "password": TOKEN}
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


def client(**kwargs):
    kwargs.setdefault("settle_seconds", 0)
    kwargs.setdefault("sleep", lambda _s: None)
    return ShopifyClient(CONN_ID, **kwargs)


def ids(orders):
    return [int(o["legacyResourceId"]) for o in orders]


def expected(start, end):
    return sorted(o["id"] for o in ORDERS if _in_window(o, start, end))


def test_the_registry_gives_the_shopify_client(shop):
    assert type(get_client("shopify", CONN_ID)).__name__ == "ShopifyClient"


def test_the_packages_own_extras_are_never_sent_as_headers_by_any_role(shop, monkeypatch):
    """HttpHook turns a connection's unknown extras into headers; a number there is an invalid
    header value (requests raises InvalidHeader before sending), so every role must take the
    package's extras off the session."""
    _connect(monkeypatch, shop.base_url, api_version="2026-10", bulk_threshold=5000, index_settle_seconds=0)
    order_id = ORDERS[0]["id"]
    with get_status_applier("shopify", CONN_ID) as applier:
        assert set(applier.read_orders([order_id])) == {order_id}
    with get_stock_client("shopify", CONN_ID) as stock:
        stock.lookup(["NO-SUCH-SKU"])
    reader = client()
    assert reader.bulk_threshold == 5000
    list(reader.iter_orders(pendulum.datetime(2026, 11, 2, 9, tz="UTC"), pendulum.datetime(2026, 11, 2, 10, tz="UTC")))


def test_a_window_gives_each_order_once_in_its_latest_version_and_normalises(shop):
    pages = []
    got = list(client(on_page=lambda *a: pages.append(a), per_page=17).iter_orders(START, END))
    assert sorted(ids(got)) == expected(START, END)
    assert len(set(ids(got))) == len(got)
    assert pages and pages[-1][1] == len(got)
    order = client().normalise(got[0], "demo")
    assert order.order_id == got[0]["legacyResourceId"]
    problems = [p for o in got for p in client().normalise(o, "demo").parse_problems]
    assert problems == []


def test_adjacent_windows_partition_at_the_edges(shop):
    edge = pendulum.parse(ORDERS[40]["date_modified_gmt"] + "Z")  # an order exactly at the edge
    left = ids(client().iter_orders(START, edge))
    right = ids(client().iter_orders(edge, END))
    assert ORDERS[40]["id"] in right and ORDERS[40]["id"] not in left
    assert sorted(left + right) == expected(START, END)
    assert not set(left) & set(right)


def test_the_paging_cap_is_worked_around_by_restarting_the_filter(shop):
    shop.state.paging_cap = 30  # Shopify: 25,000; the client restarts before reaching it
    got = ids(client(per_page=10, paging_cap=30).iter_orders(START, END))
    assert sorted(got) == expected(START, END)


def test_orders_edited_during_the_scan_are_not_lost(shop):
    # every page moves the first not-yet-read order out of the window (to now): the scan must
    # still return every order that stays in the window, and nothing twice
    moved: list[int] = []
    remaining = [o["id"] for o in sorted(ORDERS, key=lambda o: o["date_modified_gmt"]) if _in_window(o, START, END)]

    def on_page(pages, _orders, _total):
        if pages % 2 == 0 and pages <= 8:  # scan pages only (the details batches follow)
            victim = remaining.pop(len(remaining) // 2)
            shop.touch_order(victim, datetime.now(UTC) + timedelta(seconds=5), note=f"edit {pages}")
            moved.append(victim)

    got = client(per_page=10, on_page=on_page).iter_orders(START, END)
    got = list(got)
    stayed = set(expected(START, END)) - set(moved)
    assert stayed <= set(ids(got))
    assert len(set(ids(got))) == len(got)
    for order in got:  # the details are the latest version
        if int(order["legacyResourceId"]) in moved:
            assert order["note"].startswith("edit")


def test_an_order_the_index_has_not_caught_up_with_is_found_after_the_settle_wait(shop):
    import time

    shop.set_index_lag(2.0)
    edge_end = pendulum.now("UTC").add(seconds=1).replace(microsecond=0)
    victim = ORDERS[5]["id"]
    shop.touch_order(victim, datetime.now(UTC).replace(microsecond=0), note="late")  # just before the end
    c = client(settle_seconds=3, sleep=time.sleep)
    got = ids(c.iter_orders(START, edge_end))
    assert victim in got


def test_without_the_settle_wait_the_lagging_index_would_hide_the_order(shop):
    # the reason for the wait, shown: the filter alone does not see the edit yet
    shop.set_index_lag(30.0)
    victim = ORDERS[5]["id"]
    shop.touch_order(victim, datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2), note="late")
    end = pendulum.now("UTC")
    got = ids(client(settle_seconds=0).iter_orders(pendulum.now("UTC").subtract(minutes=5), end))
    assert victim not in got


def test_a_window_that_is_not_over_is_refused(shop):
    with pytest.raises(StorefrontError, match="not over yet"):
        list(client(settle_seconds=5).iter_orders(START, pendulum.now("UTC").add(hours=1)))


def test_a_large_window_goes_through_a_bulk_operation(shop):
    c = client(bulk="auto", bulk_threshold=50, bulk_poll_seconds=0.05)
    got = list(c.iter_orders(START, END))
    assert c.last_path == "bulk"
    assert sorted(ids(got)) == expected(START, END)
    scanned = {o["legacyResourceId"]: o for o in client(bulk="never").iter_orders(START, END)}
    for order in got:  # the same raw shape, lines included
        a, b = client().normalise(order, "s"), client().normalise(scanned[order["legacyResourceId"]], "s")
        assert a.record() == b.record()


@pytest.mark.parametrize("bulk", ["never", "always"])
def test_a_shop_whose_prices_include_tax_gives_the_same_net_orders_as_one_whose_prices_exclude_it(
    monkeypatch, bulk
):
    """The same generated orders in a tax-inclusive shop (gross prices, as in the EU) and a
    tax-exclusive one: the net amounts the orders file needs come out the same -- tax, shipping,
    total and line totals exactly (the sandbox's discounts are on the lines, so Shopify's own line
    tax applies), the rest within a cent a line (tax taken out at the rate) -- and GX validation
    passes every order."""
    from order_integration.validation import validate_orders

    orders = {}
    for included in (False, True):
        with SandboxShopify(ORDERS, token=TOKEN, taxes_included=included) as s:
            _connect(monkeypatch, s.base_url)
            c = client(bulk=bulk, bulk_poll_seconds=0.05)
            orders[included] = {
                o.order_id: o for o in (c.normalise(raw, "eu") for raw in c.iter_orders(START, END))
            }
    assert orders[True].keys() == orders[False].keys() and len(orders[True]) == len(expected(START, END))
    discounted = 0
    for order_id, net in orders[False].items():
        gross = orders[True][order_id]
        assert gross.parse_problems == (), (order_id, gross.parse_problems)
        assert (gross.tax, gross.total, gross.shipping_total, gross.fees) == (
            net.tax, net.total, net.shipping_total, net.fees)
        assert [(g.line_total, g.line_tax) for g in gross.lines] == [(n.line_total, n.line_tax) for n in net.lines]
        cur = net.currency
        cents = [abs(to_minor(g.line_subtotal, cur) - to_minor(n.line_subtotal, cur))
                 for g, n in zip(gross.lines, net.lines, strict=True)]
        assert max(cents) <= 1, (order_id, cents)
        assert abs(to_minor(gross.discount, cur) - to_minor(net.discount, cur)) <= len(net.lines)
        assert gross.subtotal - gross.discount + gross.shipping_total + gross.fees + gross.tax == gross.total
        discounted += bool(net.discount)
    assert discounted, "the generated window should hold discounted orders"
    outcome = validate_orders(list(orders[True].values()))
    assert outcome.invalid == {} and len(outcome.valid) == len(orders[True])


def test_a_failed_bulk_operation_raises_and_never_uses_partial_data(shop):
    shop.inject_faults([{"type": "bulk_partial"}])
    with pytest.raises(StorefrontError, match="partial results are never used"):
        list(client(bulk="always", bulk_poll_seconds=0.05).iter_orders(START, END))


def test_throttled_queries_wait_for_the_bucket_and_succeed(shop):
    import time

    # a scan page asks for 252 points (first: 250), a bucket of 300 holds one: the client waits
    shop.set_bucket(300, 200)
    waits = []
    got = ids(client(sleep=lambda s: (waits.append(s), time.sleep(s))).iter_orders(START, END))
    assert sorted(got) == expected(START, END)
    assert any(w > 0 for w in waits)
    shop.inject_faults([{"type": "throttled", "cost": 253}])
    assert sorted(ids(client().iter_orders(START, END))) == expected(START, END)


def test_transient_faults_are_retried_and_too_many_give_up(shop):
    shop.inject_faults([{"type": "502"}, {"type": "429", "retry_after": 0}, {"type": "internal"},
                        {"type": "truncated"}])
    assert sorted(ids(client().iter_orders(START, END))) == expected(START, END)
    shop.inject_faults([{"type": "500"}] * 3)
    with pytest.raises(StorefrontError, match="giving up after 3 attempts"):
        list(client(max_attempts=3).iter_orders(START, END))


def test_a_broken_cursor_restarts_the_scan_without_losing_orders(shop):
    shop.inject_faults([{"type": "broken_cursor"}])
    assert sorted(ids(client(per_page=10).iter_orders(START, END))) == expected(START, END)


def test_a_wrong_token_is_refused_at_once(shop, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}",
                       json.dumps({"conn_type": "http", "host": shop.base_url, "password": "wrong"}))
    with pytest.raises(StorefrontAuthError, match="HTTP 401"):
        list(client().iter_orders(START, END))


def test_a_missing_scope_is_refused_naming_it(shop):
    shop.set_scopes(["read_products"])
    with pytest.raises(StorefrontAuthError, match="read_orders"):
        list(client().iter_orders(START, END))


def test_a_window_older_than_60_days_without_read_all_orders_is_an_error_not_zero_orders(shop):
    shop.set_scopes(["read_orders"])
    old = pendulum.now("UTC").subtract(days=90)
    with pytest.raises(StorefrontAuthError, match="read_all_orders"):
        list(client().iter_orders(old, old.add(hours=1)))


def test_an_unsupported_api_version_says_which_and_what_the_shop_answered(shop, monkeypatch):
    _connect(monkeypatch, shop.base_url, api_version="2025-10")
    with pytest.raises(ConfigError, match="asked for Admin API version 2025-10 but the shop answered with 2026-01"):
        list(client().iter_orders(START, END))
    _connect(monkeypatch, shop.base_url, api_version="2031-01")
    with pytest.raises(StorefrontError, match="HTTP 404"):
        list(client().iter_orders(START, END))


def test_fetch_orders_by_id_leaves_unknown_ids_out(shop):
    wanted = [ORDERS[3]["id"], 999_999, ORDERS[7]["id"], ORDERS[3]["id"]]
    got = list(client(details_batch=1).fetch_orders(wanted))
    assert ids(got) == [ORDERS[3]["id"], ORDERS[7]["id"]]


# -- Dev Dashboard apps: client ID and secret, tokens by the client credentials grant ---------------

APP_ID, APP_SECRET = "c0ffee0123456789", "shpss_sandbox_secret"


def _connect_app(monkeypatch, host, secret=APP_SECRET, login=APP_ID):
    conn = {"conn_type": "http", "host": host, "login": login, "password": secret}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


@pytest.fixture
def app_shop(monkeypatch):
    with SandboxShopify(ORDERS, token=TOKEN, apps={APP_ID: APP_SECRET}, token_lifetime=600) as s:
        _connect_app(monkeypatch, s.base_url)
        yield s


def test_a_dev_dashboard_app_gets_its_token_with_the_client_credentials_grant(app_shop):
    c = client()
    assert sorted(ids(c.iter_orders(START, END))) == expected(START, END)
    assert app_shop.grants == 1 and c.tokens_obtained == 1, "one token for the whole run"
    grant = next(r for r in app_shop.state.log if r["path"] == "/admin/oauth/access_token")
    assert "grant_type=client_credentials" in grant["body"] and grant["status"] == 200
    queries = [r for r in app_shop.state.log if r["path"].endswith("/graphql.json")]
    assert queries and all(r["status"] == 200 and APP_SECRET not in r["body"] for r in queries)


def test_a_token_about_to_expire_is_replaced_before_the_next_query(app_shop):
    clock = [1000.0]
    c = client(monotonic=lambda: clock[0])
    c.execute("{ shop { name } }", operation="Shop")
    clock[0] += 600 - 300 - 1  # still more than TOKEN_MARGIN_SECONDS (300) to live
    c.execute("{ shop { name } }", operation="Shop")
    assert app_shop.grants == 1
    clock[0] += 2
    c.execute("{ shop { name } }", operation="Shop")
    assert app_shop.grants == 2


def test_a_token_revoked_before_its_time_is_replaced_once(app_shop):
    c = client()
    c.execute("{ shop { name } }", operation="Shop")
    with app_shop.state.lock:  # the app's token is revoked; the shop's own token stays
        app_shop.state.tokens = {TOKEN: app_shop.state.tokens[TOKEN]}
    assert c.execute("{ shop { name } }", operation="Shop")["shop"]["name"]
    assert app_shop.grants == 2 and [r["status"] for r in app_shop.state.log][-3:] == [401, 200, 200]


@pytest.mark.parametrize(("secret", "refusal", "says"), [
    ("shpss_wrong", "", "HTTP 400 invalid_client: Client credentials are invalid"),
    (APP_SECRET, "shop_not_permitted", "HTTP 400 shop_not_permitted: Client credentials cannot be performed"),
])
def test_a_refused_grant_fails_at_once_with_shopifys_words(app_shop, monkeypatch, secret, refusal, says):
    _connect_app(monkeypatch, app_shop.base_url, secret=secret)
    app_shop.grant_refusal = refusal
    with pytest.raises(StorefrontAuthError, match="client credentials grant") as caught:
        list(client().iter_orders(START, END))
    assert says in str(caught.value) and secret not in str(caught.value)
    assert app_shop.grants == 0 and len(app_shop.state.log) == 1, "refused at once, not retried"


def test_an_access_token_in_password_is_used_as_such_even_with_a_login(app_shop, monkeypatch):
    _connect_app(monkeypatch, app_shop.base_url, secret=TOKEN)
    c = client()
    c.execute("{ shop { name } }", operation="Shop")
    assert app_shop.grants == 0 and c.tokens_obtained == 0


def test_a_host_outside_myshopify_is_refused_before_any_request(monkeypatch):
    _connect(monkeypatch, "https://shop.example.com")
    with pytest.raises(ConfigError, match=r"myshopify\.com"):
        list(client().iter_orders(START, END))
