"""Shopify's rules for the backend's status events and the applier that writes them (Admin
GraphQL, the transport of :mod:`.shopify_graphql`): the status sync's
:class:`~order_integration.storefronts.base.StatusApplier` for Shopify.

Orders are named by their numeric ``legacyResourceId`` (GID ``gid://shopify/Order/<n>``); the
status word is ``cancelled`` when ``cancelledAt`` is set, else ``displayFinancialStatus`` in
lower snake case (``paid``, ``partially_paid``, ``authorized``…). Shopify keeps fulfilment apart
from the financial status, so only ``cancelled`` changes the status word.

=============  ==========================================================================
``accepted``   tags: ``tagsAdd erp-accepted``, ``tagsRemove erp-rejected``. Marker line.
``shipped``    ``fulfillmentCreate`` (``notifyCustomer: true``, ``trackingInfo`` company =
               carrier, number, url) on the open fulfillment orders: whole order (no sku):
               every remaining unit; by line (``sku`` + ``quantity``): that many units of the
               SKU, spread over fulfillment-order line items with remaining quantity.
               Marker line.
``cancelled``  ``orderCancel`` (reason ``OTHER``, ``refundMethod:
               {originalPaymentMethodsRefund: false}`` — no refund; the ``refund`` argument is
               deprecated —, ``restock: false``, ``notifyCustomer: false``, ``staffNote`` the
               event's note, cut to Shopify's 255 characters). → ``cancelled``. Marker line.
``rejected``   tags: ``tagsAdd erp-rejected``, ``tagsRemove erp-accepted``. Marker line with
               the backend's reason.
``paid``       marker line (with the reference) first, then ``orderMarkAsPaid`` for a
               ``pending``/``partially_paid`` order (→ ``paid``); ``authorized``, ``paid``,
               ``partially_refunded``: the marker line only, reported refused. See
               :mod:`.shopify_money`.
``refunded``   ``refundCreate`` without transactions (no money moved), line items for
               ``sku``+``quantity`` (restock per ``restock_refunds``), the note and a marker line
               with amount and reference on the refund; the status word does not change.
=============  ==========================================================================

The *marker line* is ``[order-integration] `` and the event's note text (deterministic, it
carries the event's time), on one line of its own appended to the order's ``note``
(``orderUpdate(input: {id, note})``, Shopify's staff-visible order note, at most 5,000
characters). The normaliser leaves these lines out of the exported ``customer_note``, so a
status written back is not sent to the backend again as a changed order.

Refused (``decide``): any event for a ``cancelled`` order ("order is cancelled on the
storefront"; except a ``cancelled`` event whose marker is on it: ours, recovered); any event
for an order whose status is ``refunded``, ``voided`` or ``expired`` (or a word the sync does
not know: it moves ``pending``, ``authorized``, ``partially_paid``, ``paid`` and
``partially_refunded`` orders only); ``accepted``/``rejected``/``cancelled`` for a fully
fulfilled order (a move backwards); a whole-order shipment when nothing remains to fulfil and no
fulfillment carries the event's tracking number; a shipment whose units are only on fulfillment
orders Shopify will not fulfil now (``ON_HOLD``, ``SCHEDULED``…); a marker line that no longer
fits in the note. Shopify's own refusals (``userErrors``) are the change's error:
``"<mutation> refused by the storefront: <field>: <message>"``.

Idempotency, answered by Shopify
--------------------------------
Re-applying an event changes nothing; the marker line in the note is the event's proof, and
each event's writes are ordered so that a run stopping between two of them is completed by the
next run (the status sync's ledger row may be missing after a crash):

* ``shipped``: the fulfillment first, the marker last. Marker present → recovered. Without it,
  the fulfillment's own trace is recognised: whole order — nothing remains to fulfil and (with
  a tracking number) a fulfillment carries it, or (without) the order is fulfilled → recovered;
  items remaining are fulfilled (a crash between two fulfillment orders' fulfillments resumes
  with the rest). By line — Shopify's fulfilled units of the SKU (cancelled fulfillments not
  counted) against ``shipped_before + quantity`` (the status sync's count of units shipped by
  earlier events): reached → recovered; else only the missing units are fulfilled; with a
  tracking number the fulfillment carrying it must hold the SKU too (two SKUs of one parcel
  on two lines are two fulfillments with one number).
* ``cancelled``: the marker first, ``orderCancel`` last (as WooCommerce: note first, status
  last): a re-run finds the marker on an order that is not cancelled and cancels it; an order
  cancelled *and* carrying the marker is recovered by ``decide``. Shopify refusing the cancel
  takes the marker line off again (the note as it was). (Shopify's ``Order.cancellation
  {staffNote}`` would let the mutation go first; the sandbox has no such field.)
* ``accepted``/``rejected``: the tags first (``tagsAdd``/``tagsRemove`` are idempotent, so a
  re-run simply repeats them), the marker last; marker present → recovered.

Retries: the transport retries throttling, 5xx and broken bodies. A mutation whose answer was
lost may have been applied, so before every retry of ``fulfillmentCreate`` the order's
fulfillments are read again (a new one with exactly the requested line items is taken as the
answer), and before a retry of ``orderCancel`` the order is read (already cancelled → done).
Tags and the whole-note ``orderUpdate`` are idempotent and retried as they are. The note is read
again at the start of every wave and the marker appended to that text (Shopify has no
compare-and-swap on ``note``: a staff edit in the seconds between is the remaining risk).

Failures: unknown order → ``order not found`` (``nodes`` answers ``null``; ``read_orders``
leaves it out); ``userErrors`` never raise; transient failures raise after the transport's
retries, refused credentials or scopes raise at once.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from order_integration.exceptions import StorefrontError
from order_integration.failpoints import failpoint
from order_integration.storefronts.base import Effect, OrderState, StatusChange
from order_integration.storefronts.shopify_graphql import MAX_QUERY_COST, ShopifyGraphQL
from order_integration.storefronts.shopify_money import (
    MARK_PAID_MUTATION,
    ORDER_MONEY_FIELDS,
    PAID_QUERY,
    REFUND_MUTATION,
    REFUNDS_COST,
    REFUNDS_QUERY,
    add_refunds,
    decide_paid,
    decide_refunded,
    idempotency_key,
    noted_only,
    payment,
    payment_marked,
    refund_lines,
    refund_mark,
    refund_note,
)
from order_integration.storefronts.shopify_normalise import MARKER_PREFIX, gid_number, order_gid, order_status

if TYPE_CHECKING:
    from order_integration.backend.status_files import StatusEvent

__all__ = [
    "ACCEPTED_TAG", "ACTIVE", "CANCEL_MUTATION", "FULFILL_MUTATION", "NOTE_MUTATION", "READ_QUERY",
    "REJECTED_TAG", "TAGS_ADD_MUTATION", "TAGS_REMOVE_MUTATION", "ShopifyStatus", "decide",
    "has_marker", "order_state",
]

log = logging.getLogger(__name__)

ACCEPTED_TAG = "erp-accepted"
REJECTED_TAG = "erp-rejected"
#: The status words the sync moves orders out of (Shopify's displayFinancialStatus, lower case).
ACTIVE = ("pending", "authorized", "partially_paid", "paid", "partially_refunded")
#: Status words the sync leaves alone (named in the refusal).
FINAL = ("refunded", "voided", "expired")
#: Fulfillment-order statuses ``fulfillmentCreate`` accepts.
FULFILLABLE = ("OPEN", "IN_PROGRESS")
#: Fulfillments that do not count as shipped.
VOID_FULFILLMENTS = ("CANCELLED", "ERROR", "FAILURE")
NOTE_LIMIT = 5000
#: Shopify's largest ``ids`` list of ``nodes``.
MAX_IDS = 250
STAFF_NOTE_LIMIT = 255

# Page sizes of one order's read; an order beyond them is read alone with WIDE_LIMITS.
LIMITS = {"lines": 20, "fos": 3, "fo_lines": 10, "fulfillments": 5, "ful_lines": 10}
WIDE_LIMITS = {"lines": 100, "fos": 5, "fo_lines": 30, "fulfillments": 10, "ful_lines": 20}

_ORDER_FIELDS = """id legacyResourceId cancelledAt displayFinancialStatus displayFulfillmentStatus note tags
    """ + ORDER_MONEY_FIELDS + """
    lineItems(first: $lines) { nodes { id sku name quantity currentQuantity } pageInfo { hasNextPage } }
    fulfillmentOrders(first: $fos) {
      nodes { id status lineItems(first: $foLines) {
        nodes { id remainingQuantity totalQuantity lineItem { id sku } } pageInfo { hasNextPage } } }
      pageInfo { hasNextPage } }
    fulfillments(first: $fulfillments) {
      id status trackingInfo(first: 3) { company number url }
      fulfillmentLineItems(first: $fulLines) {
        nodes { quantity lineItem { id sku } } pageInfo { hasNextPage } } }"""
READ_QUERY = (
    "query StatusOrders($ids: [ID!]!, $lines: Int!, $fos: Int!, $foLines: Int!, $fulfillments: Int!, "
    "$fulLines: Int!) {\n  nodes(ids: $ids) { ... on Order { " + _ORDER_FIELDS + " } }\n}"
)
NOTES_QUERY = "query StatusNotes($ids: [ID!]!) { nodes(ids: $ids) { ... on Order { id note cancelledAt } } }"
REMAINING_QUERY = (
    "query StatusRemaining($id: ID!, $fos: Int!, $first: Int!) { node(id: $id) { ... on Order { id "
    "fulfillmentOrders(first: $fos) { nodes { id lineItems(first: $first) "
    "{ nodes { id remainingQuantity } } } } } } }"
)
FULFILL_MUTATION = """mutation StatusFulfil($fulfillment: FulfillmentInput!) {
  fulfillmentCreate(fulfillment: $fulfillment) {
    fulfillment { id status trackingInfo(first: 3) { number } fulfillmentLineItems(first: 50) {
      nodes { quantity lineItem { id sku } } } }
    userErrors { field message }
  }
}"""
CANCEL_MUTATION = """mutation StatusCancel($orderId: ID!, $staffNote: String) {
  orderCancel(orderId: $orderId, reason: OTHER, refundMethod: {originalPaymentMethodsRefund: false},
              restock: false, notifyCustomer: false, staffNote: $staffNote) {
    job { id done }
    orderCancelUserErrors { code field message }
  }
}"""
TAGS_ADD_MUTATION = """mutation StatusTagsAdd($id: ID!, $tags: [String!]!) {
  tagsAdd(id: $id, tags: $tags) { node { id } userErrors { field message } }
}"""
TAGS_REMOVE_MUTATION = """mutation StatusTagsRemove($id: ID!, $tags: [String!]!) {
  tagsRemove(id: $id, tags: $tags) { node { id } userErrors { field message } }
}"""
NOTE_MUTATION = """mutation StatusNote($input: OrderInput!) {
  orderUpdate(input: $input) { order { id note } userErrors { field message } }
}"""


def read_cost(limits: dict[str, int]) -> int:
    """Requested cost of one order in :data:`READ_QUERY` (objects 1, connections 2 + first x node)."""
    lines = 2 + limits["lines"] * 1
    fos = 2 + limits["fos"] * (1 + 2 + limits["fo_lines"] * (1 + 1))
    fuls = limits["fulfillments"] * (1 + 3 + 2 + limits["ful_lines"] * (1 + 1))
    return 1 + 4 + lines + fos + fuls  # 4: the two money bags


def _norm(text: str) -> str:
    return " ".join(html.unescape(text).split())


def marker_line(note: str) -> str:
    """The event's note text as one line of the order note, after :data:`MARKER_PREFIX`."""
    return MARKER_PREFIX + " ".join(note.split())


def has_marker(order_note: str | None, note: str) -> bool:
    """Whether the order's note carries the event's marker as a line of its own."""
    want = _norm(marker_line(note))
    return any(_norm(line) == want for line in (order_note or "").splitlines())


def with_marker(order_note: str | None, note: str) -> str:
    current = (order_note or "").rstrip("\n")
    return f"{current}\n{marker_line(note)}" if current else marker_line(note)


def _user_errors(mutation: str, errors: object) -> str | None:
    """``"<mutation> refused by the storefront: <field>: <message>"`` or ``None``."""
    if not errors:
        return None
    parts = []
    for error in errors if isinstance(errors, list) else [errors]:
        if isinstance(error, dict):
            field = ".".join(str(f) for f in error.get("field") or [])
            message = str(error.get("message") or "").strip()
            parts.append(f"{field}: {message}" if field else message)
        else:
            parts.append(str(error))
    return f"{mutation} refused by the storefront: {'; '.join(parts)}"


# --------------------------------------------------------------------------------------------
# the order as the status sync sees it
# --------------------------------------------------------------------------------------------


def _nodes(conn: object) -> list[Any]:
    nodes = conn.get("nodes") if isinstance(conn, dict) else None
    return [n for n in nodes if isinstance(n, dict)] if isinstance(nodes, list) else []


def _more(conn: object) -> bool:
    return bool(isinstance(conn, dict) and (conn.get("pageInfo") or {}).get("hasNextPage"))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _fulfillment(node: dict[str, Any]) -> dict[str, Any]:
    numbers = [str(t.get("number")) for t in node.get("trackingInfo") or []
               if isinstance(t, dict) and t.get("number")]
    lines = [(str((i.get("lineItem") or {}).get("id") or ""), str((i.get("lineItem") or {}).get("sku") or ""),
              _int(i.get("quantity"))) for i in _nodes(node.get("fulfillmentLineItems"))]
    return {"id": node.get("id"), "status": str(node.get("status") or ""), "numbers": numbers, "lines": lines}


def _line_items(raw: dict[str, Any], fulfillments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a line refund names: each line's id, SKU, units still on it and units fulfilled."""
    done: dict[str, int] = {}
    for ful in fulfillments:
        if ful["status"] not in VOID_FULFILLMENTS:
            for line_id, _sku, qty in ful["lines"]:
                done[line_id] = done.get(line_id, 0) + qty
    return [{"id": str(item.get("id") or ""), "sku": str(item.get("sku") or "").strip(),
             "current": _int(item.get("currentQuantity", item.get("quantity"))),
             "fulfilled": done.get(str(item.get("id") or ""), 0)}
            for item in _nodes(raw.get("lineItems"))]


def order_state(raw: dict[str, Any]) -> OrderState:
    """A Shopify order (:data:`READ_QUERY`) as the status sync sees it: its status word, its
    lines by SKU (``currentQuantity``: units still on the order; lines without units are no
    lines) and in ``cache`` what the applier needs (note, tags, fulfillment orders,
    fulfillments). ``cache["truncated"]`` names a list that did not fit the read."""
    number = gid_number(raw.get("id"))
    if number is None:
        raise StorefrontError(f"shopify answered an order without a valid id: {str(raw.get('id'))[:80]!r}")
    lines: dict[str, tuple[int, str]] = {}
    without_sku = False
    for item in _nodes(raw.get("lineItems")):
        qty = item.get("currentQuantity", item.get("quantity"))
        if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
            continue
        sku = str(item.get("sku") or "").strip()
        if not sku:
            without_sku = True
            continue
        units, name = lines.get(sku, (0, str(item.get("name") or sku)))
        lines[sku] = (units + qty, name)
    fo_items = []
    truncated = []
    if _more(raw.get("lineItems")):
        truncated.append("line items")
    fos = raw.get("fulfillmentOrders")
    if _more(fos):
        truncated.append("fulfillment orders")
    for fo in _nodes(fos):
        if _more(fo.get("lineItems")):
            truncated.append("fulfillment order line items")
        for item in _nodes(fo.get("lineItems")):
            line = item.get("lineItem") or {}
            fo_items.append({
                "fo": fo.get("id"), "fo_status": str(fo.get("status") or ""), "id": item.get("id"),
                "line": str(line.get("id") or ""), "sku": str(line.get("sku") or "").strip(),
                "remaining": _int(item.get("remainingQuantity")), "total": _int(item.get("totalQuantity")),
            })
    raw_fulfillments = [f for f in raw.get("fulfillments") or [] if isinstance(f, dict)]
    fulfillments = [_fulfillment(f) for f in raw_fulfillments]
    if any(_more(f.get("fulfillmentLineItems")) for f in raw_fulfillments):
        truncated.append("fulfillment line items")
    cache = {
        "gid": raw.get("id"), "note": raw.get("note") or "",
        "tags": [str(t) for t in raw.get("tags") or []],
        "fulfillment_status": str(raw.get("displayFulfillmentStatus") or ""),
        "fo_items": fo_items, "fulfillments": fulfillments, "truncated": truncated, "planned": 0,
        "line_items": _line_items(raw, fulfillments),
    }
    status = order_status(raw)
    return OrderState(number, status, lines, without_sku, cache, payment=payment(raw, status))


# --------------------------------------------------------------------------------------------
# the rules
# --------------------------------------------------------------------------------------------


def _live(cache: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in cache["fulfillments"] if f["status"] not in VOID_FULFILLMENTS]


def fulfilled_units(cache: dict[str, Any], sku: str) -> int:
    """Units of ``sku`` on the order's fulfillments (cancelled ones not counted)."""
    return sum(q for f in _live(cache) for _line, s, q in f["lines"] if s == sku)


def carries(cache: dict[str, Any], number: str, sku: str | None = None) -> bool:
    """Whether a fulfillment carries tracking ``number`` (and, given ``sku``, holds that SKU)."""
    return any(number in f["numbers"] and (sku is None or any(s == sku for _l, s, _q in f["lines"]))
               for f in _live(cache))


def remaining(cache: dict[str, Any], sku: str | None = None, *, fulfillable: bool | None = None) -> int:
    """Units left to fulfil (of ``sku``; on fulfillment orders Shopify fulfils now, or not)."""
    return sum(i["remaining"] for i in cache["fo_items"]
               if (sku is None or i["sku"] == sku) and i["fo_status"] not in ("CANCELLED", "CLOSED")
               and (fulfillable is None or (i["fo_status"] in FULFILLABLE) == fulfillable))


def fully_fulfilled(cache: dict[str, Any]) -> bool:
    return cache["fulfillment_status"] == "FULFILLED"


def _held(cache: dict[str, Any], sku: str | None) -> str:
    statuses = sorted({i["fo_status"] for i in cache["fo_items"]
                       if (sku is None or i["sku"] == sku) and i["remaining"] > 0
                       and i["fo_status"] not in (*FULFILLABLE, "CANCELLED", "CLOSED")})
    what = f"of sku {sku!r} " if sku else ""
    return (f"the units {what}left to fulfil are on fulfillment orders that are {', '.join(statuses)}; "
            "release them in Shopify first")


def _shipment(event: StatusEvent, cache: dict[str, Any]) -> Effect | str:
    """A shipment without its marker on the order: what Shopify's fulfillment orders allow."""
    sku, number = event.sku, event.tracking_number
    left = remaining(cache, sku)
    if sku is None and left == 0:
        if number and not carries(cache, number):
            return (f"nothing remains to fulfil on the storefront and no fulfillment carries "
                    f"tracking number {number}")
        return Effect(None, customer_note=True, recovered=True)
    if left > 0 and remaining(cache, sku, fulfillable=True) == 0:
        return _held(cache, sku)
    if sku is not None and left == 0 and not fulfilled_units(cache, sku):
        return f"sku {sku!r} has no units to fulfil on the storefront"
    return Effect(None, customer_note=True)


def decide(event: StatusEvent, order: OrderState, note: str) -> Effect | str:
    """The event's effect under Shopify's rules (the module docstring's table), or why not.

    ``order.cache`` is :func:`order_state`'s; nothing is read here."""
    cache, status = order.cache, order.status
    marked = has_marker(cache.get("note"), note)
    if status == "cancelled":
        if event.event == "cancelled" and marked:
            return Effect("cancelled", recovered=True)
        return "order is cancelled on the storefront"
    if status not in ACTIVE:
        if status in FINAL:
            return f"order is {status!r}; the status sync does not change refunded, voided or expired orders"
        return (f"order is {status!r}; the status sync only changes {', '.join(ACTIVE[:-1])} "
                f"and {ACTIVE[-1]} orders")
    if cache.get("truncated"):
        return (f"order has more {', '.join(cache['truncated'])} than the status sync reads; "
                "apply this event in Shopify")
    if event.event in ("paid", "refunded"):
        return _money(event, order, note)
    if event.event == "shipped":
        effect = Effect(None, customer_note=True, recovered=True) if marked else _shipment(event, cache)
    elif marked and event.event != "cancelled":  # accepted/rejected: the marker is the whole proof
        return Effect(None, recovered=True)
    elif fully_fulfilled(cache):
        return f"order is fulfilled; {event.event!r} would move it backwards"
    elif event.event == "cancelled":
        effect = Effect("cancelled")
    else:
        effect = Effect(None)
    if isinstance(effect, str) or marked:
        return effect
    return _room(cache, note) or effect


def _money(event: StatusEvent, order: OrderState, note: str) -> Effect | str:
    """``paid``/``refunded`` (:mod:`.shopify_money`); a payment's marker line must fit the note."""
    cache = order.cache
    if event.event == "refunded":
        return cache.get("refunds_problem") or decide_refunded(event, order)
    effect = decide_paid(event, order)
    if effect.recovered or payment_marked(cache.get("note"), event.reference):
        return effect
    text = noted_only(note) if effect.note_only else note
    if effect.note_only and has_marker(cache.get("note"), text):
        return effect  # noted before (the same line again): nothing to write
    return _room(cache, text) or effect


def _room(cache: dict[str, Any], note: str) -> str | None:
    """Why the event's marker line does not fit in the order's note (with the lines earlier
    events of this file will add), else ``None`` (and the line is counted)."""
    room = NOTE_LIMIT - len(cache.get("note") or "") - cache.get("planned", 0)
    needed = len(marker_line(note)) + 1
    if needed > room:
        return (f"the order's note has no room for the event's line ({needed} characters, "
                f"{max(room, 0)} left of Shopify's {NOTE_LIMIT})")
    cache["planned"] = cache.get("planned", 0) + needed
    return None


# --------------------------------------------------------------------------------------------
# the applier
# --------------------------------------------------------------------------------------------


class ShopifyStatus(ShopifyGraphQL):
    """Applies the backend's status events to one Shopify store through an Airflow ``http``
    connection (see :mod:`.shopify_graphql`); the status sync's ``StatusApplier``."""

    #: The money events this applier carries out (see ``StatusApplier`` and :mod:`.shopify_money`).
    money_events = frozenset({"paid", "refunded"})

    def __init__(self, conn_id: str, *, limits: dict[str, int] | None = None, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)
        self.limits = dict(limits or LIMITS)

    def __enter__(self) -> ShopifyStatus:
        return self

    # -- reading ---------------------------------------------------------------------------------

    def read_orders(self, order_ids: Sequence[int]) -> dict[int, OrderState]:
        """The state of these orders, many per ``nodes(ids:)`` request (as many as Shopify's
        1,000-point limit takes); an order with more items than the page sizes is read again
        alone with larger ones. Unknown ids (``null`` nodes) are left out."""
        ids = list(dict.fromkeys(int(i) for i in order_ids))
        per = max(1, MAX_QUERY_COST // read_cost(self.limits))
        found: dict[int, OrderState] = {}
        for start in range(0, len(ids), per):
            found.update(self._read_chunk(ids[start:start + per], self.limits))
        again = [oid for oid, state in found.items() if state.cache["truncated"]]
        wide = WIDE_LIMITS if read_cost(WIDE_LIMITS) <= MAX_QUERY_COST else self.limits
        for oid in again:
            found.update(self._read_chunk([oid], wide))
        return found

    def _read_chunk(self, chunk: list[int], limits: dict[str, int]) -> dict[int, OrderState]:
        variables = {"ids": [order_gid(i) for i in chunk], "lines": limits["lines"], "fos": limits["fos"],
                     "foLines": limits["fo_lines"], "fulfillments": limits["fulfillments"],
                     "fulLines": limits["ful_lines"]}
        data = self.execute(READ_QUERY, variables, operation="StatusOrders",
                            estimate=len(chunk) * read_cost(limits),
                            describe=f"orders {chunk[0]}..{chunk[-1]}")
        nodes = data.get("nodes")
        if not isinstance(nodes, list) or len(nodes) != len(chunk):
            raise StorefrontError(
                f"shopify {self._host}: nodes answered {str(nodes)[:80]!r} for {len(chunk)} ids")
        found = {}
        for oid, node in zip(chunk, nodes, strict=True):
            if node is None:
                continue
            if not isinstance(node, dict) or gid_number(node.get("id")) != oid:
                raise StorefrontError(
                    f"shopify {self._host}: nodes answered {str(node)[:120]!r} for order {oid}")
            found[oid] = order_state(node)
        return found

    # -- deciding ---------------------------------------------------------------------------------

    def decide(
        self, event: StatusEvent, order: OrderState, note: str, *, fully_shipped: bool
    ) -> Effect | str:
        """Shopify's rules (:func:`decide`); Shopify counts fulfilled units itself, so
        ``fully_shipped`` is not needed. A ``refunded`` event reads the order's refunds first
        (once per order: the backend's references and amounts on them)."""
        if event.event == "refunded" and "refunds" not in order.cache and order.status != "cancelled":
            order.cache["refunds"] = self._read_refunds(order)
            order.cache["refunds_problem"] = add_refunds(order, order.cache["refunds"])
        effect = decide(event, order, note)
        if event.event == "refunded" and event.sku is not None and event.quantity is not None:
            # chosen before the status sync books this refund (units refunded by earlier lines)
            order.cache[("refund_lines", event.event_key)] = refund_lines(
                order, event.sku, event.quantity, restock=True)
        return effect

    def _read_refunds(self, order: OrderState) -> list[dict[str, Any]]:
        data = self.execute(REFUNDS_QUERY, {"id": order.cache["gid"]}, operation="StatusRefunds",
                            estimate=REFUNDS_COST, describe=f"order {order.order_id}")
        node = data.get("node")
        refunds = node.get("refunds") if isinstance(node, dict) else None
        return [r for r in refunds if isinstance(r, dict)] if isinstance(refunds, list) else []

    # -- applying ---------------------------------------------------------------------------------

    def apply(self, changes: Sequence[StatusChange], *, store_id: str, batch_threshold: int) -> None:
        """One wave, order by order: each order's writes in the order the module docstring
        gives (the marker line last, but first for ``cancelled``). The order notes are read
        again first (one request), so the marker is appended to the note as it is now."""
        todo = []
        for change in changes:
            money = change.event.event in self.money_events
            if change.effect.recovered and (money or has_marker(change.order.cache.get("note"), change.note)):
                change.recovered = True  # the storefront shows all of it: nothing to write
            else:
                todo.append(change)
        self._refresh_notes([c for c in todo if c.error is None])
        for n, change in enumerate(todo):
            if n == 1:
                failpoint("status_sync.mid_writes", store=store_id)
            if change.error is not None:
                continue
            try:
                self._apply_one(change)
            except _Refused as exc:
                change.error = str(exc)

    def _refresh_notes(self, changes: list[StatusChange]) -> None:
        if not changes:
            return
        gids = [c.order.cache["gid"] for c in changes]
        by_gid: dict[Any, dict[str, Any]] = {}
        for start in range(0, len(gids), MAX_IDS):
            chunk = gids[start:start + MAX_IDS]
            data = self.execute(NOTES_QUERY, {"ids": chunk}, operation="StatusNotes", estimate=len(chunk) + 1)
            nodes = data.get("nodes") if isinstance(data.get("nodes"), list) else []
            by_gid.update((n.get("id"), n) for n in nodes if isinstance(n, dict))
        for change in changes:
            node = by_gid.get(change.order.cache["gid"])
            if node is None:
                change.error = "order not found"
                continue
            change.order.cache["note"] = node.get("note") or ""

    def _apply_one(self, change: StatusChange) -> None:
        event, cache = change.event, change.order.cache
        if event.event == "paid":
            self._pay(change)
            return
        if event.event == "refunded":
            self._refund(change)
            return
        marked = has_marker(cache["note"], change.note)
        if event.event == "cancelled":
            if not marked:
                self._write_marker(change)
            try:
                self._cancel(change)
            except _Refused:
                if not marked:  # take our line off again: the order is not cancelled
                    self._take_marker_off(change)
                raise
            return
        if marked:
            change.recovered = True
            return
        if event.event == "shipped":
            recovered = self._ship(change)
            self._write_marker(change)
            change.recovered = recovered
            return
        accepted = event.event == "accepted"
        wanted, other = (ACCEPTED_TAG, REJECTED_TAG) if accepted else (REJECTED_TAG, ACCEPTED_TAG)
        self._tags(change, TAGS_ADD_MUTATION, "tagsAdd", wanted)
        self._tags(change, TAGS_REMOVE_MUTATION, "tagsRemove", other)
        self._write_marker(change)

    # -- shipped --------------------------------------------------------------------------------

    def _ship(self, change: StatusChange) -> bool:
        """Fulfil what the event asks and Shopify has not fulfilled yet; ``True`` when Shopify
        already shows all of it (a run that stopped before the marker)."""
        event, cache = change.event, change.order.cache
        wanted = self._whole(change) if event.sku is None or event.quantity is None else self._by_line(change)
        if wanted is None:
            return True
        by_fo: dict[str, dict[str, int]] = {}
        for item in cache["fo_items"]:
            if item["id"] in wanted:
                by_fo.setdefault(item["fo"], {})[item["id"]] = wanted[item["id"]]
        for fo, items in by_fo.items():
            self._fulfil(change, fo, items)
        return False

    def _whole(self, change: StatusChange) -> dict[str, int] | None:
        """Every remaining unit (fulfillment-order line item id → units), ``None``: all shipped."""
        cache, number = change.order.cache, change.event.tracking_number
        wanted = {i["id"]: i["remaining"] for i in cache["fo_items"]
                  if i["remaining"] > 0 and i["fo_status"] in FULFILLABLE}
        if wanted:
            return wanted
        if remaining(cache) > 0:
            raise _Refused(_held(cache, None))
        if number and not carries(cache, number):
            raise _Refused(f"nothing remains to fulfil on the storefront and no fulfillment "
                           f"carries tracking number {number}")
        return None

    def _by_line(self, change: StatusChange) -> dict[str, int] | None:
        """The units of the event's SKU Shopify has yet to fulfil for it, spread over the
        fulfillment-order line items with remaining units; ``None``: all shipped."""
        event, cache = change.event, change.order.cache
        sku, number, quantity = event.sku or "", event.tracking_number, event.quantity or 0
        # Shopify's fulfilled units of the SKU against the units the events up to this one
        # ship; with a tracking number only a fulfillment carrying it (and the SKU) is ours
        need = (change.shipped_before or 0) + quantity
        missing = min(quantity, need - fulfilled_units(cache, sku))
        if number and not carries(cache, number, sku):
            missing = quantity
        if missing <= 0:
            return None
        open_units = remaining(cache, sku, fulfillable=True)
        if open_units < missing:
            if remaining(cache, sku) >= missing:
                raise _Refused(_held(cache, sku))
            raise _Refused(f"sku {sku!r}: {open_units} units left to fulfil on the storefront, "
                           f"the event ships {missing}")
        wanted = {}
        for item in cache["fo_items"]:
            usable = item["sku"] == sku and item["remaining"] > 0 and item["fo_status"] in FULFILLABLE
            if missing > 0 and usable:
                wanted[item["id"]] = take = min(item["remaining"], missing)
                missing -= take
        return wanted

    def _fulfil(self, change: StatusChange, fo: str, items: dict[str, int]) -> None:
        event, cache = change.event, change.order.cache
        tracking: dict[str, str] = {}
        if event.carrier:
            tracking["company"] = event.carrier
        if event.tracking_number:
            tracking["number"] = event.tracking_number
            if event.tracking_url:
                tracking["url"] = event.tracking_url
        fulfillment: dict[str, Any] = {
            "lineItemsByFulfillmentOrder": [{
                "fulfillmentOrderId": fo,
                "fulfillmentOrderLineItems": [{"id": i, "quantity": q} for i, q in items.items()],
            }],
            "notifyCustomer": True,
        }
        if tracking:
            fulfillment["trackingInfo"] = tracking
        before = {i["id"]: i for i in cache["fo_items"] if i["id"] in items}
        limits = WIDE_LIMITS  # the fulfillment order is read through its order (as read_orders did)

        def landed() -> dict[str, Any] | None:
            # the fulfillment order's remaining units dropped by what was asked: it took effect
            variables = {"id": cache["gid"], "fos": limits["fos"], "first": limits["fo_lines"]}
            data = self.execute(REMAINING_QUERY, variables, operation="StatusRemaining",
                                estimate=3 + limits["fos"] * (3 + limits["fo_lines"]))
            now = {n.get("id"): _int(n.get("remainingQuantity"))
                   for f in _nodes((data.get("node") or {}).get("fulfillmentOrders"))
                   if f.get("id") == fo for n in _nodes(f.get("lineItems"))}
            if any(i not in now or now[i] > before[i]["remaining"] - q for i, q in items.items()):
                return None
            node = {"id": None, "status": "SUCCESS",
                    "trackingInfo": [{"number": event.tracking_number}] if event.tracking_number else [],
                    "fulfillmentLineItems": {"nodes": [
                        {"quantity": q, "lineItem": {"id": before[i]["line"], "sku": before[i]["sku"]}}
                        for i, q in items.items()]}}
            return {"fulfillmentCreate": {"fulfillment": node, "userErrors": []}}

        payload = self._write_once(change, FULFILL_MUTATION, {"fulfillment": fulfillment}, "StatusFulfil",
                                   "fulfillmentCreate", landed)
        node = payload.get("fulfillment")
        if not isinstance(node, dict):
            raise StorefrontError(
                f"shopify {self._host}: fulfillmentCreate answered neither a fulfillment nor an error")
        cache["fulfillments"].append(_fulfillment(node))
        for item in cache["fo_items"]:
            if item["id"] in items:
                item["remaining"] -= items[item["id"]]
        cache["fulfillment_status"] = "FULFILLED" if remaining(cache) == 0 else "PARTIALLY_FULFILLED"

    # -- cancelled --------------------------------------------------------------------------------

    def _cancel(self, change: StatusChange) -> None:
        cache = change.order.cache
        if fully_fulfilled(cache):  # fulfilled by an earlier event of this file
            raise _Refused("order is fulfilled; 'cancelled' would move it backwards")

        def landed() -> dict[str, Any] | None:
            data = self.execute(NOTES_QUERY, {"ids": [cache["gid"]]}, operation="StatusNotes", estimate=2)
            nodes = data.get("nodes") or [None]
            if isinstance(nodes[0], dict) and nodes[0].get("cancelledAt"):
                return {"orderCancel": {"job": None, "orderCancelUserErrors": []}}
            return None

        variables = {"orderId": cache["gid"], "staffNote": change.note[:STAFF_NOTE_LIMIT]}
        self._write_once(change, CANCEL_MUTATION, variables, "StatusCancel", "orderCancel", landed,
                         errors="orderCancelUserErrors")

    # -- paid and refunded -------------------------------------------------------------------------

    def _pay(self, change: StatusChange) -> None:
        """The marker line first (the reference: ``orderMarkAsPaid`` takes none), then the mutation
        unless the event is a note only; Shopify refusing it takes the marker line off again."""
        cache = change.order.cache
        if change.effect.note_only:
            text = noted_only(change.note)
            if not has_marker(cache["note"], text):
                self._set_note(change, with_marker(cache["note"], text))
            return
        marked = payment_marked(cache["note"], change.event.reference)
        if not marked:
            self._write_marker(change)

        def landed() -> dict[str, Any] | None:
            data = self.execute(PAID_QUERY, {"id": cache["gid"]}, operation="StatusPaid", estimate=2)
            node = data.get("node") or {}
            if node.get("fullyPaid") or node.get("displayFinancialStatus") == "PAID":
                return {"orderMarkAsPaid": {"order": node, "userErrors": []}}
            return None

        try:
            self._write_once(change, MARK_PAID_MUTATION, {"input": {"id": cache["gid"]}}, "StatusMarkPaid",
                             "orderMarkAsPaid", landed)
        except _Refused:
            if not marked:  # take our line off again: the order is not paid
                self._take_marker_off(change)
            raise

    def _refund(self, change: StatusChange) -> None:
        """``refundCreate`` without transactions. Never twice: Shopify answers a retry of the same
        request by its idempotency key, and before every retry the order's refunds are read and
        one carrying the reference is the result."""
        event, order = change.event, change.order
        gid = order.cache["gid"]
        refund: dict[str, Any] = {"orderId": gid, "note": refund_note(event, change.note), "notify": False}
        lines = order.cache.get(("refund_lines", event.event_key))
        if lines:
            refund["refundLineItems"] = [
                line if change.restock else {**line, "restockType": "NO_RESTOCK"} for line in lines]

        def landed() -> dict[str, Any] | None:
            for existing in self._read_refunds(order):
                mark = refund_mark(existing.get("note"))
                if mark is not None and mark[2] == event.reference:
                    return {"refundCreate": {"refund": existing, "userErrors": []}}
            return None

        variables = {"input": refund, "key": idempotency_key(gid, event.reference, refund)}
        payload = self._write_once(change, REFUND_MUTATION, variables, "StatusRefund", "refundCreate", landed)
        if not isinstance(payload.get("refund"), dict):
            raise StorefrontError(
                f"shopify {self._host}: refundCreate answered neither a refund nor an error")

    # -- tags and note ----------------------------------------------------------------------------

    def _tags(self, change: StatusChange, mutation: str, name: str, tag: str) -> None:
        data = self.execute(mutation, {"id": change.order.cache["gid"], "tags": [tag]}, operation=name,
                            estimate=10, describe=f"order {change.order.order_id}")
        refused = _user_errors(name, (data.get(name) or {}).get("userErrors"))
        if refused:
            raise _Refused(refused)
        tags = change.order.cache["tags"]
        if name == "tagsAdd" and tag not in tags:
            tags.append(tag)
        elif name == "tagsRemove" and tag in tags:
            tags.remove(tag)

    def _write_marker(self, change: StatusChange) -> None:
        cache = change.order.cache
        cache["note_before"] = cache["note"]
        self._set_note(change, with_marker(cache["note"], change.note))

    def _take_marker_off(self, change: StatusChange) -> None:
        """The note as it was before :meth:`_write_marker` (a write Shopify then refused)."""
        cache = change.order.cache
        try:
            self._set_note(change, cache.get("note_before", cache["note"]))
        except _Refused as exc:
            log.warning("shopify %s: order %s: the marker line could not be taken off: %s",
                        self._host, change.order.order_id, exc)

    def _set_note(self, change: StatusChange, note: str) -> None:
        """``orderUpdate`` with the whole note (idempotent: a retry writes the same text)."""
        data = self.execute(NOTE_MUTATION, {"input": {"id": change.order.cache["gid"], "note": note}},
                            operation="StatusNote", estimate=10, describe=f"order {change.order.order_id}")
        payload = data.get("orderUpdate") or {}
        refused = _user_errors("orderUpdate", payload.get("userErrors"))
        if refused:
            raise _Refused(refused)
        change.order.cache["note"] = note

    # -- a mutation that must not run twice ------------------------------------------------------

    def _write_once(self, change: StatusChange, query: str, variables: dict[str, Any], operation: str,
                    mutation: str, landed: Callable[[], dict[str, Any] | None], *,
                    errors: str = "userErrors") -> dict[str, Any]:
        """:meth:`_mutate` for ``change``'s order; the mutation's payload, its ``errors`` (Shopify's
        refusal) raised as :class:`_Refused`."""
        data = self._mutate(query, variables, operation, landed, describe=f"order {change.order.order_id}")
        payload = data.get(mutation) or {}
        refused = _user_errors(mutation, payload.get(errors))
        if refused:
            raise _Refused(refused)
        return payload

    def _mutate(self, query: str, variables: dict[str, Any], operation: str,
                landed: Callable[[], dict[str, Any] | None], *, describe: str = "") -> dict[str, Any]:
        """``execute`` for a mutation that is not idempotent: before every retry, ``landed()``
        asks Shopify whether the earlier attempt took effect (its answer lost on the way) and,
        when it did, its result ends the call. Uses the transport's retry policy and attempt
        (:meth:`StoreHttp._retried`, :meth:`ShopifyGraphQL._attempt`)."""
        self.open()
        payload = {"query": query, "variables": variables}
        tries = 0

        def attempt() -> dict[str, Any]:
            nonlocal tries
            tries += 1
            if tries > 1:
                done = landed()
                if done is not None:
                    log.info("shopify %s: %s %s took effect before its answer was lost", self._host,
                             operation, describe)
                    return done
            return self._attempt(payload, operation, 10.0)

        return self._retried(attempt, f"{operation} {describe}".strip())


class _Refused(Exception):
    """A write Shopify (or an applier's check) refused: the change's error, never raised further."""
