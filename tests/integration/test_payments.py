"""Payments and refunds from the backend, for real (issue 16): export -> the backend's status
file with ``paid``/``refunded`` lines -> status sync DAG (killed once between the storefront
writes and the ledger) -> the platform's sandbox -> the next export. Runs once per platform
(the ``platform`` fixture); what differs is said by the platform kit (``tests.support.platforms``).

One scenario, four ``airflow dags test`` runs per platform (each costs ~25 s):

1. export [10:00, 11:00): the on-hold bank-transfer order and the paid ones go out; the
   pending one is not ready (not paid);
2. status sync: the file (twice, under two names) pays the pending and the on-hold order (on
   Shopify an ``authorized`` one: the note only, refused — marking it paid would capture it),
   refunds one order by line and two whole, and has one line for each bad input; the run is
   killed after the first wave reached the storefront and before its ledger rows;
3. status sync again: the crashed file completes without writing anything twice, its copy is
   a duplicate of every line, both go to ``error/`` with the bad lines' reasons;
4. export [11:00, 12:00): the order paid by the backend goes out for the first time; our own
   payment mark and refunds are no new versions; an order a person refunded in full in the
   storefront goes out again (``refunded``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pendulum
import pytest

from order_integration.currency import minor_units
from order_integration.failpoints import ENV as FAILPOINTS_ENV
from order_integration.failpoints import PLAN_FILE
from sandbox.generator import generate_orders

pytestmark = pytest.mark.integration

DAY = pendulum.datetime(2026, 11, 2, tz="UTC")
STOREFRONT_NOW = datetime(2026, 11, 2, 11, 30, tzinfo=UTC)
HEADER = "order_id,event,occurred_at,carrier,tracking_number,tracking_url,sku,quantity,note,amount,currency,reference"


def _unpaid(order: dict, status: str) -> None:
    order.update(status=status, payment_method="bacs", payment_method_title="Direct bank transfer",
                 transaction_id="", date_paid=None, date_paid_gmt=None, refunds=[])


def _paid(order: dict, status: str = "processing") -> None:
    order.update(status=status, payment_method="stripe", payment_method_title="Card",
                 transaction_id=f"pi_{order['id']}", date_paid=order["date_created"],
                 date_paid_gmt=order["date_created_gmt"], refunds=[])


def _one_unit(currency: str) -> str:
    return f"{Decimal(1):.{minor_units(currency)}f}"


def test_payments_and_refunds_reach_the_storefront_once_and_echo_only_what_a_person_did(
    export_harness, monkeypatch, tmp_path, platform,
):
    orders = [o for o in generate_orders(40, start=DAY.add(hours=10), end=DAY.add(hours=11), seed=16)
              if o["line_items"] and o["line_items"][0]["sku"] and minor_units(o["currency"]) > 0][:8]
    assert len(orders) == 8
    pending, on_hold, by_line, whole, gateway, cancelled, person, over = orders
    _unpaid(pending, "pending")
    _unpaid(on_hold, "on-hold")
    for order in (by_line, whole, gateway, person, over):
        _paid(order)
    _paid(cancelled, "cancelled")
    harness, shop = export_harness(orders, clock=lambda: STOREFRONT_NOW, platform=platform.name)

    first = harness.run("2026-11-02T11:00:00+00:00")
    assert first.ok, first.output[-4000:]
    delivered = {oid for oid, _ in harness.delivered_versions()}
    assert str(pending["id"]) not in delivered and {str(on_hold["id"]), str(whole["id"])} <= delivered

    def line(order: dict, event: str, reference: str, amount: str = "", sku: str = "", quantity: str = "",
             note: str = "", currency: str | None = None) -> str:
        cur = order["currency"] if amount and currency is None else (currency or "")
        return (f"{order['id']},{event},2026-11-02T11:20:00Z,,,,{sku},{quantity},{note},{amount},{cur},"
                f"{reference}")

    sku = by_line["line_items"][0]["sku"]
    digits = minor_units(over["currency"])
    rows = [
        line(pending, "paid", "PAY-1", pending["total"]),                             # 2 applied
        line(on_hold, "paid", "PAY-2"),                                               # 3 applied
        line(by_line, "refunded", "CN-1", _one_unit(by_line["currency"]), sku, "1", "broken"),  # 4 applied
        line(whole, "refunded", "CN-2", whole["total"], note="returned"),             # 5 applied
        line(person, "paid", "PAY-3", person["total"]),                               # 6 refused: already paid
        line(cancelled, "refunded", "CN-3", _one_unit(cancelled["currency"])),        # 7 refused: cancelled
        line(over, "refunded", "CN-4", f"{Decimal(over['total']) + 1:.{digits}f}"),    # 8 refused: above total
        line(over, "refunded", "CN-5", f"1.{'0' * digits}1"),                         # 9 invalid: decimals
        line(gateway, "refunded", "", _one_unit(gateway["currency"])),                # 10 invalid: no reference
    ]
    data = (HEADER + "\n" + "\n".join(rows) + "\n").encode()
    harness.outbound_dir.mkdir(parents=True, exist_ok=True)
    (harness.outbound_dir / "payments_1.csv").write_bytes(data)
    (harness.outbound_dir / "payments_2.csv").write_bytes(data)  # the same file again, another name

    # the first try dies after the first wave reached the storefront, before its ledger rows
    failpoints = tmp_path / "failpoints"
    failpoints.mkdir()
    (failpoints / PLAN_FILE).write_text(json.dumps(
        {"status_sync.before_ledger": {"action": "kill", "times": 1, "store": harness.store_id}}))
    monkeypatch.setenv(FAILPOINTS_ENV, str(failpoints))
    crashed = harness.run_status_sync("2026-11-02T11:40:00+00:00")
    assert not crashed.ok and list(failpoints.glob("*.fired")), crashed.output[-3000:]
    assert len(platform.backend_refunds(shop, whole["id"])) == 1  # the storefront has the wave, the ledger not
    before = {o["id"]: platform.status_word(shop, o["id"]) for o in orders}

    sync = harness.run_status_sync("2026-11-02T11:50:00+00:00")
    assert sync.ok, sync.output[-4000:]
    applied = 3 + platform.pays_awaiting_orders
    assert sync.summary["applied"] == applied and sync.summary["skipped_duplicate"] == applied, json.dumps(
        sync.summary)
    assert sync.summary["error_files"] == ["payments_1.csv", "payments_2.csv"]
    report = json.loads((harness.outbound_dir / "error" / "payments_1.csv.errors.json").read_text())
    why = {e["line_number"]: e["reason"] for e in report["errors"]}
    assert sorted(why) == ([] if platform.pays_awaiting_orders else [3]) + [6, 7, 8, 9, 10], why
    assert platform.pays_awaiting_orders or "authorized by its gateway" in why[3]
    assert "already paid on the storefront" in why[6]
    assert "order is cancelled" in why[7]
    assert "exceeds what remains refundable" in why[8]
    assert f"has {digits + 1} decimals" in why[9]
    assert "refunded needs reference" in why[10]

    # the storefront: each payment and refund once, no money moved through a gateway
    assert platform.status_word(shop, pending["id"]) == platform.paid_status
    assert platform.payment_references(shop, pending["id"]) == {"PAY-1"}
    if platform.pays_awaiting_orders:
        assert platform.status_word(shop, on_hold["id"]) == platform.paid_status
        assert platform.payment_references(shop, on_hold["id"]) == {"PAY-2"}
    assert "PAY-3" not in platform.payment_references(shop, person["id"])
    refunds = {o["id"]: platform.backend_refunds(shop, o["id"]) for o in orders}
    assert refunds[by_line["id"]] == [("CN-1", False, [(sku, 1)])]
    assert refunds[whole["id"]] == [("CN-2", False, [])]
    assert sum(len(r) for r in refunds.values()) == 2
    assert platform.status_word(shop, whole["id"]) == platform.full_refund_status
    assert platform.status_word(shop, by_line["id"]) == before[by_line["id"]]
    assert all(len([n for n in platform.backend_notes(shop, o["id"]) if "booked by the backend" in n]) == 1
               for o in (pending, on_hold, by_line, whole, person))

    # a person refunds an exported order in full in the storefront (their own money move)
    platform.refund_as_person(shop, person)

    before_files = set(harness.inbound_files())
    nxt = harness.run("2026-11-02T12:00:00+00:00")
    assert nxt.ok, nxt.output[-4000:]
    sent = {r["order_id"]: r["order_status"] for r in
            harness.delivered_rows(sorted(set(harness.inbound_files()) - before_files))}
    assert sent == {str(pending["id"]): platform.paid_status, str(person["id"]): "refunded"}, sent
