"""Deliveries: the crash-safe bookkeeping of the export's load.

Tables: ``order_deliveries`` (contract) and two internal ones that make a delivery crash-safe:

* ``delivery_batches`` — one row per orders file a load task prepares: where its orders
  come from (``source_path``), the rendered file in staging, and ``uploaded_at`` once the
  file is on the SFTP server;
* ``delivery_claims`` — ``(store_id, order_id, order_version)`` unique, pointing at a batch;

and ``order_resends``, the versions an operator sent again on purpose.

A load claims versions first (the unique key decides races between overlapping runs),
renders and uploads the claimed versions, then marks the batch uploaded and writes
``order_deliveries`` in one transaction — which also releases the delivered orders'
quarantine entries (:func:`order_integration.ledger.quarantine.release_delivered`). A batch
left pending by a crash is finished by the next load of the store (same content, same file
name), so nothing is lost or doubled.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, insert, literal, select, union, update

from order_integration.failpoints import failpoint
from order_integration.ledger.db import OrderVersion, chunks, dialect_insert, insert_ignore, now
from order_integration.ledger.quarantine import release_delivered
from order_integration.ledger.schema import delivery_batches, delivery_claims, order_deliveries, order_resends


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    store_id: str
    run_id: str
    window_label: str
    source_path: str
    staged_path: str | None
    file_name: str | None
    orders: int | None


class Deliveries:
    """Claims, delivery batches, deliveries and resends; every write is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- reads ---------------------------------------------------------------------------
    def claimed_versions(self, store_id: str, order_ids: Iterable[str]) -> dict[str, set[str]]:
        """order_id -> versions claimed (delivered or being delivered) for those orders."""
        ids = sorted(set(order_ids))
        found: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(ids):
                rows = conn.execute(
                    select(delivery_claims.c.order_id, delivery_claims.c.order_version).where(
                        delivery_claims.c.store_id == store_id, delivery_claims.c.order_id.in_(chunk)
                    )
                )
                for order_id, version in rows:
                    found.setdefault(order_id, set()).add(version)
        return found

    def delivered(self, store_id: str) -> list[dict[str, Any]]:
        """The store's ``order_deliveries`` rows."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(order_deliveries).where(order_deliveries.c.store_id == store_id)
            ).mappings()
            return [dict(r) for r in rows]

    def pending_batches(self, store_id: str) -> list[Batch]:
        b = delivery_batches.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(delivery_batches)
                .where(b.store_id == store_id, b.uploaded_at.is_(None))
                .order_by(b.created_at)
            ).mappings()
            return [Batch(**{k: r[k] for k in Batch.__slots__}) for r in rows]

    def batch(self, batch_id: str) -> Batch:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(delivery_batches).where(delivery_batches.c.batch_id == batch_id)
            ).mappings().one()
            return Batch(**{k: row[k] for k in Batch.__slots__})

    def claimed_bases(self, store_id: str, order_ids: Iterable[str]) -> dict[str, set[str]]:
        """order_id -> status-free digests of the versions claimed for those orders."""
        c = delivery_claims.c
        found: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(order_ids))):
                rows = conn.execute(
                    select(c.order_id, c.base_version).where(
                        c.store_id == store_id, c.order_id.in_(chunk), c.base_version.is_not(None)
                    )
                )
                for order_id, base in rows:
                    found.setdefault(order_id, set()).add(base)
        return found

    def claim_runs(self, store_id: str, versions: Sequence[OrderVersion]) -> dict[OrderVersion, str]:
        """(order_id, version) -> run id of the batch that claimed it."""
        c, b = delivery_claims.c, delivery_batches.c
        wanted = set(versions)
        found: dict[OrderVersion, str] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(sorted({oid for oid, _ in wanted})):
                rows = conn.execute(
                    select(c.order_id, c.order_version, b.run_id)
                    .join(delivery_batches, b.batch_id == c.batch_id)
                    .where(c.store_id == store_id, c.order_id.in_(chunk))
                )
                found.update(((o, v), run) for o, v, run in rows if (o, v) in wanted)
        return found

    def run_files(self, store_id: str, run_id: str) -> list[str]:
        """Names of the files a run has delivered (completed batches), oldest first."""
        b = delivery_batches.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(b.file_name)
                .where(b.store_id == store_id, b.run_id == run_id, b.uploaded_at.is_not(None))
                .order_by(b.created_at)
            )
            return [r[0] for r in rows]

    def batch_claims(self, batch_id: str) -> set[OrderVersion]:
        """The versions that go out in this batch: its claims and its deliberate resends."""
        c, r = delivery_claims.c, order_resends.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.order_id, c.order_version).where(c.batch_id == batch_id))
            resent = conn.execute(select(r.order_id, r.order_version).where(r.batch_id == batch_id))
            return {(row[0], row[1]) for row in rows} | {(row[0], row[1]) for row in resent}

    def run_resends(self, store_id: str, run_id: str) -> set[OrderVersion]:
        """Versions a run sent again on purpose, in files that reached the server."""
        r = order_resends.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(r.order_id, r.order_version).where(
                r.store_id == store_id, r.run_id == run_id, r.resent_at.is_not(None)))
            return {(row[0], row[1]) for row in rows}

    def resends(self, store_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(order_resends).where(order_resends.c.store_id == store_id))
            return [dict(row) for row in rows.mappings()]

    # -- writes --------------------------------------------------------------------------
    def open_batch(
        self, store_id: str, run_id: str, window_label: str, source_path: str,
        versions: Sequence[OrderVersion], bases: Mapping[OrderVersion, str] | None = None,
        *, resend: bool = False,
    ) -> tuple[Batch, set[OrderVersion]]:
        """Create a batch and claim ``versions`` for it; returns the versions it won.

        A version claimed by another batch (an overlapping run) is not claimed again — unless
        ``resend``: then it joins this batch as a deliberate repeat (``order_resends``).
        ``bases``: each version's status-free digest (see ``model.status_free_version``)."""
        batch = Batch(str(uuid.uuid4()), store_id, run_id, window_label, source_path, None, None, None)
        with self.engine.begin() as conn:
            conn.execute(
                insert(delivery_batches).values(
                    batch_id=batch.batch_id, store_id=store_id, run_id=run_id,
                    window_label=window_label, source_path=source_path, created_at=now(),
                )
            )
        base_of = (bases or {}).get
        insert_ignore(self.engine, delivery_claims, (  # rows made a chunk at a time
            {"store_id": store_id, "order_id": oid, "order_version": ver, "batch_id": batch.batch_id,
             "base_version": base_of((oid, ver))}
            for oid, ver in versions
        ))
        if resend:
            won = self.batch_claims(batch.batch_id)
            repeats = [
                {"store_id": store_id, "order_id": oid, "order_version": ver,
                 "batch_id": batch.batch_id, "run_id": run_id}
                for oid, ver in dict.fromkeys(versions) if (oid, ver) not in won
            ]
            with self.engine.begin() as conn:
                for chunk in chunks(repeats):
                    conn.execute(insert(order_resends), list(chunk))
        return batch, self.batch_claims(batch.batch_id)

    def set_batch_file(self, batch_id: str, staged_path: str, file_name: str, orders: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(delivery_batches)
                .where(delivery_batches.c.batch_id == batch_id)
                .values(staged_path=staged_path, file_name=file_name, orders=orders)
            )

    def drop_batch(self, batch_id: str) -> None:
        """Forget a batch that claimed nothing (an empty batch never becomes a file)."""
        with self.engine.begin() as conn:
            conn.execute(delivery_claims.delete().where(delivery_claims.c.batch_id == batch_id))
            conn.execute(delivery_batches.delete().where(delivery_batches.c.batch_id == batch_id))

    def complete_batch(self, batch: Batch) -> int:
        """Mark the batch's file uploaded and record its deliveries, in one transaction."""
        if batch.file_name is None:
            raise ValueError(f"batch {batch.batch_id} has no file yet")
        at = now()
        c, d = delivery_claims.c, order_deliveries.c
        with self.engine.begin() as conn:
            claimed = conn.execute(
                select(func.count()).select_from(delivery_claims).where(c.batch_id == batch.batch_id)
            ).scalar_one()
            if claimed:  # a concurrent completion of the same batch may have recorded them: skip those
                # INSERT … SELECT: the database copies the claims, none of them passes through Python
                conn.execute(dialect_insert(conn, order_deliveries).from_select(
                    ["store_id", "order_id", "order_version", "file_name", "delivered_at"],
                    select(c.store_id, c.order_id, c.order_version,
                           literal(batch.file_name, d.file_name.type), literal(at, d.delivered_at.type))
                    .where(c.batch_id == batch.batch_id),
                ).on_conflict_do_nothing(index_elements=["store_id", "order_id", "order_version"]))
            failpoint("ledger.complete_batch.mid", store=batch.store_id)
            resent = conn.execute(
                update(order_resends)
                .where(order_resends.c.batch_id == batch.batch_id)
                .values(file_name=batch.file_name, resent_at=at)
            ).rowcount
            conn.execute(
                update(delivery_batches)
                .where(delivery_batches.c.batch_id == batch.batch_id)
                .values(uploaded_at=at)
            )
            r = order_resends.c
            delivered_ids = union(select(c.order_id).where(c.batch_id == batch.batch_id),
                                  select(r.order_id).where(r.batch_id == batch.batch_id))
            release_delivered(conn, batch.store_id, select(delivered_ids.subquery().c.order_id), at)
        return claimed + resent

