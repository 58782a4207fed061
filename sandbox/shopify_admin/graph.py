"""The GraphQL side of the sandbox: the schema per API version, the shop's state, resolvers, scopes,
query cost and bulk operations. HTTP lives in ``server.py``."""

from __future__ import annotations

import bisect
import copy
import functools
import heapq
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    build_schema,
    get_named_type,
)
from graphql.execution import execute
from graphql.language import parse
from graphql.utilities import value_from_ast_untyped
from graphql.validation import validate

from sandbox.shopify_admin import data as d

SCHEMA_FILE = Path(__file__).with_name("schema.graphql")
#: The version this sandbox is written against (Shopify's newest stable one on 2026-12-04).
CURRENT_VERSION = "2026-10"
#: Stable versions Shopify supports on 2026-12-04 (each for at least 12 months), oldest first.
SUPPORTED_VERSIONS = ("2026-01", "2026-04", "2026-07", "2026-10")
RELEASE_CANDIDATE = "2027-01"
#: Versions the sandbox has a schema for; a request for one not supported falls forward.
KNOWN_VERSIONS = ("2025-10", *SUPPORTED_VERSIONS, RELEASE_CANDIDATE, "unstable")
MAX_PAGE = 250
MAX_QUERY_COST = 1000
MUTATION_COST = 10
DOCS_SCOPES = "https://shopify.dev/api/usage/access-scopes"
DOCS_RATE = "https://shopify.dev/api/usage/rate-limits"
ALL_SCOPES = (
    "read_orders",
    "write_orders",
    "read_all_orders",
    "read_products",
    "write_products",
    "read_inventory",
    "write_inventory",
    "read_locations",
    "read_customers",
    "read_merchant_managed_fulfillment_orders",
    "write_merchant_managed_fulfillment_orders",
)


# --- schema per version ----------------------------------------------------------------------------


def _sdl_for(version: str) -> str:
    sdl = SCHEMA_FILE.read_text(encoding="utf-8")
    if version >= "2026-04" or version == "unstable":
        return sdl
    # 2026-01 also has the deprecated compare-and-set fields; 2025-10 has only them.
    sdl = sdl.replace("  changeFromQuantity: Int\n", "  changeFromQuantity: Int\n  compareQuantity: Int\n")
    sdl = sdl.replace(
        "  name: String!\n  quantities: [InventoryQuantityInput!]!",
        "  ignoreCompareQuantity: Boolean = false\n  name: String!\n  quantities: [InventoryQuantityInput!]!",
    )
    sdl = sdl.replace(
        "inventoryLevel(includeInactive: Boolean = false, locationId: ID!)", "inventoryLevel(locationId: ID!)"
    )
    sdl = sdl.replace(
        "first: Int, includeInactive: Boolean = false, last: Int, query: String, reverse: Boolean = false)"
        ": InventoryLevelConnection!",
        "first: Int, last: Int, query: String, reverse: Boolean = false): InventoryLevelConnection!",
    )
    if version < "2026-01":
        sdl = sdl.replace("  changeFromQuantity: Int\n", "")
        sdl = sdl.replace("  bulkOperation(id: ID!): BulkOperation\n", "")
        sdl = sdl.replace("groupObjects: Boolean! = false", "groupObjects: Boolean! = true")
    return sdl


@functools.cache
def schema_for(version: str) -> GraphQLSchema:
    return build_schema(_sdl_for(version))


def bulk_limit(version: str) -> int:
    """Concurrent bulk query operations per shop: five from 2026-01, one before."""
    return 5 if version >= "2026-01" else 1


# --- scopes ---------------------------------------------------------------------------------------

#: Any one of these scopes gives access (from the requiredAccess of Shopify's published schema).
TYPE_SCOPES: dict[str, tuple[str, ...]] = {
    "Order": ("read_orders", "read_marketplace_orders", "read_quick_sale"),
    "LineItem": ("read_orders", "read_marketplace_orders"),
    "Refund": ("read_orders", "read_marketplace_orders"),
    "Fulfillment": (
        "read_orders",
        "read_marketplace_orders",
        "read_merchant_managed_fulfillment_orders",
        "read_assigned_fulfillment_orders",
        "read_third_party_fulfillment_orders",
    ),
    "FulfillmentOrder": (
        "read_merchant_managed_fulfillment_orders",
        "read_assigned_fulfillment_orders",
        "read_third_party_fulfillment_orders",
        "read_marketplace_fulfillment_orders",
    ),
    "Customer": ("read_customers",),
    "ProductVariant": ("read_products",),
    "Product": ("read_products",),
    "InventoryItem": ("read_inventory", "read_products"),
    "InventoryLevel": ("read_inventory",),
    "Location": ("read_locations", "read_inventory", "read_markets_home"),
}
FIELD_SCOPES: dict[tuple[str, str], tuple[str, ...]] = {
    ("QueryRoot", "ordersCount"): ("read_orders", "read_marketplace_orders"),
    ("InventoryItem", "inventoryLevels"): ("read_inventory",),
    ("InventoryItem", "inventoryLevel"): ("read_inventory",),
    ("Mutation", "fulfillmentCreate"): (
        "write_merchant_managed_fulfillment_orders",
        "write_assigned_fulfillment_orders",
        "write_third_party_fulfillment_orders",
    ),
    ("Mutation", "orderCancel"): ("write_orders", "write_marketplace_orders"),
    ("Mutation", "orderMarkAsPaid"): ("write_orders",),
    ("Mutation", "orderUpdate"): ("write_orders", "write_marketplace_orders", "write_quick_sale"),
    ("Mutation", "refundCreate"): ("write_orders", "write_marketplace_orders"),
    ("Mutation", "inventorySetQuantities"): ("write_inventory",),
    ("Mutation", "tagsAdd"): ("write_orders",),
    ("Mutation", "tagsRemove"): ("write_orders",),
}


def effective_scopes(granted: set[str]) -> set[str]:
    """A ``write_`` scope implies its ``read_`` scope."""
    return granted | {"read_" + s[len("write_") :] for s in granted if s.startswith("write_")}


def _required_text(scopes: tuple[str, ...]) -> str:
    names = [f"`{s}` access scope" for s in scopes]
    return names[0] + "." if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1] + "."


def access_denied(field_name: str, scopes: tuple[str, ...]) -> GraphQLError:
    required = _required_text(scopes)
    return GraphQLError(
        f"Access denied for {field_name} field. Required access: {required}",
        extensions={"code": "ACCESS_DENIED", "documentation": DOCS_SCOPES, "requiredAccess": required},
    )


# --- state -----------------------------------------------------------------------------------------


@dataclass
class Bucket:
    """Shopify's leaky bucket (standard plan: 2000 points, 100 points/second)."""

    maximum: float = 2000.0
    restore_rate: float = 100.0
    available: float = 2000.0
    stamp: float = field(default_factory=time.monotonic)

    def refill(self) -> float:
        now = time.monotonic()
        self.available = min(self.maximum, self.available + (now - self.stamp) * self.restore_rate)
        self.stamp = now
        return self.available

    def status(self) -> dict[str, Any]:
        return {
            "maximumAvailable": self.maximum,
            "currentlyAvailable": int(self.available),
            "restoreRate": self.restore_rate,
        }


@dataclass
class ShopState:
    clock: Callable[[], datetime]
    shop_tz: tzinfo = UTC
    lock: threading.RLock = field(default_factory=threading.RLock)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: What the search index (the ``query:`` filter) sees: (visible from, order copy) per order, oldest first.
    index: dict[int, list[tuple[float, dict[str, Any]]]] = field(default_factory=dict)
    index_lag: float = 0.0
    ids: d.Ids = field(default_factory=d.Ids)
    tokens: dict[str, set[str]] = field(default_factory=dict)
    bucket: Bucket = field(default_factory=Bucket)
    max_cost: int = MAX_QUERY_COST
    paging_cap: int | None = 25_000
    #: Whether ``nodes(ids:)`` is charged per id, as Shopify does (default: as one node, which the
    #: test suite's fixed 2000-point buckets and no-op sleeps are written for).
    nodes_cost_per_id: bool = False
    #: Whether the shop's prices include tax (orders added from then on are ``taxesIncluded``).
    taxes_included: bool = False
    supported: tuple[str, ...] = SUPPORTED_VERSIONS
    locations: dict[int, dict[str, Any]] = field(default_factory=dict)
    variants: dict[int, dict[str, Any]] = field(default_factory=dict)
    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    levels: dict[tuple[int, int], int] = field(default_factory=dict)
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    bulk: dict[int, dict[str, Any]] = field(default_factory=dict)
    bulk_files: dict[str, bytes] = field(default_factory=dict)
    bulk_hold: bool = False
    faults: list[dict[str, Any]] = field(default_factory=list)
    #: (mutation, ``@idempotent`` key) -> (input, order id, created object id): a repeat answers
    #: the first result.
    idempotency: dict[tuple[str, str], tuple[Any, int, int]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    broken_cursors: set[str] = field(default_factory=set)
    jobs: int = 0
    #: The search index ordered for ``updated_at`` ranges: (whole-second ``updatedAt``, id) of each
    #: order's visible indexed version, sorted, as of the last ``settle_index()``; ``by_updated_entry``
    #: is each order's entry there; ``index_pending`` the (visible from, seq, id) versions not yet in it.
    by_updated: list[tuple[int, int]] = field(default_factory=list)
    by_updated_entry: dict[int, tuple[int, int]] = field(default_factory=dict)
    index_pending: list[tuple[float, int, int]] = field(default_factory=list)
    index_seq: int = 0
    #: False once an indexed ``updatedAt`` had a fraction of a second (then only the full scan is exact).
    by_updated_exact: bool = True
    #: Told of every order stored (its previous version, None for a new order; the order): the
    #: shop's webhooks while it sends them (``SandboxShopify.send_webhooks``)
    on_change: Callable[[dict[str, Any] | None, dict[str, Any]], None] | None = None

    def now(self) -> datetime:
        return self.clock().astimezone(UTC)

    # -- orders and the search index

    def put_order(self, order: dict[str, Any], *, indexed_now: bool = False) -> None:
        """Store an order; the search index sees it ``index_lag`` seconds (wall time, whatever the shop's
        clock says) later, at once when seeded."""
        versions = self.index.get(order["id"])
        before = versions[-1][1] if versions else None
        self.orders[order["id"]] = order
        visible = time.monotonic() + (0.0 if indexed_now else self.index_lag)
        self.index.setdefault(order["id"], []).append((visible, copy.deepcopy(order)))
        self.index_seq += 1
        heapq.heappush(self.index_pending, (visible, self.index_seq, order["id"]))
        updated = order["updatedAt"]
        if not isinstance(updated, datetime) or updated.microsecond or updated.tzinfo is None:
            self.by_updated_exact = False
        if self.on_change is not None:
            self.on_change(before, order)

    def touch(self, order: dict[str, Any], when: datetime | None = None) -> None:
        order["updatedAt"] = (when or self.now()).astimezone(UTC).replace(microsecond=0)
        self.put_order(order)

    def indexed(self, order_id: int) -> dict[str, Any] | None:
        """The order as the search index has it now (None if not indexed yet)."""
        now = time.monotonic()
        versions = self.index.get(order_id, [])
        seen = [o for visible, o in versions if visible <= now]
        if len(seen) > 1:  # forget what nobody can see any more
            keep = len(seen) - 1
            self.index[order_id] = versions[keep:]
        return seen[-1] if seen else None

    def settle_index(self) -> list[tuple[int, int]]:
        """``by_updated`` brought up to what ``indexed()`` shows now (versions whose lag has passed
        replace the order's previous entry); returns it. Caller holds ``lock``."""
        now = time.monotonic()
        pending, entries, by_updated = self.index_pending, self.by_updated_entry, self.by_updated
        while pending and pending[0][0] <= now:
            _visible, _seq, order_id = heapq.heappop(pending)
            seen = self.indexed(order_id)
            new = None if seen is None else (int(seen["updatedAt"].timestamp()), order_id)
            old = entries.get(order_id)
            if new == old:
                continue
            if old is not None:
                del by_updated[bisect.bisect_left(by_updated, old)]
                del entries[order_id]
            if new is not None:
                bisect.insort(by_updated, new)
                entries[order_id] = new
        return by_updated

    def visible(self, order: dict[str, Any], scopes: set[str]) -> bool:
        """Orders older than 60 days (by creation) are invisible without ``read_all_orders``."""
        return "read_all_orders" in scopes or order["createdAt"] >= self.now() - timedelta(days=60)

    # -- faults

    def take_fault(self, kinds: set[str] | None = None) -> dict[str, Any] | None:
        with self.lock:
            for i, fault in enumerate(self.faults):
                if kinds is None or fault["type"] in kinds:
                    if fault.get("times", 1) > 1:
                        fault["times"] = fault.get("times", 1) - 1
                        return dict(fault)
                    return self.faults.pop(i)
        return None


# --- money and order views -------------------------------------------------------------------------


def _bag(amount: Decimal, order: dict[str, Any]) -> dict[str, Any]:
    return d.money_bag(amount, order["currency"])


def _tax_views(lines: list[dict[str, Any]], order: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "title": t["title"],
            "rate": float(t["rate"]),
            "ratePercentage": float(t["rate"] * 100),
            "priceSet": _bag(t["amount"], order),
        }
        for t in lines
    ]


def line_view(li: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    fulfilled = sum(q for ful in order["fulfillments"] for _i, lid, q in ful["lines"] if lid == li["id"])
    current = li["quantity"] - li["refunded"]
    return {
        "__typename": "LineItem",
        "id": d.gid("LineItem", li["id"]),
        "sku": li["sku"],
        "name": li["name"],
        "title": li["title"],
        "variantTitle": li["variantTitle"],
        "quantity": li["quantity"],
        "currentQuantity": current,
        "unfulfilledQuantity": max(0, current - fulfilled),
        "refundableQuantity": current,
        "requiresShipping": li["requiresShipping"],
        "originalUnitPriceSet": _bag(li["unitPrice"], order),
        "discountedUnitPriceSet": _bag(li["total"] / li["quantity"] if li["quantity"] else d.ZERO, order),
        "originalTotalSet": _bag(li["subtotal"], order),
        "discountedTotalSet": _bag(li["total"], order),
        "totalDiscountSet": _bag(li["subtotal"] - li["total"], order),
        "taxLines": lambda _info, first=None: _tax_views(li["taxLines"], order)[:first],
        "variant": None,
    }


def _tax_summary(order: dict[str, Any]) -> list[dict[str, Any]]:
    by_title: dict[tuple[str, Decimal], Decimal] = {}
    for li in order["lineItems"]:
        for t in li["taxLines"]:
            by_title[(t["title"], t["rate"])] = by_title.get((t["title"], t["rate"]), d.ZERO) + t["amount"]
    for s in order["shippingLines"]:
        for t in s["taxLines"]:
            by_title[(t["title"], t["rate"])] = by_title.get((t["title"], t["rate"]), d.ZERO) + t["amount"]
    return _tax_views([{"title": k[0], "rate": k[1], "amount": v} for k, v in by_title.items()], order)


def fulfillment_view(ful: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    lines = {li["id"]: li for li in order["lineItems"]}
    items = [
        {
            "__typename": "FulfillmentLineItem",
            "id": d.gid("FulfillmentLineItem", fid),
            "quantity": q,
            "lineItem": line_view(lines[lid], order),
        }
        for fid, lid, q in ful["lines"]
    ]
    return {
        "__typename": "Fulfillment",
        "id": d.gid("Fulfillment", ful["id"]),
        "legacyResourceId": str(ful["id"]),
        "name": f"{order['name']}-F{order['fulfillments'].index(ful) + 1}",
        "status": ful["status"],
        "createdAt": d.time_text(ful["createdAt"]),
        "updatedAt": d.time_text(ful["updatedAt"]),
        "totalQuantity": sum(q for _f, _l, q in ful["lines"]),
        "trackingInfo": lambda _info, first=None: [dict(t) for t in ful["tracking"]][:first],
        "fulfillmentLineItems": connection_field(items),
    }


def fulfillment_order_view(fo: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    lines = {li["id"]: li for li in order["lineItems"]}
    left = d.remaining(fo, order)
    items = [
        {
            "__typename": "FulfillmentOrderLineItem",
            "id": d.gid("FulfillmentOrderLineItem", li["id"]),
            "sku": lines[li["lineItemId"]]["sku"],
            "totalQuantity": li["total"],
            "remainingQuantity": left[li["id"]],
            "lineItem": line_view(lines[li["lineItemId"]], order),
        }
        for li in fo["lineItems"]
    ]
    return {
        "__typename": "FulfillmentOrder",
        "id": d.gid("FulfillmentOrder", fo["id"]),
        "status": fo["status"],
        "createdAt": d.time_text(fo["createdAt"]),
        "updatedAt": d.time_text(fo["updatedAt"]),
        "orderId": d.gid("Order", order["id"]),
        "lineItems": connection_field(items),
    }


def refund_view(refund: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    lines = {li["id"]: li for li in order["lineItems"]}
    items = [
        {
            "__typename": "RefundLineItem",
            "id": d.gid("RefundLineItem", rid),
            "quantity": q,
            "restockType": restock,
            "restocked": restock != "NO_RESTOCK",
            "lineItem": line_view(lines[lid], order),
            "subtotalSet": _bag(lines[lid]["total"] / lines[lid]["quantity"] * q, order),
        }
        for rid, lid, q, restock in refund["lines"]
    ]
    return {
        "__typename": "Refund",
        "id": d.gid("Refund", refund["id"]),
        "legacyResourceId": str(refund["id"]),
        "createdAt": d.time_text(refund["createdAt"]),
        "note": refund["note"],
        "totalRefundedSet": _bag(refund["amount"], order),
        "refundLineItems": connection_field(items),
    }


def order_view(order: dict[str, Any]) -> dict[str, Any]:
    sub = d.subtotal(order)
    refunded = d.refunded_total(order)
    customer = order["customer"]
    return {
        "__typename": "Order",
        "id": d.gid("Order", order["id"]),
        "legacyResourceId": str(order["id"]),
        "name": order["name"],
        "createdAt": d.time_text(order["createdAt"]),
        "updatedAt": d.time_text(order["updatedAt"]),
        "processedAt": d.time_text(order["processedAt"]),
        "cancelledAt": d.time_text(order["cancelledAt"]),
        "cancelReason": order["cancelReason"],
        "closed": order["closed"],
        "closedAt": d.time_text(order["closedAt"]),
        "displayFinancialStatus": order["financial"],
        "displayFulfillmentStatus": d.fulfillment_status(order),
        "currencyCode": order["currency"],
        "presentmentCurrencyCode": order["currency"],
        "email": order["email"],
        "phone": order["phone"],
        "note": order["note"],
        "tags": sorted(order["tags"]),
        "test": order["test"],
        "fullyPaid": order["financial"] == "PAID",
        "unpaid": order["financial"] in ("PENDING", "AUTHORIZED", "EXPIRED"),
        "customer": None
        if customer is None
        else {
            "__typename": "Customer",
            "id": d.gid("Customer", customer["id"]),
            "legacyResourceId": str(customer["id"]),
            "firstName": customer["firstName"],
            "lastName": customer["lastName"],
            "email": customer["email"],
            "phone": customer["phone"],
            "displayName": " ".join(p for p in (customer["firstName"], customer["lastName"]) if p),
        },
        "billingAddress": order["billingAddress"],
        "shippingAddress": order["shippingAddress"],
        "lineItems": connection_field([line_view(li, order) for li in order["lineItems"]]),
        "subtotalPriceSet": _bag(sub, order),
        "currentSubtotalPriceSet": _bag(sub, order),
        "totalDiscountsSet": _bag(order["discount"], order),
        "totalShippingPriceSet": _bag(d.shipping_total(order), order),
        "totalTaxSet": _bag(order["tax"], order),
        "currentTotalTaxSet": _bag(order["tax"], order),
        "totalPriceSet": _bag(order["total"], order),
        "currentTotalPriceSet": _bag(order["total"] - refunded, order),
        "totalRefundedSet": _bag(refunded, order),
        # tips, duties and additional fees are not generated (WooCommerce fees become custom
        # line items)
        "taxesIncluded": order.get("taxesIncluded", False),
        "requiresShipping": any(li["requiresShipping"] for li in order["lineItems"]),
        "totalTipReceivedSet": _bag(Decimal(0), order),
        "originalTotalDutiesSet": None,
        "originalTotalAdditionalFeesSet": None,
        "taxLines": _tax_summary(order),
        "shippingLines": connection_field(
            [
                {
                    "__typename": "ShippingLine",
                    "id": d.gid("ShippingLine", s["id"]),
                    "title": s["title"],
                    "code": s["code"],
                    "source": "shopify",
                    "originalPriceSet": _bag(s["amount"], order),
                    "discountedPriceSet": _bag(s["amount"], order),
                    "taxLines": _tax_views(s["taxLines"], order),
                }
                for s in order["shippingLines"]
            ]
        ),
        "refunds": lambda _info, first=None: [refund_view(r, order) for r in order["refunds"]][:first],
        "fulfillments": lambda _info, first=None, query=None: [
            fulfillment_view(f, order) for f in order["fulfillments"]
        ][:first],
        "fulfillmentOrders": connection_field(
            [fulfillment_order_view(fo, order) for fo in order["fulfillmentOrders"]]
        ),
    }


def connection_field(nodes: list[dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """A nested connection over a small in-memory list (the sort key is the position)."""

    def resolve(info: Any, reverse: bool = False, **args: Any) -> dict[str, Any]:
        ctx: Context = info.context
        rows = [Row(i, i, n) for i, n in enumerate(nodes)]
        return ctx.page(info, rows[::-1] if reverse else rows, args, descending=reverse)

    return resolve


# --- request context: paging, cost accounting ------------------------------------------------------


class Throttled(Exception):
    pass


@dataclass(frozen=True)
class Row:
    """One row of a connection, in the connection's order: its sort key, its id, what becomes its node."""

    key: Any
    id: int
    payload: Any


class KeyRange:
    """The rows of ``keys[lo:hi]`` (a sorted list of (sort value, id)), built only when read: a
    connection over a range of an ordered index without materialising every row. ``Context.page``
    takes its length, slices it and finds cursors in it by bisection."""

    def __init__(self, keys: list[tuple[Any, int]], lo: int, hi: int, payload: Callable[[int], Any]) -> None:
        self.keys, self.lo, self.hi, self.payload = keys, lo, max(lo, hi), payload

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, index: slice) -> list[Row]:
        start, stop, step = index.indices(len(self))
        return [self._row(i) for i in range(start, stop, step)]

    def __iter__(self) -> Any:
        return iter(self[:])

    def _row(self, i: int) -> Row:
        key, row_id = self.keys[self.lo + i]
        return Row(key, row_id, self.payload(row_id))

    def position(self, mark: tuple[Any, Any], *, after: bool) -> int:
        """As ``Context._position`` ascending: the first row after ``mark`` (``after``) or at it."""
        find = bisect.bisect_right if after else bisect.bisect_left
        return find(self.keys, mark, self.lo, self.hi) - self.lo


@dataclass
class Context:
    state: ShopState
    version: str
    scopes: set[str]
    base_url: str
    bulk: bool = False
    refund: int = 0
    search_warnings: list[dict[str, Any]] = field(default_factory=list)

    def page(
        self,
        info: Any,
        rows: list[Row] | KeyRange,
        args: dict[str, Any],
        build: Callable[[Any], dict[str, Any]] | None = None,
        *,
        descending: bool = False,
    ) -> dict[str, Any]:
        """One page of ``rows`` as a connection (``edges``, ``nodes``, ``pageInfo``); nodes are built
        for the page only. Cursors are keyset positions (sort value, id), so rows that move or go away
        while a client pages neither break its cursor nor shift the next page."""
        first, last = args.get("first"), args.get("last")
        if not self.bulk:
            _check_page_args(first, last)
        lo, hi = 0, len(rows)
        if args.get("after") is not None:
            lo = self._position(rows, args["after"], descending, after=True)
        if args.get("before") is not None:
            hi = max(lo, self._position(rows, args["before"], descending, after=False))
        if self.bulk or (first is None and last is None):
            start, end = lo, hi
        elif first is not None:
            start, end = lo, min(hi, lo + first)
        else:
            start, end = max(lo, hi - last), hi
        cap = self.state.paging_cap
        if cap is not None and not self.bulk and end > cap:
            raise GraphQLError(
                f"Pagination limit exceeded: a connection can't be paginated past {cap} items.",
                extensions={"code": "BAD_REQUEST"},
            )
        size = first if first is not None else last
        if size is not None and not self.bulk:
            self.refund += (size - (end - start)) * node_cost(info)
        build = build or (lambda payload: payload)
        window = rows[start:end]
        nodes = [build(row.payload) for row in window]
        cursors = [d.encode_cursor(row.id, row.key) for row in window]
        return {
            "edges": [{"cursor": c, "node": n} for c, n in zip(cursors, nodes, strict=True)],
            "nodes": nodes,
            "pageInfo": {
                "hasNextPage": end < len(rows),
                "hasPreviousPage": start > 0,
                "startCursor": cursors[0] if cursors else None,
                "endCursor": cursors[-1] if cursors else None,
            },
        }

    def _position(self, rows: list[Row] | KeyRange, cursor: str, descending: bool, *, after: bool) -> int:
        """Index of the first row after the cursor (``after``) or of the cursor's row (``before``)."""
        decoded = d.decode_cursor(cursor)
        if decoded is None or cursor in self.state.broken_cursors:
            raise GraphQLError(
                "Invalid cursor for current pagination sort.", extensions={"code": "BAD_REQUEST"}
            )
        last_id, last_value = decoded
        mark = (last_value, last_id)
        if isinstance(rows, KeyRange) and not descending:
            try:
                return rows.position(mark, after=after)
            except TypeError:
                raise GraphQLError(
                    "Invalid cursor for current pagination sort.", extensions={"code": "BAD_REQUEST"}
                ) from None
        for i, row in enumerate(rows):
            here = (row.key, row.id)
            try:
                beyond = here < mark if descending else here > mark
            except TypeError:
                raise GraphQLError(
                    "Invalid cursor for current pagination sort.", extensions={"code": "BAD_REQUEST"}
                ) from None
            if here == mark:
                return i + 1 if after else i
            if beyond:
                return i
        return len(rows)


def _check_page_args(first: int | None, last: int | None) -> None:
    if first is None and last is None:
        raise GraphQLError("you must provide one of first or last", extensions={"code": "BAD_REQUEST"})
    if first is not None and last is not None:
        raise GraphQLError(
            "providing both first and last is not supported", extensions={"code": "BAD_REQUEST"}
        )
    for name, value in (("first", first), ("last", last)):
        if value is not None and not 0 <= value <= MAX_PAGE:
            raise GraphQLError(
                f"The argument `{name}` must be between 0 and {MAX_PAGE}.", extensions={"code": "BAD_REQUEST"}
            )


# --- query cost ------------------------------------------------------------------------------------


def _is_connection(type_: Any) -> bool:
    return get_named_type(type_).name.endswith("Connection")


def _size(args: dict[str, Any]) -> int:
    for name in ("first", "last"):
        if isinstance(args.get(name), int):
            return max(0, args[name])
    return 1


def _field_args(node: FieldNode, variables: dict[str, Any]) -> dict[str, Any]:
    return {a.name.value: value_from_ast_untyped(a.value, variables) for a in node.arguments or ()}


def selection_cost(
    schema: GraphQLSchema,
    parent: Any,
    sel: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
    per_id: bool = False,
) -> int:
    """Shopify's requested cost of a selection on ``parent``: scalars and enums 0, objects 1,
    connections 2 + first (or last) x the cost of one node, interfaces the maximum of their types;
    ``nodes(ids:)`` ids x its node with ``per_id`` (as Shopify), else one node."""
    if sel is None:
        return 0
    total, by_type = 0, {}
    for s in sel.selections:
        if isinstance(s, FieldNode):
            total += field_cost(schema, parent, s, fragments, variables, per_id)
            continue
        frag = fragments.get(s.name.value) if isinstance(s, FragmentSpreadNode) else s
        if frag is None:
            continue
        cond = frag.type_condition.name.value if frag.type_condition else parent.name
        target = schema.get_type(cond) or parent
        cost = selection_cost(schema, target, frag.selection_set, fragments, variables, per_id)
        if cond == parent.name or isinstance(target, GraphQLInterfaceType):
            total += cost
        else:
            by_type[cond] = by_type.get(cond, 0) + cost
    return total + (max(by_type.values()) if by_type else 0)


def field_cost(
    schema: GraphQLSchema,
    parent: Any,
    node: FieldNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
    per_id: bool = False,
) -> int:
    name = node.name.value
    if name.startswith("__") or not hasattr(parent, "fields") or name not in parent.fields:
        return 0
    ftype = parent.fields[name].type
    named = get_named_type(ftype)
    if not isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
        return 0
    args = _field_args(node, variables)
    if _is_connection(ftype):
        return 2 + _size(args) * connection_node_cost(schema, named, node, fragments, variables)
    inner = selection_cost(schema, named, node.selection_set, fragments, variables, per_id)
    many = 1
    if isinstance(ftype, GraphQLList) or isinstance(getattr(ftype, "of_type", None), GraphQLList):
        ids = args.get("ids")
        # ``nodes(ids:)``: per id as Shopify charges it (``per_id``), else as one node
        many = len(ids) if per_id and isinstance(ids, list) else _size(args)
    return many * (1 + inner)


def connection_node_cost(
    schema: GraphQLSchema,
    conn: Any,
    node: FieldNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
) -> int:
    """The cost of one node of a connection selection (``nodes`` or ``edges { node }``)."""
    node_type = get_named_type(conn.fields["nodes"].type)
    best = 1
    for sel in _flat_fields(node.selection_set, fragments):
        if sel.name.value == "nodes":
            best = max(best, 1 + selection_cost(schema, node_type, sel.selection_set, fragments, variables))
        elif sel.name.value == "edges":
            for inner in _flat_fields(sel.selection_set, fragments):
                if inner.name.value == "node":
                    best = max(
                        best, 1 + selection_cost(schema, node_type, inner.selection_set, fragments, variables)
                    )
    return best


def _flat_fields(
    sel: SelectionSetNode | None, fragments: dict[str, FragmentDefinitionNode]
) -> list[FieldNode]:
    out: list[FieldNode] = []
    for s in sel.selections if sel else ():
        if isinstance(s, FieldNode):
            out.append(s)
        elif isinstance(s, InlineFragmentNode):
            out.extend(_flat_fields(s.selection_set, fragments))
        elif isinstance(s, FragmentSpreadNode) and s.name.value in fragments:
            out.extend(_flat_fields(fragments[s.name.value].selection_set, fragments))
    return out


def node_cost(info: Any) -> int:
    """Cost of one node of the connection being resolved (for the actual-cost refund)."""
    named = get_named_type(info.return_type)
    if not hasattr(named, "fields") or "nodes" not in named.fields:
        return 1
    return connection_node_cost(info.schema, named, info.field_nodes[0], info.fragments, info.variable_values)


def requested_cost(
    schema: GraphQLSchema,
    op: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
    per_id: bool = False,
) -> int:
    if op.operation.value == "mutation":
        return MUTATION_COST * len(_flat_fields(op.selection_set, fragments))
    return selection_cost(schema, schema.query_type, op.selection_set, fragments, variables, per_id)


def execution_parts(
    document: Any, operation_name: str | None
) -> tuple[OperationDefinitionNode | None, dict[str, FragmentDefinitionNode]]:
    ops = [n for n in document.definitions if isinstance(n, OperationDefinitionNode)]
    fragments = {n.name.value: n for n in document.definitions if isinstance(n, FragmentDefinitionNode)}
    if operation_name:
        ops = [o for o in ops if o.name and o.name.value == operation_name]
    return (ops[0] if len(ops) == 1 else None), fragments


def scope_middleware(next_: Callable[..., Any], root: Any, info: Any, **args: Any) -> Any:
    """Refuse a field the token's scopes don't cover, with Shopify's ACCESS_DENIED error."""
    ctx: Context = info.context
    needed = FIELD_SCOPES.get((info.parent_type.name, info.field_name))
    if needed is None:
        named = get_named_type(info.return_type)
        if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
            inner = named.fields.get("nodes")
            type_name = get_named_type(inner.type).name if inner is not None else named.name
            needed = TYPE_SCOPES.get(type_name)
    if needed and not (set(needed) & ctx.scopes):
        raise access_denied(info.field_name, needed)
    return next_(root, info, **args)


def run(
    ctx: Context, query: str, variables: dict[str, Any] | None, operation_name: str | None, root: Any
) -> tuple[dict[str, Any], int | None, int]:
    """Parse, validate, cost-check and execute; returns (body, actual cost, requested cost)."""
    schema = schema_for(ctx.version)
    try:
        document = parse(query)
    except GraphQLError as exc:
        return {"errors": [exc.formatted]}, None, 0
    errors = validate(schema, document)
    if errors:
        return {"errors": [e.formatted for e in errors]}, None, 0
    op, fragments = execution_parts(document, operation_name)
    requested = (
        0
        if op is None
        else requested_cost(schema, op, fragments, variables or {}, ctx.state.nodes_cost_per_id)
    )
    if requested > ctx.state.max_cost:
        return (
            {
                "errors": [
                    {
                        "message": f"Query cost is {requested}, which exceeds the single "
                        "query max cost limit "
                        f"({ctx.state.max_cost}).\n\nSee {DOCS_RATE} for more information on how the\n"
                        "cost of a query is calculated.\n\nTo query larger amounts of data with fewer "
                        "limits, "
                        "bulk operations should be used instead.\nSee https://shopify.dev/tutorials/"
                        "perform-bulk-operations-with-admin-api for usage details.\n",
                        "extensions": {
                            "code": "MAX_COST_EXCEEDED",
                            "cost": requested,
                            "maxCost": ctx.state.max_cost,
                            "documentation": DOCS_RATE,
                        },
                    }
                ]
            },
            None,
            requested,
        )
    with ctx.state.lock:
        if ctx.state.bucket.refill() < requested:
            raise Throttled(requested)
        ctx.state.bucket.available -= requested
        result = execute(
            schema, document, root, ctx, variables, operation_name, middleware=[scope_middleware]
        )
        actual = (
            max(0, requested - ctx.refund) if op is not None and op.operation.value == "query" else requested
        )
        ctx.state.bucket.available = min(
            ctx.state.bucket.maximum, ctx.state.bucket.available + requested - actual
        )
    body: dict[str, Any] = {}
    if result.errors:
        body["errors"] = [e.formatted for e in result.errors]
    body["data"] = result.data
    return body, actual, requested


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
