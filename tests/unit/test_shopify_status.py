"""ShopifyStatus, the status sync's applier for Shopify: its rules (decide, pure) and the status
sync driving it against the Shopify sandbox over real HTTP, with the real ledger and SFTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pendulum
import pytest

from order_integration.backend.sftp import SftpBackend, SftpSession
from order_integration.backend.status_files import parse_status_file
from order_integration.config import BackendConfig, StoreConfig
from order_integration.exceptions import StorefrontAuthError, StorefrontError
from order_integration.failpoints import ENV, InjectedFault
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.status_sync import FileResult, apply_file, note_text, sync_file
from order_integration.storefronts import get_status_applier
from order_integration.storefronts import shopify_money as sm
from order_integration.storefronts import shopify_status as ss
from order_integration.storefronts.base import Effect, StatusChange
from order_integration.storefronts.shopify_status import ShopifyStatus, decide, order_state
from sandbox.generator import generate_orders
from sandbox.sftp_server import EmbeddedSftpServer
from sandbox.shopify_admin import SandboxShopify
from tests.support.shopify_schema import validate_against_shopify
from tests.unit.test_status_sync import ev, ship, status_csv
from tests.unit.test_status_sync import sftp_server as sftp_server  # the shared fixture

pytestmark = pytest.mark.unit

TOKEN = "shpat_status_sync"
SHOP_CONN, SFTP_CONN = "shopify_status_shop", "shopify_status_backend"
STORE = "s1"
ORDER_IDS = list(range(2001, 2011))
LINES = [("SKU-A", "Alpha mug", 3), ("SKU-B", "Beta plate", 1)]


def _orders() -> list[dict[str, Any]]:
    orders = generate_orders(len(ORDER_IDS), start=pendulum.datetime(2026, 11, 1, tz="UTC"),
                             end=pendulum.datetime(2026, 11, 2, tz="UTC"), seed=11, first_id=ORDER_IDS[0])
    for order in orders:
        order["status"] = "processing"  # PAID, unfulfilled
        order["fee_lines"] = []
        order["refunds"] = []
        order["customer_note"] = ""
        order["line_items"] = [
            {"id": order["id"] * 10 + n, "sku": sku, "name": name, "quantity": qty, "subtotal": "10.00",
             "total": "10.00"}
            for n, (sku, name, qty) in enumerate(LINES)
        ]
    return orders


# ------------------------------------------------------------------------------------------------
# the rules (no HTTP)
# ------------------------------------------------------------------------------------------------


def raw_order(*, financial: str = "PAID", cancelled: bool = False, fulfilled: dict[str, int] | None = None,
              numbers: tuple[str, ...] = (), note: str = "", fo_status: str = "OPEN",
              display: str | None = None) -> dict[str, Any]:
    """A READ_QUERY answer for order 7: SKU-A x3, SKU-B x1 on one fulfillment order."""
    fulfilled = fulfilled or {}
    lines = [("SKU-A", 3), ("SKU-B", 1)]
    fo_lines = [{"id": f"gid://shopify/FulfillmentOrderLineItem/{n}", "totalQuantity": q,
                 "remainingQuantity": q - fulfilled.get(sku, 0),
                 "lineItem": {"id": f"gid://shopify/LineItem/{n}", "sku": sku}}
                for n, (sku, q) in enumerate(lines, 1)]
    fulfillments = [{"id": "gid://shopify/Fulfillment/1", "status": "SUCCESS",
                     "trackingInfo": [{"company": "DHL", "number": n, "url": None} for n in numbers],
                     "fulfillmentLineItems": {"nodes": [
                         {"quantity": q, "lineItem": {"id": "x", "sku": sku}} for sku, q in fulfilled.items()],
                         "pageInfo": {"hasNextPage": False}}}] if fulfilled else []
    left = sum(q for _s, q in lines) - sum(fulfilled.values())
    return {
        "id": "gid://shopify/Order/7", "legacyResourceId": "7",
        "cancelledAt": "2026-12-01T00:00:00Z" if cancelled else None,
        "displayFinancialStatus": financial,
        "displayFulfillmentStatus": display or ("FULFILLED" if fulfilled and not left
                                                else "PARTIALLY_FULFILLED" if fulfilled else "UNFULFILLED"),
        "note": note, "tags": [],
        "lineItems": {"nodes": [{"id": f"gid://shopify/LineItem/{n}", "sku": sku, "name": sku, "quantity": q,
                                 "currentQuantity": q} for n, (sku, q) in enumerate(lines, 1)],
                      "pageInfo": {"hasNextPage": False}},
        "fulfillmentOrders": {"nodes": [{"id": "gid://shopify/FulfillmentOrder/1", "status": fo_status,
                                         "lineItems": {"nodes": fo_lines, "pageInfo": {"hasNextPage": False}}}],
                              "pageInfo": {"hasNextPage": False}},
        "fulfillments": fulfillments,
    }


def event(kind: str, **values: object) -> Any:
    if kind == "rejected":
        values.setdefault("note", "address incomplete")
    row = ship(7, **values) if kind == "shipped" else ev(7, kind, **values)
    return parse_status_file(status_csv(row), "f.csv").events[0]


def rule(kind: str, **order: Any) -> Effect | str:
    values = order.pop("event", {})
    e = event(kind, **values)
    state = order_state(raw_order(**order))
    return decide(e, state, note_text(e, state.lines))


def test_order_state_reads_the_status_word_lines_and_what_the_applier_needs() -> None:
    state = order_state(raw_order(financial="PARTIALLY_PAID", fulfilled={"SKU-A": 1}, numbers=("N1",)))
    assert (state.order_id, state.status) == (7, "partially_paid")
    assert state.lines == {"SKU-A": (3, "SKU-A"), "SKU-B": (1, "SKU-B")}
    assert ss.remaining(state.cache) == 3 and ss.fulfilled_units(state.cache, "SKU-A") == 1
    assert ss.carries(state.cache, "N1", "SKU-A") and not ss.carries(state.cache, "N1", "SKU-B")
    assert order_state(raw_order(cancelled=True)).status == "cancelled"


@pytest.mark.parametrize("kind", ["accepted", "rejected", "cancelled", "shipped"])
def test_every_event_for_a_cancelled_order_is_refused(kind: str) -> None:
    assert rule(kind, cancelled=True, financial="VOIDED") == "order is cancelled on the storefront"


@pytest.mark.parametrize("financial", ["REFUNDED", "VOIDED", "EXPIRED"])
@pytest.mark.parametrize("kind", ["accepted", "shipped"])
def test_refunded_voided_expired_orders_are_not_moved(kind: str, financial: str) -> None:
    assert "does not change refunded, voided or expired orders" in str(rule(kind, financial=financial))


@pytest.mark.parametrize("financial", ["PENDING", "AUTHORIZED", "PARTIALLY_PAID", "PAID", "PARTIALLY_REFUNDED"])
def test_active_orders_take_every_event(financial: str) -> None:
    assert rule("accepted", financial=financial) == Effect(None)
    assert rule("cancelled", financial=financial) == Effect("cancelled")
    assert rule("shipped", financial=financial) == Effect(None, customer_note=True)


@pytest.mark.parametrize("kind", ["accepted", "rejected", "cancelled"])
def test_a_move_backwards_from_a_fulfilled_order_is_refused(kind: str) -> None:
    assert rule(kind, fulfilled={"SKU-A": 3, "SKU-B": 1}) == f"order is fulfilled; {kind!r} would move it backwards"


def test_a_shipment_of_a_fulfilled_order() -> None:
    done = {"SKU-A": 3, "SKU-B": 1}
    # another tracking number: refused, saying so
    assert rule("shipped", fulfilled=done, numbers=("OTHER",)) == (
        "nothing remains to fulfil on the storefront and no fulfillment carries tracking number JJD000123")
    # its own tracking number on a fulfillment, or none given: Shopify shows it already
    assert rule("shipped", fulfilled=done, numbers=("JJD000123",)) == Effect(None, customer_note=True,
                                                                              recovered=True)
    recovered = rule("shipped", fulfilled=done, event={"tracking_number": "", "tracking_url": ""})
    assert isinstance(recovered, Effect) and recovered.recovered


def test_units_on_held_fulfillment_orders_are_refused() -> None:
    assert "ON_HOLD; release them in Shopify first" in str(rule("shipped", fo_status="ON_HOLD"))


def test_the_marker_line_recognises_the_event() -> None:
    e = event("accepted", note="ok")
    state = order_state(raw_order())
    note = note_text(e, state.lines)
    marked = order_state(raw_order(note=f"Gift wrap please\n{ss.marker_line(note)}"))
    assert decide(e, marked, note) == Effect(None, recovered=True)
    # a longer line that merely starts with the marker is another event's
    assert not ss.has_marker(f"{ss.marker_line(note)} and more", note)
    assert not ss.has_marker(note, note), "the event's text without the prefix is not our line"
    cancel = event("cancelled")
    cnote = note_text(cancel, state.lines)
    assert decide(cancel, order_state(raw_order(cancelled=True, note=ss.marker_line(cnote))), cnote) == Effect(
        "cancelled", recovered=True)
    # marked but not cancelled yet (the run stopped between the marker and orderCancel): cancel
    assert decide(cancel, order_state(raw_order(note=cnote)), cnote) == Effect("cancelled")


def test_a_marker_that_no_longer_fits_the_note_is_refused() -> None:
    assert "has no room for the event's line" in str(rule("accepted", note="x" * 4990))


def test_documents_are_valid_against_shopifys_schema() -> None:
    for doc in (ss.READ_QUERY, ss.NOTES_QUERY, ss.REMAINING_QUERY, ss.FULFILL_MUTATION, ss.CANCEL_MUTATION,
                ss.TAGS_ADD_MUTATION, ss.TAGS_REMOVE_MUTATION, ss.NOTE_MUTATION):
        assert validate_against_shopify(doc) == [], doc
    assert ss.read_cost(ss.LIMITS) * 4 <= 1000 and ss.read_cost(ss.WIDE_LIMITS) <= 1000
    assert validate_against_shopify(ss.REMAINING_QUERY, {"id": "gid://shopify/Order/1", "fos": 5, "first": 30}) == []


# ------------------------------------------------------------------------------------------------
# against the sandbox
# ------------------------------------------------------------------------------------------------


@dataclass
class Env:
    shop: SandboxShopify
    store: StoreConfig
    session: SftpSession
    applier: ShopifyStatus
    ledger: Ledger
    outbound: Path

    def sync(self, name: str, data: bytes) -> FileResult:
        self.outbound.mkdir(parents=True, exist_ok=True)
        (self.outbound / name).write_bytes(data)
        return sync_file(self.store, name, self.session, self.applier, self.ledger.status_events)

    def apply(self, data: bytes, ledger: Ledger | None = None) -> list[tuple[str, str | None]]:
        events = parse_status_file(data, "x.csv").events
        outcomes = apply_file(STORE, events, self.applier, (ledger or self.ledger).status_events,
                              source_file="x.csv")
        return [(o.outcome, o.new_status) for o in outcomes]

    def order(self, oid: int) -> dict[str, Any]:
        found = self.shop.order(oid)
        assert found is not None
        return found

    def shipped(self, oid: int) -> list[tuple[list[dict[str, Any]], int]]:
        """(tracking, units) of each fulfillment."""
        return [(f["tracking"], sum(q for _i, _l, q in f["lines"])) for f in self.order(oid)["fulfillments"]]

    def marker_lines(self, oid: int) -> list[str]:
        return [line for line in (self.order(oid)["note"] or "").splitlines() if "backend" in line
                or "shipped" in line]

    def mutations(self) -> list[str]:
        return [r["body"] for r in self.shop.request_log
                if json.loads(r["body"]).get("query", "").lstrip().startswith("mutation")]

    def rows(self) -> list[dict[str, Any]]:
        return self.ledger.status_events.recorded(STORE, None)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, sftp_server: EmbeddedSftpServer, tmp_path: Path) -> Iterator[Env]:
    shop = SandboxShopify(_orders(), token=TOKEN).start()
    monkeypatch.setenv(f"AIRFLOW_CONN_{SHOP_CONN.upper()}", json.dumps(
        {"conn_type": "http", "host": shop.base_url, "password": TOKEN}))
    monkeypatch.setenv(f"AIRFLOW_CONN_{SFTP_CONN.upper()}", json.dumps(sftp_server.airflow_connection()))
    outbound = f"outbound_{uuid.uuid4().hex[:8]}"
    store = StoreConfig(id=STORE, storefront_conn_id=SHOP_CONN, backend_conn_id=SFTP_CONN,
                        backend=BackendConfig(outbound_dir=outbound))
    applier = get_status_applier("shopify", SHOP_CONN, timeout=10, sleep=lambda _s: None)
    assert isinstance(applier, ShopifyStatus)
    try:
        with applier, SftpBackend(SFTP_CONN, conn_retry_attempts=1).session() as session:
            yield Env(shop, store, session, applier, Ledger(sqlite_engine(tmp_path / "l.db"), create=True),
                      sftp_server.root / outbound)
    finally:
        shop.stop()


def test_read_orders_many_per_request_and_leaves_unknown_ids_out(env: Env) -> None:
    found = env.applier.read_orders([*ORDER_IDS, 999_999])
    assert sorted(found) == ORDER_IDS
    reads = [r for r in env.shop.request_log if "StatusOrders" in r["body"]]
    assert len(reads) == 3  # 4 orders a request (224 points each), 11 ids
    assert found[2001].lines == {"SKU-A": (3, "Alpha mug"), "SKU-B": (1, "Beta plate")}


def test_whole_shipment_with_tracking_then_the_same_file_again(env: Env) -> None:
    data = status_csv(ship(2001))
    result = env.sync("s.csv", data)
    assert result.ok and result.counts["applied"] == 1
    assert env.shipped(2001) == [([{"company": "DHL", "number": "JJD000123",
                                    "url": "https://track.example/JJD000123"}], 4)]
    assert env.order(2001)["note"].splitlines()[-1].startswith("[order-integration] Your order was shipped on 2026-11-29 10:00 UTC")
    mutations = len(env.mutations())
    again = env.sync("s2.csv", data)
    assert again.counts["skipped_duplicate"] == 1 and len(env.mutations()) == mutations
    # with a ledger that never saw it (a crash before the row): Shopify answers, nothing is written
    fresh = Ledger(sqlite_engine(env.outbound.parent / f"{uuid.uuid4().hex}.db"), create=True)
    assert env.apply(data, fresh) == [("applied", None)]
    assert len(env.mutations()) == mutations and len(env.shipped(2001)) == 1


def test_whole_shipment_without_tracking(env: Env) -> None:
    # the contract wants a carrier or a tracking number: the carrier alone
    assert env.apply(status_csv(ship(2002, tracking_number="", tracking_url=""))) == [("applied", None)]
    assert env.shipped(2002) == [([{"company": "DHL", "number": None, "url": None}], 4)]
    assert env.order(2002)["fulfillmentOrders"][0]["status"] == "CLOSED"


def test_partial_shipments_spread_and_recognised(env: Env) -> None:
    data = status_csv(ship(2003, sku="SKU-A", quantity="2", tracking_number="P1", tracking_url=""),
                      ship(2003, sku="SKU-A", quantity="1", tracking_number="", tracking_url="",
                           occurred_at="2026-11-29T11:00:00Z"),
                      ship(2003, sku="SKU-B", quantity="1", tracking_number="P1", tracking_url=""))
    assert env.apply(data) == [("applied", None)] * 3
    assert [units for _t, units in env.shipped(2003)] == [2, 1, 1]
    assert [t[0]["number"] for t, _u in env.shipped(2003)] == ["P1", None, "P1"]
    assert len(env.marker_lines(2003)) == 3
    mutations = len(env.mutations())
    fresh = Ledger(sqlite_engine(env.outbound.parent / f"{uuid.uuid4().hex}.db"), create=True)
    assert env.apply(data, fresh) == [("applied", None)] * 3
    assert len(env.mutations()) == mutations  # all three recognised by their marker lines


def test_a_crash_between_the_fulfillment_and_the_marker_is_recognised(env: Env) -> None:
    # the fulfillment went through (here: applied through the sandbox), the marker and the ledger row did not
    with_number = status_csv(ship(2004, sku="SKU-A", quantity="2"))
    without = status_csv(ship(2005, sku="SKU-A", quantity="2", tracking_number="", tracking_url=""))
    for oid, data in ((2004, with_number), (2005, without)):
        probe = ShopifyStatus(SHOP_CONN, timeout=10, sleep=lambda _s: None)
        state = probe.read_orders([oid])[oid]
        item = next(i for i in state.cache["fo_items"] if i["sku"] == "SKU-A")
        tracking = {"company": "DHL", "number": "JJD000123"} if oid == 2004 else {"company": "DHL"}
        probe.execute(ss.FULFILL_MUTATION, {"fulfillment": {
            "lineItemsByFulfillmentOrder": [{"fulfillmentOrderId": item["fo"],
                                             "fulfillmentOrderLineItems": [{"id": item["id"], "quantity": 2}]}],
            "trackingInfo": tracking}}, operation="Probe")
        probe.close()
        before = len(env.mutations())
        assert env.apply(data) == [("applied", None)]
        assert [u for _t, u in env.shipped(oid)] == [2]  # not shipped twice
        assert len(env.marker_lines(oid)) == 1
        assert len(env.mutations()) == before + 1  # the marker line only
    assert env.rows()[-1]["outcome"] == "applied"


def test_a_lost_fulfillment_answer_is_not_sent_twice(env: Env) -> None:
    # the sandbox applies fulfillmentCreate and truncates its answer: the transport retries it
    original = env.applier._attempt
    calls = {"n": 0}

    def attempt(payload: dict[str, Any], operation: str, estimate: float) -> dict[str, Any]:
        if operation == "StatusFulfil" and calls["n"] == 0:
            calls["n"] += 1
            env.shop.state.faults.append({"type": "truncated"})
        return original(payload, operation, estimate)

    env.applier._attempt = attempt  # type: ignore[method-assign]
    assert env.apply(status_csv(ship(2006, sku="SKU-A", quantity="1"))) == [("applied", None)]
    assert [u for _t, u in env.shipped(2006)] == [1]
    assert len(env.marker_lines(2006)) == 1


def test_cancelled_accepted_rejected(env: Env) -> None:
    data = status_csv(ev(2007, "cancelled", note="out of stock"), ev(2008, "accepted"),
                      ev(2009, "rejected", note="address incomplete"))
    assert env.apply(data) == [("applied", "cancelled"), ("applied", None), ("applied", None)]
    cancelled = env.order(2007)
    assert cancelled["cancelledAt"] and cancelled["cancelReason"] == "OTHER"
    assert cancelled["financial"] == "PAID" and not cancelled["refunds"]  # no refund
    assert cancelled["staffNote"].startswith("Cancelled by the backend on 2026-11-29 10:00 UTC. out of stock")
    assert env.order(2008)["tags"] == ["erp-accepted"]
    assert env.order(2009)["tags"] == ["erp-rejected"]
    assert env.marker_lines(2009) == ["[order-integration] Rejected by the backend on 2026-11-29 10:00 UTC: address incomplete"]
    # rejected after accepted swaps the tags
    assert env.apply(status_csv(ev(2008, "rejected", note="fraud", occurred_at="2026-11-30T10:00:00Z"))) == [
        ("applied", None)]
    assert env.order(2008)["tags"] == ["erp-rejected"]
    mutations = len(env.mutations())
    fresh = Ledger(sqlite_engine(env.outbound.parent / f"{uuid.uuid4().hex}.db"), create=True)
    assert env.apply(data, fresh) == [("applied", "cancelled"), ("applied", None), ("applied", None)]
    assert len(env.mutations()) == mutations


def test_a_crash_between_the_cancel_marker_and_the_cancel_completes(env: Env) -> None:
    data = status_csv(ev(2010, "cancelled"))
    e = parse_status_file(data, "x.csv").events[0]
    env.shop.touch_order(2010, note=ss.marker_line(note_text(e)))  # the marker went first, orderCancel never ran
    assert env.apply(data) == [("applied", "cancelled")]
    assert env.order(2010)["cancelledAt"] and len(env.marker_lines(2010)) == 1


def test_refusals_and_unknown_orders_go_to_error(env: Env) -> None:
    env.apply(status_csv(ev(2001, "cancelled")))
    result = env.sync("r.csv", status_csv(ev(2001, "accepted"), ev(999_999, "accepted"),
                                          ship(2002, sku="SKU-A", quantity="9")))
    assert [o.outcome for o in result.outcomes] == [
        "refused: order is cancelled on the storefront", "error: order not found",
        "refused: over-shipment: sku 'SKU-A' ordered 3, already shipped 0, this event ships 9"]
    assert result.errors_file is not None


def test_a_refused_cancel_is_the_lines_error_and_takes_the_marker_off(env: Env) -> None:
    # an earlier cancel applied outside the sync between the read and the write
    original = env.applier.read_orders

    def read_then_cancel(ids: Any) -> Any:
        found = original(ids)
        env.shop.state.orders[2003]["cancelledAt"] = pendulum.now("UTC")
        return found

    env.applier.read_orders = read_then_cancel  # type: ignore[method-assign]
    assert env.apply(status_csv(ev(2003, "cancelled"))) == [(
        "error: orderCancel refused by the storefront: orderId: Cannot cancel an order that has already "
        "been cancelled", None)]
    assert env.marker_lines(2003) == []


def test_a_refused_fulfillment_is_the_lines_error(env: Env) -> None:
    original = env.applier.read_orders

    def read_then_close(ids: Any) -> Any:
        found = original(ids)
        env.shop.state.orders[2004]["fulfillmentOrders"][0]["status"] = "CLOSED"
        return found

    env.applier.read_orders = read_then_close  # type: ignore[method-assign]
    assert env.apply(status_csv(ship(2004))) == [(
        "error: fulfillmentCreate refused by the storefront: fulfillment: Fulfillment order is not in an "
        "actionable state.", None)]
    assert env.marker_lines(2004) == []


def test_transient_failures_are_retried_and_refused_credentials_raise(env: Env) -> None:
    env.shop.inject_faults([{"type": "503", "retry_after": 0}, {"type": "throttled"}])
    assert env.apply(status_csv(ev(2005, "accepted"))) == [("applied", None)]
    env.shop.inject_faults([{"type": "500", "times": 20}])
    with pytest.raises(StorefrontError):
        env.apply(status_csv(ev(2006, "accepted")))
    env.shop.state.faults.clear()
    env.shop.set_scopes(["read_orders"])
    with pytest.raises(StorefrontAuthError):
        env.apply(status_csv(ev(2007, "accepted")))


def test_a_crash_in_the_middle_of_a_wave_is_completed_by_the_rerun(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fp").mkdir()
    (tmp_path / "fp" / "plan.json").write_text(json.dumps(
        {"status_sync.mid_writes": {"action": "raise", "times": 1, "store": STORE}}))
    monkeypatch.setenv(ENV, str(tmp_path / "fp"))
    data = status_csv(ev(2001, "accepted"), ship(2002))
    with pytest.raises(InjectedFault):
        env.apply(data)
    assert env.order(2001)["tags"] == ["erp-accepted"] and not env.shipped(2002)
    assert env.rows() == []  # nothing recorded: the first order's writes are on Shopify only
    before = len(env.mutations())
    assert env.apply(data) == [("applied", None), ("applied", None)]
    assert len(env.marker_lines(2001)) == 1 and [u for _t, u in env.shipped(2002)] == [4]
    assert len(env.mutations()) == before + 2  # the shipment and its marker; 2001 recognised


def test_a_partial_shipment_spreads_over_fulfillment_orders_and_ships_only_missing_units() -> None:
    raw = raw_order()
    first = raw["fulfillmentOrders"]["nodes"][0]
    second = json.loads(json.dumps(first).replace("FulfillmentOrderLineItem/", "FulfillmentOrderLineItem/9"))
    second["id"] = "gid://shopify/FulfillmentOrder/2"
    for fo in (first, second):  # SKU-A: 2 units left on each
        fo["lineItems"]["nodes"][0]["remainingQuantity"] = 2
    raw["fulfillmentOrders"]["nodes"].append(second)
    e = event("shipped", sku="SKU-A", quantity="3", tracking_number="", tracking_url="")
    state = order_state(raw)
    applier = ShopifyStatus("unused")
    change = StatusChange(e, state, "n", Effect(None, customer_note=True), write_status=False, shipped_before=0)
    assert applier._by_line(change) == {"gid://shopify/FulfillmentOrderLineItem/1": 2,
                                        "gid://shopify/FulfillmentOrderLineItem/91": 1}
    # Shopify already shows 1 unit more than the earlier events shipped: a re-run ships the rest only
    state.cache["fulfillments"] = [{"id": "f", "status": "SUCCESS", "numbers": [],
                                    "lines": [("l", "SKU-A", 2)]}]
    change.shipped_before = 1
    assert sum(applier._by_line(change).values()) == 2
    change.shipped_before = 0
    assert applier._by_line(change) is not None and sum(applier._by_line(change).values()) == 1
    state.cache["fulfillments"][0]["lines"] = [("l", "SKU-A", 3)]
    assert applier._by_line(change) is None  # all there: recovered


# ------------------------------------------------------------------------------------------------
# money: paid and refunded (issue 16)
# ------------------------------------------------------------------------------------------------

MONEY_COLUMNS = ("order_id", "event", "occurred_at", "carrier", "tracking_number", "tracking_url", "sku",
                 "quantity", "note", "amount", "currency", "reference")


def money_event(kind: str, **values: object) -> Any:
    return parse_status_file(status_csv(ev(7, kind, **values), columns=MONEY_COLUMNS), "m.csv").events[0]


def money_order(*, financial: str = "PAID", note: str = "", fully_paid: bool | None = None,
                refunded: str = "0.00", **kw: Any) -> dict[str, Any]:
    raw = raw_order(financial=financial, note=note, **kw)
    raw.update(fullyPaid=financial == "PAID" if fully_paid is None else fully_paid,
               totalPriceSet={"shopMoney": {"amount": "40.00", "currencyCode": "EUR"}},
               totalRefundedSet={"shopMoney": {"amount": refunded, "currencyCode": "EUR"}})
    return raw


def canned_refund(reference: str, amount: str, *, moved: str = "0.0", lines: tuple[tuple[str, int], ...] = ()
                  ) -> dict[str, Any]:
    """A REFUNDS_QUERY refund as Shopify answers it."""
    return {"id": "gid://shopify/Refund/1", "note": f"Refund booked\n[order-integration] backend refund {amount} EUR, "
                                                    f"reference {reference}",
            "totalRefundedSet": {"shopMoney": {"amount": moved, "currencyCode": "EUR"}},
            "refundLineItems": {"nodes": [{"quantity": q, "lineItem": {"id": "x", "sku": s}} for s, q in lines],
                                "pageInfo": {"hasNextPage": False}}}


def test_the_orders_money_from_the_status_read() -> None:
    state = order_state(money_order(financial="PARTIALLY_REFUNDED", refunded="5.00"))
    assert state.payment is not None
    assert (state.payment.currency, state.payment.total, state.payment.refunded, state.payment.paid) == (
        "EUR", Decimal("40.00"), Decimal("5.00"), True)
    assert not order_state(money_order(financial="PENDING")).payment.paid  # type: ignore[union-attr]
    assert order_state(money_order(financial="PARTIALLY_PAID", fully_paid=True)).payment.paid  # type: ignore[union-attr]
    # the backend's transaction-less refunds count from their marker; Shopify's own from its totals
    state = order_state(money_order(refunded="5.00"))
    assert sm.add_refunds(state, [canned_refund("CN-1", "12.30"), canned_refund("CN-2", "3.00", moved="3.00"),
                                  {"id": "r", "note": "a person's refund", "totalRefundedSet": {}}]) is None
    assert state.payment.references == {"CN-1", "CN-2"}  # type: ignore[union-attr]
    assert state.payment.refunded == Decimal("17.30")  # type: ignore[union-attr]
    assert "more refunds" in str(sm.add_refunds(state, [canned_refund(f"R{n}", "1.00") for n in range(8)]))
    assert sm.refund_mark("x\n[order-integration] backend refund 1.000 KWD, reference A (b) c") == (
        Decimal("1.000"), "KWD", "A (b) c")


@pytest.mark.parametrize(("financial", "fully_paid", "expected"), [
    ("PENDING", False, Effect("paid")),
    ("PARTIALLY_PAID", False, Effect("paid")),
    ("AUTHORIZED", False, "authorized by its gateway"),
    ("PAID", True, "already paid on the storefront"),
    ("PARTIALLY_REFUNDED", True, "already paid on the storefront"),
])
def test_paid_by_financial_status(financial: str, fully_paid: bool, expected: Effect | str) -> None:
    e = money_event("paid", reference="PAY-1")
    state = order_state(money_order(financial=financial, fully_paid=fully_paid))
    effect = decide(e, state, note_text(e))
    if isinstance(expected, Effect):
        assert effect == expected
    else:  # the note only, reported as refused: no payment marked twice, no authorization captured
        assert isinstance(effect, Effect) and effect.target is None and expected in str(effect.note_only)


def test_paid_is_recognised_by_its_marker_line_with_the_reference() -> None:
    e = money_event("paid", reference="PAY-1")
    marker = ss.marker_line(note_text(money_event("paid", reference="PAY-1", occurred_at="2026-11-30T08:00:00Z")))
    # another file's line (another time) with the same reference: the order shows it paid by us
    assert decide(e, order_state(money_order(note=marker)), note_text(e)) == Effect("paid", recovered=True)
    # the marker went first and the run stopped before orderMarkAsPaid: mark it paid now
    assert decide(e, order_state(money_order(financial="PENDING", note=marker)), note_text(e)) == Effect("paid")
    other = money_event("paid", reference="PAY-2")
    assert decide(other, order_state(money_order(note=marker)), note_text(other)).note_only  # type: ignore[union-attr]
    # a line written as the note only is no payment to complete (an authorized order is never captured)
    noted = ss.marker_line(sm.noted_only(note_text(e)))
    for financial in ("AUTHORIZED", "PAID"):
        effect = decide(e, order_state(money_order(financial=financial, note=noted)), note_text(e))
        assert isinstance(effect, Effect) and effect.note_only and not effect.recovered


def test_refunded_rules() -> None:
    e = money_event("refunded", amount="5.00", currency="EUR", reference="CN-1")
    state = order_state(money_order())
    state.cache["refunds_problem"] = sm.add_refunds(state, [])
    assert decide(e, state, note_text(e)) == Effect(None)  # Shopify's financial status does not change
    state = order_state(money_order())
    sm.add_refunds(state, [canned_refund("CN-1", "5.00")])
    assert decide(e, state, note_text(e)) == Effect(None, recovered=True)
    assert "not paid on the storefront" in str(decide(e, order_state(money_order(financial="PENDING")), "n"))
    assert decide(e, order_state(money_order(cancelled=True)), "n") == "order is cancelled on the storefront"
    assert "does not change refunded" in str(decide(e, order_state(money_order(financial="REFUNDED")), "n"))


def test_line_refunds_name_line_items_and_restock_types() -> None:
    state = order_state(money_order(fulfilled={"SKU-A": 2}))
    state.cache["line_items"][0]["fulfilled"] = 2  # canned fulfillment lines carry no line ids
    assert sm.refund_lines(state, "SKU-A", 1, restock=True) == [
        {"lineItemId": "gid://shopify/LineItem/1", "quantity": 1, "restockType": "CANCEL"}]  # 1 unfulfilled
    assert sm.refund_lines(state, "SKU-A", 2, restock=True)[0]["restockType"] == "RETURN"
    assert sm.refund_lines(state, "SKU-A", 2, restock=False)[0]["restockType"] == "NO_RESTOCK"
    state.payment.refunded_units["SKU-A"] = 2  # type: ignore[union-attr]  # earlier lines of this file
    assert sm.refund_lines(state, "SKU-A", 1, restock=False)[0]["quantity"] == 1


def test_money_documents_are_valid_against_shopifys_schema() -> None:
    gid = "gid://shopify/Order/7"
    assert validate_against_shopify(sm.REFUNDS_QUERY, {"id": gid}) == []
    assert validate_against_shopify(sm.PAID_QUERY, {"id": gid}) == []
    assert validate_against_shopify(sm.MARK_PAID_MUTATION, {"input": {"id": gid}}) == []
    refund = {"orderId": gid, "note": "n", "notify": False, "refundLineItems": [
        {"lineItemId": "gid://shopify/LineItem/1", "quantity": 1, "restockType": "RETURN"}]}
    assert validate_against_shopify(sm.REFUND_MUTATION, {"input": refund, "key": "k"}) == []
    assert sm.REFUNDS_COST <= 1000


@pytest.fixture
def money_env(env: Env) -> Env:
    """``env`` with a bucket that no-op sleeps never exhaust (these tests send many reads)."""
    env.shop.set_bucket(100_000, 100_000)
    return env


def unpaid_order(env: Env, oid: int, financial: str = "PENDING") -> None:
    env.shop.state.orders[oid]["financial"] = financial


def test_paid_marks_pending_orders_paid_once_and_notes_the_rest(money_env: Env) -> None:
    env = money_env
    unpaid_order(env, 2001)
    unpaid_order(env, 2002, "AUTHORIZED")
    total = env.order(2001)["total"]
    data = status_csv(ev(2001, "paid", amount=str(total), currency=env.order(2001)["currency"], reference="PAY-1"),
                      ev(2002, "paid", reference="PAY-2"), ev(2003, "paid", reference="PAY-3"),
                      ev(2004, "paid", amount="0.01", currency=env.order(2004)["currency"], reference="PAY-4"), columns=MONEY_COLUMNS)
    outcomes = env.apply(data)
    assert outcomes[0] == ("applied", "paid")
    assert "authorized by its gateway" in outcomes[1][0] and "already paid" in outcomes[2][0]
    assert "differs from the order's total" in outcomes[3][0]
    assert env.order(2001)["financial"] == "PAID" and env.order(2002)["financial"] == "AUTHORIZED"
    assert [line for line in env.marker_lines(2001) if "PAY-1" in line] != []
    assert len(env.marker_lines(2002)) == len(env.marker_lines(2003)) == 1  # the notes only
    assert env.marker_lines(2002)[0].endswith(sm.NOTED_ONLY)
    assert env.marker_lines(2004) == []
    # the same line again with a fresh ledger (a crash before the ledger): recognised, nothing written
    mutations = len(env.mutations())
    fresh = Ledger(sqlite_engine(env.outbound.parent / f"{uuid.uuid4().hex}.db"), create=True)
    assert env.apply(status_csv(ev(2001, "paid", reference="PAY-1"), columns=MONEY_COLUMNS), fresh) == [
        ("applied", "paid")]
    assert len(env.mutations()) == mutations
    # the whole file again: the notes-only lines are refused again and written once, nothing captured
    again = env.apply(data, fresh)
    assert again[0] == ("applied", "paid") and again[1][0].startswith("refused: order has a payment authorized")
    assert len(env.mutations()) == mutations and env.order(2002)["financial"] == "AUTHORIZED"
    assert len(env.marker_lines(2002)) == len(env.marker_lines(2003)) == 1


def test_a_refused_mark_as_paid_is_the_lines_error_and_takes_the_marker_off(money_env: Env) -> None:
    env = money_env
    unpaid_order(env, 2005)
    original = env.applier.read_orders

    def read_then_pay(ids: Any) -> Any:
        found = original(ids)
        env.shop.state.orders[2005]["financial"] = "PAID"  # paid in Shopify between the read and the write
        return found

    env.applier.read_orders = read_then_pay  # type: ignore[method-assign]
    assert env.apply(status_csv(ev(2005, "paid", reference="PAY-5"), columns=MONEY_COLUMNS)) == [
        ("error: orderMarkAsPaid refused by the storefront: id: Order cannot be marked as paid.", None)]
    assert env.marker_lines(2005) == []


def test_refunds_by_line_and_whole_move_no_money_and_are_never_made_twice(money_env: Env) -> None:
    env = money_env
    order = env.order(2006)
    currency = order["currency"]
    line_id = order["lineItems"][0]["id"]
    data = status_csv(
        ev(2006, "refunded", sku="SKU-A", quantity="2", amount="5.00", currency=currency, reference="CN-1",
           note="broken"),
        ev(2006, "refunded", sku="SKU-A", quantity="2", amount="1.00", currency=currency, reference="CN-2"),
        ev(2007, "refunded", amount=str(env.order(2007)["total"]), currency=env.order(2007)["currency"],
           reference="CN-3"),
        ev(2008, "refunded", amount=str(Decimal(str(env.order(2008)["total"])) + 1),
           currency=env.order(2008)["currency"], reference="CN-4"),
        columns=MONEY_COLUMNS)
    outcomes = env.apply(data)
    assert outcomes[0] == ("applied", None) and outcomes[2] == ("applied", None)
    assert "over-refund: sku 'SKU-A' ordered 3, already refunded 2" in outcomes[1][0]
    assert "exceeds what remains refundable" in outcomes[3][0]
    [refund] = env.order(2006)["refunds"]
    assert Decimal(str(refund["amount"])) == 0 and list(refund["lines"][0][1:]) == [line_id, 2, "NO_RESTOCK"]  # no money moved
    assert "broken" in refund["note"] and "[order-integration] backend refund 5.00" in refund["note"]
    assert env.order(2006)["financial"] == env.order(2007)["financial"] == "PAID"
    assert env.order(2007)["refunds"][0]["lines"] == []  # a whole refund names no lines
    # what remains counts the backend's refunds: a second full refund of 2007 is refused
    again = env.apply(status_csv(ev(2007, "refunded", amount="1", currency=env.order(2007)["currency"],
                                    reference="CN-5"),
                                 columns=MONEY_COLUMNS))
    assert "exceeds what remains refundable" in str(again[0][0])
    # the same lines with a fresh ledger: recognised by their references on the refunds
    mutations = len(env.mutations())
    fresh = Ledger(sqlite_engine(env.outbound.parent / f"{uuid.uuid4().hex}.db"), create=True)
    assert env.apply(data, fresh)[0] == ("applied", None)
    assert len(env.mutations()) == mutations and len(env.order(2006)["refunds"]) == 1


def test_a_lost_refund_answer_is_not_sent_twice_and_restock_puts_units_back(money_env: Env) -> None:
    env = money_env
    env.shop.add_catalog([{"id": 1, "name": "Warehouse"}], [{"id": 9, "sku": "SKU-B", "levels": {1: 5}}])
    original = env.applier._attempt
    calls = {"n": 0}

    def attempt(payload: dict[str, Any], operation: str, estimate: float) -> dict[str, Any]:
        if operation == "StatusRefund" and calls["n"] == 0:
            calls["n"] += 1
            env.shop.state.faults.append({"type": "truncated"})  # applied, the answer lost
        return original(payload, operation, estimate)

    env.applier._attempt = attempt  # type: ignore[method-assign]
    events = parse_status_file(status_csv(
        ev(2009, "refunded", sku="SKU-B", quantity="1", amount="2.00", currency=env.order(2009)["currency"],
           reference="CN-9"), columns=MONEY_COLUMNS), "x.csv").events
    [outcome] = apply_file(STORE, events, env.applier, env.ledger.status_events, restock_refunds=True)
    assert outcome.outcome == "applied"
    [refund] = env.order(2009)["refunds"]
    assert refund["lines"][0][3] == "CANCEL"  # unfulfilled units: cancelled and restocked
    assert env.shop.inventory()["SKU-B"] == {"Warehouse": 6}
