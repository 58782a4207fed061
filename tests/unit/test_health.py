"""The integration-health view's logic (``order_integration.health``) against a real SQLite ledger:
what the ledger holds comes back per store, the queries use the schema's indexes (versions 5 and 6),
the schedule arithmetic of freshness, the chart's windows, the deliveries by path (scheduled window,
real time by webhooks and by polling, on demand), the release check's sentences, the page."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, inspect, text, update

from order_integration import health
from order_integration.config import parse_config
from order_integration.exceptions import LedgerSchemaError
from order_integration.ledger import (
    SCHEMA_VERSION,
    InboxDelivery,
    Ledger,
    migrate,
    schema_version,
    sqlite_engine,
)
from order_integration.ledger.schema import (
    delivery_batches,
    delivery_claims,
    ledger_schema,
    metadata,
    order_deliveries,
    order_quarantine,
    status_events,
)

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
    assert facts["shop_c"] == health.LedgerFacts(paths=health.PathCounts(NOW - timedelta(hours=health.WINDOWS)))


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
        4, SCHEMA_VERSION, (), (), ("ix_order_quarantine_open", "ix_status_events_applied", "ix_stock_levels_applied"))
    assert "created indexes ix_order_quarantine_open" in done.describe("here")
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("order_quarantine")}
    assert indexes["ix_order_quarantine_open"] == ["store_id", "quarantined_at"]
    assert health.read_ledger(engine, ["shop_a"], NOW)["shop_a"].quarantine_open == 1
    again = migrate(engine)
    assert (again.before, again.created_indexes) == (SCHEMA_VERSION, ())


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
    two = [*one, _run("order_export__shop_a", datetime(2026, 12, 5, 12, tzinfo=UTC))]
    assert "<h3>Last 2 windows</h3>" in _page(health.build_view(CONFIG, two, facts, NOW, store_ids=["shop_a"]))


# -- deliveries by path --------------------------------------------------------------------------
PATHS_CONFIG = parse_config({"stores": [
    {"id": "rt", "storefront_conn_id": "sf", "backend_conn_id": "be", "mode": "realtime"},
    {"id": "rt_poll", "storefront_conn_id": "sf", "backend_conn_id": "be", "mode": "realtime",
     "realtime_source": "polling"},
    {"id": "batch", "storefront_conn_id": "sf", "backend_conn_id": "be"},
]})
SPAN = NOW.replace(minute=0) - timedelta(hours=health.WINDOWS)  # the last 48 hourly windows closed by 13:00


def _deliver(ledger: Ledger, store: str, run_id: str, order_ids: list[str], at: datetime | None) -> None:
    """One orders file of ``run_id``: its batch (``uploaded_at`` = ``at``; None: still pending), the
    claims of its versions and, once uploaded, their deliveries — as ``Deliveries.complete_batch`` leaves them."""
    batch_id = f"{store}-{run_id}"
    with ledger.engine.begin() as conn:
        conn.execute(insert(delivery_batches), {
            "batch_id": batch_id, "store_id": store, "run_id": run_id, "window_label": "w", "source_path": "s",
            "file_name": f"orders_{batch_id}.csv", "orders": len(order_ids), "created_at": at or NOW,
            "uploaded_at": at})
        conn.execute(insert(delivery_claims), [{"store_id": store, "order_id": o, "order_version": "v1",
                                                "batch_id": batch_id} for o in order_ids])
        if at is not None:
            conn.execute(insert(order_deliveries), [{"store_id": store, "order_id": o, "order_version": "v1",
                                                     "file_name": f"orders_{batch_id}.csv", "delivered_at": at}
                                                    for o in order_ids])


def _inbox(ledger: Ledger, store: str, order_id: str, topic: str, at: datetime, done_by: str | None = None) -> None:
    inbox = ledger.webhook_inbox
    inbox.record(InboxDelivery(store, order_id, topic, f"{topic}:{order_id}:{at.isoformat()}", "d"), received_at=at)
    if done_by:
        inbox.mark_done(store, [order_id], done_by, received_before=at)


def _seed_paths(ledger: Ledger) -> None:
    t = NOW - timedelta(hours=3)
    # rt (webhooks): the window caught 1001, 1002 (their webhooks dropped); a backfill 1010
    _deliver(ledger, "rt", "scheduled__2026-12-05T09:00:00+00:00", ["1001", "1002"], t)
    _deliver(ledger, "rt", "backfill__2026-12-05T08:00:00+00:00", ["1010"], t)
    # real-time runs: one marked its inbox rows (two deliveries of 1005: counted once) ...
    for order_id, topic in (("1003", "order.created"), ("1004", "order.created"), ("1005", "order.created"),
                            ("1005", "order.updated")):
        _inbox(ledger, "rt", order_id, topic, t, done_by="asset_triggered__rt_1")
    _deliver(ledger, "rt", "asset_triggered__rt_1", ["1003", "1004", "1005"], t + timedelta(seconds=9))
    # ... one did not get to (its row still waits): Airflow's dag_run places it
    _inbox(ledger, "rt", "1006", "order.created", t + timedelta(minutes=5))
    _deliver(ledger, "rt", "asset_triggered__rt_2", ["1006"], t + timedelta(minutes=6))
    _inbox(ledger, "rt", "1009", "order.updated", NOW - timedelta(minutes=1))  # waiting
    _deliver(ledger, "rt", "manual__release", ["1007"], t)  # an on-demand release (its RunRecord places it)
    _deliver(ledger, "rt", "manual__gone", ["1008"], t)  # a run Airflow no longer has
    _deliver(ledger, "rt", "scheduled__2026-12-01T09:00:00+00:00", ["900"], NOW - timedelta(days=4))  # before
    _deliver(ledger, "rt", "scheduled__2026-12-05T12:00:00+00:00", ["1011"], None)  # pending: not delivered
    # rt_poll: the poll's rows (topic poll) and a window catch
    for order_id in ("2001", "2002"):
        _inbox(ledger, "rt_poll", order_id, "poll", t, done_by="asset_triggered__p_1")
    _deliver(ledger, "rt_poll", "asset_triggered__p_1", ["2001", "2002"], t + timedelta(seconds=5))
    _deliver(ledger, "rt_poll", "scheduled__2026-12-05T10:00:00+00:00", ["2003"], t)
    # batch: the window, a manual run of the window's DAG, an on-demand run; webhooks recorded, never done
    _deliver(ledger, "batch", "scheduled__2026-12-05T10:00:00+00:00", ["3001", "3004"], t)
    _deliver(ledger, "batch", "manual__window", ["3003"], t)
    _deliver(ledger, "batch", "manual__ids", ["3002"], t)
    _inbox(ledger, "batch", "3001", "order.created", t)


def test_the_ledger_places_each_delivery_by_the_run_that_made_it(ledger):
    _seed_paths(ledger)
    facts = health.read_ledger(ledger.engine, ["rt", "rt_poll", "batch"], NOW, config=PATHS_CONFIG)
    rt = facts["rt"].paths
    assert rt.since == SPAN
    assert rt.counts == {"window": 3, "realtime_webhook": 3}  # 1001, 1002, 1010; 1003-1005 (1005 once)
    assert rt.runs == {"asset_triggered__rt_2": 1, "manual__release": 1, "manual__gone": 1}
    assert (rt.waiting, rt.waiting_since) == (2, NOW - timedelta(hours=3) + timedelta(minutes=5))  # 1006, 1009
    poll = facts["rt_poll"].paths
    assert (poll.counts, poll.runs, poll.waiting) == ({"window": 1, "realtime_poll": 2}, {}, 0)
    batch = facts["batch"].paths
    assert (batch.counts, batch.runs) == ({"window": 2}, {"manual__window": 1, "manual__ids": 1})
    assert batch.waiting == 0  # a batch store's inbox is not read: its rows are never done
    assert health.unplaced_runs(facts) == {"rt": {"asset_triggered__rt_2", "manual__release", "manual__gone"},
                                           "batch": {"manual__window", "manual__ids"}}
    plain = health.read_ledger(ledger.engine, ["rt"], NOW)["rt"].paths  # no config: the last 48 hours
    assert (plain.since, plain.counts["window"], plain.waiting) == (NOW - timedelta(hours=48), 3, 0)


def test_the_view_counts_every_path_and_what_the_safety_net_caught(ledger):
    _seed_paths(ledger)
    facts = health.read_ledger(ledger.engine, ["rt", "rt_poll", "batch"], NOW, config=PATHS_CONFIG)
    runs = [_run("order_export_on_demand__rt", None, run_id="manual__release")]
    run_dags = {("rt", "asset_triggered__rt_2"): "order_export_realtime__rt",
                ("batch", "manual__window"): "order_export__batch",
                ("batch", "manual__ids"): "order_export_on_demand__batch",
                ("rt_poll", "manual__ids"): "order_export__rt_poll"}  # another store's run of that id: not batch's
    view = health.build_view(PATHS_CONFIG, runs, facts, NOW, run_dags=run_dags)
    paths = {s.store.id: s.paths for s in view.stores}
    assert paths["rt"].counts == {"window": 3, "realtime_webhook": 4, "realtime_poll": 0, "on_demand": 1, "other": 1}
    assert (paths["rt"].total, paths["rt"].caught, paths["rt"].by_realtime, paths["rt"].realtime) == (9, 3, 4, True)
    assert paths["rt_poll"].counts == {"window": 1, "realtime_webhook": 0, "realtime_poll": 2, "on_demand": 0}
    assert paths["batch"].counts == {"window": 3, "realtime_webhook": 0, "realtime_poll": 0, "on_demand": 1}
    assert not paths["batch"].realtime

    page = _page(view)
    rt = page[page.index('id="store-rt"'):page.index('id="store-rt_poll"')]
    assert (f'<div id="paths-rt" data-test="delivery-paths" data-since="{SPAN.isoformat().replace("+00:00", "Z")}" '
            'data-total="9" data-window="3" data-realtime-webhook="4" data-realtime-poll="0" data-on-demand="1" '
            'data-other="1">') in rt
    assert '<tr data-test="path" data-path="window" data-count="3">' in rt
    assert '<tr data-test="path" data-path="other" data-count="1"><td>a run Airflow no longer has</td>' in rt
    assert 'href="/dags/order_export_realtime__rt"' in rt and "9 order versions delivered since" in rt
    assert ('<p id="safety-net-rt" data-test="safety-net" data-caught="3" data-realtime="4" data-waiting="2">'
            "The safety-net window caught 3 order versions the real-time path missed (webhooks dropped or late): "
            "33 % of all delivered; real time delivered 4. 2 orders waiting in the webhook inbox, the oldest since "
            "2026-12-05 10:25 UTC.</p>") in rt
    poll = page[page.index('id="store-rt_poll"'):page.index('id="store-batch"')]
    assert "caught 1 order version the real-time path missed (the storefront poll missed them or was late)" in poll
    assert "Nothing waiting in the webhook inbox (filled by the storefront poll)." in poll
    assert 'data-path="other"' not in poll
    batch = page[page.index('id="store-batch"'):]
    assert 'data-total="4" data-window="3"' in batch and 'data-test="safety-net"' not in batch
    assert "Batch mode" in batch


def test_without_the_ledger_the_paths_are_unavailable():
    page = _page(health.build_view(PATHS_CONFIG, [], None, NOW, ledger_error="down"))
    assert page.count('data-test="delivery-paths-unavailable"') == 3 and 'data-test="delivery-paths"' not in page


def test_the_paths_query_searches_its_indexes(ledger):
    _seed_paths(ledger)
    queries = health.ledger_queries(["rt", "batch"], NOW - timedelta(days=7), realtime=["rt"],
                                    paths_since={"rt": SPAN, "batch": SPAN - timedelta(hours=1)})
    plans = _plans(ledger.engine, queries)
    batches = "SEARCH delivery_batches USING INDEX ix_delivery_batches_uploaded (store_id=? AND uploaded_at>?)"
    assert plans["delivery_paths"].count(batches) == 2  # one per distinct span start
    assert "SEARCH delivery_claims USING INDEX ix_delivery_claims_batch_id (batch_id=?)" in plans["delivery_paths"]
    assert plans["delivery_paths"].count("USING INDEX ix_webhook_inbox_order (store_id=? AND order_id=?)") == 1
    assert "SEARCH webhook_inbox USING INDEX ix_webhook_inbox_waiting (store_id=? AND done_at=?)" in plans[
        "inbox_waiting"]
    assert not any(re.search(r"\bSCAN (delivery_batches|delivery_claims|webhook_inbox)\b", p) for p in plans.values())


def test_a_version_5_ledger_gains_the_batches_index(tmp_path):
    """Version 6 adds one index, ``ix_delivery_batches_uploaded``: a version-5 ledger is refused until
    migrated; migrating creates that index only and keeps the rows."""
    engine = sqlite_engine(tmp_path / "v5.db")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_delivery_batches_uploaded"))
        conn.execute(ledger_schema.insert(), {"version": 5, "migrated_at": NOW})
    _deliver(_Unchecked(engine), "rt", "scheduled__1", ["1"], NOW)
    with pytest.raises(LedgerSchemaError, match=r"is at version 5, needs 6"):
        Ledger(engine)
    done = migrate(engine)
    assert (done.before, done.after, done.created_tables, done.added_columns, done.created_indexes) == (
        5, 6, (), (), ("ix_delivery_batches_uploaded",))
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("delivery_batches")}
    assert indexes["ix_delivery_batches_uploaded"] == ["store_id", "uploaded_at"]
    assert health.read_ledger(engine, ["rt"], NOW)["rt"].paths.counts == {"window": 1}
    assert migrate(engine).created_indexes == ()


class _Unchecked:
    """What ``_deliver`` needs of a ledger (its engine), for a ledger the package would refuse."""

    def __init__(self, engine) -> None:
        self.engine = engine
