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
same second: a bulk edit in the admin) the cursor cannot advance that way; we then read that
second alone by offset (``modified_after = t - 1s``, ``modified_before = t + 1s``,
``page = 1, 2, ...`` until a short page) and continue with ``modified_after = t``. Offsets inside
a past second are *not* stable: no order enters it, but one can leave it (modified again, to a
later second that the scan or a later window reads), and a leave moves every later order of
``t`` one offset down, so the next page would skip one that nothing else reads. So second ``t``
is read in *passes*, each from page 1 of its own query: a pass is complete when every page of it
counted the same ``X-WP-Total`` and its rows add up to exactly that total (nothing left ``t``
during the pass, so its offsets held and it saw every order of ``t``), or when it read the same
ids in the same order as the pass before (an order that left behind a pass's position was read
by that pass and is missing from the next; this is how a store that sends no count completes,
in two passes at least). Otherwise ``t`` is read again; after 5 passes the scan raises
``StorefrontError`` (it hands nothing on; the task's retry reads the window again). Every pass's
rows are kept like any other row (the later second wins), and a quiet second costs one request
more than its pages: the keyset page that found it. When orders come faster than a page a second
(a busy sale: 1M orders an hour are about 280 a second) every second is crowded and that keyset
page would be one request in four; so after two crowded seconds in a row, each counted by the
store, the scan reads the next second by passes at once (its first page is the rows the keyset
page would have carried), and goes back to keyset pages after the first second that holds less
than a page (read whole by that one short page). (A second still running at the store can also
*gain* orders; a gain changes the count too, unless a gain and a leave cancel out between two
pages. Like the cursor, which never returns to a second behind it, the passes rely on ``t``
being past.) The scan stops at the first short page.

An order modified during the scan moves to a later second: it is read again later in this
scan (and the newer version wins) if that second is still inside the window, otherwise it
belongs to a later window, which will carry its latest version. Either way nothing is lost.

Each order is handed on exactly once: the scan keeps where each id's latest row lies (the latest
``date_modified_gmt`` wins, a re-read of the same second replaces the older copy; flat arrays of
id, modification second and length per row, and a hash table id -> row) while every row's raw
JSON bytes, as the page carried them, are appended to an anonymous temporary file (the
*spool*); only after the whole window was read are the kept rows read back, sorted by
(modified, id). Memory is one small index entry per order of the window, whatever the
orders' size; the rows themselves stay on disk until the end. A side benefit: a failure
mid-scan hands nothing on, so a partial window can never pass for a complete one, and the
spool (unlinked from its creation) disappears with the failure.

Each page is decoded once with msgspec: the list into raw row slices, and each row into just
``id`` and ``date_modified_gmt`` (other fields skipped). :meth:`WooCommerceClient.write_orders_jsonl`
copies the kept rows' bytes into staging as JSON Lines without re-encoding them;
:meth:`~WooCommerceClient.iter_orders` decodes them into dicts for callers that want dicts.

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
"""

from __future__ import annotations

import json
import logging
import operator
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate, compress, groupby, islice
from typing import IO, TYPE_CHECKING, Any

import msgspec
import pendulum
import requests

from order_integration.exceptions import ConfigError, StorefrontAuthError, StorefrontError
from order_integration.model import Order
from order_integration.storefronts.base import PageProgress, StorefrontRequestRejected
from order_integration.storefronts.http import (  # noqa: F401 (re-exported for older imports)
    StoreHttp,
    TransientError,
    check_store_url,
    is_loopback_host,
    parse_retry_after,
    snippet,
)
from order_integration.storefronts.normalise import parse_iso
from order_integration.storefronts.window import (
    format_gmt,
    window_seconds,
)
from order_integration.storefronts.woocommerce_normalise import identify, normalise_order

if TYPE_CHECKING:
    from airflow.providers.http.hooks.http import HttpHook
    from airflow.sdk import Connection

log = logging.getLogger(__name__)

#: Orders collection, relative to the connection's base URL (pretty permalinks required).
ORDERS_ENDPOINT = "wp-json/wc/v3/orders"
#: WooCommerce's maximum ``per_page``.
MAX_PER_PAGE = 100
#: Passes over one crowded second (more orders than a page) before the scan gives up.
_MAX_PASSES = 5
#: After this many crowded seconds in a row (each counted by the store), the next second is
#: read as a crowded one straight away, without the keyset page that would only find it so.
_CROWDED_RUN = 2


# --------------------------------------------------------------------------------------------
# Window translation
# --------------------------------------------------------------------------------------------


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

def _describe(params: Mapping[str, str]) -> str:
    """The request's position for messages: its cursor or id list, and page."""
    if "include" in params:
        ids = params["include"].split(",")
        where = f"include={ids[0]}..{ids[-1]} ({len(ids)} ids)"
    else:
        where = f"modified_after={params.get('modified_after')}"
    return f"{where}, page={params.get('page')}"


def _wc_error(response: requests.Response) -> str:
    """WooCommerce's ``code: message`` from an error body, else the body's start."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return repr(snippet(response))
    if isinstance(body, dict) and ("code" in body or "message" in body):
        return f"{body.get('code', '')}: {body.get('message', '')}"
    return repr(snippet(response))


@dataclass(frozen=True, slots=True)
class _Page:
    rows: list[msgspec.Raw]  # each row's JSON bytes as the page carried them
    total: int | None
    pages: int | None = None


class _RowKey(msgspec.Struct):
    """The two fields the scan needs from a row; typed ``Any`` so that the checks below, not
    msgspec, decide what is refused (and say so in the scan's own words)."""

    id: Any = None
    date_modified_gmt: Any = None


_decode_page = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_key = msgspec.json.Decoder(_RowKey).decode
_decode_row = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def _modified_second(value: object) -> int | None:
    """Epoch second of an ISO 8601 time (naive = UTC), floored; ``None`` if it does not parse.

    The same answer as ``normalise.parse_time`` then flooring, without pendulum per row."""
    parsed = parse_iso(value)
    return None if parsed is None else (parsed - _EPOCH) // _SECOND  # exact, floored, any offset


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
        raise TransientError(
            f"HTTP 200 page {number} holds {len(page.rows)} of {per_page} orders but {said} says "
            "there are more: incomplete page"
        )


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


#: Fibonacci hashing (2**64 / golden ratio, odd): an id's home slot is the top bits of
#: ``id * _MIX mod 2**64``, which spreads consecutive and strided ids alike.
_MIX = 0x9E3779B97F4A7C15
_U64 = 2**64 - 1
#: Hash table entries (1 + a row number): 4 bytes where the platform has them.
_ROW = "I" if array("I").itemsize >= 4 else "L"
#: The most ids :meth:`_Scan.reserve` makes room for ahead (a table of 2**21 slots, 8 MB, and
#: columns of 1.75 million rows, 44 MB); beyond that the index grows as ids come, whatever a
#: store's ``X-WP-Total`` says.
_RESERVE_MAX = 1_400_000
_KEPT = bytes([1, 0]) + bytes(254)  # bytes.translate table: superseded 0/1 -> kept 1/0


def _zeros(typecode: str, size: int) -> array[int]:
    """An array of ``size`` zeros, built in place (a temporary ``bytes`` of its size would make
    the allocator keep later arrays of that size in its heap, where growing them leaves holes)."""
    return array(typecode, (0,)) * size


@dataclass(slots=True)
class _Scan:
    """State of one window scan: where each order's latest row lies in the spool, how many
    distinct orders were seen, and the page counter.

    The index is flat arrays, about 40 bytes an order at 1M (issue 18; the dict of tuples of
    Python ints it replaces took about 270). Each kept row takes the next entry (``rows``
    so far) of fixed-width columns: ``_ids``, ``_seconds`` (modification second), ``_lengths``
    (a row's offset in the spool is the sum of the lengths before it) and ``_superseded`` (1
    once a later row of the same id was kept). The columns are sized ahead (:meth:`reserve`)
    and doubled when full rather than appended to, so that growing does not fragment the heap.
    An open-addressing hash table, ``_table`` (1 + the number of an id's latest row, 0 for a
    free slot; the id is that row's in ``_ids``; linear probing, at most 70% full), says whether
    an id was seen and where its kept row is. Ids outside ``1 .. 2**64 - 1`` do not fit
    ``_ids`` (no store sends them; normalisation quarantines them): ``_other`` maps them to
    their latest row, and their rows hold 0 in ``_ids`` (``_other_ids``: row -> id)."""

    stop: int
    spool: IO[bytes]
    orders: int = 0  # distinct ids seen so far
    pages: int = 0
    estimate: int | None = None
    rows: int = 0  # rows kept so far (the columns' used entries)
    _ids: array[int] = field(default_factory=lambda: _zeros("Q", 1024))
    _seconds: array[int] = field(default_factory=lambda: _zeros("q", 1024))
    _lengths: array[int] = field(default_factory=lambda: _zeros("q", 1024))
    _superseded: bytearray = field(default_factory=lambda: bytearray(1024))
    _bits: int = 10  # the table has 2 ** _bits slots ...
    _room: int = 7 * (1 << 10) // 10  # ... and takes this many more ids before it doubles
    _table: array[int] = field(default_factory=lambda: _zeros(_ROW, 1 << 10))
    _other: dict[int, int] = field(default_factory=dict)
    _other_ids: dict[int, int] = field(default_factory=dict)

    def offer(self, order_id: int, second: int, row: msgspec.Raw | bytes) -> bool:
        """Keep ``row`` as ``order_id``'s latest version unless the row kept for it is of a
        later second (a re-read of the same second is fresher and replaces it); return whether
        ``order_id`` is new to the scan."""
        if not 0 < order_id <= _U64:
            return self._offer_other(order_id, second, row)
        table, ids, seconds = self._table, self._ids, self._seconds
        mask = len(table) - 1
        slot = ((order_id * _MIX) & _U64) >> (64 - self._bits)  # its home slot
        while (entry := table[slot]) and ids[entry - 1] != order_id:
            slot = (slot + 1) & mask
        if entry and second < seconds[entry - 1]:
            return False
        table[slot] = self._append(order_id, second, row) + 1  # a table entry is 1 + the row's number
        if entry:
            self._superseded[entry - 1] = 1
            return False
        self.orders += 1
        self._room -= 1
        if not self._room:
            self._rehash(self._bits + 1)
        return True

    def _offer_other(self, order_id: int, second: int, row: msgspec.Raw | bytes) -> bool:
        previous = self._other.get(order_id, -1)
        if previous >= 0 and second < self._seconds[previous]:
            return False
        number = self._other[order_id] = self._append(0, second, row)
        self._other_ids[number] = order_id
        if previous >= 0:
            self._superseded[previous] = 1
            return False
        self.orders += 1
        return True

    def _append(self, order_id: int, second: int, row: msgspec.Raw | bytes) -> int:
        """Write ``row`` to the spool and its entry to the columns; return its row number. A
        JSON Lines row is one line: a newline byte in a row can only be whitespace between
        tokens (JSON strings escape theirs), so a space does the same."""
        data = bytes(row)
        if b"\n" in data:
            data = data.replace(b"\n", b" ")
        self.spool.write(data)
        number = self.rows
        if number == len(self._lengths):
            self._widen(2 * number)
        self._ids[number] = order_id
        self._seconds[number] = second
        self._lengths[number] = len(data)
        self.rows = number + 1
        return number

    def _widen(self, size: int) -> None:
        """Make the columns ``size`` entries long (what lies past ``rows`` is never read)."""
        more = size - len(self._lengths)
        self._ids.extend(_zeros("Q", more))
        self._seconds.extend(_zeros("q", more))
        self._lengths.extend(_zeros("q", more))
        self._superseded.extend(bytes(more))

    def reserve(self, orders: int) -> None:
        """Make room for ``orders`` ids (at most ``_RESERVE_MAX``) and their re-reads at once,
        sparing the index its doublings; called with the window's ``X-WP-Total``."""
        orders = min(orders, _RESERVE_MAX)
        if orders * 5 // 4 > len(self._lengths):  # a scan re-reads about 17% of its rows
            self._widen(orders * 5 // 4)
        bits = self._bits
        while orders * 10 > (7 << bits):
            bits += 1
        if bits > self._bits:
            self._rehash(bits)

    def _rehash(self, bits: int) -> None:
        """Move the hash table to one of ``2 ** bits`` slots."""
        old, ids = self._table, self._ids
        self._room += 7 * ((1 << bits) - len(old)) // 10
        self._bits = bits
        self._table = table = _zeros(_ROW, 1 << bits)
        shift, mask = 64 - bits, len(table) - 1
        for entry in old:
            if entry:
                slot = ((ids[entry - 1] * _MIX) & _U64) >> shift
                while table[slot]:
                    slot = (slot + 1) & mask
                table[slot] = entry

    def kept_rows(self) -> Iterator[bytes]:
        """The kept rows' bytes in (modified, id) order."""
        self.spool.flush()
        for offset, length in self._kept_order():
            self.spool.seek(offset)
            yield self.spool.read(length)

    def _kept_order(self) -> Iterator[tuple[int, int]]:
        """(offset, length) of the kept rows in (modified, id) order."""
        rows, seconds, lengths = self.rows, self._seconds, self._lengths
        ids = map(self._id, range(rows)) if self._other_ids else self._ids
        offsets = accumulate(lengths, initial=0)
        kept = compress(zip(seconds, ids, offsets, lengths, strict=False),  # the mask: `rows` long
                        self._superseded[:rows].translate(_KEPT))
        if not all(map(operator.le, islice(seconds, rows), islice(seconds, 1, rows))):
            yield from (entry[2:] for entry in sorted(kept))  # never after checked pages
            return
        # Seconds never decrease in write order: sort each second's rows by id when they do not
        # come in id order already (as the store sorts them, they mostly do).
        for _second, group in groupby(kept, key=operator.itemgetter(0)):
            entries = list(group)
            if not all(map(operator.lt, entries, islice(entries, 1, None))):
                entries.sort()
            yield from (entry[2:] for entry in entries)

    def _id(self, number: int) -> int:
        return self._ids[number] or self._other_ids[number]


class WooCommerceClient(StoreHttp):
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
        super().__init__(conn_id, max_attempts=max_attempts, max_wait_seconds=max_wait_seconds,
                         timeout=timeout, sleep=sleep)
        self.per_page = per_page
        self.on_page = on_page

    # -- public API ------------------------------------------------------------------------

    def normalise(self, raw: dict[str, Any], store_id: str) -> Order:
        """See :func:`normalise_order`."""
        return normalise_order(raw, store_id)

    def identify(self, raw: dict[str, Any]) -> tuple[str, str]:
        """See :func:`identify`."""
        return identify(raw)

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
        hook, session, url = self._open_session(ORDERS_ENDPOINT)
        found: dict[int, dict[str, Any]] = {}
        with session:
            for start in range(0, len(wanted), MAX_PER_PAGE):
                chunk = wanted[start : start + MAX_PER_PAGE]
                params = {"include": ",".join(map(str, chunk)), "orderby": "include",
                          "per_page": str(MAX_PER_PAGE), "page": "1", "status": "any"}
                page = self._get_page(hook, session, url, params)
                for index, raw in enumerate(page.rows, start=1):
                    row = _decode_row(raw)
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

    def write_orders_jsonl(
        self, modified_from: pendulum.DateTime, modified_to: pendulum.DateTime, out: IO[bytes]
    ) -> int:
        """Write the orders :meth:`iter_orders` would yield to ``out`` as JSON Lines, their bytes
        as the store sent them (never re-encoded); return how many. Nothing is written unless
        the whole window was read."""
        first, stop = window_seconds(modified_from, modified_to)
        count = 0
        for row in self._iter_raw(first, stop):
            out.write(row)
            out.write(b"\n")
            count += 1
        return count

    def _iter(self, first: int, stop: int) -> Iterator[dict[str, Any]]:
        for row in self._iter_raw(first, stop):
            yield _decode_row(row)

    def _iter_raw(self, first: int, stop: int) -> Iterator[bytes]:
        if first >= stop:
            return
        hook, session, url = self._open_session(ORDERS_ENDPOINT)
        # An anonymous file (unlinked at once where the OS allows): nothing is left behind,
        # whether the scan completes, raises, or the process dies.
        with session, tempfile.TemporaryFile(prefix="woocommerce_scan_") as spool:
            scan = _Scan(stop=stop, spool=spool)
            self._scan(scan, first - 1, lambda params: self._get_page(hook, session, url, params))
            log.info(
                "woocommerce %s: %d orders modified in [%s, %s) in %d pages",
                self._host, scan.orders, format_gmt(first), format_gmt(stop), scan.pages,
            )
            yield from scan.kept_rows()

    def _scan(self, scan: _Scan, after: int, fetch: Callable[[dict[str, str]], _Page]) -> None:
        crowded = 0  # how many seconds in a row, ending at ``after``, held a page or more
        while after + 1 < scan.stop:  # (after, stop) still holds a whole second
            if crowded >= _CROWDED_RUN:
                # Orders come faster than a page a second: the keyset page would be the first
                # page of the next second's own pass, so read that second by offset at once.
                full, counted = self._drain_second(scan, after + 1, fetch)
                after += 1
                crowded = crowded + 1 if full and counted else 0
                continue
            page = fetch(self._params(after, scan.stop, 1))
            modified, _ids = self._absorb(scan, page, after, scan.stop, cursor=after)
            if len(page.rows) < self.per_page:
                return  # a short page: nothing of (after, stop) is left unread
            low, high = modified[0], modified[-1]
            if low == high:  # a whole page in one second: offset-page inside that second
                _full, counted = self._drain_second(scan, high, fetch)
                crowded = crowded + 1 if high == after + 1 and counted else int(counted)
                after = high
            else:  # re-read the last second: the page size may have cut it
                crowded = 0
                after = high - 1

    def _drain_second(
        self, scan: _Scan, second: int, fetch: Callable[[dict[str, str]], _Page]
    ) -> tuple[bool, bool]:
        """Read every order modified at ``second`` by offset, in passes, until one pass is
        known to have seen the second hold still (see "Keyset paging" in the module docstring).
        Return whether the second held a page or more, and whether the store counted it."""
        previous: list[int] | None = None
        for passes in range(1, _MAX_PASSES + 1):
            ids, totals = self._drain_pass(scan, second, fetch)
            # Complete: every page counted the same total and the pass brought exactly that many
            # rows (nothing left or entered during the pass), or, whatever the counts, the pass
            # read the same ids in the same order as the one before (a leave behind a pass's
            # position takes a row that pass had read out of the next one).
            steady = len(totals) == 1 and None not in totals and len(ids) == next(iter(totals))
            if steady or ids == previous:
                minimum = 1 if None not in totals else 2  # without a count, two passes at least
                if passes > minimum:
                    log.info(
                        "woocommerce %s: the %d orders modified at %s changed while being read; "
                        "%d passes",
                        self._host, len(ids), format_gmt(second), passes,
                    )
                return len(ids) >= self.per_page, None not in totals
            previous = ids
        raise StorefrontError(
            f"woocommerce {self._host}: the orders modified at {format_gmt(second)} (more than a "
            f"page of them) kept changing during the read: {_MAX_PASSES} passes by offset over "
            "that second each saw it change, so none is known complete; the task will retry"
        )

    def _drain_pass(
        self, scan: _Scan, second: int, fetch: Callable[[dict[str, str]], _Page]
    ) -> tuple[list[int], set[int | None]]:
        """One pass over ``second``: its pages 1, 2, ... by offset until a short page, each row
        absorbed; return the ids in the order read and the totals the pages counted."""
        ids: list[int] = []
        totals: set[int | None] = set()
        last: list[int] = []
        number = 1
        while True:
            page = fetch(self._params(second - 1, second + 1, number))
            _seconds, page_ids = self._absorb(scan, page, second - 1, second + 1, cursor=second - 1,
                                              page_number=number)
            ids += page_ids
            totals.add(page.total)
            if len(page.rows) < self.per_page:
                return ids, totals
            if number > 1 and set(page_ids) <= set(last):
                raise StorefrontError(
                    f"woocommerce {self._host}: page {number} of the orders modified at "
                    f"{format_gmt(second)} brought no order that page {number - 1} had not; the "
                    "store does not honour 'page'"
                )
            last = page_ids
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
    ) -> tuple[list[int], list[int]]:
        """Check the page's rows, keep the latest version of each; return their modification
        seconds and their ids, in page order."""
        seconds: list[int] = []
        ids: list[int] = []
        new_ids = 0
        for index, row in enumerate(page.rows, start=1):
            order_id, second = self._row_key(row, index, after, before, seconds)
            new_ids += scan.offer(order_id, second, row)
            seconds.append(second)
            ids.append(order_id)
        scan.pages += 1
        if scan.estimate is None and page.total is not None:
            scan.estimate = page.total
            scan.reserve(page.total)
        estimate = None if scan.estimate is None else max(scan.estimate, scan.orders)
        log.debug(
            "woocommerce %s: page %d (offset page %d) rows=%d new_ids=%d cursor=%s",
            self._host, scan.pages, page_number, len(page.rows), new_ids, format_gmt(cursor),
        )
        if self.on_page is not None:
            self.on_page(scan.pages, scan.orders, estimate)
        return seconds, ids

    def _row_key(
        self, row: msgspec.Raw, index: int, after: int, before: int, earlier: list[int]
    ) -> tuple[int, int]:
        where = f"woocommerce {self._host}: row {index} of the page"
        try:
            key = _decode_key(row)
        except msgspec.ValidationError:  # not an object: say what it is
            raise StorefrontError(
                f"{where} is a {type(_decode_row(row)).__name__}, not an order object"
            ) from None
        order_id = key.id
        if not isinstance(order_id, int) or isinstance(order_id, bool):
            raise StorefrontError(f"{where} has no integer id ({order_id!r}); cannot deduplicate")
        second = _modified_second(key.date_modified_gmt)
        if second is None:
            raise StorefrontError(
                f"{where} (order {order_id}) has an unusable date_modified_gmt "
                f"{key.date_modified_gmt!r}; cannot page by modification time"
            )
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

    # -- HTTP ------------------------------------------------------------------------------

    def _check_connection(self, conn: Connection) -> None:
        if not conn.login or not conn.password:
            raise ConfigError(
                f"connection {self.conn_id!r}: login/password must hold the WooCommerce consumer key/secret"
            )

    def _get_page(self, hook: HttpHook, session: requests.Session, url: str, params: dict[str, str]) -> _Page:
        return self._retried(lambda: self._get_once(hook, session, url, params), _describe(params))

    def _get_once(self, hook: HttpHook, session: requests.Session, url: str, params: dict[str, str]) -> _Page:
        page = self._read(self._send(hook, session, requests.Request("GET", url, params=params)))
        _check_complete(page, params)
        return page

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
            return TransientError(f"HTTP {status} (Retry-After {retry_after})", retry_after=retry_after)
        if status >= 500 or status == 408:
            return TransientError(f"HTTP {status} {_wc_error(response)}")
        if 400 <= status < 500:
            return StorefrontRequestRejected(
                f"woocommerce {self._host}: request rejected with HTTP {status} {_wc_error(response)} "
                f"for {response.url}"
            )
        return TransientError(f"unexpected HTTP {status} {_wc_error(response)}")

    @staticmethod
    def _decode(response: requests.Response) -> _Page:
        pages = _total_header(response, "X-WP-TotalPages")
        try:  # the common case, decoded once: the list into each row's bytes
            rows = _decode_page(response.content)
        except msgspec.DecodeError:
            rows = WooCommerceClient._decode_slowly(response)
        return _Page(rows=rows, total=_total_header(response), pages=pages)

    @staticmethod
    def _decode_slowly(response: requests.Response) -> list[msgspec.Raw]:
        """What msgspec refused: a body that is not a JSON list says why; one that the json
        module reads (UTF-16/32, a BOM, NaN) is re-encoded as UTF-8 rows."""
        content_type = response.headers.get("Content-Type", "")
        try:
            body = json.loads(response.content)  # bytes: json detects UTF-8/16/32 and a BOM
        except ValueError as exc:
            raise TransientError(
                f"HTTP {response.status_code} with Content-Type {content_type!r} is not valid JSON "
                f"({exc}); body starts {snippet(response)!r}"
            ) from exc
        if not isinstance(body, list):
            raise TransientError(
                f"HTTP {response.status_code} with Content-Type {content_type!r} is a JSON "
                f"{type(body).__name__}, not a list of orders; body starts {snippet(response)!r}"
            )
        return [msgspec.Raw(_encode(row)) for row in body]
