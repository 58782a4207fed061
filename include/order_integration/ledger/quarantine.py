"""Quarantine: the versions validation refused, with every reason, until the order is delivered.

Table: ``order_quarantine`` (contract). An entry is released (``released_at``) in the very
transaction that records the order's delivery (:func:`release_delivered`, called by
:meth:`order_integration.ledger.deliveries.Deliveries.complete_batch`), so a delivered order
is never still open in quarantine, whatever crashes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, and_, select, update

from order_integration.ledger.db import OrderVersion, chunks, insert_ignore, now
from order_integration.ledger.schema import order_quarantine

log = logging.getLogger(__name__)


class Quarantine:
    """Records, looks up and lists quarantine entries; every write is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def unreleased_versions(self, store_id: str, order_ids: Iterable[str]) -> set[OrderVersion]:
        """Versions of those orders in quarantine and not released."""
        ids = sorted(set(order_ids))
        found: set[OrderVersion] = set()
        q = order_quarantine.c
        with self.engine.connect() as conn:
            for chunk in chunks(ids):
                rows = conn.execute(
                    select(q.order_id, q.order_version).where(
                        q.store_id == store_id, q.order_id.in_(chunk), q.released_at.is_(None)
                    )
                )
                found.update((r[0], r[1]) for r in rows)
        return found

    def entries(self, store_id: str, *, include_released: bool = False) -> list[dict[str, Any]]:
        """The store's open entries (every entry with ``include_released``) by order id, each
        with its ``reasons`` decoded."""
        q = order_quarantine.c
        cond = q.store_id == store_id
        if not include_released:
            cond = and_(cond, q.released_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(select(order_quarantine).where(cond).order_by(q.order_id)).mappings()
            return [{**r, "reasons": json.loads(r["reasons"])} for r in rows]

    def record(self, store_id: str, entries: Iterable[tuple[str, str, list[dict[str, str]]]]) -> int:
        """Quarantine (order_id, version, reasons); a version already there is left alone.

        Returns how many entries were new."""
        rows = [
            {"store_id": store_id, "order_id": oid, "order_version": ver,
             "reasons": json.dumps(reasons, ensure_ascii=False), "quarantined_at": now()}
            for oid, ver, reasons in entries
        ]
        return insert_ignore(self.engine, order_quarantine, rows)


def release_delivered(conn: Connection, store_id: str, order_ids: Select[Any], at: datetime) -> int:
    """An order that reached the backend leaves quarantine: its open entries (any
    version, the fixed one superseding the bad ones) get ``released_at``.

    ``order_ids``: a one-column SELECT of the delivered orders' ids (a batch's claims and
    resends), so the database matches them, however many. ``conn``: the transaction that
    records the delivery, so both happen or neither."""
    q = order_quarantine.c
    released = conn.execute(
        update(order_quarantine)
        .where(q.store_id == store_id, q.released_at.is_(None), q.order_id.in_(order_ids))
        .values(released_at=at)
    ).rowcount
    if released:
        log.info("ledger: %d quarantine entr%s of store %s released (delivered now)",
                 released, "y" if released == 1 else "ies", store_id)
    return released
