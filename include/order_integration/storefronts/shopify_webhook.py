"""Shopify webhooks: verifying a delivery (:class:`ShopifyWebhook`).

What Shopify sends over HTTPS (shopify.dev, "Verify webhook deliveries" and the delivery
structure): the JSON of the resource, ``X-Shopify-Hmac-Sha256`` = base64(HMAC-SHA256(raw body,
the app's client secret)), ``X-Shopify-Topic`` (``orders/create``, ``orders/updated``,
``orders/paid``, ``orders/cancelled``, ``orders/delete``...), ``X-Shopify-Webhook-Id`` — the
same on every retry of one delivery, so duplicates are dropped on it — and
``X-Shopify-Shop-Domain`` (``<shop>.myshopify.com``). Shopify waits 5 seconds for an answer and
retries a failed delivery over the next hours.

One app can be installed on several shops and signs for all of them with its one secret, so a
signature alone does not say which shop a delivery is for: when the store's connection host is
a ``*.myshopify.com`` name, a delivery naming another shop is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from order_integration.ids import parse_order_id
from order_integration.storefronts.webhook import (
    WebhookDelivery,
    WebhookKind,
    WebhookRefusal,
    WebhookRefused,
    json_object,
    signature_matches,
)

ORDER_TOPIC_PREFIX = "orders/"
_ORDER_GID = re.compile(r"gid://shopify/Order/([0-9]{1,20})")


def _order_id(order: Mapping[str, Any]) -> int | None:
    """The order id of an ``orders/*`` body: ``id`` (a number), else ``admin_graphql_api_id``
    (``gid://shopify/Order/N``), else ``order_edit.order_id`` (``orders/edited``)."""
    found = parse_order_id(order.get("id"))
    if found is None and isinstance(gid := order.get("admin_graphql_api_id"), str):
        match = _ORDER_GID.fullmatch(gid)
        found = parse_order_id(match.group(1)) if match else None
    if found is None and isinstance(edit := order.get("order_edit"), dict):
        found = parse_order_id(edit.get("order_id"))
    return found


class ShopifyWebhook:
    """Verifies Shopify deliveries signed with ``secret``; ``host`` is the storefront
    connection's (``https://<shop>.myshopify.com``), whose shop a delivery must name."""

    def __init__(self, secret: str, *, host: str | None = None) -> None:
        if not secret:
            raise ValueError("a webhook secret is needed")
        self._secrets = (secret,)
        name = (urlsplit(host).hostname or "") if host and "://" in host else (host or "")
        self._shop = name.lower() if name.lower().endswith(".myshopify.com") else None

    def verify(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        signature = headers.get("x-shopify-hmac-sha256")
        if signature is None:
            raise WebhookRefused(WebhookRefusal.UNSIGNED, "no X-Shopify-Hmac-Sha256 header")
        if not signature_matches(self._secrets, body, signature):
            raise WebhookRefused(WebhookRefusal.BAD_SIGNATURE,
                                 "X-Shopify-Hmac-Sha256 does not match the body (wrong secret?)")
        topic = headers.get("x-shopify-topic", "").strip()
        delivery_id = headers.get("x-shopify-webhook-id", "").strip()
        shop = headers.get("x-shopify-shop-domain", "").strip().lower()
        if self._shop and shop and shop != self._shop:
            raise WebhookRefused(WebhookRefusal.WRONG_STORE,
                                 f"delivery for shop {shop!r}; this store's connection is {self._shop!r}")
        if not topic.startswith(ORDER_TOPIC_PREFIX):
            return WebhookDelivery(WebhookKind.IGNORED, topic, delivery_id,
                                   detail=f"topic {topic!r} is not an order topic" if topic else "no topic")
        order_id = _order_id(json_object(body))
        if order_id is None:
            raise WebhookRefused(WebhookRefusal.MALFORMED, f"{topic}: the body has no valid order id")
        return WebhookDelivery(WebhookKind.ORDER, topic, delivery_id, order_id)
