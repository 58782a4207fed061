"""A WooCommerce REST API v3 stand-in for local runs, integration tests and benchmarks.

It serves the real paths (``/wp-json/wc/v3/orders`` ...) and behaves like WooCommerce where
our client depends on it:

* ``GET /orders`` takes ``page``, ``per_page`` (1..100, default 10; out of range -> 400
  ``rest_invalid_param``), ``offset``, ``after``/``before``/``modified_after``/``modified_before``
  (RFC 3339, exclusive bounds at one-second granularity), ``dates_are_gmt``, ``status`` (``any``
  or a comma list), ``include``/``exclude``, ``orderby`` (date, id, include, title, slug,
  modified; ties broken by id like WooCommerce's ``"date ID"``) and ``order`` (desc default);
  answers with ``X-WP-Total``, ``X-WP-TotalPages`` and a WordPress ``Link`` header.
* Date bounds follow ``WP_Date_Query::build_mysql_datetime``: a value without offset is a wall
  time, compared with the ``*_gmt`` fields when ``dates_are_gmt=true`` and with the store's local
  times otherwise. A value WITH ``Z`` or an offset is first converted to the store's local wall
  time - so with ``dates_are_gmt=true`` it is compared shifted by the store's UTC offset, exactly
  the WooCommerce pitfall: send naive UTC values together with ``dates_are_gmt=true``.
* Bodies are encoded like ``wp_json_encode`` (non-ASCII as ``\\uXXXX``, ``/`` as ``\\/``).
* Auth: HTTP Basic with the consumer key/secret, or ``consumer_key``/``consumer_secret`` query
  parameters; otherwise 401 ``woocommerce_rest_cannot_view``.

Orders are kept as their encoded JSON bytes next to sorted ``(gmt time, id)`` indexes, so a list
request on the usual ``orderby=modified|date|id`` queries costs O(log n + page size).

Control endpoints (no auth, not WooCommerce): ``POST /__sandbox/faults``, ``GET /__sandbox/faults``,
``POST /__sandbox/orders``, ``GET /__sandbox/orders/{id}``, ``POST /__sandbox/touch``,
``POST /__sandbox/reset``, ``GET /__sandbox/requests``. Faults (FIFO, one per matching API
request): ``429``/``503`` (with ``Retry-After``; ``"retry_after": null`` sends none), ``500``, ``502``
(a proxy's HTML page), ``html``, ``truncated``, ``empty`` (``[]`` with the real ``X-WP-Total``), ``drift``,
``delay``, ``duplicate`` (a list page repeats the row of order ``id``, or its first row, next to
itself: a plugin or replica returning one order twice in a page).

Products and stock (:class:`ProductCatalog`): ``GET /products`` (``page``, ``per_page`` ≤ 100,
``sku`` as a comma list matching products AND variations, ``type``, ``orderby``/``order``,
``_fields``; ``X-WP-Total``/``X-WP-TotalPages``), ``GET /products/{id}``,
``GET /products/{id}/variations[/{vid}]``, ``POST /products/batch`` and
``POST /products/{id}/variations/batch`` (≤ 100 items; a variation on the products endpoint is
refused as WooCommerce does), ``PUT /products/{id}``. Control: ``POST /__sandbox/products``
(seed), ``GET /__sandbox/products`` (sku -> stock), ``GET /__sandbox/products/{id}``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import contextlib
import hmac
import json
import math
import re
import signal
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit
from zoneinfo import ZoneInfo

from sandbox.webhook_sender import Switches, WebhookSender, add_cli_flags, switches_from_cli

API_PREFIX = "/wp-json/wc/v3"
ORDERS_PATH = f"{API_PREFIX}/orders"
CONTROL_PREFIX = "/__sandbox"
MAX_PER_PAGE = 100
BATCH_LIMIT = 100
ORDER_STATUSES = ("pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed",
                  "checkout-draft")
#: Statuses ``status=any`` leaves out (WordPress hides them from "any").
HIDDEN_STATUSES = frozenset({"trash", "auto-draft"})
#: Orders in these statuses fire no webhook (``WC_Webhook::is_valid_resource``: drafts).
WEBHOOK_QUIET_STATUSES = frozenset({"checkout-draft", "auto-draft", "new"})
ORDERBY = ("date", "id", "include", "title", "slug", "modified")
FAULT_TYPES = frozenset({"429", "500", "502", "503", "html", "truncated", "empty", "drift", "delay",
                         "duplicate"})
JSON_TYPE = "application/json; charset=UTF-8"
_ROUTE_ID = re.compile(r"[0-9]+")
_LEADING_INT = re.compile(r"[+-]?[0-9]+")
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|z|[+-]\d{2}(?::?\d{2})?)?$")
_WALL = "%Y-%m-%dT%H:%M:%S"
_EPOCH_TEXT = "1970-01-01T00:00:00"
_LOW_KEY = -sys.maxsize
_HIGH_KEY = sys.maxsize
_SERVED_SIGNATURES = 64
_DATE_FIELDS = ("date_created", "date_modified", "date_paid", "date_completed")

_MAINTENANCE_HTML = (
    b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Maintenance</title></head>"
    b"<body><h1>Briefly unavailable for scheduled maintenance.</h1><p>Check back in a minute.</p>"
    b"</body></html>\n"
)
_BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    b"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_WAF_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>Attention Required! | Web Application Firewall</title></head>"
    b"<body><h1>Sorry, you have been blocked</h1><p>This website is using a security service to protect "
    b"itself from online attacks.</p><p>Ray ID: 7d2a9c1f0e3b4a21</p></body></html>\n"
)


# --- encoding and errors ---------------------------------------------------------------------------


def wp_json(value: Any) -> bytes:
    """JSON bytes as ``wp_json_encode`` writes them: ASCII only (``\\u`` escapes) and ``\\/``.

    Replacing ``/`` is safe because outside strings JSON text never contains a slash.
    """
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()


@dataclass
class Response:
    """One HTTP answer; handlers build it, the request handler writes it."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = JSON_TYPE


def wp_error(status: int, code: str, message: str, **data: Any) -> Response:
    """A WordPress ``WP_Error`` answer: ``{"code", "message", "data": {"status", ...}}``."""
    return Response(status, wp_json({"code": code, "message": message, "data": {"status": status, **data}}))


def _invalid_params(problems: dict[str, tuple[str, str]]) -> Response:
    """``rest_invalid_param`` listing every bad parameter, like ``WP_REST_Request::has_valid_params``."""
    return wp_error(
        400, "rest_invalid_param", "Invalid parameter(s): " + ", ".join(problems),
        params={name: msg for name, (_code, msg) in problems.items()},
        details={name: {"code": code, "message": msg, "data": None}
                 for name, (code, msg) in problems.items()},
    )


def _wp_list(words: Iterable[str]) -> str:
    """``wp_sprintf_l``: ``a, b, and c`` / ``a and b``."""
    items = list(words)
    if len(items) < 3:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


# --- times -----------------------------------------------------------------------------------------


def _wall(dt: datetime) -> str:
    """Naive ``YYYY-MM-DDTHH:MM:SS`` of ``dt`` in its own zone (whole seconds)."""
    return dt.replace(tzinfo=None, microsecond=0).isoformat()


def _parse_wall(text: Any) -> datetime | None:
    """A stored naive ``YYYY-MM-DDTHH:MM:SS`` as an aware UTC datetime (None when unusable)."""
    if not isinstance(text, str) or len(text) < 19 or text[10] not in "Tt ":
        return None
    try:
        return datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_bound(value: str, *, dates_are_gmt: bool, store_tz: tzinfo) -> str | None:
    """The exclusive bound, as a naive GMT ``YYYY-MM-DDTHH:MM:SS``, the way WooCommerce uses it.

    ``None`` when the value is not RFC 3339 (``rest_parse_date`` refuses it). A value with an
    offset is converted to store-local wall time first (``build_mysql_datetime``); that wall
    time is then taken as GMT when ``dates_are_gmt`` (WooCommerce's quirk), else as local time
    and converted to GMT (what the HPOS order query does). Fractions of a second are dropped.
    """
    m = _RFC3339.match(value)
    if not m:
        return None
    try:
        wall = datetime(*(int(g) for g in m.groups()[:6]))  # noqa: DTZ001 - a wall time on purpose
    except ValueError:
        return None
    offset = m.group(7)
    if offset:
        wall = wall.replace(tzinfo=_offset_tz(offset)).astimezone(store_tz).replace(tzinfo=None)
    if dates_are_gmt:
        return _wall(wall)
    return _wall(wall.replace(tzinfo=store_tz).astimezone(UTC))


def _offset_tz(text: str) -> tzinfo:
    if text in ("Z", "z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) >= 4 else 0)
    return timezone(sign * timedelta(minutes=minutes))


# --- the order store -------------------------------------------------------------------------------


class _Record:
    """One stored order: index keys plus its encoded bytes. Never mutated, always replaced."""

    __slots__ = ("blob", "created", "key", "modified", "status")

    def __init__(self, key: int, status: str, created: str, modified: str, blob: bytes) -> None:
        self.key = key
        self.status = status
        self.created = created
        self.modified = modified
        self.blob = blob


@dataclass
class ListQuery:
    """A validated ``GET /orders`` request."""

    page: int = 1
    per_page: int = 10
    offset: int | None = None
    orderby: str = "date"
    order: str = "desc"
    statuses: frozenset[str] | None = None  # None = "any"
    include: list[int] | None = None
    exclude: frozenset[int] | None = None
    created_after: str | None = None
    created_before: str | None = None
    modified_after: str | None = None
    modified_before: str | None = None
    fields: list[str] | None = None

    @property
    def start(self) -> int:
        return self.offset if self.offset is not None else (self.page - 1) * self.per_page


class OrderStore:
    """Orders, notes, faults and the request log behind one lock (handlers run in threads)."""

    def __init__(self, store_tz: tzinfo, clock: Callable[[], datetime]) -> None:
        self.tz = store_tz
        self.clock = clock
        self.lock = threading.RLock()
        self.records: dict[int, _Record] = {}
        self.by_created: list[tuple[str, int]] = []
        self.by_modified: list[tuple[str, int]] = []
        self.ids: list[int] = []
        self.hidden = 0  # orders whose status "any" leaves out: while 0 the fast paths hold
        self.version = 0
        self.notes: dict[int, list[dict[str, Any]]] = {}
        self.next_note_id = 1
        #: order id -> its refunds as ``GET /orders/{id}/refunds`` shows them, oldest first; an
        #: order without an entry shows the refunds its seed data lists (``refunds[]``)
        self.refunds: dict[int, list[dict[str, Any]]] = {}
        self.next_refund_id = 900_000  # WordPress posts: one id space with orders
        self.next_internal_key = -1
        self.faults: list[dict[str, Any]] = []
        self.log: list[tuple[str, str, int]] = []
        self.served: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()
        self.drifted: dict[tuple[Any, ...], set[int]] = {}
        self.filtered_cache: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()
        self.baseline: tuple[Any, ...] | None = None
        #: Told of every order change (``topics, order id, body``): the webhook sender's
        #: ``announce`` while the storefront sends webhooks (``SandboxStorefront.send_webhooks``)
        self.on_change: Callable[[list[str], int, bytes], None] | None = None

    # -- ingest / replace

    def _now(self) -> datetime:
        return self.clock().astimezone(UTC).replace(microsecond=0)

    def _local(self, gmt: datetime) -> str:
        return _wall(gmt.astimezone(self.tz))

    def _normalise_dates(self, order: dict[str, Any]) -> tuple[str, str]:
        """Make local ``date_*`` agree with ``*_gmt`` (the truth); return (created, modified) GMT."""
        for name in _DATE_FIELDS:
            gmt = _parse_wall(order.get(f"{name}_gmt"))
            if gmt is None and isinstance(order.get(name), str):
                local = _parse_wall(order[name])
                if local is not None:  # only a local time given: derive its GMT twin
                    gmt = local.replace(tzinfo=self.tz).astimezone(UTC)
                    order[f"{name}_gmt"] = _wall(gmt)
            if gmt is not None:
                order[name] = self._local(gmt)
        created = order.get("date_created_gmt") if _parse_wall(order.get("date_created_gmt")) else None
        modified = order.get("date_modified_gmt") if _parse_wall(order.get("date_modified_gmt")) else None
        if modified is None:
            modified = created or _wall(self._now())
            order["date_modified_gmt"] = modified
            order["date_modified"] = self._local(_parse_wall(modified))  # type: ignore[arg-type]
        return (created or modified)[:19], modified[:19]

    def _key_for(self, order: dict[str, Any]) -> int:
        oid = order.get("id")
        if isinstance(oid, int) and not isinstance(oid, bool):
            return oid
        # An order without a usable id (a broken test order) still gets listed, under a private key.
        self.next_internal_key -= 1
        return self.next_internal_key

    def _put(self, key: int, order: dict[str, Any]) -> _Record:
        created, modified = self._normalise_dates(order)
        status = str(order.get("status", ""))
        rec = _Record(key, status, created, modified, wp_json(order))
        old = self.records.get(key)
        if old is not None:
            self._unindex(old)
        else:
            bisect.insort(self.ids, key)
        self.records[key] = rec
        bisect.insort(self.by_created, (rec.created, key))
        bisect.insort(self.by_modified, (rec.modified, key))
        self.hidden += rec.status in HIDDEN_STATUSES
        self.version += 1
        if self.on_change is not None and key > 0:
            self._announce(key, None if old is None else old.status, rec)
        return rec

    def _announce(self, key: int, before: str | None, rec: _Record) -> None:
        """The webhook topic of a change, as WooCommerce fires them: drafts fire nothing, an order
        leaving draft (or new) is ``order.created``, one moved to the trash ``order.deleted`` with
        only its id, any other change ``order.updated`` with the order as ``GET`` returns it."""
        assert self.on_change is not None
        if rec.status in WEBHOOK_QUIET_STATUSES:
            return
        if rec.status == "trash":
            if before != "trash":
                self.on_change(["order.deleted"], key, wp_json({"id": key}))
            return
        created = before is None or before in WEBHOOK_QUIET_STATUSES
        self.on_change(["order.created" if created else "order.updated"], key, rec.blob)

    def remove(self, key: int) -> dict[str, Any] | None:
        """Delete an order for good (``DELETE /orders/<id>?force=true``); its last state, or None."""
        with self.lock:
            rec = self.records.pop(key, None)
            if rec is None:
                return None
            self._unindex(rec)
            del self.ids[bisect.bisect_left(self.ids, key)]
            self.version += 1
            if self.on_change is not None and rec.status != "trash":
                self.on_change(["order.deleted"], key, wp_json({"id": key}))
            return json.loads(rec.blob)

    def _unindex(self, rec: _Record) -> None:
        for index, value in ((self.by_created, rec.created), (self.by_modified, rec.modified)):
            pos = bisect.bisect_left(index, (value, rec.key))
            del index[pos]
        self.hidden -= rec.status in HIDDEN_STATUSES

    def upsert(self, order: dict[str, Any]) -> int:
        """Store (or replace, by id) one order; returns its key."""
        if not isinstance(order, dict):
            raise TypeError("an order must be a JSON object")
        order = dict(order)  # shallow: nested values are never mutated, only replaced
        with self.lock:
            return self._put(self._key_for(order), order).key

    def load(self, orders: Iterable[dict[str, Any]]) -> int:
        count = 0
        for order in orders:
            self.upsert(order)
            count += 1
        return count

    def decode(self, key: int) -> dict[str, Any] | None:
        rec = self.records.get(key)
        return None if rec is None else json.loads(rec.blob)

    def modify(self, key: int, change: Callable[[dict[str, Any]], None], *,
               bump: datetime | None) -> dict[str, Any]:
        """Apply ``change`` to a decoded copy, optionally set date_modified to ``bump``, store it."""
        with self.lock:
            order = self.decode(key)
            if order is None:
                raise KeyError(key)
            change(order)
            if bump is not None:
                order["date_modified_gmt"] = _wall(bump)
            self._put(key, order)
            return order

    def touch(self, order_id: int, when: datetime) -> dict[str, Any]:
        """Set an order's date_modified(_gmt) to ``when`` (aware)."""
        gmt = when.astimezone(UTC).replace(microsecond=0)
        return self.modify(order_id, lambda _o: None, bump=gmt)

    # -- snapshot / reset

    def snapshot(self) -> None:
        """Remember the current orders as the state ``reset()`` returns to (records are immutable)."""
        with self.lock:
            self.baseline = (dict(self.records), list(self.by_created), list(self.by_modified),
                             list(self.ids), self.hidden)

    def reset(self, orders: list[dict[str, Any]] | None = None) -> None:
        with self.lock:
            if orders is not None:
                self.records, self.by_created, self.by_modified, self.ids, self.hidden = {}, [], [], [], 0
                on_change, self.on_change = self.on_change, None  # a reset is no change to announce
                try:
                    self.load(orders)
                finally:
                    self.on_change = on_change
            elif self.baseline is not None:
                records, created, modified, ids, hidden = self.baseline
                self.records, self.by_created, self.by_modified = dict(records), list(created), list(modified)
                self.ids, self.hidden = list(ids), hidden
            self.version += 1
            self.notes.clear()
            self.refunds.clear()
            self.faults.clear()
            self.log.clear()
            self.served.clear()
            self.drifted.clear()
            self.filtered_cache.clear()

    # -- listing

    def _fast_ok(self, q: ListQuery) -> bool:
        """True when only the ordering field itself is filtered: a bisect answers the query."""
        if q.statuses is not None or q.include is not None or q.exclude or self.hidden:
            return False
        if q.orderby == "modified":
            return q.created_after is None and q.created_before is None
        if q.orderby == "date":
            return q.modified_after is None and q.modified_before is None
        return q.orderby in ("id", "title", "slug") and not _has_bounds(q)

    def _index_range(self, q: ListQuery) -> tuple[list[Any], int, int]:
        if q.orderby == "modified":
            index, after, before = self.by_modified, q.modified_after, q.modified_before
        elif q.orderby == "date":
            index, after, before = self.by_created, q.created_after, q.created_before
        else:
            return self.ids, 0, len(self.ids)
        lo = 0 if after is None else bisect.bisect_right(index, (after, _HIGH_KEY))
        hi = len(index) if before is None else bisect.bisect_left(index, (before, _LOW_KEY))
        return index, lo, max(lo, hi)

    def _matches(self, rec: _Record, q: ListQuery, include: set[int] | None) -> bool:
        if (rec.status in HIDDEN_STATUSES) if q.statuses is None else (rec.status not in q.statuses):
            return False
        if include is not None and rec.key not in include:
            return False
        if q.exclude and rec.key in q.exclude:
            return False
        return _inside(rec.created, q.created_after, q.created_before) and _inside(
            rec.modified, q.modified_after, q.modified_before)

    def _filtered(self, q: ListQuery) -> list[int]:
        """All matching keys in ascending order (or the include order); cached per data version."""
        cache_key = (q.orderby, q.statuses, tuple(q.include or ()), q.exclude, q.created_after,
                     q.created_before, q.modified_after, q.modified_before, self.version)
        hit = self.filtered_cache.get(cache_key)
        if hit is not None:
            return hit
        include = set(q.include) if q.include is not None else None
        if q.orderby == "include" and q.include is not None:
            candidates: Iterable[int] = dict.fromkeys(k for k in q.include if k in self.records)
        else:
            index, lo, hi = self._index_range(q)
            candidates = (item[1] for item in index[lo:hi]) if index is not self.ids else iter(self.ids)
        keys = [k for k in candidates if self._matches(self.records[k], q, include)]
        self.filtered_cache[cache_key] = keys
        while len(self.filtered_cache) > 8:
            self.filtered_cache.popitem(last=False)
        return keys

    def select(self, q: ListQuery) -> tuple[int, list[int]]:
        """(total matching, keys of the requested page in answer order)."""
        start, size = q.start, q.per_page
        ascending = q.order == "asc" or q.orderby == "include"
        if self._fast_ok(q):
            index, lo, hi = self._index_range(q)
            total = hi - lo
            if ascending:
                window = index[lo + start: min(hi, lo + start + size)]
            else:
                window = index[max(lo, hi - start - size): max(lo, hi - start)][::-1]
            keys = window if index is self.ids else [item[1] for item in window]
            return total, keys
        keys = self._filtered(q)
        if ascending:
            return len(keys), keys[start:start + size]
        total = len(keys)
        return total, keys[max(0, total - start - size): max(0, total - start)][::-1]

    # -- faults and drift

    def add_faults(self, faults: list[dict[str, Any]]) -> None:
        cleaned = []
        for fault in faults:
            if not isinstance(fault, dict) or str(fault.get("type")) not in FAULT_TYPES:
                raise ValueError(f"unknown fault {fault!r}; types: {', '.join(sorted(FAULT_TYPES))}")
            times = int(fault.get("times", 1))
            if times < 1:
                raise ValueError(f"fault times must be >= 1: {fault!r}")
            cleaned.append({**fault, "type": str(fault["type"]), "times": times})
        with self.lock:
            self.faults.extend(cleaned)

    def take_fault(self, method: str, path: str, *, can_drift: bool) -> dict[str, Any] | None:
        """Consume (one ``times`` of) the first queued fault that matches this API request."""
        with self.lock:
            for i, fault in enumerate(self.faults):
                if fault["type"] == "drift" and not can_drift:
                    continue
                if fault.get("method") and str(fault["method"]).upper() != method:
                    continue
                if fault.get("path") and str(fault["path"]) not in path:
                    continue
                fault["times"] -= 1
                if fault["times"] <= 0:
                    del self.faults[i]
                return dict(fault)
        return None

    def has_served(self, signature: tuple[Any, ...]) -> bool:
        with self.lock:
            return bool(self.served.get(signature))

    def remember_served(self, signature: tuple[Any, ...], keys: list[int]) -> None:
        served = self.served.setdefault(signature, [])
        served.extend(keys)
        self.served.move_to_end(signature)
        while len(self.served) > _SERVED_SIGNATURES:
            old, _ = self.served.popitem(last=False)
            self.drifted.pop(old, None)

    def drift(self, signature: tuple[Any, ...], q: ListQuery, count: int) -> list[int]:
        """Bump ``count`` already-served orders of this query to just inside its upper bound."""
        with self.lock:
            if q.modified_before is not None:
                target = _parse_wall(q.modified_before) - timedelta(seconds=1)  # type: ignore[operator]
            else:
                target = self._now()
            done = self.drifted.setdefault(signature, set())
            picked = [k for k in dict.fromkeys(self.served.get(signature, ())) if k not in done
                      and k in self.records][:count]
            for key in picked:
                self.modify(key, lambda _o: None, bump=target)
                done.add(key)
            return picked


def _inside(value: str, after: str | None, before: str | None) -> bool:
    return (after is None or value > after) and (before is None or value < before)


def _has_bounds(q: ListQuery) -> bool:
    bounds = (q.created_after, q.created_before, q.modified_after, q.modified_before)
    return any(v is not None for v in bounds)


# --- request parsing -------------------------------------------------------------------------------


def _query_params(query: str) -> dict[str, str]:
    """Last value wins like PHP's ``$_GET``; ``status[]=a&status[]=b`` is joined to ``a,b``."""
    params: dict[str, str] = {}
    arrays: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name.endswith("[]"):
            arrays.setdefault(name[:-2], []).append(value)
        else:
            params[name] = value
    for name, values in arrays.items():
        params[name] = ",".join(values)
    return params


def _int_param(params: dict[str, str], name: str, default: int, low: int, high: int | None,
               problems: dict[str, tuple[str, str]]) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        problems[name] = ("rest_invalid_type", f"{name} is not of type integer.")
        return default
    if high is not None and not low <= value <= high:
        problems[name] = ("rest_out_of_bounds",
                          f"{name} must be between {low} (inclusive) and {high} (inclusive)")
    elif value < low:
        problems[name] = ("rest_out_of_bounds", f"{name} must be greater than or equal to {low}")
    return value


def _bool_param(params: dict[str, str], name: str, problems: dict[str, tuple[str, str]]) -> bool:
    raw = params.get(name)
    if raw is None or raw.lower() in ("false", "0", ""):
        return False
    if raw.lower() in ("true", "1"):
        return True
    problems[name] = ("rest_invalid_type", f"{name} is not of type boolean.")
    return False


def _enum_param(params: dict[str, str], name: str, default: str, allowed: tuple[str, ...],
                problems: dict[str, tuple[str, str]]) -> str:
    value = params.get(name, default)
    if value not in allowed:
        problems[name] = ("rest_not_in_enum", f"{name} is not one of {_wp_list(allowed)}.")
        return default
    return value


def _id_list(raw: str | None) -> list[int] | None:
    """``wp_parse_id_list``: comma/space separated, absint, unique, zeros dropped."""
    if raw is None or not raw.strip():
        return None
    ids = []
    for part in re.split(r"[\s,]+", raw.strip()):
        # absint reads leading ASCII digits ("12abc" is 12); Python's int would take "١٢" and "1_2"
        digits = _LEADING_INT.match(part)
        ids.append(abs(int(digits.group())) if digits else 0)
    return [i for i in dict.fromkeys(ids) if i] or None


def _status_param(raw: str | None, problems: dict[str, tuple[str, str]]) -> frozenset[str] | None:
    if raw is None or raw == "":
        return None
    values = [v.strip() for v in raw.split(",") if v.strip()]
    allowed = ("any", "trash", *ORDER_STATUSES)
    for i, value in enumerate(values):
        if value not in allowed:
            problems["status"] = ("rest_not_in_enum", f"status[{i}] is not one of {_wp_list(allowed)}.")
            return None
    if "any" in values:
        return None
    return frozenset(values)


def parse_list_query(params: dict[str, str], store_tz: tzinfo) -> ListQuery | Response:
    """Validate ``GET /orders`` parameters as WordPress would; a ``Response`` means 400."""
    problems: dict[str, tuple[str, str]] = {}
    q = ListQuery(
        page=_int_param(params, "page", 1, 1, None, problems),
        per_page=_int_param(params, "per_page", 10, 1, MAX_PER_PAGE, problems),
        orderby=_enum_param(params, "orderby", "date", ORDERBY, problems),
        order=_enum_param(params, "order", "desc", ("asc", "desc"), problems),
        statuses=_status_param(params.get("status"), problems),
        include=_id_list(params.get("include")),
    )
    if "offset" in params:
        q.offset = _int_param(params, "offset", 0, 0, None, problems)
    exclude = _id_list(params.get("exclude"))
    q.exclude = frozenset(exclude) if exclude else None
    use_gmt = _bool_param(params, "dates_are_gmt", problems)
    for name, attr in (("after", "created_after"), ("before", "created_before"),
                       ("modified_after", "modified_after"), ("modified_before", "modified_before")):
        if name in params:
            bound = parse_bound(params[name], dates_are_gmt=use_gmt, store_tz=store_tz)
            if bound is None:
                problems[name] = ("rest_invalid_date", "Invalid date.")
            setattr(q, attr, bound)
    if params.get("_fields"):
        q.fields = [f.strip() for f in params["_fields"].split(",") if f.strip()]
    return _invalid_params(problems) if problems else q


def list_signature(params: dict[str, str]) -> tuple[Any, ...]:
    """The query minus paging, credentials and lower bounds: 'the same scan' for drift bookkeeping.

    Lower bounds are left out so a keyset client, which moves ``modified_after`` page by page,
    counts as one scan too: drift then bumps orders it already read to just inside the upper
    bound, i.e. ahead of its cursor (it must re-read them; an offset client skips others)."""
    skip = {"page", "offset", "consumer_key", "consumer_secret", "modified_after", "after"}
    return tuple(sorted((k, v) for k, v in params.items() if k not in skip))


def _pick_fields(order: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """``_fields`` filtering (top level and ``a.b`` nested keys), like ``rest_filter_response_fields``."""
    out: dict[str, Any] = {}
    for name in fields:
        head, _, rest = name.partition(".")
        if head not in order:
            continue
        if rest and isinstance(order[head], dict):
            sub = _pick_fields(order[head], [rest])
            out.setdefault(head, {}).update(sub)
        else:
            out[head] = order[head]
    return out


# --- the API ---------------------------------------------------------------------------------------


class StorefrontApp:
    """Routes, auth and WooCommerce semantics on top of an ``OrderStore``; HTTP-agnostic."""

    def __init__(self, store: OrderStore, consumer_key: str, consumer_secret: str,
                 catalog: ProductCatalog | None = None) -> None:
        self.store = store
        self.key = consumer_key
        self.secret = consumer_secret
        self.catalog = catalog or ProductCatalog(store.lock, store.clock)

    # -- auth

    def authorised(self, headers: Any, params: dict[str, str]) -> bool:
        user = password = None
        auth = headers.get("Authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
        elif "consumer_key" in params:
            user, password = params.get("consumer_key"), params.get("consumer_secret", "")
        if user is None or password is None:
            return False
        return hmac.compare_digest(user.encode(), self.key.encode()) and hmac.compare_digest(
            password.encode(), self.secret.encode())

    # -- dispatch

    def handle(self, method: str, path: str, params: dict[str, str], headers: Any, body: bytes,
               host: str) -> tuple[Response, dict[str, Any] | None]:
        """Answer one ``/wp-json`` request; returns the response and the fault that shaped it."""
        path = path.rstrip("/") or "/"
        is_list = method == "GET" and path == ORDERS_PATH
        signature = list_signature(params) if is_list else ()
        can_drift = is_list and self.store.has_served(signature)
        fault = self.store.take_fault(method, path, can_drift=can_drift)
        early = _early_fault(fault)
        if early is not None:
            return early, fault
        if not self.authorised(headers, params):
            return wp_error(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources."), fault
        if is_list:
            resp = self.list_orders(params, signature, host, fault)
        else:
            resp = self.route(method, path, params, body)
        if fault is not None and fault["type"] == "truncated":
            resp = Response(200, resp.body[: len(resp.body) // 2], resp.headers, JSON_TYPE)
        if fault is not None and fault["type"] == "empty":  # a page lost on the way; headers still count it
            resp = Response(200, b"[]", resp.headers, JSON_TYPE)
        return resp, fault

    def route(self, method: str, path: str, params: dict[str, str], body: bytes) -> Response:
        if path == PRODUCTS_PATH or path.startswith(PRODUCTS_PATH + "/"):
            return self.route_products(method, path, params, body)
        if not path.startswith(ORDERS_PATH + "/"):
            return _no_route()
        parts = path[len(ORDERS_PATH) + 1:].split("/")
        editable = method in ("POST", "PUT", "PATCH")
        if parts == ["batch"] and editable:
            return self.with_json(body, self.batch)
        order_id = _route_id(parts[0])
        if order_id is None:
            return _no_route()
        if len(parts) == 1 and method == "GET":
            return self.get_order(order_id, params)
        if len(parts) == 1 and editable:
            return self.with_json(body, lambda data: self.update_order(order_id, data))
        if len(parts) == 1 and method == "DELETE":
            return self.delete_order(order_id, force=params.get("force", "").lower() in ("1", "true"))
        if len(parts) == 2 and parts[1] == "notes" and method == "GET":
            return self.list_notes(order_id, params)
        if len(parts) == 2 and parts[1] == "notes" and method == "POST":
            return self.with_json(body, lambda data: self.add_note(order_id, data))
        if len(parts) == 2 and parts[1] == "refunds" and method == "GET":
            return self.list_refunds(order_id)
        if len(parts) == 2 and parts[1] == "refunds" and method == "POST":
            return self.with_json(body, lambda data: self.create_refund(order_id, data))
        return _no_route()

    def route_products(self, method: str, path: str, params: dict[str, str], body: bytes) -> Response:
        """``/products``, ``/products/{id}``, ``/products/batch`` and the variations below a product."""
        catalog = self.catalog
        parts = path[len(PRODUCTS_PATH) + 1:].split("/") if path != PRODUCTS_PATH else []
        editable = method in ("POST", "PUT", "PATCH")
        if not parts and method == "GET":
            return catalog.list(params)
        if parts == ["batch"] and editable:
            return self.with_json(body, catalog.batch)
        pid = _route_id(parts[0]) if parts else None
        if pid is None:
            return _no_route()
        if len(parts) == 1 and method == "GET":
            return catalog.get(pid)
        if len(parts) == 1 and editable:
            return self.with_json(body, lambda data: _answer(*catalog.update(pid, data)))
        if len(parts) < 2 or parts[1] != "variations":
            return _no_route()
        if len(parts) == 2 and method == "GET":
            return catalog.list(params, parent_id=pid)
        if parts[2:] == ["batch"] and editable:
            return self.with_json(body, lambda data: catalog.batch(data, parent_id=pid))
        variation_id = _route_id(parts[2]) if len(parts) == 3 else None
        if variation_id is not None and method == "GET":
            return catalog.get(variation_id, parent_id=pid)
        return _no_route()

    @staticmethod
    def with_json(body: bytes, handler: Callable[[Any], Response]) -> Response:
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return wp_error(400, "rest_invalid_json", "Invalid JSON body passed.")
        if not isinstance(data, dict):
            return wp_error(400, "rest_invalid_json", "Invalid JSON body passed.")
        return handler(data)

    # -- orders

    def list_orders(self, params: dict[str, str], signature: tuple[Any, ...], host: str,
                    fault: dict[str, Any] | None) -> Response:
        q = parse_list_query(params, self.store.tz)
        if isinstance(q, Response):
            return q
        store = self.store
        with store.lock:
            if fault is not None and fault["type"] == "drift":
                store.drift(signature, q, int(fault.get("count", 3)))
            total, keys = store.select(q)
            if fault is not None and fault["type"] == "duplicate" and keys:
                twin = fault.get("id", keys[0])
                keys = [k for key in keys for k in ((key, key) if key == twin else (key,))]
            store.remember_served(signature, keys)
            if q.fields:
                body = wp_json([_pick_fields(json.loads(store.records[k].blob), q.fields) for k in keys])
            else:
                body = b"[" + b",".join(store.records[k].blob for k in keys) + b"]"
        pages = math.ceil(total / q.per_page) if total else 0
        headers = [("X-WP-Total", str(total)), ("X-WP-TotalPages", str(pages)),
                   ("Access-Control-Expose-Headers", "X-WP-Total, X-WP-TotalPages, Link")]
        link = _link_header(host, params, q.page, pages)
        if link:
            headers.append(("Link", link))
        return Response(200, body, headers)

    def get_order(self, order_id: int, params: dict[str, str]) -> Response:
        with self.store.lock:
            rec = self.store.records.get(order_id)
            blob = None if rec is None else rec.blob
        if blob is None:
            return _invalid_id()
        if params.get("_fields"):
            fields = [f.strip() for f in params["_fields"].split(",") if f.strip()]
            return Response(200, wp_json(_pick_fields(json.loads(blob), fields)))
        return Response(200, blob)

    # -- refunds (WC_REST_Order_Refunds_Controller v3 and wc_create_refund)

    def _refunds(self, order_id: int, order: dict[str, Any]) -> list[dict[str, Any]]:
        """The order's refund records (seeded ones from its ``refunds[]`` summary)."""
        store = self.store
        if order_id not in store.refunds:
            store.refunds[order_id] = [
                {"id": r.get("id"), "date_created": order.get("date_modified"),
                 "date_created_gmt": order.get("date_modified_gmt"),
                 "amount": str(r.get("total", "0")).lstrip("-"), "reason": r.get("reason", ""),
                 "refunded_by": 1, "refunded_payment": False, "meta_data": [], "line_items": [],
                 "shipping_lines": [], "tax_lines": [], "fee_lines": []}
                for r in order.get("refunds") or [] if isinstance(r, dict)]
        return store.refunds[order_id]

    def list_refunds(self, order_id: int) -> Response:
        with self.store.lock:
            order = self.store.decode(order_id)
            if order is None:
                return wp_error(404, "woocommerce_rest_invalid_order_id", "Invalid order ID.")
            refunds = list(reversed(self._refunds(order_id, order)))  # newest first
        return Response(200, wp_json(refunds))

    def create_refund(self, order_id: int, data: dict[str, Any]) -> Response:
        """``POST /orders/{id}/refunds``: ``api_refund`` and ``api_restock`` default to true (the
        gateway moves the money; bank transfer, cheque and cash on delivery cannot and answer
        500); an amount above total minus the refunds so far is a 500 ``Invalid refund
        amount.``; a full refund sets ``refunded``; the order's ``date_modified`` moves."""
        store = self.store
        with store.lock:
            order = store.decode(order_id)
            if order is None:
                return wp_error(404, "woocommerce_rest_invalid_order_id", "Invalid order ID.")
            lines = _refund_lines(order, data.get("line_items"))
            if isinstance(lines, Response):
                return lines
            amount = _refund_amount(data.get("amount"), lines)
            if amount is None or amount < 0:
                return wp_error(400, "woocommerce_rest_invalid_order_refund",
                                "Refund amount must be greater than zero.")
            decimals = _decimals(order.get("total"))
            total = _dec(order.get("total"))
            refunded = sum((abs(_dec(r.get("total"))) for r in order.get("refunds") or []), Decimal(0))
            remaining = total - refunded
            if amount > remaining:
                return wp_error(500, "woocommerce_rest_cannot_create_order_refund", "Invalid refund amount.")
            api_refund = data.get("api_refund") if isinstance(data.get("api_refund"), bool) else True
            restock = data.get("api_restock") if isinstance(data.get("api_restock"), bool) else True
            if api_refund:
                method = order.get("payment_method") or ""
                if method not in GATEWAYS_WITH_REFUNDS:
                    message = ("The payment gateway for this order does not exist." if not method else
                               "The payment gateway for this order does not support automatic refunds.")
                    return wp_error(500, "woocommerce_rest_cannot_create_order_refund", message)
            now = store._now()
            refund_id = store.next_refund_id
            store.next_refund_id += 1
            reason = data.get("reason") if isinstance(data.get("reason"), str) else ""
            refund = {
                "id": refund_id, "date_created": store._local(now), "date_created_gmt": _wall(now),
                "amount": f"{amount:.{decimals}f}", "reason": reason, "refunded_by": 1,
                "refunded_payment": bool(api_refund),
                "meta_data": _merge_meta([], data.get("meta_data") if isinstance(data.get("meta_data"), list)
                                         else []),
                "line_items": [{**line, "quantity": -qty, "subtotal": f"-{money:.{decimals}f}",
                                "total": f"-{money:.{decimals}f}",
                                "total_tax": f"-{sum(taxes.values(), Decimal(0)):.{decimals}f}",
                                "taxes": [{"id": rate, "total": f"-{tax:.{decimals}f}",
                                           "subtotal": f"-{tax:.{decimals}f}"}
                                          for rate, tax in taxes.items()]}
                               for line, qty, money, taxes in lines],
                "shipping_lines": [], "tax_lines": [], "fee_lines": [],
                "_links": {"up": [{"href": f"{ORDERS_PATH}/{order_id}"}]},
            }
            self._refunds(order_id, order).append(refund)
            if restock:
                for line, qty, _money, _taxes in lines:
                    self.catalog.restock(str(line.get("sku") or ""), qty)
            full = amount == remaining

            def record(o: dict[str, Any]) -> None:
                o["refunds"] = [*(o.get("refunds") or []),
                                {"id": refund_id, "reason": reason, "total": f"-{amount:.{decimals}f}"}]
                if full:
                    o["status"] = "refunded"
                    o["needs_processing"] = o["needs_payment"] = o["is_editable"] = False

            store.modify(order_id, record, bump=now)
        return Response(201, wp_json(refund), [("Location", f"{ORDERS_PATH}/{order_id}/refunds/{refund_id}")])

    def update_order(self, order_id: int, data: dict[str, Any]) -> Response:
        status = data.get("status")
        if status is not None and status not in ORDER_STATUSES:
            return _invalid_params({"status": ("rest_not_in_enum",
                                               f"status is not one of {_wp_list(ORDER_STATUSES)}.")})
        now = self.store._now()
        try:
            order = self.store.modify(order_id, lambda o: _apply_update(o, data, now), bump=now)
        except KeyError:
            return _invalid_id()
        return Response(200, wp_json(order))

    def delete_order(self, order_id: int, *, force: bool) -> Response:
        """``DELETE /orders/{id}``: to the trash (``force`` false; 410 when it is there already) or
        gone for good; answers the order as it was (``WC_REST_CRUD_Controller::delete_item``)."""
        store = self.store
        with store.lock:
            before = store.decode(order_id)
            if before is None:
                return _invalid_id()
            if force:
                store.remove(order_id)
            elif before.get("status") == "trash":
                return wp_error(410, "woocommerce_rest_already_trashed",
                                "The order has already been deleted.")
            else:
                store.modify(order_id, lambda o: o.update(status="trash"), bump=store._now())
        return Response(200, wp_json(before))

    def batch(self, data: dict[str, Any]) -> Response:
        ops = {op: data.get(op) or [] for op in ("create", "update", "delete")}
        if sum(len(v) for v in ops.values() if isinstance(v, list)) > BATCH_LIMIT:
            return wp_error(413, "woocommerce_rest_request_entity_too_large",
                            f"Unable to accept more than {BATCH_LIMIT} items for this request.")
        result: dict[str, list[Any]] = {}
        if ops["update"]:
            result["update"] = [self._batch_update(item) for item in ops["update"]]
        for op in ("create", "delete"):
            if ops[op]:
                result[op] = [{"id": item.get("id", 0) if isinstance(item, dict) else item,
                               "error": {"code": "woocommerce_rest_sandbox_unsupported",
                                         "message": f"The sandbox does not {op} orders.",
                                         "data": {"status": 400}}} for item in ops[op]]
        return Response(200, wp_json(result))

    def _batch_update(self, item: Any) -> Any:
        oid = item.get("id") if isinstance(item, dict) else None
        if not isinstance(oid, int) or isinstance(oid, bool):
            oid = (_route_id(oid) or 0) if isinstance(oid, str) else 0
        resp = self.update_order(oid, item) if oid else _invalid_id(400)
        data = json.loads(resp.body)
        if resp.status == 200:
            return data
        return {"id": oid, "error": {"code": data["code"], "message": data["message"],
                                     "data": {"status": 400 if resp.status == 404 else resp.status}}}

    # -- notes

    def add_note(self, order_id: int, data: dict[str, Any]) -> Response:
        note = data.get("note")
        if not isinstance(note, str) or not note.strip():
            return wp_error(400, "rest_missing_callback_param", "Missing parameter(s): note",
                            params=["note"])
        store = self.store
        with store.lock:
            if order_id not in store.records:
                return _invalid_id()
            now = store._now()
            by_user = bool(data.get("added_by_user"))
            entry = {
                "id": store.next_note_id, "author": "admin" if by_user else "WooCommerce",
                "date_created": store._local(now), "date_created_gmt": _wall(now),
                "note": note, "customer_note": bool(data.get("customer_note")),
                "_links": {"up": [{"href": f"{ORDERS_PATH}/{order_id}"}]},
            }
            store.next_note_id += 1
            store.notes.setdefault(order_id, []).append(entry)
        location = f"{ORDERS_PATH}/{order_id}/notes/{entry['id']}"
        return Response(201, wp_json(entry), [("Location", location)])

    def list_notes(self, order_id: int, params: dict[str, str]) -> Response:
        kind = params.get("type", "any")
        with self.store.lock:
            if order_id not in self.store.records:
                return _invalid_id()
            notes = list(self.store.notes.get(order_id, ()))
        notes.reverse()  # newest first, like get_comments(orderby comment_ID DESC)
        if kind in ("customer", "internal"):
            notes = [n for n in notes if n["customer_note"] == (kind == "customer")]
        return Response(200, wp_json(notes))


#: Payment methods whose gateway refunds through its API (``supports('refunds')``).
GATEWAYS_WITH_REFUNDS = ("stripe", "paypal", "klarna")


def _dec(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return amount if amount.is_finite() else Decimal(0)


def _decimals(total: Any) -> int:
    text = str(total or "0")
    return len(text.split(".", 1)[1]) if "." in text else 0


def _refund_lines(order: dict[str, Any], items: Any
                  ) -> list[tuple[dict[str, Any], int, Decimal, dict[int, Decimal]]] | Response:
    """A refund request's ``line_items`` (``[{id, quantity, refund_total, refund_tax: [{id,
    refund_total}]}]``) as (the order's line item, units, net money, tax by rate id); an id that
    is no line of the order is left out, as WooCommerce does."""
    if items in (None, []):
        return []
    if not isinstance(items, list):
        return _invalid_params({"line_items": ("rest_invalid_type", "line_items is not of type array.")})
    by_id = {li.get("id"): li for li in order.get("line_items") or [] if isinstance(li, dict)}
    lines = []
    for item in items:
        if not isinstance(item, dict) or item.get("id") not in by_id:
            continue
        qty = item.get("quantity")
        qty = qty if isinstance(qty, int) and not isinstance(qty, bool) and qty > 0 else 0
        line = by_id[item["id"]]
        taxes = {t["id"]: _dec(t.get("refund_total", 0)) for t in item.get("refund_tax") or []
                 if isinstance(t, dict) and isinstance(t.get("id"), int)}
        lines.append(({k: line.get(k) for k in ("id", "name", "product_id", "variation_id", "sku", "price")},
                      qty, _dec(item.get("refund_total", 0)), taxes))
    return lines


def _refund_amount(value: Any, lines: list[tuple[dict[str, Any], int, Decimal, dict[int, Decimal]]]
                   ) -> Decimal | None:
    """The request's ``amount``, or the sum of its lines' ``refund_total`` and ``refund_tax``
    when absent."""
    if value is None or value == "":
        return sum((money + sum(taxes.values(), Decimal(0)) for _line, _qty, money, taxes in lines),
                   Decimal(0)) if lines else None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _apply_update(order: dict[str, Any], data: dict[str, Any], now: datetime) -> None:
    """The writable order properties the sandbox honours (WooCommerce ignores read-only ones).

    ``set_paid: true`` is ``payment_complete`` and, as in WooCommerce, only for an order that
    needs payment (``pending``/``failed``): it takes ``transaction_id``, sets ``date_paid`` and
    moves the order to ``processing``. On any other status it does nothing (an ``on-hold``
    bank-transfer order is moved by writing ``status`` and ``transaction_id``)."""
    needs_payment = order.get("status") in ("pending", "failed")
    for name in ("customer_note", "payment_method", "payment_method_title", "transaction_id", "customer_id",
                 "currency"):
        if name in data:
            order[name] = data[name]
    for name in ("billing", "shipping"):
        if isinstance(data.get(name), dict):
            order[name] = {**(order.get(name) or {}), **data[name]}
    if isinstance(data.get("meta_data"), list):
        order["meta_data"] = _merge_meta(order.get("meta_data") or [], data["meta_data"])
    status = data.get("status")
    if status:
        order["status"] = status
        if status in ("processing", "completed") and not order.get("date_paid_gmt"):
            order["date_paid_gmt"] = _wall(now)
        if status == "completed":
            order["date_completed_gmt"] = _wall(now)
        order["needs_processing"] = status == "processing"
        order["needs_payment"] = status in ("pending", "failed")
        order["is_editable"] = status in ("pending", "on-hold", "auto-draft")
    if data.get("set_paid") is True and needs_payment:
        if not order.get("date_paid_gmt"):
            order["date_paid_gmt"] = _wall(now)
        if not status:
            order["status"] = "processing"
            order["needs_processing"], order["needs_payment"], order["is_editable"] = True, False, False


def _merge_meta(current: list[dict[str, Any]], changes: list[Any]) -> list[dict[str, Any]]:
    merged = [dict(m) for m in current]
    next_id = max((int(m.get("id") or 0) for m in merged), default=0) + 1
    for change in changes:
        if not isinstance(change, dict) or "key" not in change:
            continue
        existing = next((m for m in merged if m.get("key") == change["key"]), None)
        if existing is not None:
            existing["value"] = change.get("value")
        else:
            merged.append({"id": next_id, "key": change["key"], "value": change.get("value")})
            next_id += 1
    return merged


def _answer(status: int, body: dict[str, Any]) -> Response:
    if status == 200:
        return Response(200, wp_json(body))
    return wp_error(status, body["code"], body["message"])


def _route_id(text: str) -> int | None:
    """An id in a route: WordPress matches ``(?P<id>[\\d]+)`` with PCRE, where ``\\d`` is ASCII
    (``str.isdigit`` also takes ``²``, which ``int`` refuses, and ``٣``, which it reads as 3)."""
    return int(text) if _ROUTE_ID.fullmatch(text) else None


def _no_route() -> Response:
    return wp_error(404, "rest_no_route", "No route was found matching the URL and request method.")


def _invalid_id(status: int = 404) -> Response:
    return wp_error(status, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")


def _early_fault(fault: dict[str, Any] | None) -> Response | None:
    """Faults answered before WordPress runs (a proxy, WAF, rate limiter or maintenance mode)."""
    if fault is None:
        return None
    kind = fault["type"]
    retry = [] if fault.get("retry_after", 1) is None else [("Retry-After", str(fault.get("retry_after", 1)))]
    if kind == "429":
        return Response(429, wp_json({"code": "rest_too_many_requests", "message": "Too many requests.",
                                      "data": {"status": 429}}), retry)
    if kind == "503":
        return Response(503, _MAINTENANCE_HTML, retry, "text/html; charset=UTF-8")
    if kind == "500":
        message = ("<p>There has been a critical error on this website.</p><p><a href=\"https://wordpress.org/"
                   "documentation/article/faq-troubleshooting/\">Learn more about troubleshooting WordPress."
                   "</a></p>")
        return Response(500, wp_json({"code": "internal_server_error", "message": message,
                                      "data": {"status": 500}, "additional_errors": []}))
    if kind == "502":
        return Response(502, _BAD_GATEWAY_HTML, [], "text/html")
    if kind == "html":
        return Response(200, _WAF_HTML, [], "text/html; charset=UTF-8")
    if kind == "delay":
        time.sleep(float(fault.get("seconds", 1)))
    return None


def _link_header(host: str, params: dict[str, str], page: int, pages: int) -> str:
    """``<url?...&page=n>; rel="prev", <...>; rel="next"`` as ``WP_REST_Response::link_header`` joins them."""
    links = []

    def url(target: int) -> str:
        query = {**params, "page": str(target)}
        pairs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
        return f"http://{host}{ORDERS_PATH}?{pairs}"

    if page > 1:
        links.append(f'<{url(min(page - 1, pages) if pages else page - 1)}>; rel="prev"')
    if pages > page:
        links.append(f'<{url(page + 1)}>; rel="next"')
    return ", ".join(links)


# --- products and stock (GET /products?sku=…, variations, batch updates) -----------------------------

PRODUCTS_PATH = f"{API_PREFIX}/products"
PRODUCT_TYPES = ("simple", "grouped", "external", "variable", "variation")
_PRODUCT_ORDERBY = ("date", "id", "include", "title", "slug", "modified")
_VARIATION_VIA_PRODUCTS = ("To manipulate product variations you should use the "
                           "/products/&lt;product_id&gt;/variations/&lt;id&gt; endpoint.")


def _wc_stock_amount(value: Any) -> int | None:
    """``wc_stock_amount`` after the REST schema's integer check; ``None`` when not an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value.strip())
    return None


class ProductCatalog:
    """Products and variations (one id space, like WordPress posts) behind the store's lock.

    Stored items carry their *own* ``manage_stock`` (a bool); the API view of a variation says
    ``"parent"`` when only its parent manages stock, and shows the parent's quantity then, as
    WooCommerce does. Stock writes follow ``WC_REST_Products_Controller``: a quantity is only
    kept for a managed item, and ``manage_stock: false`` clears it.
    """

    def __init__(self, lock: threading.RLock, clock: Callable[[], datetime]) -> None:
        self.lock = lock
        self.clock = clock
        self.items: dict[int, dict[str, Any]] = {}
        self.baseline: dict[int, dict[str, Any]] = {}
        self._sku_index: dict[str, list[int]] | None = None  # casefolded sku -> ids; rebuilt lazily

    # -- seeding

    def load(self, products: Iterable[dict[str, Any]]) -> int:
        """Upsert products; a ``variable`` one may nest its variations under ``variations``
        as dicts (stored as items of their own, the parent keeps their ids)."""
        count = 0
        with self.lock:
            for raw in products:
                product = json.loads(json.dumps(raw))  # a deep copy
                nested = [v for v in product.get("variations") or [] if isinstance(v, dict)]
                if nested:
                    product["variations"] = [int(v["id"]) for v in nested]
                self._put(product, parent_id=0)
                for variation in nested:
                    self._put({**variation, "type": "variation"}, parent_id=int(product["id"]))
                count += 1 + len(nested)
        return count

    def _put(self, item: dict[str, Any], parent_id: int) -> None:
        item_id = item.get("id")
        if not isinstance(item_id, int) or isinstance(item_id, bool) or item_id <= 0:
            raise ValueError(f"a product needs a positive integer id: {item!r}"[:200])
        item.setdefault("type", "simple")
        item["parent_id"] = parent_id if item["type"] == "variation" else 0
        item.setdefault("name", item.get("sku") or f"Product {item_id}")
        item.setdefault("sku", "")
        item.setdefault("status", "publish")
        item["manage_stock"] = item.get("manage_stock") is True
        quantity = _wc_stock_amount(item.get("stock_quantity"))
        item["stock_quantity"] = quantity if item["manage_stock"] else None
        item.setdefault("date_modified_gmt", _wall(self._now()))
        if item["type"] == "variable":
            item.setdefault("variations", [])
        self._set_status(item)
        self.items[item_id] = item
        self._sku_index = None

    def snapshot(self) -> None:
        with self.lock:
            self.baseline = json.loads(json.dumps(self.items))
            self.baseline = {int(k): v for k, v in self.baseline.items()}

    def reset(self) -> None:
        with self.lock:
            self.items = {int(k): v for k, v in json.loads(json.dumps(self.baseline)).items()}
            self._sku_index = None

    def _now(self) -> datetime:
        return self.clock().astimezone(UTC).replace(microsecond=0)

    # -- views

    def view(self, item: dict[str, Any]) -> dict[str, Any]:
        """The API's answer for one stored item."""
        out = dict(item)
        out["date_modified"] = out["date_modified_gmt"]
        if item["type"] == "variation" and not item["manage_stock"]:
            parent = self.items.get(item["parent_id"]) or {}
            if parent.get("manage_stock"):
                out["manage_stock"] = "parent"
                out["stock_quantity"] = parent.get("stock_quantity")
                out["stock_status"] = parent.get("stock_status", "instock")
        if item["type"] != "variable":
            out.pop("variations", None)
        return out

    def by_sku(self, sku: str) -> dict[str, Any] | None:
        """The API view of the item whose SKU is exactly ``sku`` (first by id), or ``None``."""
        with self.lock:
            for key in sorted(self.items):
                if self.items[key]["sku"] == sku:
                    return self.view(self.items[key])
        return None

    @staticmethod
    def _set_status(item: dict[str, Any]) -> None:
        if item["manage_stock"]:
            item["stock_status"] = "instock" if (item["stock_quantity"] or 0) > 0 else "outofstock"
        else:
            item.setdefault("stock_status", "instock")

    # -- API

    def list(self, params: dict[str, str], *, parent_id: int | None = None) -> Response:
        """``GET /products`` (``parent_id`` None) or ``GET /products/{id}/variations``."""
        problems: dict[str, tuple[str, str]] = {}
        page = _int_param(params, "page", 1, 1, None, problems)
        per_page = _int_param(params, "per_page", 10, 1, MAX_PER_PAGE, problems)
        orderby = _enum_param(params, "orderby", "date", _PRODUCT_ORDERBY, problems)
        order = _enum_param(params, "order", "desc", ("asc", "desc"), problems)
        kind = params.get("type")
        if kind and kind not in PRODUCT_TYPES[:4]:
            problems["type"] = ("rest_not_in_enum", f"type is not one of {_wp_list(PRODUCT_TYPES[:4])}.")
        if problems:
            return _invalid_params(problems)
        with self.lock:
            if parent_id is not None:
                if self.items.get(parent_id, {}).get("type") in (None, "variation"):
                    return wp_error(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
                chosen = [i for i in self.items.values() if i["parent_id"] == parent_id]
            else:
                chosen = self._select(params.get("sku"), kind)
            # dates are whole seconds and seeded items share them: id breaks ties, as "date ID" does
            if orderby == "id":
                chosen.sort(key=lambda i: i["id"], reverse=order == "desc")
            else:
                chosen.sort(key=lambda i: (i["date_modified_gmt"], i["id"]), reverse=order == "desc")
            total = len(chosen)
            rows = [self.view(i) for i in chosen[(page - 1) * per_page: page * per_page]]
        if params.get("_fields"):
            fields = [f.strip() for f in params["_fields"].split(",") if f.strip()]
            rows = [_pick_fields(r, fields) for r in rows]
        pages = math.ceil(total / per_page) if total else 0
        return Response(200, wp_json(rows), [("X-WP-Total", str(total)), ("X-WP-TotalPages", str(pages))])

    def _select(self, sku_param: str | None, kind: str | None) -> list[dict[str, Any]]:
        """Items of a product list: with ``sku`` products AND variations whose SKU is in the list
        (MySQL compares case-insensitively; WooCommerce also tries the whole value when it has
        commas); without it products only."""
        if sku_param:
            skus = [s for s in sku_param.split(",")]
            if len(skus) > 1:
                skus.append(sku_param)
            if self._sku_index is None:  # updates never change a SKU: only seeding invalidates it
                self._sku_index = {}
                for key, stored in self.items.items():
                    if stored["sku"]:
                        self._sku_index.setdefault(stored["sku"].casefold(), []).append(key)
            wanted = {s.casefold() for s in skus if s}
            chosen = [self.items[k] for s in wanted for k in self._sku_index.get(s, ())]
        else:
            chosen = [i for i in self.items.values() if i["type"] != "variation"]
        return [i for i in chosen if not kind or i["type"] == kind]

    def get(self, item_id: int, parent_id: int | None = None) -> Response:
        with self.lock:
            item = self.items.get(item_id)
            if item is None or (parent_id is not None and item["parent_id"] != parent_id):
                return wp_error(404, _invalid_product_code(parent_id), "Invalid ID.")
            return Response(200, wp_json(self.view(item)))

    def batch(self, data: dict[str, Any], parent_id: int | None = None) -> Response:
        """``POST /products/batch`` or ``/products/{id}/variations/batch`` (updates only)."""
        ops = {op: data.get(op) or [] for op in ("create", "update", "delete")}
        if sum(len(v) for v in ops.values() if isinstance(v, list)) > BATCH_LIMIT:
            return wp_error(413, "woocommerce_rest_request_entity_too_large",
                            f"Unable to accept more than {BATCH_LIMIT} items for this request.")
        result: dict[str, list[Any]] = {}
        if ops["update"]:
            result["update"] = [self._batch_item(item, parent_id) for item in ops["update"]]
        for op in ("create", "delete"):
            if ops[op]:
                result[op] = [{"id": item.get("id", 0) if isinstance(item, dict) else item,
                               "error": {"code": "woocommerce_rest_sandbox_unsupported",
                                         "message": f"The sandbox does not {op} products.",
                                         "data": {"status": 400}}} for item in ops[op]]
        return Response(200, wp_json(result))

    def _batch_item(self, item: Any, parent_id: int | None) -> dict[str, Any]:
        raw_id = item.get("id") if isinstance(item, dict) else None
        item_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else 0
        status, body = self.update(item_id, item if isinstance(item, dict) else {}, parent_id)
        if status == 200:
            return body
        return {"id": item_id, "error": {"code": body["code"], "message": body["message"],
                                         "data": {"status": status}}}

    def _refusal(self, item: dict[str, Any] | None, parent_id: int | None,
                 data: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        if parent_id is None and item is not None and item["type"] == "variation":
            return 404, {"code": "woocommerce_rest_invalid_product_id", "message": _VARIATION_VIA_PRODUCTS}
        wrong_parent = parent_id is not None and item is not None and (
            item["type"] != "variation" or item["parent_id"] != parent_id)
        if item is None or wrong_parent:
            return 400, {"code": _invalid_product_code(parent_id), "message": "Invalid ID."}
        problems = []
        if "manage_stock" in data and not isinstance(data["manage_stock"], bool):
            problems.append("manage_stock is not of type boolean.")
        if "stock_quantity" in data and _wc_stock_amount(data["stock_quantity"]) is None:
            problems.append("stock_quantity is not of type integer.")
        if problems:
            return 400, {"code": "rest_invalid_param", "message": " ".join(problems)}
        return None

    def restock(self, sku: str, units: int) -> None:
        """``wc_restock_refunded_items`` for one line: a managed item's stock goes up by ``units``
        (an unknown SKU or an unmanaged item is left alone)."""
        with self.lock:
            item = self.by_sku(sku) if sku and units > 0 else None
            stored = self.items.get(item["id"]) if item is not None else None
            if stored is not None and stored["manage_stock"] and stored["stock_quantity"] is not None:
                self.items[stored["id"]] = {**stored, "stock_quantity": stored["stock_quantity"] + units,
                                            "date_modified_gmt": _wall(self._now())}

    def update(self, item_id: int, data: dict[str, Any],
               parent_id: int | None = None) -> tuple[int, dict[str, Any]]:
        """Apply the stock fields of one update; (HTTP status, item view or WP error body)."""
        with self.lock:
            item = self.items.get(item_id)
            refused = self._refusal(item, parent_id, data)
            if refused is not None or item is None:
                return refused or (400, {})
            quantity = _wc_stock_amount(data.get("stock_quantity"))
            changed = dict(item)
            if "manage_stock" in data:
                changed["manage_stock"] = data["manage_stock"]
            if not changed["manage_stock"]:
                changed["stock_quantity"] = None
            elif quantity is not None:
                changed["stock_quantity"] = quantity
            for name in ("name", "regular_price", "status"):
                if isinstance(data.get(name), str):
                    changed[name] = data[name]
            changed["date_modified_gmt"] = _wall(self._now())
            self._set_status(changed)
            self.items[item_id] = changed
            return 200, self.view(changed)


def _invalid_product_code(parent_id: int | None) -> str:
    kind = "product_variation" if parent_id else "product"
    return f"woocommerce_rest_{kind}_invalid_id"


def default_products() -> list[dict[str, Any]]:
    """The catalogue the order generator sells, as stocked products: physical products and the
    variations of the hoodie and apron manage their stock; virtual ones (gift card, course,
    e-book, membership) do not. Quantities are fixed, so demos and tests tell the same story."""
    from sandbox.generator import CATALOGUE

    products: dict[int, dict[str, Any]] = {}
    for n, entry in enumerate(CATALOGUE):
        if entry.variation_id:
            parent = products.setdefault(entry.product_id, {
                "id": entry.product_id, "name": entry.parent_name, "type": "variable",
                "sku": (entry.parent_name or "").upper().replace(" ", "-"), "manage_stock": False,
                "variations": []})
            parent["variations"].append({"id": entry.variation_id, "name": entry.name, "sku": entry.sku,
                                         "manage_stock": True, "stock_quantity": 5 + 3 * n,
                                         "regular_price": str(entry.price_eur)})
        else:
            products[entry.product_id] = {
                "id": entry.product_id, "name": entry.name, "type": "simple", "sku": entry.sku,
                "manage_stock": not entry.virtual, "stock_quantity": None if entry.virtual else 10 + 4 * n,
                "regular_price": str(entry.price_eur), "virtual": entry.virtual}
    return list(products.values())


def generate_products(simple: int, variable: int = 0, variations_each: int = 0, *, first_id: int = 10_000,
                      sku_prefix: str = "SKU") -> list[dict[str, Any]]:
    """A synthetic managed catalogue: ``simple`` products and ``variable`` ones with
    ``variations_each`` variations, SKUs ``<prefix>-<n>`` (n from 1), stock ``n % 50``."""
    products: list[dict[str, Any]] = []
    next_id, n = first_id, 0
    for _ in range(simple):
        n += 1
        products.append({"id": next_id, "type": "simple", "sku": f"{sku_prefix}-{n}", "manage_stock": True,
                         "stock_quantity": n % 50})
        next_id += 1
    for p in range(variable):
        parent = {"id": next_id, "type": "variable", "sku": f"{sku_prefix}-V{p + 1}", "manage_stock": False,
                  "variations": []}
        next_id += 1
        for _ in range(variations_each):
            n += 1
            parent["variations"].append({"id": next_id, "sku": f"{sku_prefix}-{n}", "manage_stock": True,
                                         "stock_quantity": n % 50})
            next_id += 1
        products.append(parent)
    return products


# --- HTTP ------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: SandboxStorefront) -> None:
        self.owner = owner
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut kept-alive connections so a stopped sandbox really stops answering."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    disable_nagle_algorithm = True  # header and body are separate writes; don't wait for ACKs
    server: _Server

    def version_string(self) -> str:
        return "Apache"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request stderr lines (benchmarks make hundreds of thousands)."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        try:
            body = self._read_body()
            params = _query_params(parts.query)
            if parts.path.startswith(CONTROL_PREFIX):
                resp = owner.control(method, parts.path, body)
            elif parts.path.startswith("/wp-json/"):
                host = self.headers.get("Host") or f"{owner.host}:{owner.port}"
                resp, _fault = owner.app.handle(method, parts.path, params, self.headers, body, host)
            else:
                resp = Response(404, b"<html><body><h1>Not Found</h1></body></html>", [],
                                "text/html; charset=UTF-8")
        except Exception as exc:  # a sandbox bug must still answer, and loudly
            print(f"sandbox storefront: error on {method} {self.path}: {exc!r}", file=sys.stderr, flush=True)
            resp = wp_error(500, "sandbox_internal_error", repr(exc))
        if not parts.path.startswith(CONTROL_PREFIX):
            with owner.store.lock:
                owner.store.log.append((method, self.path, resp.status))
        self._send(resp)

    def _send(self, resp: Response) -> None:
        try:
            self.send_response(resp.status)
            for name, value in resp.headers:
                self.send_header(name, value)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a `delay` fault): expected
            self.close_connection = True


# --- the public object -----------------------------------------------------------------------------


class SandboxStorefront:
    """A WooCommerce REST API v3 stand-in on a background thread.

    >>> with SandboxStorefront(orders) as shop:          # port 0 picks a free port
    ...     requests.get(shop.base_url + "/wp-json/wc/v3/orders", auth=("ck_sandbox", "cs_sandbox"))

    ``clock`` (aware ``datetime``) is the server's "now" for PUT bumps, notes and drift.
    """

    def __init__(
        self,
        orders: list[dict[str, Any]] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        consumer_key: str = "ck_sandbox",
        consumer_secret: str = "cs_sandbox",
        store_timezone: str = "Europe/Berlin",
        clock: Callable[[], datetime] | None = None,
        products: list[dict[str, Any]] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        #: Serve HTTPS with this server-side context (e.g. a self-signed certificate in tests).
        self.ssl_context = ssl_context
        self.store_timezone = store_timezone
        self.store = OrderStore(ZoneInfo(store_timezone), clock or (lambda: datetime.now(UTC)))
        self.catalog = ProductCatalog(self.store.lock, self.store.clock)
        self.app = StorefrontApp(self.store, consumer_key, consumer_secret, self.catalog)
        if orders:
            self.store.load(orders)
        if products:
            self.catalog.load(products)
        self.store.snapshot()
        self.catalog.snapshot()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: The webhook sender while the storefront sends webhooks (:meth:`send_webhooks`).
        self.webhooks: WebhookSender | None = None

    # -- lifecycle

    def start(self) -> SandboxStorefront:
        """Bind (port 0 = any free port) and serve on a daemon thread."""
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        if self.ssl_context is not None:
            # The handshake runs in accept(); a client refusing the certificate never gets a handler.
            self._server.socket = self.ssl_context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"sandbox-storefront-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_webhooks()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> SandboxStorefront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox storefront is not started")
        return f"{'https' if self.ssl_context is not None else 'http'}://{self.host}:{self.port}"

    # -- webhooks

    def send_webhooks(self, url: str, secret: str, **switches: Any) -> WebhookSender:
        """From now on, send a signed webhook for every order created, changed or deleted, as
        WooCommerce does (:mod:`sandbox.webhook_sender`; ``switches``: ``drop``, ``duplicate``,
        ``delay``, ``jitter``, ``seed``, ``workers``, ``timeout``, ``max_failures``). Returns the
        sender: its ``log()`` says what was sent, dropped, duplicated, and the answers."""
        self.stop_webhooks()
        source = f"{self.base_url}/" if self._server is not None else f"http://{self.host}:{self.port}/"
        sender = WebhookSender("woocommerce", Switches(url=url, secret=secret, **switches), source=source)
        self.webhooks = sender
        self.store.on_change = sender.announce
        return sender

    def stop_webhooks(self) -> None:
        """Send no more webhooks (what is queued is not sent); the sender's log stays readable."""
        self.store.on_change = None
        if self.webhooks is not None:
            self.webhooks.close()

    # -- in-process helpers

    def add_orders(self, orders: Iterable[dict[str, Any]]) -> int:
        """Upsert many orders (by id); returns how many."""
        return self.store.load(orders)

    def update_order(self, order_id: int, **changes: Any) -> dict[str, Any]:
        """What ``PUT /orders/<id>`` does with ``changes`` (``status``, ``customer_note``, …); the
        order as it is now. Raises ``KeyError`` for an unknown id."""
        resp = self.app.update_order(order_id, changes)
        if resp.status == 404:
            raise KeyError(order_id)
        return json.loads(resp.body)

    def delete_order(self, order_id: int, *, force: bool = False) -> None:
        """What ``DELETE /orders/<id>`` does: to the trash, or (``force``) gone for good."""
        resp = self.app.delete_order(order_id, force=force)
        if resp.status == 404:
            raise KeyError(order_id)

    def upsert_order(self, order: dict[str, Any]) -> None:
        self.store.upsert(order)

    def get_order(self, order_id: int) -> dict[str, Any] | None:
        """The stored order as the API would return it (a fresh copy), or None."""
        with self.store.lock:
            return self.store.decode(order_id)

    def touch_order(self, order_id: int, when: datetime) -> dict[str, Any]:
        """Set date_modified(_gmt) to ``when`` (aware); raises ``KeyError`` for an unknown id."""
        return self.store.touch(order_id, when)

    def inject_faults(self, faults: list[dict[str, Any]]) -> None:
        """Queue faults (FIFO), e.g. ``[{"type": "429", "retry_after": 2, "times": 3}]``."""
        self.store.add_faults(faults)

    @property
    def pending_faults(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [dict(f) for f in self.store.faults]

    @property
    def request_log(self) -> list[tuple[str, str, int]]:
        """``(method, path + query, status)`` of every API request so far."""
        with self.store.lock:
            return list(self.store.log)

    def notes(self, order_id: int) -> list[dict[str, Any]]:
        with self.store.lock:
            return [dict(n) for n in self.store.notes.get(order_id, ())]

    def refunds(self, order_id: int) -> list[dict[str, Any]]:
        """The order's refunds, oldest first (``GET /orders/{id}/refunds`` lists newest first)."""
        with self.store.lock:
            order = self.store.decode(order_id)
            return [] if order is None else [dict(r) for r in self.app._refunds(order_id, order)]

    def reset(self, orders: list[dict[str, Any]] | None = None) -> None:
        """Back to the orders given at construction (or exactly ``orders``); clears faults, notes, log.
        Products go back to those given at construction (or seeded before, see ``add_products``)."""
        self.store.reset(orders)
        self.catalog.reset()

    # -- products

    def add_products(self, products: Iterable[dict[str, Any]], *, baseline: bool = True) -> int:
        """Upsert products (variable ones may nest their variations); returns how many items.

        ``baseline``: ``reset()`` returns to the catalogue including these."""
        count = self.catalog.load(products)
        if baseline:
            self.catalog.snapshot()
        return count

    def product(self, item_id: int) -> dict[str, Any] | None:
        """The API view of a product or variation, or None."""
        with self.store.lock:
            item = self.catalog.items.get(item_id)
            return None if item is None else self.catalog.view(item)

    def product_by_sku(self, sku: str) -> dict[str, Any] | None:
        """The API view of the product or variation with exactly this SKU, or None."""
        return self.catalog.by_sku(sku)

    def stock_levels(self) -> dict[str, int | None]:
        """sku -> ``stock_quantity`` as the API shows it, for every item with a SKU."""
        with self.store.lock:
            views = [self.catalog.view(i) for i in self.catalog.items.values() if i["sku"]]
        return {v["sku"]: v["stock_quantity"] for v in views}

    # -- control endpoints (out-of-process tests)

    def control(self, method: str, path: str, body: bytes) -> Response:
        route = path[len(CONTROL_PREFIX):].rstrip("/")
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError:
            return wp_error(400, "sandbox_bad_json", "The body is not JSON.")
        try:
            return self._control(method, route, data)
        except (TypeError, ValueError, KeyError) as exc:
            return wp_error(400, "sandbox_bad_request", str(exc))

    def _control(self, method: str, route: str, data: Any) -> Response:
        if method == "POST" and route == "/faults":
            self.inject_faults(data if isinstance(data, list) else [data])
            return Response(200, wp_json({"queued": len(self.pending_faults)}))
        if method == "GET" and route == "/faults":
            return Response(200, wp_json(self.pending_faults))
        if method == "POST" and route == "/orders":
            count = self.add_orders(data if isinstance(data, list) else [data])
            return Response(200, wp_json({"upserted": count}))
        if method == "GET" and route.startswith("/orders/") and _route_id(route[8:]) is not None:
            order = self.get_order(int(route[8:]))
            return _invalid_id() if order is None else Response(200, wp_json(order))
        if method == "POST" and route == "/touch":
            when = datetime.fromisoformat(str(data["when"]).replace("Z", "+00:00"))
            if when.tzinfo is None:
                raise ValueError("'when' needs an offset or Z")
            return Response(200, wp_json(self.touch_order(int(data["id"]), when)))
        if method == "POST" and route == "/reset":
            self.reset(data.get("orders") if isinstance(data, dict) else None)
            return Response(200, wp_json({"orders": len(self.store.records)}))
        if method == "POST" and route == "/products":
            count = self.add_products(data if isinstance(data, list) else [data])
            return Response(200, wp_json({"upserted": count}))
        if method == "GET" and route == "/products":
            return Response(200, wp_json(self.stock_levels()))
        if method == "GET" and route.startswith("/products/") and _route_id(route[10:]) is not None:
            item = self.product(int(route[10:]))
            return wp_error(404, "woocommerce_rest_product_invalid_id", "Invalid ID.") if item is None else (
                Response(200, wp_json(item)))
        if method == "GET" and route == "/requests":
            return Response(200, wp_json([list(entry) for entry in self.request_log]))
        return wp_error(404, "sandbox_no_route", f"No sandbox route {method} {route}.")


# --- CLI -------------------------------------------------------------------------------------------


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.storefront --port 8081 --orders 300 --seed 42``; serves until SIGTERM/SIGINT."""
    import pendulum

    from sandbox.generator import generate_orders

    now = datetime.now(UTC).replace(microsecond=0)
    parser = argparse.ArgumentParser(prog="python -m sandbox.storefront", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--orders", type=int, default=300, help="how many orders to generate")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--start", type=_aware, default=now - timedelta(days=7),
                        help="ISO 8601; date_modified_gmt spreads over [start, end) (default: 7 days ago)")
    parser.add_argument("--end", type=_aware, default=now, help="ISO 8601 (default: now)")
    parser.add_argument("--first-id", type=int, default=1001)
    parser.add_argument("--key", default="ck_sandbox")
    parser.add_argument("--secret", default="cs_sandbox")
    parser.add_argument("--timezone", default="Europe/Berlin",
                        help="the store's timezone (local date_* fields)")
    add_cli_flags(parser)
    args = parser.parse_args(argv)
    webhooks = switches_from_cli(args)

    orders = generate_orders(args.orders, start=pendulum.instance(args.start),
                             end=pendulum.instance(args.end), seed=args.seed, first_id=args.first_id,
                             store_timezone=args.timezone)
    shop = SandboxStorefront(orders, host=args.host, port=args.port, consumer_key=args.key,
                             consumer_secret=args.secret, store_timezone=args.timezone)
    del orders
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    shop.start()
    print(f"sandbox storefront listening on {shop.base_url}", flush=True)
    if webhooks is not None:
        shop.send_webhooks(**vars(webhooks))
        print(f"sandbox storefront sends webhooks to {webhooks.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        shop.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
