"""A Shopify Admin GraphQL API stand-in for integration tests, ``make demo`` and benchmarks.

Written from Shopify's public documentation and served with a real GraphQL server (graphql-core:
``schema.graphql`` is the subset of Shopify's own 2026-10 Admin schema the integration uses; queries are
parsed, validated and executed with resolvers). ``POST /admin/api/{version}/graphql.json`` with
``X-Shopify-Access-Token`` (else 401 with Shopify's body). Behaves like Shopify where a client depends on it:

* Versions: 2026-01 .. 2026-10 are served (plus the 2027-01 release candidate and ``unstable``); a
  request for an older, no longer supported version "falls forward" to the oldest supported one, and every
  answer says which version answered in ``X-Shopify-API-Version``. ``/__sandbox/versions`` retires one.
  Version differences kept: inventorySetQuantities' compare-and-swap (``changeFromQuantity`` required
  from 2026-04; ``compareQuantity``/``ignoreCompareQuantity`` before), bulk concurrency (5 from 2026-01,
  1 before) and ``groupObjects`` (default false from 2026-01).
* Scopes per token; a field without its scope -> ``ACCESS_DENIED`` (message "Access denied for X field.
  Required access: ...", ``extensions.requiredAccess``), scopes taken from Shopify's published schema
  (e.g. ``customer`` needs ``read_customers``). Orders created more than 60 days ago are silently
  invisible without ``read_all_orders``.
* ``orders`` (sortKey default PROCESSED_AT, UPDATED_AT, CREATED_AT, ID; ``reverse``; first/last/after/
  before, at most 250) with the search syntax: ``updated_at:>='…'``, ``<``, ``<=``, ``>``, created_at,
  processed_at, ``id:`` ranges, status (open/closed/cancelled/not_closed; no status is excluded by
  default in GraphQL), tag, name, email, sku...; unknown fields are ignored with a warning in
  ``extensions.search``. Opaque keyset cursors; a page reaching past 25,000 items errors (the documented
  cap; ``paging_cap``). ``ordersCount(query, limit)``. Search-index lag: the ``query:`` filter sees an
  update ``index_lag`` seconds late while ``order``/``nodes`` show current data. A query of
  ``updated_at`` bounds only, sorted UPDATED_AT ascending (with ``read_all_orders``), is bisected out
  of the index kept ordered by (updatedAt, id), O(log N + page); any other query scans every order.
* Cost: scalars/enums 0, objects 1, connections 2 + first x node cost, ``nodes(ids:)`` one node (ids x
  node, as Shopify charges it, with ``ShopState.nodes_cost_per_id``), mutations 10; requested vs
  actual (unreturned nodes refunded); leaky bucket 2000 points, 100/s (standard plan); over the bucket ->
  THROTTLED (HTTP 200), over 1000 -> MAX_COST_EXCEEDED.
* Mutations with userErrors: fulfillmentCreate, orderCancel (job + orderCancelUserErrors, completes at
  once), tagsAdd/tagsRemove, orderUpdate, orderMarkAsPaid, refundCreate, inventorySetQuantities;
  bulkOperationRunQuery/currentBulkOperation/bulkOperation/node with JSONL (children as lines with
  ``__parentId``) served at ``/__sandbox/bulk/…``.

Control (no auth, not Shopify): ``/__sandbox/faults`` (FIFO: 429, 500, 502, 503, internal, throttled,
truncated, broken_cursor, bulk_failed, bulk_partial), ``orders``, ``orders/{id}``, ``touch``, ``reset``,
``scopes``, ``index_lag``, ``bucket``, ``versions``, ``catalog``, ``inventory``, ``bulk_hold``, ``requests``.
"""

from sandbox.shopify_admin.graph import CURRENT_VERSION, KNOWN_VERSIONS, SUPPORTED_VERSIONS
from sandbox.shopify_admin.server import SandboxShopify, main

__all__ = ["CURRENT_VERSION", "KNOWN_VERSIONS", "SUPPORTED_VERSIONS", "SandboxShopify", "main"]
