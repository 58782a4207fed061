"""The delivery / quarantine / status-event ledger (SQLAlchemy Core).

Contract tables (operators query them): ``order_deliveries``, ``order_quarantine``,
``status_events``, ``stock_levels``. Two internal tables make a delivery crash-safe:

* ``delivery_batches`` — one row per orders file a load task prepares: where its orders
  come from (``source_path``), the rendered file in staging, and ``uploaded_at`` once the
  file is on the SFTP server;
* ``delivery_claims`` — ``(store_id, order_id, order_version)`` unique, pointing at a batch.

A load claims versions first (the unique key decides races between overlapping runs),
renders and uploads the claimed versions, then marks the batch uploaded and writes
``order_deliveries`` in one transaction. A batch left pending by a crash is finished by
the next load of the store (same content, same file name), so nothing is lost or doubled.

Writers never read a row to decide whether to write it: the database decides, with an
``INSERT … ON CONFLICT`` (SQLite >= 3.24, PostgreSQL), so concurrent runs cannot interleave
between a read and a write.

The schema is created and migrated by an explicit step, :func:`migrate` (``python -m
order_integration ledger migrate``), never by the tasks: workers need no DDL rights. Its
version is kept in ``ledger_schema``; a ledger behind :data:`SCHEMA_VERSION` is refused with
the command to run. Only the default SQLite file (no ``order_ledger`` connection: a laptop,
the demo) is migrated on first use, see :func:`engine_from_airflow`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pendulum
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from order_integration.exceptions import ConfigError, LedgerSchemaError
from order_integration.failpoints import failpoint

LEDGER_CONN_ID = "order_ledger"
log = logging.getLogger(__name__)
metadata = MetaData()

order_deliveries = Table(
    "order_deliveries", metadata,
    Column("store_id", String(32), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("order_version", String(32), nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("store_id", "order_id", "order_version", name="uq_order_deliveries"),
)
order_quarantine = Table(
    "order_quarantine", metadata,
    Column("store_id", String(32), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("order_version", String(32), nullable=False),
    Column("reasons", Text, nullable=False),  # JSON list of {"rule", "detail"}
    Column("quarantined_at", DateTime(timezone=True), nullable=False),
    Column("released_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("store_id", "order_id", "order_version", name="uq_order_quarantine"),
)
status_events = Table(
    "status_events", metadata,
    Column("store_id", String(32), nullable=False),
    Column("source_file", String(255), nullable=False),
    Column("line_number", Integer, nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("event", String(32), nullable=False),
    Column("outcome", Text, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    # Added by the status sync (nullable, so older rows and other writers stay valid):
    Column("event_key", String(64), nullable=True, index=True),  # digest of the event's content
    Column("sku", String(128), nullable=True),  # partial shipments only
    Column("quantity", Integer, nullable=True),  # units of ``sku`` shipped by this event
    Column("new_status", String(32), nullable=True),  # the storefront status this event wrote
    Column("note", Text, nullable=True),  # the note text the event put on the order
    Column("occurred_at", DateTime(timezone=True), nullable=True),  # when the backend says it happened
    Column("tracking_number", String(128), nullable=True),
)
stock_levels = Table(
    "stock_levels", metadata,
    Column("store_id", String(32), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Column("source_file", String(255), nullable=False),
    # Added by the inventory sync (nullable, so older rows stay valid): where the backend
    # counted the level (informational: WooCommerce keeps one level per SKU).
    Column("location", String(64), nullable=True),
    UniqueConstraint("store_id", "sku", name="uq_stock_levels"),
)
delivery_batches = Table(
    "delivery_batches", metadata,
    Column("batch_id", String(36), primary_key=True),
    Column("store_id", String(32), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("window_label", String(40), nullable=False),  # the run's window, as file names carry it
    Column("source_path", Text, nullable=False),
    Column("staged_path", Text, nullable=True),
    Column("file_name", String(255), nullable=True),
    Column("orders", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("uploaded_at", DateTime(timezone=True), nullable=True),
)
delivery_claims = Table(
    "delivery_claims", metadata,
    Column("store_id", String(32), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("order_version", String(32), nullable=False),
    Column("batch_id", String(36), nullable=False, index=True),
    # digest of the version without its status: recognises the echo of a status we wrote back
    Column("base_version", String(32), nullable=True),
    UniqueConstraint("store_id", "order_id", "order_version", name="uq_delivery_claims"),
)
# Versions an operator sent again on purpose (on-demand ``resend``): ``order_deliveries``
# keeps the first delivery, this table every deliberate repeat. ``resent_at`` and
# ``file_name`` are set when the batch's file is on the server.
order_resends = Table(
    "order_resends", metadata,
    Column("store_id", String(32), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("order_version", String(32), nullable=False),
    Column("batch_id", String(36), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("file_name", String(255), nullable=True),
    Column("resent_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("batch_id", "order_id", "order_version", name="uq_order_resends"),
)

# One row per schema version this ledger was migrated to (``migrate``); the highest is its version.
ledger_schema = Table(
    "ledger_schema", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("migrated_at", DateTime(timezone=True), nullable=False),
)

#: The schema version this release reads and writes. History (docs/ledger.md, "Schema versions"):
#: 0 — a ledger made before versioning: the tables and columns of whichever release created it;
#: 1 — every table and column above. ``migrate`` reaches 1 from 0 or from nothing by creating the
#:     missing tables and adding the missing nullable columns — the only changes releases made.
#: A later version that needs more than that adds its step to ``migrate``, keyed by this number.
SCHEMA_VERSION = 1
MIGRATE_COMMAND = "python -m order_integration ledger migrate"

OrderVersion = tuple[str, str]  # (order_id, order_version)
_CHUNK = 500  # keeps IN (...) lists under every database's parameter limit


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


def _now() -> pendulum.DateTime:
    return pendulum.now("UTC")


def _utc(value: datetime) -> datetime:
    """An aware UTC time; a naive one is UTC (SQLite returns stored UTC times without zone).

    Plain ``datetime`` (compares with pendulum's): stock levels come by the ten thousand."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
        return cls(int(row["quantity"]), _utc(row["as_of"]), _utc(row["applied_at"]), row["source_file"],
                   row.get("location"))


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def sqlite_engine(path: str | Path) -> Engine:
    """A SQLite engine in WAL mode with a busy timeout, safe for several task processes.

    No connection pool: a connection is closed as soon as its transaction ends. An idle pooled
    connection outlives its use in long-lived processes (a test runner, a REPL), and SQLite's
    POSIX locks are per process: any other ``open()``/``close()`` of the file in that process
    (a backup, a byte-for-byte scan) silently drops them, and the stale connection can then
    checkpoint the WAL under another process's feet ("database disk image is malformed")."""
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 60}, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


def _default_sqlite_path() -> Path:
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    return home / "order_ledger.db"


def engine_from_airflow(*, migrate_default: bool = True) -> Engine:
    """The ``order_ledger`` connection's engine, else SQLite at ``$AIRFLOW_HOME/order_ledger.db``.

    That default file is migrated here (``migrate_default``): it is the newcomer's ledger (a
    laptop, ``make demo``), and a file has no DDL rights to withhold. A configured connection
    never is: ``ledger migrate`` runs once per release, and the workers need no DDL rights."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(LEDGER_CONN_ID)
    except AirflowNotFoundException:
        path = _default_sqlite_path()
        log.info("no %r connection: ledger is SQLite at %s", LEDGER_CONN_ID, path)
        engine = sqlite_engine(path)
        if migrate_default:
            migrate(engine)
        return engine
    return conn.get_hook().get_sqlalchemy_engine()


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _dialect_insert(bind: Engine | Connection, table: Table) -> Any:
    """``insert(table)`` of the ledger's database, which has ``on_conflict_do_update`` /
    ``on_conflict_do_nothing`` (SQLite >= 3.24 and PostgreSQL spell it alike)."""
    name = bind.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        raise ConfigError(f"the ledger ({LEDGER_CONN_ID!r} connection) needs SQLite or PostgreSQL, "
                          f"not {name}")
    return dialect_insert(table)


def schema_version(engine: Engine) -> int | None:
    """The ledger's schema version: None when it has no ledger table at all, 0 when its tables
    predate versioning (no ``ledger_schema``), else the highest version it was migrated to."""
    from sqlalchemy import inspect

    tables = set(inspect(engine).get_table_names())
    if ledger_schema.name in tables:
        with engine.connect() as conn:
            version = conn.execute(select(func.max(ledger_schema.c.version))).scalar()
        if version is not None:
            return int(version)
    return 0 if tables & set(metadata.tables) else None


def check_schema(engine: Engine) -> int:
    """The ledger's schema version, or :class:`LedgerSchemaError` naming the command to run when
    it is behind this release. A newer version is fine: releases only add tables and nullable
    columns, which an older release's writes leave empty."""
    version = schema_version(engine)
    if version is None or version < SCHEMA_VERSION:
        state = "has no schema" if version is None else f"is at version {version}, needs {SCHEMA_VERSION}"
        raise LedgerSchemaError(f"the ledger at {_where(engine)} {state}: run `{MIGRATE_COMMAND}`")
    return version


@dataclass(frozen=True, slots=True)
class Migration:
    """What :func:`migrate` did: versions before (None: no schema) and after, and the changes."""

    before: int | None
    after: int
    created_tables: tuple[str, ...] = ()
    added_columns: tuple[str, ...] = ()  # "table.column"

    def describe(self, where: str) -> str:
        if self.before == self.after:
            return f"ledger at {where}: schema version {self.after}, nothing to do"
        start = "no schema" if self.before is None else f"version {self.before}"
        changes = [f"created {', '.join(self.created_tables)}"] if self.created_tables else []
        changes += [f"added {', '.join(self.added_columns)}"] if self.added_columns else []
        return (f"ledger at {where}: migrated from {start} to version {self.after}"
                + (f" ({'; '.join(changes)})" if changes else ""))


def migrate(engine: Engine, attempts: int = 5) -> Migration:
    """Bring the ledger's schema to :data:`SCHEMA_VERSION`: create missing tables, add missing
    nullable columns, record the version in ``ledger_schema``. Idempotent; nothing to do (one
    catalog query) when the ledger is current.

    Safe to run several times at once (the compose init next to a laptop's run, the first
    tasks of a backfill on the default SQLite file): creating checks, then creates, so another
    process can create a table or column in between ("already exists"; on PostgreSQL a duplicate
    ``pg_type`` row). Then the check runs again and finds it."""
    unread = -1
    before: int | None = unread
    created: list[str] = []
    added: list[str] = []
    for attempt in range(1, attempts + 1):
        try:  # every step may meet another process's DDL, the first read too (SQLite: 'database is locked')
            if before == unread:
                before = schema_version(engine)
            if before is not None and before >= SCHEMA_VERSION:
                return Migration(before, before)
            created += _create_missing_tables(engine)
            added += _add_missing_columns(engine)
            with engine.begin() as conn:
                conn.execute(_dialect_insert(conn, ledger_schema).on_conflict_do_nothing(),
                             {"version": SCHEMA_VERSION, "migrated_at": _now()})
            break
        except DBAPIError as exc:
            if attempt == attempts:
                raise
            log.info("ledger: schema changed concurrently by another process (%s); checking again",
                     str(exc.orig).splitlines()[0] if exc.orig else exc)
            time.sleep(0.05 * attempt)
    migration = Migration(before, SCHEMA_VERSION, tuple(created), tuple(added))
    log.info("%s", migration.describe(_where(engine)))
    return migration


def _create_missing_tables(engine: Engine) -> list[str]:
    from sqlalchemy import inspect

    have = set(inspect(engine).get_table_names())
    missing = [t.name for t in metadata.sorted_tables if t.name not in have]
    if missing:
        metadata.create_all(engine)
    return missing


def _add_missing_columns(engine: Engine) -> list[str]:
    """Add the nullable columns this release defines to tables an older one created (version 0
    to 1: ``status_events.event_key`` … ``tracking_number``, ``stock_levels.location``,
    ``delivery_claims.base_version``). Columns are only ever added, never changed; a missing
    required column means the table is not one this package made."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    added: list[str] = []
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                if not column.nullable:
                    raise LedgerSchemaError(f"the ledger at {_where(engine)}: table {table.name} lacks the "
                                            f"required column {column.name}; it was not made by this package")
                ddl = column.type.compile(dialect=engine.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {ddl}')
                added.append(f"{table.name}.{column.name}")
    return added


class Ledger:
    """Reads and writes the ledger tables; every write is one short transaction.

    It never creates or alters a table: it checks the schema version and refuses a ledger that
    is behind (:class:`LedgerSchemaError`). ``create=True`` runs :func:`migrate` first — for
    tests and tools that own a throw-away ledger, not for workers."""

    def __init__(self, engine: Engine, *, create: bool = False) -> None:
        self.engine = engine
        if create:
            migrate(engine)
        else:
            check_schema(engine)

    # -- reads ---------------------------------------------------------------------------
    def claimed_versions(self, store_id: str, order_ids: Iterable[str]) -> dict[str, set[str]]:
        """order_id -> versions claimed (delivered or being delivered) for those orders."""
        ids = sorted(set(order_ids))
        found: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(ids):
                rows = conn.execute(
                    select(delivery_claims.c.order_id, delivery_claims.c.order_version).where(
                        delivery_claims.c.store_id == store_id, delivery_claims.c.order_id.in_(chunk)
                    )
                )
                for order_id, version in rows:
                    found.setdefault(order_id, set()).add(version)
        return found

    def quarantined_versions(self, store_id: str, order_ids: Iterable[str]) -> set[OrderVersion]:
        """Versions of those orders in quarantine and not released."""
        ids = sorted(set(order_ids))
        found: set[OrderVersion] = set()
        q = order_quarantine.c
        with self.engine.connect() as conn:
            for chunk in _chunks(ids):
                rows = conn.execute(
                    select(q.order_id, q.order_version).where(
                        q.store_id == store_id, q.order_id.in_(chunk), q.released_at.is_(None)
                    )
                )
                found.update((r[0], r[1]) for r in rows)
        return found

    def deliveries(self, store_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(order_deliveries).where(order_deliveries.c.store_id == store_id)
            ).mappings()
            return [dict(r) for r in rows]

    def quarantine(self, store_id: str, *, include_released: bool = False) -> list[dict[str, Any]]:
        q = order_quarantine.c
        cond = q.store_id == store_id
        if not include_released:
            cond = and_(cond, q.released_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(select(order_quarantine).where(cond).order_by(q.order_id)).mappings()
            return [{**r, "reasons": json.loads(r["reasons"])} for r in rows]

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
            for chunk in _chunks(sorted(set(order_ids))):
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
            for chunk in _chunks(sorted({oid for oid, _ in wanted})):
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
    def record_quarantine(
        self, store_id: str, entries: Iterable[tuple[str, str, list[dict[str, str]]]]
    ) -> int:
        """Quarantine (order_id, version, reasons); a version already there is left alone.

        Returns how many entries were new."""
        rows = [
            {"store_id": store_id, "order_id": oid, "order_version": ver,
             "reasons": json.dumps(reasons, ensure_ascii=False), "quarantined_at": _now()}
            for oid, ver, reasons in entries
        ]
        return self._insert_ignore(order_quarantine, rows)

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
                    window_label=window_label, source_path=source_path, created_at=_now(),
                )
            )
        rows = [
            {"store_id": store_id, "order_id": oid, "order_version": ver, "batch_id": batch.batch_id,
             "base_version": (bases or {}).get((oid, ver))}
            for oid, ver in versions
        ]
        self._insert_ignore(delivery_claims, rows)
        if resend:
            won = self.batch_claims(batch.batch_id)
            repeats = [
                {"store_id": store_id, "order_id": oid, "order_version": ver,
                 "batch_id": batch.batch_id, "run_id": run_id}
                for oid, ver in dict.fromkeys(versions) if (oid, ver) not in won
            ]
            with self.engine.begin() as conn:
                for chunk in _chunks(repeats):
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
        now = _now()
        c = delivery_claims.c
        with self.engine.begin() as conn:
            claims = conn.execute(
                select(c.store_id, c.order_id, c.order_version).where(c.batch_id == batch.batch_id)
            ).all()
            rows = [
                {"store_id": s, "order_id": o, "order_version": v,
                 "file_name": batch.file_name, "delivered_at": now}
                for s, o, v in claims
            ]
            if rows:  # a concurrent completion of the same batch may have recorded them: skip those
                conn.execute(self._insert_ignore_stmt(conn, order_deliveries), rows)
            failpoint("ledger.complete_batch.mid", store=batch.store_id)
            resent = conn.execute(
                update(order_resends)
                .where(order_resends.c.batch_id == batch.batch_id)
                .values(file_name=batch.file_name, resent_at=now)
            ).rowcount
            conn.execute(
                update(delivery_batches)
                .where(delivery_batches.c.batch_id == batch.batch_id)
                .values(uploaded_at=now)
            )
            order_ids = {o for _, o, _ in claims} | {
                o for (o,) in conn.execute(
                    select(order_resends.c.order_id).where(order_resends.c.batch_id == batch.batch_id))
            }
            self._release(conn, batch.store_id, order_ids, now)
        return len(claims) + resent

    @staticmethod
    def _release(conn: Any, store_id: str, order_ids: Iterable[str], now: pendulum.DateTime) -> int:
        """An order that reached the backend leaves quarantine: its open entries (any
        version, the fixed one superseding the bad ones) get ``released_at``."""
        q = order_quarantine.c
        released = 0
        for chunk in _chunks(sorted(order_ids)):
            released += conn.execute(
                update(order_quarantine)
                .where(q.store_id == store_id, q.order_id.in_(chunk), q.released_at.is_(None))
                .values(released_at=now)
            ).rowcount
        if released:
            log.info("ledger: %d quarantine entr%s of store %s released (delivered now)",
                     released, "y" if released == 1 else "ies", store_id)
        return released

    # -- status events (backend status files -> storefront) -------------------------------
    def applied_status_event_keys(self, store_id: str, event_keys: Iterable[str]) -> set[str]:
        """Those ``event_keys`` already applied (outcome ``applied``) to the store's orders."""
        keys = sorted(set(event_keys))
        e = status_events.c
        found: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(keys):
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
            for chunk in _chunks(ids):
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
            for chunk in _chunks(ids):
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

    def status_events_of(self, store_id: str, source_file: str | None = None) -> list[dict[str, Any]]:
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
            for chunk in _chunks(sorted(set(numbers))):
                rows = conn.execute(
                    select(e.tracking_number, e.order_id).where(
                        e.store_id == store_id, e.tracking_number.in_(chunk), e.outcome == "applied"
                    )
                )
                found.update((number, order_id) for number, order_id in rows)
        return found

    def record_status_events(
        self, store_id: str, source_file: str, rows: Sequence[dict[str, Any]]
    ) -> int:
        """Append one ``status_events`` row per entry, in one transaction.

        Each entry holds ``line_number``, ``order_id``, ``event``, ``outcome`` and optionally
        ``event_key``, ``sku``, ``quantity``, ``new_status``, ``note``, ``occurred_at``."""
        if not rows:
            return 0
        now = _now()
        optional = ("event_key", "sku", "quantity", "new_status", "note", "occurred_at", "tracking_number")
        values = [
            {"store_id": store_id, "source_file": source_file, "line_number": r["line_number"],
             "order_id": r["order_id"], "event": r["event"], "outcome": r["outcome"], "applied_at": now,
             **{k: r.get(k) for k in optional}}
            for r in rows
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(status_events), values)
        return len(values)

    # -- stock levels (backend stock files -> storefront) ----------------------------------
    def stock_levels_of(self, store_id: str, skus: Iterable[str]) -> dict[str, StockLevel]:
        """sku -> the last applied level, for those of ``skus`` that have one."""
        s = stock_levels.c
        found: dict[str, StockLevel] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(skus))):
                rows = conn.execute(select(stock_levels).where(s.store_id == store_id, s.sku.in_(chunk)))
                found.update((r["sku"], StockLevel.from_row(r)) for r in rows.mappings())
        return found

    def list_stock_levels(self, store_id: str) -> dict[str, StockLevel]:
        """sku -> the last applied level, for every SKU of the store."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(stock_levels).where(stock_levels.c.store_id == store_id))
            return {r["sku"]: StockLevel.from_row(r) for r in rows.mappings()}

    def record_stock_levels(
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
        now = _now()
        stmt = _dialect_insert(self.engine, stock_levels)
        stmt = stmt.on_conflict_do_update(
            index_elements=[s.store_id, s.sku],
            set_={k: stmt.excluded[k] for k in ("quantity", "as_of", "applied_at", "source_file",
                                                 "location")},
            where=stmt.excluded.as_of >= s.as_of,
        ).returning(s.sku)  # a row comes back only where a level was inserted or replaced
        written = 0
        # one row per SKU (the last wins): an upsert may not touch one row twice
        for chunk in _chunks(list({lv["sku"]: lv for lv in levels}.values())):
            rows = [{"store_id": store_id, "sku": lv["sku"], "quantity": lv["quantity"],
                     "as_of": _utc(lv["as_of"]), "applied_at": now, "source_file": source_file[:255],
                     "location": str(lv["location"])[:64] if lv.get("location") else None}
                    for lv in chunk]
            with self.engine.begin() as conn:
                written += len(conn.execute(stmt, rows).all())
        return written

    # -- helpers -------------------------------------------------------------------------
    def _insert_ignore(self, table: Table, rows: list[dict[str, Any]]) -> int:
        """Insert rows, skipping those that hit the (store_id, order_id, order_version) key;
        returns how many were new. One ``INSERT … ON CONFLICT DO NOTHING`` per chunk."""
        inserted = 0
        for chunk in _chunks(rows):
            with self.engine.begin() as conn:
                inserted += len(conn.execute(self._insert_ignore_stmt(conn, table), list(chunk)).all())
        return inserted

    @staticmethod
    def _insert_ignore_stmt(bind: Engine | Connection, table: Table) -> Any:
        c = table.c
        return (_dialect_insert(bind, table)
                .on_conflict_do_nothing(index_elements=[c.store_id, c.order_id, c.order_version])
                .returning(c.order_id))
