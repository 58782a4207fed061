"""Storefront clients, chosen by platform name.

Platform modules are imported only when asked for, so importing this package (for example
while a DAG file is parsed) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

from order_integration.exceptions import ConfigError
from order_integration.storefronts.base import (
    Normaliser,
    PageProgress,
    StatusApplier,
    StockClient,
    StorefrontClient,
    StorefrontRequestRejected,
)
from order_integration.storefronts.webhook import WebhookVerifier

__all__ = ["PLATFORMS", "PageProgress", "StorefrontClient", "StorefrontRequestRejected", "get_client",
           "get_normaliser", "get_status_applier", "get_stock_client", "get_webhook_verifier"]

#: platform name → what it offers → (module, class). ``orders``, ``status`` and ``stock`` classes
#: take the Airflow connection id first; the writers are context managers (their HTTP session
#: closes on exit). ``normalise`` is the normaliser alone: no connection, no HTTP. ``webhook``
#: verifies the platform's webhook deliveries; it takes the webhook secret, not a connection id.
PLATFORMS: dict[str, dict[str, tuple[str, str]]] = {
    "woocommerce": {
        "orders": ("order_integration.storefronts.woocommerce", "WooCommerceClient"),
        "normalise": ("order_integration.storefronts.woocommerce_normalise", "WooCommerceNormaliser"),
        "status": ("order_integration.storefronts.woocommerce_writes", "WooCommerceWriter"),
        "stock": ("order_integration.storefronts.woocommerce_products", "WooCommerceStock"),
        "webhook": ("order_integration.storefronts.woocommerce_webhook", "WooCommerceWebhook"),
    },
    "shopify": {
        "orders": ("order_integration.storefronts.shopify", "ShopifyClient"),
        "normalise": ("order_integration.storefronts.shopify_normalise", "ShopifyNormaliser"),
        "status": ("order_integration.storefronts.shopify_status", "ShopifyStatus"),
        "stock": ("order_integration.storefronts.shopify_stock", "ShopifyStock"),
        "webhook": ("order_integration.storefronts.shopify_webhook", "ShopifyWebhook"),
    },
}


def _platform_class(platform: str, role: str) -> Any:
    try:
        roles = PLATFORMS[platform]
    except (KeyError, TypeError):
        known = ", ".join(sorted(PLATFORMS))
        raise ConfigError(f"unknown storefront platform {platform!r}; known: {known}") from None
    try:
        module_name, class_name = roles[role]
    except KeyError:
        offered = ", ".join(sorted(roles))
        raise ConfigError(
            f"storefront platform {platform!r} offers no {role!r} (it offers: {offered})"
        ) from None
    return getattr(importlib.import_module(module_name), class_name)


def get_client(platform: str, conn_id: str, **kwargs: Any) -> StorefrontClient:
    """The client for ``platform`` reading through Airflow connection ``conn_id``.

    ``kwargs`` go to the client's constructor (``per_page``, ``max_attempts``, ``on_page``...).
    An unknown platform raises :class:`ConfigError` naming the known ones.
    """
    return _platform_class(platform, "orders")(conn_id, **kwargs)


def get_normaliser(platform: str) -> Normaliser:
    """What turns ``platform``'s raw orders into canonical ones (validation needs nothing else)."""
    return _platform_class(platform, "normalise")()


def get_status_applier(platform: str, conn_id: str, **kwargs: Any) -> StatusApplier:
    """What the status sync applies events through (a context manager), for ``platform``."""
    return _platform_class(platform, "status")(conn_id, **kwargs)


def get_stock_client(platform: str, conn_id: str, **kwargs: Any) -> StockClient:
    """What the stock sync reads and writes stock levels through (a context manager)."""
    return _platform_class(platform, "stock")(conn_id, **kwargs)


def get_webhook_verifier(platform: str, secret: str, *, host: str | None = None) -> WebhookVerifier:
    """What verifies ``platform``'s webhook deliveries signed with ``secret`` (``host``: the
    storefront connection's, for a platform whose deliveries name their shop)."""
    return _platform_class(platform, "webhook")(secret, host=host)
