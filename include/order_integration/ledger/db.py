"""The ledger's database: its engine and the SQL every table family shares.

Writers never read a row to decide whether to write it: the database decides, with an
``INSERT … ON CONFLICT`` (SQLite >= 3.24, PostgreSQL), so concurrent runs cannot interleave
between a read and a write. :func:`dialect_insert` gives that statement for the ledger's
database; :func:`chunks` keeps ``IN (...)`` lists under every database's parameter limit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pendulum
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.pool import NullPool

from order_integration.exceptions import ConfigError

LEDGER_CONN_ID = "order_ledger"

OrderVersion = tuple[str, str]  # (order_id, order_version)
CHUNK = 500  # keeps IN (...) lists under every database's parameter limit
#: Rows written in one transaction by the bulk writes of a big batch: few connections and
#: commits (each costs ~2 ms on SQLite), short enough not to hold the write lock for long.
ROWS_PER_TRANSACTION = 5_000


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


def where(engine: Engine) -> str:
    """The engine's URL without its password, for messages."""
    return engine.url.render_as_string(hide_password=True)


def now() -> pendulum.DateTime:
    return pendulum.now("UTC")


def utc(value: datetime) -> datetime:
    """An aware UTC time; a naive one is UTC (SQLite returns stored UTC times without zone).

    Plain ``datetime`` (compares with pendulum's): stock levels come by the ten thousand."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def chunks(items: Iterable[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last one shorter), consumed a list at a time: a
    generator of a million rows is never held whole."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, max(size, 1))):
        yield chunk


def dialect_insert(bind: Engine | Connection, table: Table) -> Any:
    """``insert(table)`` of the ledger's database, which has ``on_conflict_do_update`` /
    ``on_conflict_do_nothing`` (SQLite >= 3.24 and PostgreSQL spell it alike)."""
    name = bind.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as insert_of_dialect
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as insert_of_dialect
    else:
        raise ConfigError(f"the ledger ({LEDGER_CONN_ID!r} connection) needs SQLite or PostgreSQL, "
                          f"not {name}")
    return insert_of_dialect(table)


def insert_ignore_stmt(bind: Engine | Connection, table: Table) -> Any:
    """``INSERT … ON CONFLICT (store_id, order_id, order_version) DO NOTHING RETURNING order_id``."""
    c = table.c
    return (dialect_insert(bind, table)
            .on_conflict_do_nothing(index_elements=[c.store_id, c.order_id, c.order_version])
            .returning(c.order_id))


def insert_ignore(engine: Engine, table: Table, rows: Iterable[dict[str, Any]]) -> int:
    """Insert rows, skipping those that hit the (store_id, order_id, order_version) key;
    returns how many were new. One ``INSERT … ON CONFLICT DO NOTHING`` per chunk; ``rows`` is
    consumed a chunk at a time (a generator keeps a million-order window's rows out of memory)."""
    inserted = 0
    for chunk in chunks(rows):
        with engine.begin() as conn:
            inserted += len(conn.execute(insert_ignore_stmt(conn, table), chunk).all())
    return inserted
