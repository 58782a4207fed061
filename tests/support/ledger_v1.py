"""A ledger at schema version 1, for the tests of the migration from version 1 (to 2:
``stock_levels`` keyed by location; to 3: ``webhook_inbox``) on SQLite (tests/unit/test_ledger.py) and PostgreSQL
(tests/integration/test_ledger_races.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect

from order_integration.exceptions import LedgerSchemaError
from order_integration.ledger import SCHEMA_VERSION, Ledger, schema_version

#: Tables later versions added (a version-1 ledger has none of them).
NEWER_TABLES = ("webhook_inbox",)
#: ``stock_levels`` as schema version 1 created it (one level per store and SKU; ``location`` the
#: file's name, informational), per dialect.
V1_STOCK_LEVELS = {
    "sqlite": "CREATE TABLE stock_levels (store_id VARCHAR(32) NOT NULL, sku VARCHAR(128) NOT NULL, "
              "quantity INTEGER NOT NULL, as_of DATETIME NOT NULL, applied_at DATETIME NOT NULL, "
              "source_file VARCHAR(255) NOT NULL, location VARCHAR(64), "
              "CONSTRAINT uq_stock_levels UNIQUE (store_id, sku))",
    "postgresql": "CREATE TABLE stock_levels (store_id VARCHAR(32) NOT NULL, sku VARCHAR(128) NOT NULL, "
                  "quantity INTEGER NOT NULL, as_of TIMESTAMP WITH TIME ZONE NOT NULL, "
                  "applied_at TIMESTAMP WITH TIME ZONE NOT NULL, source_file VARCHAR(255) NOT NULL, "
                  "location VARCHAR(64), CONSTRAINT uq_stock_levels UNIQUE (store_id, sku))",
}


def build_v1_ledger(engine: Engine) -> None:
    """A ledger at schema version 1: every other table of version 1 as this release makes it
    (unchanged since version 1), ``stock_levels`` with the version-1 DDL and two rows, none of the
    tables later versions added, and version 1 recorded."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from order_integration.ledger.schema import metadata

    metadata.create_all(engine, tables=[t for t in metadata.sorted_tables
                                        if t.name not in ("stock_levels", *NEWER_TABLES)])
    t0 = datetime(2026, 12, 1, 8, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(text(V1_STOCK_LEVELS[engine.dialect.name]))
        conn.execute(text("INSERT INTO stock_levels VALUES (:store, :sku, :q, :t, :t, :f, :loc)"), [
            {"store": "demo", "sku": "A-1", "q": 5, "t": t0, "f": "s1.csv", "loc": None},
            {"store": "demo", "sku": "B-2", "q": 7, "t": t0, "f": "s1.csv", "loc": "WH-1"}])
        conn.execute(text("INSERT INTO ledger_schema (version, migrated_at) VALUES (1, :t)"), {"t": t0})


def check_v1_ledger_migrates_to_v2(engine: Engine) -> None:
    """The migration of a version-1 ledger to this release's version, on any dialect: refused
    before, rows kept after (one level per SKU, key location '', the file's name in
    ``file_location``), the new key works, the newer tables are created."""
    from datetime import UTC, datetime

    from order_integration.ledger.schema import migrate as migrate_schema

    assert schema_version(engine) == 1
    with pytest.raises(LedgerSchemaError, match=rf"is at version 1, needs {SCHEMA_VERSION}: run "
                                                r"`python -m order_integration ledger migrate`"):
        Ledger(engine)
    done = migrate_schema(engine)
    assert (done.before, done.after, done.created_tables, done.added_columns) == (1, SCHEMA_VERSION,
                                                                                  NEWER_TABLES, ())
    assert done.rebuilt == ("stock_levels keyed by (store_id, sku, location)",)
    assert (f"migrated from version 1 to version {SCHEMA_VERSION} (created webhook_inbox; "
            "stock_levels keyed by (store_id, sku, location); created indexes ix_stock_levels_applied)"
            ) in done.describe("x")  # the rebuilt table gets the index version 5 added
    stock = Ledger(engine).stock_levels
    levels = stock.all_levels("demo")
    assert {k: (v.quantity, v.source_file, v.location, v.file_location) for k, v in levels.items()} == {
        ("A-1", None): (5, "s1.csv", None, None), ("B-2", None): (7, "s1.csv", None, "WH-1")}
    t1 = datetime(2026, 12, 2, 8, tzinfo=UTC)
    assert stock.record("demo", "s2.csv", [  # the migrated rows keep their key; locations add rows
        {"sku": "B-2", "quantity": 8, "as_of": t1, "file_location": "WH-2"},
        {"sku": "B-2", "quantity": 3, "as_of": t1, "location": "L1"},
        {"sku": "B-2", "quantity": 4, "as_of": t1, "location": "L2"}]) == 3
    after = stock.levels("demo", ["B-2"])
    assert {k: v.quantity for k, v in after.items()} == {("B-2", None): 8, ("B-2", "L1"): 3, ("B-2", "L2"): 4}
    names = [c["name"] for c in inspect(engine).get_columns("stock_levels")]
    assert names[:6] == ["store_id", "sku", "quantity", "as_of", "applied_at", "source_file"]
    assert set(names) == {*names[:6], "location", "file_location"}
    [unique] = inspect(engine).get_unique_constraints("stock_levels")
    assert unique["column_names"] == ["store_id", "sku", "location"]
    again = migrate_schema(engine)  # idempotent
    assert (again.before, again.after, again.rebuilt) == (SCHEMA_VERSION, SCHEMA_VERSION, ())
