"""Two-way, for real: export -> ERP simulator answers over SFTP -> status sync DAG -> storefront,
then the next export does not send our own status write-back to the backend again."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pendulum
import pytest

from sandbox.erp_simulator import ErpSimulator
from sandbox.generator import generate_orders

pytestmark = pytest.mark.integration

DAY = pendulum.datetime(2026, 11, 2, tz="UTC")
STOREFRONT_NOW = datetime(2026, 11, 2, 11, 30, tzinfo=UTC)  # status writes land in [11:00, 12:00)


def _erp(harness, monkeypatch, **kwargs):
    monkeypatch.setenv(f"AIRFLOW_CONN_{harness.backend_conn_id.upper()}",
                       json.dumps(harness.sftp_connection))
    return ErpSimulator(harness.backend_conn_id, inbound_dir=harness.inbound_dir.name,
                        outbound_dir=harness.outbound_dir.name, processed_dir=f"erp_{harness.store_id}",
                        clock=lambda: pendulum.instance(STOREFRONT_NOW), **kwargs)


def test_backend_answers_reach_the_storefront_and_do_not_echo_back(export_harness, monkeypatch, platform):
    # completed orders are already fulfilled (Shopify exports them, being paid: the simulator's
    # second shipment of one is refused, rightly); this test is about answers to open orders
    orders = [o for o in generate_orders(150, start=DAY.add(hours=8), end=DAY.add(hours=11), seed=21)
              if o["status"] != "completed"]
    harness, shop = export_harness(orders, clock=lambda: STOREFRONT_NOW, platform=platform.name)
    export = harness.run("2026-11-02T11:00:00+00:00")
    assert export.ok, export.output[-4000:]
    delivered = {oid for oid, _ in harness.delivered_versions()}
    assert delivered

    report = _erp(harness, monkeypatch).run_once()
    assert report.files_read and report.status_files
    events = report.events
    by_order: dict[str, list] = {}
    for e in events:
        by_order.setdefault(e.order_id, []).append(e)

    sync = harness.run_status_sync("2026-11-02T11:40:00+00:00")
    assert sync.ok, sync.output[-4000:]
    errors = [p.read_text() for p in (harness.outbound_dir / "error").glob("*.errors.json")]
    assert sync.summary["files"] == 1 and sync.summary["error_files"] == [], errors
    assert sync.summary["applied"] == len(events)
    assert sorted(p.name for p in (harness.outbound_dir / "archive").iterdir()) == report.status_files
    assert [p.name for p in harness.outbound_dir.iterdir() if p.is_file()] == []

    shipped_whole = [oid for oid, evs in by_order.items()
                     if any(e.event == "shipped" and not e.sku for e in evs)]
    rejected = [oid for oid, evs in by_order.items() if evs[-1].event == "rejected"]
    accepted_only = [oid for oid, evs in by_order.items() if [e.event for e in evs] == ["accepted"]]
    assert shipped_whole and rejected and accepted_only  # cancellations are rarer (5%)
    for oid in shipped_whole:
        assert platform.answered(shop, int(oid)) == "shipped"
        tracking = next(e for e in by_order[oid] if e.event == "shipped").tracking_number
        assert platform.shows_tracking(shop, int(oid), tracking)
    # every answered order ends in the state its last event implies (parts add up to all units)
    actual = {oid: platform.answered(shop, int(oid)) for oid in by_order}
    assert actual == {oid: evs[-1].event for oid, evs in by_order.items()}

    # the same file dropped again (other name) changes nothing on the storefront
    archived = harness.outbound_dir / "archive" / report.status_files[0]
    (harness.outbound_dir / "again.csv").write_bytes(archived.read_bytes())
    writes_before = platform.writes(shop)
    again = harness.run_status_sync("2026-11-02T11:50:00+00:00")
    assert again.ok and again.summary["skipped_duplicate"] == len(events), again.output[-3000:]
    assert platform.writes(shop) == writes_before

    # the next export sees the orders we changed (modified at 11:30) but sends none of them:
    # only their status changed, and we wrote it
    touched = {oid for oid in by_order if platform.modified_at(shop, int(oid)) == STOREFRONT_NOW}
    assert touched
    files_before = set(harness.inbound_files())
    nxt = harness.run("2026-11-02T12:00:00+00:00")
    assert nxt.ok, nxt.output[-4000:]
    new_rows = harness.delivered_rows(sorted(set(harness.inbound_files()) - files_before))
    assert not touched & {r["order_id"] for r in new_rows}, "our own status write-back went out again"
    assert nxt.summary["already_delivered"] >= len(touched & delivered)


def test_a_file_with_bad_lines_applies_the_good_ones_and_moves_to_error(export_harness, monkeypatch):
    orders = generate_orders(60, start=DAY.add(hours=9), end=DAY.add(hours=11), seed=4)
    harness, _ = export_harness(orders, clock=lambda: STOREFRONT_NOW)
    assert harness.run("2026-11-02T11:00:00+00:00").ok
    report = _erp(harness, monkeypatch, faults={"bom", "unknown_order", "malformed"}).run_once()
    good = len(report.events) - len(report.fault_events)

    sync = harness.run_status_sync("2026-11-02T11:40:00+00:00")
    assert sync.ok, sync.output[-4000:]
    [name] = report.status_files
    errors = (harness.outbound_dir / "error" / f"{name}.errors.json").read_text()
    assert sync.summary["applied"] == good, (sync.summary, errors)
    assert sync.summary["error_files"] == [name]
    error_dir = harness.outbound_dir / "error"
    assert (error_dir / name).exists()
    report_json = json.loads((error_dir / f"{name}.errors.json").read_text())
    text = json.dumps(report_json)
    assert "999999999" in text and "dispatched" in text


def test_a_file_waiting_for_its_retry_is_not_overtaken_by_the_next_one(export_harness):
    """Issue 13, defect 2: files apply in name order even when file n needs a retry. File 1
    rejects order X, file 2 accepts it again; file 1's first try fails before it changes X
    (every attempt of another order's note answers 503). Applying file 2 meanwhile, then
    file 1 on its retry, would leave X on-hold; the right end is processing."""
    orders = generate_orders(4, start=DAY.add(hours=9), end=DAY.add(hours=11), seed=5)
    for order in orders:
        order["status"] = "pending"
    harness, shop = export_harness(orders, retries=2, retry_delay_seconds=1)
    x, y = orders[0]["id"], orders[1]["id"]
    header = "order_id,event,occurred_at,carrier,tracking_number,tracking_url,sku,quantity,note\n"
    harness.outbound_dir.mkdir(parents=True, exist_ok=True)
    (harness.outbound_dir / "status_1.csv").write_text(
        header + f"{y},accepted,2026-11-02T10:00:00Z,,,,,,\n"
        f"{x},rejected,2026-11-02T10:00:00Z,,,,,,address incomplete\n")
    (harness.outbound_dir / "status_2.csv").write_text(
        header + f"{x},accepted,2026-11-02T10:30:00Z,,,,,,address fixed\n")
    # the client's six attempts of Y's note: file 1's first try fails with a transient error
    shop.inject_faults([{"type": "503", "retry_after": 0, "times": 6, "method": "POST",
                         "path": f"/orders/{y}/notes"}])

    sync = harness.run_status_sync("2026-11-02T11:40:00+00:00")
    assert sync.ok, sync.output[-4000:]
    assert shop.pending_faults == [], "file 1's first try did not fail"
    assert "status file status_1.csv failed; it and the 1 file(s) after it stay" in sync.output
    assert sorted(p.name for p in (harness.outbound_dir / "archive").iterdir()) == ["status_1.csv", "status_2.csv"]
    assert shop.get_order(x)["status"] == "processing"
    assert [n["note"].split(" ", 1)[0] for n in shop.notes(x)] == ["Rejected", "Accepted"]  # as added
    assert shop.get_order(y)["status"] == "processing"
