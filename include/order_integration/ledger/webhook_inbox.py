"""The webhook inbox: the storefronts' verified deliveries (real-time mode), until an export
run has delivered their orders.

Table: ``webhook_inbox`` (schema version 3), one row per distinct delivery. The receiver on the
api-server (:mod:`order_integration.webhooks`) records a delivery here *before* it answers
2xx, so a delivery the storefront saw acknowledged is never lost; a storefront's retry of it is
recorded once. The body is only a hint: the row keeps which order changed, not how — the
export fetches the order as it is now.

A duplicate is the same delivery id *and* the same body (the unique key
``(store_id, delivery_id, body_digest)``): WooCommerce derives ``X-WC-Webhook-Delivery-ID``
from the webhook id and the current second, so two orders changed in one second share it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, distinct, func, select, update

from order_integration.ledger.db import chunks, dialect_insert, now, utc
from order_integration.ledger.schema import webhook_inbox


@dataclass(frozen=True, slots=True)
class InboxDelivery:
    """One verified delivery of an order topic, as the receiver records it."""

    store_id: str
    order_id: str
    topic: str
    delivery_id: str  # '' when the platform sent none
    body_digest: str  # sha256 of the raw body, hex


class WebhookInbox:
    """Records deliveries, lists the orders waiting, marks them done; every write is one short
    transaction, and duplicates are decided by the database (``INSERT … ON CONFLICT DO NOTHING``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, delivery: InboxDelivery, *, received_at: datetime | None = None) -> bool:
        """Record one delivery; ``True`` when it is new, ``False`` for a duplicate (same store,
        delivery id and body digest), which leaves the first row as it was."""
        c = webhook_inbox.c
        row = {
            "store_id": delivery.store_id, "order_id": delivery.order_id, "topic": delivery.topic,
            "delivery_id": delivery.delivery_id, "body_digest": delivery.body_digest,
            "received_at": received_at or now(),
        }
        with self.engine.begin() as conn:
            stmt = (dialect_insert(conn, webhook_inbox)
                    .on_conflict_do_nothing(index_elements=[c.store_id, c.delivery_id, c.body_digest])
                    .returning(c.id))
            return conn.execute(stmt, row).first() is not None

    def waiting(self, store_id: str, *, limit: int | None = None) -> list[str]:
        """Ids of the store's orders with a delivery not done yet, each once, the order waiting
        longest first (``limit``: at most that many)."""
        c = webhook_inbox.c
        first = func.min(c.received_at)
        query = (select(c.order_id)
                 .where(c.store_id == store_id, c.done_at.is_(None))
                 .group_by(c.order_id)
                 .order_by(first, c.order_id))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    def newest_waiting(self, store_id: str) -> tuple[int, int]:
        """``(id of the store's newest delivery not done yet, orders waiting)``; ``(0, 0)`` when
        nothing waits. Ids grow with every new row, so a larger id than one seen before means a
        delivery recorded since (what the real-time trigger polls)."""
        c = webhook_inbox.c
        query = (select(func.max(c.id), func.count(distinct(c.order_id)))
                 .where(c.store_id == store_id, c.done_at.is_(None)))
        with self.engine.connect() as conn:
            newest, orders = conn.execute(query).one()
        return int(newest or 0), int(orders or 0)

    def mark_done(self, store_id: str, order_ids: Iterable[int | str], run_id: str, *,
                  received_before: datetime | None = None) -> int:
        """Mark the store's waiting deliveries of these orders done by ``run_id``; returns how many
        rows it marked. ``received_before``: only deliveries received up to then — pass the time the
        run fetched the orders, so a delivery that came in while the run was exporting stays
        waiting (it may announce a change the run did not see). Already-done rows keep their run."""
        c = webhook_inbox.c
        ids = sorted({str(i) for i in order_ids})
        at = now()
        marked = 0
        with self.engine.begin() as conn:
            for chunk in chunks(ids):
                stmt = (update(webhook_inbox)
                        .where(c.store_id == store_id, c.order_id.in_(chunk), c.done_at.is_(None))
                        .values(done_at=at, done_by_run=run_id))
                if received_before is not None:
                    stmt = stmt.where(c.received_at <= utc(received_before))
                marked += conn.execute(stmt).rowcount
        return marked

    def rows(self, store_id: str) -> list[dict[str, Any]]:
        """The store's inbox rows, oldest first (for operators and tests)."""
        c = webhook_inbox.c
        with self.engine.connect() as conn:
            result = conn.execute(select(webhook_inbox).where(c.store_id == store_id).order_by(c.id))
            return [dict(r) for r in result.mappings()]
