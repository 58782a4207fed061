"""Storefront clients, chosen by platform name.

Platform modules are imported only when asked for, so importing this package (for example
while a DAG file is parsed) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

from order_integration.exceptions import ConfigError
from order_integration.storefronts.base import PageProgress, StorefrontClient, StorefrontRequestRejected

__all__ = ["PLATFORMS", "PageProgress", "StorefrontClient", "StorefrontRequestRejected", "get_client"]

#: platform name → (module, class)
PLATFORMS: dict[str, tuple[str, str]] = {
    "woocommerce": ("order_integration.storefronts.woocommerce", "WooCommerceClient"),
}


def get_client(platform: str, conn_id: str, **kwargs: Any) -> StorefrontClient:
    """The client for ``platform`` reading through Airflow connection ``conn_id``.

    ``kwargs`` go to the client's constructor (``per_page``, ``max_attempts``, ``on_page``...).
    An unknown platform raises :class:`ConfigError` naming the known ones.
    """
    try:
        module_name, class_name = PLATFORMS[platform]
    except (KeyError, TypeError):
        known = ", ".join(sorted(PLATFORMS))
        raise ConfigError(f"unknown storefront platform {platform!r}; known: {known}") from None
    client_class = getattr(importlib.import_module(module_name), class_name)
    return client_class(conn_id, **kwargs)
