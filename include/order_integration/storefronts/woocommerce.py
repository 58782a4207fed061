"""WooCommerce REST API v3 client: a loss-free window scan of orders, and their normalisation.

Connection contract
-------------------
Airflow connection type ``http``; ``host`` is the store's base URL *with scheme*
(``https://shop.example.com``, ``http://127.0.0.1:8081``; a WordPress in a sub-directory keeps
its path); ``login``/``password`` are the REST consumer key/secret, sent as HTTP Basic by
``HttpHook``. Unknown extras become HTTP headers (that is the hook's behaviour). TLS
verification stays on: a connection whose extra disables it is refused with ``ConfigError``.
The secret never travels in clear: plain ``http://`` is refused (``ConfigError``, before any
request) unless the host is loopback (``localhost``, 127.0.0.0/8, ``::1``), and a redirect is
followed only inside the store's own origin (same scheme, host and port, same method); one to
``http://`` or to another host is refused with ``ConfigError``, nothing sent to its target.
One ``requests`` session (``HttpHook.get_conn()``) serves every page of a scan.

Window translation
------------------
``iter_orders(modified_from, modified_to)`` returns the orders whose ``date_modified_gmt``
``m`` satisfies ``modified_from <= m < modified_to``. WooCommerce stores ``m`` at whole-second
precision and its filters are strict (``modified_after`` means ``m > after``,
``modified_before`` means ``m < before``), compared with the GMT column only when
``dates_are_gmt=true`` (otherwise the store's *local* time is compared). Values are sent as
naive UTC ``YYYY-MM-DDTHH:MM:SS``.

Both bounds are rounded the same way: *up* to the next whole second (``ceil``). For a
whole-second ``m``, ``m >= t`` is equivalent to ``m >= ceil(t)`` and ``m < t`` is equivalent to
``m < ceil(t)``, so the query ``modified_after = ceil(from) - 1s``,
``modified_before = ceil(to)`` selects exactly ``[from, to)``. Because a boundary ``b`` maps to
the same second ``ceil(b)`` whether it is the end of ``[a, b)`` or the start of ``[b, c)``,
adjacent windows partition time: an order lands in exactly one of them. (Flooring ``from``
while ceiling ``to`` would not: with ``b = 10:00:00.5`` an order at ``10:00:00`` would fall in
both windows.) A window with ``ceil(from) >= ceil(to)`` is empty and sends no request.

Keyset paging (why nothing is lost to page drift)
-------------------------------------------------
WooCommerce pages by offset, and offsets shift when orders change during a scan. Instead we
always ask for ``page=1`` of ``orderby=modified&order=asc`` (core appends ``ID`` to the sort,
so ties inside one second come in id order) and move a cursor: after a full page whose last
row was modified at second ``h``, the next query is ``modified_after = h - 1s``. Invariant:
every order whose *current* modification second is ``<= cursor`` has been seen. It holds
because the page held the first ``per_page`` orders of ``(cursor, end)`` in modification
order, so every order modified before ``h`` was in it; second ``h`` itself may have been cut by
the page size, so it is read again (re-read rows are deduplicated by id). The cursor strictly
advances (the page's first row is ``> cursor`` and ``h`` is later than that row), so the scan
ends. If a full page is one single second ``t`` (more than ``per_page`` orders modified in the
same second) the cursor cannot advance that way; we then page by offset *inside that second
only* (``modified_after = t - 1s``, ``modified_before = t + 1s``, ``page = 2, 3, ...``) until a
short page, and continue with ``modified_after = t``. Offsets inside a past second are stable:
an order can only leave it (by being modified again, to a later second that the scan or a
later window will read), never enter it. The scan stops at the first short page.

An order modified during the scan moves to a later second: it is read again later in this
scan (and the newer version wins) if that second is still inside the window, otherwise it
belongs to a later window, which will carry its latest version. Either way nothing is lost.

Each order is yielded exactly once: the scan keeps ``id -> (modification second, raw order)``
(the latest ``date_modified_gmt`` wins, a re-read of the same second replaces the older copy)
and yields only after the whole window was read, sorted by (modified, id). Memory is one dict
entry per order of the window (100k orders are fine). A side benefit: a failure mid-scan
yields nothing at all, so a partial window can never pass for a complete one.

Every page is checked: rows must be objects with an integer ``id`` and a parseable
``date_modified_gmt`` inside the queried bounds, in non-decreasing modification order. A page
that breaks this (a plugin ignoring the filter, or a CPT store sorting by the *local*
``post_modified`` across a DST fall-back hour) raises ``StorefrontError`` instead of silently
skipping orders.

Faults
------
401/403 → ``StorefrontAuthError`` (no retry); a refused TLS certificate → ``StorefrontAuthError``;
400/404/other 4xx → ``StorefrontRequestRejected`` (permanent: our request or the base URL is
wrong) with WooCommerce's ``code``/``message``; 429 and 503 → wait ``Retry-After`` (seconds or
HTTP date, capped at ``max_wait_seconds``) then retry; other 5xx, 408, connection errors and
timeouts, a 200 whose body is not a JSON list (an HTML page, truncated JSON), and a short page
that its own ``X-WP-Total`` says is incomplete (``[]`` in the middle of a listing) → exponential
backoff with tenacity. After ``max_attempts`` the iterator raises ``StorefrontError``.

How WooCommerce's totals relate
-------------------------------
``WC_Abstract_Order::calculate_totals`` stores ``discount_total = Σ line subtotal − Σ line
total`` and ``total = Σ line total + Σ fee total + shipping_total + cart_tax + shipping_tax``,
all amounts excluding tax (``total_tax = cart_tax + shipping_tax``). Hence
``subtotal − discount + shipping_total + fees + tax == total`` where ``subtotal`` is the sum of
the line ``subtotal`` s. It can be off by a minor unit or two when the store rounds tax at
subtotal or prices include tax (line amounts are kept unrounded and re-derived from gross
prices), when a negative fee was capped, or when an admin edited amounts without
"Recalculate". Refunds never change ``total`` (they are listed in ``refunds[]``). Line
``price`` is ``total / quantity`` (after discounts), so ``unit_price`` is derived from
``subtotal / quantity`` instead (before discounts).
"""

from __future__ import annotations

import calendar
import email.utils
import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import pendulum
import requests
import tenacity

from order_integration.currency import is_valid_currency, quantize
from order_integration.exceptions import ConfigError, StorefrontAuthError, StorefrontError
from order_integration.ids import parse_order_id
from order_integration.model import Address, LineItem, Order, Problem, format_time
from order_integration.storefronts.base import PageProgress, StorefrontRequestRejected

if TYPE_CHECKING:
    from airflow.providers.http.hooks.http import HttpHook

log = logging.getLogger(__name__)

#: Orders collection, relative to the connection's base URL (pretty permalinks required).
ORDERS_ENDPOINT = "wp-json/wc/v3/orders"
#: WooCommerce's maximum ``per_page``.
MAX_PER_PAGE = 100
_SNIPPET = 120
_WC_TIME = "%Y-%m-%dT%H:%M:%S"
#: Largest decimal exponent accepted for money and quantities (a quadrillion): beyond is garbage.
_MAX_DIGITS = 15
#: Money as WooCommerce writes it (``wc_format_decimal``): a plain decimal. An exponent
#: (``1e2``) or a decimal comma (``29,99``) means a plugin or locale broke the format: refused.
_PLAIN_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
#: No real order was created before this; 1970-01-01 is an unset (zero) date.
_EARLIEST = pendulum.datetime(2000, 1, 1, tz="UTC")
#: Characters no text may carry to the backend: control characters other than tab, LF and CR
#: (NUL, the ESC of ANSI sequences, DEL, C1) and the bidi embeddings, overrides and isolates,
#: which reorder how the text is shown (CVE-2021-42574). Zero-width joiners stay: emoji and
#: Persian need them.
_UNSAFE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: Longest text passed on: a spreadsheet cell's limit (32,767), well inside the 128 KiB field
#: limit of common CSV readers (Python's csv module); WooCommerce's own note column holds 64 KiB.
MAX_TEXT_LENGTH = 32_767
_ADDRESS_FIELDS = (
    ("first_name", "first_name"), ("last_name", "last_name"), ("company", "company"),
    ("address1", "address_1"), ("address2", "address_2"), ("city", "city"), ("region", "state"),
    ("postcode", "postcode"), ("country", "country"), ("phone", "phone"), ("email", "email"),
)


# --------------------------------------------------------------------------------------------
# Window translation
# --------------------------------------------------------------------------------------------


def _require_utc(value: object, name: str) -> pendulum.DateTime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be an aware UTC datetime, got {type(value).__name__}: {value!r}")
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"{name} {value.isoformat()} is naive; pass an aware UTC time (pendulum UTC)")
    if offset.total_seconds() != 0:
        raise ValueError(
            f"{name} {value.isoformat()} is not UTC (offset {offset}); convert it with .in_timezone('UTC')"
        )
    return pendulum.instance(value).in_timezone("UTC")


def _ceil_epoch(value: pendulum.DateTime) -> int:
    """Whole seconds since the epoch, rounded up (integer arithmetic: no float rounding)."""
    seconds = calendar.timegm(value.utctimetuple())
    return seconds + (1 if value.microsecond else 0)


def _floor_epoch(value: datetime) -> int:
    return calendar.timegm(value.utctimetuple())


def format_gmt(epoch_seconds: int) -> str:
    """Naive UTC ``YYYY-MM-DDTHH:MM:SS``: what WooCommerce expects with ``dates_are_gmt=true``."""
    return pendulum.from_timestamp(epoch_seconds, tz="UTC").strftime(_WC_TIME)


def window_seconds(modified_from: datetime, modified_to: datetime) -> tuple[int, int]:
    """``[from, to)`` as whole epoch seconds ``(first included, first excluded)``.

    Both ends are ceiled (see the module docstring), so adjacent windows partition. Raises
    ``ValueError``/``TypeError`` for naive or non-UTC inputs and for ``from > to``.
    """
    start = _require_utc(modified_from, "modified_from")
    end = _require_utc(modified_to, "modified_to")
    if start > end:
        raise ValueError(f"modified_from {start.isoformat()} is after modified_to {end.isoformat()}")
    return _ceil_epoch(start), _ceil_epoch(end)


def window_query(modified_from: datetime, modified_to: datetime) -> dict[str, str] | None:
    """The WooCommerce filter for ``[from, to)``; ``None`` when the window holds no whole second."""
    first, stop = window_seconds(modified_from, modified_to)
    if first >= stop:
        return None
    return {
        "modified_after": format_gmt(first - 1),  # strict '>' → includes `first`
        "modified_before": format_gmt(stop),  # strict '<' → excludes `stop`
        "dates_are_gmt": "true",
    }


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

#: Redirects followed inside the store's own origin (scheme, host and port) before giving up.
MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, lower case, the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number or out of range
        port = -1
    return scheme, (parts.hostname or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def is_loopback_host(host: str) -> bool:
    """``localhost`` or an address of 127.0.0.0/8 or ``::1`` (no name is looked up)."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_store_url(url: str, conn_id: str) -> None:
    """Refuse a base URL that would carry the API secret in clear: only ``https://`` is allowed,
    and plain ``http://`` only to a loopback host (a local stand-in). Raises ``ConfigError``."""
    scheme, host, _port = _origin(url)
    if scheme == "https" and host:
        return
    if scheme == "http" and is_loopback_host(host):
        return
    if scheme == "http":
        raise ConfigError(
            f"connection {conn_id!r}: host {url!r} is plain HTTP to a remote host, which would send the "
            "REST consumer secret and the orders in clear; refused. Use the store's https:// URL "
            "(plain http:// is allowed only for loopback: localhost, 127.0.0.0/8, ::1)"
        )
    raise ConfigError(
        f"connection {conn_id!r}: host {url!r} must be the store's base URL with an https:// scheme, "
        "e.g. https://shop.example.com"
    )



class _TransientError(StorefrontError):
    """A failure worth retrying; ``retry_after`` is the server's requested wait, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: pendulum.DateTime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); ``None`` if absent/bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=pendulum.UTC)
        now = now or pendulum.now("UTC")
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _describe(params: Mapping[str, str]) -> str:
    """The request's position for messages: its cursor or id list, and page."""
    if "include" in params:
        ids = params["include"].split(",")
        where = f"include={ids[0]}..{ids[-1]} ({len(ids)} ids)"
    else:
        where = f"modified_after={params.get('modified_after')}"
    return f"{where}, page={params.get('page')}"


def _snippet(response: requests.Response) -> str:
    return response.content[: _SNIPPET * 4].decode("utf-8", "replace")[:_SNIPPET]


def _wc_error(response: requests.Response) -> str:
    """WooCommerce's ``code: message`` from an error body, else the body's start."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return repr(_snippet(response))
    if isinstance(body, dict) and ("code" in body or "message" in body):
        return f"{body.get('code', '')}: {body.get('message', '')}"
    return repr(_snippet(response))


@dataclass(frozen=True, slots=True)
class _Page:
    rows: list[Any]
    total: int | None
    pages: int | None = None


def _total_header(response: requests.Response, name: str = "X-WP-Total") -> int | None:
    try:
        return int(response.headers.get(name, ""))
    except ValueError:
        return None


def _check_complete(page: _Page, params: Mapping[str, str]) -> None:
    """A page shorter than its own ``X-WP-Total``/``X-WP-TotalPages`` promise is incomplete.

    A short page ends a scan, so a page that lost rows on the way (a caching proxy, a plugin
    error swallowed into ``[]``) would silently end it early: it is retried instead."""
    per_page, number = int(params.get("per_page", MAX_PER_PAGE)), int(params.get("page", 1))
    if len(page.rows) >= per_page:
        return
    if page.total is not None:
        promised = min(per_page, page.total - (number - 1) * per_page)
        short = len(page.rows) < promised
        said = f"X-WP-Total={page.total}"
    else:
        short = page.pages is not None and number < page.pages
        said = f"X-WP-TotalPages={page.pages}"
    if short:
        raise _TransientError(
            f"HTTP 200 page {number} holds {len(page.rows)} of {per_page} orders but {said} says "
            "there are more: incomplete page"
        )


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Scan:
    """State of one window scan: the orders seen so far and the page counter."""

    stop: int
    seen: dict[int, tuple[int, dict[str, Any]]]
    pages: int = 0
    estimate: int | None = None


class WooCommerceClient:
    """Reads one WooCommerce store's orders through an Airflow ``http`` connection."""

    platform = "woocommerce"

    def __init__(
        self,
        conn_id: str,
        *,
        per_page: int = MAX_PER_PAGE,
        max_attempts: int = 6,
        max_wait_seconds: float = 60,
        on_page: PageProgress | None = None,
        timeout: float = 60,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """
        :param conn_id: Airflow ``http`` connection (see the module docstring).
        :param per_page: rows per request, 1..100.
        :param max_attempts: tries per page before giving up with ``StorefrontError``.
        :param max_wait_seconds: cap of one wait (``Retry-After`` or backoff).
        :param on_page: progress callback, called after every page.
        :param timeout: seconds for connect and for each read.
        :param sleep: how to wait between attempts (injected by tests).
        """
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ConfigError(f"per_page must be within 1..{MAX_PER_PAGE}, got {per_page}")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        self.conn_id = conn_id
        self.per_page = per_page
        self.max_attempts = max_attempts
        self.max_wait_seconds = max_wait_seconds
        self.on_page = on_page
        self.timeout = timeout
        self._sleep = sleep
        self._host = "?"
        self._backoff = tenacity.wait_exponential(multiplier=1, min=1, max=max_wait_seconds)

    # -- public API ------------------------------------------------------------------------

    def normalise(self, raw: dict[str, Any], store_id: str) -> Order:
        """See :func:`normalise_order`."""
        return normalise_order(raw, store_id)

    def iter_orders(
        self, modified_from: pendulum.DateTime, modified_to: pendulum.DateTime
    ) -> Iterator[dict[str, Any]]:
        """Raw orders modified in ``[modified_from, modified_to)``, each once, latest version.

        Input errors raise at the call; the scan runs on the first ``next()``. Orders come in
        (modified, id) order after the whole window was read; any failure raises instead.
        """
        first, stop = window_seconds(modified_from, modified_to)
        return self._iter(first, stop)

    def fetch_orders(self, order_ids: Iterable[int]) -> Iterator[dict[str, Any]]:
        """Raw orders with these ids, in the requested order; ids the store does not know are
        simply absent (the caller reports them). ``include`` takes 100 ids per request."""
        wanted = list(dict.fromkeys(order_ids))
        return self._fetch(wanted)

    def _fetch(self, wanted: list[int]) -> Iterator[dict[str, Any]]:
        if not wanted:
            return
        hook, session, url = self._open_session()
        found: dict[int, dict[str, Any]] = {}
        with session:
            for start in range(0, len(wanted), MAX_PER_PAGE):
                chunk = wanted[start : start + MAX_PER_PAGE]
                params = {"include": ",".join(map(str, chunk)), "orderby": "include",
                          "per_page": str(MAX_PER_PAGE), "page": "1", "status": "any"}
                page = self._get_page(hook, session, url, params)
                for index, row in enumerate(page.rows, start=1):
                    order_id = row.get("id") if isinstance(row, dict) else None
                    if order_id not in chunk:
                        raise StorefrontError(
                            f"woocommerce {self._host}: row {index} of an include= page is order "
                            f"{order_id!r}, which was not asked for; the store ignores 'include'"
                        )
                    found[order_id] = row
                if self.on_page is not None:
                    self.on_page(start // MAX_PER_PAGE + 1, len(found), len(wanted))
        log.info("woocommerce %s: fetched %d of %d requested orders", self._host, len(found), len(wanted))
        for order_id in wanted:
            if order_id in found:
                yield found[order_id]

    # -- scan --------------------------------------------------------------------------------

    def _iter(self, first: int, stop: int) -> Iterator[dict[str, Any]]:
        if first >= stop:
            return
        hook, session, url = self._open_session()
        with session:
            scan = _Scan(stop=stop, seen={})
            self._scan(scan, first - 1, lambda params: self._get_page(hook, session, url, params))
        log.info(
            "woocommerce %s: %d orders modified in [%s, %s) in %d pages",
            self._host, len(scan.seen), format_gmt(first), format_gmt(stop), scan.pages,
        )
        for key in sorted(scan.seen, key=lambda k: (scan.seen[k][0], k)):
            yield scan.seen[key][1]

    def _scan(self, scan: _Scan, after: int, fetch: Callable[[dict[str, str]], _Page]) -> None:
        while after + 1 < scan.stop:  # (after, stop) still holds a whole second
            page = fetch(self._params(after, scan.stop, 1))
            modified = self._absorb(scan, page, after, scan.stop, cursor=after)
            if len(page.rows) < self.per_page:
                return  # a short page: nothing of (after, stop) is left unread
            low, high = modified[0], modified[-1]
            if low == high:  # a whole page in one second: offset-page inside that second
                self._drain_second(scan, high, fetch)
                after = high
            else:  # re-read the last second: the page size may have cut it
                after = high - 1

    def _drain_second(self, scan: _Scan, second: int, fetch: Callable[[dict[str, str]], _Page]) -> None:
        before = min(second + 1, scan.stop)
        number = 2
        while True:
            page = fetch(self._params(second - 1, before, number))
            known = len(scan.seen)
            self._absorb(scan, page, second - 1, before, cursor=second - 1, page_number=number)
            if len(page.rows) < self.per_page:
                return
            if len(scan.seen) == known:
                raise StorefrontError(
                    f"woocommerce {self._host}: page {number} of the orders modified at "
                    f"{format_gmt(second)} brought no new order; the store does not honour 'page'"
                )
            number += 1

    def _params(self, after: int, before: int, page: int) -> dict[str, str]:
        return {
            "modified_after": format_gmt(after),
            "modified_before": format_gmt(before),
            "dates_are_gmt": "true",
            "orderby": "modified",
            "order": "asc",
            "per_page": str(self.per_page),
            "page": str(page),
        }

    def _absorb(
        self, scan: _Scan, page: _Page, after: int, before: int, *, cursor: int, page_number: int = 1
    ) -> list[int]:
        """Check the page's rows, keep the latest version of each; return their seconds in order."""
        seconds: list[int] = []
        new_ids = 0
        for index, row in enumerate(page.rows, start=1):
            order_id, second = self._row_key(row, index, after, before, seconds)
            previous = scan.seen.get(order_id)
            if previous is None:
                new_ids += 1
            if previous is None or second >= previous[0]:  # a re-read of the same second is fresher
                scan.seen[order_id] = (second, row)
            seconds.append(second)
        scan.pages += 1
        if scan.estimate is None and page.total is not None:
            scan.estimate = page.total
        estimate = None if scan.estimate is None else max(scan.estimate, len(scan.seen))
        log.debug(
            "woocommerce %s: page %d (offset page %d) rows=%d new_ids=%d cursor=%s",
            self._host, scan.pages, page_number, len(page.rows), new_ids, format_gmt(cursor),
        )
        if self.on_page is not None:
            self.on_page(scan.pages, len(scan.seen), estimate)
        return seconds

    def _row_key(self, row: Any, index: int, after: int, before: int, earlier: list[int]) -> tuple[int, int]:
        where = f"woocommerce {self._host}: row {index} of the page"
        if not isinstance(row, dict):
            raise StorefrontError(f"{where} is a {type(row).__name__}, not an order object")
        order_id = row.get("id")
        if not isinstance(order_id, int) or isinstance(order_id, bool):
            raise StorefrontError(f"{where} has no integer id ({order_id!r}); cannot deduplicate")
        modified = _parse_time(row.get("date_modified_gmt"))
        if modified is None:
            raise StorefrontError(
                f"{where} (order {order_id}) has an unusable date_modified_gmt "
                f"{row.get('date_modified_gmt')!r}; cannot page by modification time"
            )
        second = _floor_epoch(modified)
        if not after < second < before:
            raise StorefrontError(
                f"{where} (order {order_id}) was modified at {format_gmt(second)}, outside the "
                f"requested ({format_gmt(after)}, {format_gmt(before)}); the store ignores the filter"
            )
        if earlier and second < earlier[-1]:
            raise StorefrontError(
                f"{where} (order {order_id}, modified {format_gmt(second)}) comes after an order "
                f"modified {format_gmt(earlier[-1])}: the page is not sorted by date_modified_gmt "
                "(a store sorting by local time across a DST change?); keyset paging is unsafe"
            )
        return order_id, second

    # -- HTTP ------------------------------------------------------------------------------

    def _open_session(self) -> tuple[HttpHook, requests.Session, str]:
        from airflow.providers.http.hooks.http import HttpHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        hook = HttpHook(method="GET", http_conn_id=self.conn_id)
        try:
            conn = hook.get_connection(self.conn_id)
        except AirflowNotFoundException as exc:
            raise ConfigError(f"storefront connection {self.conn_id!r} is not defined") from exc
        host = conn.host or ""
        self._host = host
        if "://" not in host:
            raise ConfigError(
                f"connection {self.conn_id!r}: host {host!r} must be the store's base URL with scheme, "
                "e.g. https://shop.example.com"
            )
        check_store_url(host, self.conn_id)  # before the hook builds a session holding the secret
        if not conn.login or not conn.password:
            raise ConfigError(
                f"connection {self.conn_id!r}: login/password must hold the WooCommerce consumer key/secret"
            )
        session = hook.get_conn()
        verify = session.verify
        if verify is False or str(verify).strip().lower() in {"false", "0", "no", "off", ""}:
            session.close()
            raise ConfigError(
                f"connection {self.conn_id!r} disables TLS verification (extra verify={verify!r}); "
                "that is not allowed: install the store's CA instead"
            )
        try:
            check_store_url(hook.base_url, self.conn_id)  # the URL the hook really uses (port added)
        except ConfigError:
            session.close()
            raise
        return hook, session, hook.url_from_endpoint(ORDERS_ENDPOINT)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.max_wait_seconds)
        return float(self._backoff(state))

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0
        log.warning(
            "woocommerce %s: attempt %d/%d failed (%s); retrying in %.1fs",
            self._host, state.attempt_number, self.max_attempts, error, wait,
        )

    def _retrying(self) -> tenacity.Retrying:
        """The retry policy of one request: ``_TransientError`` is retried, anything else raised."""
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_TransientError),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def _get_page(self, hook: HttpHook, session: requests.Session, url: str, params: dict[str, str]) -> _Page:
        try:
            return self._retrying()(self._get_once, hook, session, url, params)
        except _TransientError as exc:
            raise StorefrontError(
                f"woocommerce {self._host}: giving up after {self.max_attempts} attempts "
                f"({_describe(params)}); last error: {exc}"
            ) from exc

    def _get_once(self, hook: HttpHook, session: requests.Session, url: str, params: dict[str, str]) -> _Page:
        page = self._read(self._send(hook, session, requests.Request("GET", url, params=params)))
        _check_complete(page, params)
        return page

    def _send(
        self, hook: HttpHook, session: requests.Session, request: requests.Request
    ) -> requests.Response:
        """Send one request on the session; transport failures become the package's errors.

        The response is returned whatever its status (see :meth:`_status_error`). Redirects are
        followed by hand, only inside the store's own origin and only when the method stays the
        same: a redirect to plain HTTP or to another host is refused with ``ConfigError`` before
        anything is sent there (requests would follow it, and only strips the credentials)."""
        prepared = session.prepare_request(request)
        check_store_url(prepared.url or "", self.conn_id)
        origin = _origin(prepared.url or "")
        for _hop in range(MAX_REDIRECTS + 1):
            response = self._send_once(hook, session, prepared)
            if not response.is_redirect:
                return response
            following = response.next  # what requests would send next (method and auth rules applied)
            target = following.url if following is not None and following.url else urljoin(
                response.url, response.headers.get("Location", ""))
            response.close()
            if _origin(target) != origin:
                raise ConfigError(self._redirect_refused(prepared, response, target, origin))
            if following is None or following.method != prepared.method:
                raise ConfigError(
                    f"woocommerce {self._host}: {prepared.method} {response.url} was redirected "
                    f"(HTTP {response.status_code}) to {target!r} as a {getattr(following, 'method', '?')}; "
                    f"not followed. Set connection {self.conn_id!r}'s host to the URL the store answers on"
                )
            prepared = following
        raise ConfigError(
            f"woocommerce {self._host}: more than {MAX_REDIRECTS} redirects from {request.url!r}; "
            f"check connection {self.conn_id!r}'s host"
        )

    def _redirect_refused(
        self, prepared: requests.PreparedRequest, response: requests.Response, target: str,
        origin: tuple[str, str, int | None],
    ) -> str:
        if _origin(target)[0] == "http" and origin[0] == "https":
            why = "plain HTTP, which would carry the orders (and could carry the credentials) in clear"
        else:
            why = "another origin than the store's (scheme, host or port differ)"
        return (
            f"woocommerce {self._host}: {prepared.method} {response.url} was redirected (HTTP "
            f"{response.status_code}) to {target!r}, {why}; not followed. Set connection "
            f"{self.conn_id!r}'s host to the store's real https:// base URL (or fix the redirect on the "
            "web server)"
        )

    def _send_once(
        self, hook: HttpHook, session: requests.Session, prepared: requests.PreparedRequest
    ) -> requests.Response:
        url = prepared.url
        try:
            response = hook.run_and_check(
                session, prepared,
                {"check_response": False, "timeout": self.timeout, "allow_redirects": False},
            )
        except requests.exceptions.SSLError as exc:
            if "certificate" in str(exc).lower():
                raise StorefrontAuthError(
                    f"woocommerce {self._host}: TLS certificate refused for connection "
                    f"{self.conn_id!r}: {exc}"
                ) from exc
            raise _TransientError(f"TLS error: {exc}") from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise ConfigError(f"connection {self.conn_id!r}: bad store URL {url!r}: {exc}") from exc
        except requests.exceptions.RequestException as exc:  # connection refused/reset, timeouts
            raise _TransientError(f"{type(exc).__name__}: {exc}") from exc
        return response

    def _read(self, response: requests.Response) -> _Page:
        if response.status_code == 200:
            return self._decode(response)
        raise self._status_error(response)

    def _status_error(self, response: requests.Response) -> StorefrontError:
        """The error for a response that is not the expected success (the caller raises it)."""
        status = response.status_code
        if status in (401, 403):
            return StorefrontAuthError(
                f"woocommerce {self._host}: credentials refused for connection {self.conn_id!r} "
                f"(HTTP {status} {_wc_error(response)})"
            )
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return _TransientError(f"HTTP {status} (Retry-After {retry_after})", retry_after=retry_after)
        if status >= 500 or status == 408:
            return _TransientError(f"HTTP {status} {_wc_error(response)}")
        if 400 <= status < 500:
            return StorefrontRequestRejected(
                f"woocommerce {self._host}: request rejected with HTTP {status} {_wc_error(response)} "
                f"for {response.url}"
            )
        return _TransientError(f"unexpected HTTP {status} {_wc_error(response)}")

    @staticmethod
    def _decode(response: requests.Response) -> _Page:
        content_type = response.headers.get("Content-Type", "")
        try:
            body = json.loads(response.content)  # bytes: json detects UTF-8/16/32 and a BOM
        except ValueError as exc:
            raise _TransientError(
                f"HTTP {response.status_code} with Content-Type {content_type!r} is not valid JSON "
                f"({exc}); body starts {_snippet(response)!r}"
            ) from exc
        if not isinstance(body, list):
            raise _TransientError(
                f"HTTP {response.status_code} with Content-Type {content_type!r} is a JSON "
                f"{type(body).__name__}, not a list of orders; body starts {_snippet(response)!r}"
            )
        pages = _total_header(response, "X-WP-TotalPages")
        return _Page(rows=body, total=_total_header(response), pages=pages)


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------


def _parse_time(value: object) -> pendulum.DateTime | None:
    """ISO 8601 → aware UTC; a value without offset is UTC (WooCommerce's ``*_gmt``)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=pendulum.UTC)
    return pendulum.instance(parsed).in_timezone("UTC")


class _Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, rule: str, detail: str) -> None:
        self.items.append(Problem(rule, detail))


def _text(value: object) -> str:
    """A string field as sent; numbers become their text, anything else (null, objects) empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float | Decimal):
        return str(value)
    return ""


def _money(value: object, label: str, problems: _Problems, *, required: bool = True) -> Decimal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.add("parseable_money", f"{label} is missing")
        return None
    amount: Decimal | None = None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            amount = None
    if amount is None or not amount.is_finite():
        problems.add("parseable_money", f"{label} {value!r} is not a decimal amount")
        return None
    if amount and amount.adjusted() > _MAX_DIGITS:  # '1e999999' parses but breaks rounding later
        problems.add("parseable_money", f"{label} {value!r} is out of range")
        return None
    if not _PLAIN_DECIMAL.fullmatch(str(value).strip()):
        problems.add("parseable_money", f"{label} {value!r} is not a plain decimal amount (like 12.30)")
        return None
    return amount


def _quantity(value: object, label: str, problems: _Problems) -> int | None:
    number: Decimal | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float | str):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            number = None
    # bounded before int(): int(Decimal('1e999999')) would build a million-digit number
    if (
        number is not None and number.is_finite() and (not number or number.adjusted() <= _MAX_DIGITS)
        and number == number.to_integral_value()
    ):
        return int(number)
    problems.add("parseable_quantity", f"{label} {value!r} is not an integer")
    return None


def _time(raw: Mapping[str, Any], key: str, problems: _Problems) -> pendulum.DateTime | None:
    value = raw.get(key)
    parsed = _parse_time(value)
    if parsed is None:
        detail = f"{key} is missing" if value in (None, "") else f"{key} {value!r} is not an ISO 8601 time"
        problems.add("parseable_date", detail)
    return parsed


def _address(value: object, label: str, problems: _Problems) -> Address:
    if value is None:
        return Address()
    if not isinstance(value, dict):
        problems.add("parseable_address", f"{label} is a {type(value).__name__}, not an object")
        return Address()
    return Address(
        first_name=_text(value.get("first_name")),
        last_name=_text(value.get("last_name")),
        company=_text(value.get("company")),
        address1=_text(value.get("address_1")),
        address2=_text(value.get("address_2")),
        city=_text(value.get("city")),
        region=_text(value.get("state")),
        postcode=_text(value.get("postcode")),
        country=_text(value.get("country")),
        phone=_text(value.get("phone")),
        email=_text(value.get("email")),
    )


def _list(raw: Mapping[str, Any], key: str, problems: _Problems) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add("parseable_lines", f"{key} is a {type(value).__name__}, not a list")
        return []
    return value


def _unit_price(
    subtotal: Decimal | None, quantity: int | None, currency: str, label: str, problems: _Problems
) -> Decimal | None:
    if subtotal is None or quantity is None:
        return None  # the cause is already recorded
    if quantity == 0:
        problems.add("parseable_money", f"{label} unit price is undefined: quantity is 0")
        return None
    unit = subtotal / quantity
    return quantize(unit, currency) if is_valid_currency(currency) else unit


def _line(item: object, number: int, currency: str, problems: _Problems) -> LineItem:
    label = f"line {number}"
    if not isinstance(item, dict):
        problems.add("parseable_lines", f"{label} is a {type(item).__name__}, not an object")
        return LineItem(number, "", "", None, None, None, None)
    quantity = _quantity(item.get("quantity"), f"{label} quantity", problems)
    subtotal = _money(item.get("subtotal"), f"{label} subtotal", problems)
    return LineItem(
        line_number=number,
        sku=_text(item.get("sku")),
        product_name=_text(item.get("name")),
        quantity=quantity,
        unit_price=_unit_price(subtotal, quantity, currency, label, problems),
        line_subtotal=subtotal,
        line_total=_money(item.get("total"), f"{label} total", problems),
        line_tax=_money(item.get("total_tax"), f"{label} total_tax", problems, required=False),
    )


def _sum(values: list[Decimal | None]) -> Decimal | None:
    if any(v is None for v in values):
        return None
    return sum((v for v in values if v is not None), Decimal(0))


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _order_id(value: object, problems: _Problems) -> str:
    """A WooCommerce order id (a positive ``BIGINT UNSIGNED``; digits in a string pass too) as
    text. Anything else (``../../x``, ``CON``, 300 digits) is a problem and gives ``""``: it
    never becomes a ledger key or a value the backend might use as a file name."""
    number = parse_order_id(value)
    if number is not None:
        return str(number)
    problems.add("order_id_present", "id is missing" if value in (None, "") else
                 f"id {_shown(value)} is not a WooCommerce order id (an integer from 1 to 2^64-1)")
    return ""


def _check_dates(order: Order, problems: _Problems) -> None:
    """Times that parse but cannot be true: before 2000 (an unset date) or created after modified."""
    created, updated = order.created_at, order.updated_at
    for key, value in (("date_created_gmt", created), ("date_modified_gmt", updated)):
        if value is not None and value < _EARLIEST:
            problems.add("plausible_date", f"{key} {format_time(value)} is before 2000: an unset date, "
                                           "not a real order time")
    if created is not None and updated is not None and created >= _EARLIEST and created > updated:
        problems.add("plausible_date", f"date_created_gmt {format_time(created)} is after date_modified_gmt "
                                       f"{format_time(updated)}: an order is not modified before it exists")


def _check_text(order: Order, problems: _Problems) -> None:
    """Every text field the backend gets, checked for :data:`_UNSAFE_TEXT` and its length (one
    problem per field and kind). One search over all of them first: clean orders cost little."""
    texts = [order.order_number, order.status, order.currency, order.customer_note]
    for address in (order.billing, order.shipping):
        texts += [getattr(address, attr) for attr, _key in _ADDRESS_FIELDS]
    for line in order.lines:
        texts += (line.sku, line.product_name)
    if max(map(len, texts)) <= MAX_TEXT_LENGTH and _UNSAFE_TEXT.search("\n".join(texts)) is None:
        return
    labels = ["number", "status", "currency", "customer_note"]
    for prefix in ("billing", "shipping"):
        labels += [f"{prefix}.{key}" for _attr, key in _ADDRESS_FIELDS]
    for line in order.lines:
        labels += (f"line {line.line_number} sku", f"line {line.line_number} name")
    for label, text in zip(labels, texts, strict=True):
        if len(text) > MAX_TEXT_LENGTH:
            problems.add("text_length", f"{label} is {len(text):,} characters long, more than "
                                        f"{MAX_TEXT_LENGTH:,}: a backend's CSV reader may refuse the file")
        found = _UNSAFE_TEXT.search(text)
        if found is not None:
            problems.add("safe_text", f"{label} contains U+{ord(found.group()):04X} at character "
                                      f"{found.start() + 1}: control and bidi control characters are not "
                                      "passed on to the backend")


def _normalise(raw: Mapping[str, Any], store_id: str, problems: _Problems) -> Order:
    currency = _text(raw.get("currency"))
    lines = tuple(
        _line(item, number, currency, problems)
        for number, item in enumerate(_list(raw, "line_items", problems), start=1)
    )
    fee_lines = _list(raw, "fee_lines", problems)
    fees = _sum([
        _money(fee.get("total") if isinstance(fee, dict) else fee, f"fee {n} total", problems)
        for n, fee in enumerate(fee_lines, start=1)
    ])
    billing = _address(raw.get("billing"), "billing", problems)
    shipping = _address(raw.get("shipping"), "shipping", problems)
    order = Order(
        store_id=store_id,
        order_id=_order_id(raw.get("id"), problems),
        order_number=_text(raw.get("number")),
        status=_text(raw.get("status")),
        created_at=_time(raw, "date_created_gmt", problems),
        updated_at=_time(raw, "date_modified_gmt", problems),
        currency=currency,
        customer_email=billing.email,
        billing=billing,
        shipping=shipping,
        lines=lines,
        subtotal=_sum([line.line_subtotal for line in lines]),
        discount=_money(raw.get("discount_total"), "discount_total", problems),
        shipping_total=_money(raw.get("shipping_total"), "shipping_total", problems),
        fees=fees,
        tax=_money(raw.get("total_tax"), "total_tax", problems),
        total=_money(raw.get("total"), "total", problems),
        customer_note=_text(raw.get("customer_note")),
        needs_shipping=bool(raw.get("shipping_lines")) or not shipping.is_empty(),
    )
    _check_dates(order, problems)
    _check_text(order, problems)
    return replace(order, parse_problems=tuple(problems.items))


def normalise_order(raw: dict[str, Any], store_id: str) -> Order:
    """A WooCommerce v3 order dict as the canonical :class:`Order`. Pure; never raises.

    A value that cannot be parsed becomes ``None`` and adds a :class:`Problem` naming the
    field and the value (rules ``parseable_money``, ``parseable_quantity``, ``parseable_date``,
    ``order_id_present``, ``parseable_lines``, ``parseable_address``, ``normalisable``), and a
    value that parses but must not go on likewise (``plausible_date``: before 2000 or created
    after modified; ``safe_text``: a control or bidi control character in a text field;
    ``text_length``: a text longer than :data:`MAX_TEXT_LENGTH`).
    ``unit_price`` is ``subtotal / quantity`` (before discounts; WooCommerce's ``price`` is
    after them), rounded half-up to the currency's minor units when the currency is ISO 4217.
    ``subtotal`` sums the line subtotals, ``fees`` the fee lines (0 without any), ``tax`` is
    ``total_tax`` (cart and shipping tax), ``discount`` is ``discount_total``.
    """
    problems = _Problems()
    if not isinstance(raw, dict):
        problems.add("normalisable", f"the order is a {type(raw).__name__}, not an object")
        raw = {}
    try:
        return _normalise(raw, store_id, problems)
    except Exception as exc:  # last resort: a malformed order must never stop the batch
        # ... but a bug must not hide either: the traceback goes to the task log
        log.exception("woocommerce: order id %s could not be normalised (store %s); quarantined as "
                      "'normalisable'", _shown(raw.get("id")), store_id)
        problems.add("normalisable", f"unexpected {type(exc).__name__}: {exc}")
        order_id = parse_order_id(raw.get("id"))
        return Order(
            store_id=store_id, order_id="" if order_id is None else str(order_id),
            order_number=_text(raw.get("number")),
            status=_text(raw.get("status")), created_at=None, updated_at=None,
            currency=_text(raw.get("currency")), customer_email="", billing=Address(),
            shipping=Address(), lines=(), subtotal=None, discount=None, shipping_total=None,
            fees=None, tax=None, total=None, parse_problems=tuple(problems.items),
        )
