"""A WooCommerce REST API v3 order as the canonical :class:`~order_integration.model.Order`.

The value rules (plain decimals, integers, ISO times, safe text) are the shared ones of
:mod:`order_integration.storefronts.normalise`; this module knows WooCommerce's field names
and how its totals relate.

How WooCommerce's totals relate
-------------------------------
``WC_Abstract_Order::calculate_totals`` stores ``discount_total = Σ line subtotal − Σ line
total`` and ``total = Σ line total + Σ fee total + shipping_total + cart_tax + shipping_tax``,
all amounts excluding tax (``total_tax = cart_tax + shipping_tax``). Hence
``subtotal − discount + shipping_total + fees + tax == total`` where ``subtotal`` is the sum of
the line ``subtotal`` s. It can be off by a minor unit or two when the store rounds tax at
subtotal or prices include tax (line amounts are kept unrounded and re-derived from gross
prices), when a negative fee was capped, or when an admin edited amounts without
"Recalculate". Refunds never change ``total`` (they are listed in ``refunds[]``). Line
``price`` is ``total / quantity`` (after discounts), so ``unit_price`` is derived from
``subtotal / quantity`` instead (before discounts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from order_integration.ids import parse_order_id
from order_integration.model import Address, LineItem, Order
from order_integration.storefronts.normalise import (
    MAX_TEXT_LENGTH,
    Problems,
    check_dates,
    check_text,
    money,
    quantity,
    shown,
    text,
    time_field,
    total,
    unit_price,
    unnormalisable,
)

__all__ = ["MAX_TEXT_LENGTH", "WooCommerceNormaliser", "identify", "normalise_order"]

log = logging.getLogger(__name__)

#: WooCommerce's names of the address fields, in the order of ``normalise.ADDRESS_ATTRS``.
ADDRESS_KEYS = ("first_name", "last_name", "company", "address_1", "address_2", "city", "state",
                "postcode", "country", "phone", "email")


def _address(value: object, label: str, problems: Problems) -> Address:
    if value is None:
        return Address()
    if not isinstance(value, dict):
        problems.add("parseable_address", f"{label} is a {type(value).__name__}, not an object")
        return Address()
    # ADDRESS_KEYS are in the order of Address's fields; a string (the usual value) is as sent
    return Address(*[v if type(v) is str else text(v) for v in map(value.get, ADDRESS_KEYS)])


def _list(raw: Mapping[str, Any], key: str, problems: Problems) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add("parseable_lines", f"{key} is a {type(value).__name__}, not a list")
        return []
    return value


def _line(item: object, number: int, currency: str, problems: Problems) -> LineItem:
    label = f"line {number}"
    if not isinstance(item, dict):
        problems.add("parseable_lines", f"{label} is a {type(item).__name__}, not an object")
        return LineItem(number, "", "", None, None, None, None)
    qty = quantity(item.get("quantity"), f"{label} quantity", problems)
    subtotal = money(item.get("subtotal"), f"{label} subtotal", problems)
    return LineItem(
        line_number=number,
        sku=text(item.get("sku")),
        product_name=text(item.get("name")),
        quantity=qty,
        unit_price=unit_price(subtotal, qty, currency, label, problems),
        line_subtotal=subtotal,
        line_total=money(item.get("total"), f"{label} total", problems),
        line_tax=money(item.get("total_tax"), f"{label} total_tax", problems, required=False),
    )


def _order_id(value: object, problems: Problems) -> str:
    """A WooCommerce order id (a positive ``BIGINT UNSIGNED``; digits in a string pass too) as
    text. Anything else (``../../x``, ``CON``, 300 digits) is a problem and gives ``""``: it
    never becomes a ledger key or a value the backend might use as a file name."""
    number = parse_order_id(value)
    if number is not None:
        return str(number)
    problems.add("order_id_present", "id is missing" if value in (None, "") else
                 f"id {shown(value)} is not a WooCommerce order id (an integer from 1 to 2^64-1)")
    return ""


def _normalise(raw: Mapping[str, Any], store_id: str, problems: Problems) -> Order:
    currency = text(raw.get("currency"))
    lines = tuple(
        _line(item, number, currency, problems)
        for number, item in enumerate(_list(raw, "line_items", problems), start=1)
    )
    fee_lines = _list(raw, "fee_lines", problems)
    fees = total([
        money(fee.get("total") if isinstance(fee, dict) else fee, f"fee {n} total", problems)
        for n, fee in enumerate(fee_lines, start=1)
    ])
    billing = _address(raw.get("billing"), "billing", problems)
    shipping = _address(raw.get("shipping"), "shipping", problems)
    order = Order(
        store_id=store_id,
        order_id=_order_id(raw.get("id"), problems),
        order_number=text(raw.get("number")),
        status=text(raw.get("status")),
        created_at=time_field(raw, "date_created_gmt", problems),
        updated_at=time_field(raw, "date_modified_gmt", problems),
        currency=currency,
        customer_email=billing.email,
        billing=billing,
        shipping=shipping,
        lines=lines,
        subtotal=total([line.line_subtotal for line in lines]),
        discount=money(raw.get("discount_total"), "discount_total", problems),
        shipping_total=money(raw.get("shipping_total"), "shipping_total", problems),
        fees=fees,
        tax=money(raw.get("total_tax"), "total_tax", problems),
        total=money(raw.get("total"), "total", problems),
        customer_note=text(raw.get("customer_note")),
        needs_shipping=bool(raw.get("shipping_lines")) or not shipping.is_empty(),
    )
    check_dates(order, problems, "date_created_gmt", "date_modified_gmt")
    check_text(order, problems, ADDRESS_KEYS)
    return replace(order, parse_problems=tuple(problems.items)) if problems.items else order


def normalise_order(raw: dict[str, Any], store_id: str) -> Order:
    """A WooCommerce v3 order dict as the canonical :class:`Order`. Pure; never raises.

    A value that cannot be parsed becomes ``None`` and adds a :class:`Problem` naming the
    field and the value (rules ``parseable_money``, ``parseable_quantity``, ``parseable_date``,
    ``order_id_present``, ``parseable_lines``, ``parseable_address``, ``normalisable``), and a
    value that parses but must not go on likewise (``plausible_date``: before 2000 or created
    after modified; ``safe_text``: a control or bidi control character in a text field;
    ``text_length``: a text longer than :data:`MAX_TEXT_LENGTH`).
    ``unit_price`` is ``subtotal / quantity`` (before discounts; WooCommerce's ``price`` is
    after them), rounded half-up to the currency's minor units when the currency is ISO 4217.
    ``subtotal`` sums the line subtotals, ``fees`` the fee lines (0 without any), ``tax`` is
    ``total_tax`` (cart and shipping tax), ``discount`` is ``discount_total``.
    """
    problems = Problems()
    if not isinstance(raw, dict):
        problems.add("normalisable", f"the order is a {type(raw).__name__}, not an object")
        raw = {}
    try:
        return _normalise(raw, store_id, problems)
    except Exception as exc:  # last resort: a malformed order must never stop the batch
        # ... but a bug must not hide either: the traceback goes to the task log
        log.exception("woocommerce: order id %s could not be normalised (store %s); quarantined as "
                      "'normalisable'", shown(raw.get("id")), store_id)
        problems.add("normalisable", f"unexpected {type(exc).__name__}: {exc}")
        return unnormalisable(store_id, parse_order_id(raw.get("id")), problems,
                              number=text(raw.get("number")), status=text(raw.get("status")),
                              currency=text(raw.get("currency")))


def identify(raw: object) -> tuple[str, str]:
    """``(order_id, status)`` of a raw order as :func:`normalise_order` gives them, the rest unread."""
    if not isinstance(raw, dict):
        return "", ""
    return _order_id(raw.get("id"), Problems()), text(raw.get("status"))


class WooCommerceNormaliser:
    """The normaliser alone (what validation needs), without a client or a connection."""

    platform = "woocommerce"

    @staticmethod
    def normalise(raw: dict[str, Any], store_id: str) -> Order:
        return normalise_order(raw, store_id)

    @staticmethod
    def identify(raw: dict[str, Any]) -> tuple[str, str]:
        return identify(raw)
