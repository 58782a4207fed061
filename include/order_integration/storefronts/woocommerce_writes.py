"""Writes to a WooCommerce store (REST API v3): order status, order notes, batch updates,
payments (``set_paid``/``transaction_id``) and refunds (``POST /orders/{id}/refunds``).

Same connection contract, session, TLS rules, retries and error mapping as the read client
(:class:`~order_integration.storefronts.woocommerce.WooCommerceClient`, which this class
extends, so it can read orders too): 401/403 → ``StorefrontAuthError``; 404 for an order id
→ :class:`OrderNotFound`; other 4xx → ``StorefrontRequestRejected``; 429/503 wait
``Retry-After``; 5xx, 408, timeouts, connection errors and an unparseable 2xx body are
retried with exponential backoff, then ``StorefrontError``.

Retrying writes
---------------
Setting a status (``PUT`` or a batch update) is idempotent: repeating it changes nothing, so
it is retried like a read. Adding a note is not: a request that timed out may have been
stored. So before every retry of :meth:`WooCommerceWriter.add_note` the order's notes are
listed and an identical note (same text, same kind) counts as success instead of being
posted twice — and customers are e-mailed for every customer note. Creating a refund is
not idempotent either: before every retry of :meth:`WooCommerceWriter.create_refund` the
order's refunds are listed and one carrying the same reference counts as success.

One ``requests`` session serves every call until :meth:`WooCommerceWriter.close` (or the end
of a ``with`` block); it is opened on the first call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import requests

from order_integration.currency import format_money
from order_integration.exceptions import ConfigError, StorefrontError
from order_integration.failpoints import failpoint
from order_integration.ids import MAX_ORDER_ID, parse_order_id
from order_integration.storefronts.base import (
    BatchItemResult,
    Effect,
    OrderNotFound,
    OrderState,
    StatusChange,
    StorefrontRequestRejected,
    same_note,
)
from order_integration.storefronts.http import TransientError
from order_integration.storefronts.woocommerce import MAX_PER_PAGE, ORDERS_ENDPOINT, WooCommerceClient
from order_integration.storefronts.woocommerce_status import (
    NEEDS_PAYMENT,
    REFERENCE_META,
    add_refunds,
    decide,
    order_state,
    reason_text,
    refund_line_items,
)

if TYPE_CHECKING:
    from airflow.providers.http.hooks.http import HttpHook

    from order_integration.backend.status_files import StatusEvent

log = logging.getLogger(__name__)

#: WooCommerce's limit of items per ``/batch`` request.
MAX_BATCH = 100
_INVALID_ID = "woocommerce_rest_shop_order_invalid_id"


def _order_id(value: object) -> int:
    """A WooCommerce order id (an ``int`` or ASCII digits, :func:`~order_integration.ids.parse_order_id`);
    refused before it reaches a URL or a request body."""
    number = parse_order_id(value)
    if number is None:
        raise ValueError(f"order id {value!r} is not an order id (ASCII digits 1..{MAX_ORDER_ID})")
    return number


def _before_retries(find: Callable[[], dict[str, Any] | None]) -> Callable[[], dict[str, Any] | None]:
    """A ``before_attempt`` for a write that is not idempotent: nothing before the first attempt,
    and before each retry ``find`` looks for what an earlier attempt may have stored (its
    answer, when found, ends the call instead of writing again)."""
    attempts = 0

    def check() -> dict[str, Any] | None:
        nonlocal attempts
        attempts += 1
        return None if attempts == 1 else find()

    return check


class WooCommerceWriter(WooCommerceClient):
    """Changes orders of one WooCommerce store through an Airflow ``http`` connection."""

    #: The money events this applier carries out (see ``StatusApplier``).
    money_events = frozenset({"paid", "refunded"})

    def __init__(
        self,
        conn_id: str,
        *,
        max_attempts: int = 6,
        max_wait_seconds: float = 60,
        timeout: float = 60,
        batch_size: int = MAX_BATCH,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """
        :param conn_id: Airflow ``http`` connection (see the read client's module docstring).
        :param max_attempts: tries per request before giving up with ``StorefrontError``.
        :param max_wait_seconds: cap of one wait (``Retry-After`` or backoff).
        :param timeout: seconds for connect and for each read.
        :param batch_size: items per ``/orders/batch`` request, 1..100.
        :param sleep: how to wait between attempts (injected by tests).
        """
        super().__init__(conn_id, max_attempts=max_attempts, max_wait_seconds=max_wait_seconds,
                         timeout=timeout, sleep=sleep)
        if not 1 <= batch_size <= MAX_BATCH:
            raise ConfigError(f"batch_size must be within 1..{MAX_BATCH}, got {batch_size}")
        self.batch_size = batch_size
        self._conn: tuple[HttpHook, requests.Session] | None = None

    # -- session ---------------------------------------------------------------------------

    def __enter__(self) -> WooCommerceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session (a later call opens a new one)."""
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    def _session(self) -> tuple[HttpHook, requests.Session]:
        if self._conn is None:
            hook, session, _url = self._open_session(ORDERS_ENDPOINT)
            self._conn = (hook, session)
        return self._conn

    # -- reads -----------------------------------------------------------------------------

    def get_order(self, order_id: int | str) -> dict[str, Any]:
        """The order as the API returns it; :class:`OrderNotFound` when the store has none."""
        oid = _order_id(order_id)
        body = self._request("GET", f"{ORDERS_ENDPOINT}/{oid}", what=f"get order {oid}", order_id=oid)
        if not isinstance(body, dict):
            raise StorefrontError(f"woocommerce {self._host}: order {oid} answer is not a JSON object")
        return body

    def get_orders(self, order_ids: Iterable[int | str]) -> dict[int, dict[str, Any]]:
        """id -> order for those of ``order_ids`` the store has (missing ids are absent).

        One ``GET /orders?include=…`` per 100 ids instead of one request per order."""
        ids = sorted({_order_id(o) for o in order_ids})
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), MAX_PER_PAGE):
            chunk = ids[start : start + MAX_PER_PAGE]
            params = {"include": ",".join(map(str, chunk)), "per_page": str(MAX_PER_PAGE), "page": "1",
                      "status": "any", "orderby": "id", "order": "asc"}
            body = self._request("GET", ORDERS_ENDPOINT, params=params, what=f"get {len(chunk)} orders")
            if not isinstance(body, list):
                raise StorefrontError(f"woocommerce {self._host}: the orders list is not a JSON list")
            wanted = set(chunk)
            for row in body:
                oid = row.get("id") if isinstance(row, dict) else None
                if isinstance(oid, int) and oid in wanted:  # a plugin ignoring include= adds nothing
                    found[oid] = row
        return found

    def list_notes(self, order_id: int | str) -> list[dict[str, Any]]:
        """The order's notes, newest first (WooCommerce does not page them)."""
        oid = _order_id(order_id)
        body = self._request("GET", f"{ORDERS_ENDPOINT}/{oid}/notes", what=f"list notes of order {oid}",
                             order_id=oid)
        if not isinstance(body, list):
            raise StorefrontError(f"woocommerce {self._host}: notes of order {oid} are not a JSON list")
        return body

    def list_refunds(self, order_id: int | str) -> list[dict[str, Any]]:
        """The order's refunds (``GET /orders/{id}/refunds``, at most 100: more refunds than that
        on one order is no shop's practice), with their meta data and line items."""
        oid = _order_id(order_id)
        body = self._request("GET", f"{ORDERS_ENDPOINT}/{oid}/refunds",
                             params={"per_page": str(MAX_PER_PAGE)}, what=f"list refunds of order {oid}",
                             order_id=oid)
        if not isinstance(body, list):
            raise StorefrontError(f"woocommerce {self._host}: refunds of order {oid} are not a JSON list")
        return [r for r in body if isinstance(r, dict)]

    # -- writes ----------------------------------------------------------------------------

    def update_status(self, order_id: int | str, status: str) -> dict[str, Any]:
        """Set the order's status (``PUT /orders/{id}``); returns the updated order."""
        return self.update_order(order_id, {"status": status})

    def update_order(self, order_id: int | str, fields: dict[str, Any]) -> dict[str, Any]:
        """Set order fields (``PUT /orders/{id}``: ``status``, ``set_paid``, ``transaction_id``);
        returns the updated order. Idempotent, so retried like a read."""
        oid = _order_id(order_id)
        body = self._request("PUT", f"{ORDERS_ENDPOINT}/{oid}", body=fields,
                             what=f"update order {oid} ({', '.join(sorted(fields))})", order_id=oid)
        return body if isinstance(body, dict) else {}

    def create_refund(self, order_id: int | str, refund: dict[str, Any], reference: str) -> dict[str, Any]:
        """Create a refund (``POST /orders/{id}/refunds``; ``refund`` is the request body, which
        must carry ``reference`` under :data:`REFERENCE_META`). Never creates it twice because of
        a retry: before each retry the order's refunds are listed and one with the reference is
        the result."""
        oid = _order_id(order_id)

        def already_there() -> dict[str, Any] | None:
            for existing in self.list_refunds(oid):
                if any(isinstance(m, dict) and m.get("key") == REFERENCE_META and m.get("value") == reference
                       for m in existing.get("meta_data") or []):
                    log.info("woocommerce %s: refund %s of order %d was stored by an earlier attempt",
                             self._host, reference, oid)
                    return existing
            return None

        body = self._request("POST", f"{ORDERS_ENDPOINT}/{oid}/refunds", body=refund,
                             what=f"refund {refund.get('amount')} on order {oid}", order_id=oid,
                             before_attempt=_before_retries(already_there))
        return body if isinstance(body, dict) else {}

    def add_note(self, order_id: int | str, note: str, customer_note: bool) -> dict[str, Any]:
        """Add a note (``POST /orders/{id}/notes``); ``customer_note`` e-mails it to the customer.

        Never posts the same note twice because of a retry (see the module docstring); returns
        the created note, or the identical one found on the order."""
        oid = _order_id(order_id)
        if not note.strip():
            raise ValueError("a note needs text")

        def already_there() -> dict[str, Any] | None:
            for existing in self.list_notes(oid):
                if bool(existing.get("customer_note")) == customer_note and same_note(
                    str(existing.get("note", "")), note
                ):
                    log.info("woocommerce %s: note on order %d was stored by an earlier attempt",
                             self._host, oid)
                    return existing
            return None

        body = self._request("POST", f"{ORDERS_ENDPOINT}/{oid}/notes",
                             body={"note": note, "customer_note": customer_note},
                             what=f"add a note to order {oid}", order_id=oid,
                             before_attempt=_before_retries(already_there))
        return body if isinstance(body, dict) else {}

    def batch_update(self, updates: Sequence[dict[str, Any]]) -> list[BatchItemResult]:
        """Update many orders (``POST /orders/batch``, ``batch_size`` items per request).

        Each update is a dict with ``id`` and the fields to set (``{"id": 7, "status":
        "completed"}``). Returns one result per update, in input order; an item WooCommerce
        refused has ``error_code``/``error_message`` (the others are applied regardless)."""
        items = [{**u, "id": _order_id(u.get("id"))} for u in updates]
        results: list[BatchItemResult] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            body = self._request("POST", f"{ORDERS_ENDPOINT}/batch", body={"update": chunk},
                                 what=f"batch update of {len(chunk)} orders")
            results.extend(self._batch_results(chunk, body))
        failed = sum(not r.ok for r in results)
        log.info("woocommerce %s: batch updated %d orders (%d refused)", self._host, len(results) - failed,
                 failed)
        return results

    def _batch_results(self, chunk: list[dict[str, Any]], body: Any) -> list[BatchItemResult]:
        answers = body.get("update") if isinstance(body, dict) else None
        if not isinstance(answers, list) or len(answers) != len(chunk):
            # The items may be applied or not: setting them again is harmless, so the caller's
            # retry (a new run) is safe; we cannot tell which succeeded.
            raise StorefrontError(
                f"woocommerce {self._host}: batch answer does not list {len(chunk)} updates: "
                f"{json.dumps(body)[:200]}"
            )
        results = []
        for item, answer in zip(chunk, answers, strict=True):
            if not isinstance(answer, dict):
                results.append(BatchItemResult(item["id"], error_code="invalid_answer",
                                               error_message=repr(answer)[:200]))
                continue
            error = answer.get("error")
            if error:
                error = error if isinstance(error, dict) else {"message": str(error)}
                results.append(BatchItemResult(item["id"], error_code=str(error.get("code", "")),
                                               error_message=str(error.get("message", "")),
                                               not_found=error.get("code") == _INVALID_ID))
            else:
                results.append(BatchItemResult(item["id"], order=answer))
        return results

    # -- the status sync's interface (StatusApplier) -----------------------------------------

    def read_orders(self, order_ids: Sequence[int]) -> dict[int, OrderState]:
        """The status sync's view of these orders (one ``GET /orders?include=`` per 100)."""
        return {oid: order_state(raw) for oid, raw in self.get_orders(order_ids).items()}

    def decide(
        self, event: StatusEvent, order: OrderState, note: str, *, fully_shipped: bool
    ) -> Effect | str:
        """WooCommerce's status machine (:mod:`~order_integration.storefronts.woocommerce_status`).

        One refusal is recognised as ours instead: a ``cancelled`` event meeting a cancelled
        order that carries the event's note — we cancelled it and stopped before the ledger row."""
        if event.event == "refunded" and "refunds" not in order.cache:
            # the refunds' meta (our reference) and refunded units: one request per order
            order.cache["refunds"] = self.list_refunds(order.order_id)
            add_refunds(order, order.cache["refunds"])
        status_before = order.status
        effect = decide(event, order, fully_shipped=fully_shipped)
        if event.event == "paid" and not isinstance(effect, str) and effect.target and not effect.recovered:
            # set_paid completes a payment only where WooCommerce wants one; on-hold needs the status
            fields: dict[str, Any] = (
                {"set_paid": True} if status_before in NEEDS_PAYMENT else {"status": effect.target})
            order.cache[("paid", event.event_key)] = {**fields, "transaction_id": event.reference}
        if event.event == "refunded" and event.sku is not None and event.quantity is not None:
            # decided before the status sync books this refund: the units refunded before it
            lines = self._refund_lines(order, event.sku, event.quantity)
            order.cache[("refund_lines", event.event_key)] = lines
        if (isinstance(effect, str) and event.event == "cancelled" and order.status == "cancelled"
                and self._has_note(order, note, customer=False)):
            return Effect("cancelled", recovered=True)
        return effect

    def apply(self, changes: Sequence[StatusChange], *, store_id: str, batch_threshold: int) -> None:
        """One wave: the notes first (WooCommerce has no batch endpoint for notes; a note already
        on the order is not posted again and marks the change recovered when the order already
        has its status), then the status changes — ``POST /orders/batch`` from
        ``batch_threshold`` changes, else one ``PUT`` each. The note first, the status last: a
        run that stops in between still sees the old status next time and completes the event.

        A refund is created before its note (a note must not claim a refund WooCommerce refused);
        WooCommerce itself moves a fully refunded order to ``refunded``. A payment is a field
        update like a status (``set_paid``/``status`` with ``transaction_id``)."""
        for change in changes:
            if change.event.event == "refunded" and not change.effect.recovered:
                self._refund(change)
            if change.error is None:
                self._post_note(change)
        failpoint("status_sync.after_notes", store=store_id)
        pending = [c for c in changes if c.error is None and c.write_status and c.event.event != "refunded"]
        if len(pending) >= batch_threshold:
            updates = [{"id": c.order.order_id, **self._fields(c)} for c in pending]
            for change, result in zip(pending, self.batch_update(updates), strict=True):
                if result.not_found:
                    change.error = "order not found"
                elif not result.ok:
                    change.error = (f"status {change.effect.target!r} refused by the storefront: "
                                    f"{result.error}")
            return
        for n, change in enumerate(pending):
            if n == 1:
                failpoint("status_sync.mid_writes", store=store_id)
            try:
                self.update_order(change.order.order_id, self._fields(change))
            except OrderNotFound:
                change.error = "order not found"
            except StorefrontRequestRejected as exc:
                change.error = f"status {change.effect.target!r} refused by the storefront: {exc}"

    @staticmethod
    def _fields(change: StatusChange) -> dict[str, Any]:
        """What the change writes to the order: its status, or the payment ``decide`` chose."""
        paid = change.order.cache.get(("paid", change.event.event_key))
        return dict(paid) if change.event.event == "paid" and paid else {"status": change.effect.target}

    def _refund(self, change: StatusChange) -> None:
        event, order = change.event, change.order
        amount = format_money(event.amount or Decimal(0), event.currency)
        body: dict[str, Any] = {
            "amount": amount, "reason": reason_text(event.note, event.reference),
            "api_refund": False, "api_restock": change.restock,
            "meta_data": [{"key": REFERENCE_META, "value": event.reference}],
        }
        lines = order.cache.get(("refund_lines", event.event_key))
        if lines:
            body["line_items"] = refund_line_items(event.amount or Decimal(0), event.currency,
                                                   lines, order.cache.get("line_money", {}))
        try:
            self.create_refund(order.order_id, body, event.reference)
        except OrderNotFound:
            change.error = "order not found"
        except StorefrontRequestRejected as exc:
            change.error = f"refund refused by the storefront: {exc}"

    @staticmethod
    def _refund_lines(order: OrderState, sku: str, quantity: int) -> list[dict[str, Any]]:
        """The order's line items of ``sku`` refunding ``quantity`` units, the lines in order,
        skipping the units refunded before."""
        refunded = order.payment.refunded_units.get(sku, 0) if order.payment is not None else 0
        items, left = [], quantity
        for item_id, units in order.cache.get("line_ids", {}).get(sku, []):
            skip = min(refunded, units)
            refunded -= skip
            take = min(units - skip, left)
            if take > 0:
                items.append({"id": item_id, "quantity": take})
                left -= take
        return items

    def _notes(self, order: OrderState) -> list[dict[str, Any]]:
        if "notes" not in order.cache:
            order.cache["notes"] = list(self.list_notes(order.order_id))
        return order.cache["notes"]

    def _has_note(self, order: OrderState, text: str, *, customer: bool) -> bool:
        return any(
            bool(n.get("customer_note")) == customer and same_note(str(n.get("note", "")), text)
            for n in self._notes(order)
        )

    def _post_note(self, change: StatusChange) -> None:
        order, customer = change.order, change.effect.customer_note
        try:
            if self._has_note(order, change.note, customer=customer):
                # Already there: an earlier run applied this event and stopped before its ledger
                # row; a status the order already has was most likely written by that run.
                change.recovered = change.effect.recovered or (
                    change.effect.target is not None and not change.write_status)
                return
            created = self.add_note(order.order_id, change.note, customer)
        except OrderNotFound:
            change.error = "order not found"
            return
        except StorefrontRequestRejected as exc:
            change.error = f"note refused by the storefront: {exc}"
            return
        self._notes(order).insert(0, created or {"note": change.note, "customer_note": customer})

    # -- HTTP ------------------------------------------------------------------------------

    def _request(
        self, method: str, endpoint: str, *, what: str, params: dict[str, str] | None = None,
        body: Any = None, order_id: int | None = None,
        before_attempt: Callable[[], Any] | None = None,
    ) -> Any:
        """One API call with the read client's retry policy; returns the decoded JSON body.

        ``before_attempt`` runs before every attempt; a non-``None`` result ends the call with
        that result (how ``add_note`` avoids posting twice)."""
        hook, session = self._session()
        url = hook.url_from_endpoint(endpoint)

        def attempt() -> Any:
            if before_attempt is not None:
                done = before_attempt()
                if done is not None:
                    return done
            request = requests.Request(method, url, params=params, json=body)
            response = self._send(hook, session, request)
            if 200 <= response.status_code < 300:
                try:
                    return json.loads(response.content)
                except ValueError as exc:
                    raise TransientError(
                        f"HTTP {response.status_code} body is not JSON ({exc}): "
                        f"{response.content[:120]!r}"
                    ) from exc
            if response.status_code == 404 and order_id is not None and _code(response) == _INVALID_ID:
                raise OrderNotFound(order_id, f"woocommerce {self._host}: order {order_id} not found")
            raise self._status_error(response)

        return self._retried(attempt, what)


def _code(response: requests.Response) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None
