"""Order validation: the GX suite (suite.yaml), the frames it runs on, the valid/invalid split.

Importing GX and running it costs seconds, so one mixed batch holding every handmade case is
validated once per module (``outcome``) and the tests look up their own order in it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pendulum
import pytest
import yaml

from order_integration.currency import MINOR_UNITS, to_minor
from order_integration.exceptions import ConfigError
from order_integration.model import Address, LineItem, Order, Problem
from order_integration.validation import (
    DEFAULT_SUITE_PATH,
    ValidationOutcome,
    build_frames,
    load_suite,
    validate_orders,
)
from order_integration.validation.frames import _fast_minor, _quantum, format_minor, minor_of

pytestmark = pytest.mark.unit

D = Decimal
_WHEN = pendulum.datetime(2026, 11, 2, 10, 15, tz="UTC")


def line(number: int = 1, *, quantity: int | None = 2, unit_price: str | None = "5.00",
         line_total: str | None = "10.00", sku: str = "SKU-1") -> LineItem:
    """A line item; money given as strings so the test reads like the storefront payload."""
    return LineItem(
        line_number=number, sku=sku, product_name=f"Product {number}", quantity=quantity,
        unit_price=None if unit_price is None else D(unit_price),
        line_subtotal=None if line_total is None else D(line_total),
        line_total=None if line_total is None else D(line_total),
    )


def make_order(order_id: str = "1001", **overrides: Any) -> Order:
    """A valid EUR order (10.00 + 2.00 shipping + 0.50 tax = 12.50); ``overrides`` change fields.

    Money overrides may be strings (``total="12.40"``) or ``None``.
    """
    money = {"subtotal": "10.00", "discount": "0.00", "shipping_total": "2.00", "fees": "0.00",
             "tax": "0.50", "total": "12.50"}
    for key in list(money):
        if key in overrides:
            money[key] = overrides.pop(key)
    fields: dict[str, Any] = {
        "store_id": "shop", "order_id": order_id, "order_number": order_id, "status": "processing",
        "created_at": _WHEN, "updated_at": _WHEN, "currency": "EUR",
        "customer_email": "jane@example.com",
        "billing": Address(first_name="Jane", last_name="Doe", country="DE", email="jane@example.com"),
        "shipping": Address(first_name="Jane", last_name="Doe", address1="Hauptstr. 1",
                            city="Berlin", postcode="10115", country="DE"),
        "lines": (line(),),
        **{k: None if v is None else D(v) for k, v in money.items()},
    }
    fields.update(overrides)
    return Order(**fields)


def ship_to(country: str) -> Address:
    return Address(first_name="Jane", address1="Street 1", city="City", country=country)


# Orders that must pass, by id.
VALID_ORDERS: dict[str, Order] = {
    "ok-plain": make_order("ok-plain"),
    "ok-virtual": make_order("ok-virtual", needs_shipping=False, shipping=Address(), shipping_total="0.00",
                             total="10.50"),
    # Not checked at all when nothing is shipped, even a nonsense country.
    "ok-virtual-junk-country": make_order("ok-virtual-junk-country", needs_shipping=False,
                                          shipping=ship_to("XX")),
    "ok-negative-fees": make_order("ok-negative-fees", fees="-1.00", total="11.50"),
    "ok-jpy": make_order("ok-jpy", currency="JPY", lines=(line(quantity=2, unit_price="500", line_total="1000"),),
                         subtotal="1000", discount="100", shipping_total="500", tax="150", total="1550"),
    "ok-kwd": make_order("ok-kwd", currency="KWD", subtotal="10.125", discount="0.000",
                         shipping_total="1.250", tax="0.625", total="12.000"),
    # 0.1 + 0.2 == 0.3 only in exact arithmetic.
    "ok-float-trap": make_order("ok-float-trap", subtotal="0.10", shipping_total="0.20", tax="0.00",
                                total="0.30"),
    "ok-subdomain-email": make_order("ok-subdomain-email", customer_email="a.b+tag@mail.example.co.uk"),
    "ok-no-sku": make_order("ok-no-sku", lines=(line(sku=""),)),
}

# One failed rule each: id -> (order, rule, exact detail).
SINGLE_FAILURES: dict[str, tuple[Order, str, str]] = {
    "bad-currency": (
        make_order("bad-currency", currency="EURO"),
        "currency_iso4217", "currency 'EURO' is not an ISO 4217 code",
    ),
    "bad-email": (
        make_order("bad-email", customer_email="not-an-email"),
        "email_valid", "customer_email 'not-an-email' is not a valid e-mail address",
    ),
    "bad-email-space": (
        make_order("bad-email-space", customer_email="jane doe@example.com"),
        "email_valid", "customer_email 'jane doe@example.com' is not a valid e-mail address",
    ),
    "bad-email-empty": (
        make_order("bad-email-empty", customer_email=""),
        "email_valid", "customer_email '' is not a valid e-mail address",
    ),
    "bad-country": (
        make_order("bad-country", shipping=ship_to("Germany")),
        "ship_country_iso3166_alpha2",
        "ship_country 'Germany' is not an ISO 3166-1 alpha-2 code (the order needs shipping)",
    ),
    "bad-country-lower": (
        make_order("bad-country-lower", shipping=ship_to("de")),
        "ship_country_iso3166_alpha2",
        "ship_country 'de' is not an ISO 3166-1 alpha-2 code (the order needs shipping)",
    ),
    "bad-country-unassigned": (
        make_order("bad-country-unassigned", shipping=ship_to("XX")),
        "ship_country_iso3166_alpha2",
        "ship_country 'XX' is not an ISO 3166-1 alpha-2 code (the order needs shipping)",
    ),
    "bad-country-missing": (
        make_order("bad-country-missing", shipping=Address()),
        "ship_country_iso3166_alpha2",
        "ship_country '' is not an ISO 3166-1 alpha-2 code (the order needs shipping)",
    ),
    "bad-no-lines": (
        make_order("bad-no-lines", lines=()),
        "has_lines", "the order has no line items",
    ),
    "bad-subtotal": (
        make_order("bad-subtotal", subtotal="-1.00", total="1.50"),
        "order_totals_non_negative", "subtotal -1.00 is negative",
    ),
    "bad-discount": (
        make_order("bad-discount", discount="-1.00", total="13.50"),
        "order_totals_non_negative", "discount -1.00 is negative",
    ),
    "bad-shipping": (
        make_order("bad-shipping", shipping_total="-2.00", total="8.50"),
        "order_totals_non_negative", "shipping -2.00 is negative",
    ),
    "bad-tax": (
        make_order("bad-tax", tax="-0.50", total="11.50"),
        "order_totals_non_negative", "tax -0.50 is negative",
    ),
    "bad-total": (
        make_order("bad-total", fees="-17.50", total="-5.00"),  # a discount above the subtotal is its own rule
        "order_totals_non_negative", "total -5.00 is negative",
    ),
    "bad-adds-up": (
        make_order("bad-adds-up", total="12.40"),
        "order_adds_up",
        "total 12.40 != subtotal 10.00 - discount 0.00 + shipping 2.00 + fees 0.00 + tax 0.50 (= 12.50)",
    ),
    "bad-adds-up-kwd": (
        make_order("bad-adds-up-kwd", currency="KWD", subtotal="10.125", discount="0.000",
                   shipping_total="1.250", tax="0.625", total="12.001"),
        "order_adds_up",
        "total 12.001 != subtotal 10.125 - discount 0.000 + shipping 1.250 + fees 0.000 + tax 0.625 (= 12.000)",
    ),
    "bad-adds-up-jpy": (
        make_order("bad-adds-up-jpy", currency="JPY", subtotal="1000", discount="0", shipping_total="500",
                   tax="150", total="1651"),
        "order_adds_up",
        "total 1651 != subtotal 1000 - discount 0 + shipping 500 + fees 0 + tax 150 (= 1650)",
    ),
    "bad-quantity": (
        make_order("bad-quantity", lines=(line(1), line(2, quantity=-1))),
        "quantity_positive_integer", "line 2: quantity -1 is not a positive integer",
    ),
    "bad-quantity-zero": (
        make_order("bad-quantity-zero", lines=(line(1, quantity=0),)),
        "quantity_positive_integer", "line 1: quantity 0 is not a positive integer",
    ),
    "bad-unit-price": (
        make_order("bad-unit-price", lines=(line(1, unit_price="-5.00"),)),
        "unit_price_non_negative", "line 1: unit price -5.00 is negative",
    ),
    "bad-line-total": (
        make_order("bad-line-total", lines=(line(1), line(2), line(3, line_total="-0.01"))),
        "line_total_non_negative", "line 3: line total -0.01 is negative",
    ),
}

THREE_PROBLEMS = make_order(
    "three-problems", currency="XYZ", customer_email="nobody",
    lines=(line(1), line(2, quantity=0)),
)
PARSE_PROBLEM = Problem("total_not_a_number", "order_total 'abc' is not a decimal number")
WITH_PARSE_PROBLEM = make_order(
    "with-parse-problem", total=None, customer_email="broken@", parse_problems=(PARSE_PROBLEM,),
)
DUPLICATE_A = make_order("dup-1")
DUPLICATE_B = make_order("dup-1", customer_email="other@example.com")
MISSING_ID = make_order("")
BLANK_ID = make_order("   ")


def _batch() -> list[Order]:
    """Every case, valid ones interleaved with invalid ones."""
    batch: list[Order] = []
    bad = [case[0] for case in SINGLE_FAILURES.values()]
    bad += [THREE_PROBLEMS, WITH_PARSE_PROBLEM, DUPLICATE_A, DUPLICATE_B, MISSING_ID, BLANK_ID]
    good = list(VALID_ORDERS.values())
    for i in range(max(len(bad), len(good))):
        batch.extend(group[i] for group in (good, bad) if i < len(group))
    return batch


BATCH = _batch()


@pytest.fixture(scope="module")
def outcome() -> ValidationOutcome:
    return validate_orders(BATCH)


def _problems_of(outcome: ValidationOutcome, order: Order) -> tuple[Problem, ...]:
    matches = [i.problems for i in outcome.invalid_orders if i.order is order]
    assert len(matches) == 1, f"{order.order_id!r} is not listed once among the invalid orders"
    return matches[0]


# --------------------------------------------------------------------------- the split


def test_one_valid_order_passes() -> None:
    order = make_order()
    result = validate_orders([order])
    assert result.valid == [order]
    assert result.invalid == {}
    assert result.invalid_orders == []
    assert result.gx_result["success"] is True


def test_all_valid_orders_of_a_mixed_batch_are_returned_in_order(outcome: ValidationOutcome) -> None:
    assert [o.order_id for o in outcome.valid] == list(VALID_ORDERS)
    assert all(a is b for a, b in zip(outcome.valid, VALID_ORDERS.values(), strict=True))
    assert len(outcome.valid) + len(outcome.invalid_orders) == len(BATCH)


@pytest.mark.parametrize("case", sorted(SINGLE_FAILURES))
def test_each_rule_fails_with_its_name_and_a_detail_naming_the_value(
    outcome: ValidationOutcome, case: str
) -> None:
    order, rule, detail = SINGLE_FAILURES[case]
    # Exactly this one problem: the rule catches it and no other rule misfires on it.
    assert _problems_of(outcome, order) == (Problem(rule, detail),)
    assert outcome.invalid[order.order_id] == [Problem(rule, detail)]
    assert order not in outcome.valid


def test_an_order_with_three_problems_gets_all_three(outcome: ValidationOutcome) -> None:
    problems = _problems_of(outcome, THREE_PROBLEMS)
    assert [p.rule for p in problems] == ["currency_iso4217", "email_valid", "quantity_positive_integer"]
    assert problems[2].detail == "line 2: quantity 0 is not a positive integer"


def test_parse_problems_are_merged_first(outcome: ValidationOutcome) -> None:
    problems = _problems_of(outcome, WITH_PARSE_PROBLEM)
    assert problems == (
        PARSE_PROBLEM,
        Problem("email_valid", "customer_email 'broken@' is not a valid e-mail address"),
    )
    # The missing total is not reported twice: order_adds_up skips what cannot be computed.
    assert "order_adds_up" not in {p.rule for p in problems}


def test_parse_problems_alone_make_an_order_invalid() -> None:
    order = make_order("parse-only", parse_problems=(PARSE_PROBLEM,))
    result = validate_orders([order])
    assert result.valid == []
    assert result.invalid == {"parse-only": [PARSE_PROBLEM]}


def test_both_duplicates_are_invalid(outcome: ValidationOutcome) -> None:
    expected = (Problem("order_id_unique", "order_id 'dup-1' appears more than once in this batch"),)
    assert _problems_of(outcome, DUPLICATE_A) == expected
    assert _problems_of(outcome, DUPLICATE_B) == expected
    assert outcome.invalid["dup-1"] == list(expected)


@pytest.mark.parametrize("order", [MISSING_ID, BLANK_ID], ids=["empty", "blank"])
def test_missing_order_id_is_invalid_and_keyed_by_position(outcome: ValidationOutcome, order: Order) -> None:
    index = next(i for i, o in enumerate(BATCH) if o is order)
    problems = _problems_of(outcome, order)
    assert [p.rule for p in problems] == ["order_id_present"]
    assert problems[0].detail == f"order_id is missing or empty (order at position {index} of the batch)"
    assert outcome.invalid[f"<missing order_id #{index}>"] == list(problems)


def test_virtual_order_without_shipping_country_passes(outcome: ValidationOutcome) -> None:
    assert VALID_ORDERS["ok-virtual"] in outcome.valid
    assert VALID_ORDERS["ok-virtual-junk-country"] in outcome.valid


def test_jpy_and_kwd_money_adds_up_exactly(outcome: ValidationOutcome) -> None:
    for key in ("ok-jpy", "ok-kwd", "ok-float-trap"):
        assert VALID_ORDERS[key] in outcome.valid, key


def test_statistics_and_gx_summary(outcome: ValidationOutcome) -> None:
    stats = outcome.statistics
    assert stats["orders"] == len(BATCH)
    assert stats["valid"] == len(VALID_ORDERS)
    assert stats["invalid"] == len(BATCH) - len(VALID_ORDERS)
    assert stats["orders_by_rule"]["order_id_unique"] == 2
    assert stats["orders_by_rule"]["total_not_a_number"] == 1
    summary = json.loads(json.dumps(outcome.gx_result))  # JSON-serialisable
    assert summary["success"] is False
    by_column = {(e["rule"], e["column"]): e for e in summary["expectations"]}
    assert by_column[("order_adds_up", "adds_up_diff_minor")]["unexpected_count"] == 3
    assert by_column[("order_id_unique", "order_id")]["unexpected_count"] == 2
    # The row condition restricts the ship-to check to orders that need shipping.
    ship = by_column[("ship_country_iso3166_alpha2", "ship_country")]
    assert ship["element_count"] == sum(o.needs_shipping for o in BATCH)


def test_empty_batch() -> None:
    result = validate_orders([])
    assert (result.valid, result.invalid, result.invalid_orders) == ([], {}, [])
    assert result.statistics["orders"] == 0


# --------------------------------------------------------------------------- frames


def test_frames_hold_exact_integer_minor_units() -> None:
    orders = [
        VALID_ORDERS["ok-kwd"], SINGLE_FAILURES["bad-adds-up"][0],
        make_order("bad-cur", currency="ABC", subtotal="1.005", shipping_total="0", tax="0", total="1.01"),
        make_order("none-total", total=None),
    ]
    frames = build_frames(orders)
    frame = frames.orders
    assert str(frame["total_minor"].dtype) == "Int64"
    assert frame["row_key"].tolist() == [0, 1, 2, 3]
    assert frame["total_minor"].tolist()[:3] == [12000, 1240, 101]  # KWD: 3 decimals; ABC: fallback 2
    assert frame["adds_up_diff_minor"].tolist()[:3] == [0, -10, 0]
    assert frame["adds_up_diff_minor"].isna().tolist() == [False, False, False, True]
    assert frames.lines["row_key"].tolist() == [0, 1, 2, 3]
    assert str(frames.lines["quantity"].dtype) == "Int64"


@pytest.mark.parametrize("amount", ["0", "0.5", "-0.5", "12.345", "12.3449", "-12.345", "0.00005", "1E+3",
                                    "99999999.99995", "1.0000"])
def test_bulk_minor_conversion_is_to_minor(amount: str) -> None:
    """build_frames converts with a cached quantum: it must agree with currency.to_minor."""
    value = D(amount)
    for code, decimals in MINOR_UNITS.items():
        assert _fast_minor(value, _quantum(decimals), decimals) == to_minor(value, code), code


def test_minor_units_helpers() -> None:
    assert minor_of(D("12.345"), "KWD") == 12345
    assert minor_of(D("1200"), "JPY") == 1200
    assert minor_of(D("0.005"), "EUR") == 1        # half up, as currency.to_minor
    assert minor_of(D("1.239"), "NOPE") == 124     # fallback 2 decimals
    assert minor_of(None, "EUR") is None
    assert minor_of(D("NaN"), "EUR") is None
    assert format_minor(1240, 2) == "12.40"
    assert format_minor(-5, 2) == "-0.05"
    assert format_minor(12001, 3) == "12.001"
    assert format_minor(1650, 0) == "1650"


# --------------------------------------------------------------------------- the suite as data


def _suite_raw() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_SUITE_PATH.read_text(encoding="utf-8"))


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _entry(raw: dict[str, Any], rule: str, frame: str = "orders") -> dict[str, Any]:
    return next(e for e in raw[frame] if e["rule"] == rule)


def test_default_suite_loads_with_the_required_rules() -> None:
    rules = {spec.rule for spec in load_suite()}
    assert rules >= {
        "order_id_present", "order_id_unique", "currency_iso4217", "quantity_positive_integer",
        "unit_price_non_negative", "line_total_non_negative", "order_totals_non_negative",
        "order_adds_up", "has_lines", "email_valid", "ship_country_iso3166_alpha2",
    }
    country = next(s for s in load_suite() if s.rule == "ship_country_iso3166_alpha2")
    assert len(country.kwargs["value_set"]) == 249
    assert "NO" in country.kwargs["value_set"]  # Norway survives YAML


def _unknown_expectation(raw: dict[str, Any]) -> None:
    _entry(raw, "order_id_present")["expectation"] = "ExpectColumnValuesToBeAwesome"


def _missing_detail(raw: dict[str, Any]) -> None:
    del _entry(raw, "currency_iso4217")["detail"]


def _unknown_column(raw: dict[str, Any]) -> None:
    _entry(raw, "order_adds_up")["kwargs"]["column"] = "adds_up"


def _unknown_template_field(raw: dict[str, Any]) -> None:
    _entry(raw, "quantity_positive_integer", "lines")["detail"] = "line {line_number}: qty {qty}"


def _bad_kwargs(raw: dict[str, Any]) -> None:
    _entry(raw, "has_lines")["kwargs"]["mostly"] = 5


def _table_level(raw: dict[str, Any]) -> None:
    _entry(raw, "has_lines")["expectation"] = "ExpectTableRowCountToBeBetween"


def _unknown_value_set(raw: dict[str, Any]) -> None:
    _entry(raw, "currency_iso4217")["value_set"] = "iso4217_typo"


def _bad_row_condition(raw: dict[str, Any]) -> None:
    _entry(raw, "ship_country_iso3166_alpha2")["row_condition"]["column"] = "ships"


@pytest.mark.parametrize(
    ("mutate", "rule", "message"),
    [
        (_unknown_expectation, "order_id_present", "unknown expectation"),
        (_missing_detail, "currency_iso4217", "missing keys ['detail']"),
        (_unknown_column, "order_adds_up", "unknown orders column"),
        (_unknown_template_field, "quantity_positive_integer", "unknown lines field(s) ['qty']"),
        (_bad_kwargs, "has_lines", "invalid kwargs"),
        (_table_level, "has_lines", "not row-level"),
        (_unknown_value_set, "currency_iso4217", "unknown value_set"),
        (_bad_row_condition, "ship_country_iso3166_alpha2", "unknown orders column 'ships'"),
    ],
)
def test_broken_suite_raises_config_error_naming_the_rule(
    tmp_path: Path, mutate: Any, rule: str, message: str
) -> None:
    raw = _suite_raw()
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError, match=rf"\(rule {rule}\)") as info:
        load_suite(path)
    assert message in str(info.value)


def test_validate_orders_refuses_a_broken_suite(tmp_path: Path) -> None:
    raw = _suite_raw()
    _unknown_expectation(raw)
    with pytest.raises(ConfigError, match="order_id_present"):
        validate_orders([make_order()], suite_path=_write(tmp_path, raw))


def test_unquoted_norway_in_a_value_set_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    text = DEFAULT_SUITE_PATH.read_text(encoding="utf-8")
    path.write_text(text.replace("value_sets:\n", "value_sets:\n  nordic: [DK, NO, SE]\n"), encoding="utf-8")
    with pytest.raises(ConfigError, match="nordic"):
        load_suite(path)


def test_not_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text("orders: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(path)


def test_an_expectation_that_errors_at_run_time_stops_the_run(tmp_path: Path) -> None:
    raw = _suite_raw()
    raw["orders"].append({
        "rule": "currency_between", "expectation": "ExpectColumnValuesToBeBetween",
        "kwargs": {"column": "currency", "min_value": 1}, "detail": "{currency}",
    })
    with pytest.raises(ConfigError, match="currency_between"):
        validate_orders([make_order()], suite_path=_write(tmp_path, raw))


def test_operators_can_edit_the_suite(tmp_path: Path) -> None:
    """The suite is data: adding XK (Kosovo) to the country set lets such an order through."""
    raw = _suite_raw()
    raw["value_sets"]["iso3166_alpha2"] += " XK"
    kosovo = make_order("kosovo", shipping=ship_to("XK"))
    assert [p.rule for p in validate_orders([kosovo]).invalid["kosovo"]] == ["ship_country_iso3166_alpha2"]
    assert validate_orders([kosovo], suite_path=_write(tmp_path, raw)).valid == [kosovo]
