"""The Shopify Admin GraphQL sandbox, through real HTTP (requests), and its schema against Shopify's."""
# ruff: noqa: UP031

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pendulum
import pytest
import requests
from graphql import build_schema

from sandbox.generator import generate_orders
from sandbox.shopify_admin import SandboxShopify
from sandbox.shopify_admin.graph import SCHEMA_FILE
from tests.support.shopify_schema import shopify_schema, validate_against_shopify

pytestmark = pytest.mark.unit
NOW = datetime.now(UTC).replace(microsecond=0)
ORDERS = generate_orders(40, start=pendulum.instance(NOW - timedelta(hours=3)), end=pendulum.instance(NOW),
                         seed=7)
ORDERS_Q = """query($q: String, $after: String, $first: Int = 10) {
  orders(first: $first, after: $after, sortKey: UPDATED_AT, query: $q) {
    edges { cursor node { id legacyResourceId updatedAt } }
    pageInfo { hasNextPage endCursor }
  }
}"""


@pytest.fixture
def shop():
    with SandboxShopify(ORDERS) as s:
        yield s


def gql(shop, query, variables=None, version="2026-10", token=None):
    r = requests.post(shop.graphql_url(version), json={"query": query, "variables": variables or {}},
                      headers={"X-Shopify-Access-Token": token or shop.token}, timeout=10)
    return r


def all_ids(shop, q):
    ids, after = [], None
    while True:
        body = gql(shop, ORDERS_Q, {"q": q, "after": after}).json()
        conn = body["data"]["orders"]
        ids += [int(e["node"]["legacyResourceId"]) for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            return ids
        after = conn["pageInfo"]["endCursor"]


def test_the_sandbox_schema_agrees_with_shopifys():
    ours, real = build_schema(SCHEMA_FILE.read_text()), shopify_schema()
    for name, t in ours.type_map.items():
        if name.startswith("__"):
            continue
        rt = real.get_type(name)
        assert rt is not None, name
        assert type(rt) is type(t), name
        for fname, f in getattr(t, "fields", {}).items():
            assert fname in rt.fields, f"{name}.{fname}"
            assert str(f.type) == str(rt.fields[fname].type), f"{name}.{fname}"
            for aname, a in getattr(f, "args", {}).items():
                assert str(a.type) == str(rt.fields[fname].args[aname].type), f"{name}.{fname}({aname})"
        for value in getattr(t, "values", {}):
            assert value in rt.values, f"{name}.{value}"
    assert validate_against_shopify(ORDERS_Q) == []


def test_auth_and_versions(shop):
    r = gql(shop, "{ shop { name } }", token="wrong")
    assert r.status_code == 401
    assert r.json() == {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
    assert gql(shop, "{ shop { name } }").headers["X-Shopify-API-Version"] == "2026-10"
    old = gql(shop, "{ shop { name } }", version="2025-07")
    assert old.status_code == 200 and old.headers["X-Shopify-API-Version"] == "2026-01"  # falls forward
    assert gql(shop, "{ shop { name } }", version="2026-13").status_code == 404
    requests.post(shop.base_url + "/__sandbox/versions", json={"supported": ["2026-07", "2026-10"]}, timeout=5)
    assert gql(shop, "{ shop { name } }", version="2026-04").headers["X-Shopify-API-Version"] == "2026-07"


def test_paging_covers_every_order_once_and_cursors_are_opaque(shop):
    ids = all_ids(shop, None)
    assert sorted(ids) == sorted(o["id"] for o in ORDERS)
    body = gql(shop, ORDERS_Q, {"after": "not-a-cursor"}).json()
    assert body["data"] is None or body["data"]["orders"] is None
    assert "Invalid cursor" in body["errors"][0]["message"]
    assert "first or last" in gql(shop, "{ orders { nodes { id } } }").json()["errors"][0]["message"]


def test_search_bounds_are_inclusive_and_exclusive_as_documented(shop):
    stamp = datetime.fromisoformat(ORDERS[5]["date_modified_gmt"]).replace(tzinfo=UTC)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    ge = set(all_ids(shop, f"updated_at:>='{text}'"))
    lt = set(all_ids(shop, f"updated_at:<'{text}'"))
    assert ORDERS[5]["id"] in ge and ORDERS[5]["id"] not in lt
    assert ge | lt == {o["id"] for o in ORDERS} and not ge & lt
    assert set(all_ids(shop, f"id:>={ORDERS[10]['id']} id:<{ORDERS[12]['id']}")) == {ORDERS[10]["id"],
                                                                                    ORDERS[11]["id"]}


def test_index_lag_hides_updates_from_the_filter_but_not_from_order(shop):
    shop.set_index_lag(0.6)
    oid = ORDERS[0]["id"]
    later = NOW + timedelta(minutes=5)
    shop.touch_order(oid, later, note="edited")
    q = f"updated_at:>='{(later - timedelta(seconds=1)).strftime('%Y-%m-%dT%H:%M:%SZ')}'"
    assert oid not in all_ids(shop, q)
    node = gql(shop, '{ order(id: "gid://shopify/Order/%d") { note updatedAt } }' % oid).json()["data"]["order"]
    assert node["note"] == "edited"
    time.sleep(0.7)
    assert oid in all_ids(shop, q)


def test_scopes_and_the_60_day_rule(shop):
    old = generate_orders(1, start=pendulum.instance(NOW - timedelta(days=90)),
                          end=pendulum.instance(NOW - timedelta(days=89)), seed=3, first_id=5000)
    shop.add_orders(old)
    shop.set_scopes(["read_orders"])
    assert 5000 not in all_ids(shop, None)
    shop.set_scopes(["read_orders", "read_all_orders"])
    assert 5000 in all_ids(shop, None)
    body = gql(shop, "{ orders(first: 1) { nodes { customer { email } } } }").json()
    assert body["errors"][0]["extensions"]["code"] == "ACCESS_DENIED"
    scopes = gql(shop, "{ currentAppInstallation { accessScopes { handle } } }").json()
    assert {s["handle"] for s in scopes["data"]["currentAppInstallation"]["accessScopes"]} == {
        "read_orders", "read_all_orders"}
    denied = gql(shop, 'mutation { tagsAdd(id: "gid://shopify/Order/1001", tags: ["x"]) { userErrors { message } } }')
    assert denied.json()["errors"][0]["extensions"]["code"] == "ACCESS_DENIED"


def test_cost_throttle_and_max_cost(shop):
    body = gql(shop, "{ orders(first: 10) { nodes { id } } }").json()
    assert body["extensions"]["cost"]["requestedQueryCost"] == 12
    assert body["extensions"]["cost"]["throttleStatus"]["maximumAvailable"] == 2000.0
    none = gql(shop, '{ orders(first: 10, query: "id:<1") { nodes { id } } }').json()["extensions"]["cost"]
    assert (none["requestedQueryCost"], none["actualQueryCost"]) == (12, 2)  # unreturned nodes refunded
    big = gql(shop, "{ orders(first: 250) { nodes { lineItems(first: 250) { nodes { id } } } } }").json()
    assert big["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
    shop.set_bucket(20, 1)
    gql(shop, "{ orders(first: 10) { nodes { id } } }")
    throttled = gql(shop, "{ orders(first: 10) { nodes { id } } }").json()
    assert throttled["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert throttled["extensions"]["cost"]["actualQueryCost"] is None


def test_fulfillment_tags_note_cancel_and_refund(shop):
    oid = next(o["id"] for o in ORDERS if o["status"] == "processing")
    order = gql(shop, '{ order(id: "gid://shopify/Order/%d") { fulfillmentOrders(first: 5) { nodes { id '
                      'lineItems(first: 10) { nodes { id remainingQuantity } } } } } }' % oid).json()
    fo = order["data"]["order"]["fulfillmentOrders"]["nodes"][0]
    line = fo["lineItems"]["nodes"][0]
    create = """mutation($f: FulfillmentInput!) { fulfillmentCreate(fulfillment: $f) {
        fulfillment { id status trackingInfo { company number url } } userErrors { field message } } }"""
    too_many = {"lineItemsByFulfillmentOrder": [{"fulfillmentOrderId": fo["id"], "fulfillmentOrderLineItems": [
        {"id": line["id"], "quantity": line["remainingQuantity"] + 1}]}]}
    assert validate_against_shopify(create, {"f": too_many}) == []
    errors = gql(shop, create, {"f": too_many}).json()["data"]["fulfillmentCreate"]["userErrors"]
    assert errors and "quantity" in errors[0]["message"]
    whole = {"lineItemsByFulfillmentOrder": [{"fulfillmentOrderId": fo["id"]}],
             "trackingInfo": {"company": "DHL", "number": "JD01", "url": "https://t.example/JD01"}}
    done = gql(shop, create, {"f": whole}).json()["data"]["fulfillmentCreate"]
    assert done["userErrors"] == [] and done["fulfillment"]["trackingInfo"][0]["number"] == "JD01"
    gid = f"gid://shopify/Order/{oid}"
    gql(shop, 'mutation { tagsAdd(id: "%s", tags: ["erp-accepted"]) { userErrors { message } } }' % gid)
    gql(shop, 'mutation { orderUpdate(input: {id: "%s", note: "hello"}) { userErrors { message } } }' % gid)
    stored = shop.order(oid)
    assert stored["tags"] == ["erp-accepted"] and stored["note"] == "hello" and stored["fulfillments"]
    cancel = gql(shop, 'mutation { orderCancel(orderId: "%s", reason: CUSTOMER, refund: true, restock: true) '
                       '{ job { id done } orderCancelUserErrors { code message } } }' % gid).json()
    assert cancel["data"]["orderCancel"]["orderCancelUserErrors"] == []
    again = gql(shop, 'mutation { orderCancel(orderId: "%s", reason: CUSTOMER, refund: true, restock: true) '
                      '{ orderCancelUserErrors { code message } } }' % gid).json()
    assert again["data"]["orderCancel"]["orderCancelUserErrors"][0]["code"] == "INVALID"
    assert shop.order(oid)["cancelledAt"] is not None


def test_inventory_set_quantities_compare_and_swap(shop):
    item = gql(shop, '{ inventoryItems(first: 1, query: "sku:CB-BTL") { nodes { id inventoryLevel(locationId: '
                     '"gid://shopify/Location/1") { quantities(names: ["available"]) { quantity } } } } }').json()
    node = item["data"]["inventoryItems"]["nodes"][0]
    assert node["inventoryLevel"]["quantities"][0]["quantity"] == 25
    mutation = """mutation($i: InventorySetQuantitiesInput!, $k: String!) {
        inventorySetQuantities(input: $i) @idempotent(key: $k) {
        inventoryAdjustmentGroup { id } userErrors { code field message } } }"""

    def qty(change_from, key="k1", quantity=7):
        return {"k": key, "i": {"name": "available", "reason": "correction", "quantities": [
            {"inventoryItemId": node["id"], "locationId": "gid://shopify/Location/1", "quantity": quantity,
             "changeFromQuantity": change_from}]}}

    stale = gql(shop, mutation, qty(3, "k0")).json()["data"]["inventorySetQuantities"]
    assert stale["userErrors"][0]["code"] == "CHANGE_FROM_QUANTITY_STALE"
    ok = gql(shop, mutation, qty(25)).json()["data"]["inventorySetQuantities"]
    assert ok["userErrors"] == [] and shop.inventory()["CB-BTL"] == {"Warehouse": 7}
    assert validate_against_shopify(mutation, qty(25)) == []
    # 2026-04 on: the key is required (at run time); a retry with it answers the first adjustment
    # (the level is 7 now: run again, the compare value 25 would be stale)
    again = gql(shop, mutation, qty(25)).json()["data"]["inventorySetQuantities"]
    assert again["inventoryAdjustmentGroup"]["id"] == ok["inventoryAdjustmentGroup"]["id"]
    other = gql(shop, mutation, qty(25, quantity=8)).json()
    assert other["errors"][0]["extensions"]["code"] == "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"
    bare = mutation.replace(", $k: String!", "").replace(" @idempotent(key: $k)", "")
    without = gql(shop, bare, {"i": qty(7)["i"]}).json()
    assert without["errors"][0]["extensions"]["code"] == "IDEMPOTENCY_KEY_REQUIRED"
    assert shop.inventory()["CB-BTL"] == {"Warehouse": 7}


def test_bulk_query_writes_jsonl_with_parent_ids(shop):
    inner = "{ orders { edges { node { id name lineItems { edges { node { id sku } } } } } } }"
    run = gql(shop, 'mutation($q: String!) { bulkOperationRunQuery(query: $q) { bulkOperation { id status } '
                    'userErrors { field message code } } }', {"q": inner}).json()["data"]["bulkOperationRunQuery"]
    assert run["userErrors"] == []
    op = gql(shop, "{ currentBulkOperation { id status url objectCount rootObjectCount } }").json()
    op = op["data"]["currentBulkOperation"]
    assert op["status"] == "COMPLETED" and op["rootObjectCount"] == str(len(ORDERS))
    lines = [json.loads(x) for x in requests.get(op["url"], timeout=5).text.splitlines()]
    parents = {x["id"] for x in lines if "__parentId" not in x}
    children = [x for x in lines if "__parentId" in x]
    assert len(parents) == len(ORDERS) and children and all(c["__parentId"] in parents for c in children)
    bad = gql(shop, 'mutation { bulkOperationRunQuery(query: "{ shop { name } }") { userErrors { message } } }')
    assert bad.json()["data"]["bulkOperationRunQuery"]["userErrors"]


def test_faults(shop):
    shop.inject_faults([{"type": "429", "retry_after": 3}, {"type": "internal"}, {"type": "502"}])
    r = gql(shop, "{ shop { name } }")
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert gql(shop, "{ shop { name } }").json()["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert gql(shop, "{ shop { name } }").status_code == 502
    shop.inject_faults([{"type": "broken_cursor"}])
    first = gql(shop, ORDERS_Q).json()["data"]["orders"]
    broken = gql(shop, ORDERS_Q, {"after": first["pageInfo"]["endCursor"]}).json()
    assert "Invalid cursor" in broken["errors"][0]["message"]


def test_backward_paging_cap_count_and_nodes(shop):
    forward = all_ids(shop, None)
    q = """query($before: String) { orders(last: 15, before: $before, sortKey: UPDATED_AT) {
        nodes { legacyResourceId } pageInfo { hasPreviousPage startCursor } } }"""
    back, before = [], None
    while True:
        conn = gql(shop, q, {"before": before}).json()["data"]["orders"]
        back = [int(n["legacyResourceId"]) for n in conn["nodes"]] + back
        if not conn["pageInfo"]["hasPreviousPage"]:
            break
        before = conn["pageInfo"]["startCursor"]
    assert back == forward
    shop.state.paging_cap = 25
    capped = gql(shop, ORDERS_Q, {"first": 30}).json()
    assert "Pagination limit" in capped["errors"][0]["message"]
    count = gql(shop, '{ ordersCount(query: "status:open", limit: 5) { count precision } }').json()
    assert count["data"]["ordersCount"] == {"count": 5, "precision": "AT_LEAST"}
    ids = ['"gid://shopify/Order/%d"' % ORDERS[0]["id"], '"gid://shopify/Order/999999"']
    nodes = gql(shop, "{ nodes(ids: [%s]) { id ... on Order { name } } }" % ", ".join(ids)).json()
    assert nodes["data"]["nodes"][0]["name"] == "#%d" % ORDERS[0]["id"] and nodes["data"]["nodes"][1] is None


def test_mark_as_paid_refund_and_tags_remove(shop):
    pending = next(o for o in ORDERS if o["status"] == "pending")
    gid = f"gid://shopify/Order/{pending['id']}"
    paid = gql(shop, 'mutation { orderMarkAsPaid(input: {id: "%s"}) { order { displayFinancialStatus } '
                     'userErrors { message } } }' % gid).json()["data"]["orderMarkAsPaid"]
    assert paid["order"]["displayFinancialStatus"] == "PAID"
    again = gql(shop, 'mutation { orderMarkAsPaid(input: {id: "%s"}) { userErrors { message } } }' % gid).json()
    assert again["data"]["orderMarkAsPaid"]["userErrors"]
    line = gql(shop, '{ order(id: "%s") { lineItems(first: 1) { nodes { id quantity } } } }' % gid).json()
    line = line["data"]["order"]["lineItems"]["nodes"][0]
    refund = """mutation($i: RefundInput!, $k: String!) { refundCreate(input: $i) @idempotent(key: $k) {
        refund { id note totalRefundedSet { shopMoney { amount } } }
        order { displayFinancialStatus lineItems(first: 1) { nodes { currentQuantity } } }
        userErrors { field message } } }"""
    unkeyed = refund.replace(", $k: String!", "").replace(" @idempotent(key: $k)", "")
    # refundCreate wants an idempotency key from 2026-04 on (Shopify's runtime check)
    assert "@idempotent" in gql(shop, unkeyed, {"i": {"orderId": gid}}).json()["errors"][0]["message"]
    too_many = {"i": {"orderId": gid, "refundLineItems": [{"lineItemId": line["id"], "quantity": 99}]}, "k": "k0"}
    assert gql(shop, refund, too_many).json()["data"]["refundCreate"]["userErrors"]
    one = {"i": {"orderId": gid, "note": "ERP return", "refundLineItems": [
        {"lineItemId": line["id"], "quantity": 1, "restockType": "NO_RESTOCK"}]}, "k": "k1"}
    ok = gql(shop, refund, one).json()["data"]["refundCreate"]
    assert ok["userErrors"] == [] and ok["refund"]["note"] == "ERP return"
    assert ok["refund"]["totalRefundedSet"]["shopMoney"]["amount"] == "0.0"  # no gateway transaction
    assert ok["order"]["displayFinancialStatus"] == "PAID"  # no money moved: the status stays
    assert ok["order"]["lineItems"]["nodes"][0]["currentQuantity"] == line["quantity"] - 1
    # the same key and input again: the first refund, not a second one
    assert gql(shop, refund, one).json()["data"]["refundCreate"]["refund"]["id"] == ok["refund"]["id"]
    assert len(shop.order(pending["id"])["refunds"]) == 1
    other = gql(shop, refund, {**one, "i": {**one["i"], "note": "other"}}).json()
    assert other["errors"][0]["extensions"]["code"] == "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"
    gql(shop, 'mutation { tagsAdd(id: "%s", tags: ["a", "b"]) { userErrors { message } } }' % gid)
    gql(shop, 'mutation { tagsRemove(id: "%s", tags: ["a"]) { userErrors { message } } }' % gid)
    assert shop.order(pending["id"])["tags"] == ["b"]
    assert pending["id"] in all_ids(shop, "tag:b") and pending["id"] not in all_ids(shop, "tag:a")


def test_compare_quantity_on_2026_01_and_change_from_required_later(shop):
    mutation = """mutation($i: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $i) {
        userErrors { code field message } } }"""
    item = gql(shop, '{ productVariants(first: 1, query: "sku:CB-BTL") { nodes { sku inventoryItem { id } } } }')
    item_id = item.json()["data"]["productVariants"]["nodes"][0]["inventoryItem"]["id"]
    base = {"inventoryItemId": item_id, "locationId": "gid://shopify/Location/1", "quantity": 4}
    old = gql(shop, mutation, {"i": {"name": "available", "reason": "correction",
                                     "quantities": [{**base, "compareQuantity": 3}]}}, version="2026-01").json()
    assert old["data"]["inventorySetQuantities"]["userErrors"][0]["code"] == "COMPARE_QUANTITY_STALE"
    keyed = mutation.replace("($i: InventorySetQuantitiesInput!)", "($i: InventorySetQuantitiesInput!, $k: String!)"
                             ).replace("inventorySetQuantities(input: $i)", "inventorySetQuantities(input: $i) @idempotent(key: $k)")
    missing = gql(shop, keyed, {"k": "a", "i": {"name": "available", "reason": "correction",
                                                "quantities": [base]}}).json()
    assert missing["data"]["inventorySetQuantities"]["userErrors"]
    unknown = gql(shop, keyed, {"k": "b", "i": {"name": "available", "reason": "correction",
                                                "quantities": [{**base, "compareQuantity": 25}]}}).json()
    assert "compareQuantity" in unknown["errors"][0]["message"]  # gone from 2026-04 on
    skip = gql(shop, keyed, {"k": "c", "i": {"name": "available", "reason": "correction",
                                             "quantities": [{**base, "changeFromQuantity": None}]}}).json()
    assert skip["data"]["inventorySetQuantities"]["userErrors"] == []
    assert shop.inventory()["CB-BTL"] == {"Warehouse": 4}


def test_bulk_concurrency_failure_and_partial_data(shop):
    run = ('mutation { bulkOperationRunQuery(query: "{ orders { edges { node { id } } } }") '
           "{ bulkOperation { id status } userErrors { code message } } }")
    requests.post(shop.base_url + "/__sandbox/bulk_hold", json={"hold": True}, timeout=5)
    fell = gql(shop, run, version="2025-10")  # not served any more: 2026-01 answers
    assert fell.headers["X-Shopify-API-Version"] == "2026-01"
    held = fell.json()["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
    gql(shop, 'mutation { bulkOperationCancel(id: "%s") { userErrors { message } } }' % held)
    shop.set_versions(["2025-10", "2026-01", "2026-04", "2026-07", "2026-10"])
    first = gql(shop, run, version="2025-10").json()["data"]["bulkOperationRunQuery"]
    assert first["bulkOperation"]["status"] == "CREATED"
    second = gql(shop, run, version="2025-10").json()["data"]["bulkOperationRunQuery"]
    assert second["userErrors"][0]["code"] == "OPERATION_IN_PROGRESS"
    assert gql(shop, run).json()["data"]["bulkOperationRunQuery"]["userErrors"] == []  # 2026-01+: up to 5
    requests.post(shop.base_url + "/__sandbox/bulk_hold", json={"hold": False}, timeout=5)
    shop.inject_faults([{"type": "bulk_failed"}])
    gql(shop, run)
    failed = gql(shop, "{ currentBulkOperation { status errorCode url } }").json()["data"]["currentBulkOperation"]
    assert failed == {"status": "FAILED", "errorCode": "INTERNAL_SERVER_ERROR", "url": None}
    shop.inject_faults([{"type": "bulk_partial"}])
    gql(shop, run)
    partial = gql(shop, "{ currentBulkOperation { status url partialDataUrl objectCount } }").json()
    partial = partial["data"]["currentBulkOperation"]
    assert partial["status"] == "FAILED" and partial["url"] is None
    rows = requests.get(partial["partialDataUrl"], timeout=5).text.splitlines()
    assert 0 < len(rows) < len(ORDERS) and str(len(rows)) == partial["objectCount"]


def test_control_endpoints_and_truncated_body(shop):
    base = shop.base_url + "/__sandbox"
    oid = ORDERS[3]["id"]
    touched = requests.post(base + "/touch", json={"id": oid, "note": "via control",
                                                   "when": "2030-01-01T00:00:00Z"}, timeout=5).json()
    assert touched["note"] == "via control" and touched["updatedAt"].startswith("2030-01-01")
    assert requests.post(base + "/scopes", json={"scopes": ["read_products"]}, timeout=5).ok
    assert gql(shop, "{ orders(first: 1) { nodes { id } } }").json()["errors"][0]["extensions"]["code"] == (
        "ACCESS_DENIED")
    requests.post(base + "/reset", timeout=5)
    assert shop.order(oid)["note"] != "via control"
    requests.post(base + "/faults", json={"type": "truncated"}, timeout=5)
    with pytest.raises(ValueError):
        json.loads(gql(shop, "{ shop { name } }").text)
    log = requests.get(base + "/requests", timeout=5).json()
    assert log and log[-1]["path"] == "/admin/api/2026-10/graphql.json"
