"""Stock levels: the last level applied to the storefront for each SKU and location.

Table: ``stock_levels`` (contract), one row per (store, SKU, location) — ``location`` is the
storefront's location key, ``''`` for a platform with one level per SKU (schema version 2) —
only ever moved forward in ``as_of`` by an upsert the database decides (see
:meth:`StockLevels.record`). In Python a level's key is ``(sku, location)`` with ``location``
``None`` for one level per SKU (as :class:`~order_integration.storefronts.base.CatalogItem`
keys its levels); the ledger stores that ``None`` as ``''``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from order_integration.ledger.db import chunks, dialect_insert, now, utc
from order_integration.ledger.schema import stock_levels

#: A level's key: (sku, the storefront's location key; ``None``: the platform keeps one level per SKU).
LevelKey = tuple[str, str | None]
#: The longest location key the ledger keeps (a key is never cut: a longer one is refused).
MAX_LOCATION_KEY = 255


@dataclass(frozen=True, slots=True)
class StockLevel:
    """The last level applied to the storefront for one SKU at one location (a ``stock_levels``
    row). ``location``: the storefront's location key (``None``: one level per SKU);
    ``file_location``: the stock file's ``location`` value as sent (informational)."""

    quantity: int
    as_of: datetime
    applied_at: datetime
    source_file: str
    location: str | None = None
    file_location: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StockLevel:
        return cls(int(row["quantity"]), utc(row["as_of"]), utc(row["applied_at"]), row["source_file"],
                   row.get("location") or None, row.get("file_location"))


def _key(row: Mapping[str, Any]) -> LevelKey:
    return (row["sku"], row["location"] or None)


def _stored_location(level: Mapping[str, Any]) -> str:
    location = level.get("location") or ""
    if len(str(location)) > MAX_LOCATION_KEY:
        raise ValueError(f"stock level of {level.get('sku')!r}: location key longer than "
                         f"{MAX_LOCATION_KEY} characters: {str(location)[:60]!r}…")
    return str(location)


class StockLevels:
    """Reads and upserts ``stock_levels`` rows; every write is one short transaction per chunk."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def levels(self, store_id: str, skus: Iterable[str]) -> dict[LevelKey, StockLevel]:
        """(sku, location) -> the last applied level, for every location of those of ``skus``
        that have one."""
        s = stock_levels.c
        found: dict[LevelKey, StockLevel] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(skus))):
                rows = conn.execute(select(stock_levels).where(s.store_id == store_id, s.sku.in_(chunk)))
                found.update((_key(r), StockLevel.from_row(r)) for r in rows.mappings())
        return found

    def all_levels(self, store_id: str) -> dict[LevelKey, StockLevel]:
        """(sku, location) -> the last applied level, for every level of the store."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(stock_levels).where(stock_levels.c.store_id == store_id))
            return {_key(r): StockLevel.from_row(r) for r in rows.mappings()}

    def record(
        self, store_id: str, source_file: str, levels: Sequence[Mapping[str, Any]]
    ) -> int:
        """Upsert ``stock_levels`` rows: ``sku``, ``quantity``, ``as_of``, optional ``location``
        (the storefront's location key; absent or ``None``: one level per SKU) and optional
        ``file_location`` (the file's location name, kept for operators).

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
            index_elements=[s.store_id, s.sku, s.location],
            set_={k: stmt.excluded[k] for k in ("quantity", "as_of", "applied_at", "source_file",
                                                 "file_location")},
            where=stmt.excluded.as_of >= s.as_of,
        ).returning(s.sku)  # a row comes back only where a level was inserted or replaced
        written = 0
        # one row per level (the last wins): an upsert may not touch one row twice
        unique = {(lv["sku"], _stored_location(lv)): lv for lv in levels}
        for chunk in chunks(list(unique.items())):
            rows = [{"store_id": store_id, "sku": sku, "location": location, "quantity": lv["quantity"],
                     "as_of": utc(lv["as_of"]), "applied_at": at, "source_file": source_file[:255],
                     "file_location": str(lv["file_location"])[:64] if lv.get("file_location") else None}
                    for (sku, location), lv in chunk]
            with self.engine.begin() as conn:
                written += len(conn.execute(stmt, rows).all())
        return written
