"""The webhook interface: what the receiver (:mod:`order_integration.webhooks`) needs from a
platform to turn one HTTP delivery into a verified fact — "order N changed" — or a refusal.

Each platform module implements :class:`WebhookVerifier` and is chosen by the registry
(``PLATFORMS[platform]["webhook"]``, :func:`order_integration.storefronts.get_webhook_verifier`).
A verifier is pure: no I/O, no Airflow; it gets the secret (``extra.webhook_secret`` of the
store's storefront connection) when it is made and the request's headers and raw body when it
verifies. It checks the signature over the raw bytes before it reads anything else, so nothing
of an unsigned body is parsed.

Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

__all__ = ["WebhookDelivery", "WebhookKind", "WebhookRefusal", "WebhookRefused", "WebhookVerifier",
           "json_object", "signature_matches"]


class WebhookKind(Enum):
    """What a verified delivery is."""

    ORDER = "order"  # an order topic: the order with ``order_id`` changed (the inbox records it)
    PING = "ping"  # the platform checking the URL (WooCommerce, when a webhook is saved): answered 200
    IGNORED = "ignored"  # signed, but a topic the package does not use (a product webhook): answered 200


class WebhookRefusal(Enum):
    """Why a delivery is refused, with the HTTP status the receiver answers."""

    UNSIGNED = "unsigned"  # no signature header
    BAD_SIGNATURE = "bad_signature"  # wrong secret or a body changed on the way
    MALFORMED = "malformed"  # signed, but not the JSON of an order topic with an order id
    WRONG_STORE = "wrong_store"  # signed for another shop than this store's connection

    @property
    def status(self) -> int:
        return 401 if self in (WebhookRefusal.UNSIGNED, WebhookRefusal.BAD_SIGNATURE) else 400


class WebhookRefused(Exception):
    """The delivery is refused; ``reason`` names why and never quotes the body or the secret."""

    def __init__(self, refusal: WebhookRefusal, reason: str) -> None:
        super().__init__(reason)
        self.refusal = refusal
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """A verified delivery. ``topic`` is the platform's own (``order.updated``,
    ``orders/paid``; '' for a ping); ``delivery_id`` the platform's delivery id header ('' when
    it sent none); ``order_id`` is set for :attr:`WebhookKind.ORDER`; ``detail`` says why a
    delivery is ignored, or which webhook pinged."""

    kind: WebhookKind
    topic: str = ""
    delivery_id: str = ""
    order_id: int | None = None
    detail: str = ""


class WebhookVerifier(Protocol):
    """One platform's webhook rules. Made with the store's webhook secret (and the storefront
    connection's ``host``, for a platform that names its shop in a header)."""

    def verify(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        """The verified delivery, or :class:`WebhookRefused`. ``headers`` have lower-case names."""
        ...


def signature_matches(secrets: tuple[str, ...], body: bytes, signature: str) -> bool:
    """Whether ``signature`` is base64(HMAC-SHA256(body)) under one of ``secrets``, compared in
    constant time (as bytes: a header that is not base64 or not ASCII simply does not match)."""
    try:
        given = base64.b64decode(signature.strip().encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return False
    matched = False
    for secret in secrets:  # every candidate is computed: the time does not say which one matched
        expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, given)
    return matched


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or :class:`WebhookRefused` (malformed) saying what it is not."""
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise WebhookRefused(WebhookRefusal.MALFORMED, "body is not UTF-8") from None
    except (ValueError, RecursionError):
        raise WebhookRefused(WebhookRefusal.MALFORMED, "body is not valid JSON") from None
    if not isinstance(value, dict):
        raise WebhookRefused(WebhookRefusal.MALFORMED, f"body is JSON but a {type(value).__name__}, "
                                                       "not an object")
    return value
