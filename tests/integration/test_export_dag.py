"""The export DAG run for real: `airflow dags test` against the sandbox storefront and OpenSSH."""

from __future__ import annotations

import json
import re

import pendulum
import pytest
import yaml

from sandbox.generator import generate_orders, make_invalid
from tests.support.platforms import PLATFORMS

pytestmark = pytest.mark.integration

DAY = pendulum.datetime(2026, 11, 2, tz="UTC")
EXPORTABLE = {"processing", "on-hold"}


def _orders(n=120, seed=7, hours=(8, 12)):
    return generate_orders(n, start=DAY.add(hours=hours[0]), end=DAY.add(hours=hours[1]), seed=seed)


def _modified(order) -> pendulum.DateTime:
    return pendulum.parse(order["date_modified_gmt"] + "Z")


def _expected(orders, start, end, exportable=EXPORTABLE):
    """Ids the export must deliver for [start, end): modified in range, status exportable
    (``exportable``: the generator's statuses the platform's default export_statuses take)."""
    return {str(o["id"]) for o in orders if start <= _modified(o) < end and o["status"] in exportable}


def _in_range(orders, start, end):
    return [o for o in orders if start <= _modified(o) < end]


def _assert_adds_up(summary):
    assert summary["extracted"] == (summary["delivered"] + summary["quarantined"]
                                    + summary["already_delivered"] + summary["not_ready"]), summary


def test_a_window_delivers_its_exportable_orders_once(export_harness, platform):
    orders = _orders()
    harness, _ = export_harness(orders, platform=platform.name)
    result = harness.run("2026-11-02T11:00:00+00:00")
    assert result.ok, result.output[-4000:]

    start, end = DAY.add(hours=9, minutes=50), DAY.add(hours=11)  # 10 min lookback
    expected = _expected(orders, start, end, platform.exportable_statuses)
    assert expected, "the seeded data must have orders in the window"
    delivered = harness.delivered_versions()
    assert sorted(oid for oid, _ in delivered) == sorted(expected)
    s = result.summary
    assert s["extracted"] == len(_in_range(orders, start, end))
    assert s["delivered"] == len(expected) and s["quarantined"] == 0 and s["already_delivered"] == 0
    assert s["not_ready"] == s["extracted"] - len(expected)
    _assert_adds_up(s)

    [file] = harness.inbound_files()
    assert re.fullmatch(rf"orders_{harness.store_id}_20261102T100000Z_20261102T110000Z_[0-9a-f]{{12}}\.csv", file.name)
    assert s["files"] == [file.name]
    assert not any(p.name.startswith(".") for p in harness.inbound_dir.iterdir()), "no .part left behind"
    ledger_ids = {r["order_id"] for r in harness.ledger().deliveries.delivered(harness.store_id)}
    assert ledger_ids == expected


def test_overlapping_windows_and_a_rerun_deliver_nothing_twice(export_harness, platform):
    orders = _orders(seed=11)
    harness, _ = export_harness(orders, platform=platform.name)
    first = harness.run("2026-11-02T10:00:00+00:00")
    second = harness.run("2026-11-02T11:00:00+00:00")
    assert first.ok and second.ok, (first.output + second.output)[-4000:]
    # the 11:00 run re-reads 09:50-10:00 (lookback): those orders were delivered by the 10:00 run
    exportable = platform.exportable_statuses
    overlap = _expected(orders, DAY.add(hours=9, minutes=50), DAY.add(hours=10), exportable)
    assert second.summary["already_delivered"] == len(overlap) > 0

    delivered = harness.delivered_versions()
    assert len(delivered) == len(set(delivered)), "an order version was delivered twice"
    assert {oid for oid, _ in delivered} == _expected(orders, DAY.add(hours=8, minutes=50), DAY.add(hours=11),
                                                      exportable)

    files_before = harness.inbound_files()
    rerun = harness.run("2026-11-02T11:00:00+00:00")
    assert rerun.ok, rerun.output[-4000:]
    assert rerun.summary["delivered"] == 0 and rerun.summary["files"] == []
    assert rerun.summary["already_delivered"] == second.summary["delivered"] + second.summary["already_delivered"]
    _assert_adds_up(rerun.summary)
    assert harness.inbound_files() == files_before, "a rerun with nothing new writes no file"


def test_a_changed_order_is_delivered_again_but_a_bare_touch_is_not(export_harness):
    orders = _orders(seed=5)
    harness, shop = export_harness(orders)
    assert harness.run("2026-11-02T11:00:00+00:00").ok
    window = _expected(orders, DAY.add(hours=9, minutes=50), DAY.add(hours=11))
    edited, touched = sorted(window)[:2]
    when = "2026-11-02T11:30:00"
    order = shop.get_order(int(edited))
    order["customer_note"] = "Please leave at the back door"
    order["date_modified_gmt"] = when
    shop.upsert_order(order)
    shop.touch_order(int(touched), pendulum.parse(when + "Z"))

    result = harness.run("2026-11-02T12:00:00+00:00")
    assert result.ok, result.output[-4000:]
    delivered = harness.delivered_versions()
    versions_of_edited = [v for oid, v in delivered if oid == edited]
    assert len(versions_of_edited) == 2 and len(set(versions_of_edited)) == 2
    assert [oid for oid, _ in delivered].count(touched) == 1
    assert result.summary["already_delivered"] >= 1


def test_faults_while_paging_deliver_the_same_set_as_a_clean_run(export_harness):
    orders = _orders(n=400, seed=3)
    clean, _ = export_harness(orders)
    # The six faults outlast the client's six attempts on the first page, so Airflow retries the
    # extract task: after 5 s here (the default retry delay, 60 s, would only make the test wait).
    faulty, shop = export_harness(orders, retry_delay_seconds=5)
    shop.inject_faults([
        {"type": "429", "retry_after": 1},
        {"type": "500", "times": 2},
        {"type": "html"},
        {"type": "truncated"},
        {"type": "503", "retry_after": 1},
        {"type": "drift", "count": 5},
    ])
    date = "2026-11-02T11:00:00+00:00"
    a, b = clean.run(date), faulty.run(date)
    assert a.ok and b.ok, (a.output + b.output)[-4000:]
    assert "giving up after 6 attempts" in b.output and "up_for_retry" in b.output, b.output[-4000:]
    # store ids differ (so do versions) and drift bumps updated_at: compare the rest
    def rows(h):
        return sorted(tuple(v for k, v in r.items() if k not in ("store_id", "order_version", "updated_at"))
                      for r in h.delivered_rows())

    assert rows(clean) == rows(faulty)
    ids = [oid for oid, _ in faulty.delivered_versions()]
    assert len(ids) == len(set(ids))
    assert a.summary["delivered"] == b.summary["delivered"] > 0
    assert a.summary["extracted"] == b.summary["extracted"] > 100  # more than one page
    statuses = [status for _method, _path, status in shop.request_log]
    assert {429, 500, 503} <= set(statuses), "the faults were really served"


def test_invalid_orders_are_quarantined_and_the_rest_delivered(export_harness, platform):
    orders = _orders(n=200, seed=9)
    window = [i for i, o in enumerate(orders)
              if DAY.add(hours=10) <= _modified(o) < DAY.add(hours=11) and o["status"] in EXPORTABLE]
    bad = {window[0]: "total_mismatch", window[1]: "bad_email"}
    for index, kind in bad.items():
        orders[index] = make_invalid(orders[index], kind)
    harness, _ = export_harness(orders, platform=platform.name)
    result = harness.run("2026-11-02T11:00:00+00:00")
    assert result.ok, result.output[-4000:]
    bad_ids = {str(orders[i]["id"]) for i in bad}
    assert result.summary["quarantined"] == 2
    delivered_ids = {oid for oid, _ in harness.delivered_versions()}
    assert not bad_ids & delivered_ids
    assert delivered_ids == _expected(orders, DAY.add(hours=9, minutes=50), DAY.add(hours=11),
                                      platform.exportable_statuses) - bad_ids
    quarantine = {q["order_id"]: q for q in harness.ledger().quarantine.entries(harness.store_id)}
    assert set(quarantine) == bad_ids
    rules = {oid: {r["rule"] for r in q["reasons"]} for oid, q in quarantine.items()}
    assert "order_adds_up" in rules[str(orders[window[0]]["id"])]
    assert "email_valid" in rules[str(orders[window[1]]["id"])]
    assert "invalid" not in result.output.lower() or "quarantined" in result.output

    # a rerun does not count them again against the breaker and still delivers nothing twice
    rerun = harness.run("2026-11-02T11:00:00+00:00")
    assert rerun.ok and rerun.summary["quarantined"] == 2 and rerun.summary["delivered"] == 0


def test_too_many_invalid_orders_trip_the_breaker_after_recording_them(export_harness):
    orders = _orders(n=60, seed=13)
    in_window = [i for i, o in enumerate(orders)
                 if DAY.add(hours=9, minutes=50) <= _modified(o) < DAY.add(hours=11) and o["status"] in EXPORTABLE]
    for i in in_window[: max(3, len(in_window) // 3)]:
        orders[i] = make_invalid(orders[i], "bad_country")
    harness, _ = export_harness(orders, validation={"max_quarantine_ratio": 0.05, "min_validated_for_ratio": 5})
    result = harness.run("2026-11-02T11:00:00+00:00")
    assert result.returncode != 0
    assert "QuarantineRatioExceeded" in result.output and "max_quarantine_ratio" in result.output
    assert harness.inbound_files() == []
    assert len(harness.ledger().quarantine.entries(harness.store_id)) == max(3, len(in_window) // 3)


def test_refused_storefront_credentials_fail_at_once(export_harness):
    harness, shop = export_harness(_orders(n=20))
    harness.storefront_secret = "cs_wrong"
    result = harness.run("2026-11-02T11:00:00+00:00")
    assert result.returncode != 0
    assert "StorefrontAuthError" in result.output
    assert [s for _m, _p, s in shop.request_log].count(401) == 1, "credentials are not retried"
    assert harness.inbound_files() == []


def test_a_changed_backend_host_key_fails_at_once_and_delivers_nothing(export_harness, sshd):
    harness, _ = export_harness(_orders(n=30))
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbu7p0XvWTMOQbOPMFEy4dNYHxXlkgyMwOHPnlcvRbm"
    harness.sftp_connection = sshd.airflow_connection(extra={**sshd.airflow_connection()["extra"], "host_key": other})
    result = harness.run("2026-11-02T11:00:00+00:00")
    assert result.returncode != 0
    assert "BackendAuthError" in result.output and "host key" in result.output
    assert harness.inbound_files() == []
    assert harness.ledger().deliveries.delivered(harness.store_id) == []


def test_one_config_with_a_woocommerce_and_a_shopify_store_runs_both(export_harness, monkeypatch):
    """Two stores of one deployment, one per platform, in one stores.yaml: the platform key is
    the only difference, and each store's export delivers its own orders to its own folder."""
    orders = _orders(seed=17)
    woo, _ = export_harness(orders, platform="woocommerce")
    shopify, _ = export_harness(orders, platform="shopify")
    stores = [yaml.safe_load(h.config_path.read_text())["stores"][0] for h in (woo, shopify)]
    assert [s["platform"] for s in stores] == ["woocommerce", "shopify"]
    combined = woo.work_dir.parent / "both_stores.yaml"
    combined.write_text(yaml.safe_dump({"stores": stores}))
    for harness in (woo, shopify):
        harness.config_path = combined
        monkeypatch.setenv(f"AIRFLOW_CONN_STOREFRONT_{harness.store_id.upper()}",
                           json.dumps(harness.storefront_connection()))
        monkeypatch.setenv(f"AIRFLOW_CONN_BACKEND_{harness.store_id.upper()}", json.dumps(harness.sftp_connection))

    start, end = DAY.add(hours=9, minutes=50), DAY.add(hours=11)
    for harness in (woo, shopify):
        result = harness.run("2026-11-02T11:00:00+00:00")
        assert result.ok, result.output[-4000:]
        expected = _expected(orders, start, end, PLATFORMS[harness.platform].exportable_statuses)
        assert sorted(oid for oid, _ in harness.delivered_versions()) == sorted(expected), harness.platform
        _assert_adds_up(result.summary)
    assert woo.inbound_dir != shopify.inbound_dir
