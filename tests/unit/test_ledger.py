import dataclasses
import threading

import pytest
from sqlalchemy import inspect

from order_integration.exceptions import LedgerSchemaError
from order_integration.ledger import SCHEMA_VERSION, Ledger, migrate, schema_version, sqlite_engine
from tests.support.ledger_v1 import build_v1_ledger, check_v1_ledger_migrates_to_v2

pytestmark = pytest.mark.unit


@pytest.fixture
def ledger(tmp_path):
    return Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)


def test_contract_tables_exist_with_contract_columns(ledger):
    insp = inspect(ledger.engine)
    cols = {t: [c["name"] for c in insp.get_columns(t)] for t in insp.get_table_names()}
    assert cols["order_deliveries"][:5] == ["store_id", "order_id", "order_version", "file_name", "delivered_at"]
    assert cols["order_quarantine"][:6] == ["store_id", "order_id", "order_version", "reasons", "quarantined_at",
                                        "released_at"]
    # contract columns first; later issues may only add columns after them
    assert cols["status_events"][:7] == ["store_id", "source_file", "line_number", "order_id", "event", "outcome",
                                     "applied_at"]
    assert cols["stock_levels"][:6] == ["store_id", "sku", "quantity", "as_of", "applied_at", "source_file"]


def test_the_ledger_is_one_store_per_table_family_over_one_engine(ledger):
    from order_integration.ledger import Deliveries, Quarantine, StatusEvents, StockLevels, WebhookInbox

    stores = {"deliveries": Deliveries, "quarantine": Quarantine, "status_events": StatusEvents,
              "stock_levels": StockLevels, "webhook_inbox": WebhookInbox}
    for name, kind in stores.items():
        store = getattr(ledger, name)
        assert type(store) is kind and store.engine is ledger.engine
    assert [n for n in vars(type(ledger)) if not n.startswith("_")] == [], "no methods forwarded to a store"


def test_claims_decide_overlapping_batches(ledger):
    _, won1 = ledger.deliveries.open_batch("demo", "run1", "W", "file:///a", [("1", "v1"), ("2", "v1")])
    _, won2 = ledger.deliveries.open_batch("demo", "run2", "W", "file:///b", [("2", "v1"), ("3", "v1")])
    assert won1 == {("1", "v1"), ("2", "v1")}
    assert won2 == {("3", "v1")}
    # A new version of an order is claimable; another store's ids are independent.
    _, won3 = ledger.deliveries.open_batch("demo", "run3", "W", "file:///c", [("1", "v2")])
    _, won4 = ledger.deliveries.open_batch("other", "run3", "W", "file:///c", [("1", "v1")])
    assert won3 == {("1", "v2")} and won4 == {("1", "v1")}
    assert ledger.deliveries.claimed_versions("demo", ["1", "2", "9"]) == {"1": {"v1", "v2"}, "2": {"v1"}}
    # (delivered by the run, of them resent, asked): each run counts the versions its batch won
    assert ledger.deliveries.run_counts("demo", "run1", [("1", "v1"), ("3", "v1")]) == (1, 0, 2)
    assert ledger.deliveries.run_counts("demo", "run2", [("1", "v1"), ("3", "v1")]) == (1, 0, 2)
    assert ledger.deliveries.run_counts("demo", "run9", [("1", "v1"), ("3", "v1")]) == (0, 0, 2)


def test_batch_lifecycle_records_deliveries_once(ledger):
    batch, _ = ledger.deliveries.open_batch("demo", "run1", "W", "file:///a", [("1", "v1"), ("2", "v1")])
    assert [b.batch_id for b in ledger.deliveries.pending_batches("demo")] == [batch.batch_id]
    ledger.deliveries.set_batch_file(batch.batch_id, "file:///staged.csv", "orders_demo_W_abc.csv", 2)
    stored = ledger.deliveries.batch(batch.batch_id)
    assert (stored.file_name, stored.orders) == ("orders_demo_W_abc.csv", 2)
    assert ledger.deliveries.complete_batch(stored) == 2
    assert ledger.deliveries.complete_batch(stored) == 2  # a repeated completion writes nothing twice
    rows = ledger.deliveries.delivered("demo")
    assert sorted((r["order_id"], r["file_name"]) for r in rows) == [("1", "orders_demo_W_abc.csv"),
                                                                      ("2", "orders_demo_W_abc.csv")]
    assert ledger.deliveries.pending_batches("demo") == []


def test_empty_batch_is_dropped(ledger):
    ledger.deliveries.open_batch("demo", "run1", "W", "file:///a", [("1", "v1")])
    batch, won = ledger.deliveries.open_batch("demo", "run2", "W", "file:///a", [("1", "v1")])
    assert won == set()
    ledger.deliveries.drop_batch(batch.batch_id)
    assert [b.run_id for b in ledger.deliveries.pending_batches("demo")] == ["run1"]


def test_complete_needs_a_file(ledger):
    batch, _ = ledger.deliveries.open_batch("demo", "run1", "W", "file:///a", [("1", "v1")])
    with pytest.raises(ValueError, match="has no file"):
        ledger.deliveries.complete_batch(batch)
    with pytest.raises(ValueError):
        ledger.deliveries.complete_batch(dataclasses.replace(batch, file_name=None))


def test_quarantine_is_recorded_once_per_version(ledger):
    reasons = [{"rule": "email_valid", "detail": "customer_email 'x' is not an email address"}]
    assert ledger.quarantine.record("demo", [("1", "v1", reasons), ("2", "v1", reasons)]) == 2
    assert ledger.quarantine.record("demo", [("1", "v1", reasons), ("1", "v2", reasons)]) == 1
    rows = ledger.quarantine.entries("demo")
    assert [(r["order_id"], r["order_version"]) for r in rows] == [("1", "v1"), ("1", "v2"), ("2", "v1")]
    assert rows[0]["reasons"] == reasons and rows[0]["released_at"] is None
    assert ledger.quarantine.unreleased_versions("demo", ["1"]) == {("1", "v1"), ("1", "v2")}


def test_concurrent_claims_never_double(tmp_path):
    """Two writers racing for the same versions: every version is won exactly once."""
    path = tmp_path / "ledger.db"
    migrate(sqlite_engine(path))
    versions = [(str(i), "v") for i in range(300)]
    results: list[set] = []

    def claim(run):
        _, won = Ledger(sqlite_engine(path)).deliveries.open_batch("demo", run, "W", "x", versions)
        results.append(won)

    threads = [threading.Thread(target=claim, args=(f"run{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r) for r in results) == 300
    assert set().union(*results) == set(versions)


def test_columns_added_by_a_newer_release_are_added_to_an_existing_ledger(tmp_path):
    from sqlalchemy import text

    engine = sqlite_engine(tmp_path / "old.db")
    with engine.begin() as conn:  # delivery_claims as the first release created it
        conn.execute(text("CREATE TABLE delivery_claims (store_id VARCHAR(32) NOT NULL, order_id VARCHAR(64) "
                          "NOT NULL, order_version VARCHAR(32) NOT NULL, batch_id VARCHAR(36) NOT NULL)"))
        conn.execute(text("INSERT INTO delivery_claims VALUES ('demo', '1', 'v1', 'b1')"))
    assert schema_version(engine) == 0  # made before versioning
    with pytest.raises(LedgerSchemaError, match=rf"is at version 0, needs {SCHEMA_VERSION}: run "
                                                r"`python -m order_integration ledger migrate`"):
        Ledger(engine)
    done = migrate(engine)
    assert (done.before, done.after, done.added_columns) == (0, SCHEMA_VERSION, ("delivery_claims.base_version",))
    assert "order_deliveries" in done.created_tables
    names = [c["name"] for c in inspect(engine).get_columns("delivery_claims")]
    assert names == ["store_id", "order_id", "order_version", "batch_id", "base_version"]
    assert Ledger(engine).deliveries.claimed_versions("demo", ["1"]) == {"1": {"v1"}}
    again = migrate(engine)  # idempotent
    assert (again.before, again.after, again.created_tables, again.added_columns) == (SCHEMA_VERSION, SCHEMA_VERSION, (), ())


def test_status_free_digests_are_kept_with_claims(ledger):
    ledger.deliveries.open_batch("demo", "run1", "W", "x", [("1", "v1"), ("2", "v1")], {("1", "v1"): "b1"})
    assert ledger.deliveries.claimed_bases("demo", ["1", "2", "3"]) == {"1": {"b1"}}


def _open_fresh_ledger(path, barrier, results) -> None:
    barrier.wait()  # every process meets the fresh file at the same moment
    try:
        migrate(sqlite_engine(path))  # what each task does to the default SQLite file
        Ledger(sqlite_engine(path))
        results.put("ok")
    except Exception as exc:  # reported to the parent
        results.put(f"{type(exc).__name__}: {exc}"[:300])


def test_several_processes_migrating_a_fresh_ledger_at_once_all_succeed(tmp_path) -> None:
    """A backfill's first task processes meet an empty default ledger together, each migrating
    it: no "already exists", and one version row."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for trial in range(3):
        path = tmp_path / f"fresh_{trial}.db"
        barrier, results = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_open_fresh_ledger, args=(path, barrier, results)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [results.get(timeout=10) for _ in procs] == ["ok"] * 8
        assert schema_version(sqlite_engine(path)) == SCHEMA_VERSION


def test_a_sqlite_ledger_keeps_no_file_open_between_transactions(tmp_path) -> None:
    """No idle pooled connection: this process's SQLite locks cannot be dropped behind its back
    by an unrelated open()/close() of the file (the scan of a backup, a test reading bytes)."""
    import os

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc")
    path = tmp_path / "ledger.db"
    ledger = Ledger(sqlite_engine(path), create=True)
    ledger.quarantine.record("s", [("1", "v1", [{"rule": "r", "detail": "d"}])])
    assert ledger.quarantine.entries("s")
    open_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert not {p for p in open_files if p.startswith(str(path))}, open_files


def test_a_ledger_without_schema_is_refused_with_the_command_to_run(tmp_path) -> None:
    """Workers never create tables: an empty database is refused, naming the migration step."""
    engine = sqlite_engine(tmp_path / "empty.db")
    assert schema_version(engine) is None
    with pytest.raises(LedgerSchemaError) as refused:
        Ledger(engine)
    assert str(refused.value) == (f"the ledger at sqlite:///{tmp_path / 'empty.db'} has no schema: "
                                  "run `python -m order_integration ledger migrate`")
    assert inspect(engine).get_table_names() == []  # the check created nothing
    done = migrate(engine)
    assert (done.before, done.after) == (None, SCHEMA_VERSION)
    assert "ledger_schema" in done.created_tables
    Ledger(engine)


def test_stock_levels_only_move_forward(ledger) -> None:
    from datetime import UTC, datetime

    t0, t1 = datetime(2026, 12, 4, 8, tzinfo=UTC), datetime(2026, 12, 4, 9, tzinfo=UTC)
    assert ledger.stock_levels.record("demo", "a.csv", [{"sku": "A", "quantity": 1, "as_of": t1},
                                                        {"sku": "B", "quantity": 2, "as_of": t0}]) == 2
    # A: older (skipped); B: equal (replaced, as the sync applied it); C: new
    assert ledger.stock_levels.record("demo", "b.csv", [{"sku": "A", "quantity": 9, "as_of": t0},
                                                        {"sku": "B", "quantity": 3, "as_of": t0, "file_location": "W1"},
                                                        {"sku": "C", "quantity": 4, "as_of": t1}]) == 2
    levels = ledger.stock_levels.all_levels("demo")
    assert {k: (v.quantity, v.as_of, v.source_file, v.file_location) for k, v in levels.items()} == {
        ("A", None): (1, t1, "a.csv", None), ("B", None): (3, t0, "b.csv", "W1"), ("C", None): (4, t1, "b.csv", None)}


def test_tasks_migrate_the_default_sqlite_ledger_but_never_a_configured_one(tmp_path, monkeypatch) -> None:
    """The newcomer's ``$AIRFLOW_HOME/order_ledger.db`` is migrated on first use; a ledger behind
    the ``order_ledger`` connection is the deployment's, migrated by ``ledger migrate`` only."""
    import json

    from order_integration.tasks import _ledger

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    monkeypatch.delenv("AIRFLOW_CONN_ORDER_LEDGER", raising=False)
    assert _ledger().quarantine.record("s", [("1", "v1", [])]) == 1
    assert schema_version(sqlite_engine(home / "order_ledger.db")) == SCHEMA_VERSION

    configured = tmp_path / "configured.db"
    monkeypatch.setenv("AIRFLOW_CONN_ORDER_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(configured)}))
    with pytest.raises(LedgerSchemaError, match=r"the ledger at sqlite:///.*configured\.db has no schema: run "
                                                r"`python -m order_integration ledger migrate`"):
        _ledger()
    assert inspect(sqlite_engine(configured)).get_table_names() == []


def test_the_migrate_command_reports_what_it_did_and_is_idempotent(tmp_path, capsys) -> None:
    from order_integration.__main__ import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["quarantine", "list", "--store", "demo", "--ledger-url", url]) == 2  # reads refuse too
    assert capsys.readouterr().err == (f"error: the ledger at {url} has no schema: "
                                       "run `python -m order_integration ledger migrate`\n")
    assert main(["ledger", "migrate", "--ledger-url", url]) == 0
    assert capsys.readouterr().out.startswith(f"ledger at {url}: migrated from no schema to version "
                                              f"{SCHEMA_VERSION} (created delivery_batches, ")
    assert main(["ledger", "migrate", "--ledger-url", url]) == 0
    assert capsys.readouterr().out == f"ledger at {url}: schema version {SCHEMA_VERSION}, nothing to do\n"
    assert main(["quarantine", "list", "--store", "demo", "--ledger-url", url]) == 0


def test_stock_levels_are_kept_per_sku_and_location(ledger) -> None:
    from datetime import UTC, datetime

    t0, t1 = datetime(2026, 12, 4, 8, tzinfo=UTC), datetime(2026, 12, 4, 9, tzinfo=UTC)
    loc1, loc2 = "gid://shopify/Location/1", "gid://shopify/Location/2"
    assert ledger.stock_levels.record("demo", "a.csv", [
        {"sku": "A", "quantity": 1, "as_of": t1, "location": loc1, "file_location": "WH-1"},
        {"sku": "A", "quantity": 2, "as_of": t0, "location": loc2, "file_location": "WH-2"},
        {"sku": "A", "quantity": 3, "as_of": t0},  # a one-level store's level is its own key
    ]) == 3
    # each location moves forward on its own: loc1 older (skipped), loc2 newer (replaced)
    assert ledger.stock_levels.record("demo", "b.csv", [
        {"sku": "A", "quantity": 9, "as_of": t0, "location": loc1},
        {"sku": "A", "quantity": 8, "as_of": t1, "location": loc2, "file_location": "WH-2"},
    ]) == 1
    levels = ledger.stock_levels.levels("demo", ["A"])
    assert {k: (v.quantity, v.source_file, v.location, v.file_location) for k, v in levels.items()} == {
        ("A", loc1): (1, "a.csv", loc1, "WH-1"), ("A", loc2): (8, "b.csv", loc2, "WH-2"),
        ("A", None): (3, "a.csv", None, None)}
    assert ledger.stock_levels.all_levels("demo") == levels
    with ledger.engine.connect() as conn:  # one level per SKU is '' in the table, never NULL
        from sqlalchemy import text

        assert conn.execute(text("SELECT count(*) FROM stock_levels WHERE location = ''")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM stock_levels WHERE location IS NULL")).scalar() == 0
    with pytest.raises(ValueError, match="location key longer than 255"):
        ledger.stock_levels.record("demo", "c.csv", [{"sku": "A", "quantity": 1, "as_of": t1, "location": "x" * 256}])


def test_a_version_1_ledger_file_is_migrated_to_stock_levels_per_location(tmp_path) -> None:
    engine = sqlite_engine(tmp_path / "v1.db")
    build_v1_ledger(engine)
    check_v1_ledger_migrates_to_v2(engine)
    assert inspect(engine).get_table_names().count("stock_levels_v1") == 0  # the old table is gone


def test_the_v2_rebuild_keeps_the_version_1_table_when_it_fails(tmp_path, monkeypatch) -> None:
    """SQLite rebuilds the table in one transaction: a failure half-way leaves version 1 intact."""
    from order_integration.ledger import schema

    engine = sqlite_engine(tmp_path / "v1.db")
    build_v1_ledger(engine)

    class Broken:
        def compile(self, dialect):
            return "CREATE TABLE stock_levels (this is not SQL"

    monkeypatch.setattr("sqlalchemy.schema.CreateTable", lambda _table: Broken())
    with pytest.raises(Exception, match="syntax error"):
        schema._stock_levels_v2(engine)
    assert schema_version(engine) == 1
    assert "stock_levels_v1" not in inspect(engine).get_table_names()
    assert [c["name"] for c in inspect(engine).get_columns("stock_levels")][-1] == "location"
    monkeypatch.undo()
    check_v1_ledger_migrates_to_v2(engine)
