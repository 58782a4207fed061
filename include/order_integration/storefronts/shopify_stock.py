"""Stock levels of a Shopify store (Admin GraphQL): SKU look-up and levels per location.

Shopify keeps an ``available`` quantity per inventory item (one per variant) and location
(``per_location``): a stock file's row is the level of its SKU at one location. The row's
``location`` name is mapped to a Shopify location by the store config (``stock_locations``:
name → location id, numeric or ``gid://shopify/Location/…``); a row without one goes to
``default_stock_location``; a name the config does not map refuses the row
(:class:`~order_integration.storefronts.base.UnknownLocation`).

Look-up
-------
``inventoryItems(query: "sku:…")`` per SKU, up to :data:`LOOKUP_GROUP` SKUs per request as
aliases of one query (the search values are variables, quoted), each with ``tracked``, its
variant's name and ``inventoryLevels`` (location id and the ``available`` quantity). Matching
is exact and case-sensitive on our side; two items with one SKU make it ambiguous (reported,
not applied). Answers, misses included, are cached for the client's lifetime.
``CatalogItem.ref`` is the inventory item's GID; ``levels`` maps location GIDs to quantities; a
location where the item is not stocked is absent (a write there is refused: activate the item
at that location in Shopify first). An item with ``tracked: false`` is unmanaged.

Writes
------
``inventorySetQuantities(input: {name: "available", reason: "correction",
referenceDocumentUri, quantities: [{inventoryItemId, locationId, quantity, changeFromQuantity}]})``
(2026-04 and later; ``compareQuantity`` before), up to :data:`WRITE_GROUP` quantities per
request, with the compare value the quantity the look-up saw: a level changed in Shopify
meanwhile (a sale) is not overwritten blindly. Shopify applies a mutation all or nothing, so
``userErrors`` are mapped to their quantities (``field: ["input", "quantities", "<i>", …]``):
a stale compare value is re-read and retried once (then refused as changed while written),
any other error refuses its quantity, and the rest are sent again. ``manage_stock`` cannot
switch tracking on here: an untracked item's write is refused with that reason.
From 2026-01 each request carries ``@idempotent(key:)`` (required from 2026-04, a runtime
error without it): a fresh key per request, the same for the transport's retries of it.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from order_integration.exceptions import StorefrontError
from order_integration.storefronts.base import CatalogItem, StockUpdate, StockWriteResult, UnknownLocation
from order_integration.storefronts.shopify_graphql import ShopifyGraphQL

log = logging.getLogger(__name__)

#: SKUs per look-up request (aliases of one query).
LOOKUP_GROUP = 5
#: Quantities per ``inventorySetQuantities`` request.
WRITE_GROUP = 100
#: Locations read per inventory item.
MAX_LEVELS = 25
REFERENCE_URI = "gid://order-integration/StockSync/inventory"
#: a userError's position in ``input.quantities`` (ASCII digits: ``str.isdigit`` takes "²")
_INDEX = re.compile(r"[0-9]{1,6}")
NOT_TRACKED = "Shopify does not track its inventory (tracked is off)"
_LOCATION_GID = "gid://shopify/Location/"
_DIGITS = re.compile(r"[0-9]{1,20}")
_STALE = {"CHANGE_FROM_QUANTITY_STALE", "COMPARE_QUANTITY_STALE"}

_ITEM_FIELDS = f"""
  id sku tracked
  variant {{ displayName }}
  inventoryLevels(first: {MAX_LEVELS}) {{
    nodes {{ location {{ id }} quantities(names: ["available"]) {{ name quantity }} }}
  }}
"""
_SET = """
mutation SetStock($input: InventorySetQuantitiesInput!{key_variable}) {{
  inventorySetQuantities(input: $input){directive} {{
    inventoryAdjustmentGroup {{ id }}
    userErrors {{ code field message }}
  }}
}}
"""
#: From this version the mutation takes ``@idempotent(key:)``; from 2026-04 it requires it.
IDEMPOTENT_FROM = "2026-01"


def set_document(api_version: str) -> str:
    """The ``inventorySetQuantities`` document for ``api_version`` (``$key`` from 2026-01)."""
    if api_version >= IDEMPOTENT_FROM:
        return _SET.format(key_variable=", $key: String!", directive=" @idempotent(key: $key)")
    return _SET.format(key_variable="", directive="")


def location_gid(value: str) -> str:
    """A Shopify location GID from a config value: ``123`` or ``gid://shopify/Location/123``."""
    return _LOCATION_GID + value if _DIGITS.fullmatch(value) else value


def search_value(sku: str) -> str:
    """``sku:"…"`` with Shopify's search quoting (backslash and double quote escaped)."""
    return 'sku:"' + sku.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lookup_query(count: int) -> str:
    params = ", ".join(f"$q{i}: String!" for i in range(count))
    fields = "\n".join(f"  s{i}: inventoryItems(first: 2, query: $q{i}) {{ nodes {{ {_ITEM_FIELDS} }} }}"
                       for i in range(count))
    return f"query LookUpStock({params}) {{\n{fields}\n}}"


def catalog_item(node: Any) -> CatalogItem | None:
    """An ``InventoryItem`` node as a :class:`CatalogItem` (``None`` when unusable)."""
    if not isinstance(node, dict) or not all(isinstance(node.get(k), str) for k in ("id", "sku")):
        return None
    levels: dict[str | None, int | None] = {}
    for level in ((node.get("inventoryLevels") or {}).get("nodes") or []):
        location = ((level or {}).get("location") or {}).get("id")
        if not isinstance(location, str):
            continue
        available = [q.get("quantity") for q in level.get("quantities") or [] if q.get("name") == "available"]
        levels[location] = available[0] if available and isinstance(available[0], int) else None
    name = ((node.get("variant") or {}).get("displayName")) or node["sku"]
    tracked = node.get("tracked") is True
    label = f"variant {name!r} (inventory item {node['id'].rsplit('/', 1)[-1]})"
    return CatalogItem(node["sku"], node["id"], label, tracked, levels, "" if tracked else NOT_TRACKED)


class ShopifyStock(ShopifyGraphQL):
    """Reads and sets stock levels of one Shopify store, per location, through an Airflow
    ``http`` connection (see :mod:`.shopify_graphql`). ``stock_locations`` and
    ``default_stock_location`` are the store config's."""

    per_location = True

    def __init__(self, conn_id: str, *, stock_locations: Mapping[str, str] | None = None,
                 default_stock_location: str | None = None, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)
        self.stock_locations = {name: location_gid(v) for name, v in (stock_locations or {}).items()}
        self.default_location = location_gid(default_stock_location) if default_stock_location else None
        self._items: dict[str, CatalogItem | None] = {}
        self._problems: dict[str, str] = {}

    @property
    def requests(self) -> int:
        return self.requests_sent

    # -- locations -------------------------------------------------------------------------

    def location_for(self, name: str | None) -> str | None:
        if name is None:
            if self.default_location is None:
                raise UnknownLocation("the row names no location and the store config sets no "
                                      "default_stock_location")
            return self.default_location
        if name in self.stock_locations:
            return self.stock_locations[name]
        known = ", ".join(sorted(self.stock_locations)) or "none"
        raise UnknownLocation(f"location {name!r} is not in the store config's stock_locations "
                              f"(known: {known})")

    # -- look-up ---------------------------------------------------------------------------

    def lookup(self, skus: Iterable[str]) -> dict[str, CatalogItem]:
        wanted = list(dict.fromkeys(skus))
        self._look_up([s for s in wanted if s not in self._items])
        return {s: item for s in wanted if (item := self._items.get(s)) is not None}

    def problem(self, sku: str) -> str | None:
        return self._problems.get(sku)

    def _look_up(self, skus: Sequence[str]) -> None:
        for start in range(0, len(skus), LOOKUP_GROUP):
            group = skus[start : start + LOOKUP_GROUP]
            values = {f"q{i}": search_value(s) for i, s in enumerate(group)}
            data = self.execute(_lookup_query(len(group)), values, operation="LookUpStock",
                                estimate=len(group) * (2 + 2 * MAX_LEVELS),
                                describe=f"{len(group)} skus")
            for i, sku in enumerate(group):
                nodes = ((data.get(f"s{i}") or {}).get("nodes")) or []
                items = [item for node in nodes if (item := catalog_item(node)) is not None]
                exact = [item for item in items if item.sku == sku]
                self._items[sku] = exact[0] if len(exact) == 1 else None
                self._problems.pop(sku, None)
                if len(exact) > 1:
                    labels = ", ".join(i.label for i in exact)
                    self._problems[sku] = f"sku is ambiguous in the store: {labels}"
                elif not exact and items:
                    self._problems[sku] = f"the store has {items[0].sku!r}, which differs"

    # -- writes ----------------------------------------------------------------------------

    def set_stock(
        self, updates: Sequence[StockUpdate], *, manage_stock: bool = True,
        on_applied: Callable[[list[StockWriteResult]], None] | None = None,
    ) -> list[StockWriteResult]:
        """Set ``available`` at each update's location; results in input order (see the module
        docstring for the compare value, the stale retry and refused quantities)."""
        results: list[StockWriteResult] = []
        for start in range(0, len(updates), WRITE_GROUP):
            done = self._write_group(list(updates[start : start + WRITE_GROUP]))
            results.extend(done)
            if on_applied is not None:
                on_applied(done)
        return results

    def _write_group(self, updates: list[StockUpdate]) -> list[StockWriteResult]:
        errors: dict[int, str] = {}
        seen: dict[int, int | None] = {}
        for i, update in enumerate(updates):
            item = update.item
            if not item.managed:
                errors[i] = f"{item.label}: {NOT_TRACKED}; switch tracking on in Shopify"
            elif update.location not in item.levels:
                errors[i] = (f"{item.label} is not stocked at location {update.location} "
                             "(activate it there in Shopify)")
            else:
                seen[i] = item.quantity(update.location)
        retried: set[int] = set()
        pending = [i for i in range(len(updates)) if i not in errors]
        while pending:
            refused = self._set_quantities([(updates[i], seen[i]) for i in pending])
            if not refused:
                break
            stale = self._sort_refused(refused, pending, retried, errors)
            if stale:  # re-read what Shopify shows now, then try once more with it
                fresh = self._reread([updates[i].item.sku for i in stale])
                for i in stale:
                    retried.add(i)
                    item = fresh.get(updates[i].item.sku)
                    if item is None or updates[i].location not in item.levels:
                        errors[i] = "the item or its level disappeared while it was written"
                    else:
                        seen[i] = item.quantity(updates[i].location)
            pending = [i for i in pending if i not in errors]
        out = []
        for i, update in enumerate(updates):
            if i in errors:
                out.append(StockWriteResult(update, error=errors[i]))
            else:
                out.append(StockWriteResult(update, stock_quantity=update.quantity))
                self._remember(update)
        log.info("shopify %s: available set for %d of %d levels", self.host,
                 len(updates) - len(errors), len(updates))
        return out

    @staticmethod
    def _sort_refused(refused: dict[int | None, tuple[str, str]], pending: list[int], retried: set[int],
                      errors: dict[int, str]) -> list[int]:
        """Record the refused quantities in ``errors``; the stale ones to re-read and retry."""
        stale: list[int] = []
        for position, (code, message) in refused.items():
            if position is None:  # an error naming no quantity: the whole request is refused
                errors.update((i, f"{code}: {message}") for i in pending)
                return []
            index = pending[position]
            if code in _STALE and index not in retried:
                stale.append(index)
            elif code in _STALE:
                errors[index] = f"its level changed in Shopify again while it was written ({message})"
            else:
                errors[index] = f"{code}: {message}"
        return stale

    def _set_quantities(
        self, quantities: list[tuple[StockUpdate, int | None]]
    ) -> dict[int | None, tuple[str, str]]:
        """One ``inventorySetQuantities``; the refused quantities (position → code, message),
        empty when Shopify applied them all."""
        compare = "compareQuantity" if self.api_version < "2026-04" else "changeFromQuantity"
        payload = [{"inventoryItemId": u.item.ref, "locationId": u.location, "quantity": u.quantity,
                    compare: before}
                   for u, before in quantities]
        variables: dict[str, Any] = {"input": {"name": "available", "reason": "correction",
                                               "referenceDocumentUri": REFERENCE_URI, "quantities": payload}}
        if self.api_version >= IDEMPOTENT_FROM:
            # One key per request, kept by the transport's retries of it: a retry after a lost
            # answer is recognised by Shopify and not applied twice. A later request (a re-read
            # after a stale compare value, or the next run) is a new operation with a new key.
            variables["key"] = str(uuid.uuid4())
        data = self.execute(set_document(self.api_version), variables, operation="SetStock", estimate=10,
                            describe=f"{len(payload)} levels")
        answer = data.get("inventorySetQuantities")
        if not isinstance(answer, dict):
            raise StorefrontError(f"shopify {self.host}: inventorySetQuantities answered no payload")
        refused: dict[int | None, tuple[str, str]] = {}
        for error in answer.get("userErrors") or []:
            field = [str(f) for f in error.get("field") or []]
            position = int(field[2]) if len(field) > 2 and field[:2] == ["input", "quantities"] \
                and _INDEX.fullmatch(field[2]) and int(field[2]) < len(payload) else None
            refused[position] = (str(error.get("code") or "ERROR"), str(error.get("message") or ""))
        return refused

    def _reread(self, skus: list[str]) -> dict[str, CatalogItem]:
        for sku in skus:
            self._items.pop(sku, None)
        return self.lookup(skus)

    def _remember(self, update: StockUpdate) -> None:
        item = self._items.get(update.item.sku) or update.item
        levels = {**item.levels, update.location: update.quantity}
        self._items[item.sku] = CatalogItem(item.sku, item.ref, item.label, item.managed, levels,
                                            item.unmanaged_reason)
