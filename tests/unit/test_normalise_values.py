"""The shared value rules (``storefronts/normalise.py``): the cheap paths the hot loop takes for
the usual values give what the full checks give, and the unusual values still get the checks."""

from __future__ import annotations

from decimal import Decimal

import pendulum
import pytest

from order_integration.model import format_time
from order_integration.storefronts.normalise import Problems, money, parse_time

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value, expected", [
    ("12.30", Decimal("12.30")), ("0", Decimal("0")), ("-5.5", Decimal("-5.5")), (".5", Decimal(".5")),
    ("7.", Decimal("7")), ("123456789012345", Decimal("123456789012345")),  # 15 characters: fast
    (" 12.30 ", Decimal("12.30")), (12, Decimal(12)), (12.5, Decimal("12.5")),  # the full path
    ("1234567890123.45", Decimal("1234567890123.45")),  # 16 characters: the full path, in range
])
def test_a_plain_decimal_is_read_exactly_on_either_path(value, expected):
    problems = Problems()
    amount = money(value, "total", problems)
    assert amount == expected and str(amount) == str(expected)
    assert problems.items == []


@pytest.mark.parametrize("value, detail", [
    ("1e2", "is not a plain decimal amount"), ("29,99", "is not a decimal amount"),
    ("NaN", "is not a decimal amount"), ("", "is missing"), (None, "is missing"),
    ("1" * 17, "is out of range"), ("-", "is not a decimal amount"), (True, "is not a decimal amount"),
])
def test_anything_else_is_a_problem_naming_the_value(value, detail):
    problems = Problems()
    assert money(value, "total", problems) is None
    assert [p.rule for p in problems.items] == ["parseable_money"]
    assert detail in problems.items[0].detail


@pytest.mark.parametrize("text, expected", [
    ("2026-11-02T10:15:00", pendulum.datetime(2026, 11, 2, 10, 15, tz="UTC")),          # no offset: UTC
    ("2026-11-02T10:15:00Z", pendulum.datetime(2026, 11, 2, 10, 15, tz="UTC")),
    ("2026-11-02T10:15:00.250000+00:00", pendulum.datetime(2026, 11, 2, 10, 15, 0, 250000, tz="UTC")),
    ("2026-11-02T12:15:00+02:00", pendulum.datetime(2026, 11, 2, 10, 15, tz="UTC")),    # converted
    ("2026-11-02T05:15:00-05:00", pendulum.datetime(2026, 11, 2, 10, 15, tz="UTC")),
])
def test_times_are_aware_utc_pendulum_whatever_offset_they_were_written_with(text, expected):
    parsed = parse_time(text)
    assert isinstance(parsed, pendulum.DateTime)
    assert parsed == expected and parsed.utcoffset() == expected.utcoffset()
    assert parsed.timezone_name == "UTC"
    assert format_time(parsed) == expected.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_time_in_another_zone_is_written_in_utc():
    assert format_time(pendulum.datetime(2026, 1, 1, 10, tz="Europe/Berlin")) == "2026-01-01T09:00:00Z"
    assert format_time(pendulum.parse("2026-01-01T10:00:00+00:00")) == "2026-01-01T10:00:00Z"
    assert parse_time("yesterday") is None and parse_time("") is None and parse_time(None) is None


def test_address_keys_name_the_address_fields_in_their_order():
    """A platform's normaliser builds an Address positionally from its ADDRESS_KEYS."""
    from dataclasses import fields

    from order_integration.model import Address
    from order_integration.storefronts import woocommerce_normalise
    from order_integration.storefronts.normalise import ADDRESS_ATTRS

    assert tuple(f.name for f in fields(Address)) == ADDRESS_ATTRS
    assert len(woocommerce_normalise.ADDRESS_KEYS) == len(ADDRESS_ATTRS)
    raw = dict(zip(woocommerce_normalise.ADDRESS_KEYS, ADDRESS_ATTRS, strict=True)) | {"phone": 49}
    address = woocommerce_normalise._address(raw, "billing", Problems())
    assert address.first_name == "first_name" and address.address1 == "address1"
    assert address.region == "region" and address.email == "email" and address.phone == "49"


@pytest.mark.parametrize("code", ["EUR", "JPY", "KWD", "USD"])
@pytest.mark.parametrize("amount", ["12.345", "12.3", "-0.005", "0", "1234567890.9999", "7"])
def test_the_formatter_of_a_currency_formats_as_format_money(code, amount):
    from order_integration.currency import format_money, money_formatter

    assert money_formatter(code)(Decimal(amount)) == format_money(Decimal(amount), code)


@pytest.mark.parametrize("first, last, name", [
    ("Ada", "Lovelace", "Ada Lovelace"), (" Ada ", " Lovelace ", "Ada Lovelace"), ("Ada", "", "Ada"),
    ("", "Lovelace", "Lovelace"), (" ", "\tLovelace", "Lovelace"), ("", "", ""), ("  ", " ", ""),
])
def test_an_address_name_is_its_stripped_names_joined_by_one_space(first, last, name):
    from order_integration.model import Address

    assert Address(first_name=first, last_name=last).name == name
