"""Stock levels, for real: the ERP simulator drops stock files on OpenSSH, ``airflow dags test
inventory_sync__<store>`` applies them to the sandbox storefront (two runs in all)."""

from __future__ import annotations

import json
import re

import pendulum
import pytest

from sandbox.erp_simulator import UNKNOWN_SKU, ErpSimulator

pytestmark = pytest.mark.integration

T0 = pendulum.datetime(2026, 11, 2, 10, 0, tz="UTC")


def test_stock_files_reach_the_storefront_newest_first_and_only_once(export_harness, monkeypatch, platform):
    harness, shop = export_harness([], platform=platform.name, **platform.stock_config())
    platform.add_catalogue(shop)
    monkeypatch.setenv(f"AIRFLOW_CONN_{harness.backend_conn_id.upper()}", json.dumps(harness.sftp_connection))
    now = [T0]
    erp = ErpSimulator(harness.backend_conn_id, stock_dir=harness.stock_dir.name, seed=3,
                       clock=lambda: now[0], faults={"unknown_sku", "stale_stock"})
    snapshot = erp.write_stock("snapshot")
    now[0] = T0.add(minutes=5)
    update = erp.write_stock("update", changes=3)
    levels = dict(erp._state["stock"])  # what the warehouse says now, per SKU
    before = platform.stock_levels(shop)
    assert any(before[sku] != level for sku, level in levels.items())

    run = harness.run_inventory_sync("2026-11-02T10:15:00+00:00")
    assert run.ok, run.output[-4000:]
    s = run.summary
    assert s["files"] == 4 and s["rows"] == sum(s[k] for k in (
        "applied", "unchanged", "stale", "unknown_sku", "unmanaged", "rejected"))
    # levels applied: the storefront shows the newest level of every SKU, the stale files lost
    assert {sku: platform.stock_levels(shop)[sku] for sku in levels} == levels
    assert s["stale"] == len(snapshot.rows) - 1 + 3, (s, re.findall(r"stock file .*", run.output))  # the two late files
    assert s["unknown_sku"] == 2 and s["rejected"] == 0 and s["unmanaged"] == 0
    ledger = harness.ledger().stock_levels.all_levels(harness.store_id)
    assert {sku: lv.quantity for (sku, _), lv in ledger.items()} == levels
    # unknown SKUs in error/ with their report, after the good rows were applied
    assert sorted(s["error_files"]) == sorted(snapshot.files + update.files)
    report = json.loads((harness.stock_dir / "error" / f"{update.files[0]}.errors.json").read_text())
    assert [(e["sku"], e["outcome"]) for e in report["errors"]] == [(UNKNOWN_SKU, "unknown_sku")]
    assert report["errors"][0]["line_number"] == len(update.rows) + 1
    assert sorted(p.name for p in (harness.stock_dir / "archive").iterdir()) == sorted(
        snapshot.stale_files + update.stale_files)
    assert [p.name for p in harness.stock_dir.iterdir() if p.is_file()] == []

    # the same files dropped again (other names) send no write at all
    for name in snapshot.files + update.files:
        (harness.stock_dir / f"again_{name}").write_bytes((harness.stock_dir / "error" / name).read_bytes())
    writes_before = platform.writes(shop)
    again = harness.run_inventory_sync("2026-11-02T10:30:00+00:00")
    assert again.ok, again.output[-4000:]
    assert platform.writes(shop) == writes_before
    assert again.summary["applied"] == 0 and again.summary["unknown_sku"] == 2
    assert again.summary["stale"] == 3 and again.summary["unchanged"] == again.summary["rows"] - 5
    assert {sku: platform.stock_levels(shop)[sku] for sku in levels} == levels
