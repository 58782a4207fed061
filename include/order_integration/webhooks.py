"""The webhook receiver (real-time mode): one storefront delivery in, one answer out.

``POST <api-server>/order-integration/webhooks/<store_id>`` (DESIGN.md, "Webhooks") is served
by the package's plugin on Airflow's api-server (:mod:`order_integration.webhooks_http` is the
HTTP side); everything it decides is decided here, by :meth:`Receiver.receive`:

=====  =========================================================================
200    recorded in the inbox (or a duplicate of a recorded delivery), a ping,
       or a signed delivery of a topic the package does not use
400    signed, but not an order topic's JSON with an order id; or for another shop
401    no signature, or a wrong one (wrong secret, body changed on the way)
404    no store with that id in the store config
413    body over :data:`MAX_BODY_BYTES`
503    the delivery could not be recorded (ledger unreachable or behind, the
       connection or its ``extra.webhook_secret`` missing): the storefront retries
=====  =========================================================================

A verified order delivery is written to the ledger's ``webhook_inbox`` before the answer is
sent (durable before acknowledged); a duplicate is the same delivery id and the same body, and
is recorded once. The store config is read at request time (a changed file needs no restart),
and so is the store's storefront connection, through Airflow's connection API.

One log line per delivery: store, topic, order id, delivery id, outcome and status — never the
body, never the secret.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from order_integration.config import Config, StoreConfig, load_config
from order_integration.exceptions import ConfigError

if TYPE_CHECKING:
    from order_integration.ledger.webhook_inbox import WebhookInbox
    from order_integration.storefronts.webhook import WebhookDelivery

log = logging.getLogger(__name__)

#: The URL prefix the plugin mounts the receiver's app under, and the route inside it.
URL_PREFIX = "/order-integration"
ROUTE = "/webhooks/{store_id}"
#: The largest body accepted (1 MiB). A WooCommerce or Shopify order with a hundred lines is
#: well under 200 KiB; a larger delivery is answered 413 and its order is left to the scheduled
#: window (the safety net). The HTTP side stops reading at this size.
MAX_BODY_BYTES = 1024 * 1024
#: Longest delivery id and topic kept as sent (the inbox's columns); a longer id is kept as its
#: sha256, so distinct ids stay distinct.
_MAX_DELIVERY_ID = 128
_MAX_TOPIC = 64


class Outcome(Enum):
    """What became of one delivery (the log line's ``outcome``, the answer's ``outcome``)."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    PING = "ping"
    IGNORED = "ignored"
    UNKNOWN_STORE = "unknown_store"
    TOO_LARGE = "too_large"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    MALFORMED = "malformed"
    WRONG_STORE = "wrong_store"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Answer:
    """The HTTP answer: status and a small JSON body (``outcome``, and ``order_id`` or ``detail``)."""

    status: int
    body: dict[str, Any]


class ReceiverUnavailable(Exception):
    """The delivery cannot be recorded now (ledger, connection, secret): answered 503."""


@dataclass(frozen=True, slots=True)
class StorefrontConnection:
    """What the receiver needs of a storefront connection: its host and its extras."""

    host: str | None
    extra: Mapping[str, Any]


def airflow_connection(conn_id: str) -> StorefrontConnection:
    """The connection from Airflow at request time (metastore, env vars, secrets backends)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ReceiverUnavailable(f"storefront connection {conn_id!r} is not defined") from None
    try:
        extra = conn.extra_dejson
    except Exception:  # extra that is not JSON: Airflow logs it; no secret to be had
        extra = {}
    return StorefrontConnection(conn.host, extra if isinstance(extra, dict) else {})


class _AirflowInbox:
    """The inbox over the ledger Airflow configures, made on first use and kept; forgotten after
    a failure, so a ledger that comes back (or a fixed connection) is picked up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inbox: WebhookInbox | None = None

    def __call__(self) -> WebhookInbox:
        with self._lock:
            if self._inbox is None:
                from order_integration.ledger import WebhookInbox, check_schema, engine_from_airflow

                engine = engine_from_airflow()
                check_schema(engine)
                self._inbox = WebhookInbox(engine)
            return self._inbox

    def forget(self) -> None:
        with self._lock:
            self._inbox = None


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _delivery_id(value: str) -> str:
    return value if len(value) <= _MAX_DELIVERY_ID else _digest(value.encode("utf-8", "replace"))


@dataclass
class Receiver:
    """Decides every delivery (see the module docstring). Its collaborators are plain callables,
    so tests give it a config, connections and an inbox of their own."""

    config: Callable[[], Config] = load_config
    connection: Callable[[str], StorefrontConnection] = airflow_connection
    inbox: Callable[[], WebhookInbox] = field(default_factory=_AirflowInbox)
    max_body: int = MAX_BODY_BYTES

    def store(self, store_id: str) -> StoreConfig | None:
        """The store with that id, None when the config has none (or the config is unreadable:
        :class:`ReceiverUnavailable`)."""
        try:
            stores = self.config().stores
        except ConfigError as exc:
            raise ReceiverUnavailable(f"store config unreadable: {exc}") from exc
        return next((s for s in stores if s.id == store_id), None)

    def receive(self, store_id: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Verify, record and answer one delivery (``headers`` in any case)."""
        store = self._known_store(store_id)
        if isinstance(store, Answer):
            return store
        if len(body) > self.max_body:
            return self._too_large(store_id)
        try:
            verifier = self._verifier(store)
        except ReceiverUnavailable as exc:
            return self._unavailable(store_id, exc)
        lowered = {str(k).lower(): str(v) for k, v in headers.items()}
        return self._verified(store, verifier, lowered, body)

    def oversize(self, store_id: str) -> Answer:
        """The answer to a body over :attr:`max_body` (the HTTP side stops reading it): 413, or
        404 for an unknown store."""
        store = self._known_store(store_id)
        return store if isinstance(store, Answer) else self._too_large(store_id)

    def _known_store(self, store_id: str) -> StoreConfig | Answer:
        """The store, or the answer when there is none (404) or the config is unreadable (503)."""
        try:
            store = self.store(store_id)
        except ReceiverUnavailable as exc:
            return self._unavailable(store_id, exc)
        if store is None:
            return self._answer(store_id, None, Outcome.UNKNOWN_STORE, 404, detail="unknown store")
        return store

    def _too_large(self, store_id: str) -> Answer:
        return self._answer(store_id, None, Outcome.TOO_LARGE, 413, detail=f"body over {self.max_body} bytes",
                            level=logging.WARNING)

    def _verifier(self, store: StoreConfig) -> Any:
        from order_integration.storefronts import get_webhook_verifier

        try:
            conn = self.connection(store.storefront_conn_id)
        except ReceiverUnavailable:
            raise
        except Exception as exc:  # the metastore or a secrets backend is down: retry later
            raise ReceiverUnavailable(f"storefront connection {store.storefront_conn_id!r} "
                                      f"unreadable: {type(exc).__name__}") from exc
        secret = conn.extra.get("webhook_secret")
        if not isinstance(secret, str) or not secret:
            raise ReceiverUnavailable(f"storefront connection {store.storefront_conn_id!r} has no "
                                      "extra.webhook_secret")
        return get_webhook_verifier(store.platform, secret, host=conn.host)

    def _verified(self, store: StoreConfig, verifier: Any, headers: Mapping[str, str], body: bytes) -> Answer:
        from order_integration.storefronts.webhook import WebhookKind, WebhookRefused

        try:
            delivery = verifier.verify(headers, body)
        except WebhookRefused as refused:
            return self._answer(store.id, None, Outcome(refused.refusal.value), refused.refusal.status,
                                detail=refused.reason, level=logging.WARNING)
        if delivery.kind is WebhookKind.PING:
            return self._answer(store.id, delivery, Outcome.PING, 200, detail=delivery.detail)
        if delivery.kind is WebhookKind.IGNORED:
            return self._answer(store.id, delivery, Outcome.IGNORED, 200, detail=delivery.detail)
        return self._record(store.id, delivery, body)

    def _record(self, store_id: str, delivery: WebhookDelivery, body: bytes) -> Answer:
        from order_integration.ledger.webhook_inbox import InboxDelivery

        row = InboxDelivery(store_id, str(delivery.order_id), delivery.topic[:_MAX_TOPIC],
                            _delivery_id(delivery.delivery_id), _digest(body))
        try:
            new = self.inbox().record(row)
        except Exception as exc:  # the ledger is down, locked past its timeout, or behind
            forget = getattr(self.inbox, "forget", None)
            if forget is not None:
                forget()
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            return self._answer(store_id, delivery, Outcome.UNAVAILABLE, 503,
                                detail=f"not recorded: {reason}", level=logging.ERROR)
        outcome = Outcome.RECORDED if new else Outcome.DUPLICATE
        return self._answer(store_id, delivery, outcome, 200)

    def _unavailable(self, store_id: str, exc: ReceiverUnavailable) -> Answer:
        return self._answer(store_id, None, Outcome.UNAVAILABLE, 503, detail=str(exc), level=logging.ERROR)

    @staticmethod
    def _answer(store_id: str, delivery: WebhookDelivery | None, outcome: Outcome, status: int, *,
                detail: str = "", level: int = logging.INFO) -> Answer:
        topic = delivery.topic if delivery else ""
        order_id = delivery.order_id if delivery else None
        delivery_id = delivery.delivery_id if delivery else ""
        log.log(level, "webhook store=%s topic=%s order=%s delivery=%s outcome=%s status=%d%s",
                store_id, topic or "-", order_id or "-", delivery_id or "-", outcome.value, status,
                f" ({detail})" if detail else "")
        body: dict[str, Any] = {"outcome": outcome.value}
        if order_id is not None:
            body["order_id"] = order_id
        if status == 503:  # the reason (connection names, ledger URL) is for the log, not the caller
            body["detail"] = "not recorded now; send it again later"
        elif detail and status >= 400:
            body["detail"] = detail
        return Answer(status, body)


_DEFAULT: Receiver | None = None
_DEFAULT_LOCK = threading.Lock()


def default_receiver() -> Receiver:
    """The process's receiver: the store config from ``ORDER_INTEGRATION_CONFIG``, connections
    from Airflow, the ledger Airflow configures."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Receiver()
        return _DEFAULT


def receive(store_id: str, headers: Mapping[str, str], raw_body: bytes) -> tuple[int, dict[str, Any]]:
    """One delivery through the process's receiver: ``(status, JSON body)``."""
    answer = default_receiver().receive(store_id, headers, raw_body)
    return answer.status, answer.body
