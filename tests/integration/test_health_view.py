"""The integration-health view on the REAL api-server (issue 17, part 2): the package's plugin
mounted by ``airflow api-server``, Airflow's own login in front of it, the numbers the ledger and
Airflow's runs hold on the page, and a release from quarantine that triggers the on-demand run.

One api-server for the module (about a minute to start on 2 cores), the DAGs serialized by
``airflow dags reserialize``; no scheduler: the export runs the page shows are made through
Airflow's REST API (a run with a logical date, its ``publish`` summary as an XCom entry, its
state set), so the view reads them from Airflow's metadata database as it would a real run's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import insert

from order_integration.ledger import InboxDelivery, Ledger, sqlite_engine
from order_integration.ledger.schema import order_quarantine
from tests.support.airflow_run import ROOT, migrate_airflow_db
from tests.support.airflow_services import API_SERVER, AirflowServices

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PAGE = "/order-integration-health/"
STORES = """
stores:
  - id: hv
    platform: woocommerce
    storefront_conn_id: storefront_hv
    backend_conn_id: backend_hv
  - id: hv_new
    platform: woocommerce
    storefront_conn_id: storefront_hv
    backend_conn_id: backend_hv
"""
SUMMARY = {"store_id": "hv", "extracted": 12, "delivered": 7, "quarantined": 2, "already_delivered": 1,
           "not_ready": 2, "files": ["orders_hv_x.csv"], "report_paths": [], "note": "order export hv …"}


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    home = tmp_path_factory.mktemp("health_home")
    migrate_airflow_db(home)  # also the default ledger, $AIRFLOW_HOME/order_ledger.db, at this schema
    (home / "stores.yaml").write_text(STORES)
    ledger = Ledger(sqlite_engine(home / "order_ledger.db"))
    at = datetime.now(UTC) - timedelta(hours=3)
    with ledger.engine.begin() as conn:
        conn.execute(insert(order_quarantine), [
            {"store_id": "hv", "order_id": "501", "order_version": "v1", "quarantined_at": at, "released_at": None,
             "reasons": json.dumps([{"rule": "email_valid", "detail": "not an e-mail"}])},
            {"store_id": "hv", "order_id": "502", "order_version": "v1", "quarantined_at": at,
             "reasons": "[]", "released_at": at + timedelta(hours=1)}])
    ledger.status_events.record("hv", "status_20261205.csv", [
        {"line_number": 1, "order_id": "501", "event": "shipped", "outcome": "applied"},
        {"line_number": 2, "order_id": "9", "event": "shipped", "outcome": "refused: order 9 is unknown"}])
    env = {
        "ORDER_INTEGRATION_CONFIG": str(home / "stores.yaml"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW_CONN_STOREFRONT_HV": json.dumps({"conn_type": "http", "host": "https://shop.example.com"}),
    }
    env = {k: v for k, v in env.items() if os.environ.get(k) != v}
    with AirflowServices(home, env, (API_SERVER,)) as services:
        services.cli("dags", "reserialize")
        session = requests.Session()
        session.trust_env = False  # loopback: no proxy
        yield {"services": services, "api": services.api, "url": services.base_url + PAGE,
               "session": session, "home": home}


def _logged_in(view) -> requests.Session:
    """A browser's session: the JWT in the ``_token`` cookie, as the UI keeps it."""
    browser = requests.Session()
    browser.trust_env = False
    browser.cookies.set("_token", view["api"].token(), domain="127.0.0.1")
    return browser


def _export_run(view, logical_date: str, state: str, summary: dict | None) -> dict:
    """A run of order_export__hv as Airflow holds it after a real run: its window, state and summary."""
    api, dag = view["api"], "order_export__hv"
    run_id = api.trigger(dag, logical_date=logical_date, run_id=f"manual__{logical_date}")
    if summary is not None:
        api.request("POST", f"/dags/{dag}/dagRuns/{run_id}/taskInstances/publish/xcomEntries",
                    json={"key": "return_value", "value": summary}, ok=(201,))
    api.request("PATCH", f"/dags/{dag}/dagRuns/{run_id}", json={"state": state})
    return api.run(dag, run_id)


def _deliver(view, run_id: str, order_ids: list[str]) -> None:
    """What a run's load leaves in the ledger: its batch, claims and deliveries (Deliveries' own calls)."""
    deliveries = Ledger(sqlite_engine(view["home"] / "order_ledger.db")).deliveries
    batch, _ = deliveries.open_batch("hv", run_id, "w", "staged.jsonl", [(o, "v1") for o in order_ids])
    deliveries.set_batch_file(batch.batch_id, "staged.csv", f"orders_hv_{run_id}.csv", len(order_ids))
    deliveries.complete_batch(dataclasses.replace(batch, file_name=f"orders_hv_{run_id}.csv"))


def test_unauthenticated_requests_are_refused(view):
    anonymous = view["session"]
    assert anonymous.get(view["url"], timeout=60).status_code == 401
    assert anonymous.post(view["url"] + "stores/hv/release", data={"order_id": "501"}, timeout=60).status_code == 401
    forged = anonymous.get(view["url"], cookies={"_token": "not.a.jwt"}, timeout=60)
    assert forged.status_code in (401, 403)
    assert "data-order-id" not in forged.text
    assert view["api"].runs("order_export_on_demand__hv") == []


def test_the_page_shows_what_the_ledger_and_the_runs_hold(view):
    browser = _logged_in(view)
    today = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    done = _export_run(view, (today - timedelta(hours=5)).isoformat(), "success", SUMMARY)
    _export_run(view, (today - timedelta(hours=4)).isoformat(), "failed", None)
    # deliveries by path: the window run's (manual__…: placed by its DAG in Airflow), a real-time
    # run's (its inbox row names it), and a run Airflow does not have
    _deliver(view, done["dag_run_id"], ["601", "602"])
    inbox = Ledger(sqlite_engine(view["home"] / "order_ledger.db")).webhook_inbox
    inbox.record(InboxDelivery("hv", "604", "order.created", "d-604", "b"))
    inbox.mark_done("hv", ["604"], "asset_triggered__hv_1")
    _deliver(view, "asset_triggered__hv_1", ["604"])
    _deliver(view, "manual__not_in_airflow", ["603"])
    page = browser.get(view["url"], timeout=120)
    assert page.status_code == 200, page.text[:2000]
    hv = page.text[page.text.index('id="store-hv"'):page.text.index('id="store-hv_new"')]
    end = datetime.fromisoformat(done["data_interval_end"]).astimezone(UTC)
    assert f'data-last-window-end="{end.isoformat().replace("+00:00", "Z")}"' in hv
    assert 'data-late="true"' in hv  # the window after it failed, hours ago
    assert 'data-state="success" data-delivered="7" data-quarantined="2" data-not-ready="2" ' \
           'data-already-delivered="1"' in hv
    assert hv.count('data-test="window"') == 2 and hv.count('data-test="failed"') == 1
    assert 'data-test="quarantine" data-open="1"' in hv, hv
    assert '<tr data-test="quarantined-order" data-order-id="501">' in hv and "email_valid" in hv
    assert 'data-order-id="502"' not in hv  # released
    assert 'data-files-applied="0" data-files-in-error="1"' in hv and "refused: order 9 is unknown" in hv
    assert ('data-total="4" data-window="2" data-realtime-webhook="1" data-realtime-poll="0" data-on-demand="0" '
            'data-other="1"') in hv
    assert "<h3>Last 2 windows</h3>" in hv and "1 in the error/ folder" in hv
    new = page.text[page.text.index('id="store-hv_new"'):]
    assert '<span data-test="no-runs">no runs yet</span>' in new and 'data-open="0"' in new
    bearer = view["session"].get(view["url"], headers={"Authorization": f"Bearer {view['api'].token()}"},
                                 timeout=120)
    assert bearer.status_code == 200 and 'data-order-id="501"' in bearer.text


def test_a_release_of_an_order_not_in_quarantine_is_refused_with_a_sentence(view):
    browser = _logged_in(view)
    refused = browser.post(view["url"] + "stores/hv/release", data={"order_id": ["501", "502"]}, timeout=120)
    assert refused.status_code == 409
    [notice] = re.findall(r'<div id="release-result"[^>]*data-outcome="refused"[^>]*>([^<]*)</div>', refused.text)
    assert notice == "Order 502 is not in quarantine for store hv. Nothing was released."
    assert "Traceback" not in refused.text
    assert view["api"].runs("order_export_on_demand__hv") == []
    cross_site = browser.post(view["url"] + "stores/hv/release", data={"order_id": "501"},
                              headers={"Origin": "https://evil.example"}, timeout=60)
    assert cross_site.status_code == 403 and view["api"].runs("order_export_on_demand__hv") == []


def test_a_release_of_a_quarantined_order_triggers_the_on_demand_run_and_links_it(view):
    browser = _logged_in(view)
    answer = browser.post(view["url"] + "stores/hv/release", data={"order_id": "501"},
                          headers={"Origin": view["services"].base_url}, timeout=120)
    assert answer.status_code == 200 and answer.history[0].status_code == 303
    [run] = view["api"].runs("order_export_on_demand__hv")
    assert run["conf"] == {"order_ids": [501]} and run["run_type"] == "manual"
    assert run["triggering_user_name"] == "admin"
    link = f'/dags/order_export_on_demand__hv/runs/{requests.utils.quote(run["dag_run_id"], safe="")}'
    assert 'data-outcome="triggered"' in answer.text and f'href="{link}"' in answer.text
    assert "Release of order(s) 501 from quarantine: triggered run" in answer.text
    assert f'data-test="on-demand-runs"><li><a href="{link}"' in answer.text


def test_a_broken_ledger_is_an_error_panel_not_a_500(view):
    """The ledger file gone (a new, empty one is opened in its place): the page says so and still
    shows Airflow's part."""
    db = view["home"] / "order_ledger.db"
    aside = view["home"] / "aside"
    aside.mkdir(exist_ok=True)
    moved = [Path(shutil.move(p, aside / p.name)) for p in db.parent.glob("order_ledger.db*")]
    try:
        page = _logged_in(view).get(view["url"], timeout=120)
    finally:
        for p in db.parent.glob("order_ledger.db*"):
            p.unlink()
        for p in moved:
            shutil.move(p, db.parent / p.name)
    assert page.status_code == 200
    [panel] = re.findall(r'<div id="ledger-error"[^>]*>(.*?)</div>', page.text)
    assert "The ledger could not be read." in panel and "has no schema: run `python -m order_integration " \
                                                       "ledger migrate`" in panel
    assert 'data-test="chart"' in page.text  # Airflow's part is still there


def test_the_gx_report_link_serves_the_runs_report_from_staging(view):
    report = view["home"] / "order_staging" / "validation_report_hv.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("<html><body><h1>Validation report hv</h1></body></html>")
    day = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    run = _export_run(view, day.isoformat(), "success", {**SUMMARY, "report_paths": [f"file://{report}"]})
    browser = _logged_in(view)
    page = browser.get(view["url"], timeout=120).text
    link = f'/order-integration-health/report/order_export__hv/{requests.utils.quote(run["dag_run_id"], safe="")}'
    assert f'href="{link}"' in page and 'data-test="gx-report"' in page
    served = browser.get(view["services"].base_url + link, timeout=60)
    assert (served.status_code, served.text) == (200, report.read_text())
    none = browser.get(view["url"] + "report/order_export__hv/no-such-run", timeout=60)
    assert none.status_code == 404 and "has no validation report" in none.text
    assert view["session"].get(view["services"].base_url + link, timeout=60).status_code == 401

