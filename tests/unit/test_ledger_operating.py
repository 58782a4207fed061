"""Ledger behaviour the operator relies on: deliberate resends and quarantine release."""

from __future__ import annotations

import pytest

from order_integration.ledger import Ledger, sqlite_engine

pytestmark = pytest.mark.unit


@pytest.fixture
def ledger(tmp_path):
    return Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)


def _deliver(ledger, run_id, versions, *, resend=False, name="f.csv"):
    batch, _ = ledger.deliveries.open_batch("demo", run_id, "W", "file:///src", versions, resend=resend)
    ledger.deliveries.set_batch_file(batch.batch_id, "file:///staged", name, len(versions))
    return batch, ledger.deliveries.complete_batch(ledger.deliveries.batch(batch.batch_id))


def test_a_resend_repeats_delivered_versions_and_records_them_apart(ledger):
    _deliver(ledger, "sched", [("1", "v1"), ("2", "v1")], name="first.csv")
    batch, count = _deliver(ledger, "manual", [("1", "v1"), ("3", "v1")], resend=True, name="again.csv")
    assert count == 2
    assert ledger.deliveries.batch_claims(batch.batch_id) == {("1", "v1"), ("3", "v1")}
    # order_deliveries keeps the first delivery of each version; the repeat is in order_resends
    assert sorted((d["order_id"], d["file_name"]) for d in ledger.deliveries.delivered("demo")) == [
        ("1", "first.csv"), ("2", "first.csv"), ("3", "again.csv")]
    [resend] = ledger.deliveries.resends("demo")
    assert (resend["order_id"], resend["run_id"], resend["file_name"]) == ("1", "manual", "again.csv")
    assert resend["resent_at"] is not None
    assert ledger.deliveries.run_resends("demo", "manual") == {("1", "v1")}


def test_without_resend_a_delivered_version_is_not_claimed_again(ledger):
    _deliver(ledger, "sched", [("1", "v1")])
    _, won = ledger.deliveries.open_batch("demo", "manual", "W", "file:///src", [("1", "v1")])
    assert won == set() and ledger.deliveries.resends("demo") == []


def test_a_pending_resend_batch_is_finished_with_its_repeats(ledger):
    _deliver(ledger, "sched", [("1", "v1")])
    batch, _ = ledger.deliveries.open_batch("demo", "manual", "W", "file:///src", [("1", "v1")], resend=True)
    assert [b.batch_id for b in ledger.deliveries.pending_batches("demo")] == [batch.batch_id]
    assert ledger.deliveries.batch_claims(batch.batch_id) == {("1", "v1")}, "the crash-recovery path sees the repeat"
    assert ledger.deliveries.run_resends("demo", "manual") == set(), "not resent until the file is on the server"


def test_delivery_releases_every_open_quarantine_entry_of_the_order(ledger):
    reasons = [{"rule": "r", "detail": "d"}]
    ledger.quarantine.record("demo", [("1", "bad1", reasons), ("1", "bad2", reasons), ("2", "bad", reasons)])
    ledger.quarantine.record("other", [("1", "bad1", reasons)])
    _deliver(ledger, "manual", [("1", "fixed")])
    assert [(q["order_id"], q["order_version"]) for q in ledger.quarantine.entries("demo")] == [("2", "bad")]
    released = [q for q in ledger.quarantine.entries("demo", include_released=True) if q["released_at"] is not None]
    assert sorted(q["order_version"] for q in released) == ["bad1", "bad2"]
    assert len(ledger.quarantine.entries("other")) == 1, "another store's entry with the same id stays"
    assert ledger.quarantine.unreleased_versions("demo", ["1", "2"]) == {("2", "bad")}


def test_a_deliberate_resend_also_releases_the_orders_quarantine_entry(ledger):
    reasons = [{"rule": "r", "detail": "d"}]
    _deliver(ledger, "sched", [("1", "v1")], name="first.csv")
    ledger.quarantine.record("demo", [("1", "bad", reasons)])  # a later, broken version of order 1
    batch, count = _deliver(ledger, "manual", [("1", "v1")], resend=True, name="again.csv")
    assert count == 1 and ledger.deliveries.batch_claims(batch.batch_id) == {("1", "v1")}
    assert ledger.quarantine.entries("demo") == [], "the resent order reached the backend: released"
    [delivery] = ledger.deliveries.delivered("demo")
    assert delivery["file_name"] == "first.csv" and delivery["delivered_at"] is not None


def test_a_window_of_versions_is_claimed_and_counted_a_chunk_at_a_time(ledger):
    """``claim`` takes a generator (a million-order window is never a list), ``in_batch`` and
    ``run_counts`` ask a chunk at a time: the same answers as the whole-set reads, across the
    borders of transactions (ROWS_PER_TRANSACTION) and of queries (CHUNK), with repeats, and a
    claimed version and a repeated one listed twice."""
    from order_integration.ledger.db import CHUNK, ROWS_PER_TRANSACTION

    n = ROWS_PER_TRANSACTION + CHUNK + 37
    versions = [(str(10_000 + i), f"v{i}") for i in range(n)]
    border = ROWS_PER_TRANSACTION
    _deliver(ledger, "sched", versions[border - 3:border + 3])  # six across a transaction's border
    listed_twice = [versions[7], versions[border]]
    rows = ((oid, ver, f"b{oid}") for oid, ver in [*versions, *listed_twice])
    batch = ledger.deliveries.claim("demo", "manual", "W", "file:///src", rows, resend=True)

    whole = ledger.deliveries.batch_claims(batch.batch_id)
    assert whole == set(versions) and ledger.deliveries.batch_size(batch.batch_id) == n
    asked = [*versions[::2], ("999", "v0"), ("10001", "other")]  # two it does not hold
    assert ledger.deliveries.in_batch(batch, asked) == set(versions[::2])
    assert len(ledger.deliveries.resends("demo")) == 6, "the six delivered before are repeats, once each"

    ledger.deliveries.set_batch_file(batch.batch_id, "file:///staged", "again.csv", n)
    ledger.deliveries.complete_batch(ledger.deliveries.batch(batch.batch_id))
    assert ledger.deliveries.run_counts("demo", "manual", versions) == (n, 6, n)
    assert ledger.deliveries.run_counts("demo", "sched", versions) == (6, 0, n)
    last = versions[-1][0]
    assert ledger.deliveries.claimed_bases("demo", [last]) == {last: {f"b{last}"}}, "bases stored with the claims"


def test_a_batch_of_a_version_claimed_elsewhere_is_empty(ledger):
    _deliver(ledger, "sched", [("1", "v1")])
    batch = ledger.deliveries.claim("demo", "late", "W", "file:///src", iter([("1", "v1", None)]))
    assert ledger.deliveries.batch_size(batch.batch_id) == 0
    assert ledger.deliveries.in_batch(batch, [("1", "v1")]) == set()
    assert ledger.deliveries.run_counts("demo", "late", [("1", "v1")]) == (0, 0, 1)
