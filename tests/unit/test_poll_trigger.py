"""Real-time mode's polling fallback (issue 15): the trigger stepped poll by poll against the
sandbox storefronts over HTTP (WooCommerce and Shopify, through the storefront interface) and a
real SQLite ledger. The trigger's clock is set by the test; the storefronts' orders carry fixed
modification times, so every window is known.

What must hold: the first poll reads back ``lookback_minutes``; later polls record only new
modifications (the overlap re-reads, the inbox does not double); a restarted trigger resumes from
the cursor in the ledger, not from its memory; an order modified while a scan pages is in that
scan or the next; a storefront that fails moves no cursor and stops no inbox watching.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest

from order_integration import inbox_trigger
from order_integration.config import StoreConfig
from order_integration.ledger import InboxDelivery, Ledger, sqlite_engine
from order_integration.poll_trigger import StorefrontPollTrigger
from order_integration.polling import OVERLAP_SECONDS, StorefrontPoller
from order_integration.storefronts import get_client
from sandbox.generator import generate_orders
from tests.support.platforms import PLATFORMS
from tests.unit.test_inbox_trigger import Polls

pytestmark = pytest.mark.unit

DAY = pendulum.datetime(2026, 11, 2, tz="UTC")
#: 40 orders modified between 10:00 and 10:30.
ORDERS = generate_orders(40, start=DAY.add(hours=10), end=DAY.add(hours=10, minutes=30), seed=15, first_id=7001)
CONN = "storefront_poll"
#: Shopify's search index lags writes: its client's windows end this long before now.
SETTLE = {"woocommerce": 0, "shopify": 60}


def _modified(order: dict[str, Any]) -> pendulum.DateTime:
    return pendulum.parse(order["date_modified_gmt"]).replace(tzinfo=UTC)


def _ids_modified_in(orders: list[dict[str, Any]], start, end) -> set[str]:
    return {str(o["id"]) for o in orders if start <= _modified(o) < end}


class Clock:
    def __init__(self, now: pendulum.DateTime) -> None:
        self.now = now

    def __call__(self) -> pendulum.DateTime:
        return self.now


class Shop:
    """A started sandbox of one platform holding ORDERS, with the test's view of them."""

    def __init__(self, platform: str) -> None:
        self.kit = PLATFORMS[platform]
        self.platform = platform
        self.server = self.kit.start(ORDERS)
        self.orders = {o["id"]: dict(o) for o in ORDERS}
        self.settle = SETTLE[platform]

    def touch(self, order_id: int, when: pendulum.DateTime) -> None:
        """The order modified at ``when`` (in the storefront, over its own API's data)."""
        stamp = when.in_timezone("UTC").strftime("%Y-%m-%dT%H:%M:%S")
        local = when.in_timezone("Europe/Berlin").strftime("%Y-%m-%dT%H:%M:%S")
        order = {**self.orders[order_id], "date_modified_gmt": stamp, "date_modified": local}
        self.orders[order_id] = order
        if self.platform == "woocommerce":
            self.server.touch_order(order_id, when)
        else:
            self.kit.upsert(self.server, order)


@pytest.fixture(params=sorted(PLATFORMS))
def shop(request, monkeypatch) -> Iterator[Shop]:
    yield from _started(request.param, monkeypatch)


@pytest.fixture
def woo(monkeypatch) -> Iterator[Shop]:
    yield from _started("woocommerce", monkeypatch)


def _started(platform: str, monkeypatch) -> Iterator[Shop]:
    made = Shop(platform)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(made.kit.connection(made.server)))
    try:
        yield made
    finally:
        made.server.stop()


@pytest.fixture
def ledger_path(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(sqlite_engine(path), create=True)
    return path


def _store(platform: str) -> StoreConfig:
    return StoreConfig(id="demo", storefront_conn_id=CONN, backend_conn_id="backend_demo", platform=platform,
                       mode="realtime", realtime_source="polling", lookback_minutes=10)


@pytest.fixture
def polls(monkeypatch, ledger_path):
    """``make(shop, clock, on_page=None) -> (Polls, Ledger)``: a new trigger (as after a triggerer
    restart: nothing in memory) over a new engine on the same ledger file; 3 orders a page."""
    made: list[Polls] = []

    def make(shop: Shop, clock: Clock, on_page=None) -> tuple[Polls, Ledger]:
        ledger = Ledger(sqlite_engine(ledger_path))
        trigger = StorefrontPollTrigger(store_id="demo", poll_seconds=5)
        trigger.open_inbox = lambda: ledger.webhook_inbox

        def open_poller(inbox):
            client = get_client(shop.platform, CONN, per_page=3, max_attempts=2, max_wait_seconds=0.01,
                                sleep=lambda _s: None, on_page=on_page)
            return StorefrontPoller(_store(shop.platform), client, inbox, ledger.poll_cursors, now=clock)

        trigger.open_poller = open_poller
        made.append(_stepped(trigger, monkeypatch))
        return made[-1], ledger

    yield make
    for p in made:
        if not p.loop.is_closed():  # a test may stop one itself (a triggerer restart)
            p.close()


def _stepped(trigger: StorefrontPollTrigger, monkeypatch) -> Polls:
    """The inbox trigger tests' stepper, its clock confined to the trigger module: it patches
    ``time.monotonic`` through the module, which would stop the clock of an in-process sandbox
    too (Shopify's cost bucket refills by ``time.monotonic``)."""
    monkeypatch.setattr(inbox_trigger, "time", SimpleNamespace(monotonic=time.monotonic))
    return Polls(trigger, monkeypatch)


def _waiting(ledger: Ledger) -> set[str]:
    return set(ledger.webhook_inbox.waiting("demo"))


def test_it_serializes_to_its_importable_classpath_and_kwargs():
    trigger = StorefrontPollTrigger(store_id="demo", poll_seconds=2)
    classpath, kwargs = trigger.serialize()
    assert classpath == "order_integration.poll_trigger.StorefrontPollTrigger"
    assert kwargs == {"store_id": "demo", "poll_seconds": 2.0, "resignal_seconds": 300.0}
    assert StorefrontPollTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_the_first_poll_reads_back_the_lookback_then_only_new_modifications(shop, polls):
    clock = Clock(DAY.add(hours=10, minutes=30))
    p, ledger = polls(shop, clock)
    end = clock.now.subtract(seconds=shop.settle)
    first = _ids_modified_in(list(shop.orders.values()), end.subtract(minutes=10), end)
    assert 5 <= len(first) < len(ORDERS)
    [event] = p.poll()
    assert (event["store_id"], event["orders_waiting"], event["reason"]) == ("demo", len(first), "new")
    assert _waiting(ledger) == first
    rows = ledger.webhook_inbox.rows("demo")
    assert {r["topic"] for r in rows} == {"poll"} and len(rows) == len(first)
    assert ledger.poll_cursors.get("demo") == end

    clock.now = clock.now.add(seconds=5)  # nothing changed: the overlap re-reads, nothing doubles
    assert p.poll() == []
    assert len(ledger.webhook_inbox.rows("demo")) == len(first)

    old, recent = min(shop.orders), max(first, key=int)  # one from 10:00-ish, one already waiting
    shop.touch(old, clock.now)
    shop.touch(int(recent), clock.now)
    clock.now = clock.now.add(seconds=shop.settle + 5)
    [event] = p.poll()
    assert event["reason"] == "new" and event["orders_waiting"] == len(first | {str(old)})
    rows = ledger.webhook_inbox.rows("demo")
    assert len(rows) == len(first) + 2  # one new row per new modification
    assert sorted(r["order_id"] for r in rows[-2:]) == sorted([str(old), recent])

    ledger.webhook_inbox.mark_done("demo", [r["order_id"] for r in rows], "run_1")  # the run did them
    clock.now = clock.now.add(seconds=5)
    assert p.poll() == [] and _waiting(ledger) == set()


def test_a_restarted_trigger_resumes_from_the_cursor_in_the_ledger(shop, polls):
    clock = Clock(DAY.add(hours=10, minutes=30))
    p, ledger = polls(shop, clock)
    assert len(p.poll()) == 1
    cursor = ledger.poll_cursors.get("demo")
    ledger.webhook_inbox.mark_done("demo", _waiting(ledger), "run_1")
    p.close()
    # The triggerer is down for 30 minutes; three orders change meanwhile, the first 29 minutes
    # before it is back: outside any lookback from then, only the stored cursor finds them.
    changed = [min(shop.orders), min(shop.orders) + 5, max(shop.orders)]
    for minutes, order_id in zip((31, 35, 40), changed, strict=True):
        shop.touch(order_id, DAY.add(hours=10, minutes=minutes))
    clock.now = DAY.add(hours=11)

    restarted, ledger = polls(shop, clock)  # a new trigger, a new engine: nothing in memory
    [event] = restarted.poll()
    assert event["orders_waiting"] == 3 and _waiting(ledger) == {str(i) for i in changed}
    assert ledger.poll_cursors.get("demo") == clock.now.subtract(seconds=shop.settle) > cursor
    assert restarted.poll() == []


def test_orders_modified_while_a_scan_pages_are_in_it_or_in_the_next(shop, polls):
    """Three orders a page, oldest modification first. While the second scan is between its
    pages, an order it has read and one it has not reached yet are modified again — past the
    scan's end. Neither is lost: the first is in this scan, the second in the next."""
    clock = Clock(DAY.add(hours=10, minutes=30))
    armed: dict[str, Any] = {}

    def on_page(_pages: int, _orders: int, _total: int | None) -> None:
        if armed.get("touch"):  # the scan's first page is read
            for order_id in armed.pop("touch"):
                shop.touch(order_id, armed["to"])

    p, ledger = polls(shop, clock, on_page=on_page)
    assert len(p.poll()) == 1
    cursor = ledger.poll_cursors.get("demo")
    ledger.webhook_inbox.mark_done("demo", _waiting(ledger), "run_1")
    # eight orders change between 10:31 and 10:38; the scan at 10:40 reads them in pages of 3
    changed = sorted(shop.orders)[:8]
    for minute, order_id in enumerate(changed, start=31):
        shop.touch(order_id, DAY.add(hours=10, minutes=minute))
    clock.now = DAY.add(hours=10, minutes=40, seconds=shop.settle)
    scan_start, scan_end = pendulum.instance(cursor).subtract(seconds=OVERLAP_SECONDS), DAY.add(hours=10, minutes=40)
    in_window = sorted((o for o in shop.orders.values() if scan_start <= _modified(o) < scan_end),
                       key=lambda o: (_modified(o), o["id"]))
    read, unread = in_window[0]["id"], in_window[-1]["id"]  # on the first page / on the last
    assert unread == changed[-1] and len(in_window) > 6
    armed.update({"touch": [read, unread], "to": scan_end.add(seconds=20)})
    assert len(p.poll()) == 1
    assert "touch" not in armed, "the storefront was modified during the scan"
    first_scan = _waiting(ledger)
    assert str(read) in first_scan and set(map(str, changed[:-1])) <= first_scan
    assert str(unread) not in first_scan  # it left the window before the scan reached it
    clock.now = clock.now.add(seconds=30)  # the next scan: [10:40 - overlap, 10:40:30)
    assert len(p.poll()) == 1
    assert _waiting(ledger) == {str(o["id"]) for o in in_window}
    stamp = scan_end.add(seconds=20).strftime("%Y%m%dT%H%M%S")
    for order_id in (read, unread):  # each has a waiting row of its modification during the scan
        rows = [r for r in ledger.webhook_inbox.rows("demo") if r["order_id"] == str(order_id)]
        assert stamp in {r["delivery_id"].split(":")[2][:15] for r in rows if r["done_at"] is None}


def test_a_failing_storefront_moves_no_cursor_and_stops_no_inbox_watching(woo, polls, caplog):
    clock = Clock(DAY.add(hours=10, minutes=30))
    p, ledger = polls(woo, clock)
    woo.server.inject_faults([{"type": "503", "retry_after": None, "times": 4}])  # two polls' tries
    # a delivery in the inbox (a webhook, or a run that failed): watched while the storefront is down
    ledger.webhook_inbox.record(InboxDelivery("demo", "7001", "order.updated", "d1", "a" * 64))
    with caplog.at_level(logging.INFO, logger="order_integration.poll_trigger"):
        [event] = p.poll()
        assert event["orders_waiting"] == 1
        clock.now = clock.now.add(seconds=5)
        assert p.poll() == []
        assert ledger.poll_cursors.get("demo") is None
        clock.now = clock.now.add(seconds=5)
        [event] = p.poll()  # readable again: the first window is read from the lookback as planned
    end = clock.now
    assert _waiting(ledger) == _ids_modified_in(ORDERS, end.subtract(minutes=10), end) | {"7001"}
    assert ledger.poll_cursors.get("demo") == end
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "order_integration.poll_trigger"]
    assert len(warnings) == 1 and "store demo: storefront poll failed (StorefrontError: " in warnings[0]
    assert any("storefront readable again after 2 failed poll(s)" in r.getMessage() for r in caplog.records)


def test_the_deployed_path_reads_the_store_config_and_its_connection(woo, ledger_path, monkeypatch, tmp_path):
    """No test doubles but the clock of the stepping: the trigger opens the store's poller from
    the config file and the Airflow connection, and reads real time."""
    config = tmp_path / "stores.yaml"
    config.write_text(f"stores:\n  - id: demo\n    mode: realtime\n    realtime_source: polling\n"
                      f"    storefront_conn_id: {CONN}\n    backend_conn_id: backend_demo\n")
    monkeypatch.setenv("ORDER_INTEGRATION_CONFIG", str(config))
    ledger = Ledger(sqlite_engine(ledger_path))
    woo.touch(7003, pendulum.now("UTC").subtract(seconds=30))
    trigger = StorefrontPollTrigger(store_id="demo", poll_seconds=5)
    trigger.open_inbox = lambda: ledger.webhook_inbox
    p = _stepped(trigger, monkeypatch)
    try:
        [event] = p.poll()
    finally:
        p.close()
    assert event["orders_waiting"] == 1 and _waiting(ledger) == {"7003"}
    assert ledger.poll_cursors.get("demo") > pendulum.now("UTC").subtract(seconds=10)


def test_the_cursor_never_moves_back(ledger_path):
    cursors = Ledger(sqlite_engine(ledger_path)).poll_cursors
    assert cursors.get("demo") is None
    cursors.advance("demo", DAY.add(hours=10))
    cursors.advance("demo", DAY.add(hours=9))  # an older scan finishing late
    assert cursors.get("demo") == DAY.add(hours=10)
    cursors.advance("demo", DAY.add(hours=11))
    assert cursors.get("demo") == DAY.add(hours=11) and cursors.get("other") is None
