"""The webhook inbox (ledger schema version 3): a delivery recorded once, orders waiting until a
run marks them done, and the migration that adds the table to an older ledger."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from order_integration.exceptions import LedgerSchemaError
from order_integration.ledger import (
    SCHEMA_VERSION,
    InboxDelivery,
    Ledger,
    WebhookInbox,
    migrate,
    schema_version,
    sqlite_engine,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 5, 10, tzinfo=UTC)


@pytest.fixture
def inbox(tmp_path) -> WebhookInbox:
    return Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True).webhook_inbox


def _delivery(order_id: str, delivery_id: str = "d1", digest: str = "a" * 64, store: str = "demo",
              topic: str = "order.updated") -> InboxDelivery:
    return InboxDelivery(store, order_id, topic, delivery_id, digest)


def test_a_duplicate_is_recorded_once(inbox):
    assert inbox.record(_delivery("7"), received_at=T0) is True
    assert inbox.record(_delivery("7"), received_at=T0 + timedelta(seconds=5)) is False
    [row] = inbox.rows("demo")
    assert (row["order_id"], row["delivery_id"], row["topic"]) == ("7", "d1", "order.updated")
    assert row["received_at"].replace(tzinfo=UTC) == T0  # the first delivery's row is kept as it was
    assert inbox.waiting("demo") == ["7"]


def test_the_same_delivery_id_with_another_body_is_another_delivery(inbox):
    """WooCommerce's delivery id is the webhook id and the second: two orders, one id."""
    assert inbox.record(_delivery("7", digest="a" * 64)) is True
    assert inbox.record(_delivery("8", digest="b" * 64)) is True
    assert inbox.record(_delivery("7", delivery_id="", digest="a" * 64)) is True  # no id sent: '' key
    assert inbox.record(_delivery("7", delivery_id="", digest="a" * 64)) is False
    assert inbox.record(_delivery("7", store="other")) is True  # stores are independent
    assert len(inbox.rows("demo")) == 3
    assert inbox.waiting("demo") == ["7", "8"]


def test_waiting_lists_each_order_once_longest_waiting_first_until_marked_done(inbox):
    for i, (order, delivery) in enumerate([("9", "a"), ("3", "b"), ("9", "c"), ("5", "d")]):
        inbox.record(_delivery(order, delivery), received_at=T0 + timedelta(seconds=i))
    assert inbox.waiting("demo") == ["9", "3", "5"]
    assert inbox.waiting("demo", limit=2) == ["9", "3"]
    assert inbox.mark_done("demo", [9, "3", 404], "run_1") == 3  # both of order 9's rows; 404 has none
    assert inbox.waiting("demo") == ["5"]
    assert inbox.mark_done("demo", ["9"], "run_2") == 0  # already done: keeps its run
    done = {(r["order_id"], r["delivery_id"]): r["done_by_run"] for r in inbox.rows("demo")}
    assert done == {("9", "a"): "run_1", ("3", "b"): "run_1", ("9", "c"): "run_1", ("5", "d"): None}
    assert inbox.waiting("other") == []


def test_a_delivery_that_came_while_the_run_exported_stays_waiting(inbox):
    inbox.record(_delivery("7", "a"), received_at=T0)
    inbox.record(_delivery("7", "b"), received_at=T0 + timedelta(minutes=1))  # after the run's fetch
    assert inbox.mark_done("demo", ["7"], "run_1", received_before=T0 + timedelta(seconds=30)) == 1
    assert inbox.waiting("demo") == ["7"]
    assert [r["done_by_run"] for r in inbox.rows("demo")] == ["run_1", None]


def test_newest_waiting_names_the_newest_undone_row_and_counts_orders(inbox):
    assert inbox.newest_waiting("demo") == (0, 0)
    for order, delivery in [("9", "a"), ("3", "b"), ("9", "c")]:
        inbox.record(_delivery(order, delivery))
    newest, orders = inbox.newest_waiting("demo")
    assert (newest, orders) == (max(r["id"] for r in inbox.rows("demo")), 2)
    inbox.mark_done("demo", ["9"], "run_1")
    assert inbox.newest_waiting("demo") == (inbox.rows("demo")[1]["id"], 1)  # order 3's row
    inbox.mark_done("demo", ["3"], "run_1")
    assert inbox.newest_waiting("demo") == (0, 0)
    assert inbox.newest_waiting("other") == (0, 0)


def test_concurrent_records_of_one_delivery_make_one_row(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(sqlite_engine(path), create=True)
    results: list[bool] = []
    lock = threading.Lock()

    def deliver() -> None:
        new = WebhookInbox(sqlite_engine(path)).record(_delivery("7"))
        with lock:
            results.append(new)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert len(WebhookInbox(sqlite_engine(path)).rows("demo")) == 1


def test_the_inbox_table_has_its_key_and_indexes(inbox):
    insp = inspect(inbox.engine)
    [unique] = insp.get_unique_constraints("webhook_inbox")
    assert unique["column_names"] == ["store_id", "delivery_id", "body_digest"]
    indexes = {i["name"]: i["column_names"] for i in insp.get_indexes("webhook_inbox")}
    assert indexes["ix_webhook_inbox_waiting"] == ["store_id", "done_at", "received_at"]
    assert indexes["ix_webhook_inbox_order"] == ["store_id", "order_id"]
    with inbox.engine.connect() as conn:  # the waiting query reads the index, not the table scan
        plan = " ".join(str(r[-1]) for r in conn.execute(text(
            "EXPLAIN QUERY PLAN SELECT order_id FROM webhook_inbox WHERE store_id = 'demo' AND done_at IS NULL")))
    assert "ix_webhook_inbox_waiting" in plan


def test_a_version_2_ledger_gains_the_inbox_and_keeps_its_rows(tmp_path):
    """A ledger migrated by the previous release (version 2, no inbox) is refused until migrated;
    migrating creates ``webhook_inbox`` only and records version 3."""
    from order_integration.ledger.schema import ledger_schema, metadata

    engine = sqlite_engine(tmp_path / "v2.db")
    metadata.create_all(engine, tables=[t for t in metadata.sorted_tables if t.name != "webhook_inbox"])
    with engine.begin() as conn:
        conn.execute(ledger_schema.insert(), {"version": 2, "migrated_at": T0})
        conn.execute(text("INSERT INTO order_deliveries VALUES ('demo', '1', 'v1', 'f.csv', :t)"), {"t": T0})
    assert schema_version(engine) == 2
    with pytest.raises(LedgerSchemaError, match=rf"is at version 2, needs {SCHEMA_VERSION}"):
        Ledger(engine)
    done = migrate(engine)
    assert (done.before, done.after, done.created_tables, done.added_columns, done.rebuilt) == (
        2, SCHEMA_VERSION, ("webhook_inbox",), (), ())
    ledger = Ledger(engine)
    assert [r["order_id"] for r in ledger.deliveries.delivered("demo")] == ["1"]
    assert ledger.webhook_inbox.record(_delivery("1")) is True
    assert migrate(engine).created_tables == ()  # idempotent
