"""Shopify Admin GraphQL client: a loss-free window scan of orders, orders by id, and bulk reads.

The transport (connection contract, API version, cost throttling, error mapping) is
:mod:`.shopify_graphql`; the normaliser is :mod:`.shopify_normalise` (ids: ``order_id`` is the
order's numeric ``legacyResourceId``, GraphQL id ``gid://shopify/Order/<legacyResourceId>``).

Window translation
------------------
``iter_orders(modified_from, modified_to)`` returns the orders whose ``updatedAt`` ``u``
satisfies ``modified_from <= u < modified_to``. Shopify reports ``updatedAt`` in whole seconds;
both bounds are rounded up to the next whole second, exactly as for WooCommerce
(:func:`~order_integration.storefronts.window.window_seconds`), so adjacent windows
partition time. The search filter is ``updated_at:>='<first>' updated_at:<'<stop>'`` (ISO 8601
UTC, quoted as the search syntax wants dates), ``sortKey: UPDATED_AT``.

How the window is read
----------------------
1. **Scan**: ``orders(first: 250, after:, sortKey: UPDATED_AT, query:)`` asks for ids and
   ``updatedAt`` only (cheap: about 253 points a page), with cursor paging.
2. **Details**: the orders found are read with ``nodes(ids: [gid…])`` in batches sized to the
   cost limit (their lines paged with ``lineItems(after:)`` when an order has more); ``nodes``
   reads the orders themselves, not the search index, so each order comes in its current (latest)
   version. An order deleted in between is left out.
3. **Bulk**: a window holding more than ``bulk_threshold`` orders (``ordersCount``) is read with
   ``bulkOperationRunQuery`` instead (the same filter and fields), polled with
   ``bulkOperation(id:)`` every ``bulk_poll_seconds``, its JSONL downloaded (without the access
   token: the file is on Shopify's storage host) and its ``__parentId`` lines (the line items)
   put back under their order. ``bulk="always"``/``"never"`` or the connection's
   ``extra.bulk_threshold`` (0: never) decide otherwise; every run logs which path it took.

Each order is yielded once, after the whole window was read (a failure yields nothing), in
(``updatedAt``, id) order.

The no-loss invariant
---------------------
Assumptions, both about Shopify: (A) the search index reflects every write older than
``settle_seconds`` (Shopify documents no bound; the index can lag writes, so an order updated
just before ``modified_to`` may not match the filter yet); (B) cursors are keyset positions
(the sort value and id), not offsets.

Claim: a scan that starts at or after ``modified_to + settle_seconds`` returns every order whose
``updatedAt`` lies in the window when the scan ends, in its latest version, each once (and may
return, in its latest version, an order edited during the scan that was in the window before).

Why: the scan waits until ``modified_to + settle_seconds`` (sleeping at most ``settle_seconds``;
a window ending later than that is refused as not over). From then on every write gives an order
``updatedAt >= now > modified_to``: orders can only *leave* the window during the scan, never
enter it. An order in the window at the end was therefore in it, unchanged, throughout; its
``updatedAt`` is older than ``settle_seconds``, so (A) the index holds it and it matches the
filter, at a fixed keyset position. A cursor chain read to ``hasNextPage: false`` passes every
position (B), so it reads that order. An order edited during the scan moves to a later position
(read again, deduplicated by id) or out of the window (a later window carries it). Either way
nothing is lost; the details step then reads each found order's current version.

Paging cap: Shopify refuses to page past the 25,000th item of one result set
(shopify.dev/docs/api/usage/limits). Before a page would reach past ``paging_cap`` the chain is
restarted without a cursor from ``B = the latest in-window updatedAt read in this chain``
(inclusive): for rows in the window the index value is the current value (A), and later rows
sort at or after ``B``, so nothing after the restart point is skipped; rows at ``B`` itself are
read again and deduplicated. ``B`` must advance, else (25,000 orders in one second) the scan
raises. A cursor Shopify calls invalid (``BAD_REQUEST``) restarts the chain the same way.

Every scanned row is checked: a GraphQL id of an Order with its ``legacyResourceId``, and an
``updatedAt`` not before the filter's lower bound (a newer one is an edit since; an older one
means the filter was ignored, and the scan raises ``StorefrontError``).

Orders older than 60 days
-------------------------
Shopify shows an app orders *created* in the last 60 days only, unless its token has the
``read_all_orders`` scope. A window starting more than 60 days ago is therefore refused
(``StorefrontAuthError``, naming the scope) when ``currentAppInstallation{accessScopes}`` lacks
it, instead of reading an empty or partial window; for a recent window the missing scope is
logged (an old order edited in the window stays invisible).

Progress: ``on_page(pages, orders, total_estimate)`` after every scan page, details batch and bulk
poll; ``total_estimate`` is ``ordersCount`` for the window.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import pendulum
import requests

from order_integration.exceptions import ConfigError, StorefrontAuthError, StorefrontError
from order_integration.model import Order
from order_integration.storefronts.base import PageProgress
from order_integration.storefronts.http import TransientError, check_store_url, is_loopback_host, origin
from order_integration.storefronts.normalise import parse_time
from order_integration.storefronts.shopify_graphql import (
    MAX_QUERY_COST,
    GraphQLError,
    ShopifyGraphQL,
    _codes,
)
from order_integration.storefronts.shopify_normalise import gid_number, identify, normalise_order, order_gid
from order_integration.storefronts.window import format_gmt, window_seconds

__all__ = ["BULK_QUERY_TEMPLATE", "ShopifyClient", "details_query", "window_filter"]

log = logging.getLogger(__name__)

#: Shopify's largest page (``first``) and input list (``ids``).
MAX_PAGE = 250
#: Shopify refuses to page past this many items of one result set.
PAGING_CAP = 25_000
#: Orders created longer ago are invisible without ``read_all_orders``.
ORDER_HORIZON_DAYS = 60
ALL_ORDERS_SCOPE = "read_all_orders"

_MONEY = "shopMoney { amount currencyCode }"
_ADDRESS = "firstName lastName company address1 address2 city province provinceCode zip countryCodeV2 phone"
#: The fields of an order the normaliser reads (lines apart).
ORDER_FIELDS = (
    "id legacyResourceId name createdAt updatedAt cancelledAt displayFinancialStatus currencyCode email note "
    f"billingAddress {{ {_ADDRESS} }} shippingAddress {{ {_ADDRESS} }} "
    f"subtotalPriceSet {{ {_MONEY} }} totalDiscountsSet {{ {_MONEY} }} totalShippingPriceSet {{ {_MONEY} }} "
    f"totalTaxSet {{ {_MONEY} }} totalPriceSet {{ {_MONEY} }}"
)
#: Fields Shopify has that decide whether the totals add up (tax-inclusive prices, tips, duties,
#: additional fees) and whether the order ships; asked for unless ``extended_fields=False``.
EXTENDED_FIELDS = (
    "taxesIncluded requiresShipping "
    f"totalTipReceivedSet {{ {_MONEY} }} originalTotalDutiesSet {{ {_MONEY} }} "
    f"originalTotalAdditionalFeesSet {{ {_MONEY} }}"
)
LINE_FIELDS = (
    "id sku name quantity requiresShipping "
    f"originalUnitPriceSet {{ {_MONEY} }} originalTotalSet {{ {_MONEY} }} "
    f"discountedTotalSet(withCodeDiscounts: true) {{ {_MONEY} }} "
    f"taxLines {{ rate priceSet {{ {_MONEY} }} }}"
)
# Requested cost as Shopify counts it (objects 1, scalars 0, connections 2 + first x node).
_ORDER_COST = 1 + 2 + 5 * 2
_EXTENDED_COST = 3 * 2
_LINE_COST = 1 + 3 * 2 + (1 + 2)  # the line, three money bags, its tax lines (one counted)

SCAN_QUERY = """query OrdersWindow($first: Int!, $after: String, $query: String!) {
  orders(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {
    nodes { id legacyResourceId updatedAt }
    pageInfo { hasNextPage endCursor }
  }
}"""
COUNT_QUERY = """query OrdersCount($query: String!, $limit: Int) {
  ordersCount(query: $query, limit: $limit) { count precision }
}"""
SCOPES_QUERY = "query AccessScopes { currentAppInstallation { accessScopes { handle } } }"
BULK_RUN_MUTATION = """mutation BulkOrders($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { code field message }
  }
}"""
BULK_POLL_QUERY = """query BulkStatus($id: ID!) {
  bulkOperation(id: $id) { id status errorCode objectCount rootObjectCount url partialDataUrl }
}"""
BULK_CANCEL_MUTATION = """mutation BulkCancel($id: ID!) {
  bulkOperationCancel(id: $id) { bulkOperation { id status } userErrors { field message } }
}"""
#: The bulk query: every order of the filter with its line items (JSONL children).
BULK_QUERY_TEMPLATE = (
    "{{ orders(sortKey: UPDATED_AT, query: {query}) {{ edges {{ node {{ {fields} "
    "lineItems {{ edges {{ node {{ {line_fields} }} }} }} }} }} }} }}"
)


def window_filter(first: int, stop: int) -> str:
    """The search filter of ``[first, stop)`` (epoch seconds): ``updatedAt >= first`` and ``< stop``."""
    return f"updated_at:>='{_iso(first)}' updated_at:<'{_iso(stop)}'"


def _iso(epoch: int) -> str:
    return f"{format_gmt(epoch)}Z"


def _epoch(value: object) -> int | None:
    """Whole epoch seconds of an ISO 8601 time (``updatedAt``), ``None`` when it does not parse."""
    parsed = parse_time(value)
    return None if parsed is None else int(parsed.int_timestamp)


def order_fields(extended: bool) -> str:
    return f"{ORDER_FIELDS} {EXTENDED_FIELDS}" if extended else ORDER_FIELDS


def details_query(extended: bool = True) -> str:
    """``nodes(ids:)`` with every field the normaliser reads and the first ``$lines`` lines."""
    return (
        "query OrderDetails($ids: [ID!]!, $lines: Int!) {\n"
        f"  nodes(ids: $ids) {{ ... on Order {{ {order_fields(extended)}\n"
        f"    lineItems(first: $lines) {{ nodes {{ {LINE_FIELDS} }} pageInfo {{ hasNextPage endCursor }} }}\n"
        "  } }\n}"
    )


LINES_QUERY = (
    "query OrderLines($id: ID!, $first: Int!, $after: String) {\n"
    "  node(id: $id) { ... on Order { lineItems(first: $first, after: $after) "
    f"{{ nodes {{ {LINE_FIELDS} }} "
    "pageInfo { hasNextPage endCursor } } } }\n}"
)


def bulk_query(first: int, stop: int, extended: bool = True) -> str:
    return BULK_QUERY_TEMPLATE.format(
        query=json.dumps(window_filter(first, stop)), fields=order_fields(extended), line_fields=LINE_FIELDS
    )


def detail_cost(batch: int, lines: int, extended: bool) -> int:
    """Requested cost of one details query (``batch`` orders, ``lines`` lines each)."""
    per_order = _ORDER_COST + (_EXTENDED_COST if extended else 0) + 2 + lines * _LINE_COST + 1
    return batch * per_order


class ShopifyClient(ShopifyGraphQL):
    """Reads one Shopify shop's orders through an Airflow ``http`` connection."""

    def __init__(
        self,
        conn_id: str,
        *,
        per_page: int = MAX_PAGE,
        details_batch: int = 8,
        lines_per_order: int = 10,
        bulk: Literal["auto", "always", "never"] = "auto",
        bulk_threshold: int | None = None,
        bulk_poll_seconds: float = 5.0,
        bulk_timeout_seconds: float = 6 * 3600,
        settle_seconds: float | None = None,
        paging_cap: int = PAGING_CAP,
        extended_fields: bool = True,
        max_attempts: int = 6,
        max_wait_seconds: float = 60,
        on_page: PageProgress | None = None,
        timeout: float = 60,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], pendulum.DateTime] = lambda: pendulum.now("UTC"),
    ) -> None:
        """
        :param conn_id: Airflow ``http`` connection (see :mod:`.shopify_graphql`).
        :param per_page: orders per scan page, 1..250.
        :param details_batch: orders per ``nodes`` query; with ``lines_per_order`` its cost must stay
            within Shopify's 1,000 points per query.
        :param lines_per_order: line items read with each order (more are paged per order).
        :param bulk: ``auto`` (bulk above ``bulk_threshold`` orders), ``always`` or ``never``.
        :param bulk_threshold: orders (``ordersCount``) above which ``auto`` uses a bulk operation;
            default the connection's ``extra.bulk_threshold``, else 10,000 (0: never).
        :param settle_seconds: how long the search index may lag a write (see the module
            docstring); default the connection's ``extra.index_settle_seconds``, else 60.
        :param paging_cap: items Shopify pages through in one result set (25,000).
        :param extended_fields: ask for :data:`EXTENDED_FIELDS` (Shopify has them; off only for a
            stand-in without them).
        :param on_page: progress callback ``(pages, orders, total_estimate)``.
        :param sleep, monotonic, now: injected by tests.
        """
        if not 1 <= per_page <= MAX_PAGE:
            raise ConfigError(f"per_page must be within 1..{MAX_PAGE}, got {per_page}")
        if not 1 <= lines_per_order <= MAX_PAGE or not 1 <= details_batch <= MAX_PAGE:
            raise ConfigError("details_batch and lines_per_order must be within 1..250")
        cost = detail_cost(details_batch, lines_per_order, extended_fields)
        if cost > MAX_QUERY_COST:
            raise ConfigError(
                f"details_batch={details_batch} x lines_per_order={lines_per_order} asks for "
                f"{cost} points, above Shopify's {MAX_QUERY_COST} per query"
            )
        if bulk not in ("auto", "always", "never"):
            raise ConfigError(f"bulk must be auto, always or never, got {bulk!r}")
        if paging_cap < per_page:
            raise ConfigError(f"paging_cap {paging_cap} is smaller than a page ({per_page})")
        super().__init__(
            conn_id,
            max_attempts=max_attempts,
            max_wait_seconds=max_wait_seconds,
            timeout=timeout,
            sleep=sleep,
            monotonic=monotonic,
        )
        self.per_page = per_page
        self.details_batch = details_batch
        self.lines_per_order = lines_per_order
        self.bulk = bulk
        self._bulk_threshold = bulk_threshold
        self.bulk_poll_seconds = bulk_poll_seconds
        self.bulk_timeout_seconds = bulk_timeout_seconds
        self._settle_seconds = settle_seconds
        self.paging_cap = paging_cap
        self.extended_fields = extended_fields
        self.on_page = on_page
        self._now = now
        self._scopes: frozenset[str] | None = None
        self._pages = 0
        #: how the last window was read: ``"scan"`` or ``"bulk"`` (``None`` before any)
        self.last_path: str | None = None

    # -- connection extras -------------------------------------------------------------------

    def _check_connection(self, conn: Any) -> None:
        super()._check_connection(conn)
        extra = conn.extra_dejson or {}
        if self._bulk_threshold is None:
            self._bulk_threshold = _extra_number(extra, "bulk_threshold", 10_000, self.conn_id)
        if self._settle_seconds is None:
            self._settle_seconds = _extra_number(extra, "index_settle_seconds", 60, self.conn_id)

    @property
    def bulk_threshold(self) -> int:
        self.open()
        return int(self._bulk_threshold or 0)

    @property
    def settle_seconds(self) -> float:
        self.open()
        return float(self._settle_seconds or 0)

    # -- public API ----------------------------------------------------------------------------

    def normalise(self, raw: dict[str, Any], store_id: str) -> Order:
        """See :func:`~.shopify_normalise.normalise_order`."""
        return normalise_order(raw, store_id)

    def identify(self, raw: dict[str, Any]) -> tuple[str, str]:
        """See :func:`~.shopify_normalise.identify`."""
        return identify(raw)

    def iter_orders(
        self, modified_from: pendulum.DateTime, modified_to: pendulum.DateTime
    ) -> Iterator[dict[str, Any]]:
        """Raw orders updated in ``[modified_from, modified_to)``, each once, latest version.

        Input errors raise at the call; the read runs on the first ``next()``."""
        first, stop = window_seconds(modified_from, modified_to)
        return self._iter(first, stop)

    def fetch_orders(self, order_ids: Iterable[int]) -> Iterator[dict[str, Any]]:
        """Raw orders with these ``legacyResourceId`` s, in the requested order; ids the shop does not
        know (or does not show this token) are left out."""
        wanted = list(dict.fromkeys(int(i) for i in order_ids))
        return self._fetch(wanted)

    # -- reading ------------------------------------------------------------------------------

    def _iter(self, first: int, stop: int) -> Iterator[dict[str, Any]]:
        if first >= stop:
            return
        try:
            self.open()
            self._settle(stop)
            self._check_horizon(first)
            estimate = self._count(first, stop)
            use_bulk = self.bulk == "always" or (
                self.bulk == "auto"
                and self.bulk_threshold > 0
                and estimate is not None
                and estimate > self.bulk_threshold
            )
            self.last_path = "bulk" if use_bulk else "scan"
            if use_bulk:
                log.info(
                    "shopify %s: window [%s, %s) holds %s orders (ordersCount), more than bulk_threshold %d: "
                    "reading it through a bulk operation",
                    self._host,
                    _iso(first),
                    _iso(stop),
                    estimate,
                    self.bulk_threshold,
                )
                orders = self._bulk_read(first, stop, estimate)
            else:
                found = self._scan(first, stop, estimate)
                orders = self._details(sorted(found), estimate)
            log.info(
                "shopify %s: %d orders updated in [%s, %s) (%s, %d requests)",
                self._host,
                len(orders),
                _iso(first),
                _iso(stop),
                self.last_path,
                self.requests_sent,
            )
        finally:
            self.close()
        keyed = sorted(
            orders.values(), key=lambda o: (_epoch(o.get("updatedAt")) or 0, int(o["legacyResourceId"]))
        )
        yield from keyed

    def _fetch(self, wanted: list[int]) -> Iterator[dict[str, Any]]:
        if not wanted:
            return
        try:
            found = self._details(wanted, len(wanted))
        finally:
            self.close()
        missing = [i for i in wanted if i not in found]
        if missing:
            log.info(
                "shopify %s: %d of %d requested orders are not "
                "in the shop (or not visible to this token): %s",
                self._host,
                len(missing),
                len(wanted),
                missing[:20],
            )
        for order_id in wanted:
            if order_id in found:
                yield found[order_id]

    def _settle(self, stop: int) -> None:
        """Wait until the window's end is ``settle_seconds`` old (assumption A)."""
        now = self._now().int_timestamp
        wait = stop + self.settle_seconds - now
        if wait <= 0:
            return
        if wait > self.settle_seconds + 1:
            raise StorefrontError(
                f"shopify {self._host}: the window ends at {_iso(stop)}, which is not over yet (now "
                f"{_iso(now)}); a window is read once it ended and the search index had "
                f"{self.settle_seconds:g}s to catch up"
            )
        log.info(
            "shopify %s: waiting %.0fs for the search index to catch up with the window's end",
            self._host,
            wait,
        )
        self._sleep(wait)

    def scopes(self) -> frozenset[str]:
        """The access scopes of the connection's token (``currentAppInstallation``)."""
        if self._scopes is None:
            data = self.execute(SCOPES_QUERY, operation="AccessScopes", estimate=2)
            scopes = ((data.get("currentAppInstallation") or {}).get("accessScopes")) or []
            self._scopes = frozenset(
                s.get("handle") for s in scopes if isinstance(s, dict) and s.get("handle")
            )
        return self._scopes

    def _check_horizon(self, first: int) -> None:
        horizon = self._now().subtract(days=ORDER_HORIZON_DAYS).int_timestamp
        scopes = self.scopes()
        if ALL_ORDERS_SCOPE in scopes:
            return
        if first < horizon:
            raise StorefrontAuthError(
                f"shopify {self._host}: the window starts {_iso(first)}, more than {ORDER_HORIZON_DAYS} days "
                "ago, and Shopify shows orders created more than "
                f"{ORDER_HORIZON_DAYS} days ago only to apps with "
                f"the {ALL_ORDERS_SCOPE} scope, which connection {self.conn_id!r}'s token lacks (it has: "
                f"{', '.join(sorted(scopes)) or 'none'}); the window "
                "would read as empty or incomplete. Request "
                f"access to all orders for the app and add {ALL_ORDERS_SCOPE}"
            )
        log.warning(
            "shopify %s: the token lacks %s: orders created more than %d days ago stay invisible even "
            "when edited in this window",
            self._host,
            ALL_ORDERS_SCOPE,
            ORDER_HORIZON_DAYS,
        )

    def _count(self, first: int, stop: int) -> int | None:
        limit = max(self.bulk_threshold + 1, 1) if self.bulk_threshold else 10_000
        data = self.execute(
            COUNT_QUERY,
            {"query": window_filter(first, stop), "limit": limit},
            operation="OrdersCount",
            estimate=2,
        )
        count = (data.get("ordersCount") or {}).get("count")
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    def _progress(self, orders: int, estimate: int | None) -> None:
        self._pages += 1
        if self.on_page is not None:
            self.on_page(self._pages, orders, None if estimate is None else max(estimate, orders))

    # -- scan ---------------------------------------------------------------------------------

    def _scan(self, first: int, stop: int, estimate: int | None) -> dict[int, int]:
        """``legacyResourceId -> updatedAt`` of every order the filter shows (see the invariant)."""
        seen: dict[int, int] = {}
        lower, after, chain, best = first, None, 0, None
        restarts = 0
        while True:
            if after is not None and chain + self.per_page > self.paging_cap:
                lower, after, chain, best = (
                    self._restart(lower, best, "the paging cap", first, stop),
                    None,
                    0,
                    None,
                )
            variables = {"first": self.per_page, "after": after, "query": window_filter(lower, stop)}
            try:
                data = self.execute(
                    SCAN_QUERY,
                    variables,
                    operation="OrdersWindow",
                    estimate=3 + self.per_page,
                    describe=f"from {_iso(lower)}",
                )
            except GraphQLError as exc:
                if after is None or "BAD_REQUEST" not in _codes(exc.errors) or restarts >= self.max_attempts:
                    raise
                restarts += 1
                log.warning(
                    "shopify %s: cursor refused (%s); restarting the scan from %s",
                    self._host,
                    exc,
                    _iso(best if best is not None and best > lower else lower),
                )
                lower = best if best is not None and best > lower else lower
                after, chain, best = None, 0, None
                continue
            conn = data.get("orders")
            if not isinstance(conn, dict) or not isinstance(conn.get("nodes"), list):
                raise TransientError(f"orders answer without a nodes list: {str(conn)[:200]}")
            rows = conn["nodes"]
            chain += len(rows)
            for index, row in enumerate(rows, start=1):
                order_id, updated = self._row_key(row, index, lower)
                seen[order_id] = max(updated, seen.get(order_id, updated))
                if updated < stop:
                    best = updated if best is None else max(best, updated)
            self._progress(len(seen), estimate)
            info = conn.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return seen
            after = info.get("endCursor")
            if not after or not rows:
                raise StorefrontError(
                    f"shopify {self._host}: a page says more orders follow but gives "
                    f"{len(rows)} rows and cursor {after!r}; cannot go on without losing orders"
                )

    def _restart(self, lower: int, best: int | None, why: str, first: int, stop: int) -> int:
        if best is None or best <= lower:
            raise StorefrontError(
                f"shopify {self._host}: more than {self.paging_cap} "
                f"orders of [{_iso(first)}, {_iso(stop)}) were "
                f"updated in the second {_iso(lower)}: {why} cannot be worked around by narrowing the filter"
            )
        log.info(
            "shopify %s: %s reached; continuing the scan with a new filter from %s",
            self._host,
            why,
            _iso(best),
        )
        return best

    def _row_key(self, row: Any, index: int, lower: int) -> tuple[int, int]:
        where = f"shopify {self._host}: row {index} of an orders page"
        if not isinstance(row, dict):
            raise StorefrontError(f"{where} is a {type(row).__name__}, not an order")
        order_id = gid_number(row.get("id"))
        legacy = row.get("legacyResourceId")
        if order_id is None or str(legacy) != str(order_id):
            raise StorefrontError(
                f"{where} has id {row.get('id')!r} and legacyResourceId {legacy!r}, which do "
                "not name one order; cannot deduplicate"
            )
        updated = _epoch(row.get("updatedAt"))
        if updated is None:
            raise StorefrontError(
                f"{where} (order {order_id}) has an unusable updatedAt {row.get('updatedAt')!r}"
            )
        if updated < lower:
            raise StorefrontError(
                f"{where} (order {order_id}) was updated at "
                f"{_iso(updated)}, before the filter's {_iso(lower)}: "
                "the shop ignores the updated_at filter; reading on could lose orders"
            )
        return order_id, updated

    # -- details ------------------------------------------------------------------------------

    def _details(self, ids: list[int], estimate: int | None) -> dict[int, dict[str, Any]]:
        """``legacyResourceId -> order`` (all its lines) for the ids the shop knows."""
        self.open()
        query = details_query(self.extended_fields)
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), self.details_batch):
            chunk = ids[start : start + self.details_batch]
            data = self.execute(
                query,
                {"ids": [order_gid(i) for i in chunk], "lines": self.lines_per_order},
                operation="OrderDetails",
                estimate=detail_cost(len(chunk), self.lines_per_order, self.extended_fields),
                describe=f"orders {chunk[0]}..{chunk[-1]}",
            )
            nodes = data.get("nodes")
            if not isinstance(nodes, list) or len(nodes) != len(chunk):
                raise TransientError(
                    f"nodes answered {len(nodes) if isinstance(nodes, list) else nodes!r} "
                    f"entries for {len(chunk)} ids"
                )
            for order_id, node in zip(chunk, nodes, strict=True):
                if node is None:
                    continue
                if not isinstance(node, dict) or gid_number(node.get("id")) != order_id:
                    raise StorefrontError(
                        f"shopify {self._host}: nodes answered {str(node)[:120]!r} for order "
                        f"{order_id}, which was not asked for"
                    )
                self._complete_lines(node)
                found[order_id] = node
            self._progress(len(found), estimate)
        return found

    def _complete_lines(self, order: dict[str, Any]) -> None:
        """Read the rest of an order's lines when the first page said more follow."""
        conn = order.get("lineItems")
        if not isinstance(conn, dict) or not isinstance(conn.get("nodes"), list):
            return  # the normaliser reports it
        lines = list(conn["nodes"])
        info = conn.get("pageInfo") or {}
        while info.get("hasNextPage"):
            data = self.execute(
                LINES_QUERY,
                {"id": order["id"], "first": MAX_PAGE, "after": info.get("endCursor")},
                operation="OrderLines",
                estimate=3 + MAX_PAGE * _LINE_COST,
                describe=f"order {order.get('legacyResourceId')}",
            )
            more = ((data.get("node") or {}).get("lineItems")) or {}
            if not isinstance(more.get("nodes"), list) or (
                not more["nodes"] and (more.get("pageInfo") or {}).get("hasNextPage")
            ):
                raise StorefrontError(
                    f"shopify {self._host}: the lines of order {order.get('legacyResourceId')} "
                    "could not be read completely"
                )
            lines += more["nodes"]
            info = more.get("pageInfo") or {}
        order["lineItems"] = {"nodes": lines}

    # -- bulk ---------------------------------------------------------------------------------

    def _bulk_read(self, first: int, stop: int, estimate: int | None) -> dict[int, dict[str, Any]]:
        data = self.execute(
            BULK_RUN_MUTATION,
            {"query": bulk_query(first, stop, self.extended_fields)},
            operation="BulkOrders",
            estimate=10,
        )
        payload = data.get("bulkOperationRunQuery") or {}
        errors = payload.get("userErrors") or []
        operation = (payload.get("bulkOperation") or {}).get("id")
        if errors or not operation:
            said = "; ".join(
                f"{e.get('code') or ''} {e.get('message')}".strip() for e in errors if isinstance(e, dict)
            )
            raise StorefrontError(
                f"shopify {self._host}: the bulk operation for [{_iso(first)}, {_iso(stop)}) was "
                f"not started: {said or 'no operation id in the answer'}"
            )
        log.info(
            "shopify %s: bulk operation %s started for [%s, %s)",
            self._host,
            operation,
            _iso(first),
            _iso(stop),
        )
        status = self._bulk_wait(operation, estimate)
        url = status.get("url")
        if not url:
            if int(status.get("objectCount") or 0) == 0:
                return {}
            raise StorefrontError(
                f"shopify {self._host}: bulk operation {operation} completed with "
                f"{status.get('objectCount')} objects but no result URL"
            )
        orders = self._bulk_download(str(url), first)
        roots = status.get("rootObjectCount")
        if roots is not None and int(roots) != len(orders):
            raise StorefrontError(
                f"shopify {self._host}: bulk operation {operation} reports {roots} orders but its "
                f"file holds {len(orders)}; not using an incomplete file"
            )
        return orders

    def _bulk_wait(self, operation: str, estimate: int | None) -> dict[str, Any]:
        started = self._monotonic()
        while True:
            data = self.execute(BULK_POLL_QUERY, {"id": operation}, operation="BulkStatus", estimate=1)
            status = data.get("bulkOperation") or {}
            state = status.get("status")
            self._progress(int(status.get("rootObjectCount") or 0), estimate)
            if state == "COMPLETED":
                return status
            if state in ("FAILED", "CANCELED", "CANCELING", "EXPIRED"):
                code = status.get("errorCode")
                message = (
                    f"shopify {self._host}: bulk operation {operation} ended {state}"
                    f"{' (' + str(code) + ')' if code else ''}; partial results are never used"
                )
                if code == "ACCESS_DENIED":
                    raise StorefrontAuthError(
                        message + f": connection {self.conn_id!r}'s token lacks a scope the order fields need"
                    )
                raise StorefrontError(message)
            if self._monotonic() - started > self.bulk_timeout_seconds:
                self._bulk_cancel(operation)
                raise StorefrontError(
                    f"shopify {self._host}: bulk operation {operation} still {state} after "
                    f"{self.bulk_timeout_seconds:g}s; cancelled"
                )
            self._sleep(self.bulk_poll_seconds)

    def _bulk_cancel(self, operation: str) -> None:
        try:
            self.execute(BULK_CANCEL_MUTATION, {"id": operation}, operation="BulkCancel", estimate=10)
        except StorefrontError as exc:  # the timeout is the error worth raising
            log.warning("shopify %s: could not cancel bulk operation %s: %s", self._host, operation, exc)

    def _bulk_download(self, url: str, first: int) -> dict[int, dict[str, Any]]:
        """The JSONL result: orders with their ``__parentId`` children (line items) put back."""
        scheme, host, _port = origin(url)
        if not (scheme == "https" or (scheme == "http" and is_loopback_host(host))):
            raise ConfigError(
                f"shopify {self._host}: the bulk result URL {url[:80]!r} is not https; not fetched"
            )
        check_store_url(url, self.conn_id)
        with tempfile.TemporaryFile() as spool:
            self._retried(lambda: self._download_once(url, spool), "bulk result download")
            spool.seek(0)
            return self._reassemble(spool, first)

    def _download_once(self, url: str, spool: Any) -> None:
        spool.seek(0)
        spool.truncate()
        try:  # a plain session: the access token is not sent to the storage host
            with requests.get(url, stream=True, timeout=self.timeout, allow_redirects=False) as response:
                if response.status_code in (429, 408) or response.status_code >= 500:
                    raise TransientError(f"bulk result download: HTTP {response.status_code}")
                if response.status_code != 200:
                    raise StorefrontError(
                        f"shopify {self._host}: bulk result download answered HTTP "
                        f"{response.status_code} (expired after 7 days, or redirected)"
                    )
                for block in response.iter_content(1 << 16):
                    spool.write(block)
        except requests.exceptions.RequestException as exc:
            raise TransientError(f"bulk result download: {type(exc).__name__}: {exc}") from exc

    def _reassemble(self, lines: Iterable[bytes], first: int) -> dict[int, dict[str, Any]]:
        orders: dict[str, dict[str, Any]] = {}
        children: dict[str, list[dict[str, Any]]] = {}
        for number, raw_line in enumerate(lines, start=1):
            if not raw_line.strip():
                continue
            try:
                item = json.loads(raw_line)
            except ValueError as exc:
                raise TransientError(
                    f"bulk result line {number} is not JSON ({exc}): a truncated file?"
                ) from exc
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise StorefrontError(
                    f"shopify {self._host}: bulk result line {number} is not an object with an id"
                )
            parent = item.pop("__parentId", None)
            if parent is None:
                orders[item["id"]] = item
            else:
                children.setdefault(str(parent), []).append(item)
        unknown = set(children) - set(orders)
        if unknown:
            raise StorefrontError(
                f"shopify {self._host}: bulk result has lines of {len(unknown)} orders it does not "
                f"hold (e.g. {sorted(unknown)[0]}): an incomplete file"
            )
        found: dict[int, dict[str, Any]] = {}
        for index, (gid, order) in enumerate(orders.items(), start=1):
            order_id, _updated = self._row_key(order, index, first)
            order["lineItems"] = {"nodes": children.get(gid, [])}
            found[order_id] = order
        return found


def _extra_number(extra: dict[str, Any], key: str, default: float, conn_id: str) -> Any:
    value = extra.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"connection {conn_id!r}: extra.{key} {value!r} is not a number >= 0")
    return value
