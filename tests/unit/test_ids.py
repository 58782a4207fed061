"""Order ids are ASCII digits within range, whatever ``str.isdigit`` thinks."""

from __future__ import annotations

import pytest

from order_integration.ids import MAX_ORDER_ID, is_order_id, parse_order_id

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("value", "expected"), [
    ("1", 1), (" 42 ", 42), (7, 7), (str(MAX_ORDER_ID), MAX_ORDER_ID), (MAX_ORDER_ID, MAX_ORDER_ID),
])
def test_accepts_ascii_ids(value: object, expected: int) -> None:
    assert parse_order_id(value) == expected
    assert is_order_id(value)


@pytest.mark.parametrize("value", [
    "²", "٣", "１２", "0", 0, -3, "-3", "+3", "1e3", "3.0", 3.0, True, False, None, "", " ",
    "1 2", str(MAX_ORDER_ID + 1), MAX_ORDER_ID + 1, "9" * 21, b"12", [12],
])
def test_refuses_everything_else(value: object) -> None:
    assert parse_order_id(value) is None
    assert not is_order_id(value)
