"""The real-time trigger: watches a store's webhook inbox from Airflow's triggerer.

A store in ``mode: realtime`` gets an Asset with an ``AssetWatcher`` whose trigger is
:class:`WebhookInboxTrigger`; its export DAG ``order_export_realtime__S`` is scheduled on that
Asset. Every ``poll_seconds`` the trigger asks the ledger for the newest delivery not done yet
(:meth:`~order_integration.ledger.WebhookInbox.newest_waiting`) and fires a ``TriggerEvent`` when
it is newer than the last one it signalled; Airflow turns the event into an Asset event and
the scheduler into a run (at most one at a time: ``max_active_runs=1``, and the events that come
while a run is active wait as one queued Asset event, so a burst becomes one or two runs).

Why a watcher on the inbox, not an Asset event sent by the receiver: the receiver's 2xx depends
only on the inbox row (one short ledger transaction), not on Airflow's database or API being
writable at that moment; and the inbox is the durable state. A triggerer restart loses nothing
(the new trigger fires at once for whatever is waiting), a failed run leaves its rows waiting,
and the trigger signals rows still waiting again after ``resignal_seconds`` (a failed run, or a
run that took only the first ``MAX_ORDER_IDS``).

Imported by the DAG file at parse time and by the triggerer: the standard library and
Airflow's trigger base only; the ledger (SQLAlchemy) is imported when the trigger runs. The
ledger is read in a worker thread, never on the triggerer's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

if TYPE_CHECKING:
    from order_integration.ledger import WebhookInbox

log = logging.getLogger(__name__)

#: Rows still waiting this long after the last signal are signalled again.
RESIGNAL_SECONDS = 300.0
#: While the ledger stays unreadable, one warning per this many failed polls (the first is logged).
WARN_EVERY = 60


@dataclass
class InboxWatch:
    """What the trigger remembers between polls, and when it fires.

    Fires when the newest waiting delivery is newer than the last one signalled (inbox ids
    grow), or when deliveries still wait ``resignal_seconds`` after the last signal; never
    when nothing waits. A new watch (a triggerer restart) has signalled nothing: it fires at
    once for whatever waits."""

    resignal_seconds: float = RESIGNAL_SECONDS
    last_signalled: int = 0
    signalled_at: float | None = None

    def fire(self, newest: int, waiting: int, now: float) -> str | None:
        """The reason to fire (``new``, ``still_waiting``) and the watch updated, or None."""
        if newest <= 0 or waiting <= 0:
            return None
        if newest > self.last_signalled:
            reason = "new"
        elif self.signalled_at is None or now - self.signalled_at >= self.resignal_seconds:
            reason = "still_waiting"
        else:
            return None
        self.last_signalled = max(self.last_signalled, newest)
        self.signalled_at = now
        return reason


def open_airflow_inbox() -> WebhookInbox:
    """The inbox over the ledger Airflow configures (``order_ledger`` or the default SQLite)."""
    from order_integration.ledger import WebhookInbox, check_schema, engine_from_airflow

    engine = engine_from_airflow()
    check_schema(engine)
    return WebhookInbox(engine)


class WebhookInboxTrigger(BaseEventTrigger):
    """Fires when a store's webhook inbox has deliveries newer than the last it signalled.

    The event's payload (on the Asset event's ``extra``): ``store_id``, ``newest_delivery``
    (the inbox id), ``orders_waiting`` and ``reason``. The run reads the inbox itself; the
    payload only says why it was woken."""

    def __init__(self, *, store_id: str, poll_seconds: float = 5.0,
                 resignal_seconds: float = RESIGNAL_SECONDS) -> None:
        super().__init__()
        self.store_id = store_id
        self.poll_seconds = float(poll_seconds)
        self.resignal_seconds = float(resignal_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"store_id": self.store_id, "poll_seconds": self.poll_seconds,
                 "resignal_seconds": self.resignal_seconds})

    #: What the start-up log line says the trigger does.
    watching = "watching the webhook inbox"

    def open_inbox(self) -> WebhookInbox:
        """The inbox to poll (tests give their own); called in a worker thread."""
        return open_airflow_inbox()

    def check(self, inbox: WebhookInbox) -> tuple[int, int]:
        """One poll, in a worker thread: ``(newest waiting delivery, orders waiting)``. A subclass
        may fill the inbox first (the polling fallback, :mod:`order_integration.poll_trigger`)."""
        return inbox.newest_waiting(self.store_id)

    async def pause(self) -> None:
        """Between two polls (tests step the polls one by one)."""
        await asyncio.sleep(self.poll_seconds)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watch = InboxWatch(self.resignal_seconds)
        inbox: WebhookInbox | None = None
        failures = 0
        log.info("store %s: %s every %gs", self.store_id, self.watching, self.poll_seconds)
        while True:
            try:
                if inbox is None:
                    inbox = await asyncio.to_thread(self.open_inbox)
                newest, waiting = await asyncio.to_thread(self.check, inbox)
            except Exception as exc:  # the ledger is down or locked: poll again, the rows keep
                inbox = None  # a new engine next time (a fixed connection, a restarted database)
                failures += 1
                if failures % WARN_EVERY == 1:
                    log.warning("store %s: webhook inbox not readable (%s: %s); polling again every %gs "
                                "(%d failed poll(s) so far)", self.store_id, type(exc).__name__,
                                str(exc).splitlines()[0][:300] if str(exc) else "", self.poll_seconds,
                                failures)
            else:
                if failures:
                    log.info("store %s: webhook inbox readable again after %d failed poll(s)",
                             self.store_id, failures)
                    failures = 0
                reason = watch.fire(newest, waiting, time.monotonic())
                if reason is not None:
                    log.info("store %s: %d order(s) waiting in the webhook inbox (newest delivery %d, %s): "
                             "waking the real-time export", self.store_id, waiting, newest, reason)
                    yield TriggerEvent({"store_id": self.store_id, "newest_delivery": newest,
                                        "orders_waiting": waiting, "reason": reason})
            await self.pause()
