"""Real-time mode's polling fallback: the storefront's modified orders into the webhook inbox.

For a shop whose storefront cannot reach the api-server (no webhooks), ``realtime_source:
polling`` has the triggerer ask the storefront, every ``realtime_poll_seconds``, for the orders
modified since the last scan (:class:`~order_integration.poll_trigger.StorefrontPollTrigger`).
Each order found is written to ``webhook_inbox`` as a delivery with topic ``poll``; from there
on everything is real-time mode as it is with webhooks: the same trigger fires for the inbox,
the same run takes the waiting orders, fetches each as it is now, validates, delivers once and
marks the rows done.

The no-loss rules are the export's (``export.py``'s extraction), applied to a moving window:

* one scan reads ``[start, end)`` through the storefront interface
  (:meth:`~order_integration.storefronts.base.StorefrontClient.iter_orders`): inclusive start,
  exclusive end, whole seconds, every page checked, and nothing handed on until the window is
  complete — an order modified while the scan pages through is either in it (its latest version
  the scan saw) or modified at or after ``end``, which the next scan covers;
* ``end`` is taken before the scan starts; the inbox rows are written first and only then the
  cursor (``poll_cursors.scanned_to = end``, in the ledger): a scan that fails or a triggerer that
  dies mid-scan moves nothing, and the next one reads the same window again;
* the next scan starts ``OVERLAP_SECONDS`` before the cursor, so a modification committed a little
  after its timestamp (a long transaction, a storefront clock slightly behind ours) is still read;
  the scheduled window, with its ``lookback_minutes``, stays the safety net beyond that;
* a re-read order is not a new delivery: the inbox row's key is the order id and its modification
  time (``delivery_id`` ``poll:<id>:<updated_at>``), so only a new modification makes a new row.

The first scan of a store (no cursor) reads back ``lookback_minutes``; one scan reads at most
``MAX_SCAN_SECONDS`` (a cursor left far behind by a long outage catches up an hour per poll).
A platform whose time filter lags its writes says so with the client's ``settle_seconds``
(Shopify: its search index, 60 s unless the connection says otherwise): the window then ends that
long before now, so the scan never waits — and an order reaches the inbox that much later.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pendulum

from order_integration.config import StoreConfig
from order_integration.ids import is_order_id
from order_integration.ledger import InboxDelivery, PollCursors, WebhookInbox
from order_integration.storefronts.base import StorefrontClient

log = logging.getLogger(__name__)

#: The inbox topic of an order the poll found (webhooks carry the platform's, ``order.updated``).
TOPIC = "poll"
#: Each scan re-reads this much before the cursor (late commits, a storefront clock behind ours).
OVERLAP_SECONDS = 60
#: At most this much storefront time per scan.
MAX_SCAN_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Scan:
    """One poll of the storefront: the window read, orders in it, and new inbox rows."""

    start: datetime
    end: datetime
    orders: int
    recorded: int


class StorefrontPoller:
    """Scans one store's storefront for modified orders into its webhook inbox (one scan per
    :meth:`poll`). Keeps only an optimisation in memory (the delivery ids of the last scan, not
    written again); the cursor and the rows are in the ledger."""

    def __init__(self, store: StoreConfig, client: StorefrontClient, inbox: WebhookInbox,
                 cursors: PollCursors, *, overlap_seconds: int = OVERLAP_SECONDS,
                 now: Callable[[], pendulum.DateTime] = lambda: pendulum.now("UTC")) -> None:
        self.store = store
        self.client = client
        self.inbox = inbox
        self.cursors = cursors
        self.overlap = timedelta(seconds=overlap_seconds)
        self._now = now
        self._last_scan: set[str] = set()

    def window(self) -> tuple[pendulum.DateTime, pendulum.DateTime]:
        """The next scan's ``[start, end)``: from the stored cursor less the overlap (the first
        scan: ``lookback_minutes`` back) to now — less the client's ``settle_seconds``, for a
        platform whose time filter lags writes (Shopify's search index) — at most
        ``MAX_SCAN_SECONDS``."""
        settle = float(getattr(self.client, "settle_seconds", 0) or 0)
        end = self._now().in_timezone("UTC").subtract(seconds=settle)
        cursor = self.cursors.get(self.store.id)
        if cursor is None:
            start = end.subtract(minutes=self.store.lookback_minutes)
        else:
            start = pendulum.instance(cursor).in_timezone("UTC") - self.overlap
        return start, min(end, start.add(seconds=MAX_SCAN_SECONDS))

    def poll(self) -> Scan:
        """Read the next window completely, record its orders in the inbox, then move the cursor
        to the window's end. Raises (the cursor unmoved) when the storefront could not be read."""
        start, end = self.window()
        if end <= start:  # our clock went back behind the cursor: wait for it
            return Scan(start, end, 0, 0)
        store_id = self.store.id
        found: set[str] = set()
        recorded = orders = 0
        for raw in self.client.iter_orders(start, end):
            order = self.client.normalise(raw, store_id)
            orders += 1
            if not is_order_id(order.order_id):
                log.warning("store %s: an order the poll read has no usable id (%r); the scheduled "
                            "window will report it", store_id, order.order_id)
                continue
            delivery_id = _delivery_id(order.order_id, order.updated_at, raw)
            found.add(delivery_id)
            if delivery_id in self._last_scan:
                continue  # in the inbox since the last scan (the overlap re-reads it)
            digest = hashlib.sha256(delivery_id.encode()).hexdigest()
            if self.inbox.record(InboxDelivery(store_id, order.order_id, TOPIC, delivery_id, digest)):
                recorded += 1
        self.cursors.advance(store_id, end)
        self._last_scan = found
        return Scan(start, end, orders, recorded)


def _delivery_id(order_id: str, updated_at: datetime | None, raw: object) -> str:
    """``poll:<order id>:<modification time>``: the same modification read twice is one delivery.
    An order without a readable modification time is keyed by its content instead."""
    if updated_at is not None:
        moment = pendulum.instance(updated_at).in_timezone("UTC").strftime("%Y%m%dT%H%M%S.%f")
    else:
        import json

        content = json.dumps(raw, sort_keys=True, default=str).encode()
        moment = "content-" + hashlib.sha256(content).hexdigest()[:32]
    return f"{TOPIC}:{order_id}:{moment}"


def open_poller(store_id: str, inbox: WebhookInbox) -> StorefrontPoller:
    """The poller of ``store_id`` (store config, its storefront connection) over ``inbox``'s ledger.

    The client gives up sooner than an export task's (2 tries, waits of at most 5 s): it runs in
    the triggerer's worker threads, and the next poll is the retry."""
    from order_integration.config import load_config
    from order_integration.storefronts import get_client

    store = load_config().store(store_id)
    client = get_client(store.platform, store.storefront_conn_id, max_attempts=2, max_wait_seconds=5,
                        timeout=30)
    return StorefrontPoller(store, client, inbox, PollCursors(inbox.engine))
