"""Stock levels: the last level applied to the storefront for each SKU.

Table: ``stock_levels`` (contract), one row per (store, SKU), only ever moved forward in
``as_of`` by an upsert the database decides (see :meth:`StockLevels.record`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from order_integration.ledger.db import chunks, dialect_insert, now, utc
from order_integration.ledger.schema import stock_levels


@dataclass(frozen=True, slots=True)
class StockLevel:
    """The last level applied to the storefront for one SKU (a ``stock_levels`` row)."""

    quantity: int
    as_of: datetime
    applied_at: datetime
    source_file: str
    location: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StockLevel:
        return cls(int(row["quantity"]), utc(row["as_of"]), utc(row["applied_at"]), row["source_file"],
                   row.get("location"))



class StockLevels:
    """Reads and upserts ``stock_levels`` rows; every write is one short transaction per chunk."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def levels(self, store_id: str, skus: Iterable[str]) -> dict[str, StockLevel]:
        """sku -> the last applied level, for those of ``skus`` that have one."""
        s = stock_levels.c
        found: dict[str, StockLevel] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(skus))):
                rows = conn.execute(select(stock_levels).where(s.store_id == store_id, s.sku.in_(chunk)))
                found.update((r["sku"], StockLevel.from_row(r)) for r in rows.mappings())
        return found

    def all_levels(self, store_id: str) -> dict[str, StockLevel]:
        """sku -> the last applied level, for every SKU of the store."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(stock_levels).where(stock_levels.c.store_id == store_id))
            return {r["sku"]: StockLevel.from_row(r) for r in rows.mappings()}

    def record(
        self, store_id: str, source_file: str, levels: Sequence[Mapping[str, Any]]
    ) -> int:
        """Upsert ``stock_levels`` rows (``sku``, ``quantity``, ``as_of``, optional ``location``).

        A level never replaces a newer one (``as_of`` only moves forward; an equal ``as_of``
        replaces, as the sync applied it): the database decides, row by row, in the upsert's
        ``WHERE``, so two writers cannot undo each other. Returns how many rows were inserted
        or replaced."""
        if not levels:
            return 0
        s = stock_levels.c
        at = now()
        stmt = dialect_insert(self.engine, stock_levels)
        stmt = stmt.on_conflict_do_update(
            index_elements=[s.store_id, s.sku],
            set_={k: stmt.excluded[k] for k in ("quantity", "as_of", "applied_at", "source_file",
                                                 "location")},
            where=stmt.excluded.as_of >= s.as_of,
        ).returning(s.sku)  # a row comes back only where a level was inserted or replaced
        written = 0
        # one row per SKU (the last wins): an upsert may not touch one row twice
        for chunk in chunks(list({lv["sku"]: lv for lv in levels}.values())):
            rows = [{"store_id": store_id, "sku": lv["sku"], "quantity": lv["quantity"],
                     "as_of": utc(lv["as_of"]), "applied_at": at, "source_file": source_file[:255],
                     "location": str(lv["location"])[:64] if lv.get("location") else None}
                    for lv in chunk]
            with self.engine.begin() as conn:
                written += len(conn.execute(stmt, rows).all())
        return written

