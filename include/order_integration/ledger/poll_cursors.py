"""The polling fallback's cursors: how far each store's storefront has been read.

Table: ``poll_cursors`` (schema version 4), one row per store in ``realtime_source: polling``.
``scanned_to`` is the exclusive end of the last storefront scan that was read completely and
whose orders are all in ``webhook_inbox`` (:mod:`order_integration.polling` writes the inbox rows
first, then the cursor). A restarted triggerer reads it and goes on from there.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select

from order_integration.ledger.db import dialect_insert, now, utc
from order_integration.ledger.schema import poll_cursors


class PollCursors:
    """Reads and moves the stores' cursors; each call is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, store_id: str) -> datetime | None:
        """The store's ``scanned_to`` (aware UTC), or ``None`` before its first complete scan."""
        c = poll_cursors.c
        with self.engine.connect() as conn:
            value = conn.execute(select(c.scanned_to).where(c.store_id == store_id)).scalar()
        return None if value is None else utc(value)

    def advance(self, store_id: str, scanned_to: datetime) -> None:
        """Set the store's cursor to ``scanned_to`` (a later scan's end; never moved back)."""
        c = poll_cursors.c
        at = utc(scanned_to)
        with self.engine.begin() as conn:
            stmt = dialect_insert(conn, poll_cursors)
            stmt = stmt.on_conflict_do_update(
                index_elements=[c.store_id],
                set_={"scanned_to": stmt.excluded.scanned_to, "updated_at": stmt.excluded.updated_at},
                where=c.scanned_to < stmt.excluded.scanned_to,
            )
            conn.execute(stmt, {"store_id": store_id, "scanned_to": at, "updated_at": now()})
