"""WooCommerce order → canonical Order: mapping, minor units, and malformed input that never raises."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pendulum
import pytest

from order_integration.model import exported_content
from order_integration.storefronts.woocommerce import WooCommerceClient, normalise_order

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "woocommerce"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def rules(order) -> list[tuple[str, str]]:
    return [(p.rule, p.detail) for p in order.parse_problems]


def test_usd_order_maps_every_field() -> None:
    order = normalise_order(load("order_usd"), "shop-us")

    assert order.parse_problems == ()
    assert (order.store_id, order.order_id, order.order_number, order.status) == (
        "shop-us", "727", "727", "processing"
    )
    assert order.created_at == pendulum.datetime(2026, 11, 29, 10, 15, 30, tz="UTC")
    assert order.updated_at == pendulum.datetime(2026, 11, 29, 10, 20, 1, tz="UTC")
    assert order.updated_at.tzinfo is not None and order.updated_at.utcoffset().total_seconds() == 0
    assert order.currency == "USD"
    assert order.customer_email == "john.doe@example.com"
    assert order.customer_name == "John Doe"
    assert order.billing.phone == "(555) 555-5555"
    ship = order.shipping
    assert (ship.name, ship.company, ship.address1, ship.city, ship.region, ship.postcode, ship.country) == (
        "Jane Doe", "Doe & Co", "1 Harbour Road", "Oakland", "CA", "94607", "US"
    )
    assert order.ship_phone == "(555) 555-5555"  # shipping.phone empty → billing phone
    assert order.customer_note == "Please leave at the back door"
    assert order.needs_shipping is True

    first, second = order.lines
    assert (first.line_number, first.sku, first.product_name, first.quantity) == (1, "TSHIRT-BLK-M", "T-shirt, black, M", 2)
    # unit price before discounts: subtotal / quantity, NOT WooCommerce's post-discount `price` (18)
    assert first.unit_price == Decimal("20.00")
    assert (first.line_subtotal, first.line_total, first.line_tax) == (
        Decimal("40.00"), Decimal("36.00"), Decimal("2.88")
    )
    assert (second.line_number, second.unit_price, second.line_total) == (2, Decimal("15.50"), Decimal("13.95"))

    assert order.subtotal == Decimal("55.50")
    assert order.discount == Decimal("5.55")
    assert order.shipping_total == Decimal("5.00")
    assert order.fees == Decimal("2.50")
    assert order.tax == Decimal("4.60")
    assert order.total == Decimal("62.05")
    # WooCommerce's relation (calculate_totals): subtotal - discount + shipping + fees + tax == total
    assert order.subtotal - order.discount + order.shipping_total + order.fees + order.tax == order.total


def test_jpy_has_no_minor_units() -> None:
    order = normalise_order(load("order_jpy"), "shop-jp")

    assert order.parse_problems == ()
    (line,) = order.lines
    assert line.unit_price == Decimal("333")  # 1000 / 3 rounded to yen
    assert order.fees == Decimal("0")
    content = exported_content(order)
    assert content["lines"][0]["unit_price"] == "333"
    assert (content["order_subtotal"], content["order_total"], content["order_tax"]) == ("1000", "1650", "150")
    assert order.subtotal - order.discount + order.shipping_total + order.fees + order.tax == order.total


def test_kwd_has_three_minor_units() -> None:
    order = normalise_order(load("order_kwd"), "shop-kw")

    assert order.parse_problems == ()
    (line,) = order.lines
    assert line.unit_price == Decimal("6.173")  # 12.345 / 2 = 6.1725, half-up at 3 decimals
    content = exported_content(order)
    assert content["lines"][0]["unit_price"] == "6.173"
    assert content["order_total"] == "13.845"
    assert content["order_shipping"] == "1.500"
    assert order.ship_phone == "+965 5555 6666"  # shipping.phone wins over billing.phone


def test_virtual_order_needs_no_shipping() -> None:
    order = normalise_order(load("order_virtual"), "shop-de")

    assert order.parse_problems == ()
    assert order.needs_shipping is False
    assert order.shipping.is_empty()
    assert order.lines[0].sku == ""  # null SKU (deleted product) → empty
    # refunds are listed separately and do not change total
    assert order.total == Decimal("11.89")
    assert order.subtotal - order.discount + order.shipping_total + order.fees + order.tax == order.total


def test_shipping_address_alone_means_needs_shipping() -> None:
    raw = load("order_virtual")
    raw["shipping"]["address_1"] = "Hauptstr. 1"
    raw["shipping"]["city"] = "Berlin"
    raw["shipping"]["country"] = "DE"
    assert normalise_order(raw, "s").needs_shipping is True


def test_malformed_fields_become_problems_not_exceptions() -> None:
    order = normalise_order(load("order_malformed"), "shop-x")
    problems = rules(order)

    assert order.order_id == ""
    assert ("order_id_present", "id is missing") in problems
    assert order.order_number == "4004"
    assert order.currency == "usd"  # kept as sent; validation judges it
    assert order.created_at is None
    assert ("parseable_date", "date_created_gmt 'yesterday' is not an ISO 8601 time") in problems
    assert order.updated_at == pendulum.datetime(2026, 11, 29, 10, tz="UTC")
    assert order.total is None
    assert ("parseable_money", "total '12,30' is not a decimal amount") in problems
    assert order.shipping_total is None
    assert ("parseable_money", "total_tax is missing") in problems
    assert order.customer_note == ""
    assert order.billing.last_name == "" and order.customer_email == "max@example.com"
    assert ("parseable_address", "shipping is a str, not an object") in problems
    assert order.needs_shipping is True  # it has shipping lines

    widget, gadget, junk, gizmo = order.lines
    assert widget.quantity is None and widget.unit_price is None
    assert widget.line_subtotal == Decimal("10.00")
    assert ("parseable_quantity", "line 1 quantity 2.5 is not an integer") in problems
    assert gadget.quantity is None
    assert ("parseable_quantity", "line 2 quantity 'abc' is not an integer") in problems
    assert (junk.line_number, junk.quantity, junk.line_total) == (3, None, None)
    assert ("parseable_lines", "line 3 is a str, not an object") in problems
    assert gizmo.quantity == 0 and gizmo.sku == "77"
    assert ("parseable_money", "line 4 subtotal 'NaN' is not a decimal amount") in problems
    assert ("parseable_money", "line 4 total {'amount': 1} is not a decimal amount") in problems
    assert ("parseable_money", "line 4 total_tax 'x' is not a decimal amount") in problems
    assert order.subtotal is None  # a line subtotal is unknown, so the sum is too
    assert order.fees is None
    assert ("parseable_money", "fee 1 total 'free' is not a decimal amount") in problems


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [(2, 2), (2.0, 2), ("3", 3), ("3.0", 3), (2.5, None), ("x", None), (None, None), (True, None), ([], None)],
)
def test_quantity_parsing(quantity: object, expected: int | None) -> None:
    raw = load("order_usd")
    raw["line_items"][0]["quantity"] = quantity
    order = normalise_order(raw, "s")
    assert order.lines[0].quantity == expected
    has_problem = any(p.rule == "parseable_quantity" and p.detail.startswith("line 1 quantity") for p in order.parse_problems)
    assert has_problem is (expected is None)


def test_zero_quantity_leaves_unit_price_undefined() -> None:
    raw = load("order_usd")
    raw["line_items"][1]["quantity"] = 0
    order = normalise_order(raw, "s")
    assert order.lines[1].quantity == 0 and order.lines[1].unit_price is None
    assert ("parseable_money", "line 2 unit price is undefined: quantity is 0") in rules(order)


def test_dates_with_offsets_are_converted_to_utc() -> None:
    raw = load("order_usd")
    raw["date_created_gmt"] = "2026-11-29T10:15:30Z"
    raw["date_modified_gmt"] = "2026-11-29T12:20:01+02:00"
    order = normalise_order(raw, "s")
    assert order.created_at == pendulum.datetime(2026, 11, 29, 10, 15, 30, tz="UTC")
    assert order.updated_at == pendulum.datetime(2026, 11, 29, 10, 20, 1, tz="UTC")
    assert order.parse_problems == ()


def test_invalid_currency_keeps_unit_price_unrounded() -> None:
    raw = load("order_usd")
    raw["currency"] = "usd"
    raw["line_items"][1]["subtotal"] = "10.00"
    raw["line_items"][1]["quantity"] = 3
    order = normalise_order(raw, "s")
    assert order.currency == "usd"
    assert order.lines[1].unit_price == Decimal("10.00") / 3  # no minor units to round to


def test_fees_sum_all_fee_lines_and_default_to_zero() -> None:
    raw = load("order_usd")
    raw["fee_lines"].append({"name": "Discount", "total": "-1.25"})
    assert normalise_order(raw, "s").fees == Decimal("1.25")
    raw["fee_lines"] = []
    assert normalise_order(raw, "s").fees == Decimal("0")
    del raw["fee_lines"]
    assert normalise_order(raw, "s").fees == Decimal("0")


def test_missing_line_items_gives_no_lines() -> None:
    raw = load("order_usd")
    del raw["line_items"]
    order = normalise_order(raw, "s")
    assert order.lines == () and order.subtotal == Decimal("0")


WEIRD: list[object] = [None, "", "x", 1.5, -1, True, [], {}, [1, "a"], {"a": None}, "1e999999", float("nan")]
FIELDS = [
    "id", "number", "status", "currency", "date_created_gmt", "date_modified_gmt", "discount_total",
    "shipping_total", "total", "total_tax", "customer_note", "billing", "shipping", "line_items",
    "shipping_lines", "fee_lines",
]


@pytest.mark.parametrize("field", FIELDS)
def test_never_raises_on_weird_values(field: str) -> None:
    base = load("order_usd")
    for value in WEIRD:
        raw = copy.deepcopy(base)
        raw[field] = value
        order = normalise_order(raw, "s")
        assert order.store_id == "s"
    for value in WEIRD:  # inside a line item too
        raw = copy.deepcopy(base)
        for key in ("quantity", "subtotal", "total", "total_tax", "sku", "name"):
            raw["line_items"][0][key] = value
        normalise_order(raw, "s")


@pytest.mark.parametrize("raw", [None, [], "order", 42])
def test_non_object_order_is_a_problem(raw: object) -> None:
    order = normalise_order(raw, "s")  # type: ignore[arg-type]
    assert order.order_id == ""
    assert order.parse_problems[0].rule == "normalisable"


def test_client_normalise_is_normalise_order() -> None:
    raw = load("order_kwd")
    assert WooCommerceClient("unused").normalise(raw, "s") == normalise_order(raw, "s")


def test_absurd_magnitudes_are_problems_not_hangs() -> None:
    raw = load("order_usd")
    raw["total"] = "1e999999"
    raw["line_items"][0]["quantity"] = "1e999999"  # int() of this would take minutes
    order = normalise_order(raw, "s")
    assert order.total is None and order.lines[0].quantity is None
    assert ("parseable_money", "total '1e999999' is out of range") in rules(order)
    assert ("parseable_quantity", "line 1 quantity '1e999999' is not an integer") in rules(order)


def test_an_unexpected_failure_is_logged_with_its_traceback_and_keeps_no_unsafe_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13, defect 6: the last-resort ``except`` logged nothing (a bug looked like bad data),
    and its fallback Order took the raw id as text (``../../x`` became an order id)."""
    import order_integration.storefronts.woocommerce_normalise as woo

    def broken(order, problems, keys) -> None:
        raise RuntimeError("a bug in a check")

    monkeypatch.setattr(woo, "check_text", broken)
    raw = load("order_usd")
    with caplog.at_level("ERROR", logger=woo.__name__):
        order = normalise_order(raw, "demo")
    assert [p.rule for p in order.parse_problems] == ["normalisable"]
    assert order.order_id == str(raw["id"])
    logged = [r for r in caplog.records if r.name == woo.__name__ and r.levelname == "ERROR"]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "RuntimeError: a bug in a check" in caplog.text

    order = normalise_order({**raw, "id": "../../x"}, "demo")
    assert order.order_id == ""
