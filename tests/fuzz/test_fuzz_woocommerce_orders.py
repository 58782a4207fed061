"""Property tests of the WooCommerce order normaliser and the orders file (outside data: the
storefront's JSON).

Properties: ``normalise_order`` never raises, whatever the JSON (valid-ish orders with random
field mutations, any JSON value); every normalised order has a record and a version (the
quarantine keys on it); an order without parse problems goes through ``write_orders`` and back
through a CSV reader with its money unchanged — exactly, when the store writes the currency's
minor units; rounded half-up to them when it writes more (the contract) — and its text cells
unchanged but for the formula guard; the JSONL line is the record.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from order_integration.backend.formats import guard_cell, write_orders
from order_integration.currency import MINOR_UNITS, is_valid_currency, quantize
from order_integration.model import CSV_COLUMNS, Order
from order_integration.storefronts.woocommerce import normalise_order
from tests.fuzz.strategies import hostile_text

pytestmark = pytest.mark.fuzz

CURRENCIES = ["USD", "EUR", "JPY", "KWD", "CLF", "BHD", "usd", "XXX", "", "€"]
#: raw key -> (Order attribute, CSV column)
ORDER_MONEY = {"total": ("total", "order_total"), "total_tax": ("tax", "order_tax"),
               "discount_total": ("discount", "order_discount"),
               "shipping_total": ("shipping_total", "order_shipping")}
#: Text a shop really holds (letters, digits, punctuation, symbols, spaces: no controls).
shop_text = st.text(st.characters(categories=("L", "M", "N", "P", "S", "Zs")), max_size=30)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=True, allow_infinity=True), hostile_text())
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(hostile_text(10), inner, max_size=3)), max_leaves=8)


def money(places: int) -> st.SearchStrategy[str]:
    """A WooCommerce money string (``wc_format_decimal``): a plain decimal with ``places`` decimals."""
    return st.decimals(min_value=-(10**9), max_value=10**12, places=places,
                       allow_nan=False, allow_infinity=False).map(lambda d: f"{d:f}")


@st.composite
def wc_orders(draw) -> tuple[dict[str, Any], int | None]:
    """A plausible order and the decimals its money was written with (None: mutated freely)."""
    currency = draw(st.sampled_from(CURRENCIES))
    minor = MINOR_UNITS.get(currency, 2)
    places = draw(st.sampled_from([minor, minor, minor, minor + 1, minor + 3]))
    text = hostile_text(30) if draw(st.booleans()) else shop_text  # a hostile field quarantines the order
    address = st.fixed_dictionaries({k: st.one_of(st.just(""), text) for k in (
        "first_name", "last_name", "company", "address_1", "address_2", "city", "state", "postcode",
        "country", "phone", "email")})
    lines = draw(st.lists(st.fixed_dictionaries({
        "id": st.integers(1, 10**6), "name": text, "sku": st.one_of(st.just("SKU-1"), text),
        "quantity": st.integers(1, 10**4), "subtotal": money(places), "total": money(places),
        "total_tax": money(places), "price": st.floats(0, 10**6),
    }), max_size=4))
    order = {
        "id": draw(st.integers(1, 2**64 - 1)), "number": draw(st.one_of(st.integers(1, 10**9).map(str), text)),
        "status": draw(st.sampled_from(["processing", "on-hold", "pending", "cancelled", "=cmd"])),
        "currency": currency,
        "date_created_gmt": "2026-11-29T10:15:30",
        "date_modified_gmt": draw(st.sampled_from(["2026-11-29T10:20:01", "2026-11-29T10:20:01.5",
                                                   "2026-11-29T10:20:01+00:00"])),
        "discount_total": draw(money(places)), "shipping_total": draw(money(places)),
        "total": draw(money(places)), "total_tax": draw(money(places)),
        "customer_note": draw(text), "billing": draw(address), "shipping": draw(address),
        "line_items": lines,
        "fee_lines": draw(st.lists(st.fixed_dictionaries({"total": money(places)}), max_size=2)),
        "shipping_lines": draw(st.sampled_from([[], [{"method_id": "flat_rate"}]])),
    }
    mutated = False
    for _ in range(draw(st.integers(0, 3))):
        mutated = True
        target: Any = order
        items = order.get("line_items")
        if isinstance(items, list) and items and draw(st.booleans()):
            target = items[draw(st.integers(0, len(items) - 1))]
        elif draw(st.booleans()):
            target = order.get(draw(st.sampled_from(["billing", "shipping"])))
        if not isinstance(target, dict) or not target:
            continue
        key = draw(st.sampled_from(sorted(target)))
        if draw(st.integers(0, 4)) == 0:
            del target[key]
        else:
            target[key] = draw(json_values)
    return order, None if mutated else places


def _csv(order: Order) -> list[dict[str, str]]:
    buffer = io.BytesIO()
    written = write_orders([order.record()], "csv", buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue().decode("utf-8"), newline="")))
    assert written.rows == len(rows) == len(order.lines) and list(rows[0]) == list(CSV_COLUMNS) if rows else True
    return rows


def _expected(value: Decimal | None, currency: str) -> Decimal:
    assert value is not None  # an order without problems has every amount
    return quantize(value, currency) if is_valid_currency(currency) else value


@given(wc_orders())
@example(({"id": 1, "currency": "USD", "total": "1e999999", "line_items": [{"quantity": "1e999999"}]}, None))
@example(({"id": "../../x", "currency": "KWD", "total": "12.3456", "line_items": [{"quantity": 2.0, "subtotal": "1"}]},
          None))
def test_normalise_never_raises_and_money_survives_the_file(case: tuple[dict[str, Any], int | None]) -> None:
    raw, places = case
    before = copy.deepcopy(raw)
    order = normalise_order(raw, "fuzz")
    assert raw == before or raw != raw, "the normaliser must not change its input"  # NaN != NaN
    record = order.record()  # quarantined orders are keyed by their version too
    assert record["order_version"] == order.version
    json.dumps(record, ensure_ascii=False)
    if order.parse_problems:
        assert all(p.rule and p.detail for p in order.parse_problems)
        event("quarantined: " + order.parse_problems[0].rule)
        return
    event(f"to the file ({'exact' if places is not None else 'mutated'}, {len(order.lines)} lines)")
    rows = _csv(order)
    jsonl = io.BytesIO()
    write_orders([record], "jsonl", jsonl)
    assert json.loads(jsonl.getvalue().decode("utf-8")) == record
    currency = order.currency
    if places is not None:  # not mutated: the normaliser kept every amount exactly as sent
        for key, (attr, _column) in ORDER_MONEY.items():
            assert getattr(order, attr) == Decimal(raw[key]), key
        assert [line.line_total for line in order.lines] == [Decimal(i["total"]) for i in raw["line_items"]]
    exact = places is not None and places <= MINOR_UNITS.get(currency, places)
    for row in rows:
        for key, (attr, column) in ORDER_MONEY.items():
            assert Decimal(row[column]) == _expected(getattr(order, attr), currency), (column, row[column])
            if exact:
                assert Decimal(row[column]) == Decimal(raw[key]), f"{column} changed value"
        assert Decimal(row["order_fees"]) == _expected(order.fees, currency)
        line = order.lines[int(row["line_number"]) - 1]
        assert Decimal(row["line_total"]) == _expected(line.line_total, currency)
        assert row["quantity"] == str(line.quantity)
        assert row["product_name"] == guard_cell(line.product_name) and row["sku"] == guard_cell(line.sku)
        assert row["customer_note"] == guard_cell(order.customer_note)
        if exact:
            assert Decimal(row["line_total"]) == Decimal(raw["line_items"][line.line_number - 1]["total"])


@given(json_values)
def test_any_json_value_is_an_order_with_problems_not_an_exception(raw: Any) -> None:
    order = normalise_order(raw, "fuzz")
    assert isinstance(order, Order) and order.record()["order_version"]
    if not isinstance(raw, dict):
        assert [p.rule for p in order.parse_problems][:1] == ["normalisable"]
