"""Status events: every line of the backend's status files, as applied to the storefront.

Table: ``status_events`` (contract), one row per line of a status file with its outcome.
The applied rows are the status sync's memory: which events were applied already (their
content digest, ``event_key``), how many units of a SKU were shipped, the last status the
sync wrote to an order (so the export recognises its own echo), who owns a tracking number.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, and_, func, insert, select

from order_integration.ledger.db import chunks, now
from order_integration.ledger.schema import status_events


class StatusEvents:
    """Reads and appends ``status_events`` rows; every write is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def applied_keys(self, store_id: str, event_keys: Iterable[str]) -> set[str]:
        """Those ``event_keys`` already applied (outcome ``applied``) to the store's orders."""
        keys = sorted(set(event_keys))
        e = status_events.c
        found: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in chunks(keys):
                rows = conn.execute(
                    select(e.event_key).where(
                        e.store_id == store_id, e.event_key.in_(chunk), e.outcome == "applied"
                    )
                )
                found.update(r[0] for r in rows)
        return found

    def shipped_quantities(self, store_id: str, order_ids: Iterable[str]) -> dict[tuple[str, str], int]:
        """(order_id, sku) -> units shipped so far by applied partial ``shipped`` events."""
        ids = sorted(set(order_ids))
        e = status_events.c
        found: dict[tuple[str, str], int] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(ids):
                rows = conn.execute(
                    select(e.order_id, e.sku, func.sum(e.quantity))
                    .where(
                        e.store_id == store_id, e.order_id.in_(chunk), e.event == "shipped",
                        e.outcome == "applied", e.sku.is_not(None), e.quantity.is_not(None),
                    )
                    .group_by(e.order_id, e.sku)
                )
                found.update(((o, sku), int(total)) for o, sku, total in rows)
        return found

    def statuses_written(self, store_id: str, order_ids: Iterable[str]) -> dict[str, str]:
        """order_id -> the last status the status sync wrote to that order (orders it never
        changed are absent). Lets the export recognise its own echo."""
        ids = sorted(set(order_ids))
        e = status_events.c
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(ids):
                rows = conn.execute(
                    select(e.order_id, e.new_status)
                    .where(
                        e.store_id == store_id, e.order_id.in_(chunk), e.outcome == "applied",
                        e.new_status.is_not(None),
                    )
                    .order_by(e.applied_at, e.line_number)
                )
                found.update((o, status) for o, status in rows)  # later rows win
        return found

    def recorded(self, store_id: str, source_file: str | None = None) -> list[dict[str, Any]]:
        """The store's status event rows (of one file if given), in the order they were recorded."""
        e = status_events.c
        cond = e.store_id == store_id
        if source_file is not None:
            cond = and_(cond, e.source_file == source_file)
        with self.engine.connect() as conn:
            rows = conn.execute(select(status_events).where(cond).order_by(e.applied_at, e.line_number))
            return [dict(r) for r in rows.mappings()]

    def tracking_owners(self, store_id: str, numbers: Iterable[str]) -> dict[str, str]:
        """tracking number -> the order an applied ``shipped`` event gave it."""
        e = status_events.c
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(numbers))):
                rows = conn.execute(
                    select(e.tracking_number, e.order_id).where(
                        e.store_id == store_id, e.tracking_number.in_(chunk), e.outcome == "applied"
                    )
                )
                found.update((number, order_id) for number, order_id in rows)
        return found

    def record(
        self, store_id: str, source_file: str, rows: Sequence[dict[str, Any]]
    ) -> int:
        """Append one ``status_events`` row per entry, in one transaction.

        Each entry holds ``line_number``, ``order_id``, ``event``, ``outcome`` and optionally
        ``event_key``, ``sku``, ``quantity``, ``new_status``, ``note``, ``occurred_at``."""
        if not rows:
            return 0
        at = now()
        optional = ("event_key", "sku", "quantity", "new_status", "note", "occurred_at", "tracking_number")
        values = [
            {"store_id": store_id, "source_file": source_file, "line_number": r["line_number"],
             "order_id": r["order_id"], "event": r["event"], "outcome": r["outcome"], "applied_at": at,
             **{k: r.get(k) for k in optional}}
            for r in rows
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(status_events), values)
        return len(values)
