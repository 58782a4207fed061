"""The integration-health view's logic (``order_integration.health``) against a real SQLite ledger:
what the ledger holds comes back per store, the queries use the schema-version-5 indexes, the
schedule arithmetic of freshness, the chart's windows, the release check's sentences, the page."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, inspect, text, update

from order_integration import health
from order_integration.config import parse_config
from order_integration.exceptions import LedgerSchemaError
from order_integration.ledger import SCHEMA_VERSION, Ledger, migrate, schema_version, sqlite_engine
from order_integration.ledger.schema import ledger_schema, metadata, order_quarantine, status_events

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 5, 13, 20, tzinfo=UTC)
CONFIG = parse_config({"stores": [
    {"id": "shop_a", "storefront_conn_id": "sf_a", "backend_conn_id": "be_a"},
    {"id": "shop_b", "storefront_conn_id": "sf_b", "backend_conn_id": "be_b", "schedule": "*/15 * * * *",
     "alerts": {"export_late_after_minutes": 0}},
]})


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)


def _quarantine(ledger: Ledger, store: str, order_id: str, version: str, rules: list[str], at: datetime,
                released: datetime | None = None) -> None:
    reasons = json.dumps([{"rule": r, "detail": f"{r} failed"} for r in rules])
    with ledger.engine.begin() as conn:
        conn.execute(insert(order_quarantine), {"store_id": store, "order_id": order_id, "order_version": version,
                                                "reasons": reasons, "quarantined_at": at, "released_at": released})


def _status_line(ledger: Ledger, store: str, file: str, line: int, outcome: str, at: datetime) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(insert(status_events), {"store_id": store, "source_file": file, "line_number": line,
                                             "order_id": str(100 + line), "event": "shipped", "outcome": outcome,
                                             "applied_at": at})


def _seed(ledger: Ledger) -> None:
    t = NOW - timedelta(hours=5)
    _quarantine(ledger, "shop_a", "1001", "v1", ["email_valid"], t)
    _quarantine(ledger, "shop_a", "1001", "v2", ["email_valid", "total_adds_up"], t + timedelta(hours=1))
    _quarantine(ledger, "shop_a", "1002", "v1", ["sku_present"], t + timedelta(hours=2))
    _quarantine(ledger, "shop_a", "1003", "v1", ["sku_present"], t, released=t + timedelta(hours=1))
    _quarantine(ledger, "shop_b", "2001", "v1", ["currency_known"], t)
    for i in range(3):
        _status_line(ledger, "shop_a", "status_1.csv", i + 1, "applied", NOW - timedelta(hours=2))
    _status_line(ledger, "shop_a", "status_2.csv", 1, "applied", NOW - timedelta(hours=1))
    _status_line(ledger, "shop_a", "status_2.csv", 2, "refused: order 102 is cancelled", NOW - timedelta(hours=1))
    _status_line(ledger, "shop_a", "status_2.csv", 3, "error: invalid line: bad event 'sent'", NOW - timedelta(hours=1))
    _status_line(ledger, "shop_a", "status_2.csv", 4, "skipped_duplicate", NOW - timedelta(hours=1))
    _status_line(ledger, "shop_a", "status_old.csv", 1, "refused: too old to show", NOW - timedelta(days=8))
    ledger.stock_levels.record("shop_a", "stock_1.csv", [
        {"sku": f"SKU-{i}", "quantity": i, "as_of": NOW - timedelta(hours=3)} for i in range(4)])
    ledger.stock_levels.record("shop_a", "stock_2.csv", [{"sku": "SKU-0", "quantity": 9, "as_of": NOW}])


def test_the_ledger_facts_are_what_the_ledger_holds_per_store(ledger):
    _seed(ledger)
    facts = health.read_ledger(ledger.engine, ["shop_a", "shop_b", "shop_c"], NOW)
    a = facts["shop_a"]
    assert a.quarantine_open == 2  # orders, not versions; 1003 was released
    [first, second] = a.quarantine
    assert (first.order_id, first.rules, first.since, first.versions) == (
        "1001", ("email_valid", "total_adds_up"), NOW - timedelta(hours=5), 2)  # newest rules, oldest time
    assert (second.order_id, second.rules) == ("1002", ("sku_present",))
    files = {f.name: f for f in a.status_files}
    assert set(files) == {"status_1.csv", "status_2.csv"}  # status_old.csv is older than SYNC_DAYS
    assert (dict(files["status_1.csv"].lines), files["status_1.csv"].in_error) == ({"applied": 3}, False)
    bad = files["status_2.csv"]
    assert dict(bad.lines) == {"applied": 1, "refused": 1, "error": 1, "skipped_duplicate": 1}
    assert bad.in_error and bad.reasons == ("error: invalid line: bad event 'sent'",
                                            "refused: order 102 is cancelled")
    assert [(f.name, f.levels) for f in a.stock_files] == [("stock_2.csv", 1), ("stock_1.csv", 3)]
    assert a.stock_levels == 4
    assert (facts["shop_b"].quarantine_open, facts["shop_b"].status_files) == (1, ())
    assert facts["shop_c"] == health.LedgerFacts()


def test_the_open_quarantine_list_is_capped_but_its_count_is_whole(ledger):
    for i in range(7):
        _quarantine(ledger, "shop_a", str(500 + i), "v1", ["r"], NOW - timedelta(minutes=i))
    facts = health.read_ledger(ledger.engine, ["shop_a"], NOW, shown=3)["shop_a"]
    assert facts.quarantine_open == 7
    assert [o.order_id for o in facts.quarantine] == ["506", "505", "504"]  # the oldest first


def _plans(engine, queries) -> dict[str, str]:
    plans = {}
    with engine.connect() as conn:
        for name, query in queries.items():
            sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
            plans[name] = " | ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    return plans


def test_every_ledger_query_of_the_view_searches_an_index(ledger):
    _seed(ledger)
    plans = _plans(ledger.engine, health.ledger_queries(["shop_a", "shop_b"], NOW - timedelta(days=7)))
    assert "SEARCH order_quarantine USING INDEX ix_order_quarantine_open" in plans["open_counts"]
    assert "SEARCH order_quarantine USING INDEX ix_order_quarantine_open" in plans["open_entries"]
    assert "ix_status_events_applied (store_id=? AND applied_at>?)" in plans["status_lines"]
    assert "ix_stock_levels_applied (store_id=? AND applied_at>?)" in plans["stock_files"]
    assert "ix_stock_levels_applied" in plans["stock_levels"]
    assert not any(re.search(r"\bSCAN (order_quarantine|status_events|stock_levels)\b", p) for p in plans.values())


def test_a_version_4_ledger_gains_the_indexes_and_keeps_its_rows(tmp_path):
    """A ledger at the previous version (every table, none of the view's indexes) is refused until
    migrated; migrating creates the three indexes only and records version 5."""
    engine = sqlite_engine(tmp_path / "v4.db")
    metadata.create_all(engine)
    with engine.begin() as conn:
        for name in ("ix_order_quarantine_open", "ix_status_events_applied", "ix_stock_levels_applied"):
            conn.execute(text(f"DROP INDEX {name}"))
        conn.execute(ledger_schema.insert(), {"version": 4, "migrated_at": NOW})
        conn.execute(insert(order_quarantine), {"store_id": "shop_a", "order_id": "1", "order_version": "v1",
                                                "reasons": "[]", "quarantined_at": NOW})
    assert schema_version(engine) == 4
    with pytest.raises(LedgerSchemaError, match=rf"is at version 4, needs {SCHEMA_VERSION}"):
        Ledger(engine)
    done = migrate(engine)
    assert (done.before, done.after, done.created_tables, done.added_columns, done.created_indexes) == (
        4, 5, (), (), ("ix_order_quarantine_open", "ix_status_events_applied", "ix_stock_levels_applied"))
    assert "created indexes ix_order_quarantine_open" in done.describe("here")
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("order_quarantine")}
    assert indexes["ix_order_quarantine_open"] == ["store_id", "quarantined_at"]
    assert health.read_ledger(engine, ["shop_a"], NOW)["shop_a"].quarantine_open == 1
    again = migrate(engine)
    assert (again.before, again.created_indexes) == (5, ())


def _run(dag: str, start: datetime | None, state: str = "success", *, run_after: datetime | None = None,
         summary: dict | None = None, run_id: str | None = None, minutes: int = 60) -> health.RunRecord:
    end = start + timedelta(minutes=minutes) if start else None
    return health.RunRecord(dag, run_id or f"scheduled__{start.isoformat() if start else 'x'}", "scheduled", state,
                            run_after or end or NOW, start, end, {"publish": summary} if summary else {})


def test_freshness_counts_the_windows_closed_since_the_last_one_done():
    store = CONFIG.store("shop_a")  # hourly, late after 60 minutes
    runs = [_run("order_export__shop_a", datetime(2026, 12, 5, h, tzinfo=UTC)) for h in (8, 9, 10)]
    runs.append(_run("order_export__shop_a", datetime(2026, 12, 5, 11, tzinfo=UTC), "failed"))
    at_1130 = health.freshness(store, runs, datetime(2026, 12, 5, 11, 30, tzinfo=UTC))
    assert (at_1130.last_window[1], at_1130.missing, at_1130.late) == (datetime(2026, 12, 5, 11, tzinfo=UTC), 0, False)
    at_1230 = health.freshness(store, runs, datetime(2026, 12, 5, 12, 30, tzinfo=UTC))
    assert (at_1230.missing, at_1230.late) == (1, False)  # [11, 12) closed 30 min ago: not late yet
    at_1320 = health.freshness(store, runs, NOW)
    assert (at_1320.missing, at_1320.late, at_1320.behind) == (2, True, timedelta(hours=2))
    assert health.freshness(store, [], NOW).last_window is None
    quarter = health.freshness(CONFIG.store("shop_b"), [
        _run("order_export__shop_b", datetime(2026, 12, 5, 12, 45, tzinfo=UTC), minutes=15)], NOW)
    assert (quarter.missing, quarter.late, quarter.late_after) == (1, False, timedelta(minutes=60))  # 0: default


def test_the_chart_has_the_last_48_windows_each_from_its_latest_run():
    start = datetime(2026, 12, 3, 0, tzinfo=UTC)
    counts = {"delivered": 3, "quarantined": 1, "not_ready": 2, "already_delivered": 4}
    runs = [_run("order_export__shop_a", start + timedelta(hours=h), summary=counts) for h in range(50)]
    cleared = start + timedelta(hours=49)
    runs.append(_run("order_export__shop_a", cleared, "failed", run_after=NOW, run_id="manual__again"))
    bars = health.window_bars(runs)
    assert len(bars) == 48 and bars[0].start == start + timedelta(hours=2)
    assert bars[0].counts == counts and not bars[0].failed
    assert (bars[-1].run.run_id, bars[-1].failed, bars[-1].counts) == ("manual__again", True, None)


def test_a_release_names_the_ids_not_in_quarantine_and_triggers_nothing(ledger):
    _seed(ledger)
    plan = health.plan_release(ledger.engine, "shop_a", ["1001", "1003", "2001"])
    assert plan.order_ids == ()
    assert plan.refusal == "Orders 1003, 2001 are not in quarantine for store shop_a. Nothing was released."
    one = health.plan_release(ledger.engine, "shop_a", ["9"])
    assert one.refusal == "Order 9 is not in quarantine for store shop_a. Nothing was released."
    assert health.plan_release(ledger.engine, "shop_a", []).refusal.startswith("Select at least one")
    assert health.plan_release(ledger.engine, "shop_a", ["12a"]).refusal == (
        "Not an order id: 12a. Nothing was released.")
    ok = health.plan_release(ledger.engine, "shop_a", ["1002", "1001, 1002"])
    assert (ok.refusal, ok.order_ids, ok.conf) == (None, (1002, 1001), {"order_ids": [1002, 1001]})
    with ledger.engine.begin() as conn:  # delivered since the page was shown: released
        conn.execute(update(order_quarantine).where(order_quarantine.c.order_id == "1002").values(released_at=NOW))
    assert "Order 1002 is not in quarantine" in health.plan_release(ledger.engine, "shop_a", ["1002"]).refusal


def _page(view: health.HealthView, notice: health.Notice | None = None) -> str:
    return health.render_page(view, health.Links(app="/order-integration-health"), notice)


def test_the_page_shows_the_numbers_and_no_runs_yet(ledger):
    _seed(ledger)
    counts = {"delivered": 5, "quarantined": 1, "not_ready": 2, "already_delivered": 0}
    runs = [_run("order_export__shop_a", datetime(2026, 12, 5, 11, tzinfo=UTC), summary=counts),
            _run("order_export__shop_a", datetime(2026, 12, 5, 12, tzinfo=UTC), "failed")]
    facts = health.read_ledger(ledger.engine, ["shop_a", "shop_b"], NOW)
    page = _page(health.build_view(CONFIG, runs, facts, NOW))
    a = page[page.index('id="store-shop_a"'):page.index('id="store-shop_b"')]
    assert 'data-late="false"' in a and 'data-last-window-end="2026-12-05T12:00:00Z"' in a
    assert 'data-delivered="5" data-quarantined="1" data-not-ready="2" data-already-delivered="0"' in a
    assert a.count('data-test="window"') == 2 and a.count('data-test="failed"') == 1
    assert 'data-test="quarantine" data-open="2"' in a and 'data-order-id="1001"' in a
    assert "email_valid, total_adds_up" in a
    assert 'action="/order-integration-health/stores/shop_a/release"' in a
    assert 'data-files-applied="1" data-files-in-error="1"' in a
    assert "refused: order 102 is cancelled" in a
    assert '/dags/order_export__shop_a/runs/scheduled__2026-12-05T12%3A00%3A00%2B00%3A00' in a
    b = page[page.index('id="store-shop_b"'):]
    assert '<span data-test="no-runs">no runs yet</span>' in b and 'data-open="1"' in b


def test_a_broken_ledger_is_a_panel_and_the_text_is_escaped():
    rule = "<script>alert(1)</script>"
    facts = {"shop_a": health.LedgerFacts(1, (health.QuarantinedOrder("7", (rule,), NOW),))}
    page = _page(health.build_view(CONFIG, [], facts, NOW, store_ids=["shop_a"]))
    assert rule not in page and "&lt;script&gt;" in page and 'id="store-shop_b"' not in page
    broken = _page(health.build_view(CONFIG, [], None, NOW, ledger_error="OperationalError: unable to open file"),
                   health.Notice("refused", "Order 9 is not in quarantine for store shop_a. Nothing was released.",
                                 "shop_a"))
    assert ('<div id="ledger-error" class="panel error" data-test="ledger-error" role="alert"><strong>The ledger '
            "could not be read.</strong> OperationalError: unable to open file</div>") in broken
    assert broken.count('data-test="quarantine-unavailable"') == 2 and "Traceback" not in broken
    assert 'data-outcome="refused"' in broken and "Order 9 is not in quarantine" in broken


def test_the_headers_read_as_sentences(ledger):
    """One window is "Last window", not "Last 1 windows"; the files in the backend's error folder are
    "in the error/ folder", not "in error/;"."""
    _seed(ledger)
    facts = health.read_ledger(ledger.engine, ["shop_a"], NOW)
    one = [_run("order_export__shop_a", datetime(2026, 12, 5, 11, tzinfo=UTC), summary={"delivered": 1})]
    page = _page(health.build_view(CONFIG, one, facts, NOW, store_ids=["shop_a"]))
    assert "<h3>Last window</h3>" in page and "Last 1 windows" not in page
    assert "1 file applied, 1 in the error/ folder; no runs yet." in page
    assert "0 files, 0 in the error/ folder; no runs yet" in page and "in error/;" not in page
    two = one + [_run("order_export__shop_a", datetime(2026, 12, 5, 12, tzinfo=UTC))]
    assert "<h3>Last 2 windows</h3>" in _page(health.build_view(CONFIG, two, facts, NOW, store_ids=["shop_a"]))
