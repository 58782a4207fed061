"""The ledger (SQLAlchemy Core): one engine, one schema, one store per table family.

* :mod:`~order_integration.ledger.db` — the engine (:func:`sqlite_engine`) and the SQL every
  store shares (the dialect's ``INSERT … ON CONFLICT``, chunked ``IN`` lists, UTC times);
* :mod:`~order_integration.ledger.schema` — every table, :data:`SCHEMA_VERSION`, :func:`migrate`
  and :func:`check_schema`;
* the stores, each the only code that reads or writes its tables:
  :class:`Deliveries` (claims, delivery batches, deliveries and resends: the export's
  crash-safe load), :class:`Quarantine`, :class:`StatusEvents`, :class:`StockLevels`,
  :class:`WebhookInbox` (the storefronts' webhook deliveries, real-time mode), :class:`PollCursors`
  (how far real-time mode's polling fallback has read each storefront).

:class:`Ledger` checks the schema once and holds the stores over one engine; a caller
uses the store it needs (``ledger.deliveries.claim(…)``), and a function that needs one
store takes only that store. Operators, see docs/ledger.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import Engine

from order_integration.ledger.db import LEDGER_CONN_ID, OrderVersion, sqlite_engine
from order_integration.ledger.deliveries import Batch, Deliveries
from order_integration.ledger.poll_cursors import PollCursors
from order_integration.ledger.quarantine import Quarantine
from order_integration.ledger.schema import (
    MIGRATE_COMMAND,
    SCHEMA_VERSION,
    Migration,
    check_schema,
    migrate,
    schema_version,
)
from order_integration.ledger.status_events import StatusEvents
from order_integration.ledger.stock_levels import StockLevel, StockLevels
from order_integration.ledger.webhook_inbox import InboxDelivery, WebhookInbox

__all__ = [
    "LEDGER_CONN_ID", "MIGRATE_COMMAND", "SCHEMA_VERSION", "Batch", "Deliveries", "InboxDelivery", "Ledger",
    "Migration", "OrderVersion", "PollCursors", "Quarantine", "StatusEvents", "StockLevel", "StockLevels",
    "WebhookInbox", "check_schema", "engine_from_airflow", "migrate", "schema_version", "sqlite_engine",
]

log = logging.getLogger(__name__)


class Ledger:
    """The ledger's stores over one engine, once its schema is known to be current.

    It never creates or alters a table: it checks the schema version and refuses a ledger that
    is behind (:class:`~order_integration.exceptions.LedgerSchemaError`). ``create=True`` runs
    :func:`migrate` first — for tests and tools that own a throw-away ledger, not for workers."""

    def __init__(self, engine: Engine, *, create: bool = False) -> None:
        self.engine = engine
        if create:
            migrate(engine)
        else:
            check_schema(engine)
        self.deliveries = Deliveries(engine)
        self.quarantine = Quarantine(engine)
        self.status_events = StatusEvents(engine)
        self.stock_levels = StockLevels(engine)
        self.webhook_inbox = WebhookInbox(engine)
        self.poll_cursors = PollCursors(engine)


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
