"""Mutations (with Shopify's ``userErrors``) and bulk query operations."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from graphql import FieldNode, GraphQLError, OperationDefinitionNode, get_named_type, parse, validate
from graphql.execution import execute

from sandbox.shopify_admin import data as d
from sandbox.shopify_admin import graph as g
from sandbox.shopify_admin import resolvers as r


def _err(field: list[str] | None, message: str, code: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"field": field, "message": message}
    if code is not None:
        out["code"] = code
    return out


def _find_fo(state: g.ShopState, fo_gid: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    parsed = d.parse_gid(fo_gid, "FulfillmentOrder")
    if parsed is None:
        return None
    for order in state.orders.values():
        for fo in order["fulfillmentOrders"]:
            if fo["id"] == parsed[1]:
                return order, fo
    return None


def fulfillment_create(info: Any, fulfillment: dict[str, Any], message: str | None = None) -> dict[str, Any]:
    state = r._state(info)
    with state.lock:
        groups = fulfillment["lineItemsByFulfillmentOrder"]
        if len(groups) != 1:
            return {
                "fulfillment": None,
                "userErrors": [
                    _err(
                        ["fulfillment"], "All fulfillment orders must belong to the same order and location."
                    )
                ],
            }
        group = groups[0]
        found = _find_fo(state, group["fulfillmentOrderId"])
        if found is None:
            return {
                "fulfillment": None,
                "userErrors": [_err(["fulfillment"], "Fulfillment order does not exist.")],
            }
        order, fo = found
        if fo["status"] in ("CLOSED", "CANCELLED") or order["cancelledAt"] is not None:
            return {
                "fulfillment": None,
                "userErrors": [_err(["fulfillment"], "Fulfillment order is not in an actionable state.")],
            }
        left = d.remaining(fo, order)
        wanted = _wanted_lines(group, left)
        if isinstance(wanted, dict):
            return {"fulfillment": None, "userErrors": [wanted]}
        tracking = fulfillment.get("trackingInfo") or None
        info_row = (
            None
            if not tracking
            else {
                "company": tracking.get("company"),
                "number": tracking.get("number") or (tracking.get("numbers") or [None])[0],
                "url": tracking.get("url") or (tracking.get("urls") or [None])[0],
            }
        )
        ful = d.fulfil(order, fo, wanted, info_row, state.now(), state.ids)
        if d.fulfillment_status(order) == "FULFILLED" and order["financial"] == "PAID":
            order["closed"], order["closedAt"] = True, state.now()
        state.touch(order)
        return {"fulfillment": g.fulfillment_view(ful, order), "userErrors": []}


def _wanted_lines(group: dict[str, Any], left: dict[int, int]) -> list[tuple[int, int]] | dict[str, Any]:
    items = group.get("fulfillmentOrderLineItems")
    if not items:
        wanted = [(i, q) for i, q in left.items() if q > 0]
        return wanted or _err(["fulfillment"], "Fulfillment order has no remaining line items to fulfill.")
    wanted = []
    for item in items:
        parsed = d.parse_gid(item["id"], "FulfillmentOrderLineItem")
        if parsed is None or parsed[1] not in left:
            return _err(["fulfillment"], "Invalid fulfillment order line item id.")
        if item["quantity"] <= 0 or item["quantity"] > left[parsed[1]]:
            return _err(
                ["fulfillment"],
                f"Invalid fulfillment order line item quantity requested "
                f"({item['quantity']} > {max(0, left[parsed[1]])} remaining).",
            )
        wanted.append((parsed[1], item["quantity"]))
    return wanted


def order_cancel(
    info: Any,
    orderId: str,
    reason: str,
    restock: bool,
    refund: bool | None = None,
    refundMethod: dict[str, Any] | None = None,
    notifyCustomer: bool = False,
    staffNote: str | None = None,
) -> dict[str, Any]:
    state = r._state(info)
    with state.lock:
        order = r._order_by_gid(info, orderId)
        state.jobs += 1
        job = {"id": d.gid("Job", state.jobs), "done": True}
        if order is None:
            return {
                "job": None,
                "orderCancelUserErrors": [_err(["orderId"], "Order does not exist", "NOT_FOUND")],
                "userErrors": [_err(["orderId"], "Order does not exist")],
            }
        if refund is not None and refundMethod is not None:
            msg = "Only one of refund or refundMethod can be provided."
            return {
                "job": None,
                "orderCancelUserErrors": [_err(["refund"], msg, "INVALID")],
                "userErrors": [_err(["refund"], msg)],
            }
        if order["cancelledAt"] is not None:
            msg = "Cannot cancel an order that has already been cancelled"
            return {
                "job": None,
                "orderCancelUserErrors": [_err(["orderId"], msg, "INVALID")],
                "userErrors": [_err(["orderId"], msg)],
            }
        order["cancelledAt"], order["cancelReason"] = state.now(), reason
        order["closed"], order["closedAt"] = True, state.now()
        wants_refund = bool(refund) or bool((refundMethod or {}).get("originalPaymentMethodsRefund"))
        if wants_refund and order["financial"] in ("PAID", "PARTIALLY_PAID"):
            amount = order["total"] - d.refunded_total(order)
            order["refunds"].append(
                {
                    "id": state.ids.take(),
                    "createdAt": state.now(),
                    "note": staffNote,
                    "amount": amount,
                    "lines": [],
                }
            )
            order["financial"] = "REFUNDED"
        elif order["financial"] in ("PENDING", "AUTHORIZED"):
            order["financial"] = "VOIDED"
        for fo in order["fulfillmentOrders"]:
            if fo["status"] != "CLOSED":
                fo["status"] = "CANCELLED"
        order["staffNote"] = staffNote
        state.touch(order)
        return {"job": job, "orderCancelUserErrors": [], "userErrors": []}


def _tags(info: Any, id: str, tags: list[str], add: bool) -> dict[str, Any]:
    state = r._state(info)
    with state.lock:
        order = r._order_by_gid(info, id)
        if order is None:
            return {"node": None, "userErrors": [_err(["id"], "Resource not found")]}
        words = [t.strip() for tag in tags for t in tag.split(",") if t.strip()]
        current = {t.lower(): t for t in order["tags"]}
        if add:
            for w in words:
                current.setdefault(w.lower(), w)
        else:
            for w in words:
                current.pop(w.lower(), None)
        order["tags"] = sorted(current.values())
        state.touch(order)
        return {"node": g.order_view(order), "userErrors": []}


def tags_add(info: Any, id: str, tags: list[str]) -> dict[str, Any]:
    return _tags(info, id, tags, True)


def tags_remove(info: Any, id: str, tags: list[str]) -> dict[str, Any]:
    return _tags(info, id, tags, False)


def order_update(info: Any, input: dict[str, Any]) -> dict[str, Any]:
    state = r._state(info)
    with state.lock:
        order = r._order_by_gid(info, input["id"])
        if order is None:
            return {"order": None, "userErrors": [_err(["id"], "Order does not exist")]}
        if "note" in input:
            order["note"] = input["note"]
        if "email" in input:
            order["email"] = input["email"]
        if "tags" in input and input["tags"] is not None:
            order["tags"] = sorted({t.strip() for t in input["tags"] if t.strip()})
        state.touch(order)
        return {"order": g.order_view(order), "userErrors": []}


#: Financial statuses ``orderMarkAsPaid`` accepts: a positive outstanding balance and not ``PAID``
#: (Shopify's rule); an authorization is captured, anything else gets a manual sale.
_MARKABLE = ("PENDING", "AUTHORIZED", "PARTIALLY_PAID", "EXPIRED")


def order_mark_as_paid(info: Any, input: dict[str, Any]) -> dict[str, Any]:
    state = r._state(info)
    with state.lock:
        order = r._order_by_gid(info, input["id"])
        if order is None:
            return {"order": None, "userErrors": [_err(["id"], "Order does not exist")]}
        if order["financial"] not in _MARKABLE or order["total"] <= 0:
            return {"order": None, "userErrors": [_err(["id"], "Order cannot be marked as paid.")]}
        kind = "CAPTURE" if order["financial"] == "AUTHORIZED" else "SALE"
        order.setdefault("transactions", []).append(
            {"id": state.ids.take(), "kind": kind, "gateway": "manual" if kind == "SALE" else "gateway",
             "amount": order["total"], "processedAt": state.now()})
        order["financial"] = "PAID"
        state.touch(order)
        return {"order": g.order_view(order), "userErrors": []}


def _idempotency_key(info: Any) -> str | None:
    """The ``@idempotent(key:)`` of the field being resolved (``None``: not given)."""
    directive = info.schema.get_directive("idempotent")
    if directive is None:
        return None
    from graphql.execution.values import get_directive_values

    values = get_directive_values(directive, info.field_nodes[0], info.variable_values)
    return None if values is None else str(values["key"])


def _required_idempotency_key(info: Any) -> str | None:
    """The field's ``@idempotent(key:)``; from 2026-04 the mutations of Shopify's list (refunds,
    inventory adjustments) refuse to run without one (a runtime error, not a schema one)."""
    key = _idempotency_key(info)
    if key is None and r._ctx(info).version >= "2026-04":
        raise GraphQLError("The @idempotent directive is required for this mutation.",
                           extensions={"code": "IDEMPOTENCY_KEY_REQUIRED"})
    return key


def _replay(state: Any, mutation: str, key: str | None, input: dict[str, Any]) -> tuple[Any, ...] | None:
    """What an earlier request with this key recorded (``None``: none); the same key with other
    parameters is refused, as Shopify does."""
    seen = state.idempotency.get((mutation, key)) if key else None
    if seen is not None and seen[0] != input:
        raise GraphQLError("The idempotency key was used with other parameters.",
                           extensions={"code": "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"})
    return seen


def _refund_lines(
    state: g.ShopState, order: dict[str, Any], items: list[dict[str, Any]]
) -> list[Any] | dict[str, Any]:
    """``(line, quantity, restockType, location id)`` per refund line item, or the first userError."""
    lines = {li["id"]: li for li in order["lineItems"]}
    asked: dict[int, int] = {}
    out = []
    for n, item in enumerate(items):
        parsed = d.parse_gid(item["lineItemId"], "LineItem")
        li = lines.get(parsed[1]) if parsed else None
        if li is None:
            return _err(["refundLineItems", str(n), "lineItemId"], "Line item does not exist")
        asked[li["id"]] = asked.get(li["id"], 0) + item["quantity"]
        if not 0 < asked[li["id"]] <= li["quantity"] - li["refunded"]:
            return _err(["refundLineItems", str(n), "quantity"],
                        "Quantity cannot refund more items than were purchased")
        restock = item.get("restockType") or "NO_RESTOCK"
        if restock == "LEGACY_RESTOCK":
            return _err(["refundLineItems", str(n), "restockType"],
                        "Restock type LEGACY_RESTOCK is not supported")
        location = None
        if item.get("locationId") is not None:
            loc = d.parse_gid(item["locationId"], "Location")
            if loc is None or loc[1] not in state.locations:
                return _err(["refundLineItems", str(n), "locationId"], "Location does not exist")
            location = loc[1]
        out.append((li, item["quantity"], restock, location))
    return out


def _restock(state: g.ShopState, order: dict[str, Any], li: dict[str, Any], qty: int, restock: str,
             location: int | None) -> None:
    """Units back in stock (``RETURN``/``CANCEL``) at ``location`` or the item's first location;
    ``CANCEL`` also takes unfulfilled units off the fulfillment orders."""
    if restock == "CANCEL":
        left = qty
        for fo in order["fulfillmentOrders"]:
            remaining = d.remaining(fo, order)
            for fo_line in fo["lineItems"]:
                if fo_line["lineItemId"] == li["id"] and left > 0:
                    take = min(left, remaining.get(fo_line["id"], 0))
                    fo_line["total"] -= take
                    left -= take
            done = all(v <= 0 for v in d.remaining(fo, order).values())
            if fo["status"] not in ("CLOSED", "CANCELLED") and done:
                fo["status"] = "CLOSED"
    if restock == "NO_RESTOCK":
        return
    item = next((i for i in state.items.values() if i["sku"] and i["sku"] == li["sku"]), None)
    if item is None or not item.get("tracked", True):
        return
    at = location if location is not None else min(
        (lid for iid, lid in state.levels if iid == item["id"]), default=None)
    if at is not None:
        state.levels[(item["id"], at)] = state.levels.get((item["id"], at), 0) + qty


def refund_create(info: Any, input: dict[str, Any]) -> dict[str, Any]:
    """Shopify's ``refundCreate``: line items (with restocking), shipping, and the money only
    through ``transactions`` -- a refund without them records the refund and moves no money
    (its ``totalRefundedSet`` is 0 and the financial status stays). ``@idempotent(key:)`` is
    required from 2026-04: the same key and input answer the first result again."""
    state = r._state(info)
    key = _required_idempotency_key(info)
    with state.lock:
        seen = _replay(state, "refundCreate", key, input)
        if seen is not None:
            order = state.orders[seen[1]]
            refund = next(x for x in order["refunds"] if x["id"] == seen[2])
            return {"refund": g.refund_view(refund, order), "order": g.order_view(order), "userErrors": []}
        order = r._order_by_gid(info, input["orderId"])
        if order is None:
            return {"refund": None, "order": None, "userErrors": [_err(["orderId"], "Order does not exist")]}
        rows = _refund_lines(state, order, input.get("refundLineItems") or [])
        if isinstance(rows, dict):
            return {"refund": None, "order": None, "userErrors": [rows]}
        amount = sum((Decimal(str(t["amount"])) for t in input.get("transactions") or []), Decimal(0))
        paid = order["total"] if order["financial"] in ("PAID", "PARTIALLY_REFUNDED") else Decimal(0)
        if amount > paid - d.refunded_total(order) and not input.get("allowOverRefunding"):
            return {"refund": None, "order": None, "userErrors": [
                _err(["transactions"], "Refund amount exceeds the amount that can be refunded")]}
        for li, qty, restock, location in rows:
            li["refunded"] += qty
            _restock(state, order, li, qty, restock, location)
        refund = {
            "id": state.ids.take(),
            "createdAt": state.now(),
            "note": input.get("note"),
            "amount": amount,
            "lines": [(state.ids.take(), li["id"], qty, restock) for li, qty, restock, _loc in rows],
        }
        order["refunds"].append(refund)
        if amount > 0:
            full = d.refunded_total(order) >= order["total"]
            order["financial"] = "REFUNDED" if full else "PARTIALLY_REFUNDED"
        if key:
            state.idempotency[("refundCreate", key)] = (input, order["id"], refund["id"])
        state.touch(order)
        return {"refund": g.refund_view(refund, order), "order": g.order_view(order), "userErrors": []}


def inventory_set_quantities(info: Any, input: dict[str, Any]) -> dict[str, Any]:
    """Absolute quantities with compare-and-swap: ``changeFromQuantity`` (2026-04 on: required on every
    quantity, ``null`` to skip the check), before that ``compareQuantity``/``ignoreCompareQuantity``.
    ``@idempotent(key:)`` is required from 2026-04: the same key and input answer the first
    adjustment again without applying anything."""
    state, version = r._state(info), r._ctx(info).version
    key = _required_idempotency_key(info)
    with state.lock:
        seen = _replay(state, "inventorySetQuantities", key, input)
        if seen is not None:
            group = {k: v for k, v in state.adjustments[seen[1]].items() if k != "changes"}
            return {"inventoryAdjustmentGroup": group, "userErrors": []}
    errors: list[dict[str, Any]] = []
    if input["name"] not in ("available", "on_hand"):
        errors.append(
            _err(
                ["input", "name"],
                "The quantity name must be either 'available' or 'on_hand'.",
                "INVALID_NAME",
            )
        )
    with state.lock:
        plan = []
        for i, q in enumerate(input["quantities"]):
            item, loc = (
                d.parse_gid(q["inventoryItemId"], "InventoryItem"),
                d.parse_gid(q["locationId"], "Location"),
            )
            path = ["input", "quantities", str(i)]
            if item is None or item[1] not in state.items:
                errors.append(
                    _err(
                        [*path, "inventoryItemId"],
                        "The specified inventory item could not be found.",
                        "INVALID_INVENTORY_ITEM",
                    )
                )
                continue
            if loc is None or loc[1] not in state.locations:
                errors.append(
                    _err(
                        [*path, "locationId"],
                        "The specified location could not be found.",
                        "INVALID_LOCATION",
                    )
                )
                continue
            if q["quantity"] < 0:
                errors.append(
                    _err([*path, "quantity"], "The quantity can't be negative.", "INVALID_QUANTITY_NEGATIVE")
                )
                continue
            current = state.levels.get((item[1], loc[1]))
            stale = _compare_error(q, current, input, version, path)
            if stale:
                errors.append(stale)
                continue
            plan.append((item[1], loc[1], q["quantity"], current))
        if errors:
            return {"inventoryAdjustmentGroup": None, "userErrors": errors}
        for iid, lid, qty, _cur in plan:
            state.levels[(iid, lid)] = qty
        group = {
            "__typename": "InventoryAdjustmentGroup",
            "id": d.gid("InventoryAdjustmentGroup", state.ids.take()),
            "createdAt": d.time_text(state.now()),
            "reason": input["reason"],
            "referenceDocumentUri": input.get("referenceDocumentUri"),
        }
        state.adjustments.append({**group, "changes": plan})
        if key:
            state.idempotency[("inventorySetQuantities", key)] = (input, len(state.adjustments) - 1, 0)
        return {"inventoryAdjustmentGroup": group, "userErrors": []}


def _compare_error(
    q: dict[str, Any], current: int | None, input: dict[str, Any], version: str, path: list[str]
) -> dict[str, Any] | None:
    have = current or 0
    if version >= "2026-04" or version == "unstable" or "changeFromQuantity" in q:
        if "changeFromQuantity" not in q:
            return _err(
                [*path, "changeFromQuantity"],
                "The changeFromQuantity argument must be given to each "
                "quantity; pass null to skip the check.",
                "CHANGE_FROM_QUANTITY_STALE",
            )
        expected = q["changeFromQuantity"]
        if expected is not None and expected != have:
            return _err(
                [*path, "changeFromQuantity"],
                "The changeFromQuantity value does not match persisted value.",
                "CHANGE_FROM_QUANTITY_STALE",
            )
        return None
    if input.get("ignoreCompareQuantity"):
        return None
    if q.get("compareQuantity") is None:
        return _err(
            [*path, "compareQuantity"],
            "The compareQuantity argument must be given to each quantity or "
            "ignored using ignoreCompareQuantity.",
            "COMPARE_QUANTITY_REQUIRED",
        )
    if q["compareQuantity"] != have:
        return _err(
            [*path, "compareQuantity"],
            "The compareQuantity value does not match persisted value.",
            "COMPARE_QUANTITY_STALE",
        )
    return None


# --- bulk operations -------------------------------------------------------------------------------


def _bulk_errors(schema: Any, query: str) -> tuple[list[dict[str, Any]], Any]:
    try:
        document = parse(query)
    except GraphQLError as exc:
        return [_err(["query"], f"Invalid bulk query: {exc.message}", "INVALID")], None
    problems = validate(schema, document)
    if problems:
        return [_err(["query"], f"Invalid bulk query: {problems[0].message}", "INVALID")], None
    ops = [n for n in document.definitions if isinstance(n, OperationDefinitionNode)]
    if len(ops) != 1 or ops[0].operation.value != "query":
        return [_err(["query"], "Bulk queries must contain exactly one query operation.", "INVALID")], None
    top = [s for s in ops[0].selection_set.selections if isinstance(s, FieldNode)]
    if len(top) != 1:
        return [_err(["query"], "Bulk queries must contain exactly one top level field.", "INVALID")], None
    connections = _connections(schema, schema.query_type, top[0], 0)
    if not connections:
        return [_err(["query"], "Bulk queries must contain at least one connection.", "INVALID")], None
    if len(connections) > 5:
        return [_err(["query"], "Bulk queries cannot contain more than 5 connections.", "INVALID")], None
    if max(connections) > 2:
        return [
            _err(
                ["query"],
                "Bulk queries cannot contain connections with a nesting depth greater than 2.",
                "INVALID",
            )
        ], None
    return [], document


def _connections(schema: Any, parent: Any, node: FieldNode, depth: int) -> list[int]:
    """Nesting depth of every connection under ``node`` (the top connection is depth 1)."""
    fdef = parent.fields.get(node.name.value) if hasattr(parent, "fields") else None
    if fdef is None:
        return []
    named = get_named_type(fdef.type)
    here = depth + 1 if named.name.endswith("Connection") else depth
    found = [here] if here > depth else []
    for sel in g._flat_fields(node.selection_set, {}):
        found += _connections(schema, named, sel, here)
    return found


def bulk_run_query(info: Any, query: str, groupObjects: bool = False) -> dict[str, Any]:
    ctx = r._ctx(info)
    state = ctx.state
    errors, document = _bulk_errors(info.schema, query)
    if errors:
        return {"bulkOperation": None, "userErrors": errors}
    with state.lock:
        running = [op for op in state.bulk.values() if op["status"] in ("CREATED", "RUNNING")]
        if len(running) >= g.bulk_limit(ctx.version):
            first = running[0]
            msg = (
                f"A bulk query operation for this app and shop is already in progress: "
                f"{d.gid('BulkOperation', first['id'])}."
            )
            return {"bulkOperation": None, "userErrors": [_err(None, msg, "OPERATION_IN_PROGRESS")]}
        op = {
            "id": state.ids.take(),
            "status": "CREATED",
            "errorCode": None,
            "objectCount": 0,
            "rootObjectCount": 0,
            "fileSize": None,
            "url": None,
            "partialDataUrl": None,
            "createdAt": state.now(),
            "completedAt": None,
            "query": query,
            "document": document,
            "scopes": set(ctx.scopes),
            "version": ctx.version,
            "group": groupObjects,
        }
        state.bulk[op["id"]] = op
        view = r.bulk_view(info, op)
        if not state.bulk_hold:
            _complete(state, op, ctx.base_url)
        return {"bulkOperation": view, "userErrors": []}


def release_held(state: g.ShopState, base_url: str) -> None:
    for op in list(state.bulk.values()):
        if op["status"] in ("CREATED", "RUNNING"):
            _complete(state, op, base_url)


def _complete(state: g.ShopState, op: dict[str, Any], base_url: str) -> None:
    """Run the bulk query over everything (no paging, no cost) and write the JSONL file."""
    from sandbox.shopify_admin.server import root_value

    fault = state.take_fault({"bulk_failed", "bulk_partial"})
    ctx = g.Context(state, op["version"], op["scopes"], base_url, bulk=True)
    schema = g.schema_for(op["version"])
    result = execute(schema, op["document"], root_value(), ctx, middleware=[g.scope_middleware])
    lines: list[dict[str, Any]] = []
    roots = 0
    if result.data:
        top_name = next(iter(result.data))
        roots = _flatten(result.data[top_name], None, lines)
    op["completedAt"] = state.now()
    op["objectCount"], op["rootObjectCount"] = len(lines), roots
    if result.errors and any((e.extensions or {}).get("code") == "ACCESS_DENIED" for e in result.errors):
        op["status"], op["errorCode"] = "FAILED", "ACCESS_DENIED"
        return
    if fault is not None and fault["type"] == "bulk_failed":
        op["status"], op["errorCode"] = "FAILED", fault.get("error_code", "INTERNAL_SERVER_ERROR")
        return
    if not op["group"]:  # ungrouped: every parent first, children after (clients must not rely on order)
        lines.sort(key=lambda line: "__parentId" in line)
    blob = "".join(g.json_bytes(line).decode() + "\n" for line in lines).encode()
    name = f"bulk-{op['id']}.jsonl"
    if fault is not None and fault["type"] == "bulk_partial":
        blob = b"".join(blob.splitlines(keepends=True)[: max(1, len(lines) // 2)])
        state.bulk_files[name] = blob
        op["status"], op["errorCode"] = "FAILED", "TIMEOUT"
        op["partialDataUrl"] = f"{base_url}/__sandbox/bulk/{name}"
        op["objectCount"] = len(blob.splitlines())
        return
    state.bulk_files[name] = blob
    op["status"], op["fileSize"] = "COMPLETED", (len(blob) if lines else None)
    op["url"] = f"{base_url}/__sandbox/bulk/{name}" if lines else None


def _flatten(conn: dict[str, Any], parent_id: str | None, out: list[dict[str, Any]]) -> int:
    """A connection's nodes as JSONL objects; nested connections become lines with ``__parentId``."""
    nodes = (
        conn.get("nodes") if conn.get("nodes") is not None else [e["node"] for e in conn.get("edges") or []]
    )
    for node in nodes:
        line: dict[str, Any] = {}
        children: list[dict[str, Any]] = []
        for key, value in node.items():
            if isinstance(value, dict) and ("edges" in value or "nodes" in value):
                children.append(value)
            else:
                line[key] = value
        if parent_id is not None:
            line["__parentId"] = parent_id
        out.append(line)
        for child in children:
            _flatten(child, node.get("id"), out)
    return len(nodes)


def current_bulk_operation(info: Any, type: str = "QUERY") -> dict[str, Any] | None:
    state = r._state(info)
    with state.lock:
        latest = max(state.bulk.values(), key=lambda op: op["id"], default=None)
        return r.bulk_view(info, latest)


def bulk_operation(info: Any, id: str) -> dict[str, Any] | None:
    parsed = d.parse_gid(id, "BulkOperation")
    return r.bulk_view(info, r._state(info).bulk.get(parsed[1])) if parsed else None


def bulk_cancel(info: Any, id: str) -> dict[str, Any]:
    state = r._state(info)
    parsed = d.parse_gid(id, "BulkOperation")
    with state.lock:
        op = state.bulk.get(parsed[1]) if parsed else None
        if op is None:
            return {"bulkOperation": None, "userErrors": [_err(["id"], "Bulk operation does not exist")]}
        if op["status"] in ("CREATED", "RUNNING"):
            op["status"] = "CANCELED"
        return {"bulkOperation": r.bulk_view(info, op), "userErrors": []}


ROOT: dict[str, Any] = {
    "fulfillmentCreate": fulfillment_create,
    "orderCancel": order_cancel,
    "tagsAdd": tags_add,
    "tagsRemove": tags_remove,
    "orderUpdate": order_update,
    "orderMarkAsPaid": order_mark_as_paid,
    "refundCreate": refund_create,
    "inventorySetQuantities": inventory_set_quantities,
    "bulkOperationRunQuery": bulk_run_query,
    "bulkOperationCancel": bulk_cancel,
    "currentBulkOperation": current_bulk_operation,
    "bulkOperation": bulk_operation,
}
