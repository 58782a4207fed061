"""Shopify's side of the backend's money events (``paid``, ``refunded``): what the order's money
looks like to the status sync, Shopify's rules for both events, and the documents the applier
(:class:`~order_integration.storefronts.shopify_status.ShopifyStatus`) sends.

The order's money (:func:`payment`, from the status read): ``total`` = ``totalPriceSet`` and the
currency its ``shopMoney`` currency (what the orders file carries); *paid* = ``fullyPaid`` or a
``displayFinancialStatus`` of ``PAID``/``PARTIALLY_REFUNDED``/``REFUNDED``; *refunded so far* =
``totalRefundedSet`` (money Shopify moved) plus the backend's own refunds this package recorded
without a transaction (:func:`add_refunds`, read from the order's ``refunds`` when a ``refunded``
event needs them).

``paid`` — ``orderMarkAsPaid(input: {id})``. It takes no transaction id (its input is only the
order), so the backend's reference is recorded in the order's staff note as the event's marker
line (``[order-integration] Payment of … booked by the backend on … (reference R).``), written
*before* the mutation; a marker line with ``(reference R).`` on an order Shopify shows paid is
the event, recovered. Shopify marks an order paid only with a positive outstanding balance and a
status other than ``PAID``, recording a manual sale for the outstanding amount — or *capturing an
existing authorization* through its gateway. So: ``pending``/``partially_paid`` → marked paid;
``authorized`` → the marker line only (ending :data:`NOTED_ONLY`, so it is never taken for a
payment to complete), refused ("noted, not marked paid": marking it would take
the customer's authorized money through the gateway); ``paid``/``partially_refunded`` without our
marker → the marker line only, refused (already paid on the storefront, no second payment).

``refunded`` — ``refundCreate`` **without** ``transactions`` (no money through any gateway: the
backend refunded already), ``notify: false``, with ``@idempotent(key:)`` (required from 2026-04;
the key is derived from the order, the reference and the request, so a retry of the same request
is answered by Shopify with the first result). A line refund (``sku``+``quantity``) names the
order's line items of that SKU with units still on them (``currentQuantity``), ``restockType``
``NO_RESTOCK`` — or, with the store's ``restock_refunds``, ``CANCEL`` for units not fulfilled yet
and ``RETURN`` for fulfilled ones. A whole-order refund has no line items. The refund's ``note``
is the event's note text, then the marker line :func:`refund_marker`
(``[order-integration] backend refund 12.30 EUR, reference CN-1``): how the refund is recognised
later (the reference) and counted in *refunded so far* (the amount; Shopify's own totals do not
count a refund without a transaction). Shopify's financial status does not change (no money
moved through Shopify), so neither does the status word.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from order_integration.currency import format_money, is_valid_currency
from order_integration.storefronts.base import Effect, OrderState, Payment
from order_integration.storefronts.normalise import decimal_or_none
from order_integration.storefronts.shopify_normalise import MARKER_PREFIX

if TYPE_CHECKING:
    from order_integration.backend.status_files import StatusEvent

#: Financial statuses of an order Shopify counts as paid.
PAID_STATUSES = ("paid", "partially_refunded", "refunded")
#: Statuses ``orderMarkAsPaid`` turns into ``paid`` with a manual sale (no gateway involved).
MARKABLE = ("pending", "partially_paid")
#: Refunds (and their line items) one ``REFUNDS_QUERY`` reads; an order with more is refused.
MAX_REFUNDS = 8
MAX_REFUND_LINES = 10

_MONEY = "shopMoney { amount currencyCode }"
#: What :data:`~.shopify_status.READ_QUERY` asks besides the status fields (cost 4).
ORDER_MONEY_FIELDS = f"fullyPaid totalPriceSet {{ {_MONEY} }} totalRefundedSet {{ {_MONEY} }}"
_REFUND_FIELDS = (f"id note totalRefundedSet {{ {_MONEY} }} refundLineItems(first: {MAX_REFUND_LINES}) "
                  "{ nodes { quantity lineItem { id sku } } pageInfo { hasNextPage } }")
REFUNDS_QUERY = (
    "query StatusRefunds($id: ID!) { node(id: $id) { ... on Order { id "
    f"refunds(first: {MAX_REFUNDS}) {{ {_REFUND_FIELDS} }} }} }} }}"
)
#: Requested cost of :data:`REFUNDS_QUERY` (Shopify's rules: objects 1, connections 2 + first x node).
REFUNDS_COST = 1 + MAX_REFUNDS * (1 + 2 + 2 + MAX_REFUND_LINES * 2)
PAID_QUERY = ("query StatusPaid($id: ID!) { node(id: $id) { ... on Order { id displayFinancialStatus "
              "fullyPaid } } }")
MARK_PAID_MUTATION = """mutation StatusMarkPaid($input: OrderMarkAsPaidInput!) {
  orderMarkAsPaid(input: $input) {
    order { id displayFinancialStatus fullyPaid }
    userErrors { field message }
  }
}"""
REFUND_MUTATION = f"""mutation StatusRefund($input: RefundInput!, $key: String!) {{
  refundCreate(input: $input) @idempotent(key: $key) {{
    refund {{ {_REFUND_FIELDS} }}
    userErrors {{ field message }}
  }}
}}"""

_REFUND_MARK = re.compile(
    re.escape(MARKER_PREFIX) + r"backend refund ([0-9]+(?:\.[0-9]+)?) ([A-Z]{3}), reference (.+)")




def _shop_money(bag: object) -> tuple[Decimal | None, str]:
    money = bag.get("shopMoney") if isinstance(bag, dict) else None
    if not isinstance(money, dict):
        return None, ""
    return decimal_or_none(money.get("amount")), str(money.get("currencyCode") or "")


def payment(raw: dict[str, Any], status: str) -> Payment:
    """The order's money from the status read (:data:`ORDER_MONEY_FIELDS`); the backend's own
    refunds are added by :func:`add_refunds` when a ``refunded`` event needs them."""
    total, currency = _shop_money(raw.get("totalPriceSet"))
    refunded, _ = _shop_money(raw.get("totalRefundedSet"))
    return Payment(currency=currency, total=total, refunded=refunded or Decimal(0),
                   paid=bool(raw.get("fullyPaid")) or status in PAID_STATUSES)


# -- marker lines ------------------------------------------------------------------------------


def refund_marker(event: StatusEvent) -> str:
    """The machine-readable line of a backend refund's note: amount, currency, reference."""
    amount = event.amount or Decimal(0)
    shown = format_money(amount, event.currency) if is_valid_currency(event.currency) else str(amount)
    return f"{MARKER_PREFIX}backend refund {shown} {event.currency}, reference {event.reference}"


def refund_note(event: StatusEvent, note: str) -> str:
    """A backend refund's ``note``: the event's note text (what the merchant reads), then its marker."""
    return f"{' '.join(note.split())}\n{refund_marker(event)}"


def refund_mark(note: object) -> tuple[Decimal, str, str] | None:
    """(amount, currency, reference) of the marker line in a refund's note, else ``None``."""
    for line in str(note or "").splitlines():
        found = _REFUND_MARK.fullmatch(line.strip())
        if found:
            return Decimal(found.group(1)), found.group(2), found.group(3)
    return None


#: Ends the marker line of a ``paid`` written as its note only: not a payment to complete.
NOTED_ONLY = " [noted only, not marked paid]"


def noted_only(note: str) -> str:
    """The text of a ``paid`` event's marker line when it is written as a note only."""
    return f"{note}{NOTED_ONLY}"


def payment_marked(order_note: object, reference: str) -> bool:
    """Whether the order's note has the marker line of a backend payment with this reference
    (a payment we mark or marked; a line written as a note only does not count)."""
    want = f"(reference {reference})."
    start = MARKER_PREFIX + "Payment"
    return any(line.startswith(start) and want in line and not line.rstrip().endswith(NOTED_ONLY.strip())
               for line in str(order_note or "").splitlines())


def add_refunds(order: OrderState, refunds: list[Any]) -> str | None:
    """What the order's refunds (:data:`REFUNDS_QUERY`) add to ``order.payment``: the references
    of the backend's refunds, and their amounts to *refunded so far* (Shopify's totals count only
    money it moved, which these refunds did not). Returns why they cannot be used (more refunds
    or refund lines than one read takes), else ``None``.

    ``refunded_units`` stays as it is: the status read's lines are Shopify's ``currentQuantity``,
    which already leaves refunded units out."""
    money = order.payment
    if money is None:
        return None
    if len(refunds) >= MAX_REFUNDS:
        return (f"order has {MAX_REFUNDS} or more refunds, more than the status sync reads; "
                "apply this event in Shopify")
    for refund in refunds:
        if not isinstance(refund, dict):
            continue
        lines = refund.get("refundLineItems")
        if isinstance(lines, dict) and (lines.get("pageInfo") or {}).get("hasNextPage"):
            return ("a refund of the order has more lines than the status sync reads; "
                    "apply this event in Shopify")
        mark = refund_mark(refund.get("note"))
        if mark is None:
            continue
        amount, _currency, reference = mark
        money.references.add(reference)
        moved, _ = _shop_money(refund.get("totalRefundedSet"))
        money.refunded += max(Decimal(0), amount - (moved or Decimal(0)))
    return None


# -- the rules ---------------------------------------------------------------------------------


def decide_paid(event: StatusEvent, order: OrderState) -> Effect:
    """``paid`` under Shopify's rules (the module docstring); the caller refused cancelled and
    final orders already. The note's room is the caller's check."""
    status, money = order.status, order.payment
    paid = money is not None and money.paid
    mine = payment_marked(order.cache.get("note"), event.reference) or (
        money is not None and money.transaction_id == event.reference)
    if mine:
        # marked paid by us (recovered), or marker written and the run stopped before the mutation
        return Effect("paid" if status == "paid" else None, recovered=True) if paid else Effect("paid")
    if paid:
        return Effect(None, note_only="order is already paid on the storefront; "
                                      "noted, no second payment marked")
    if status == "authorized":
        return Effect(None, note_only=(
            "order has a payment authorized by its gateway, waiting for capture in Shopify (marking it paid "
            "would capture it); noted, not marked paid"))
    return Effect("paid")


def decide_refunded(event: StatusEvent, order: OrderState) -> Effect | str:
    """``refunded`` under Shopify's rules; the order's refunds were read (:func:`add_refunds`)."""
    money = order.payment
    if money is not None and event.reference in money.references:
        return Effect(None, recovered=True)
    if money is None or not money.paid:
        return f"order is {order.status!r} and not paid on the storefront: there is nothing to refund"
    return Effect(None)


def refund_lines(order: OrderState, sku: str, quantity: int, *, restock: bool) -> list[dict[str, Any]]:
    """``refundLineItems`` for ``quantity`` units of ``sku``: the order's lines of that SKU in
    order, skipping units earlier events of this file refunded; ``restockType`` per ``restock``
    (``CANCEL`` for a line's units not fulfilled yet, else ``RETURN``)."""
    before = order.payment.refunded_units.get(sku, 0) if order.payment is not None else 0
    out, left = [], quantity
    for line in order.cache.get("line_items", []):
        if line["sku"] != sku or left <= 0:
            continue
        skip = min(before, line["current"])
        before -= skip
        take = min(line["current"] - skip, left)
        if take <= 0:
            continue
        item: dict[str, Any] = {"lineItemId": line["id"], "quantity": take, "restockType": "NO_RESTOCK"}
        if restock:
            unfulfilled = line["current"] - line["fulfilled"]
            item["restockType"] = "CANCEL" if take <= unfulfilled else "RETURN"
        out.append(item)
        left -= take
    return out


def idempotency_key(order_gid: str, reference: str, refund: dict[str, Any]) -> str:
    """A UUID for this refund request: the same order, reference and request give the same key
    (a retry), anything else another one (a corrected line after a refusal is a new request)."""
    digest = hashlib.sha256(json.dumps(refund, sort_keys=True).encode()).hexdigest()
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"order-integration:{order_gid}:refund:{reference}:{digest}"))
