"""Root resolvers: the queries and mutations the sandbox serves, over ``ShopState``."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from graphql import GraphQLError

from sandbox.shopify_admin import data as d
from sandbox.shopify_admin.graph import (
    ALL_SCOPES,
    Context,
    KeyRange,
    Row,
    ShopState,
    fulfillment_view,
    order_view,
    refund_view,
)

_SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "UPDATED_AT": lambda o: int(o["updatedAt"].timestamp()),
    "CREATED_AT": lambda o: int(o["createdAt"].timestamp()),
    "PROCESSED_AT": lambda o: int(o["processedAt"].timestamp()),
    "ID": lambda o: o["id"],
    "ORDER_NUMBER": lambda o: o["id"],
}


def _ctx(info: Any) -> Context:
    return info.context


def _state(info: Any) -> ShopState:
    return _ctx(info).state


def _order_by_gid(info: Any, value: Any) -> dict[str, Any] | None:
    parsed = d.parse_gid(value, "Order")
    state = _state(info)
    order = state.orders.get(parsed[1]) if parsed else None
    if order is None or not state.visible(order, _ctx(info).scopes):
        return None
    return order


def _search_orders(info: Any, query: str | None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(as indexed, current) for the orders matching ``query`` as the (possibly lagging) search index
    sees them; without a query the current data."""
    ctx, state = _ctx(info), _state(info)
    checks = []
    for term in d.parse_search(query).terms:
        check = d.compile_term(term, state.shop_tz)
        if check is None:
            _warn(ctx, query or "", term.name)
        else:
            checks.append(check)
    everything = "read_all_orders" in ctx.scopes
    cutoff = state.now() - timedelta(days=60)
    out = []
    for order_id, order in state.orders.items():
        if not everything and order["createdAt"] < cutoff:
            continue
        seen = state.indexed(order_id) if query else order
        if seen is not None and all(check(seen) for check in checks):
            out.append((seen, order))
    return out


def _updated_range(query: str | None, shop_tz: Any) -> tuple[int | None, int | None] | None:
    """[lower, upper) in whole seconds of ``updatedAt`` (None: open) that ``query`` matches when its
    terms are all ``updated_at`` bounds (the compiled checks compare whole seconds with the bound);
    None for any other query."""
    terms = d.parse_search(query).terms
    if not terms:
        return None
    lows, highs = [], []
    for term in terms:
        if term.name != "updated_at" or term.negated or term.op not in ("<", "<=", ">", ">=", "="):
            return None
        bound = d.parse_search_time(term.value, shop_tz)
        if bound is None:
            return None
        whole, frac = int(bound.replace(microsecond=0).timestamp()), int(bool(bound.microsecond))
        if term.op in (">=", "="):
            lows.append(whole + frac)
        if term.op == ">":
            lows.append(whole + 1)
        if term.op in ("<", "="):
            highs.append(whole + frac if term.op == "<" else whole + 1 - frac)
        if term.op == "<=":
            highs.append(whole + 1)
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _range_rows(info: Any, query: str | None) -> KeyRange | None:
    """The orders an ``updated_at`` range matches, sorted by (updatedAt, id), bisected out of the
    ordered search index (``ShopState.by_updated``) instead of filtering and sorting every order:
    the same rows as ``_search_orders`` + sort for such a query. None when it does not apply (other
    terms, orders hidden by age without ``read_all_orders``, fractional ``updatedAt``)."""
    ctx, state = _ctx(info), _state(info)
    if not query or "read_all_orders" not in ctx.scopes or not state.by_updated_exact:
        return None
    window = _updated_range(query, state.shop_tz)
    if window is None:
        return None
    keys = state.settle_index()
    lower, upper = window
    lo = 0 if lower is None else bisect.bisect_left(keys, (lower,))
    hi = len(keys) if upper is None else bisect.bisect_left(keys, (upper,))
    return KeyRange(keys, lo, hi, state.orders.__getitem__)


def _warn(ctx: Context, query: str, name: str) -> None:
    warning = {"field": name, "message": "Invalid search field for this query."}
    for entry in ctx.search_warnings:
        if entry["query"] == query:
            if warning not in entry["warnings"]:
                entry["warnings"].append(warning)
            return
    ctx.search_warnings.append({"path": ["orders"], "query": query, "warnings": [warning]})


def orders(
    info: Any, query: str | None = None, reverse: bool = False, sortKey: str = "PROCESSED_AT", **args: Any
) -> dict[str, Any]:
    """The orders connection, sorted and filtered by what the search index has (a lagging index sorts
    and filters by the old values), ties by id; the nodes show the current order."""
    key = _SORT_KEYS.get(sortKey, _SORT_KEYS["PROCESSED_AT"])
    state = _state(info)
    with state.lock:
        rows: list[Row] | KeyRange | None = None
        if sortKey == "UPDATED_AT" and not reverse:
            rows = _range_rows(info, query)
        if rows is None:
            found = _search_orders(info, query)
            found.sort(key=lambda pair: (key(pair[0]), pair[0]["id"]), reverse=reverse)
            rows = [Row(key(seen), seen["id"], order) for seen, order in found]
        conn = _ctx(info).page(info, rows, args, order_view, descending=reverse)
    _maybe_break_cursor(info, conn)
    return conn


def _maybe_break_cursor(info: Any, conn: dict[str, Any]) -> None:
    state = _state(info)
    cursor = conn["pageInfo"]["endCursor"]
    if cursor and conn["pageInfo"]["hasNextPage"] and state.take_fault({"broken_cursor"}) is not None:
        state.broken_cursors.add(cursor)


def orders_count(info: Any, query: str | None = None, limit: int | None = 10000, **_: Any) -> dict[str, Any]:
    with _state(info).lock:
        rows = _range_rows(info, query)
        count = len(rows) if rows is not None else len(_search_orders(info, query))
    if limit is not None and count > limit:
        return {"count": limit, "precision": "AT_LEAST"}
    return {"count": count, "precision": "EXACT"}


def order(info: Any, id: str) -> dict[str, Any] | None:
    with _state(info).lock:
        found = _order_by_gid(info, id)
        return None if found is None else order_view(found)


def node(info: Any, id: str) -> dict[str, Any] | None:
    with _state(info).lock:
        return _node(info, id)


def nodes(info: Any, ids: list[str]) -> list[dict[str, Any] | None]:
    if len(ids) > 250:
        raise GraphQLError(
            "The input array size of 251 is greater than the maximum allowed of 250.",
            extensions={"code": "MAX_INPUT_SIZE_EXCEEDED"},
        )
    with _state(info).lock:
        return [_node(info, i) for i in ids]


def _node(info: Any, value: str) -> dict[str, Any] | None:
    parsed = d.parse_gid(value)
    if parsed is None:
        raise GraphQLError(
            f"Invalid global id '{value}'", extensions={"code": "argumentLiteralsIncompatible"}
        )
    kind, number = parsed
    state = _state(info)
    if kind == "Order":
        found = _order_by_gid(info, value)
        return None if found is None else order_view(found)
    if kind == "BulkOperation":
        return bulk_view(info, state.bulk.get(number))
    finders: dict[str, Callable[[int], dict[str, Any] | None]] = {
        "ProductVariant": lambda n: _variant_view(info, state.variants.get(n)),
        "InventoryItem": lambda n: _item_view(info, state.items.get(n)),
        "Location": lambda n: _location_view(state.locations.get(n)),
    }
    finder = finders.get(kind)
    return finder(number) if finder else _order_child(info, kind, number)


def _order_child(info: Any, kind: str, number: int) -> dict[str, Any] | None:
    state = _state(info)
    for o in state.orders.values():
        if not state.visible(o, _ctx(info).scopes):
            continue
        if kind == "Fulfillment":
            for ful in o["fulfillments"]:
                if ful["id"] == number:
                    return fulfillment_view(ful, o)
        if kind == "Refund":
            for r in o["refunds"]:
                if r["id"] == number:
                    return refund_view(r, o)
    return None


def current_app_installation(info: Any) -> dict[str, Any]:
    scopes = sorted(_ctx(info).scopes)
    return {
        "__typename": "AppInstallation",
        "id": d.gid("AppInstallation", 1),
        "accessScopes": [{"handle": s, "description": s.replace("_", " ")} for s in scopes],
    }


def shop(info: Any) -> dict[str, Any]:
    state = _state(info)
    return {
        "__typename": "Shop",
        "id": d.gid("Shop", 1),
        "name": "Sandbox Shop",
        "myshopifyDomain": "sandbox-shop.myshopify.com",
        "currencyCode": "EUR",
        "ianaTimezone": getattr(state.shop_tz, "key", "UTC"),
    }


# --- products, inventory, locations ----------------------------------------------------------------


def _location_view(loc: dict[str, Any] | None) -> dict[str, Any] | None:
    if loc is None:
        return None
    return {
        "__typename": "Location",
        "id": d.gid("Location", loc["id"]),
        "legacyResourceId": str(loc["id"]),
        "name": loc["name"],
        "isActive": loc.get("isActive", True),
    }


def _level_view(info: Any, item: dict[str, Any], loc_id: int) -> dict[str, Any] | None:
    state = _state(info)
    if (item["id"], loc_id) not in state.levels:
        return None
    qty = state.levels[(item["id"], loc_id)]

    def quantities(_info: Any, names: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "id": f"gid://shopify/InventoryQuantity/{item['id']}?inventory_item_id={item['id']}&name={n}",
                "name": n,
                "quantity": qty if n in ("available", "on_hand") else 0,
                "updatedAt": None,
            }
            for n in names
        ]

    return {
        "__typename": "InventoryLevel",
        "id": f"gid://shopify/InventoryLevel/{loc_id}?inventory_item_id={item['id']}",
        "quantities": quantities,
        "location": _location_view(state.locations.get(loc_id)),
        "item": None,
        "updatedAt": None,
    }


def _item_view(info: Any, item: dict[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    state = _state(info)

    def levels(inner: Any, reverse: bool = False, **args: Any) -> dict[str, Any]:
        rows = [
            Row(loc, loc, loc) for (iid, loc) in sorted(state.levels, reverse=reverse) if iid == item["id"]
        ]
        return _ctx(info).page(
            inner, rows, args, lambda loc: _level_view(info, item, loc), descending=reverse
        )

    def level(_inner: Any, locationId: str, **_: Any) -> dict[str, Any] | None:
        parsed = d.parse_gid(locationId, "Location")
        return _level_view(info, item, parsed[1]) if parsed else None

    return {
        "__typename": "InventoryItem",
        "id": d.gid("InventoryItem", item["id"]),
        "legacyResourceId": str(item["id"]),
        "sku": item["sku"],
        "tracked": item.get("tracked", True),
        "inventoryLevels": levels,
        "inventoryLevel": level,
        "variant": lambda inner: _variant_view(info, state.variants.get(item["variantId"])),
    }


def _variant_view(info: Any, variant: dict[str, Any] | None) -> dict[str, Any] | None:
    if variant is None:
        return None
    state = _state(info)
    return {
        "__typename": "ProductVariant",
        "id": d.gid("ProductVariant", variant["id"]),
        "legacyResourceId": str(variant["id"]),
        "sku": variant["sku"],
        "title": variant["title"],
        "displayName": variant["title"],
        "inventoryItem": _item_view(info, state.items.get(variant["itemId"])),
        "product": {
            "__typename": "Product",
            "id": d.gid("Product", variant["productId"]),
            "title": variant["title"],
        },
    }


def _sku_filter(query: str | None) -> Callable[[str | None], bool]:
    terms = [t for t in d.parse_search(query).terms if t.name == "sku"]
    return lambda sku: all((sku or "") == t.value for t in terms)


def product_variants(
    info: Any, query: str | None = None, reverse: bool = False, **args: Any
) -> dict[str, Any]:
    state, keep = _state(info), _sku_filter(query)
    with state.lock:
        rows = [
            Row(vid, vid, v) for vid, v in sorted(state.variants.items(), reverse=reverse) if keep(v["sku"])
        ]
        return _ctx(info).page(info, rows, args, lambda v: _variant_view(info, v), descending=reverse)


def inventory_items(
    info: Any, query: str | None = None, reverse: bool = False, **args: Any
) -> dict[str, Any]:
    state, keep = _state(info), _sku_filter(query)
    with state.lock:
        rows = [Row(iid, iid, i) for iid, i in sorted(state.items.items(), reverse=reverse) if keep(i["sku"])]
        return _ctx(info).page(info, rows, args, lambda i: _item_view(info, i), descending=reverse)


def inventory_item(info: Any, id: str) -> dict[str, Any] | None:
    parsed = d.parse_gid(id, "InventoryItem")
    return _item_view(info, _state(info).items.get(parsed[1])) if parsed else None


def locations(info: Any, includeInactive: bool = False, reverse: bool = False, **args: Any) -> dict[str, Any]:
    state = _state(info)
    with state.lock:
        rows = [
            Row(lid, lid, loc)
            for lid, loc in sorted(state.locations.items(), reverse=reverse)
            if includeInactive or loc.get("isActive", True)
        ]
        return _ctx(info).page(info, rows, args, _location_view, descending=reverse)


def location(info: Any, id: str | None = None) -> dict[str, Any] | None:
    state = _state(info)
    if id is None:
        return _location_view(next(iter(state.locations.values()), None))
    parsed = d.parse_gid(id, "Location")
    return _location_view(state.locations.get(parsed[1])) if parsed else None


def bulk_view(info: Any, op: dict[str, Any] | None) -> dict[str, Any] | None:
    if op is None:
        return None
    return {
        "__typename": "BulkOperation",
        "id": d.gid("BulkOperation", op["id"]),
        "status": op["status"],
        "errorCode": op["errorCode"],
        "objectCount": str(op["objectCount"]),
        "rootObjectCount": str(op["rootObjectCount"]),
        "fileSize": None if op["fileSize"] is None else str(op["fileSize"]),
        "url": op["url"],
        "partialDataUrl": op["partialDataUrl"],
        "createdAt": d.time_text(op["createdAt"]),
        "completedAt": d.time_text(op["completedAt"]),
        "query": op["query"],
        "type": "QUERY",
    }


def now(info: Any) -> datetime:
    return _state(info).now()


def granted(scopes: set[str]) -> list[str]:
    return [s for s in ALL_SCOPES if s in scopes]


def dec(value: Any) -> Decimal:
    return Decimal(str(value))
