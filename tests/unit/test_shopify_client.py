"""Shopify: the normaliser (canned Admin GraphQL orders), the throttle arithmetic, every query the
client sends checked against Shopify's real 2026-10 schema, and the store config's defaults."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import pendulum
import pytest

from order_integration.config import parse_config
from order_integration.storefronts import shopify as sc
from order_integration.storefronts.shopify_graphql import Throttle, check_shop_url, throttle_wait
from order_integration.storefronts.shopify_normalise import gid_number, identify, normalise_order, order_gid
from tests.support.shopify_schema import validate_against_shopify

pytestmark = pytest.mark.unit


def _m(amount: str, code: str = "EUR") -> dict:
    return {"shopMoney": {"amount": amount, "currencyCode": code}}


ADDRESS = {"firstName": "Ada", "lastName": "Lovelace", "company": "Engines Ltd", "address1": "1 Main St",
           "address2": None, "city": "London", "province": "England", "provinceCode": "ENG", "zip": "N1 9GU",
           "countryCodeV2": "GB", "phone": "+44 20 7946 0000"}
ORDER = {
    "id": "gid://shopify/Order/5501", "legacyResourceId": "5501", "name": "#1001",
    "createdAt": "2026-12-01T09:00:00Z", "updatedAt": "2026-12-01T10:15:30Z", "cancelledAt": None,
    "displayFinancialStatus": "PARTIALLY_PAID", "currencyCode": "EUR", "email": "ada@example.com",
    "note": "Leave at the door", "billingAddress": ADDRESS,
    "shippingAddress": {**ADDRESS, "phone": None, "firstName": "Charles", "lastName": "Babbage"},
    "taxesIncluded": False, "requiresShipping": True,
    # lines 2 x 12.50 (line discount 2.50) and 1 x 10.00; order discount 1.00 on top
    "subtotalPriceSet": _m("31.50"), "totalDiscountsSet": _m("3.50"), "totalShippingPriceSet": _m("4.90"),
    "totalTaxSet": _m("6.93"), "totalTipReceivedSet": _m("1.00"), "originalTotalDutiesSet": None,
    "originalTotalAdditionalFeesSet": None, "totalPriceSet": _m("44.33"),
    "lineItems": {"nodes": [
        {"id": "gid://shopify/LineItem/1", "sku": "COF-1KG", "name": "Coffee - 1 kg", "quantity": 2,
         "requiresShipping": True, "originalUnitPriceSet": _m("12.50"), "originalTotalSet": _m("25.00"),
         "discountedTotalSet": _m("22.50")},
        {"id": "gid://shopify/LineItem/2", "sku": "MUG", "name": "Mug", "quantity": 1, "requiresShipping": True,
         "originalUnitPriceSet": _m("10.00"), "originalTotalSet": _m("10.00"), "discountedTotalSet": _m("10.00")},
    ]},
}


def rules(order):
    return [p.rule for p in order.parse_problems]


def details(order):
    return " | ".join(p.detail for p in order.parse_problems)


def test_the_status_syncs_marker_lines_are_not_the_customers_note():
    """Our marker lines on the order note are no new order version: no echo to the backend."""
    from order_integration.storefronts.shopify_status import marker_line

    plain = normalise_order(copy.deepcopy(ORDER) | {"note": "Leave at the door"}, "shop")
    marked = normalise_order(copy.deepcopy(ORDER) | {
        "note": f"Leave at the door\n{marker_line('Accepted by the backend on 2026-11-29 10:00 UTC.')}"}, "shop")
    assert marked.customer_note == "Leave at the door" and marked.version == plain.version
    staff = normalise_order(copy.deepcopy(ORDER) | {"note": "Leave at the door\nCall first"}, "shop")
    assert staff.version != plain.version, "a person's edit of the note is a change"


@pytest.mark.parametrize("changes", [
    {}, {"cancelledAt": "2026-12-01T11:00:00Z"}, {"displayFinancialStatus": None},
    {"displayFinancialStatus": "Pending "}, {"legacyResourceId": None}, {"legacyResourceId": "55O1"},
    {"id": "gid://shopify/Order/5502"}, {"id": None}, {"displayFinancialStatus": 7},
    {"lineItems": "broken", "totalPriceSet": "x"},
])
def test_identify_gives_the_id_and_status_normalise_gives(changes):
    raw = copy.deepcopy(ORDER) | changes
    order = normalise_order(copy.deepcopy(raw), "shop")
    assert identify(raw) == (order.order_id, order.status)
    assert identify([]) == (normalise_order([], "shop").order_id, normalise_order([], "shop").status) == ("", "")


def test_a_shopify_order_becomes_the_canonical_order():
    order = normalise_order(copy.deepcopy(ORDER), "shop")
    assert order.parse_problems == ()
    assert (order.order_id, order.order_number, order.status, order.currency) == ("5501", "#1001",
                                                                                   "partially_paid", "EUR")
    assert order.customer_email == "ada@example.com" and order.customer_name == "Ada Lovelace"
    assert order.shipping.name == "Charles Babbage" and order.ship_phone == "+44 20 7946 0000"
    assert order.shipping.region == "ENG" and order.shipping.country == "GB" and order.customer_note
    line = order.lines[0]
    assert (line.sku, line.quantity, line.unit_price, line.line_total) == ("COF-1KG", 2, Decimal("12.50"),
                                                                           Decimal("22.50"))
    assert (order.subtotal, order.discount, order.shipping_total, order.fees, order.tax, order.total) == (
        Decimal("35.00"), Decimal("3.50"), Decimal("4.90"), Decimal("1.00"), Decimal("6.93"), Decimal("44.33"))
    assert order.subtotal - order.discount + order.shipping_total + order.fees + order.tax == order.total
    assert str(order.updated_at) == "2026-12-01 10:15:30+00:00" and order.needs_shipping


def _taxed(rate: str | None, amount: str) -> list[dict]:
    return [{"rate": None if rate is None else float(rate), "priceSet": _m(amount)}]


def _vat_order(**changes) -> dict:
    """A UK shop (prices include 20% VAT): 2 x 12.00 with 2.40 off the line, 1 x 6.00, shipping 6.00."""
    raw = copy.deepcopy(ORDER) | {"taxesIncluded": True, "currencyCode": "GBP", "totalTipReceivedSet": None}
    raw["lineItems"]["nodes"] = [
        {"id": "gid://shopify/LineItem/1", "sku": "TEA", "name": "Tea", "quantity": 2, "requiresShipping": True,
         "originalUnitPriceSet": _m("12.00", "GBP"), "originalTotalSet": _m("24.00", "GBP"),
         "discountedTotalSet": _m("21.60", "GBP"), "taxLines": [{"rate": 0.2, "priceSet": _m("3.60", "GBP")}]},
        {"id": "gid://shopify/LineItem/2", "sku": "CUP", "name": "Cup", "quantity": 1, "requiresShipping": True,
         "originalUnitPriceSet": _m("6.00", "GBP"), "originalTotalSet": _m("6.00", "GBP"),
         "discountedTotalSet": _m("6.00", "GBP"), "taxLines": [{"rate": 0.2, "priceSet": _m("1.00", "GBP")}]},
    ]
    raw |= {"subtotalPriceSet": _m("27.60", "GBP"), "totalDiscountsSet": _m("2.40", "GBP"),
            "totalShippingPriceSet": _m("6.00", "GBP"), "totalTaxSet": _m("5.60", "GBP"),
            "totalPriceSet": _m("33.60", "GBP")}
    return raw | changes


def _amounts(order):
    return ([(line.unit_price, line.line_total, line.line_tax) for line in order.lines],
            (order.subtotal, order.discount, order.shipping_total, order.fees, order.tax, order.total))


def test_prices_that_include_tax_are_written_before_tax_as_the_orders_file_says():
    """Discount on a line only: Shopify's line tax is exactly the tax of line_total; shipping's tax
    is what the lines do not carry; the net discount is 2.40 / 1.2."""
    order = normalise_order(_vat_order(), "uk")
    assert order.parse_problems == (), details(order)
    D = Decimal
    assert _amounts(order) == (
        [(D("10.00"), D("18.00"), D("3.60")), (D("5.00"), D("5.00"), D("1.00"))],
        (D("25.00"), D("2.00"), D("5.00"), D("0"), D("5.60"), D("33.60")),
    )
    assert order.subtotal - order.discount + order.shipping_total + order.fees + order.tax == order.total


def test_an_order_level_discount_under_included_tax_is_taken_out_at_the_lines_rate():
    """3.00 off the order (not on a line): Shopify's tax 4.50 is on 27.00, so the line's net is
    extracted at its rate (30.00 -> 25.00) and the net discount is 2.50."""
    raw = _vat_order()
    raw["lineItems"]["nodes"] = [raw["lineItems"]["nodes"][1] | {
        "quantity": 1, "originalUnitPriceSet": _m("30.00", "GBP"), "originalTotalSet": _m("30.00", "GBP"),
        "discountedTotalSet": _m("30.00", "GBP"), "taxLines": [{"rate": 0.2, "priceSet": _m("4.50", "GBP")}]}]
    raw |= {"totalDiscountsSet": _m("3.00", "GBP"), "totalShippingPriceSet": _m("0.00", "GBP"),
            "totalTaxSet": _m("4.50", "GBP"), "totalPriceSet": _m("27.00", "GBP")}
    order = normalise_order(raw, "uk")
    assert order.parse_problems == (), details(order)
    D = Decimal
    assert _amounts(order) == ([(D("25.00"), D("25.00"), D("4.50"))],
                               (D("25.00"), D("2.50"), D("0.00"), D("0"), D("4.50"), D("27.00")))


def test_tax_included_without_a_discount_needs_no_rates_and_a_tax_exempt_order_is_its_gross():
    raw = _vat_order()
    raw["lineItems"]["nodes"][0] |= {"discountedTotalSet": _m("24.00", "GBP"),
                                     "taxLines": [{"rate": None, "priceSet": _m("4.00", "GBP")}]}
    raw |= {"totalDiscountsSet": _m("0.00", "GBP"), "totalTaxSet": _m("6.00", "GBP"),
            "totalPriceSet": _m("36.00", "GBP")}
    order = normalise_order(raw, "uk")
    assert order.parse_problems == (), details(order)
    assert (order.subtotal, order.discount, order.shipping_total, order.tax) == (
        Decimal("25.00"), Decimal(0), Decimal("5.00"), Decimal("6.00"))
    exempt = _vat_order(totalDiscountsSet=_m("0.00", "GBP"), totalTaxSet=_m("0.00", "GBP"),
                        totalPriceSet=_m("36.00", "GBP"))
    for line in exempt["lineItems"]["nodes"]:
        line |= {"discountedTotalSet": line["originalTotalSet"], "taxLines": []}
    order = normalise_order(exempt, "uk")
    assert order.parse_problems == () and (order.subtotal, order.shipping_total, order.tax) == (
        Decimal("30.00"), Decimal("6.00"), Decimal("0.00"))


@pytest.mark.parametrize(("change", "says"), [
    (lambda o: o["lineItems"]["nodes"][0].update(taxLines=[{"rate": None, "priceSet": _m("3.60", "GBP")}]),
     "line 1: prices include tax, the order has discounts and the line's tax lines have no rate"),
    (lambda o: o.update(totalTaxSet=_m("12.60", "GBP")),
     "totalTaxSet 12.60 less the lines' tax 4.60 leaves 8.00 for shipping, whose price is 6.00"),
    (lambda o: o.update(totalTaxSet=_m("4.00", "GBP")), "leaves -0.60 for shipping"),
    (lambda o: o.update(totalPriceSet=_m("40.00", "GBP")), "the net discount derived is -4.40"),
    (lambda o: o.update(currencyCode="XXX"), "currency 'XXX' has no known decimals"),
])
def test_included_tax_that_cannot_be_taken_out_quarantines_the_order_with_the_figures(change, says):
    raw = _vat_order()
    if "XXX" in says:
        raw = json.loads(json.dumps(raw).replace('"GBP"', '"XXX"'))
    change(raw)
    order = normalise_order(raw, "uk")
    assert "tax_included_prices" in rules(order) and says in details(order), details(order)


@pytest.mark.parametrize(("status", "cancelled", "expected"), [
    ("PAID", None, "paid"), ("AUTHORIZED", None, "authorized"), ("PARTIALLY_REFUNDED", None, "partially_refunded"),
    ("VOIDED", None, "voided"), ("PAID", "2026-12-01T11:00:00Z", "cancelled"),
])
def test_status_is_cancelled_or_the_financial_status_in_snake_case(status, cancelled, expected):
    raw = {**copy.deepcopy(ORDER), "displayFinancialStatus": status, "cancelledAt": cancelled}
    assert normalise_order(raw, "s").status == expected


def test_the_gid_and_the_legacy_id_must_name_one_order():
    assert order_gid(5501) == "gid://shopify/Order/5501" and gid_number("gid://shopify/Order/5501") == 5501
    assert gid_number("gid://shopify/LineItem/5501") is None and gid_number("5501") is None
    bad = normalise_order({**copy.deepcopy(ORDER), "id": "gid://shopify/Order/9"}, "s")
    assert rules(bad) == ["order_id_present"] and bad.order_id == ""


@pytest.mark.parametrize(("change", "rule", "field"), [
    (lambda o: o["totalPriceSet"]["shopMoney"].update(amount="44,33"), "parseable_money", "totalPriceSet"),
    (lambda o: o["totalTaxSet"]["shopMoney"].update(amount="1e3"), "parseable_money", "totalTaxSet"),
    (lambda o: o.update(totalDiscountsSet="3.50"), "parseable_money", "totalDiscountsSet"),
    (lambda o: o["lineItems"]["nodes"][1].update(quantity="1.5"), "parseable_quantity", "line 2 quantity"),
    (lambda o: o["lineItems"]["nodes"][0]["originalUnitPriceSet"]["shopMoney"].update(currencyCode="USD"),
     "currency_consistent", "line 1 originalUnitPriceSet"),
    (lambda o: o.update(legacyResourceId="../5501"), "order_id_present", "legacyResourceId"),
    (lambda o: o.update(updatedAt="yesterday"), "parseable_date", "updatedAt"),
    (lambda o: o.update(lineItems=[1, 2]), "parseable_lines", "lineItems"),
    (lambda o: o["lineItems"].update(pageInfo={"hasNextPage": True}), "parseable_lines", "lineItems"),
    (lambda o: o.update(billingAddress="Baker Street"), "parseable_address", "billingAddress"),
    (lambda o: o.update(displayFinancialStatus=None), "status_present", "displayFinancialStatus"),
    (lambda o: o.update(taxesIncluded=True), "tax_included_prices", "without its taxLines"),
    (lambda o: o.update(note="a\u202eb"), "safe_text", "customer_note"),
    (lambda o: o.update(createdAt="2026-12-02T00:00:00Z"), "plausible_date", "createdAt"),
])
def test_malformed_values_become_problems_naming_the_field(change, rule, field):
    raw = copy.deepcopy(ORDER)
    change(raw)
    order = normalise_order(raw, "s")
    assert rule in rules(order), details(order)
    assert field in details(order)


@pytest.mark.parametrize("raw", [None, [], "order", {"lineItems": {"nodes": [None]}}, {"totalPriceSet": 3}])
def test_the_normaliser_never_raises(raw):
    order = normalise_order(raw, "s")
    assert order.parse_problems


# -- throttle arithmetic --------------------------------------------------------------------

def test_the_wait_is_exactly_what_the_bucket_lacks_over_its_restore_rate():
    assert throttle_wait(752, 666, 50) == pytest.approx(1.72)  # Shopify's THROTTLED example
    assert throttle_wait(100, 666, 50) == 0
    assert throttle_wait(752, 666, 50, elapsed=1.0) == pytest.approx(0.72)
    assert throttle_wait(752, 666, 50, elapsed=10) == 0
    assert throttle_wait(900, 0, 100, elapsed=100, maximum=1000) == 0
    assert throttle_wait(1000, 950, 100, elapsed=100, maximum=1000) == 0
    status = Throttle.from_cost({"throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 100,
                                                    "restoreRate": 100.0}}, at=10.0)
    assert status is not None and status.wait_for(352, now=11.0) == pytest.approx(1.52)
    with pytest.raises(ValueError, match="can never run"):
        throttle_wait(1200, 0, 100, maximum=1000)
    with pytest.raises(ValueError, match="does not refill"):
        throttle_wait(10, 0, 0)
    assert Throttle.from_cost({"requestedQueryCost": 3}, at=0) is None


def test_detail_queries_stay_within_shopifys_cost_limit():
    assert sc.detail_cost(8, 10, True) <= 1000 < sc.detail_cost(9, 10, True)
    sc.ShopifyClient("x")  # the defaults fit
    with pytest.raises(Exception, match="above Shopify's 1000"):
        sc.ShopifyClient("x", details_batch=50, lines_per_order=50)


# -- the queries against Shopify's real schema -----------------------------------------------

@pytest.mark.parametrize("extended", [True, False])
def test_every_query_the_client_sends_is_valid_in_shopifys_schema(extended):
    queries = {
        sc.SCAN_QUERY: {"first": 250, "after": None, "query": sc.window_filter(1764579600, 1764583200)},
        sc.COUNT_QUERY: {"query": "updated_at:>='2026-12-01T10:00:00Z'", "limit": 10001},
        sc.SCOPES_QUERY: {},
        sc.details_query(extended): {"ids": [order_gid(1)], "lines": 10},
        sc.LINES_QUERY: {"id": order_gid(1), "first": 250, "after": "abc"},
        sc.BULK_RUN_MUTATION: {"query": sc.bulk_query(1764579600, 1764583200, extended)},
        sc.BULK_POLL_QUERY: {"id": "gid://shopify/BulkOperation/1"},
        sc.BULK_CANCEL_MUTATION: {"id": "gid://shopify/BulkOperation/1"},
        sc.bulk_query(1764579600, 1764583200, extended): None,
    }
    for query, variables in queries.items():
        assert validate_against_shopify(query, variables) == [], query


def test_the_window_filter_is_inclusive_start_exclusive_end_in_utc():
    ten = int(pendulum.datetime(2026, 12, 1, 10).timestamp())
    assert sc.window_filter(ten, ten + 3600) == (
        "updated_at:>='2026-12-01T10:00:00Z' updated_at:<'2026-12-01T11:00:00Z'")


@pytest.mark.parametrize("host", ["https://shop.example.com", "https://evil.com/x.myshopify.com",
                                  "https://a.myshopify.com/admin", "http://a.myshopify.com"])
def test_only_a_myshopify_origin_or_loopback_gets_the_token(host):
    with pytest.raises(Exception, match="host"):
        check_shop_url(host, "c")
    check_shop_url("https://my-shop.myshopify.com", "c")
    check_shop_url("http://127.0.0.1:8080", "c")


# -- store config ---------------------------------------------------------------------------

def test_a_shopify_store_exports_paid_partially_paid_and_authorized_by_default():
    store = {"id": "s", "storefront_conn_id": "a", "backend_conn_id": "b"}
    config = parse_config({"stores": [{**store, "platform": "shopify"}, {**store, "id": "w"}]})
    assert config.stores[0].export_statuses == ("paid", "partially_paid", "authorized")
    assert config.stores[1].export_statuses == ("processing", "on-hold")
    explicit = parse_config({"stores": [{**store, "platform": "shopify", "export_statuses": ["paid"]}]})
    assert explicit.stores[0].export_statuses == ("paid",)
