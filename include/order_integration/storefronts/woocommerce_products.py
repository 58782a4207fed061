"""Stock levels of a WooCommerce store (REST API v3): SKU look-up and batch stock updates.

Same connection, session, retries and error mapping as the order writer
(:class:`~order_integration.storefronts.woocommerce_writes.WooCommerceWriter`, which this
class extends for its HTTP plumbing).

Look-up
-------
``GET /products?sku=A,B,…`` takes a comma-separated list of SKUs (exact values, ``IN``) and,
when ``sku`` is given, answers products *and variations* (``type: "variation"`` with its
``parent_id``) — so one request resolves 99 SKUs of any kind, where listing the whole
catalogue would need a page per 100 products plus one listing per variable product. Each
request asks for ``per_page=100`` and only the fields we read (``_fields``), ordered by id;
99 SKUs leave room for one more row, so a full page means duplicates or case twins in the
store, and only then is the next page read. Results, misses included, are cached for the
client's lifetime (one task, i.e. one stock file), so a SKU is looked up at most once.

A SKU with a comma cannot be part of a list (WooCommerce splits at commas) and is looked up
alone: WooCommerce then matches the whole value too. Matching is exact and case-sensitive on
our side (MySQL compares case-insensitively, so a look-up may answer ``abc-1`` for
``ABC-1``: that is reported, not applied). Two products with one SKU (possible after imports)
make the SKU ambiguous: reported, not applied.

``manage_stock`` is ``true``/``false`` for products; a variation answers ``"parent"`` when its
stock is managed on the parent product, which then is what a stock file must name. Both are
WooCommerce's rules: the neutral :class:`~order_integration.storefronts.base.CatalogItem` only
says ``managed`` and, when not, why (``unmanaged_reason``); ``ref`` is :class:`WooRef`.

Locations
---------
WooCommerce keeps one stock level per product or variation (``per_location`` false): a row's
``location`` is not a WooCommerce location (:meth:`WooCommerceStock.location_for` answers
``None`` for any name, and the store config's ``stock_locations`` do not apply); the level is
the SKU's total, and the name is recorded in the ledger for operators only.

Writes
------
``POST /products/batch`` for products and ``POST /products/{parent}/variations/batch`` for
variations (WooCommerce refuses variations on the products endpoint and would re-parent a
variation sent under another product), up to 100 updates per request, each
``{"id", "manage_stock": true, "stock_quantity": n}`` (WooCommerce ignores ``stock_quantity``
unless stock is managed, and switches management on when ``manage_stock`` is true — the caller
decides whether that is allowed). Setting an absolute quantity is idempotent, so a batch is
retried like a read. After every request ``on_applied`` receives that request's results, so a
failure later in the file leaves what was applied known to the caller.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from order_integration.exceptions import StorefrontError
from order_integration.ids import parse_order_id
from order_integration.storefronts.base import CatalogItem, StockUpdate, StockWriteResult
from order_integration.storefronts.woocommerce import MAX_PER_PAGE
from order_integration.storefronts.woocommerce_writes import WooCommerceWriter

log = logging.getLogger(__name__)

_QUANTITY = re.compile(r"-?[0-9]{1,18}")

#: ``CatalogItem.unmanaged_reason`` in WooCommerce's terms.
MANAGED_BY_PARENT = "its stock is managed on the parent product"
NOT_MANAGED = "the store does not manage its stock"


class WooRef(NamedTuple):
    """Where a WooCommerce stock level lives: a product, or a variation of its parent product."""

    product_id: int  # the product, or the variation's parent product
    variation_id: int | None  # set for a variation

    @property
    def label(self) -> str:
        if self.variation_id is None:
            return f"product {self.product_id}"
        return f"variation {self.variation_id} of product {self.product_id}"


def _item(sku: str, ref: WooRef, manage_stock: bool | str, quantity: int | None) -> CatalogItem:
    """A catalogue item; ``manage_stock`` is WooCommerce's: True, False or ``"parent"``."""
    managed = manage_stock is True
    reason = "" if managed else MANAGED_BY_PARENT if manage_stock == "parent" else NOT_MANAGED
    return CatalogItem(sku, ref, ref.label, managed, {None: quantity}, reason)

PRODUCTS_ENDPOINT = "wp-json/wc/v3/products"
#: Fields the look-up reads (``_fields`` keeps answers small).
LOOKUP_FIELDS = "id,sku,type,parent_id,manage_stock,stock_quantity"
#: Longest joined ``sku=`` value per request: URLs stay well below common 8 KiB limits.
MAX_SKU_PARAM = 2000
#: SKUs per look-up request: one less than a page, so only a full page (duplicates or case
#: twins in the store) means there is more to read, and the common case is one request.
LOOKUP_GROUP = MAX_PER_PAGE - 1
#: Pages of one look-up request before we suspect a plugin ignoring ``sku=``.
_MAX_LOOKUP_PAGES = 50


def _quantity(value: Any) -> int | None:
    """A stock quantity from the store's JSON: an integral number, or ASCII digits with an
    optional minus (``str.isdigit`` would take ``²``, which ``int`` refuses, and ``٣``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _QUANTITY.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _item_id(value: Any) -> int | None:
    """A product or variation id: posts like orders, so the order-id rule (:mod:`order_integration.ids`)."""
    return parse_order_id(value)


def catalog_item(row: Any) -> CatalogItem | None:
    """A look-up answer row as a :class:`CatalogItem` (``None`` when unusable)."""
    if not isinstance(row, dict):
        return None
    item_id = _item_id(row.get("id"))
    sku = row.get("sku")
    if item_id is None or not isinstance(sku, str) or not sku:
        return None
    kind = str(row.get("type") or "simple")
    manage = row.get("manage_stock")
    manage_stock: bool | str = manage if manage in (True, "parent") else False
    quantity = _quantity(row.get("stock_quantity"))
    if kind == "variation":
        parent = _item_id(row.get("parent_id"))
        if parent is None:
            return None
        return _item(sku, WooRef(parent, item_id), manage_stock, quantity)
    return _item(sku, WooRef(item_id, None), manage_stock, quantity)


def sku_chunks(
    skus: Sequence[str], size: int = LOOKUP_GROUP, max_chars: int = MAX_SKU_PARAM
) -> list[list[str]]:
    """``skus`` in look-up groups: at most ``size`` each and ``max_chars`` joined; a SKU with a
    comma alone (WooCommerce splits the parameter at commas)."""
    groups: list[list[str]] = []
    current: list[str] = []
    length = 0
    for sku in skus:
        if "," in sku:
            groups.append([sku])
            continue
        if current and (len(current) >= size or length + 1 + len(sku) > max_chars):
            groups.append(current)
            current, length = [], 0
        current.append(sku)
        length += len(sku) + 1
    if current:
        groups.append(current)
    return groups


class WooCommerceStock(WooCommerceWriter):
    """Reads and sets stock levels of one WooCommerce store through an Airflow ``http`` connection.

    Constructor arguments are the writer's (``batch_size``: updates per batch request, 1..100);
    ``stock_locations`` and ``default_stock_location`` (the store config's) are accepted like
    every platform's and unused: WooCommerce keeps one level per SKU."""

    #: One level per product or variation: a file's locations are not WooCommerce's.
    per_location = False

    def __init__(self, conn_id: str, *, stock_locations: Mapping[str, str] | None = None,
                 default_stock_location: str | None = None, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)
        self._items: dict[str, CatalogItem | None] = {}  # sku -> item; None: the store has none
        self._problems: dict[str, str] = {}  # sku -> why it cannot be used (ambiguous, case)
        self.requests = 0  # look-up and write requests sent by this client

    def location_for(self, name: str | None) -> str | None:
        """``None`` for any name: the level is the SKU's total, the name is only recorded."""
        return None

    # -- look-up ---------------------------------------------------------------------------

    def lookup(self, skus: Iterable[str]) -> dict[str, CatalogItem]:
        """sku -> the product or variation with exactly that SKU, for those the store has.

        Unknown and ambiguous SKUs are absent (:meth:`problem` says why an answer was not
        usable). Looks up only SKUs not seen before by this client."""
        wanted = list(dict.fromkeys(skus))
        missing = [s for s in wanted if s not in self._items]
        for group in sku_chunks(missing):
            self._lookup_group(group)
        return {s: item for s in wanted if (item := self._items.get(s)) is not None}

    def problem(self, sku: str) -> str | None:
        """Why a SKU the look-up answered cannot be used, or ``None``."""
        return self._problems.get(sku)

    def _lookup_group(self, group: list[str]) -> None:
        found: dict[str, list[CatalogItem]] = {}
        near: dict[str, str] = {}
        folded: dict[str, list[str]] = {}
        for sku in group:
            folded.setdefault(sku.casefold(), []).append(sku)
        for page in range(1, _MAX_LOOKUP_PAGES + 1):
            params = {"sku": ",".join(group), "per_page": str(MAX_PER_PAGE), "page": str(page),
                      "orderby": "id", "order": "asc", "_fields": LOOKUP_FIELDS}
            body = self._call("GET", PRODUCTS_ENDPOINT, params=params, what=f"look up {len(group)} skus")
            if not isinstance(body, list):
                raise StorefrontError(f"woocommerce {self._host}: the products list is not a JSON list")
            for row in body:
                item = catalog_item(row)
                if item is None:
                    continue
                for sku in folded.get(item.sku.casefold(), ()):
                    if sku == item.sku:
                        found.setdefault(sku, []).append(item)
                    else:
                        near[sku] = item.sku
            if len(body) < MAX_PER_PAGE:
                break
        else:
            raise StorefrontError(f"woocommerce {self._host}: a look-up of {len(group)} skus did not end "
                                  f"after {_MAX_LOOKUP_PAGES} pages (is the sku filter ignored?)")
        for sku in group:
            items = found.get(sku, [])
            self._items[sku] = items[0] if len(items) == 1 else None
            if len(items) > 1:
                self._problems[sku] = "sku is ambiguous in the store: " + ", ".join(i.label for i in items)
            elif not items and sku in near:
                self._problems[sku] = f"the store has {near[sku]!r}, which differs in case"

    # -- writes ----------------------------------------------------------------------------

    def set_stock(
        self, updates: Sequence[StockUpdate], *, manage_stock: bool = True,
        on_applied: Callable[[list[StockWriteResult]], None] | None = None,
    ) -> list[StockWriteResult]:
        """Set the stock of many products/variations in batch requests; results in input order.

        :param manage_stock: send ``manage_stock: true`` with each quantity (WooCommerce only
            stores the quantity of a managed item; for an unmanaged one this switches it on).
        :param on_applied: called with each request's results right after it was answered.
        :raises StorefrontError: transient failure after retries (earlier requests applied).
        """
        groups: dict[tuple[str, int], list[int]] = {}
        for index, update in enumerate(updates):
            ref: WooRef = update.item.ref
            key = ("variations", ref.product_id) if ref.variation_id is not None else ("products", 0)
            groups.setdefault(key, []).append(index)
        results: dict[int, StockWriteResult] = {}
        for (kind, parent), indexes in groups.items():
            endpoint = (f"{PRODUCTS_ENDPOINT}/{parent}/variations/batch" if kind == "variations"
                        else f"{PRODUCTS_ENDPOINT}/batch")
            for start in range(0, len(indexes), self.batch_size):
                chunk = [updates[i] for i in indexes[start : start + self.batch_size]]
                done = self._write_chunk(endpoint, chunk, manage_stock)
                results.update(zip(indexes[start : start + self.batch_size], done, strict=True))
                if on_applied is not None:
                    on_applied(done)
        return [results[i] for i in range(len(updates))]

    def _write_chunk(
        self, endpoint: str, chunk: list[StockUpdate], manage_stock: bool
    ) -> list[StockWriteResult]:
        items = []
        for update in chunk:
            item_id = update.item.ref.variation_id or update.item.ref.product_id
            body: dict[str, Any] = {"id": item_id, "stock_quantity": update.quantity}
            if manage_stock:
                body["manage_stock"] = True
            items.append(body)
        answer = self._call("POST", endpoint, body={"update": items}, what=f"set stock of {len(items)} items")
        out = []
        for update, result in zip(chunk, self._batch_results(items, answer), strict=True):
            if not result.ok:
                out.append(StockWriteResult(update, error=result.error))
                continue
            quantity = _quantity((result.order or {}).get("stock_quantity"))
            out.append(StockWriteResult(update, stock_quantity=quantity))
            item = update.item
            managed = manage_stock or item.managed
            self._items[item.sku] = CatalogItem(item.sku, item.ref, item.label, managed, {None: quantity},
                                                "" if managed else item.unmanaged_reason)
        log.info("woocommerce %s: stock set for %d of %d items (%s)", self._host,
                 sum(r.ok for r in out), len(out), endpoint)
        return out

    def _call(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        self.requests += 1
        return self._request(method, endpoint, **kwargs)
