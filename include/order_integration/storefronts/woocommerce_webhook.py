"""WooCommerce webhooks: verifying a delivery (:class:`WooCommerceWebhook`).

What WooCommerce core sends (``WC_Webhook::deliver`` and ``deliver_ping`` in its
``includes/class-wc-webhook.php``):

* a delivery: ``POST`` of the JSON of the resource as the REST API returns it (``trim(
  wp_json_encode(payload))``; for ``order.deleted`` only ``{"id": N}``), with
  ``X-WC-Webhook-Signature`` = base64(HMAC-SHA256(body, secret)), ``X-WC-Webhook-Topic``
  (``order.created``...), ``X-WC-Webhook-Delivery-ID`` (a hash of the webhook id and the
  current *second*: not unique), ``X-WC-Webhook-ID``, ``-Source``, ``-Resource``, ``-Event``;
* a ping, when a webhook is saved active: ``POST`` of the form body ``webhook_id=<n>`` with
  none of those headers and no signature. WooCommerce keeps the webhook "pending delivery"
  until a ping is answered exactly 200.

WooCommerce signs with ``wp_specialchars_decode(secret, ENT_QUOTES)``: a secret stored with an
HTML entity (``&amp;``) signs with the decoded character, so both forms are tried.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from order_integration.ids import parse_order_id
from order_integration.storefronts.webhook import (
    WebhookDelivery,
    WebhookKind,
    WebhookRefusal,
    WebhookRefused,
    json_object,
    signature_matches,
)

#: The order topics the package records; any other signed topic is answered 200 and ignored.
ORDER_TOPICS = frozenset({"order.created", "order.updated", "order.deleted", "order.restored"})
_PING = re.compile(rb"webhook_id=([0-9]{1,20})")
#: ``wp_specialchars_decode(…, ENT_QUOTES)``'s entities; ``&amp;`` last, as WordPress does.
_WP_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#039;", "'"), ("&#x27;", "'"),
                ("&amp;", "&"))


def _wp_specialchars_decode(text: str) -> str:
    for entity, char in _WP_ENTITIES:
        text = text.replace(entity, char)
    return text


class WooCommerceWebhook:
    """Verifies WooCommerce deliveries signed with ``secret`` (``host`` is not needed: the
    secret is per webhook, and so per store)."""

    def __init__(self, secret: str, *, host: str | None = None) -> None:
        if not secret:
            raise ValueError("a webhook secret is needed")
        self._secrets = tuple(dict.fromkeys((secret, _wp_specialchars_decode(secret))))

    def verify(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        signature = headers.get("x-wc-webhook-signature")
        topic = headers.get("x-wc-webhook-topic", "").strip()
        if signature is None:
            ping = _PING.fullmatch(body.strip())
            if ping and not topic:
                return WebhookDelivery(WebhookKind.PING, detail=f"webhook {int(ping.group(1))}")
            raise WebhookRefused(WebhookRefusal.UNSIGNED, "no X-WC-Webhook-Signature header")
        if not signature_matches(self._secrets, body, signature):
            raise WebhookRefused(WebhookRefusal.BAD_SIGNATURE,
                                 "X-WC-Webhook-Signature does not match the body (wrong secret?)")
        delivery_id = headers.get("x-wc-webhook-delivery-id", "").strip()
        if topic not in ORDER_TOPICS:
            return WebhookDelivery(WebhookKind.IGNORED, topic, delivery_id,
                                   detail=f"topic {topic!r} is not an order topic" if topic else "no topic")
        order = json_object(body)
        order_id = parse_order_id(order.get("id"))
        if order_id is None:
            raise WebhookRefused(WebhookRefusal.MALFORMED, f"{topic}: the body has no valid order 'id'")
        return WebhookDelivery(WebhookKind.ORDER, topic, delivery_id, order_id)
