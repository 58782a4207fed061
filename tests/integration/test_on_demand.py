"""The on-demand DAG run for real (`airflow dags test ... --conf`): order ids, quarantine
release, resend, dry run and a refused form, against the sandbox storefront and OpenSSH."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pendulum
import pytest

from sandbox.generator import generate_orders, make_invalid

pytestmark = pytest.mark.integration

DAY = pendulum.datetime(2026, 11, 2, tz="UTC")
EXPORTABLE = {"processing", "on-hold"}


def _window_orders(seed):
    orders = generate_orders(60, start=DAY.add(hours=10), end=DAY.add(hours=11), seed=seed)
    return orders, [o for o in orders if o["status"] in EXPORTABLE]


def _quarantine_cli(harness, *args):
    """``python -m order_integration quarantine …`` as an operator runs it (ledger via its URL)."""
    ledger_url = f"sqlite:///{harness.airflow_home / 'order_ledger.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "order_integration", "quarantine", *args, "--store", harness.store_id,
         "--ledger-url", ledger_url],
        env=harness.env(), capture_output=True, text=True, check=False, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_fixed_orders_are_released_by_id_and_unknown_ids_reported(export_harness, platform):
    orders, exportable = _window_orders(seed=21)
    bad = make_invalid(exportable[0], "negative_quantity")
    bad_id = bad["id"]
    harness, shop = export_harness([bad if o["id"] == bad_id else o for o in orders], platform=platform.name)

    scheduled = harness.run("2026-11-02T11:00:00+00:00")
    assert scheduled.ok, scheduled.output[-4000:]
    assert scheduled.summary["quarantined"] == 1
    listing = _quarantine_cli(harness, "list")
    assert "1 open quarantine entry" in listing and str(bad_id) in listing, listing
    assert "non_negative_quantity" in listing or "quantity" in listing, listing

    # The shop fixes the order (a new modification); the operator releases it by id.
    fixed = {**exportable[0], "date_modified_gmt": "2026-11-02T12:30:00",
             "date_modified": "2026-11-02T12:30:00"}
    platform.upsert(shop, fixed)
    unknown = 987654321
    result = harness.run_on_demand({"order_ids": [bad_id, unknown]})
    assert result.ok, result.output[-4000:]
    assert result.summary["extracted"] == 1 and result.summary["delivered"] == 1, result.summary
    assert f"order_ids={bad_id},{unknown}; unknown_ids={unknown}" in result.output  # the line names the ids asked for
    assert "not found in the storefront" in result.output

    ledger = harness.ledger()
    [entry] = ledger.quarantine.entries(harness.store_id, include_released=True)
    assert entry["order_id"] == str(bad_id) and entry["released_at"] is not None
    assert ledger.quarantine.entries(harness.store_id) == []
    assert "0 open quarantine entries" in _quarantine_cli(harness, "list")
    delivered = [oid for oid, _ in harness.delivered_versions()]
    assert delivered.count(str(bad_id)) == 1, "the fixed order goes out exactly once"
    id_file = Path(harness.inbound_dir, result.summary["files"][0])
    assert id_file.exists()


def test_dry_run_uploads_nothing_and_resend_delivers_again_recorded(export_harness):
    orders, exportable = _window_orders(seed=22)
    harness, _ = export_harness(orders)
    window = {"start": "2026-11-02T10:00:00Z", "end": "2026-11-02T11:00:00Z"}

    dry = harness.run_on_demand({**window, "dry_run": True})
    assert dry.returncode == 0, dry.output[-4000:]
    assert harness.inbound_files() == [], "a dry run uploads nothing"
    assert harness.ledger().deliveries.delivered(harness.store_id) == [], "a dry run records nothing"
    found = re.search(r"DRY RUN, nothing uploaded: file://(\S+)", dry.output)
    assert found, dry.output[-3000:]
    staged = Path(found.group(1))
    assert staged.exists() and staged.stat().st_size > 0, found.group(0)
    assert {r["order_id"] for r in harness.delivered_rows([staged])} == {str(o["id"]) for o in exportable}

    real = harness.run_on_demand(window)
    assert real.ok and real.summary["delivered"] == len(exportable), real.output[-4000:]
    again = harness.run_on_demand(window)
    assert again.ok and again.summary["delivered"] == 0
    assert again.summary["already_delivered"] == len(exportable)

    resend_ids = [exportable[0]["id"], exportable[1]["id"]]
    resent = harness.run_on_demand({"order_ids": resend_ids, "resend": True})
    assert resent.ok, resent.output[-4000:]
    assert resent.summary["delivered"] == 2 and "resent=2" in resent.output
    ledger = harness.ledger()
    resends = ledger.deliveries.resends(harness.store_id)
    assert sorted(int(r["order_id"]) for r in resends) == sorted(resend_ids)
    assert all(r["file_name"] == resent.summary["files"][0] and r["resent_at"] for r in resends)
    # order_deliveries keeps the first delivery only
    assert len(ledger.deliveries.delivered(harness.store_id)) == len(exportable)


def test_a_form_with_both_a_window_and_ids_is_refused_before_anything_runs(export_harness):
    orders, exportable = _window_orders(seed=23)
    harness, shop = export_harness(orders)
    requests_before = len(shop.request_log)
    result = harness.run_on_demand({"start": "2026-11-02T10:00:00Z", "end": "2026-11-02T11:00:00Z",
                                    "order_ids": [exportable[0]["id"]]})
    assert result.returncode != 0 or "failed" in result.output.lower()
    assert "request refused: give either a window (start, end) or order_ids, not both" in result.output
    # a refusal is one sentence, not a traceback (before: AirflowFailException and 15 frames)
    assert "Traceback" not in result.output and "AirflowFailException" not in result.output, result.output[-3000:]
    assert len(shop.request_log) == requests_before, "nothing was read from the storefront"
    assert harness.inbound_files() == []
