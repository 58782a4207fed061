"""The integration-health view (docs/health.md) in a real browser on ``make up``'s stack (issue 17).

After the schedule's first export (the last complete hour, one order broken on purpose) and a
status sync of the ERP's answer: the view is in the UI's navigation; its numbers are the ones the
ledger holds (open quarantine, the window's deliveries, status lines by outcome) and the run's
summary; an operator fixes the broken order in the storefront, releases it from the view, sees
the run it triggered delivered it, and a release from a page gone stale is refused in one
sentence. Screenshots: ``.artifacts/ui/``.
"""

from __future__ import annotations

import copy
import time
from collections import Counter

import pendulum
import pytest
from playwright.sync_api import expect

from order_integration.ledger import Ledger, sqlite_engine
from sandbox.airflow_services import ServicesError
from sandbox.generator import recompute_totals
from tests.ui.conftest import RUN_TIMEOUT, iso_z

pytestmark = [pytest.mark.ui, pytest.mark.timeout(900)]

VIEW = "/order-integration-health/"


def _ledger(stack) -> Ledger:
    return Ledger(sqlite_engine(stack.airflow_home / "order_ledger.db"), create=False)


def _wait_for(what: str, found, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while not (value := found()):
        if time.monotonic() > deadline:
            raise ServicesError(f"{what}: not after {timeout:.0f}s")
        time.sleep(2)
    return value


@pytest.fixture(scope="module")
def synced(stack):
    """The schedule's first export done (the last complete hour), the ERP's answer to its file
    on the SFTP server, and one status sync run that applied it."""
    api, store = stack.services.api, stack.store
    export = f"order_export__{store.id}"
    [run] = _wait_for("the schedule's first export run", lambda: api.runs(export, run_type="scheduled"))
    assert api.wait_for_run(export, run["dag_run_id"], timeout=RUN_TIMEOUT) == "success"
    outbound = stack.state_dir / "sftp" / store.backend.outbound_dir
    _wait_for("the ERP's status file", lambda: list(outbound.glob("status_*.csv")))
    sync_dag = f"order_status_sync__{store.id}"
    sync = api.trigger(sync_dag)
    assert api.wait_for_run(sync_dag, sync, timeout=RUN_TIMEOUT) == "success"
    return {"export_run": api.run(export, run["dag_run_id"])}


def test_the_view_is_in_the_uis_navigation(stack, synced, page, shot):
    page.goto(f"{stack.url}/plugin/integration-health", wait_until="networkidle")
    frame = page.frame_locator("iframe")
    expect(frame.locator(f"#store-{stack.store.id}")).to_be_visible()
    expect(frame.locator(f"#freshness-{stack.store.id}")).to_be_visible()
    shot(page, "in_the_ui")


def test_the_view_shows_the_numbers_the_ledger_holds(stack, synced, page, shot):
    sid, ledger = stack.store.id, _ledger(stack)
    start, end = stack.seed_hour.subtract(hours=1), stack.seed_hour
    page.goto(f"{stack.url}{VIEW}", wait_until="networkidle")
    shot(page, "the_view")

    freshness = page.locator(f"#freshness-{sid}")
    assert freshness.get_attribute("data-last-window-end") == iso_z(end)
    assert freshness.get_attribute("data-late") == "false"

    # the scheduled window: its bar counts what the ledger delivered in that window's file
    bar = page.locator(f"#chart-{sid} [data-test=window][data-start='{iso_z(start)}']")
    expect(bar).to_have_count(1)
    stamp = f"orders_{sid}_{start.format('YYYYMMDD[T]HHmmss[Z]')}_{end.format('YYYYMMDD[T]HHmmss[Z]')}_"
    in_file = [d for d in ledger.deliveries.delivered(sid) if d["file_name"].startswith(stamp)]
    assert in_file and int(bar.get_attribute("data-delivered")) == len(in_file)
    assert bar.get_attribute("data-state") == "success"
    assert bar.get_attribute("data-quarantined") == "1", synced["export_run"]["note"]

    # open quarantine: the same orders as the ledger's, the broken one of that window among them
    open_ids = sorted(e["order_id"] for e in ledger.quarantine.entries(sid))
    quarantine = page.locator(f"#quarantine-{sid}")
    assert int(quarantine.get_attribute("data-open")) == len(open_ids)
    shown = page.locator(f"#quarantine-{sid} [data-test=quarantined-order]")
    assert sorted(shown.evaluate_all("rows => rows.map(r => r.dataset.orderId)")) == open_ids
    broken = [str(i) for i, kind in stack.broken.items() if kind == "total_mismatch"]
    assert set(broken) <= set(open_ids), (broken, open_ids)

    # status sync: the lines the ledger recorded, by outcome, and the files they came from
    with ledger.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT source_file, outcome FROM status_events WHERE store_id = ?",
                                    (sid,)).all()
    assert rows, "the status sync applied the ERP's file"
    by_kind = Counter(outcome.split(":", 1)[0] for _file, outcome in rows)
    outcomes = page.locator(f"#status-sync-{sid} [data-test=status-outcome]")
    shown_kinds = {o.get_attribute("data-outcome"): int(o.get_attribute("data-count")) for o in outcomes.all()}
    assert shown_kinds == dict(by_kind)
    sync = page.locator(f"#status-sync-{sid}")
    files = int(sync.get_attribute("data-files-applied")) + int(sync.get_attribute("data-files-in-error"))
    assert files == len({f for f, _o in rows})


def test_release_a_fixed_order_from_the_view_and_see_it_delivered(stack, synced, page, signed_in, shot):
    sid, ledger, api = stack.store.id, _ledger(stack), stack.services.api
    [order_id] = [i for i, kind in stack.broken.items() if kind == "total_mismatch"]
    # the operator fixes the order in the shop: its total adds up again
    fixed = recompute_totals(copy.deepcopy(stack.shop.get_order(order_id)))
    stack.shop.upsert_order(fixed)
    stack.shop.touch_order(order_id, pendulum.now("UTC"))

    stale = signed_in.new_page()  # a second tab on the view, left open while the release runs
    stale.goto(f"{stack.url}{VIEW}", wait_until="networkidle")
    page.goto(f"{stack.url}{VIEW}", wait_until="networkidle")
    page.locator(f"#release-{sid}-{order_id}").check()
    shot(page, "order_ticked")
    page.locator(f"#release-button-{sid}").click()
    result = page.locator("#release-result")
    expect(result).to_have_attribute("data-outcome", "triggered")
    run_id = page.locator("#release-run").inner_text().strip()
    shot(page, "release_triggered")
    dag_id = f"order_export_on_demand__{sid}"
    run = api.run(dag_id, run_id)
    assert [str(i) for i in run["conf"]["order_ids"]] == [str(order_id)], run["conf"]
    assert api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT) == "success"
    summary = api.xcom(dag_id, run_id, "publish")
    assert (summary["extracted"], summary["delivered"], summary["quarantined"]) == (1, 1, 0), summary

    # delivered: in the ledger and in a file on the SFTP server; out of the view's quarantine
    [delivery] = [d for d in ledger.deliveries.delivered(sid) if d["order_id"] == str(order_id)]
    sent = stack.state_dir / "sftp" / stack.store.backend.inbound_dir / delivery["file_name"]
    erp_read = stack.state_dir / "sftp" / "erp_processed" / delivery["file_name"]
    text = (sent if sent.exists() else erp_read).read_text(encoding="utf-8")
    assert f"{sid},{order_id}," in text
    assert str(order_id) not in {e["order_id"] for e in ledger.quarantine.entries(sid)}
    page.goto(f"{stack.url}{VIEW}", wait_until="networkidle")
    expect(page.locator(f"[data-test=quarantined-order][data-order-id='{order_id}']")).to_have_count(0)
    shot(page, "released_and_delivered")

    # the stale tab still offers it: the release is refused in one sentence, nothing triggered
    runs_before = len(api.runs(dag_id))
    stale.locator(f"#release-{sid}-{order_id}").check()
    stale.locator(f"#release-button-{sid}").click()
    refused = stale.locator("#release-result")
    expect(refused).to_have_attribute("data-outcome", "refused")
    expect(refused).to_contain_text(f"Order {order_id} is not in quarantine for store {sid}. Nothing was released.")
    shot(stale, "stale_release_refused")
    stale.close()
    assert len(api.runs(dag_id)) == runs_before
