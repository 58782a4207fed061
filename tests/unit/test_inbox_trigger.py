"""The real-time trigger's polling (issue 15): fires once per new batch of deliveries, not again
for the same rows, again for rows still waiting after the re-signal time, and survives a ledger
that cannot be read (with a log line), all against a real SQLite inbox."""

from __future__ import annotations

import asyncio
import logging

import pytest

from order_integration.inbox_trigger import InboxWatch, WebhookInboxTrigger
from order_integration.ledger import InboxDelivery, Ledger, sqlite_engine

pytestmark = pytest.mark.unit


@pytest.fixture
def inbox(tmp_path):
    return Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True).webhook_inbox


def _record(inbox, *order_ids: int, store: str = "demo") -> None:
    for order_id in order_ids:
        inbox.record(InboxDelivery(store, str(order_id), "order.updated", f"d{order_id}", "a" * 64))


class Polls:
    """Steps the trigger's run() one poll at a time: ``poll()`` lets it poll once and returns
    the events of that poll (the trigger's pause between polls waits for the next ``poll()``);
    ``clock`` is what ``time.monotonic`` says inside the trigger."""

    def __init__(self, trigger: WebhookInboxTrigger, monkeypatch) -> None:
        self.trigger = trigger
        self.loop = asyncio.new_event_loop()
        self.gen = trigger.run()
        self.pending: asyncio.Future | None = None
        self.paused: asyncio.Future | None = None
        self.go: asyncio.Future | None = None
        self.clock = 1000.0
        monkeypatch.setattr("order_integration.inbox_trigger.time.monotonic", lambda: self.clock)
        trigger.pause = self._pause

    async def _pause(self) -> None:
        self.go = self.loop.create_future()
        self.paused.set_result(None)
        await self.go

    def poll(self) -> list[dict]:
        if self.go is not None:
            self.go.set_result(None)  # end the pause: the next poll starts
        self.paused = self.loop.create_future()
        events = []
        while True:
            if self.pending is None:
                self.pending = asyncio.ensure_future(self.gen.__anext__(), loop=self.loop)
            self.loop.run_until_complete(asyncio.wait({self.pending, self.paused},
                                                      return_when=asyncio.FIRST_COMPLETED))
            if self.pending.done():
                events.append(self.pending.result().payload)
                self.pending = None
                continue
            return events  # paused after this poll

    def close(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.loop.run_until_complete(asyncio.gather(self.pending, return_exceptions=True))
        self.loop.run_until_complete(self.gen.aclose())
        self.loop.close()


@pytest.fixture
def polls(inbox, monkeypatch):
    made: list[Polls] = []

    def make(resignal_seconds: float = 300.0, open_inbox=None) -> Polls:
        trigger = WebhookInboxTrigger(store_id="demo", poll_seconds=5, resignal_seconds=resignal_seconds)
        trigger.open_inbox = open_inbox or (lambda: inbox)
        made.append(Polls(trigger, monkeypatch))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_it_serializes_to_its_importable_classpath_and_kwargs():
    trigger = WebhookInboxTrigger(store_id="demo", poll_seconds=2)
    classpath, kwargs = trigger.serialize()
    assert classpath == "order_integration.inbox_trigger.WebhookInboxTrigger"
    assert kwargs == {"store_id": "demo", "poll_seconds": 2.0, "resignal_seconds": 300.0}
    assert WebhookInboxTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_nothing_waiting_fires_nothing(polls, inbox):
    p = polls()
    _record(inbox, 7, store="other")  # another store's deliveries are not this trigger's
    assert p.poll() == []
    assert p.poll() == []


def test_fires_once_per_new_batch_and_not_again_for_the_same_rows(polls, inbox):
    p = polls()
    _record(inbox, 1, 2, 3)
    [event] = p.poll()
    assert (event["store_id"], event["orders_waiting"], event["reason"]) == ("demo", 3, "new")
    assert p.poll() == [] and p.poll() == []  # the same rows, still waiting: no second signal
    _record(inbox, 4)  # a new delivery while the first three still wait
    [again] = p.poll()
    assert (again["orders_waiting"], again["reason"]) == (4, "new")
    assert again["newest_delivery"] > event["newest_delivery"]
    inbox.mark_done("demo", ["1", "2", "3", "4"], "run_1")
    assert p.poll() == []


def test_a_burst_between_two_polls_is_one_event(polls, inbox):
    p = polls()
    assert p.poll() == []
    _record(inbox, *range(100, 150))
    [event] = p.poll()
    assert event["orders_waiting"] == 50


def test_rows_still_waiting_are_signalled_again_after_the_resignal_time(polls, inbox):
    """A failed run leaves its rows waiting and nothing new may come: signal them again."""
    p = polls(resignal_seconds=60)
    _record(inbox, 1)
    assert [e["reason"] for e in p.poll()] == ["new"]
    p.clock += 59
    assert p.poll() == []
    p.clock += 1
    assert [e["reason"] for e in p.poll()] == ["still_waiting"]
    p.clock += 30
    assert p.poll() == []
    inbox.mark_done("demo", ["1"], "run_2")
    p.clock += 600
    assert p.poll() == [] and p.poll() == []


def test_a_new_trigger_fires_for_what_waits(polls, inbox):
    """A triggerer restart makes a new trigger: it fires at once for rows already waiting."""
    _record(inbox, 1, 2)
    first = polls()
    assert len(first.poll()) == 1
    restarted = polls()
    assert [e["orders_waiting"] for e in restarted.poll()] == [2]


def test_survives_a_ledger_error_with_a_log_line(polls, inbox, caplog):
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError("database is locked\nsecond line")
        return inbox

    _record(inbox, 5)
    p = polls(open_inbox=flaky)
    with caplog.at_level(logging.INFO, logger="order_integration.inbox_trigger"):
        assert p.poll() == []  # the first failure: logged
        assert p.poll() == []  # the second: not logged again
        assert [e["orders_waiting"] for e in p.poll()] == [1]  # back: the rows were kept
        assert p.poll() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first failure; the second is not repeated
    assert "store demo: webhook inbox not readable (OSError: database is locked)" in warnings[0]
    assert any("readable again after 2 failed poll(s)" in r.getMessage() for r in caplog.records)


def test_the_watch_alone():
    watch = InboxWatch(resignal_seconds=10)
    assert watch.fire(0, 0, now=0) is None
    assert watch.fire(5, 2, now=1) == "new"
    assert watch.fire(5, 2, now=2) is None
    assert watch.fire(4, 1, now=3) is None  # the newest row was done; an older one waits
    assert watch.fire(4, 1, now=11) == "still_waiting"
    assert watch.fire(4, 1, now=12) is None
    assert watch.fire(6, 2, now=13) == "new"
