"""ShopifyStock's look-up query and inventorySetQuantities mutation validate against Shopify's
real Admin schema (2026-10, vendored in tests/fixtures/shopify), variables included."""

from __future__ import annotations

import pytest

from order_integration.storefronts.shopify_stock import (
    _lookup_query,
    catalog_item,
    location_gid,
    search_value,
    set_document,
)
from tests.support.shopify_schema import validate_against_shopify

pytestmark = pytest.mark.unit


def test_the_lookup_and_the_write_are_valid_against_shopifys_schema() -> None:
    assert validate_against_shopify(_lookup_query(3), {f"q{i}": search_value(f"SKU-{i}") for i in range(3)}) == []
    write = {"input": {
        "name": "available", "reason": "correction", "referenceDocumentUri": "gid://order-integration/StockSync/x",
        "quantities": [{"inventoryItemId": "gid://shopify/InventoryItem/1", "locationId": location_gid("2"),
                        "quantity": 5, "changeFromQuantity": 4}]}}
    # from 2026-04 Shopify refuses the write at run time without @idempotent (its changelog)
    assert "@idempotent(key: $key)" in set_document("2026-10")
    assert validate_against_shopify(set_document("2026-10"), {**write, "key": "k"}) == []
    assert "@idempotent" not in set_document("2025-10")


def test_search_values_are_quoted_and_config_ids_become_location_gids() -> None:
    assert search_value('A"B\\C') == 'sku:"A\\"B\\\\C"'
    assert location_gid("123") == "gid://shopify/Location/123"
    assert location_gid("gid://shopify/Location/9") == "gid://shopify/Location/9"


def test_an_inventory_item_node_becomes_a_catalog_item_with_levels_per_location() -> None:
    item = catalog_item({"id": "gid://shopify/InventoryItem/7", "sku": "A", "tracked": True,
                         "variant": {"displayName": "Hoodie - M"},
                         "inventoryLevels": {"nodes": [
                             {"location": {"id": "gid://shopify/Location/1"},
                              "quantities": [{"name": "available", "quantity": 3}]},
                             {"location": {"id": "gid://shopify/Location/2"}, "quantities": []}]}})
    assert item is not None and item.managed and item.ref == "gid://shopify/InventoryItem/7"
    assert item.levels == {"gid://shopify/Location/1": 3, "gid://shopify/Location/2": None}
    assert item.label == "variant 'Hoodie - M' (inventory item 7)"
    assert catalog_item({"id": 7, "sku": "A"}) is None
