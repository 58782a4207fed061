"""Platform code stays behind the storefront interfaces (issue 14, part 1: the first step).

The export, the status sync, the stock sync and the tasks name no platform module: they take
the shared types from ``storefronts.base`` and the platform's classes from the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from order_integration.exceptions import ConfigError
from order_integration.storefronts import (
    PLATFORMS,
    get_client,
    get_normaliser,
    get_status_applier,
    get_stock_client,
    get_webhook_verifier,
)

pytestmark = pytest.mark.unit

LIBRARY = Path(__file__).resolve().parents[2] / "include" / "order_integration"
NEUTRAL = ("export.py", "status_sync.py", "inventory.py", "tasks.py", "on_demand.py", "quarantine.py",
           "storefronts/base.py", "storefronts/http.py", "storefronts/normalise.py", "storefronts/__init__.py",
           "storefronts/window.py", "storefronts/webhook.py", "webhooks.py", "webhooks_http.py")


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("name", NEUTRAL)
def test_platform_neutral_modules_import_no_platform_module(name):
    platform_modules = {module for roles in PLATFORMS.values() for module, _cls in roles.values()}
    imported = _imported_modules(LIBRARY / name)
    assert not imported & platform_modules, f"{name} imports {sorted(imported & platform_modules)}"
    assert not any(m.startswith("order_integration.storefronts.") and m.split(".")[-1].startswith(tuple(PLATFORMS))
                   for m in imported), f"{name} imports a platform module: {sorted(imported)}"


def test_the_registry_gives_each_role_of_a_platform():
    assert type(get_client("woocommerce", "storefront_x")).__name__ == "WooCommerceClient"
    assert type(get_status_applier("woocommerce", "storefront_x")).__name__ == "WooCommerceWriter"
    assert type(get_stock_client("woocommerce", "storefront_x")).__name__ == "WooCommerceStock"
    assert type(get_normaliser("woocommerce")).__name__ == "WooCommerceNormaliser"
    assert type(get_webhook_verifier("woocommerce", "s")).__name__ == "WooCommerceWebhook"
    for factory in (get_client, get_status_applier, get_stock_client, get_webhook_verifier):
        with pytest.raises(ConfigError, match="unknown storefront platform 'magento'; known: shopify, woocommerce"):
            factory("magento", "storefront_x")


def test_every_platform_offers_every_role_and_the_tests_cover_each():
    from tests.support.platforms import PLATFORMS as TESTED

    for platform, roles in PLATFORMS.items():
        assert set(roles) == {"orders", "normalise", "status", "stock", "webhook"}, platform
    assert set(TESTED) == set(PLATFORMS), "tests.support.platforms needs a kit for every platform"
    assert type(get_normaliser("shopify")).__name__ == "ShopifyNormaliser"
    assert type(get_webhook_verifier("shopify", "s")).__name__ == "ShopifyWebhook"


def test_a_platform_lacking_a_role_says_which(monkeypatch):
    monkeypatch.setitem(PLATFORMS, "partial", {"orders": PLATFORMS["woocommerce"]["orders"]})
    with pytest.raises(ConfigError, match="storefront platform 'partial' offers no 'stock' \\(it offers: orders\\)"):
        get_stock_client("partial", "storefront_x")
