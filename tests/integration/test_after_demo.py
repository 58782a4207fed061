"""After `make demo`, the operator's next steps on the same Airflow home (issue 12).

The demo's window exports (its own ``sandbox.demo.export_window``, ``airflow dags test`` as
``make demo`` runs it) must leave every logical date the schedule
and backfills need: Airflow keys runs by logical date, and a run started by hand that took the
next window's date blocked ``order_export__<store>`` for good ("run already exists; skipping
dagrun creation"). Then a real deployment (api-server, scheduler, dag-processor, triggerer on
loopback) with the schedule on:

* ``airflow backfill create --dry-run`` over the demo's hours lists every window;
* unpausing the export DAG creates the next scheduled window's run, and it succeeds;
* the on-demand form through the REST API: ids one per line are taken, a non-id is refused
  before a run exists (HTTP 400), a reversed window fails ``check_request`` with one sentence
  in the run note and the log, and no traceback;
* the demo's payments and refunds (issue 16), with the demo's own functions: the ERP's two
  polls, the status sync through ``airflow dags test``, the lines the demo prints about the
  storefront and about the next export, each checked against the storefront, the files and the
  ledger.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace

import pendulum
import pytest

from order_integration.config import load_config
from order_integration.pools import pools_for
from sandbox.demo import (
    DEMO_MONEY,
    awaiting_bank_transfer,
    echo_lines,
    erp_polls,
    export_window,
    run_sync,
    storefront_money_lines,
)
from sandbox.erp_simulator import ErpSimulator
from sandbox.generator import generate_orders
from tests.support.airflow_run import ROOT, migrate_airflow_db, sandbox_stores
from tests.support.airflow_services import LEAN_SETTINGS, LOCAL_COMPONENTS, AirflowServices, ServicesError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

RUN_TIMEOUT = 420.0


@pytest.fixture(scope="module")
def after_demo(tmp_path_factory, sshd):
    home = tmp_path_factory.mktemp("after_demo_home")
    migrate_airflow_db(home)
    now = pendulum.now("UTC")
    hour = now.start_of("hour")
    # Orders over the last three hours, as the demo seeds them (none modified in the future).
    orders = generate_orders(45, start=hour.subtract(hours=3), end=now.subtract(seconds=30), seed=12)
    # As the demo seeds them, on-hold orders are bank transfers awaiting their payment; two more
    # in the windows exported below, so the ERP surely has payments to book.
    exported = [o for o in orders if pendulum.parse(o["date_modified_gmt"], tz="UTC") < hour.subtract(hours=1)]
    for order in [o for o in orders if o["status"] == "on-hold"] + [
            o for o in exported if o["status"] == "processing"][:2]:
        awaiting_bank_transfer(order)
    with sandbox_stores(home, sshd, tmp_path_factory.mktemp("after_demo_stores")) as make:
        harness, _shop = make(orders)
        env = harness.env()
        log_dir = tmp_path_factory.mktemp("after_demo_logs")
        # An older demo (before 2026-12-04) left a run at the logical date of the window the
        # schedule runs next; the demo's reset clears such runs with the rest of its state.
        stale = harness.run(hour.subtract(hours=1).isoformat())
        assert stale.returncode == 0, stale.output[-3000:]
        reset = subprocess.run([sys.executable, "-c", "import sys; from sandbox.demo import forget_earlier_runs; "
                                f"forget_earlier_runs({harness.store_id!r})"],
                               env=env, capture_output=True, text=True, timeout=300, check=False)
        assert reset.returncode == 0, reset.stderr[-3000:]
        # What make demo runs for its windows (here the two before the last complete one).
        demo_lines = [export_window(env, harness.store_id, hour.subtract(hours=h), hour.subtract(hours=h - 1),
                                    log_dir) for h in (3, 2)]

        service_env = {k: v for k, v in env.items() if os.environ.get(k) != v}
        service_env.update(LEAN_SETTINGS)  # the schedule stays on: that is what is tested
        dag_ids = [harness.dag_id, f"order_export_on_demand__{harness.store_id}"]
        with AirflowServices(home, service_env, LOCAL_COMPONENTS, dag_ids=dag_ids) as services:
            services.api.ensure_pools(pools_for(load_config(harness.config_path).stores))
            yield {"harness": harness, "orders": orders, "services": services, "hour": hour,
                   "demo_lines": demo_lines, "shop": _shop, "env": env, "log_dir": log_dir}


def _iso(dt: pendulum.DateTime) -> str:
    return dt.to_iso8601_string()


def test_the_demo_exported_its_windows(after_demo):
    lines = after_demo["demo_lines"]
    assert all(line.startswith(f"order export {after_demo['harness'].store_id} [") for line in lines), lines
    assert after_demo["harness"].inbound_files(), "the demo's windows delivered files"


def test_a_backfill_over_the_demos_hours_lists_every_window(after_demo):
    services, hour = after_demo["services"], after_demo["hour"]
    dag_id = after_demo["harness"].dag_id
    # --from-date/--to-date are logical dates (window starts), both included
    dry = services.backfill(dag_id, _iso(hour.subtract(hours=3)), _iso(hour.subtract(hours=1)), dry_run=True)
    listed = re.findall(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d", dry["output"])
    starts = sorted({pendulum.parse(s.replace(" ", "T"), tz="UTC").to_iso8601_string() for s in listed})
    assert starts == [_iso(hour.subtract(hours=h)) for h in (3, 2, 1)], dry["output"]


def test_the_scheduler_runs_the_next_window_after_the_demo(after_demo):
    services, harness, hour = after_demo["services"], after_demo["harness"], after_demo["hour"]
    api = services.api
    api.unpause(harness.dag_id)
    deadline = time.monotonic() + 240
    scheduled: list[dict] = []
    while not scheduled:
        scheduled = api.runs(harness.dag_id, run_type="scheduled")
        if time.monotonic() > deadline:
            raise ServicesError("no scheduled run was created after unpausing\n"
                                + services.diagnostics(["scheduler"]))
        time.sleep(2)
    run = scheduled[0]
    # catchup is off: the latest window that has ended, the one after the demo's last
    assert pendulum.parse(run["data_interval_start"]) >= hour.subtract(hours=1), run
    assert api.wait_for_run(harness.dag_id, run["dag_run_id"], timeout=RUN_TIMEOUT) == "success"
    summary = api.xcom(harness.dag_id, run["dag_run_id"], "publish")
    assert summary is not None and summary["extracted"] >= summary["delivered"], summary
    assert api.run(harness.dag_id, run["dag_run_id"])["note"] == summary["note"]


def test_the_form_takes_ids_one_per_line_and_refuses_bad_input_with_one_sentence(after_demo):
    services, harness = after_demo["services"], after_demo["harness"]
    api = services.api
    dag_id = f"order_export_on_demand__{harness.store_id}"
    api.unpause(dag_id)

    # Refused by the form's schema: no run is created (the UI shows the message).
    with pytest.raises(ServicesError, match=r"-> 400: .*order_ids"):
        api.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {"order_ids": ["12a"]}})

    # Ids as the form sends them: one per line, strings, a blank line.
    ids = [str(o["id"]) for o in after_demo["orders"][:2]]
    by_lines = api.trigger(dag_id, conf={"order_ids": [ids[0], "", ids[1]]})
    assert api.wait_for_run(dag_id, by_lines, timeout=RUN_TIMEOUT) == "success"

    # What the schema cannot say (a reversed window) fails check_request with one sentence.
    reversed_window = api.trigger(dag_id, conf={"start": "2026-11-02T11:00:00Z", "end": "2026-11-02T10:00:00Z"})
    assert api.wait_for_run(dag_id, reversed_window, timeout=RUN_TIMEOUT, fail_fast=False) == "failed"
    note = api.run(dag_id, reversed_window)["note"]
    assert note.startswith("FAILED (") and "check_request: refused: the window is empty or reversed" in note, note
    [check] = [ti for ti in api.task_instances(dag_id, reversed_window) if ti["task_id"] == "check_request"]
    log = api.task_log(dag_id, reversed_window, "check_request", check["try_number"])
    assert "request refused: the window is empty or reversed" in log, log[-2000:]
    assert "Traceback" not in log and "File \"" not in log, log[-3000:]


def test_the_trigger_form_in_a_browser(after_demo):
    """Airflow's own UI in Debian's chromium (Playwright): the ids box is a text box taking one
    id per line, nothing is marked required, and a non-id is refused in the form with no run
    made. Screenshots: ``.artifacts/ui/``."""
    from playwright.sync_api import sync_playwright

    services, harness = after_demo["services"], after_demo["harness"]
    dag_id = f"order_export_on_demand__{harness.store_id}"
    api = services.api
    api.unpause(dag_id)
    ids = [str(o["id"]) for o in after_demo["orders"][2:5]]
    shots = ROOT / ".artifacts" / "ui"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(f"{services.base_url}/")
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(api.password())
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
            page.wait_for_load_state("networkidle")

            def open_form():
                page.goto(f"{services.base_url}/dags/{dag_id}", wait_until="networkidle")
                page.get_by_role("button", name="Trigger").first.click()
                dialog = page.get_by_role("dialog")
                for section in ("How", "What to export: a window or order ids"):
                    dialog.get_by_text(section, exact=True).click()
                    page.wait_for_timeout(300)
                    # Chakra's field marks a required field with a "*" part; none of ours is.
                    assert dialog.locator('[data-part="required-indicator"]').count() == 0, section
                return dialog

            dialog = open_form()
            box = dialog.locator("#element_order_ids")
            assert box.evaluate("e => e.tagName") == "TEXTAREA", "order ids must be a text box, not a JSON editor"
            box.fill("\n".join(ids[:2]) + f"\n\n{ids[2]}\n")
            page.screenshot(path=str(shots / "trigger_form_ids_one_per_line.png"), full_page=True)
            with page.expect_response(lambda r: r.url.endswith("/dagRuns") and r.request.method == "POST") as sent:
                dialog.get_by_role("button", name="Trigger").click()
            assert sent.value.status == 200, sent.value.text()[:500]
            run = sent.value.json()
            assert [i for i in run["conf"]["order_ids"] if i.strip()] == ids, run["conf"]

            runs_before = len(api.runs(dag_id))
            dialog = open_form()
            dialog.locator("#element_order_ids").fill(f"{ids[0]}\n12a\n")
            with page.expect_response(lambda r: r.url.endswith("/dagRuns") and r.request.method == "POST") as sent:
                dialog.get_by_role("button", name="Trigger").click()
            assert sent.value.status == 400
            page.get_by_text("Invalid input for param order_ids").wait_for(timeout=10_000)
            assert "'12a'" in dialog.inner_text()
            page.screenshot(path=str(shots / "trigger_form_refuses_a_non_id.png"), full_page=True)
            assert len(api.runs(dag_id)) == runs_before, "a refused form makes no run"
        finally:
            browser.close()
    assert api.wait_for_run(dag_id, run["dag_run_id"], timeout=RUN_TIMEOUT) == "success"
    summary = api.xcom(dag_id, run["dag_run_id"], "publish")
    assert summary["extracted"] == 3 and summary["unknown_ids"] == [], summary


def test_the_demos_payment_and_refund_lines_say_what_the_storefront_and_the_export_did(after_demo, monkeypatch):
    """What ``make demo`` prints about payments and refunds, made by its own functions here and
    held against the storefront, the new orders file and the ledger (not against the text only)."""
    harness, shop, env, log_dir = (after_demo[k] for k in ("harness", "shop", "env", "log_dir"))
    monkeypatch.setenv(f"AIRFLOW_CONN_{harness.backend_conn_id.upper()}", json.dumps(harness.sftp_connection))
    erp = ErpSimulator(harness.backend_conn_id, inbound_dir=harness.inbound_dir.name,
                       outbound_dir=harness.outbound_dir.name, processed_dir=f"erp_{harness.store_id}",
                       money=replace(DEMO_MONEY, refund_share=1.0))  # every shipped order: surely a refund
    story = erp_polls(erp)
    assert story.payments and story.refunds and story.awaiting == len(story.payments), story.lines
    sync = run_sync(env, f"order_status_sync__{harness.store_id}", log_dir)
    assert "files=2 " in sync and "files with errors=-" in sync, sync

    # the storefront: each payment and refund once, as the ERP wrote it, no money through a gateway
    for line in story.payments:
        order = shop.get_order(int(line.order_id))
        assert (order["transaction_id"], order["payment_method"]) == (line.reference, "bacs"), order
        assert order["status"] in ("processing", "completed") and order["date_paid_gmt"]
    for line in story.refunds:
        [refund] = shop.refunds(int(line.order_id))
        assert (refund["amount"], refund["refunded_payment"]) == (line.amount, False)
        assert {"key": "order_integration_reference", "value": line.reference} in [
            {"key": m["key"], "value": m["value"]} for m in refund["meta_data"]]
        if line.sku:
            assert [(li["sku"], -li["quantity"]) for li in refund["line_items"]] == [(line.sku, int(line.quantity))]
        else:
            assert shop.get_order(int(line.order_id))["status"] == "refunded"

    # the demo's lines name those very payments and refunds
    shown = storefront_money_lines(shop, story)
    paid = min(story.payments, key=lambda e: int(e.order_id))
    order = shop.get_order(int(paid.order_id))
    assert shown[0].startswith(f"order {paid.order_id} (Direct bank transfer): the ERP booked {paid.amount} ")
    assert f"now status {order['status']}, transaction_id {paid.reference}" in shown[0], shown
    whole, by_line = story.shown_refunds()
    for line in whole + by_line:
        [text] = [t for t in shown if t.startswith(f"order {line.order_id}: refund {line.amount} ")]
        assert f"credit note {line.reference}, through the gateway: no" in text, text
        assert ("whole order" in text) == (not line.sku)

    # the next export sends none of them again; the demo's lines say so, and how each went out before.
    # The window goes through `airflow dags test` as the demo's does, so the on-demand DAG is paused
    # first: the form test above unpaused it, and the live scheduler would otherwise queue the
    # test run's task instances too and race it ("Task Instance not found", CI stop 23).
    after_demo["services"].api.set_paused(f"order_export_on_demand__{harness.store_id}", True)
    before = set(harness.inbound_files())
    export_window(env, harness.store_id, after_demo["hour"], pendulum.now("UTC").start_of("second"), log_dir)
    new = sorted(set(harness.inbound_files()) - before)
    sent = {r["order_id"] for r in harness.delivered_rows(new)}
    assert not sent & {e.order_id for e in story.payments + story.refunds}, sent
    echo = echo_lines(harness.ledger(), harness.store_id, story, new, harness.sftp_root / f"erp_{harness.store_id}")
    assert echo[0].startswith(f"order {paid.order_id} (paid by the ERP): sent before as on-hold, 1 delivery(ies)")
    assert len(echo) == 1 + len(whole + by_line) and all("this export: not sent again" in t for t in echo), echo
