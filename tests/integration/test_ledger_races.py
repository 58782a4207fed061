"""Two writers racing on the ledger, on SQLite and on a real PostgreSQL (loopback); and the
explicit migration step on PostgreSQL (run concurrently; workers without DDL rights).

The race is not left to luck: writer B runs first and is held just before its first write
(after any read it does) until writer A has committed. A read-then-write ledger lets B act on
what it read before A's commit — ``as_of`` moves backwards, or a unique key raises
``IntegrityError``; an upsert decided by the database cannot.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ProgrammingError

from order_integration.exceptions import LedgerSchemaError
from order_integration.ledger import SCHEMA_VERSION, Ledger, migrate, schema_version, sqlite_engine

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
T1, T2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
WAIT = 30  # seconds; a writer that waits longer is stuck (the test fails, it does not hang)


@pytest.fixture(params=["sqlite", "postgresql"])
def engines(request, tmp_path) -> Iterator[Callable[[], Engine]]:
    """Factory of engines on one fresh, migrated ledger database (each writer gets its own)."""
    made: list[Engine] = []
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"

        def make() -> Engine:
            made.append(sqlite_engine(path))
            return made[-1]
    else:
        url = request.getfixturevalue("postgres").create_database(f"ledger_{uuid.uuid4().hex[:12]}")

        def make() -> Engine:
            made.append(create_engine(url))
            return made[-1]

    Ledger(make(), create=True)
    yield make
    for engine in made:
        engine.dispose()


def _race(make: Callable[[], Engine], first: Callable[[Ledger], Any], second: Callable[[Ledger], Any]) -> list[Any]:
    """Run ``second`` (writer B) and ``first`` (writer A) at once: B is held before its first
    INSERT/UPDATE until A has committed, and A starts only once B has read (or is about to
    write). Returns both results; an exception in either writer fails the test."""
    a, b = Ledger(make()), Ledger(make())
    for ledger in (a, b):  # connect once now: dialect start-up queries must not count as B's read
        with ledger.engine.connect():
            pass
    b_ready, a_done = threading.Event(), threading.Event()

    @event.listens_for(b.engine, "after_cursor_execute")
    def _b_has_read(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("SELECT"):
            b_ready.set()

    @event.listens_for(b.engine, "before_cursor_execute")
    def _b_about_to_write(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")) and not a_done.is_set():
            b_ready.set()
            assert a_done.wait(WAIT), "writer A never finished"

    results: dict[str, Any] = {}

    def run_a() -> None:
        try:
            assert b_ready.wait(WAIT), "writer B never started"
            results["a"] = first(a)
        except BaseException as exc:
            results["a"] = exc
        finally:
            a_done.set()

    def run_b() -> None:
        try:
            results["b"] = second(b)
        except BaseException as exc:
            results["b"] = exc

    threads = [threading.Thread(target=run_b), threading.Thread(target=run_a)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * WAIT)
    errors = {k: v for k, v in results.items() if isinstance(v, BaseException)}
    assert not errors, f"a writer failed: {errors!r}"
    assert set(results) == {"a", "b"}, "a writer did not finish"
    return [results["a"], results["b"]]


def _levels(*pairs: tuple[int, datetime]) -> Callable[[Ledger], int]:
    def write(ledger: Ledger) -> int:
        return ledger.stock_levels.record("demo", f"stock_{pairs[0][0]}.csv", [
            {"sku": f"SKU-{i}", "quantity": qty, "as_of": as_of} for i, (qty, as_of) in enumerate(pairs)])
    return write


@pytest.mark.parametrize("seeded", [True, False], ids=["known-sku", "new-sku"])
def test_an_older_stock_level_written_last_never_moves_as_of_backwards(engines, seeded):
    """A (newer, T2) commits while B (older, T1) is between its read and its write."""
    if seeded:
        Ledger(engines()).stock_levels.record("demo", "stock_0.csv", [{"sku": "SKU-0", "quantity": 5, "as_of": T0}])
    written = _race(engines, first=_levels((20, T2)), second=_levels((10, T1)))
    level = Ledger(engines()).stock_levels.levels("demo", ["SKU-0"])["SKU-0", None]
    assert (level.quantity, level.as_of, level.source_file) == (20, T2, "stock_20.csv")
    assert written == [1, 0], "the stale level counted as written"


def test_a_newer_stock_level_written_last_replaces_the_older_one(engines):
    Ledger(engines()).stock_levels.record("demo", "stock_0.csv", [{"sku": "SKU-0", "quantity": 5, "as_of": T0}])
    written = _race(engines, first=_levels((10, T1)), second=_levels((20, T2)))
    level = Ledger(engines()).stock_levels.levels("demo", ["SKU-0"])["SKU-0", None]
    assert (level.quantity, level.as_of) == (20, T2)
    assert written == [1, 1]


def test_the_same_batch_completed_twice_at_once_records_each_delivery_once(engines):
    """Two loads finishing the same pending batch (a retry and the next run's recovery)."""
    ledger = Ledger(engines())
    batch, won = ledger.deliveries.open_batch("demo", "run1", "W", "file:///a", [("1", "v1"), ("2", "v1")])
    ledger.deliveries.set_batch_file(batch.batch_id, "file:///staged.csv", "orders_demo_W_abc.csv", 2)
    stored = ledger.deliveries.batch(batch.batch_id)
    assert _race(engines, first=lambda lg: lg.deliveries.complete_batch(stored), second=lambda lg: lg.deliveries.complete_batch(stored)) \
        == [2, 2]
    assert sorted((d["order_id"], d["order_version"]) for d in ledger.deliveries.delivered("demo")) == sorted(won)


def test_quarantining_the_same_versions_at_once_records_each_once(engines):
    reasons = [{"rule": "email_valid", "detail": "not an email address"}]
    entries = [("1", "v1", reasons), ("2", "v1", reasons), ("3", "v1", reasons)]
    new = _race(engines, first=lambda lg: lg.quarantine.record("demo", entries),
                second=lambda lg: lg.quarantine.record("demo", entries[1:]))
    assert sum(new) == 3
    rows = Ledger(engines()).quarantine.entries("demo")
    assert sorted((r["order_id"], r["order_version"]) for r in rows) == [("1", "v1"), ("2", "v1"), ("3", "v1")]


def test_claims_raced_by_two_batches_are_won_once(engines):
    versions = [(str(i), "v") for i in range(50)]
    won = _race(engines, first=lambda lg: lg.deliveries.open_batch("demo", "a", "W", "x", versions)[1],
                second=lambda lg: lg.deliveries.open_batch("demo", "b", "W", "x", versions[25:])[1])
    assert not won[0] & won[1]
    assert won[0] | won[1] == set(versions)


def test_several_migrations_of_a_fresh_postgres_ledger_at_once_all_succeed(postgres):
    """The compose init next to an operator's run, or a retried init: no "already exists"."""
    url = postgres.create_database(f"ledger_{uuid.uuid4().hex[:12]}")
    barrier, results = threading.Barrier(4), []

    def run() -> None:
        engine = create_engine(url)
        try:
            barrier.wait(WAIT)
            results.append(migrate(engine).after)
        except Exception as exc:
            results.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * WAIT)
    assert results == [SCHEMA_VERSION] * 4
    assert schema_version(create_engine(url)) == SCHEMA_VERSION


def test_a_worker_without_ddl_rights_works_on_a_migrated_postgres_ledger(postgres):
    url = postgres.create_database(f"ledger_{uuid.uuid4().hex[:12]}")
    role = f"worker_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url)
    worker = create_engine(make_url(url).set(username=role))
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        with pytest.raises(LedgerSchemaError, match=r"has no schema: run `python -m order_integration ledger migrate`"):
            Ledger(worker)
        migrate(admin)  # the deployment's step, with the owner's rights
        with admin.begin() as conn:
            conn.exec_driver_sql(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
        with pytest.raises(ProgrammingError, match="permission denied"), worker.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE probe (x integer)")  # the worker really has no DDL rights

        ledger = Ledger(worker)
        batch, won = ledger.deliveries.open_batch("demo", "run1", "W", "file:///a", [("1", "v1"), ("2", "v1")])
        assert won == {("1", "v1"), ("2", "v1")}
        ledger.deliveries.set_batch_file(batch.batch_id, "file:///staged.csv", "orders_demo_W_abc.csv", 2)
        assert ledger.deliveries.complete_batch(ledger.deliveries.batch(batch.batch_id)) == 2
        assert ledger.quarantine.record("demo", [("3", "v1", [{"rule": "r", "detail": "d"}])]) == 1
        assert ledger.stock_levels.record("demo", "s.csv", [{"sku": "A", "quantity": 1, "as_of": T0}]) == 1
        assert ledger.status_events.record("demo", "f.csv", [
            {"line_number": 2, "order_id": "1", "event": "accepted", "outcome": "applied"}]) == 1
        assert sorted(d["order_id"] for d in ledger.deliveries.delivered("demo")) == ["1", "2"]
    finally:
        worker.dispose()
        admin.dispose()


def test_a_version_1_postgres_ledger_is_migrated_to_stock_levels_per_location(postgres):
    """Version 1 → 2 on PostgreSQL: columns and the unique key altered in place, in one transaction."""
    from tests.support.ledger_v1 import build_v1_ledger, check_v1_ledger_migrates_to_v2

    engine = create_engine(postgres.create_database(f"ledger_{uuid.uuid4().hex[:12]}"))
    try:
        build_v1_ledger(engine)
        check_v1_ledger_migrates_to_v2(engine)
    finally:
        engine.dispose()
