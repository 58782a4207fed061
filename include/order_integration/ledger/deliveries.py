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

from sqlalchemy import Connection, Engine, func, insert, literal, select, union, update

from order_integration.failpoints import failpoint
from order_integration.ledger.db import ROWS_PER_TRANSACTION, OrderVersion, chunks, dialect_insert, now
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

    def batch_size(self, batch_id: str) -> int:
        """How many versions go out in this batch (its claims and its deliberate resends)."""
        with self.engine.connect() as conn:
            return sum(conn.execute(select(func.count()).select_from(table)
                                    .where(table.c.batch_id == batch_id)).scalar_one()
                       for table in (delivery_claims, order_resends))

    def in_batch(self, batch: Batch, versions: Iterable[OrderVersion]) -> set[OrderVersion]:
        """Those of ``versions`` that go out in ``batch`` (:meth:`batch_claims`, asked about a
        few versions at a time instead of holding a big batch's whole set)."""
        with self.engine.connect() as conn:
            return set().union(*(_held(conn, batch, chunk) for chunk in chunks(versions)))

    def run_counts(
        self, store_id: str, run_id: str, versions: Iterable[OrderVersion],
    ) -> tuple[int, int, int]:
        """Of ``versions`` (distinct), ``(delivered, resent, total)``: how many the run's batches
        claimed or the run sent again on purpose in files that reached the server, how many of
        those were deliberate repeats, and how many there are; asked a chunk at a time."""
        c, b, r = delivery_claims.c, delivery_batches.c, order_resends.c
        delivered = resent = total = 0
        with self.engine.connect() as conn:
            for chunk in chunks(versions):
                ids = {oid for oid, _ver in chunk}
                owners = dict(((o, v), run) for o, v, run in conn.execute(
                    select(c.order_id, c.order_version, b.run_id)
                    .join(delivery_batches, b.batch_id == c.batch_id)
                    .where(c.store_id == store_id, c.order_id.in_(ids))).tuples())
                repeats = set(conn.execute(select(r.order_id, r.order_version).where(
                    r.store_id == store_id, r.run_id == run_id, r.resent_at.is_not(None),
                    r.order_id.in_(ids))).tuples())
                total += len(chunk)
                resent += sum(1 for v in chunk if v in repeats)
                delivered += sum(1 for v in chunk if owners.get(v) == run_id or v in repeats)
        return delivered, resent, total

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
    def claim(
        self, store_id: str, run_id: str, window_label: str, source_path: str,
        versions: Iterable[tuple[str, str, str | None]], *, resend: bool = False,
    ) -> Batch:
        """Create a batch and claim each ``(order_id, order_version, base_version)`` of
        ``versions`` for it, a chunk at a time (an iterator of a million versions is never held).

        A version claimed by another batch (an overlapping run) is not claimed again — unless
        ``resend``: then it joins this batch as a deliberate repeat (``order_resends``).
        ``base_version``: the version's status-free digest (see ``model.status_free_version``)."""
        batch = Batch(str(uuid.uuid4()), store_id, run_id, window_label, source_path, None, None, None)
        with self.engine.begin() as conn:
            conn.execute(
                insert(delivery_batches).values(
                    batch_id=batch.batch_id, store_id=store_id, run_id=run_id,
                    window_label=window_label, source_path=source_path, created_at=now(),
                )
            )
        claim = dialect_insert(self.engine, delivery_claims).on_conflict_do_nothing(
            index_elements=["store_id", "order_id", "order_version"])
        repeat = dialect_insert(self.engine, order_resends).on_conflict_do_nothing(
            index_elements=["batch_id", "order_id", "order_version"])
        for chunk in chunks(versions, ROWS_PER_TRANSACTION):
            with self.engine.begin() as conn:
                conn.execute(claim, [{"store_id": store_id, "order_id": oid, "order_version": ver,
                                      "batch_id": batch.batch_id, "base_version": base}
                                     for oid, ver, base in chunk])
                if not resend:
                    continue
                listed = list(dict.fromkeys((oid, ver) for oid, ver, _base in chunk))
                held = set().union(*(_held(conn, batch, part) for part in chunks(listed)))
                repeats = [{"store_id": store_id, "order_id": oid, "order_version": ver,
                            "batch_id": batch.batch_id, "run_id": run_id}
                           for oid, ver in listed if (oid, ver) not in held]
                if repeats:  # claimed by another batch: sent again on purpose, once per version
                    conn.execute(repeat, repeats)
        return batch

    def open_batch(
        self, store_id: str, run_id: str, window_label: str, source_path: str,
        versions: Iterable[OrderVersion], bases: Mapping[OrderVersion, str] | None = None,
        *, resend: bool = False,
    ) -> tuple[Batch, set[OrderVersion]]:
        """:meth:`claim` for a few versions given as pairs (``bases``: their status-free
        digests); returns the batch and the versions it holds (:meth:`batch_claims`)."""
        base_of = (bases or {}).get
        batch = self.claim(store_id, run_id, window_label, source_path,
                           ((oid, ver, base_of((oid, ver))) for oid, ver in versions), resend=resend)
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


def _held(conn: Connection, batch: Batch, versions: Sequence[OrderVersion]) -> set[OrderVersion]:
    """Those of ``versions`` (at most ``CHUNK``) that ``batch`` claimed or sends again. Claims
    are found by (store, order id), their unique key: by ``batch_id`` the database would walk
    the whole batch for every chunk asked."""
    c, r = delivery_claims.c, order_resends.c
    wanted, ids = set(versions), {oid for oid, _ver in versions}
    claimed = conn.execute(select(c.order_id, c.order_version, c.batch_id).where(
        c.store_id == batch.store_id, c.order_id.in_(ids))).tuples()
    found = {(o, v) for o, v, b in claimed if b == batch.batch_id and (o, v) in wanted}
    resent = conn.execute(select(r.order_id, r.order_version).where(
        r.batch_id == batch.batch_id, r.order_id.in_(ids))).tuples()
    return found | {v for v in resent if v in wanted}
