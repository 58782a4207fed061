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
=============  ==========================================================================

Refused: any event for a ``cancelled`` order; a move backwards (``accepted``/``cancelled``/
``rejected`` for a ``completed`` order); any event for an order in another status
(``refunded``, ``failed``, drafts: the sync only moves orders it knows how to move).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from order_integration.storefronts.base import Effect, OrderState

if TYPE_CHECKING:
    from order_integration.backend.status_files import StatusEvent

#: The statuses the sync moves orders out of.
ACTIVE = ("pending", "on-hold", "processing")


def order_state(raw: dict[str, Any]) -> OrderState:
    """A WooCommerce order (``GET /orders``) as the status sync sees it: its status and its
    ``line_items`` by SKU (lines without a positive integer quantity are no lines)."""
    lines: dict[str, tuple[int, str]] = {}
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
    return OrderState(int(raw["id"]), str(raw.get("status", "")), lines, without_sku)


def _backwards(event: StatusEvent, status: str) -> str:
    return f"order is {status!r}; {event.event!r} would move it backwards"


def _not_movable(status: str) -> str:
    return f"order is {status!r}; the status sync only changes pending, on-hold and processing orders"


def decide(event: StatusEvent, order: OrderState, *, fully_shipped: bool) -> Effect | str:
    """The event's effect under WooCommerce's status machine (the table above), or why not."""
    status = order.status
    if status == "cancelled":
        return "order is cancelled on the storefront"
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
