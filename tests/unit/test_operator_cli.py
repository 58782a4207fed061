"""``python -m order_integration``: quarantine list/release and pools, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from order_integration.config import parse_config
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.pools import pools_for
from order_integration.quarantine import quarantine_table, release_command

pytestmark = pytest.mark.unit


def _store(id_, conn="storefront_shared", **extra):
    return {"id": id_, "storefront_conn_id": conn, "backend_conn_id": f"sftp_{id_}", **extra}


def _cli(tmp_path, *args, stores=None):
    cfg = tmp_path / "stores.yaml"
    cfg.write_text(yaml.safe_dump({"stores": stores or [_store("demo")]}))
    env = {**os.environ, "ORDER_INTEGRATION_CONFIG": str(cfg)}
    return subprocess.run([sys.executable, "-m", "order_integration", *args], env=env, capture_output=True,
                          text=True, check=False, timeout=120)


def test_quarantine_list_shows_open_entries_with_reasons_and_the_release_command(tmp_path):
    db = tmp_path / "ledger.db"
    ledger = Ledger(sqlite_engine(db), create=True)
    ledger.quarantine.record("demo", [
        ("1002", "abc", [{"rule": "quantity_positive", "detail": "line 1 quantity -1"}]),
        ("77", "def", [{"rule": "currency_known", "detail": "currency ''"},
                       {"rule": "totals_add_up", "detail": "off by 0.01"}]),
    ])
    ledger.quarantine.record("other", [("5", "x", [{"rule": "r", "detail": "d"}])])
    proc = _cli(tmp_path, "quarantine", "list", "--store", "demo", "--ledger-url", f"sqlite:///{db}")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "store demo: 2 open quarantine entries" in out
    assert "quantity_positive: line 1 quantity -1" in out
    assert "currency_known: currency ''; totals_add_up: off by 0.01" in out
    assert "release --store demo 77 1002" in out, "ids sorted numerically"
    assert "\n5 " not in out, "another store's entries are not listed"

    as_json = _cli(tmp_path, "quarantine", "list", "--store", "demo", "--json", "--ledger-url", f"sqlite:///{db}")
    entries = json.loads(as_json.stdout)
    assert {e["order_id"] for e in entries} == {"1002", "77"}
    assert entries[0]["reasons"][0]["rule"]

    every = _cli(tmp_path, "quarantine", "list", "--store", "other", "--all", "--ledger-url", f"sqlite:///{db}",
                 stores=[_store("demo"), _store("other")])
    assert every.stdout.startswith("store other: 1 quarantine entry (released included)\n"), every.stdout


def test_an_unknown_store_is_an_error_not_an_empty_list(tmp_path):
    proc = _cli(tmp_path, "quarantine", "list", "--store", "nope", "--ledger-url", f"sqlite:///{tmp_path}/l.db")
    assert proc.returncode == 2
    assert "store 'nope' is not in the config (stores: demo)" in proc.stderr


def _quarantined(db, *order_ids):
    ledger = Ledger(sqlite_engine(db), create=True)
    ledger.quarantine.record("demo", [(oid, "v1", [{"rule": "r", "detail": "d"}]) for oid in order_ids])
    return ledger


def test_release_prints_the_trigger_of_the_on_demand_dag(tmp_path):
    db = tmp_path / "ledger.db"
    _quarantined(db, "12", "7")
    url = ("--ledger-url", f"sqlite:///{db}")
    proc = _cli(tmp_path, "quarantine", "release", "--store", "demo", "12", "7", "--print", *url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "airflow dags trigger order_export_on_demand__demo --conf '{\"order_ids\": [12, 7]}'")
    assert proc.stderr == "", "no warning for ids that are in quarantine"
    for bad_id in ("x7", "²", "٣"):
        bad = _cli(tmp_path, "quarantine", "release", "--store", "demo", "12", bad_id, "--print", *url)
        assert bad.returncode == 2 and f"order ids are digits 0-9 (1 to 18446744073709551615); refused: {bad_id}" \
            in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


def test_release_warns_about_ids_that_are_not_in_quarantine(tmp_path):
    db = tmp_path / "ledger.db"
    ledger = _quarantined(db, "12", "30")
    from sqlalchemy import text

    with ledger.engine.begin() as conn:  # 30 was released by an earlier delivery
        conn.execute(text("UPDATE order_quarantine SET released_at = quarantined_at WHERE order_id = '30'"))
    proc = _cli(tmp_path, "quarantine", "release", "--store", "demo", "12", "99999", "30", "--print",
                "--ledger-url", f"sqlite:///{db}")
    assert proc.returncode == 0, proc.stderr
    assert "order_ids\": [12, 99999, 30]" in proc.stdout, "still printed: the operator may mean it"
    assert "warning: order 99999 of store demo was never quarantined" in proc.stderr
    assert "warning: order 30 of store demo was released already" in proc.stderr
    assert "order 12 " not in proc.stderr


def test_quarantine_list_prints_for_people_not_log_lines(tmp_path):
    """The default ledger (no connection: SQLite in AIRFLOW_HOME) is looked up through Airflow,
    whose logging would print the library's 'ledger is SQLite at …' line first."""
    home = tmp_path / "home"
    home.mkdir()
    _quarantined(home / "order_ledger.db", "12")
    cfg = tmp_path / "stores.yaml"
    cfg.write_text(yaml.safe_dump({"stores": [_store("demo")]}))
    env = {**os.environ, "ORDER_INTEGRATION_CONFIG": str(cfg), "AIRFLOW_HOME": str(home)}
    env.pop("AIRFLOW_CONN_ORDER_LEDGER", None)
    proc = subprocess.run([sys.executable, "-m", "order_integration", "quarantine", "list", "--store", "demo"],
                          env=env, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("store demo: 1 open quarantine entry"), proc.stdout[:300]
    assert "ledger is SQLite" not in proc.stdout + proc.stderr


def test_release_command_quotes_for_the_shell():
    assert release_command("s", ["1"]) == "airflow dags trigger order_export_on_demand__s --conf '{\"order_ids\": [1]}'"


def test_quarantine_table_is_aligned_and_truncates_long_reasons():
    table = quarantine_table([
        {"order_id": "1", "order_version": "v", "reasons": json.dumps([{"rule": "r", "detail": "x" * 500}])},
        {"order_id": "123456", "order_version": "vv", "reasons": []},
    ])
    lines = table.splitlines()
    assert lines[0].startswith("order_id  version")
    assert lines[1].index("v") == lines[2].index("vv") == lines[0].index("version")
    assert lines[1].endswith("…") and len(lines[1]) < 250


def test_pools_one_per_storefront_connection_and_one_load_slot_per_store(tmp_path):
    config = parse_config({"stores": [
        _store("a", storefront_concurrency=3), _store("b"), _store("c", conn="storefront_c")]})
    pools = pools_for(config.stores)
    assert pools["storefront__storefront_shared"]["slots"] == 3, "shared connection: the largest setting"
    assert "a, b" in pools["storefront__storefront_shared"]["description"]
    assert pools["storefront__storefront_c"]["slots"] == 2
    assert {n: p["slots"] for n, p in pools.items() if n.startswith("order_load__")} == {
        "order_load__a": 1, "order_load__b": 1, "order_load__c": 1}
    proc = _cli(tmp_path, "pools", stores=[_store("a", storefront_concurrency=3), _store("b")])
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert set(printed) == {"storefront__storefront_shared", "order_load__a", "order_load__b"}
    assert all(set(p) == {"slots", "description", "include_deferred"} for p in printed.values()), \
        "the exact format `airflow pools import` reads"
