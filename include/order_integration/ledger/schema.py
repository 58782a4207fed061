"""The ledger's schema: every table, its version, and the explicit migration step.

Contract tables (operators query them): ``order_deliveries``, ``order_quarantine``,
``status_events``, ``stock_levels``; ``webhook_inbox`` (real-time mode, see
:mod:`order_integration.ledger.webhook_inbox`), ``poll_cursors`` (its polling fallback, see
:mod:`order_integration.ledger.poll_cursors`). Internal ones: ``delivery_batches``,
``delivery_claims`` and ``order_resends`` (see :mod:`order_integration.ledger.deliveries`),
``ledger_schema``.

The schema is created and migrated by an explicit step, :func:`migrate` (``python -m
order_integration ledger migrate``), never by the tasks: workers need no DDL rights. Its
version is kept in ``ledger_schema``; a ledger behind :data:`SCHEMA_VERSION` is refused with
the command to run (:func:`check_schema`). Only the default SQLite file (no ``order_ledger``
connection: a laptop, the demo) is migrated on first use, see
:func:`order_integration.ledger.engine_from_airflow`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError

from order_integration.exceptions import LedgerSchemaError
from order_integration.ledger.db import dialect_insert, now, where

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
    # Version 5: the open entries only (partial), for the health view and the release check; a year
    # of released entries stays out of it.
    Index("ix_order_quarantine_open", "store_id", "quarantined_at",
          sqlite_where=text("released_at IS NULL"), postgresql_where=text("released_at IS NULL")),
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
    Index("ix_status_events_applied", "store_id", "applied_at"),  # version 5: a store's recent lines
)
stock_levels = Table(
    "stock_levels", metadata,
    Column("store_id", String(32), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Column("source_file", String(255), nullable=False),
    # Version 2: a level is per (store, sku, location). ``location`` is the storefront's location
    # key (Shopify: a location id), '' — never NULL, so the unique key holds on every database —
    # for a platform with one level per SKU (WooCommerce). Version 1 had one level per SKU and
    # kept the file's location name in ``location``; ``migrate`` moves it to ``file_location``.
    Column("location", String(255), nullable=False, server_default=""),
    Column("file_location", String(64), nullable=True),  # the stock file's ``location`` as sent
    UniqueConstraint("store_id", "sku", "location", name="uq_stock_levels"),
    Index("ix_stock_levels_applied", "store_id", "applied_at"),  # version 5: a store's recent levels
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
    # Version 6: a store's files by upload time, for the health view's deliveries by path (the span's
    # batches, then their claims by ``batch_id``); also the load's pending batches (``uploaded_at IS NULL``).
    Index("ix_delivery_batches_uploaded", "store_id", "uploaded_at"),
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
# Version 3: the storefronts' webhook deliveries (real-time mode), one row per distinct delivery,
# written by the receiver on the api-server before it answers 2xx. A duplicate is the same delivery
# id *and* the same body (WooCommerce's delivery id repeats within a second: DESIGN.md, Webhooks);
# ``delivery_id`` is '' — never NULL, so the unique key holds on every database — when the
# platform sent none. ``done_at``/``done_by_run``: the export run that delivered the order.
webhook_inbox = Table(
    "webhook_inbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("store_id", String(32), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("topic", String(64), nullable=False),
    Column("delivery_id", String(128), nullable=False),
    Column("body_digest", String(64), nullable=False),  # sha256 of the raw body, hex
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True), nullable=True),
    Column("done_by_run", String(250), nullable=True),
    UniqueConstraint("store_id", "delivery_id", "body_digest", name="uq_webhook_inbox"),
    # waiting(): the store's rows not done yet; mark_done(): the store's rows of some orders
    Index("ix_webhook_inbox_waiting", "store_id", "done_at", "received_at"),
    Index("ix_webhook_inbox_order", "store_id", "order_id"),
)
# Version 4: how far the polling fallback (real-time mode, ``realtime_source: polling``) has read
# the storefront: every order modified before ``scanned_to`` (the end of the last complete scan, by
# the triggerer's clock; the next scan re-reads an overlap before it) is in ``webhook_inbox``. One row
# per store, in the ledger: a restarted triggerer resumes where the last complete scan ended.
poll_cursors = Table(
    "poll_cursors", metadata,
    Column("store_id", String(32), primary_key=True),
    Column("scanned_to", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# One row per schema version this ledger was migrated to (``migrate``); the highest is its version.
ledger_schema = Table(
    "ledger_schema", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("migrated_at", DateTime(timezone=True), nullable=False),
)

#: The schema version this release reads and writes. History (docs/ledger.md, "Schema versions"):
#: 0 — a ledger made before versioning: the tables and columns of whichever release created it;
#: 1 — every table and column, ``stock_levels`` one row per (store, sku). ``migrate`` reaches it
#:     from 0 or from nothing by creating the missing tables and adding the missing nullable columns;
#: 2 — ``stock_levels`` one row per (store, sku, location) (``location`` '' for a platform with one
#:     level per SKU; the file's location name moves to ``file_location``): :func:`_stock_levels_v2`;
#: 3 — ``webhook_inbox`` (real-time mode): a new table, created by ``migrate``'s missing-table step;
#: 4 — ``poll_cursors`` (real-time mode's polling fallback): a new table, created the same way.
#: 5 — indexes for the integration-health view (``health.py``): the open quarantine (partial, on
#:     ``released_at IS NULL``), ``status_events`` and ``stock_levels`` by (store, applied_at); created by
#:     ``migrate``'s missing-index step (:func:`_create_missing_indexes`). No table or column changed.
#: 6 — ``delivery_batches`` by (store, uploaded_at), for the health view's deliveries by path (which
#:     run, hence which path, delivered each order); created by the same missing-index step.
#: A later version adds its step to ``migrate``, keyed by this number.
SCHEMA_VERSION = 6
MIGRATE_COMMAND = "python -m order_integration ledger migrate"


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
    it is behind this release. A newer version is accepted (docs/ledger.md, "Schema versions",
    says which older releases still work on it: version 2 is not for version-1 stock syncs)."""
    version = schema_version(engine)
    if version is None or version < SCHEMA_VERSION:
        state = "has no schema" if version is None else f"is at version {version}, needs {SCHEMA_VERSION}"
        raise LedgerSchemaError(f"the ledger at {where(engine)} {state}: run `{MIGRATE_COMMAND}`")
    return version


@dataclass(frozen=True, slots=True)
class Migration:
    """What :func:`migrate` did: versions before (None: no schema) and after, and the changes."""

    before: int | None
    after: int
    created_tables: tuple[str, ...] = ()
    added_columns: tuple[str, ...] = ()  # "table.column"
    rebuilt: tuple[str, ...] = ()  # tables that changed shape, e.g. "stock_levels keyed by …"
    created_indexes: tuple[str, ...] = ()

    def describe(self, where: str) -> str:
        if self.before == self.after:
            return f"ledger at {where}: schema version {self.after}, nothing to do"
        start = "no schema" if self.before is None else f"version {self.before}"
        changes = [f"created {', '.join(self.created_tables)}"] if self.created_tables else []
        changes += [f"added {', '.join(self.added_columns)}"] if self.added_columns else []
        changes += list(self.rebuilt)
        changes += [f"created indexes {', '.join(self.created_indexes)}"] if self.created_indexes else []
        return (f"ledger at {where}: migrated from {start} to version {self.after}"
                + (f" ({'; '.join(changes)})" if changes else ""))


def migrate(engine: Engine, attempts: int = 5) -> Migration:
    """Bring the ledger's schema to :data:`SCHEMA_VERSION`: create missing tables, key
    ``stock_levels`` by location (version 2, :func:`_stock_levels_v2`), add missing nullable
    columns, record the version in ``ledger_schema``. Idempotent; nothing to do (one catalog
    query) when the ledger is current.

    Safe to run several times at once (the compose init next to a laptop's run, the first
    tasks of a backfill on the default SQLite file): creating checks, then creates, so another
    process can create a table or column in between ("already exists"; on PostgreSQL a duplicate
    ``pg_type`` row). Then the check runs again and finds it."""
    unread = -1
    before: int | None = unread
    created: list[str] = []
    added: list[str] = []
    rebuilt: list[str] = []
    indexes: list[str] = []
    for attempt in range(1, attempts + 1):
        try:  # every step may meet another process's DDL, the first read too (SQLite: 'database is locked')
            if before == unread:
                before = schema_version(engine)
            if before is not None and before >= SCHEMA_VERSION:
                return Migration(before, before)
            created += _create_missing_tables(engine)
            rebuilt += _stock_levels_v2(engine)
            added += _add_missing_columns(engine)
            indexes += _create_missing_indexes(engine)
            with engine.begin() as conn:
                conn.execute(dialect_insert(conn, ledger_schema).on_conflict_do_nothing(),
                             {"version": SCHEMA_VERSION, "migrated_at": now()})
            break
        except DBAPIError as exc:
            if attempt == attempts:
                raise
            log.info("ledger: schema changed concurrently by another process (%s); checking again",
                     str(exc.orig).splitlines()[0] if exc.orig else exc)
            time.sleep(0.05 * attempt)
    migration = Migration(before, SCHEMA_VERSION, tuple(created), tuple(added), tuple(rebuilt),
                          tuple(indexes))
    log.info("%s", migration.describe(where(engine)))
    return migration


def _create_missing_tables(engine: Engine) -> list[str]:
    from sqlalchemy import inspect

    have = set(inspect(engine).get_table_names())
    missing = [t.name for t in metadata.sorted_tables if t.name not in have]
    if missing:
        metadata.create_all(engine)
    return missing


_STOCK_V2 = "stock_levels keyed by (store_id, sku, location)"


def _stock_levels_v2(engine: Engine) -> list[str]:
    """Version 1 → 2: ``stock_levels`` becomes one row per (store, sku, location). Every version-1
    row is a one-level-per-SKU level (WooCommerce, the only platform then): its key location is
    ``''`` and the file's location name it kept in ``location`` moves to ``file_location``
    (NULL stays NULL). A table that has ``file_location`` already is version 2: nothing to do.

    One transaction, which takes the table's write lock first and only then checks, so
    concurrent migrations do it once: on PostgreSQL the columns and the unique constraint are
    altered in place; SQLite cannot alter a constraint, so the table is rebuilt (renamed, made
    anew, rows copied, the old one dropped) — a crash leaves the version-1 table untouched."""
    from sqlalchemy import inspect

    if stock_levels.name not in inspect(engine).get_table_names():
        return []
    if engine.dialect.name == "sqlite":
        return _stock_levels_v2_sqlite(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("LOCK TABLE stock_levels IN ACCESS EXCLUSIVE MODE")
        insp = inspect(conn)
        have = {c["name"] for c in insp.get_columns(stock_levels.name)}
        if "file_location" in have:
            return []
        if "location" in have:
            conn.exec_driver_sql("ALTER TABLE stock_levels RENAME COLUMN location TO file_location")
        else:
            conn.exec_driver_sql("ALTER TABLE stock_levels ADD COLUMN file_location VARCHAR(64)")
        conn.exec_driver_sql("ALTER TABLE stock_levels ADD COLUMN location VARCHAR(255) NOT NULL DEFAULT ''")
        for unique in insp.get_unique_constraints(stock_levels.name):
            conn.exec_driver_sql(f'ALTER TABLE stock_levels DROP CONSTRAINT "{unique["name"]}"')
        conn.exec_driver_sql("ALTER TABLE stock_levels ADD CONSTRAINT uq_stock_levels "
                             "UNIQUE (store_id, sku, location)")
    return [_STOCK_V2]


def _stock_levels_v2_sqlite(engine: Engine) -> list[str]:
    from sqlalchemy.schema import CreateTable

    raw = engine.raw_connection()
    try:
        db = raw.driver_connection
        db.isolation_level = None  # we say BEGIN and COMMIT: the DDL is in the transaction too
        cur = db.cursor()
        cur.execute("BEGIN IMMEDIATE")  # the write lock first: a concurrent migration waits here
        try:
            have = [row[1] for row in cur.execute("PRAGMA table_info(stock_levels)")]
            if "file_location" in have:
                cur.execute("ROLLBACK")
                return []
            old_location = "location" if "location" in have else "NULL"
            cur.execute("ALTER TABLE stock_levels RENAME TO stock_levels_v1")
            cur.execute(str(CreateTable(stock_levels).compile(dialect=engine.dialect)))
            cur.execute("INSERT INTO stock_levels (store_id, sku, quantity, as_of, applied_at, source_file, "
                        "location, file_location) SELECT store_id, sku, quantity, as_of, applied_at, "
                        f"source_file, '', {old_location} FROM stock_levels_v1")
            cur.execute("DROP TABLE stock_levels_v1")
            cur.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                cur.execute("ROLLBACK")
            raise
    finally:
        raw.close()
    return [_STOCK_V2]


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
                    raise LedgerSchemaError(f"the ledger at {where(engine)}: table {table.name} lacks the "
                                            f"required column {column.name}; it was not made by this package")
                ddl = column.type.compile(dialect=engine.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {ddl}')
                added.append(f"{table.name}.{column.name}")
    return added


def _create_missing_indexes(engine: Engine) -> list[str]:
    """Create the indexes this release defines on tables an older one created (version 5: the
    health view's; also an index of a column added by :func:`_add_missing_columns`). A table made by
    ``create_all`` has them already. On PostgreSQL ``CREATE INDEX`` blocks the table's writers while it
    builds (seconds for a year of rows); run the migration between runs, as every version's."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    created: list[str] = []
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            have = {i["name"] for i in inspector.get_indexes(table.name)}
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                if index.name not in have:
                    index.create(conn)
                    created.append(str(index.name))
    return created
