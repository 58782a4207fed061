"""A Shopify Admin GraphQL order as the canonical :class:`~order_integration.model.Order`.

The value rules (plain decimals, integers, ISO times, safe text) are the shared ones of
:mod:`order_integration.storefronts.normalise`; this module knows Shopify's field names and how
its amounts relate. The raw order is what :class:`~.shopify.ShopifyClient` stages: the
``Order`` node of its query (:data:`~.shopify.ORDER_FIELDS`) with every line item in
``lineItems.nodes`` (the client pages the lines; a bulk operation's JSONL children are put
back under their parent).

Ids
---
``order_id`` is the order's numeric ``legacyResourceId`` (the REST id, an unsigned 64-bit
integer); the GraphQL id is ``gid://shopify/Order/<legacyResourceId>`` (:func:`order_gid`,
:func:`gid_number`). Both are checked to agree. ``order_number`` is ``name`` (``#1001``: the
shop's prefix and suffix included, what the merchant sees).

Status
------
``cancelled`` when ``cancelledAt`` is set, else ``displayFinancialStatus`` in lower snake case
(``paid``, ``partially_paid``, ``authorized``, ``pending``, ``partially_refunded``,
``refunded``, ``voided``, ``expired``). Shopify stores export ``paid``, ``partially_paid`` and
``authorized`` by default (``config.py``).

Money (``shopMoney``: the shop's currency, ``currencyCode``)
----------------------------------------------------------
* line ``unit_price`` = ``originalUnitPriceSet`` (before discounts); ``line_subtotal`` =
  ``originalTotalSet`` (unit price x quantity, before discounts); ``line_total`` =
  ``discountedTotalSet(withCodeDiscounts: true)`` (after the discounts allocated to the line,
  code discounts included, before order-level discounts and tax);
* ``subtotal`` = the sum of the lines' ``originalTotalSet``; ``discount`` = ``totalDiscountsSet``
  (line and order level); ``shipping`` = ``totalShippingPriceSet``; ``tax`` = ``totalTaxSet``;
  ``fees`` = tips (``totalTipReceivedSet``) + duties (``originalTotalDutiesSet``) + additional
  fees (``originalTotalAdditionalFeesSet``), each 0 when absent or null; ``total`` =
  ``totalPriceSet`` (before returns: refunds never change it).

So ``subtotal - discount + shipping + fees + tax = total`` holds for an order whose prices exclude
tax. ``line_tax`` is the sum of the line's ``taxLines`` (Shopify's tax on the line after all its
discounts).

Prices that include tax (``taxesIncluded``: most of Europe, the UK, Australia)
----------------------------------------------------------------------------
Shopify's line prices, shipping and discounts then carry their tax (``totalTaxSet`` and the total
are the same amounts as ever). The orders file's amounts are before tax (tax in ``order_tax``,
as WooCommerce sends them for such shops too), so they are derived (:func:`_net_of_tax`):

* an order without discounts: each line's net = its gross - its ``taxLines`` (exactly Shopify's
  own tax amounts); shipping net = ``totalShippingPriceSet`` - the tax that is not on a line;
  discount 0;
* an order with discounts: Shopify's line tax is on the line after *every* discount (order-level
  ones too). When every discount is on the lines, ``line_total`` = gross - ``taxLines`` (exact),
  and so is the line before discounts for a line without a discount of its own. Any other net is
  extracted with the line's tax rates, ``gross - sum(round(gross x rate / (1 + sum of rates)))``
  (each tax line half-up to the currency). The net discount is what the net amounts before
  discounts exceed the total by (``subtotal + shipping + fees + tax - total``); it must lie
  within ``[0, totalDiscountsSet]``;
* ``unit_price`` = the net line before discounts / quantity (half-up, as WooCommerce's).

What cannot be derived -- tax lines without a rate on a discounted order, more tax than the lines
and shipping can carry, a net discount outside its bounds -- is the problem
``tax_included_prices`` naming the amounts: the order is quarantined with that reason, never
written with totals that are wrong. The identity above then holds to the cent by construction,
and the validation suite checks it as for every order.

Every amount's ``currencyCode`` must be the order's ``currencyCode`` (``currency_consistent``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from order_integration.currency import is_valid_currency, quantize
from order_integration.ids import parse_order_id
from order_integration.model import Address, LineItem, Order
from order_integration.storefronts.normalise import (
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

__all__ = ["ShopifyNormaliser", "gid_number", "identify", "normalise_order", "order_gid", "order_status"]

log = logging.getLogger(__name__)

#: Shopify's names of the address fields, in the order of ``normalise.ADDRESS_ATTRS`` (the
#: e-mail is the order's ``email``, not an address field).
ADDRESS_KEYS = (
    "firstName",
    "lastName",
    "company",
    "address1",
    "address2",
    "city",
    "provinceCode",
    "zip",
    "countryCodeV2",
    "phone",
    "email",
)
_GID = re.compile(r"gid://shopify/([A-Za-z]+)/([0-9]{1,20})")
#: The optional amounts that add to the total besides goods, shipping and tax.
#: What starts the lines the status sync appends to the order's ``note`` (``shopify_status``'s
#: marker lines). They are ours, not the customer's: the normaliser leaves them out of
#: ``customer_note``, so a status written back is no new order version (no echo).
MARKER_PREFIX = "[order-integration] "


def without_markers(note: object) -> object:
    """The order note without the status sync's marker lines (anything else unchanged)."""
    if not isinstance(note, str) or MARKER_PREFIX not in note:
        return note
    return "\n".join(line for line in note.splitlines() if not line.startswith(MARKER_PREFIX))


FEE_FIELDS = ("totalTipReceivedSet", "originalTotalDutiesSet", "originalTotalAdditionalFeesSet")


def order_gid(order_id: int) -> str:
    """``gid://shopify/Order/<order_id>``: the GraphQL id of the order with that ``legacyResourceId``."""
    return f"gid://shopify/Order/{int(order_id)}"


def gid_number(gid: object, kind: str = "Order") -> int | None:
    """The number of a ``gid://shopify/<kind>/<n>`` id, ``None`` for anything else."""
    if not isinstance(gid, str):
        return None
    found = _GID.fullmatch(gid.strip())
    if found is None or found.group(1) != kind:
        return None
    return parse_order_id(found.group(2))


def order_status(raw: Mapping[str, Any]) -> str:
    """``cancelled`` when ``cancelledAt`` is set, else ``displayFinancialStatus`` in lower snake case."""
    if raw.get("cancelledAt"):
        return "cancelled"
    return text(raw.get("displayFinancialStatus")).strip().lower()


def _money_set(
    raw: Mapping[str, Any], key: str, label: str, currency: str, problems: Problems, *, required: bool = True
) -> Decimal | None:
    """``raw[key].shopMoney.amount`` as a Decimal (``currency_consistent`` when its currency differs)."""
    bag = raw.get(key)
    if bag is None:
        if required:
            problems.add("parseable_money", f"{label} is missing")
        return None
    shop_money = bag.get("shopMoney") if isinstance(bag, dict) else None
    if not isinstance(shop_money, dict):
        problems.add("parseable_money", f"{label} is {shown(bag)}, not a MoneyBag with shopMoney")
        return None
    amount = money(shop_money.get("amount"), label, problems)
    code = shop_money.get("currencyCode")
    if amount is not None and code != currency:
        problems.add(
            "currency_consistent", f"{label} is in {shown(code)}, not the order's currency {shown(currency)}"
        )
    return amount


def _address(value: object, label: str, email: str, problems: Problems) -> Address:
    if value is None:
        return Address(email=email)
    if not isinstance(value, dict):
        problems.add("parseable_address", f"{label} is a {type(value).__name__}, not an object")
        return Address(email=email)
    region = text(value.get("provinceCode")) or text(value.get("province"))
    return Address(
        first_name=text(value.get("firstName")),
        last_name=text(value.get("lastName")),
        company=text(value.get("company")),
        address1=text(value.get("address1")),
        address2=text(value.get("address2")),
        city=text(value.get("city")),
        region=region,
        postcode=text(value.get("zip")),
        country=text(value.get("countryCodeV2")),
        phone=text(value.get("phone")),
        email=email,
    )


def _line_nodes(raw: Mapping[str, Any], problems: Problems) -> list[Any]:
    conn = raw.get("lineItems")
    if conn is None:
        return []
    nodes = conn.get("nodes") if isinstance(conn, dict) else None
    if not isinstance(nodes, list):
        problems.add("parseable_lines", f"lineItems is {shown(conn)}, not a connection with a nodes list")
        return []
    page_info = conn.get("pageInfo")
    if isinstance(page_info, dict) and page_info.get("hasNextPage"):
        problems.add(
            "parseable_lines",
            f"lineItems holds {len(nodes)} lines but says more follow: the order was read incompletely",
        )
    return nodes


#: A line's tax lines: (rate, amount) each; ``None`` where Shopify sent none or it did not parse.
TaxParts = list[tuple[Decimal | None, Decimal | None]]


def _tax_parts(item: Mapping[str, Any], label: str, currency: str, problems: Problems) -> TaxParts | None:
    """The line's ``taxLines`` as (rate, amount) pairs; ``None`` when the query did not ask for them."""
    value = item.get("taxLines")
    if value is None:
        return None
    if not isinstance(value, list):
        problems.add("parseable_money", f"{label} taxLines is {shown(value)}, not a list")
        return []
    parts: TaxParts = []
    for number, tax in enumerate(value, start=1):
        where = f"{label} taxLines[{number}]"
        if not isinstance(tax, dict):
            problems.add("parseable_money", f"{where} is {shown(tax)}, not a TaxLine")
            parts.append((None, None))
            continue
        amount = _money_set(tax, "priceSet", f"{where} priceSet", currency, problems)
        rate = money(tax.get("rate"), f"{where} rate", problems, required=False)
        parts.append((rate, amount))
    return parts


def _line(item: object, number: int, currency: str, problems: Problems) -> tuple[LineItem, TaxParts | None]:
    label = f"line {number}"
    if not isinstance(item, dict):
        problems.add("parseable_lines", f"{label} is a {type(item).__name__}, not an object")
        return LineItem(number, "", "", None, None, None, None), None
    taxes = _tax_parts(item, label, currency, problems)
    line = LineItem(
        line_number=number,
        sku=text(item.get("sku")),
        product_name=text(item.get("name")),
        quantity=quantity(item.get("quantity"), f"{label} quantity", problems),
        unit_price=_money_set(
            item, "originalUnitPriceSet", f"{label} originalUnitPriceSet", currency, problems
        ),
        line_subtotal=_money_set(item, "originalTotalSet", f"{label} originalTotalSet", currency, problems),
        line_total=_money_set(item, "discountedTotalSet", f"{label} discountedTotalSet", currency, problems),
        line_tax=None if taxes is None else total([amount for _rate, amount in taxes]),
    )
    return line, taxes


@dataclass(frozen=True, slots=True)
class _Amounts:
    """An order's amounts as the orders file states them (before tax)."""

    lines: tuple[LineItem, ...]
    subtotal: Decimal | None
    discount: Decimal | None
    shipping: Decimal | None


def _net_of_tax(
    gross: _Amounts,
    taxes: Sequence[TaxParts | None],
    amounts: Mapping[str, Decimal | None],
    currency: str,
    problems: Problems,
) -> _Amounts:
    """The amounts of a ``taxesIncluded`` order before tax (the module docstring has the rules).

    ``amounts`` holds the order's ``tax``, ``fees`` and ``total``. Returns ``gross`` unchanged
    (and adds a ``tax_included_prices`` problem) when the net amounts cannot be derived.
    """
    rule = "tax_included_prices"
    tax, fees, order_total = amounts["tax"], amounts["fees"], amounts["total"]
    known = (gross.discount, gross.shipping, tax, fees, order_total)
    if any(v is None for v in known) or any(
        line.line_subtotal is None or line.line_total is None for line in gross.lines
    ):
        return gross  # the unparseable value is a problem already
    if not is_valid_currency(currency):
        problems.add(
            rule, f"prices include tax and currency {shown(currency)} has no known decimals to round to"
        )
        return gross
    assert gross.discount is not None and gross.shipping is not None
    assert tax is not None and fees is not None and order_total is not None
    discounted = gross.discount != 0
    # Shopify's line tax is on the line after every discount: exactly line_total's tax unless
    # some discount is not on the lines (order level, shipping)
    exact = not discounted or gross.discount == sum(
        ((line.line_subtotal or 0) - (line.line_total or 0) for line in gross.lines), Decimal(0)
    )
    lines: list[LineItem] = []
    for line, parts in zip(gross.lines, taxes, strict=True):
        assert line.line_subtotal is not None and line.line_total is not None
        if parts is None:
            problems.add(
                rule,
                f"line {line.line_number}: prices include tax and the line came without its "
                "taxLines, so its price before tax cannot be derived",
            )
            return gross
        if line.line_tax is None:
            return gross  # a tax line did not parse: a problem already
        line_tax = line.line_tax
        rates = [rate for rate, _amount in parts]
        by_rate = not exact or line.line_subtotal != line.line_total
        if by_rate and line_tax and any(rate is None for rate in rates):
            problems.add(
                rule,
                f"line {line.line_number}: prices include tax, the order has discounts and the "
                "line's tax lines have no rate, so its price before tax and discounts cannot be derived",
            )
            return gross
        extract = _extractor([r for r in rates if r is not None], currency)
        after = line.line_total - (line_tax if exact else extract(line.line_total))
        subtotal = line.line_subtotal - (extract(line.line_subtotal) if by_rate else line_tax)
        unit = unit_price(subtotal, line.quantity, currency, f"line {line.line_number}", problems)
        lines.append(
            replace(line, unit_price=unit, line_subtotal=subtotal, line_total=after, line_tax=line_tax)
        )
    lines_tax = sum((line.line_tax or Decimal(0) for line in lines), Decimal(0))
    shipping_tax = tax - lines_tax
    if shipping_tax < 0 or shipping_tax > gross.shipping:
        problems.add(
            rule,
            f"prices include tax: totalTaxSet {tax} less the lines' tax {lines_tax} leaves "
            f"{shipping_tax} for shipping, whose price is {gross.shipping}",
        )
        return gross
    subtotal_net = sum((line.line_subtotal or Decimal(0) for line in lines), Decimal(0))
    shipping_net = gross.shipping - shipping_tax
    discount = subtotal_net + shipping_net + fees + tax - order_total if discounted else Decimal(0)
    if not Decimal(0) <= discount <= gross.discount:
        problems.add(
            rule,
            f"prices include tax: the net discount derived is {discount} (net subtotal "
            f"{subtotal_net} + net shipping {shipping_net} + fees {fees} + tax {tax} - total "
            f"{order_total}), outside 0 to totalDiscountsSet {gross.discount}",
        )
        return gross
    return _Amounts(tuple(lines), subtotal_net, discount, shipping_net)


def _extractor(rates: Sequence[Decimal], currency: str) -> Callable[[Decimal], Decimal]:
    """The tax inside a gross amount at ``rates`` (each tax line rounded half-up on its own)."""
    combined = 1 + sum(rates, Decimal(0))

    def tax_in(amount: Decimal) -> Decimal:
        return sum((quantize(amount * rate / combined, currency) for rate in rates), Decimal(0))

    return tax_in


def _order_id(raw: Mapping[str, Any], problems: Problems) -> str:
    """``legacyResourceId`` as text, checked against the GID; ``""`` (and a problem) when unusable."""
    value = raw.get("legacyResourceId")
    number = parse_order_id(value)
    if number is None:
        problems.add(
            "order_id_present",
            "legacyResourceId is missing"
            if value in (None, "")
            else f"legacyResourceId {shown(value)} is not a Shopify order id (an integer from 1 to 2^64-1)",
        )
        return ""
    from_gid = gid_number(raw.get("id"))
    if from_gid != number:
        problems.add(
            "order_id_present",
            f"id {shown(raw.get('id'))} is not gid://shopify/Order/{number}, the "
            f"GraphQL id of legacyResourceId {number}",
        )
        return ""
    return str(number)


def _fees(raw: Mapping[str, Any], currency: str, problems: Problems) -> Decimal | None:
    parts = [
        _money_set(raw, key, key, currency, problems, required=False)
        if raw.get(key) is not None
        else Decimal(0)
        for key in FEE_FIELDS
    ]
    return total(parts)


def _normalise(raw: Mapping[str, Any], store_id: str, problems: Problems) -> Order:
    currency = text(raw.get("currencyCode"))
    parsed = [
        _line(item, number, currency, problems) for number, item in enumerate(_line_nodes(raw, problems), 1)
    ]
    lines = tuple(line for line, _taxes in parsed)
    email = text(raw.get("email"))
    billing = _address(raw.get("billingAddress"), "billingAddress", email, problems)
    shipping = _address(raw.get("shippingAddress"), "shippingAddress", "", problems)
    status = order_status(raw)
    if not status:
        problems.add("status_present", "displayFinancialStatus is missing and the order is not cancelled")
    requires_shipping = raw.get("requiresShipping")
    if not isinstance(requires_shipping, bool):
        requires_shipping = (
            any(
                isinstance(n, dict) and n.get("requiresShipping") is True
                for n in _line_nodes(raw, Problems())
            )
            or not shipping.is_empty()
        )
    amounts = _Amounts(
        lines,
        total([line.line_subtotal for line in lines]),
        _money_set(raw, "totalDiscountsSet", "totalDiscountsSet", currency, problems),
        _money_set(raw, "totalShippingPriceSet", "totalShippingPriceSet", currency, problems),
    )
    others = {
        "fees": _fees(raw, currency, problems),
        "tax": _money_set(raw, "totalTaxSet", "totalTaxSet", currency, problems),
        "total": _money_set(raw, "totalPriceSet", "totalPriceSet", currency, problems),
    }
    if raw.get("taxesIncluded") is True:
        amounts = _net_of_tax(amounts, [taxes for _line, taxes in parsed], others, currency, problems)
    order = Order(
        store_id=store_id,
        order_id=_order_id(raw, problems),
        order_number=text(raw.get("name")),
        status=status,
        created_at=time_field(raw, "createdAt", problems),
        updated_at=time_field(raw, "updatedAt", problems),
        currency=currency,
        customer_email=email,
        billing=billing,
        shipping=shipping,
        lines=amounts.lines,
        subtotal=amounts.subtotal,
        discount=amounts.discount,
        shipping_total=amounts.shipping,
        fees=others["fees"],
        tax=others["tax"],
        total=others["total"],
        customer_note=text(without_markers(raw.get("note"))),
        needs_shipping=requires_shipping,
    )
    check_dates(order, problems, "createdAt", "updatedAt")
    check_text(order, problems, ADDRESS_KEYS)
    return replace(order, parse_problems=tuple(problems.items)) if problems.items else order


def normalise_order(raw: dict[str, Any], store_id: str) -> Order:
    """A Shopify Admin GraphQL order dict as the canonical :class:`Order`. Pure; never raises.

    A value that cannot be parsed becomes ``None`` and adds a problem naming the field and the
    value (``parseable_money``, ``parseable_quantity``, ``parseable_date``, ``order_id_present``,
    ``parseable_lines``, ``parseable_address``, ``status_present``, ``currency_consistent``,
    ``normalisable``), and so does a value that parses but must not go on (``plausible_date``,
    ``safe_text``, ``text_length``, ``tax_included_prices``). See the module docstring for the
    fields used.
    """
    problems = Problems()
    if not isinstance(raw, dict):
        problems.add("normalisable", f"the order is a {type(raw).__name__}, not an object")
        raw = {}
    try:
        return _normalise(raw, store_id, problems)
    except Exception as exc:  # last resort: a malformed order must never stop the batch
        log.exception(
            "shopify: order %s could not be normalised (store %s); quarantined as 'normalisable'",
            shown(raw.get("legacyResourceId")),
            store_id,
        )
        problems.add("normalisable", f"unexpected {type(exc).__name__}: {exc}")
        return unnormalisable(
            store_id,
            parse_order_id(raw.get("legacyResourceId")),
            problems,
            number=text(raw.get("name")),
            status=order_status(raw),
            currency=text(raw.get("currencyCode")),
        )


def identify(raw: object) -> tuple[str, str]:
    """``(order_id, status)`` of a raw order as :func:`normalise_order` gives them, the rest unread."""
    if not isinstance(raw, dict):
        return "", ""
    return _order_id(raw, Problems()), order_status(raw)


class ShopifyNormaliser:
    """The normaliser alone (what validation needs), without a client or a connection."""

    platform = "shopify"

    @staticmethod
    def normalise(raw: dict[str, Any], store_id: str) -> Order:
        return normalise_order(raw, store_id)

    @staticmethod
    def identify(raw: dict[str, Any]) -> tuple[str, str]:
        return identify(raw)
