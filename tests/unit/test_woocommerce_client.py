"""WooCommerceClient against a canned WooCommerce in this process (stdlib http.server on 127.0.0.1:0).

The fake implements only what the client relies on, as documented for WooCommerce core:
strict ``modified_after``/``modified_before`` on the GMT column with ``dates_are_gmt=true``,
``orderby=modified&order=asc`` with id as tie-breaker, offset ``page``/``per_page``,
``X-WP-Total``/``X-WP-TotalPages``. Faults are scripted per request number.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import itertools
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pendulum
import pytest

from order_integration.exceptions import ConfigError, PermanentError, StorefrontAuthError, StorefrontError
from order_integration.storefronts import StorefrontClient, StorefrontRequestRejected, get_client
from order_integration.storefronts.woocommerce import (
    WooCommerceClient,
    parse_retry_after,
    window_query,
    window_seconds,
)
from tests.support.tls import self_signed

pytestmark = pytest.mark.unit

CONN_ID = "storefront_test"
UTC = pendulum.UTC
T0 = pendulum.datetime(2026, 11, 29, 10, 0, 0, tz="UTC")


# ----------------------------------------------------------------------------------------------
# window translation (no server)
# ----------------------------------------------------------------------------------------------


def test_window_whole_seconds() -> None:
    assert window_query(T0, T0.add(hours=1)) == {
        "modified_after": "2026-11-29T09:59:59",
        "modified_before": "2026-11-29T11:00:00",
        "dates_are_gmt": "true",
    }


def test_window_sub_second_bounds_are_ceiled() -> None:
    query = window_query(T0.add(microseconds=500_000), T0.add(seconds=10, microseconds=1))
    assert query is not None
    # first whole second >= 10:00:00.5 is 10:00:01, so after = 10:00:00 (strict '>')
    assert query["modified_after"] == "2026-11-29T10:00:00"
    # an order at 10:00:10 is < 10:00:10.000001, so it is in: before = 10:00:11 (strict '<')
    assert query["modified_before"] == "2026-11-29T10:00:11"


def _in_window(second: int, start: pendulum.DateTime, end: pendulum.DateTime) -> bool:
    """What the store answers for an order modified at whole second ``second``."""
    query = window_query(start, end)
    if query is None:
        return False
    after = pendulum.parse(query["modified_after"], tz="UTC").int_timestamp
    before = pendulum.parse(query["modified_before"], tz="UTC").int_timestamp
    return after < second < before


@pytest.mark.parametrize("micro", [0, 1, 499_999, 500_000, 999_999])
def test_window_selects_exactly_from_inclusive_to_exclusive(micro: int) -> None:
    start = T0.add(seconds=2, microseconds=micro)
    end = T0.add(seconds=7, microseconds=micro)
    for second in range(T0.int_timestamp - 3, T0.int_timestamp + 12):
        moment = pendulum.from_timestamp(second, tz="UTC")
        assert _in_window(second, start, end) is (start <= moment < end), moment


def test_adjacent_windows_partition_time() -> None:
    cuts = [T0, T0.add(microseconds=1), T0.add(seconds=1), T0.add(seconds=1, microseconds=500_000),
            T0.add(seconds=2, microseconds=999_999), T0.add(seconds=3), T0.add(seconds=7, microseconds=3)]
    windows = list(itertools.pairwise(cuts))
    for second in range(T0.int_timestamp, T0.int_timestamp + 8):
        hits = [w for w in windows if _in_window(second, *w)]
        assert len(hits) == 1, (pendulum.from_timestamp(second), hits)


def test_window_within_one_second_is_empty() -> None:
    assert window_query(T0.add(microseconds=200), T0.add(microseconds=700)) is None
    assert window_query(T0, T0) is None


def test_window_rejects_naive_non_utc_and_reversed() -> None:
    with pytest.raises(ValueError, match="naive"):
        window_seconds(dt.datetime(2026, 11, 29, 10), T0)  # naive: the point of the test
    with pytest.raises(ValueError, match="not UTC"):
        window_seconds(T0.in_timezone("Europe/Berlin"), T0.add(hours=1))
    with pytest.raises(ValueError, match="is after"):
        window_seconds(T0.add(hours=1), T0)
    with pytest.raises(TypeError):
        window_seconds("2026-11-29T10:00:00Z", T0)  # type: ignore[arg-type]
    # a stdlib aware UTC datetime is fine
    assert window_seconds(dt.datetime(2026, 11, 29, 10, tzinfo=dt.UTC), T0.add(seconds=1)) == (
        T0.int_timestamp, T0.int_timestamp + 1
    )


def test_iter_orders_validates_inputs_at_the_call() -> None:
    client = WooCommerceClient("unused")
    with pytest.raises(ValueError, match="naive"):
        client.iter_orders(dt.datetime(2026, 11, 29, 10), T0)


def test_parse_retry_after() -> None:
    now = pendulum.datetime(2026, 11, 29, 10, tz="UTC")
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Sun, 29 Nov 2026 10:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sun, 29 Nov 2026 09:00:00 GMT", now=now) == 0.0


def test_get_client() -> None:
    client = get_client("woocommerce", CONN_ID, per_page=7)
    assert isinstance(client, WooCommerceClient) and client.per_page == 7
    assert isinstance(client, StorefrontClient)
    with pytest.raises(ConfigError, match="unknown storefront platform 'magento'"):
        get_client("magento", CONN_ID)
    with pytest.raises(ConfigError, match="per_page"):
        WooCommerceClient(CONN_ID, per_page=101)


# ----------------------------------------------------------------------------------------------
# the canned store
# ----------------------------------------------------------------------------------------------


@dataclass
class Fault:
    status: int = 500
    body: bytes = b'{"code":"internal_server_error","message":"boom"}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0
    declared_length: int | None = None  # lie about Content-Length, then hang up


@dataclass
class Request:
    params: dict[str, str]
    headers: dict[str, str]
    client_port: int


@dataclass
class FakeStore:
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    faults: dict[int, Fault] = field(default_factory=dict)  # by request number, 1-based
    fail_from: tuple[int, Fault] | None = None  # this fault for every request from n on
    before_request: dict[int, Callable[[FakeStore], None]] = field(default_factory=dict)
    ignore_filter: bool = False
    ignore_page: bool = False  # always answer page 1
    send_totals: bool = True  # X-WP-Total / X-WP-TotalPages headers
    on_params: Callable[[FakeStore, dict[str, str]], None] | None = None  # before each answer
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, order_id: int, modified: str, **extra: Any) -> None:
        self.orders[order_id] = {
            "id": order_id, "number": str(order_id), "status": "processing", "currency": "USD",
            "date_modified_gmt": f"2026-11-29T{modified}", "total": "10.00", **extra,
        }

    def fault_for(self, number: int) -> Fault | None:
        if number in self.faults:
            return self.faults[number]
        if self.fail_from and number >= self.fail_from[0]:
            return self.fail_from[1]
        return None

    def answer(self, params: dict[str, str]) -> tuple[list[dict[str, Any]], int, int]:
        def when(text: str) -> dt.datetime:
            return dt.datetime.fromisoformat(text)

        assert params.get("dates_are_gmt") == "true"
        if self.on_params is not None:
            self.on_params(self, params)
        rows = list(self.orders.values())
        if not self.ignore_filter:
            if "modified_after" in params:
                rows = [o for o in rows if when(o["date_modified_gmt"]) > when(params["modified_after"])]
            if "modified_before" in params:
                rows = [o for o in rows if when(o["date_modified_gmt"]) < when(params["modified_before"])]
        assert (params.get("orderby"), params.get("order")) == ("modified", "asc")
        rows.sort(key=lambda o: (o["date_modified_gmt"], o["id"]))
        per_page, page = int(params.get("per_page", 10)), int(params.get("page", 1))
        if self.ignore_page:
            page = 1
        total = len(rows)
        pages = -(-total // per_page)
        return rows[(page - 1) * per_page: page * per_page], total, pages


def make_handler(store: FakeStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: lets the test see one session reused

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            with store.lock:
                store.requests.append(Request(params, dict(self.headers.items()), self.client_address[1]))
                number = len(store.requests)
                if number in store.before_request:
                    store.before_request[number](store)
                fault = store.fault_for(number)
                if fault is None:
                    assert url.path == "/wp-json/wc/v3/orders", url.path
                    rows, total, pages = store.answer(params)
            if fault is not None:
                self._fault(fault)
                return
            body = json.dumps(rows).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            if store.send_totals:
                self.send_header("X-WP-Total", str(total))
                self.send_header("X-WP-TotalPages", str(pages))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _fault(self, fault: Fault) -> None:
            if fault.delay:
                time.sleep(fault.delay)
            self.send_response(fault.status)
            for name, value in fault.headers.items():
                self.send_header(name, value)
            length = fault.declared_length if fault.declared_length is not None else len(fault.body)
            self.send_header("Content-Length", str(length))
            if fault.declared_length is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client timed out: expected
                self.wfile.write(fault.body)
            if fault.declared_length is not None:
                self.close_connection = True

    return Handler


def set_connection(monkeypatch: pytest.MonkeyPatch, host: str, **extra: Any) -> None:
    conn: dict[str, Any] = {"conn_type": "http", "host": host, "login": "ck_test", "password": "cs_secret"}
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStore]:
    fake = FakeStore()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    set_connection(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def client(sleeps: list[float], **kwargs: Any) -> WooCommerceClient:
    kwargs.setdefault("timeout", 5)
    return WooCommerceClient(CONN_ID, sleep=sleeps.append, **kwargs)


def scan(c: WooCommerceClient, start: pendulum.DateTime = T0, end: pendulum.DateTime | None = None) -> list[dict]:
    return list(c.iter_orders(start, end or T0.add(hours=1)))


def ids(rows: list[dict]) -> list[int]:
    return [r["id"] for r in rows]


# ----------------------------------------------------------------------------------------------
# paging
# ----------------------------------------------------------------------------------------------


def test_multiple_pages_keyset_one_session(store: FakeStore, sleeps: list[float],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.http.hooks.http import HttpHook

    for n in range(1, 26):
        store.put(n, f"10:{n:02d}:00")
    store.put(99, "09:59:59")  # before the window
    store.put(98, "11:00:00")  # at the exclusive end
    get_conn_calls: list[int] = []
    original = HttpHook.get_conn
    monkeypatch.setattr(HttpHook, "get_conn", lambda self, *a, **k: get_conn_calls.append(1) or original(self, *a, **k))
    progress: list[tuple[int, int, int | None]] = []

    rows = scan(client(sleeps, per_page=10, on_page=lambda *args: progress.append(args)))

    assert ids(rows) == list(range(1, 26))  # each once, in modification order
    assert all(r.params["page"] == "1" for r in store.requests)
    assert {(r.params["orderby"], r.params["order"], r.params["dates_are_gmt"]) for r in store.requests} == {
        ("modified", "asc", "true")
    }
    assert [r.params["modified_after"] for r in store.requests] == [
        "2026-11-29T09:59:59", "2026-11-29T10:09:59", "2026-11-29T10:18:59",  # last second re-read
    ]
    assert {r.params["modified_before"] for r in store.requests} == {"2026-11-29T11:00:00"}
    assert {r.params["per_page"] for r in store.requests} == {"10"}
    assert get_conn_calls == [1]  # one HTTP session for the whole scan
    assert len({r.client_port for r in store.requests}) == 1  # ... and one kept-alive TCP connection
    assert progress == [(1, 10, 25), (2, 19, 25), (3, 25, 25)]
    assert sleeps == []


def test_basic_auth_sent_and_tls_verification_on(store: FakeStore, sleeps: list[float],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    store.put(1, "10:00:01")
    verify_seen: list[Any] = []
    original_send = requests.Session.send

    def recording_send(self: requests.Session, request: Any, **kwargs: Any) -> Any:
        verify_seen.append(kwargs.get("verify"))
        return original_send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", recording_send)
    assert ids(scan(client(sleeps))) == [1]
    expected = "Basic " + base64.b64encode(b"ck_test:cs_secret").decode()
    assert store.requests[0].headers["Authorization"] == expected
    assert verify_seen and all(v not in (False, None) for v in verify_seen)


def test_ties_across_a_page_boundary(store: FakeStore, sleeps: list[float]) -> None:
    store.put(1, "10:00:01")
    store.put(2, "10:00:01")
    store.put(3, "10:00:02")
    store.put(4, "10:00:02")
    store.put(5, "10:00:02")  # the page of 4 cuts second :02 after id 4
    store.put(6, "10:00:03")

    rows = scan(client(sleeps, per_page=4))

    assert ids(rows) == [1, 2, 3, 4, 5, 6]
    # the last second of each full page is read again
    assert [r.params["modified_after"] for r in store.requests] == [
        "2026-11-29T09:59:59", "2026-11-29T10:00:01", "2026-11-29T10:00:02",
    ]


def test_more_orders_in_one_second_than_a_page(store: FakeStore, sleeps: list[float]) -> None:
    store.put(100, "10:00:01")
    for n in range(1, 13):
        store.put(n, "10:00:02")
    store.put(50, "10:00:03")
    store.put(51, "10:00:03")

    rows = scan(client(sleeps, per_page=5))

    assert ids(rows) == [100, *range(1, 13), 50, 51]
    in_the_second = [r.params for r in store.requests if r.params["modified_before"] != "2026-11-29T11:00:00"]
    assert [(p["modified_after"], p["modified_before"], p["page"]) for p in in_the_second] == [
        ("2026-11-29T10:00:01", "2026-11-29T10:00:03", "1"),  # one pass over 10:00:02 by offset
        ("2026-11-29T10:00:01", "2026-11-29T10:00:03", "2"),
        ("2026-11-29T10:00:01", "2026-11-29T10:00:03", "3"),
    ]
    assert store.requests[-1].params["modified_after"] == "2026-11-29T10:00:02"  # past that second
    assert len(store.requests) == 6


def test_a_whole_window_in_one_second_multiple_of_page(store: FakeStore, sleeps: list[float]) -> None:
    for n in range(1, 11):  # exactly two full pages in one second, then an empty page
        store.put(n, "10:59:59")
    assert ids(scan(client(sleeps, per_page=5))) == list(range(1, 11))
    assert [r.params["page"] for r in store.requests] == ["1", "1", "2", "3"]  # the window, one pass


def test_drift_mid_scan_loses_nothing_and_duplicates_nothing(store: FakeStore, sleeps: list[float]) -> None:
    for n in range(1, 13):
        store.put(n, f"10:00:{n:02d}")

    def modify(s: FakeStore) -> None:
        s.put(2, "10:40:00", status="completed")  # already read, modified again inside the window
        s.put(8, "10:41:00", status="completed")  # not read yet, moves later inside the window
        s.put(9, "11:30:00")  # not read yet, leaves the window: the next window carries it
        s.put(3, "11:30:00", status="cancelled")  # already read, leaves the window
        s.put(13, "10:42:00")  # new order

    store.before_request[2] = modify  # after page 1 (ids 1..5) was served

    rows = scan(client(sleeps, per_page=5))

    got = ids(rows)
    assert len(got) == len(set(got))
    # every order whose current modification is in the window, plus 3 as it was when read
    assert set(got) == {1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13}
    by_id = {r["id"]: r for r in rows}
    assert by_id[2]["status"] == "completed" and by_id[2]["date_modified_gmt"] == "2026-11-29T10:40:00"
    assert by_id[8]["status"] == "completed"
    assert by_id[3]["status"] == "processing"


# A bulk edit saves more than a page of orders in one second: the scan reads that second by
# offset, in passes, until one pass saw it hold still (see the module docstring).

BULK = "10:00:05"  # the bulk edit's second


def _bulk(store: FakeStore, count: int) -> None:
    for n in range(1, count + 1):
        store.put(n, BULK)


def _plan(store: FakeStore) -> list[tuple[str, str, str]]:
    """(modified_after, modified_before, page) of every request, times without the date."""
    return [(r.params["modified_after"][11:], r.params["modified_before"][11:], r.params["page"])
            for r in store.requests]


def _leave_at_page_2(times: int) -> Callable[[FakeStore, dict[str, str]], None]:
    """Before each of the first ``times`` requests for page 2, one more order of page 1 (5, then
    6, ...) is edited again: it leaves the bulk second for a later one inside the window."""
    moved: list[int] = []

    def leave(store: FakeStore, params: dict[str, str]) -> None:
        if params["page"] == "2" and len(moved) < times:
            order_id = 5 + len(moved)
            store.put(order_id, f"10:30:{len(moved):02d}", status="completed")
            moved.append(order_id)

    return leave


def test_an_order_leaving_a_crowded_second_mid_read_loses_no_other(store: FakeStore, sleeps: list[float],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    # 150 orders in one second, pages of 100. Order 5 (on the first page) is edited after that
    # page was read: the remaining 149 shift down by one, so offset 100 is now order 102 and a
    # plain offset walk never reads order 101.
    _bulk(store, 150)
    store.on_params = _leave_at_page_2(1)

    with caplog.at_level("INFO", logger="order_integration.storefronts.woocommerce"):
        rows = scan(client(sleeps, per_page=100))

    got = ids(rows)
    assert sorted(got) == list(range(1, 151)) and len(got) == 150  # each once, 101 included
    by_id = {r["id"]: r for r in rows}
    assert by_id[5]["status"] == "completed" and by_id[5]["date_modified_gmt"] == "2026-11-29T10:30:00"
    assert got[-1] == 5  # its new second is the latest
    assert _plan(store) == [
        ("09:59:59", "11:00:00", "1"),
        ("10:00:04", "10:00:06", "1"), ("10:00:04", "10:00:06", "2"),  # pass 1: 150, then 149
        ("10:00:04", "10:00:06", "1"), ("10:00:04", "10:00:06", "2"),  # pass 2: 149 throughout
        ("10:00:05", "11:00:00", "1"),
    ]
    assert any("2026-11-29T10:00:05" in m and "2 passes" in m for m in caplog.messages)


def test_a_second_that_keeps_changing_fails_the_scan(store: FakeStore, sleeps: list[float]) -> None:
    _bulk(store, 150)
    store.on_params = _leave_at_page_2(100)  # an order leaves during every pass
    yielded: list[dict] = []

    with pytest.raises(StorefrontError, match=r"2026-11-29T10:00:05.*kept changing.*retry") as raised:
        yielded.extend(client(sleeps, per_page=100).iter_orders(T0, T0.add(hours=1)))

    assert yielded == []  # nothing handed on
    assert not isinstance(raised.value, PermanentError)  # Airflow retries the task
    assert len(store.requests) == 1 + 5 * 2  # the window's first page, then 5 passes of 2 pages


def test_a_quiet_crowded_second_is_read_in_one_pass(store: FakeStore, sleeps: list[float],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    _bulk(store, 250)
    store.put(300, "10:00:06")

    with caplog.at_level("INFO", logger="order_integration.storefronts.woocommerce"):
        got = ids(scan(client(sleeps, per_page=100)))

    assert got == [*range(1, 251), 300]
    assert _plan(store) == [
        ("09:59:59", "11:00:00", "1"),  # 100 rows, all of 10:00:05
        ("10:00:04", "10:00:06", "1"), ("10:00:04", "10:00:06", "2"), ("10:00:04", "10:00:06", "3"),
        ("10:00:05", "11:00:00", "1"),  # past that second: order 300, a short page
    ]
    assert not any("passes" in m for m in caplog.messages)


@pytest.mark.parametrize(("leaves", "passes"), [(0, 2), (1, 3)])
def test_without_x_wp_total_two_identical_passes_complete_a_second(store: FakeStore, sleeps: list[float],
                                                                   leaves: int, passes: int) -> None:
    store.send_totals = False
    _bulk(store, 150)
    store.on_params = _leave_at_page_2(leaves)

    got = ids(scan(client(sleeps, per_page=100)))

    assert sorted(got) == list(range(1, 151)) and len(got) == 150
    drain = [page for after, _before, page in _plan(store) if after == "10:00:04"]
    assert drain == ["1", "2"] * passes
    assert len(store.requests) == 1 + 2 * passes + 1


def test_a_store_ignoring_page_inside_a_crowded_second_is_an_error(store: FakeStore,
                                                                   sleeps: list[float]) -> None:
    _bulk(store, 150)
    store.ignore_page = True
    with pytest.raises(StorefrontError, match="does not honour 'page'"):
        scan(client(sleeps, per_page=100))


# A store taking orders faster than a page a second (a sale: 1M an hour is ~280 a second) has
# every second crowded. After two crowded seconds in a row the scan reads the next second by
# passes at once, without the keyset page that would only have found it crowded.


def _crowd(store: FakeStore, seconds: dict[str, int]) -> list[int]:
    """``count`` orders at each ``second`` (ids ascending with time); return the ids in order."""
    put: list[int] = []
    for second, count in seconds.items():
        for _ in range(count):
            put.append(len(put) + 1)
            store.put(put[-1], second)
    return put


def test_a_run_of_crowded_seconds_is_read_without_keyset_pages(store: FakeStore, sleeps: list[float]) -> None:
    expected = _crowd(store, {"10:00:01": 12, "10:00:02": 12, "10:00:03": 12, "10:00:04": 10,
                              "10:00:05": 3, "10:00:07": 1})

    assert ids(scan(client(sleeps, per_page=5))) == expected

    three = ["1", "2", "3"]
    assert _plan(store) == [
        ("09:59:59", "11:00:00", "1"),  # all of 10:00:01
        *[("10:00:00", "10:00:02", p) for p in three],
        ("10:00:01", "11:00:00", "1"),  # all of 10:00:02: the second crowded second in a row
        *[("10:00:01", "10:00:03", p) for p in three],
        *[("10:00:02", "10:00:04", p) for p in three],  # 10:00:03 at once, no keyset page
        *[("10:00:03", "10:00:05", p) for p in three],  # 10:00:04: two full pages, then none
        ("10:00:04", "10:00:06", "1"),  # 10:00:05 holds 3, less than a page: the run is over
        ("10:00:05", "11:00:00", "1"),  # keyset pages again
    ]


def test_a_leave_during_a_crowded_run_loses_no_other(store: FakeStore, sleeps: list[float]) -> None:
    expected = _crowd(store, {"10:00:01": 7, "10:00:02": 7, "10:00:03": 7, "10:00:04": 2})
    moved: list[str] = []

    def leave(s: FakeStore, params: dict[str, str]) -> None:
        # while 10:00:03 is read at once, an order of its first page is edited again: the rest
        # of the second shifts down one offset
        if params["modified_after"].endswith("10:00:02") and params["page"] == "2" and not moved:
            s.put(15, "10:30:00", status="completed")
            moved.append("15")

    store.on_params = leave

    rows = scan(client(sleeps, per_page=5))

    got = ids(rows)
    assert sorted(got) == expected and len(got) == len(expected)
    assert got[-1] == 15 and rows[-1]["status"] == "completed"
    crowded_3 = [page for after, before, page in _plan(store) if (after, before) == ("10:00:02", "10:00:04")]
    assert crowded_3 == ["1", "2", "1", "2"]  # pass 1 saw 7 then 6: read again
    assert ("10:00:02", "11:00:00", "1") not in _plan(store)  # 10:00:03 was read at once


def test_a_crowded_run_ending_in_an_empty_second_or_the_window_end(store: FakeStore,
                                                                   sleeps: list[float]) -> None:
    expected = _crowd(store, {"10:00:01": 6, "10:00:02": 6, "10:00:03": 6,
                              "10:59:57": 6, "10:59:58": 6, "10:59:59": 6})

    assert ids(scan(client(sleeps, per_page=5))) == expected

    plan = _plan(store)
    assert ("10:00:03", "10:00:05", "1") in plan  # 10:00:04 read at once: empty, the run ends
    assert plan[plan.index(("10:00:03", "10:00:05", "1")) + 1] == ("10:00:04", "11:00:00", "1")
    assert plan[-2:] == [("10:59:58", "11:00:00", "1"), ("10:59:58", "11:00:00", "2")]  # nothing past
    assert all(before <= "11:00:00" for _after, before, _page in plan)


def test_without_x_wp_total_every_crowded_second_is_found_by_a_keyset_page(store: FakeStore,
                                                                           sleeps: list[float]) -> None:
    store.send_totals = False  # an uncounted second takes two passes: never read one on a guess
    expected = _crowd(store, {"10:00:01": 6, "10:00:02": 6, "10:00:03": 6, "10:00:04": 6})

    assert ids(scan(client(sleeps, per_page=5))) == expected

    keyset = [after for after, before, _page in _plan(store) if before == "11:00:00"]
    assert keyset == ["09:59:59", "10:00:01", "10:00:02", "10:00:03", "10:00:04"]


def test_window_bounds_at_the_store(store: FakeStore, sleeps: list[float]) -> None:
    for n, second in enumerate(range(0, 12), start=1):
        store.put(n, f"10:00:{second:02d}")
    c = client(sleeps, per_page=3)
    cut = T0.add(seconds=5, microseconds=500_000)
    first = ids(scan(c, T0.add(seconds=1), cut))
    second = ids(scan(c, cut, T0.add(seconds=10)))
    assert first == [2, 3, 4, 5, 6]  # 10:00:01 .. 10:00:05
    assert second == [7, 8, 9, 10]  # 10:00:06 .. 10:00:09 (10:00:10 is the exclusive end)


def test_empty_window_sends_no_request(store: FakeStore, sleeps: list[float]) -> None:
    store.put(1, "10:00:00")
    assert scan(client(sleeps), T0.add(microseconds=1), T0.add(microseconds=900_000)) == []
    assert store.requests == []


def test_store_ignoring_the_filter_is_an_error(store: FakeStore, sleeps: list[float]) -> None:
    store.put(1, "09:00:00")
    store.put(2, "10:00:01")
    store.ignore_filter = True
    with pytest.raises(StorefrontError, match="ignores the filter"):
        scan(client(sleeps))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": 1}], "unusable date_modified_gmt None"),
        ([{"id": "1", "date_modified_gmt": "2026-11-29T10:00:01"}], "no integer id"),
        (["order"], "is a str, not an order object"),
        ([{"id": 2, "date_modified_gmt": "2026-11-29T10:00:05"},
          {"id": 1, "date_modified_gmt": "2026-11-29T10:00:01"}], "not sorted by date_modified_gmt"),
    ],
)
def test_rows_unfit_for_keyset_paging_are_an_error(store: FakeStore, sleeps: list[float],
                                                    rows: list[Any], message: str) -> None:
    store.fail_from = (1, Fault(200, json.dumps(rows).encode()))
    with pytest.raises(StorefrontError, match=message):
        scan(client(sleeps))
    assert len(store.requests) == 1  # a page that breaks the contract is not retried blindly


# ----------------------------------------------------------------------------------------------
# faults
# ----------------------------------------------------------------------------------------------


def json_fault(status: int, body: dict[str, Any] | None = None, **headers: str) -> Fault:
    return Fault(status, json.dumps(body or {"code": "x", "message": "y"}).encode(),
                 {"Content-Type": "application/json", **headers})


def test_429_waits_retry_after(store: FakeStore, sleeps: list[float]) -> None:
    store.put(1, "10:00:01")
    store.faults[1] = json_fault(429, **{"Retry-After": "1"})
    assert ids(scan(client(sleeps))) == [1]
    assert sleeps == [1.0]
    assert len(store.requests) == 2


def test_503_retry_after_zero_and_http_date_capped(store: FakeStore, sleeps: list[float]) -> None:
    store.put(1, "10:00:01")
    later = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), usegmt=True)
    store.faults[1] = Fault(503, b"<html>Service Unavailable</html>", {"Content-Type": "text/html", "Retry-After": "0"})
    store.faults[2] = Fault(503, b"", {"Retry-After": later})
    assert ids(scan(client(sleeps, max_wait_seconds=5))) == [1]
    assert sleeps == [0.0, 5.0]  # an hour asked for, capped at max_wait_seconds


def test_500_then_success_backs_off(store: FakeStore, sleeps: list[float]) -> None:
    store.put(1, "10:00:01")
    store.faults[1] = json_fault(500)
    store.faults[2] = json_fault(502)
    assert ids(scan(client(sleeps, max_wait_seconds=30))) == [1]
    assert len(sleeps) == 2 and all(0 < s <= 30 for s in sleeps)


def test_html_200_is_retried_and_described(store: FakeStore, sleeps: list[float]) -> None:
    store.put(1, "10:00:01")
    html = Fault(200, b"<!DOCTYPE html><html><body>Maintenance mode</body></html>", {"Content-Type": "text/html"})
    store.faults[1] = html
    assert ids(scan(client(sleeps))) == [1]
    assert len(sleeps) == 1

    store.requests.clear()
    store.faults.clear()
    store.fail_from = (1, html)
    with pytest.raises(StorefrontError) as caught:
        scan(client(sleeps, max_attempts=2))
    message = str(caught.value)
    assert "giving up after 2 attempts" in message
    assert "HTTP 200" in message and "'text/html'" in message and "<!DOCTYPE html><html><body>Maint" in message


def test_truncated_json_is_retried(store: FakeStore, sleeps: list[float]) -> None:
    store.put(1, "10:00:01")
    store.faults[1] = Fault(200, b'[{"id": 1, "date_modif')
    store.faults[2] = Fault(200, b'[{"id": 1, "date_modif', declared_length=500)  # connection cut
    store.faults[3] = Fault(200, b'{"orders": []}')
    assert ids(scan(client(sleeps))) == [1]
    assert len(sleeps) == 3

    store.requests.clear()
    store.faults.clear()
    store.fail_from = (1, Fault(200, b'{"orders": []}'))
    with pytest.raises(StorefrontError, match="JSON dict, not a list of orders"):
        scan(client(sleeps, max_attempts=1))
    store.fail_from = (1, Fault(200, b'[{"id": 1, "date_modif'))
    with pytest.raises(StorefrontError, match="not valid JSON"):
        scan(client(sleeps, max_attempts=1))


def test_timeout_is_retried(store: FakeStore, sleeps: list[float]) -> None:
    store.put(1, "10:00:01")
    store.faults[1] = Fault(200, b"[]", delay=1.0)
    assert ids(scan(client(sleeps, timeout=0.2))) == [1]
    assert len(sleeps) == 1


def test_persistent_500_raises_without_a_partial_window(store: FakeStore, sleeps: list[float]) -> None:
    for n in range(1, 8):
        store.put(n, f"10:00:{n:02d}")
    store.fail_from = (2, json_fault(500))  # page 1 is fine, page 2 never comes
    iterator = client(sleeps, per_page=5, max_attempts=3).iter_orders(T0, T0.add(hours=1))

    with pytest.raises(StorefrontError, match="giving up after 3 attempts") as caught:
        next(iterator)  # raises before yielding anything: page 1's orders are not passed off as the window

    assert not isinstance(caught.value, PermanentError)
    assert len(store.requests) == 1 + 3
    assert len(sleeps) == 2


def test_401_is_an_auth_error_without_retry(store: FakeStore, sleeps: list[float]) -> None:
    store.put(1, "10:00:01")
    store.fail_from = (1, json_fault(401, {"code": "woocommerce_rest_cannot_view",
                                           "message": "Sorry, you cannot list resources.", "data": {"status": 401}}))
    with pytest.raises(StorefrontAuthError) as caught:
        scan(client(sleeps))
    message = str(caught.value)
    assert "credentials refused" in message and CONN_ID in message and "http://127.0.0.1:" in message
    assert "woocommerce_rest_cannot_view" in message
    assert isinstance(caught.value, PermanentError)
    assert len(store.requests) == 1 and sleeps == []


def test_403_is_an_auth_error(store: FakeStore, sleeps: list[float]) -> None:
    store.fail_from = (1, json_fault(403))
    with pytest.raises(StorefrontAuthError):
        scan(client(sleeps))
    assert len(store.requests) == 1


def test_400_is_permanent_with_the_woocommerce_message(store: FakeStore, sleeps: list[float]) -> None:
    store.fail_from = (1, json_fault(400, {"code": "rest_invalid_param", "message": "Invalid parameter(s): orderby"}))
    with pytest.raises(StorefrontRequestRejected, match="rest_invalid_param: Invalid parameter") as caught:
        scan(client(sleeps))
    assert isinstance(caught.value, PermanentError) and isinstance(caught.value, StorefrontError)
    assert len(store.requests) == 1 and sleeps == []


def test_connection_refused_is_retried_then_fails(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    set_connection(monkeypatch, f"http://127.0.0.1:{port}")
    with pytest.raises(StorefrontError, match="ConnectionError"):
        scan(client(sleeps, max_attempts=3))
    assert len(sleeps) == 2


# ----------------------------------------------------------------------------------------------
# connection contract
# ----------------------------------------------------------------------------------------------


def test_connection_that_disables_tls_verification_is_refused(store: FakeStore, sleeps: list[float],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "https://shop.example.com", verify=False)
    with pytest.raises(ConfigError, match="disables TLS verification"):
        scan(client(sleeps))


def test_host_without_scheme_is_refused(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    set_connection(monkeypatch, "shop.example.com")
    with pytest.raises(ConfigError, match="with scheme"):
        scan(client(sleeps))


def test_missing_connection_is_a_config_error(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", raising=False)
    with pytest.raises(ConfigError, match="not defined"):
        scan(client(sleeps))


def test_untrusted_certificate_is_refused_without_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        sleeps: list[float]) -> None:
    fake = FakeStore()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed(tmp_path))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        set_connection(monkeypatch, f"https://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(StorefrontAuthError, match="certificate refused"):
            scan(client(sleeps))
    finally:
        server.shutdown()
        server.server_close()
    assert fake.requests == [] and sleeps == []
