"""WooCommerce's rules for the backend's status events (what :meth:`WooCommerceWriter.decide`
applies): which status an event moves an order to, and which orders it may not touch.

=============  ==========================================================================
``accepted``   ``pending``/``on-hold`` → ``processing``; ``processing``: note only. Private note.
``shipped``    whole order: → ``completed`` (already ``completed``: note only). Partial
               (``sku``+``quantity``): note only, and → ``completed`` once every line is
               fully shipped. Customer note with carrier, tracking number and URL.
``cancelled``  ``pending``/``on-hold``/``processing`` → ``cancelled``. Private note.
``rejected``   ``pending``/``processing`` → ``on-hold``; ``on-hold``: note only. Private note
               with the backend's reason.
``paid``       ``pending``/``failed`` → ``set_paid: true`` with ``transaction_id`` = the
               reference (WooCommerce's ``payment_complete``: ``processing``, ``date_paid``);
               ``on-hold`` → ``status: processing`` and ``transaction_id`` written by us
               (``set_paid`` does nothing there). Private note. An order the storefront
               already shows paid (``date_paid``, or ``processing``/``completed``/``refunded``)
               with another transaction: the note only, reported as refused (no second payment).
``refunded``   ``POST /orders/{id}/refunds`` with ``api_refund: false`` (the backend moved the
               money), ``api_restock`` per the store's ``restock_refunds``, the reference in the
               refund's ``meta_data`` and reason; for ``processing``/``completed`` orders (and
               paid ``on-hold`` ones). WooCommerce itself moves a fully refunded order to
               ``refunded``. Private note.
=============  ==========================================================================

Money events are recognised on the order: a ``paid`` whose reference is the order's
``transaction_id``, a ``refunded`` whose reference is on one of the order's refunds
(:data:`REFERENCE_META` or the reason's :func:`reason_text` marker) is ``recovered``.

Refused: any event for a ``cancelled`` order; a move backwards (``accepted``/``cancelled``/
``rejected`` for a ``completed`` order); any event for an order in another status
(``refunded``, ``failed``, drafts: the sync only moves orders it knows how to move).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from order_integration.currency import apportion, format_money, minor_units, to_minor
from order_integration.storefronts.base import Effect, OrderState, Payment
from order_integration.storefronts.normalise import decimal_or_none

if TYPE_CHECKING:
    from order_integration.backend.status_files import StatusEvent

#: The statuses the sync moves orders out of.
ACTIVE = ("pending", "on-hold", "processing")
#: Statuses in which ``set_paid`` completes the payment (``WC_Order::needs_payment``).
NEEDS_PAYMENT = ("pending", "failed")
#: Statuses of an order WooCommerce counts as paid.
PAID = ("processing", "completed", "refunded")
#: The refund meta key that keeps the backend's reference (no leading ``_``: WooCommerce hides
#: protected meta from the REST answer, and we must read it back).
REFERENCE_META = "order_integration_reference"
_MARK = re.compile(r"\(backend reference (.+)\)\Z", re.DOTALL)


def reason_text(note: str, reference: str) -> str:
    """A refund's reason: the backend's ``note`` and a marker with its reference (shown to the
    merchant in the order screen; a second way to recognise the refund)."""
    return f"{note or 'Refund booked by the backend'} (backend reference {reference})"




def payment(raw: dict[str, Any]) -> Payment:
    """The order's money from ``GET /orders``: ``total``, ``refunds[]`` (``total`` negative,
    ``reason`` with our marker), ``date_paid``, ``transaction_id``."""
    refunded = Decimal(0)
    references: set[str] = set()
    for refund in raw.get("refunds") or []:
        if not isinstance(refund, dict):
            continue
        refunded += abs(decimal_or_none(refund.get("total")) or Decimal(0))
        mark = _MARK.search(str(refund.get("reason") or ""))
        if mark:
            references.add(mark.group(1))
    return Payment(
        currency=str(raw.get("currency") or ""), total=decimal_or_none(raw.get("total")), refunded=refunded,
        paid=bool(raw.get("date_paid_gmt") or raw.get("date_paid")),
        transaction_id=str(raw.get("transaction_id") or ""), references=references,
    )


def add_refunds(order: OrderState, refunds: list[Any]) -> None:
    """What ``GET /orders/{id}/refunds`` adds to ``order.payment``: the references in the
    refunds' meta, and the units refunded per SKU (refund line items carry negative quantities)."""
    if order.payment is None:
        return
    units: dict[str, int] = {}
    for refund in refunds:
        if not isinstance(refund, dict):
            continue
        for meta in refund.get("meta_data") or []:
            if isinstance(meta, dict) and meta.get("key") == REFERENCE_META and meta.get("value"):
                order.payment.references.add(str(meta["value"]))
        for item in refund.get("line_items") or []:
            qty = item.get("quantity") if isinstance(item, dict) else None
            sku = str(item.get("sku") or "").strip() if isinstance(item, dict) else ""
            if sku and isinstance(qty, int) and not isinstance(qty, bool):
                units[sku] = units.get(sku, 0) + abs(qty)
    order.payment.refunded_units = units


def order_state(raw: dict[str, Any]) -> OrderState:
    """A WooCommerce order (``GET /orders``) as the status sync sees it: its status, its
    ``line_items`` by SKU (lines without a positive integer quantity are no lines) and its
    money. ``cache["line_ids"]``: SKU → the ids and quantities of its lines (a line refund
    names line items by id)."""
    lines: dict[str, tuple[int, str]] = {}
    line_ids: dict[str, list[tuple[int, int]]] = {}
    line_money: dict[int, LineMoney] = {}
    without_sku = False
    for item in raw.get("line_items") or []:
        if not isinstance(item, dict):
            continue
        qty = item.get("quantity")
        if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
            continue
        sku = str(item.get("sku") or "").strip()
        if not sku:
            without_sku = True
            continue
        units, name = lines.get(sku, (0, str(item.get("name") or sku)))
        lines[sku] = (units + qty, name)
        if isinstance(item.get("id"), int):
            line_ids.setdefault(sku, []).append((item["id"], qty))
            if (money := _line_money(item, qty)) is not None:
                line_money[item["id"]] = money
    return OrderState(int(raw["id"]), str(raw.get("status", "")), lines, without_sku,
                      cache={"line_ids": line_ids, "line_money": line_money}, payment=payment(raw))


@dataclass(frozen=True, slots=True)
class LineMoney:
    """A line item's money as WooCommerce shows it: its units, ``total`` (after discounts,
    before tax) and its tax per tax rate id (``taxes[].total``)."""

    units: int
    net: Decimal
    taxes: tuple[tuple[int, Decimal], ...]

    @property
    def gross(self) -> Decimal:
        return self.net + sum((tax for _rate, tax in self.taxes), Decimal(0))


def _line_money(item: dict[str, Any], units: int) -> LineMoney | None:
    """The line's :class:`LineMoney`, or ``None`` when any of it is not a plain amount
    (then a refund of that line is not split into net and tax)."""
    net = decimal_or_none(item.get("total"))
    taxes = []
    for tax in item.get("taxes") or []:
        rate = tax.get("id") if isinstance(tax, dict) else None
        amount = decimal_or_none(tax.get("total")) if isinstance(tax, dict) else None
        if not isinstance(rate, int) or isinstance(rate, bool) or amount is None:
            return None
        if amount:
            taxes.append((rate, amount))
    if net is None or net < 0 or any(amount < 0 for _rate, amount in taxes):
        return None
    return LineMoney(units, net, tuple(taxes))


def refund_line_items(amount: Decimal, currency: str, picks: Sequence[dict[str, Any]],
                      line_money: Mapping[int, LineMoney]) -> list[dict[str, Any]]:
    """The ``line_items`` of a refund of ``amount`` (what the backend refunded, tax included)
    for ``picks`` (``[{"id", "quantity"}]``, the units refunded per line item), as WooCommerce's
    own refund form sends them: each line gets its share of the amount by the value (tax
    included) of the units refunded, and each share is split into ``refund_total`` (net) and
    ``refund_tax`` per tax rate in the line's own proportions, so the refund's lines and tax
    report what was refunded. The parts are whole minor units and add up to the amount. Where
    a line's money is unknown or nothing has a value, the whole amount goes on the first line
    as ``refund_total`` (WooCommerce records the refund's ``amount`` either way)."""
    def fmt(minor: int) -> str:
        return format_money(Decimal(minor).scaleb(-minor_units(currency)), currency)

    total = to_minor(amount, currency)
    money = [line_money.get(pick["id"]) for pick in picks]
    weights = [m.gross * pick["quantity"] / m.units for m, pick in zip(money, picks, strict=True)
               if m is not None and m.units > 0]
    if len(weights) != len(picks) or not any(weights):
        return [{**pick, "refund_total": fmt(total if n == 0 else 0)} for n, pick in enumerate(picks)]
    items = []
    for pick, share, line in zip(picks, apportion(total, weights), money, strict=True):
        assert line is not None
        parts = apportion(share, [line.net, *(tax for _rate, tax in line.taxes)]) if line.gross else [share]
        item = {**pick, "refund_total": fmt(parts[0])}
        if line.taxes and line.gross:
            item["refund_tax"] = [{"id": rate, "refund_total": fmt(part)}
                                  for (rate, _tax), part in zip(line.taxes, parts[1:], strict=True)]
        items.append(item)
    return items


def _backwards(event: StatusEvent, status: str) -> str:
    return f"order is {status!r}; {event.event!r} would move it backwards"


def _not_movable(status: str) -> str:
    return f"order is {status!r}; the status sync only changes pending, on-hold and processing orders"


def _paid(event: StatusEvent, order: OrderState) -> Effect | str:
    status, money = order.status, order.payment
    if money is not None and money.transaction_id == event.reference:
        return Effect("processing" if status == "processing" else None, recovered=True)
    if (money is not None and money.paid) or status in PAID:
        other = f" (transaction {money.transaction_id})" if money is not None and money.transaction_id else ""
        return Effect(None, note_only=f"order is already paid on the storefront{other}; "
                                      "noted, no second payment marked")
    if status in (*NEEDS_PAYMENT, "on-hold"):
        return Effect("processing")
    return _not_movable(status)


def _refunded(event: StatusEvent, order: OrderState) -> Effect | str:
    status, money = order.status, order.payment
    if money is not None and event.reference in money.references:
        return Effect("refunded" if status == "refunded" else None, recovered=True)
    paid = (money is not None and money.paid) or status in PAID
    if not paid:
        return f"order is {status!r} and not paid on the storefront: there is nothing to refund"
    if status not in (*PAID, "on-hold"):
        return _not_movable(status)
    whole = money is not None and event.amount is not None and event.amount >= money.refundable
    return Effect("refunded" if whole else None)  # WooCommerce sets it on a full refund


def decide(event: StatusEvent, order: OrderState, *, fully_shipped: bool) -> Effect | str:
    """The event's effect under WooCommerce's status machine (the table above), or why not."""
    status = order.status
    if status == "cancelled":
        return "order is cancelled on the storefront"
    if event.event == "paid":
        return _paid(event, order)
    if event.event == "refunded":
        return _refunded(event, order)
    if event.event == "shipped":
        if status not in (*ACTIVE, "completed"):
            return _not_movable(status)
        if event.sku is None:
            return Effect("completed", customer_note=True)
        return Effect("completed" if fully_shipped else None, customer_note=True)
    if status == "completed":
        return _backwards(event, status)
    if status not in ACTIVE:
        return _not_movable(status)
    target = {"accepted": "processing", "cancelled": "cancelled"}.get(event.event, "on-hold")
    return Effect(target)
