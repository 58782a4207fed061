"""The sandbox ERP simulator against the in-process SFTP server, through the real SftpBackend."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pendulum
import pytest

from order_integration.backend.formats import write_orders
from order_integration.backend.sftp import SftpBackend, SftpSession
from order_integration.backend.status_files import parse_status_file
from order_integration.config import BackendConfig, StoreConfig
from order_integration.exceptions import BackendError
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.model import LineItem
from order_integration.status_sync import sync_file
from order_integration.storefronts.woocommerce_normalise import normalise_order
from order_integration.storefronts.woocommerce_writes import WooCommerceWriter
from sandbox import erp_simulator
from sandbox.erp_simulator import (
    MONEY_COLUMNS,
    MONEY_FAULTS,
    STATUS_COLUMNS,
    UNKNOWN_ORDER_ID,
    ErpSimulator,
    MoneyPolicy,
    StatusEvent,
)
from sandbox.generator import generate_orders
from sandbox.sftp_server import EmbeddedSftpServer
from sandbox.storefront import SandboxStorefront
from tests.support.orders import make_order

pytestmark = pytest.mark.unit

CONN_ID = "erp_sim_test"
NOW = pendulum.datetime(2026, 11, 2, 12, 0, tz="UTC")
STATUS_NAME = re.compile(r"^status_\d{8}T\d{6}Z_\d+\.csv$")
EVENTS = {"accepted", "shipped", "cancelled", "rejected"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSftpServer]:
    base = tmp_path_factory.mktemp("erp_sftp")
    with EmbeddedSftpServer(base / "root", base / "keys") as srv:
        yield srv


@pytest.fixture
def area(server: EmbeddedSftpServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh directory on the server for this test (as seen locally); the connection defined."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(server.airflow_connection()))
    name = uuid.uuid4().hex[:10]
    local = server.root / name
    (local / "inbound").mkdir(parents=True)
    return local


def _sim(area: Path, **kwargs) -> ErpSimulator:
    d = area.name
    kwargs.setdefault("clock", lambda: NOW)
    return ErpSimulator(CONN_ID, inbound_dir=f"{d}/inbound", outbound_dir=f"{d}/outbound",
                        processed_dir=f"{d}/erp_processed", **kwargs)


def _orders(n: int, first: int = 5000, **changes):
    """``n`` valid orders with 1-3 lines of 1-3 units each (varied, so every outcome occurs)."""
    out = []
    for i in range(n):
        lines = tuple(
            LineItem(j + 1, f"SKU-{first + i}-{j}", f"Thing {j}", 1 + (i + j) % 3, Decimal("2.00"),
                     Decimal("2.00"), Decimal("2.00"), Decimal("0.38"))
            for j in range(1 + i % 3)
        )
        out.append(make_order(str(first + i), lines=lines, **changes))
    return out


def _put(area: Path, name: str, orders, fmt: str = "csv") -> bytes:
    buffer = io.BytesIO()
    write_orders([o.record() for o in orders], fmt, buffer)
    (area / "inbound" / name).write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _status_files(area: Path) -> list[Path]:
    out = area / "outbound"
    return sorted(out.iterdir()) if out.exists() else []


def _rows(data: bytes) -> tuple[list[str], list[StatusEvent]]:
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    header, *rows = list(reader)
    return header, [StatusEvent(*row) for row in rows]


# -- pick-up, move, atomic status file ----------------------------------------------------------


def test_answers_complete_file_ignores_part_and_dot_files(area: Path) -> None:
    _put(area, "orders_demo_a.csv", _orders(20))
    _put(area, ".orders_demo_b.csv.part", _orders(3, first=9000))  # upload still running
    _put(area, ".hidden.csv", _orders(3, first=9100))
    (area / "inbound" / "readme.txt").write_text("not an orders file")

    report = _sim(area).run_once()

    assert report.files_read == ["orders_demo_a.csv"]
    assert sorted(p.name for p in (area / "inbound").iterdir()) == [
        ".hidden.csv", ".orders_demo_b.csv.part", "readme.txt"]
    assert [p.name for p in (area / "erp_processed").iterdir()] == ["orders_demo_a.csv"]
    files = _status_files(area)
    assert [p.name for p in files] == report.status_files  # only the final name, no .part left
    assert len(files) == 1 and STATUS_NAME.match(files[0].name)
    header, events = _rows(files[0].read_bytes())
    assert header == list(STATUS_COLUMNS)
    assert events == report.events
    assert {e.order_id for e in events} <= {str(5000 + i) for i in range(20)}
    assert all(e.event in EVENTS and e.occurred_at.endswith("Z") for e in events)
    for e in events:
        assert pendulum.parse(e.occurred_at) <= NOW
    assert not files[0].read_bytes().startswith(b"\xef\xbb\xbf")
    assert sum(report.counts.values()) == len(events)


def test_every_outcome_occurs_and_summary_line(area: Path) -> None:
    _put(area, "orders_demo_mix.csv", _orders(80))
    report = _sim(area).run_once()

    assert set(report.counts) == EVENTS  # the sample is big enough for the other tests to bite
    (summary,) = report.files
    assert summary.orders == 80
    assert summary.partial > 0 and summary.shipped > summary.partial
    assert summary.accepted + summary.rejected + summary.cancelled == 80
    assert summary.accepted > 0.55 * 80  # "most accepted"
    # counts per event lines vs per orders agree for the one-line-per-order events
    assert report.counts["accepted"] == summary.accepted
    assert report.counts["rejected"] == summary.rejected
    assert report.counts["cancelled"] == summary.cancelled
    (line,) = report.lines()
    assert re.fullmatch(
        rf"answered orders_demo_mix\.csv: {summary.accepted} accepted, {summary.shipped} shipped "
        rf"\({summary.partial} partial\), {summary.rejected} rejected, {summary.cancelled} cancelled "
        rf"-> {report.status_files[0]}", line)
    for e in report.events:
        if e.event in ("rejected", "cancelled"):
            assert e.note
        if e.event == "shipped":
            assert e.carrier in erp_simulator.CARRIERS
            assert e.tracking_number and e.tracking_number in e.tracking_url


def test_deterministic_for_same_seed_and_input(server: EmbeddedSftpServer, area: Path,
                                              tmp_path: Path) -> None:
    orders = _orders(40)
    _put(area, "orders_demo_x.csv", orders)
    first = _sim(area).run_once()

    other = server.root / f"{area.name}-2"
    (other / "inbound").mkdir(parents=True)
    _put(other, "orders_demo_x.csv", orders)
    second = _sim(other).run_once()
    assert second.events == first.events
    assert _status_files(other)[0].read_bytes() == _status_files(area)[0].read_bytes()

    third_dir = server.root / f"{area.name}-3"
    (third_dir / "inbound").mkdir(parents=True)
    _put(third_dir, "orders_demo_x.csv", orders)
    assert _sim(third_dir, seed=8).run_once().events != first.events


def test_accepted_comes_before_shipped(area: Path) -> None:
    _put(area, "orders_demo_s.csv", _orders(60))
    events = _sim(area).run_once().events

    kinds = [e.event for e in events]
    assert "shipped" in kinds
    last_accepted = max(i for i, k in enumerate(kinds) if k == "accepted")
    first_shipped = kinds.index("shipped")
    assert last_accepted < first_shipped
    accepted = {e.order_id: e.occurred_at for e in events if e.event == "accepted"}
    for e in events:
        if e.event == "shipped":
            assert e.order_id in accepted
            assert pendulum.parse(e.occurred_at) >= pendulum.parse(accepted[e.order_id])
    # one decision per order: no order both rejected/cancelled and accepted
    for e in events:
        if e.event in ("rejected", "cancelled"):
            assert e.order_id not in accepted


def test_shipments_cover_the_order_exactly(area: Path) -> None:
    orders = _orders(80)
    _put(area, "orders_demo_p.csv", orders)
    events = _sim(area).run_once().events

    wanted = {o.order_id: Counter() for o in orders}
    for o in orders:
        for line in o.lines:
            wanted[o.order_id][line.sku] += line.quantity
    parts: dict[str, Counter] = defaultdict(Counter)
    whole: Counter = Counter()
    split_line = False
    for e in events:
        if e.event != "shipped":
            continue
        if e.sku:
            assert e.quantity.isdigit() and int(e.quantity) > 0
            split_line |= parts[e.order_id][e.sku] > 0
            parts[e.order_id][e.sku] += int(e.quantity)
        else:
            assert e.quantity == ""
            whole[e.order_id] += 1
    assert parts and whole
    assert split_line  # some line's quantity went out in two events
    for order_id, shipped in parts.items():
        assert order_id not in whole  # shipped either whole or in parts, never both
        assert shipped == wanted[order_id]
        assert len({e.tracking_number for e in events if e.order_id == order_id and e.sku}) >= 2
    assert all(n == 1 for n in whole.values())


def test_cancelled_orders_get_no_events(area: Path) -> None:
    live = _orders(10)
    cancelled = _orders(10, first=7000, status="cancelled")
    _put(area, "orders_demo_c.csv", live + cancelled)
    report = _sim(area).run_once()

    ids = {e.order_id for e in report.events}
    assert ids == {o.order_id for o in live}
    assert report.files[0].unanswered == 10


def test_reads_jsonl_files(area: Path) -> None:
    orders = _orders(30)
    _put(area, "orders_demo_j.jsonl", orders, fmt="jsonl")
    report = _sim(area).run_once()
    assert report.files_read == ["orders_demo_j.jsonl"]
    assert {e.order_id for e in report.events} == {o.order_id for o in orders}


def test_unreadable_file_is_moved_aside_without_answer(area: Path) -> None:
    (area / "inbound" / "orders_demo_bad.csv").write_bytes(b"just,some\r\nthing,else\r\n")
    report = _sim(area).run_once()
    assert "missing columns" in report.files[0].error
    assert report.status_files == [] and _status_files(area) == []
    assert [p.name for p in (area / "erp_processed").iterdir()] == ["orders_demo_bad.csv"]


# -- faults ----------------------------------------------------------------------------------------


def _baseline_and(server: EmbeddedSftpServer, area: Path, faults: set[str]) -> tuple[bytes, bytes]:
    orders = _orders(30)
    _put(area, "orders_demo_f.csv", orders)
    _sim(area).run_once()
    other = server.root / f"{area.name}-f"
    (other / "inbound").mkdir(parents=True)
    _put(other, "orders_demo_f.csv", orders)
    _sim(other, faults=faults).run_once()
    return _status_files(area)[0].read_bytes(), _status_files(other)[0].read_bytes()


def test_fault_bom(server: EmbeddedSftpServer, area: Path) -> None:
    good, bad = _baseline_and(server, area, {"bom"})
    assert bad == b"\xef\xbb\xbf" + good


def test_fault_unknown_order(server: EmbeddedSftpServer, area: Path) -> None:
    good, bad = _baseline_and(server, area, {"unknown_order"})
    _, good_rows = _rows(good)
    header, bad_rows = _rows(bad)
    assert header == list(STATUS_COLUMNS)
    assert bad_rows[: len(good_rows)] == good_rows
    (extra,) = bad_rows[len(good_rows):]
    assert extra.order_id == UNKNOWN_ORDER_ID and extra.event == "accepted"
    assert UNKNOWN_ORDER_ID not in {r.order_id for r in good_rows}


def test_fault_malformed(server: EmbeddedSftpServer, area: Path) -> None:
    good, bad = _baseline_and(server, area, {"malformed"})
    _, good_rows = _rows(good)
    _, bad_rows = _rows(bad)
    assert bad_rows[: len(good_rows)] == good_rows
    extra = bad_rows[len(good_rows):]
    assert len(extra) == 3
    known = {r.order_id for r in good_rows}

    def is_time(value: str) -> bool:
        try:
            return value.endswith("Z") and pendulum.parse(value) is not None
        except Exception:
            return False

    bad_event = [r for r in extra if r.event not in EVENTS]
    bad_qty = [r for r in extra if r.quantity and not r.quantity.isdigit()]
    bad_time = [r for r in extra if not is_time(r.occurred_at)]
    assert len(bad_event) == len(bad_qty) == len(bad_time) == 1
    # each broken line has exactly one defect, and names a real order
    assert len({id(r) for r in bad_event + bad_qty + bad_time}) == 3
    for r in extra:
        assert r.order_id in known
    assert bad_qty[0].event == "shipped" and bad_qty[0].sku


def test_unknown_fault_mode_refused() -> None:
    with pytest.raises(ValueError, match="fault"):
        ErpSimulator(CONN_ID, faults={"gremlins"})


# -- state, re-runs, re-deliveries -----------------------------------------------------------------


def test_second_run_without_new_files_writes_nothing(area: Path) -> None:
    _put(area, "orders_demo_1.csv", _orders(10))
    sim = _sim(area)
    assert sim.run_once().status_files
    before = [p.name for p in _status_files(area)]

    again = sim.run_once()
    assert again.files_read == [] and again.status_files == [] and again.events == []
    assert [p.name for p in _status_files(area)] == before


def test_restart_does_not_reanswer_and_processed_names_get_suffix(area: Path, tmp_path: Path) -> None:
    state = tmp_path / "state" / "erp.json"
    data = _put(area, "orders_demo_r.csv", _orders(10))
    _sim(area, state_path=state).run_once()
    assert state.exists()

    # As after a crash between saving the state and moving the file: it is still in inbound.
    (area / "inbound" / "orders_demo_r.csv").write_bytes(data)
    report = _sim(area, state_path=state).run_once()  # a new process, same state file
    assert report.files_read == [] and report.files_skipped == ["orders_demo_r.csv"]
    assert report.status_files == [] and len(_status_files(area)) == 1
    assert sorted(p.name for p in (area / "erp_processed").iterdir()) == [
        "orders_demo_r-1.csv", "orders_demo_r.csv"]
    assert list((area / "inbound").iterdir()) == []

    # Without the state, the same file would have been answered again (the test above can fail).
    (area / "inbound" / "orders_demo_r.csv").write_bytes(data)
    assert _sim(area, state_path=tmp_path / "other.json").run_once().status_files


def test_status_file_names_do_not_collide(area: Path) -> None:
    sim = _sim(area)
    _put(area, "orders_demo_n1.csv", _orders(5))
    _sim(area).run_once()  # another simulator, same second, same counter start
    _put(area, "orders_demo_n2.csv", _orders(5, first=6000))
    sim.run_once()
    names = [p.name for p in _status_files(area)]
    assert len(names) == 2 and all(STATUS_NAME.match(n) for n in names)


def test_redelivered_version_gets_no_duplicate_answer(area: Path) -> None:
    orders = _orders(80)
    _put(area, "orders_demo_v1.csv", orders)
    sim = _sim(area)
    first = sim.run_once().events
    outcome: dict[str, str] = {}
    for e in first:
        outcome[e.order_id] = "shipped" if e.event == "shipped" else outcome.get(e.order_id, e.event)
    shipped = next(o for o in orders if outcome[o.order_id] == "shipped")
    accepted = next(o for o in orders if outcome[o.order_id] == "accepted")
    same_again, *rejected = [o for o in orders if outcome[o.order_id] == "rejected"]
    assert rejected

    old = [shipped, accepted, *rejected]
    changed = [replace(o, customer_note="please ring twice") for o in old]
    assert all(c.version != o.version for c, o in zip(changed, old, strict=True))
    _put(area, "orders_demo_v2.csv", [*changed, same_again])
    report = sim.run_once()

    ids = {e.order_id for e in report.events}
    assert shipped.order_id not in ids and accepted.order_id not in ids  # nothing twice
    assert same_again.order_id not in ids  # the very same version again: already answered
    # a rejected order's new version is decided afresh (the shop may have fixed it)
    assert ids == {o.order_id for o in rejected}
    assert report.files[0].unanswered == 3


# -- CLI -------------------------------------------------------------------------------------------


def test_cli_once_prints_one_line_per_file(area: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _put(area, "orders_demo_cli1.csv", _orders(6))
    _put(area, "orders_demo_cli2.csv", _orders(6, first=6100))
    d = area.name
    code = erp_simulator.main([
        "--conn-id", CONN_ID, "--once", "--faults", "bom,unknown_order",
        "--inbound-dir", f"{d}/inbound", "--outbound-dir", f"{d}/outbound",
        "--processed-dir", f"{d}/erp_processed", "--state", str(tmp_path / "s.json"),
    ])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    (status,) = [p.name for p in _status_files(area)]
    assert len(out) == 2
    for line, name in zip(out, ["orders_demo_cli1.csv", "orders_demo_cli2.csv"], strict=True):
        assert re.fullmatch(rf"answered {name}: \d+ accepted, \d+ shipped \(\d+ partial\), "
                            rf"\d+ rejected, \d+ cancelled -> {status}", line)
    data = (area / "outbound" / status).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and UNKNOWN_ORDER_ID.encode() in data


# -- payments and refunds (issue 16) ---------------------------------------------------------------

MONEY_EVENTS = ("paid", "refunded")
ALL_IN = MoneyPolicy(payment_share=1.0, refund_share=1.0, line_refund_share=0.5)


def _money_rows(data: bytes) -> tuple[list[str], list[StatusEvent]]:
    header, rows = _rows(data)
    assert header == [*STATUS_COLUMNS, *MONEY_COLUMNS]
    return header, rows


def _by_kind(events: list[StatusEvent], kind: str) -> dict[str, StatusEvent]:
    found = {e.order_id: e for e in events if e.event == kind}
    assert len(found) == sum(1 for e in events if e.event == kind), f"an order got two {kind} lines"
    return found


def test_without_a_money_policy_an_on_hold_order_is_answered_at_once(area: Path) -> None:
    _put(area, "orders_demo_h0.csv", _orders(20, status="on-hold"))
    report = _sim(area).run_once()
    assert {e.order_id for e in report.events} == {str(5000 + i) for i in range(20)}
    assert not any(e.event in MONEY_EVENTS for e in report.events)
    assert b"amount" not in _status_files(area)[0].read_bytes().splitlines()[0]  # the old header


def test_orders_awaiting_payment_wait_then_get_paid_after_the_delay_and_are_fulfilled(area: Path) -> None:
    waiting = _orders(12, status="on-hold") + _orders(4, first=6000, status="pending")
    paid_by_shop = _orders(10, first=7000)
    _put(area, "orders_demo_h1.csv", waiting + paid_by_shop)
    sim = _sim(area, money=replace(ALL_IN, payment_delay_runs=2, refund_share=0))

    first = sim.run_once()
    assert {e.order_id for e in first.events} == {o.order_id for o in paid_by_shop}  # no acceptance yet
    (summary,) = first.files
    assert summary.awaiting_payment == 16 and "16 awaiting payment" in first.lines()[0]
    assert sim.run_once().events == []  # one run later: the delay is two runs

    third = sim.run_once()
    assert third.files_read == [] and len(third.status_files) == 1
    paid = _by_kind(third.events, "paid")
    assert set(paid) == {o.order_id for o in waiting} and third.payments == list(paid.values())
    for order in waiting:
        line = paid[order.order_id]
        assert (line.amount, line.currency) == (f"{order.total:.2f}", order.currency)
        assert re.fullmatch(r"BANK-\d{10}", line.reference) and line.note
        assert pendulum.parse(line.occurred_at) <= NOW
    # every paid order is then fulfilled (never rejected or cancelled), after its paid line
    kinds = [e.event for e in third.events]
    assert kinds.index("accepted") > max(i for i, k in enumerate(kinds) if k == "paid")
    assert set(_by_kind(third.events, "accepted")) == set(paid)
    assert not {"rejected", "cancelled"} & set(kinds)
    assert "shipped" in kinds
    assert any(line.startswith(f"booked {len(waiting)} payment(s)") for line in third.lines())
    # the package reads the file as the contract says: every line valid
    data = (area / "outbound" / third.status_files[0]).read_bytes()
    _money_rows(data)
    parsed = parse_status_file(data, third.status_files[0])
    assert parsed.errors == [] and len(parsed.events) == len(third.events)

    later = sim.run_once()
    assert later.payments == []  # paid once


def test_payment_delay_in_minutes_and_the_share_that_never_pays(area: Path) -> None:
    clock = {"now": NOW}
    waiting = _orders(40, status="on-hold")
    _put(area, "orders_demo_h2.csv", waiting)
    policy = MoneyPolicy(payment_share=0.5, payment_delay_runs=0, payment_delay_minutes=30, refund_share=0)
    sim = _sim(area, money=policy, clock=lambda: clock["now"])
    assert sim.run_once().events == []
    clock["now"] = NOW.add(minutes=29)
    assert sim.run_once().events == []
    clock["now"] = NOW.add(minutes=30)
    paid = set(_by_kind(sim.run_once().events, "paid"))
    assert 0 < len(paid) < 40  # about half: the others never pay
    clock["now"] = NOW.add(days=3)
    assert sim.run_once().payments == []  # the unpaid ones stay waiting

    # the same seed pays the same orders
    other = area.parent / f"{area.name}-m"
    (other / "inbound").mkdir(parents=True)
    _put(other, "orders_demo_h2.csv", waiting)
    again = _sim(other, money=replace(policy, payment_delay_minutes=0))
    assert set(_by_kind(again.run_once().events, "paid")) == paid


def test_a_new_version_that_no_longer_awaits_payment_ends_the_wait(area: Path) -> None:
    waiting = _orders(6, status="on-hold")
    _put(area, "orders_demo_w1.csv", waiting)
    sim = _sim(area, money=ALL_IN)
    sim.run_once()
    cancelled = [replace(o, status="cancelled") for o in waiting[:3]]
    paid_in_shop = [replace(o, status="processing") for o in waiting[3:]]
    _put(area, "orders_demo_w2.csv", cancelled + paid_in_shop)
    report = sim.run_once()
    assert report.payments == []
    assert {e.order_id for e in report.events} == {o.order_id for o in paid_in_shop}  # decided as new orders
    assert sim.run_once().payments == []


def test_refunds_whole_and_by_line_of_orders_shipped_earlier_once_each(area: Path) -> None:
    orders = {o.order_id: o for o in _orders(80)}
    _put(area, "orders_demo_r1.csv", list(orders.values()))
    sim = _sim(area, money=ALL_IN)
    first = sim.run_once()
    assert first.refunds == []  # nothing was shipped before this run
    shipped = {e.order_id for e in first.events if e.event == "shipped"}

    second = sim.run_once()
    refunds = _by_kind(second.events, "refunded")
    assert set(refunds) == shipped and second.refunds == list(refunds.values())
    whole = [r for r in refunds.values() if not r.sku]
    by_line = [r for r in refunds.values() if r.sku]
    assert whole and by_line
    for r in whole:
        assert (r.amount, r.currency, r.quantity) == (f"{orders[r.order_id].total:.2f}", "EUR", "")
    for r in by_line:
        line = next(ln for ln in orders[r.order_id].lines if ln.sku == r.sku)
        units = int(r.quantity)
        assert 1 <= units <= line.quantity
        assert Decimal(r.amount) == (line.line_total * units / line.quantity).quantize(Decimal("0.01"))
    for r in refunds.values():
        assert re.fullmatch(r"CN-\d{7}", r.reference) and r.note and r.currency == "EUR"
    data = (area / "outbound" / second.status_files[0]).read_bytes()
    parsed = parse_status_file(data, second.status_files[0])
    assert parsed.errors == [] and len(parsed.events) == len(refunds)
    assert any(line.endswith(f"({len(whole)} whole, {len(by_line)} by line) -> {second.status_files[0]}")
               for line in second.lines())

    assert sim.run_once().events == []  # refunded once
    # an order the shop cancelled or refunded since gets none
    other = area.parent / f"{area.name}-c"
    (other / "inbound").mkdir(parents=True)
    _put(other, "orders_demo_r1.csv", list(orders.values()))
    sim2 = _sim(other, money=ALL_IN)
    sim2.run_once()
    gone = sorted(shipped)[:2]
    _put(other, "orders_demo_r2.csv", [replace(orders[gone[0]], status="cancelled"),
                                       replace(orders[gone[1]], status="refunded")])
    assert set(_by_kind(sim2.run_once().events, "refunded")) == shipped - set(gone)


def test_payments_and_refunds_survive_a_restart_and_a_failed_upload(area: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "erp.json"
    _put(area, "orders_demo_s1.csv", _orders(30) + _orders(6, first=6000, status="on-hold"))
    _sim(area, money=ALL_IN, state_path=state).run_once()
    before_second = state.read_bytes()

    # the upload of the next status file fails: nothing of that run counts as done
    sim = _sim(area, money=ALL_IN, state_path=state)
    real = SftpSession.upload_atomic

    def broken(self, *args, **kwargs):
        raise BackendError("connection reset")

    monkeypatch.setattr(SftpSession, "upload_atomic", broken)
    with pytest.raises(BackendError):
        sim.run_once()
    monkeypatch.setattr(SftpSession, "upload_atomic", real)
    assert state.read_bytes() == before_second
    second = sim.run_once()
    assert second.payments and second.refunds

    # a new process on the saved state books nothing twice (it refunds the orders that run shipped)
    third = _sim(area, money=ALL_IN, state_path=state).run_once()
    assert third.payments == [] and {e.event for e in third.events} <= {"refunded"}
    assert not {e.order_id for e in third.refunds} & {e.order_id for e in second.refunds}

    # a crash after the upload, before the state was saved: the run is done again with the
    # very same references, which the status sync recognises on the storefront
    state.write_bytes(before_second)
    replay = _sim(area, money=ALL_IN, state_path=state).run_once()
    assert [(e.order_id, e.event, e.amount, e.reference) for e in replay.events] == [
        (e.order_id, e.event, e.amount, e.reference) for e in second.events]


def test_money_fault_lines_and_a_fault_without_a_target(area: Path) -> None:
    _put(area, "orders_demo_f1.csv", _orders(80))
    report = _sim(area, money=ALL_IN, faults=MONEY_FAULTS).run_once()
    by_note = {e.note: e for e in report.fault_events}
    assert set(by_note) == {f"fault {m}" for m in MONEY_FAULTS}
    assert report.faults_missing == []
    unit = "0.01"
    assert by_note["fault amount_decimals"].amount == "1.001"
    assert by_note["fault amount_zero"].amount == "0.00"
    assert by_note["fault amount_negative"].amount == f"-{unit}"
    assert by_note["fault missing_reference"].reference == ""
    assert by_note["fault currency_mismatch"].currency == "USD"
    assert by_note["fault paid_already_paid"].event == "paid"
    cancelled = {e.order_id for e in report.events if e.event == "cancelled" and e not in report.fault_events}
    assert by_note["fault refund_cancelled"].order_id in cancelled
    # only the good lines are counted and reported as payments/refunds
    assert report.payments == [] and report.refunds == []

    # no order the ERP or the shop cancelled: that fault's line is left out, and said so
    other = area.parent / f"{area.name}-n"
    (other / "inbound").mkdir(parents=True)
    _put(other, "orders_demo_f2.csv", _orders(3, status="on-hold") + _orders(2, first=6000))
    lonely = _sim(other, money=ALL_IN, faults={"refund_cancelled", "amount_zero"}).run_once()
    assert "cancelled" not in {e.event for e in lonely.events}
    assert [e.note for e in lonely.fault_events] == ["fault amount_zero"]
    assert lonely.faults_missing == ["refund_cancelled"]
    assert "no order for fault line(s) refund_cancelled" in lonely.lines()


def test_money_policy_and_cli_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="refund_share"):
        MoneyPolicy(refund_share=1.5)
    with pytest.raises(ValueError, match="payment_delay_runs"):
        MoneyPolicy(payment_delay_runs=-1)
    with pytest.raises(SystemExit):
        erp_simulator.main(["--conn-id", CONN_ID, "--once", "--payment-share", "2"])


# -- the whole way: the simulator's lines through the real status sync into the sandbox storefront --

SHOP_CONN, KEY, SECRET = "erp_sim_shop", "ck_erp_sim", "cs_erp_sim"
WHY = {
    "amount_decimals": "has 3 decimals; EUR has 2",
    "amount_zero": "is not greater than zero",
    "amount_negative": "is not a plain decimal",
    "refund_above_remaining": "exceeds what remains refundable",
    "currency_mismatch": "differs from the order's currency",
    "paid_already_paid": "already paid on the storefront",
    "refund_cancelled": "order is cancelled",
    "missing_reference": "refunded needs reference",
}


def test_payments_refunds_and_every_money_fault_through_the_status_sync(
    area: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = [o for o in generate_orders(70, start=NOW.subtract(hours=3), end=NOW.subtract(hours=1), seed=16)
           if o["status"] in ("processing", "on-hold") and o["currency"] == "EUR"]
    on_hold = [o for o in raw if o["status"] == "on-hold"]
    assert len(on_hold) >= 2 and len(raw) >= 20
    records = [normalise_order(o, "s1").record() for o in raw]
    buffer = io.BytesIO()
    write_orders(records, "csv", buffer)
    (area / "inbound" / "orders_s1_w.csv").write_bytes(buffer.getvalue())

    shop = SandboxStorefront(raw, consumer_key=KEY, consumer_secret=SECRET).start()
    monkeypatch.setenv(f"AIRFLOW_CONN_{SHOP_CONN.upper()}", json.dumps(
        {"conn_type": "http", "host": shop.base_url, "login": KEY, "password": SECRET}))
    store = StoreConfig(id="s1", storefront_conn_id=SHOP_CONN, backend_conn_id=CONN_ID,
                        backend=BackendConfig(outbound_dir=f"{area.name}/outbound"))
    writer = WooCommerceWriter(SHOP_CONN, timeout=10, sleep=lambda _s: None)
    ledger = Ledger(sqlite_engine(tmp_path / "l.db"), create=True)
    state = tmp_path / "erp.json"
    try:
        def erp():
            return _sim(area, money=ALL_IN, faults=MONEY_FAULTS, state_path=state)

        def sync(name: str) -> tuple[dict[str, int], dict[int, str]]:
            with SftpBackend(CONN_ID, conn_retry_attempts=1).session() as session:
                result = sync_file(store, name, session, writer, ledger.status_events)
            why = {o.event.line_number: o.outcome for o in result.outcomes if o.failed}
            why.update({e.line_number: e.reason for e in result.invalid_lines})
            return result.counts, why

        def check_faults(report, why: dict[int, str]) -> None:
            assert report.faults_missing == []
            for number, line in enumerate(report.events, start=2):  # line 1 is the header
                if line in report.fault_events and line.note.startswith("fault "):
                    mode = line.note.removeprefix("fault ")
                    assert WHY[mode] in why.get(number, ""), (mode, why.get(number))
                else:
                    assert number not in why, (line, why.get(number))

        first = erp().run_once()
        counts, why = sync(first.status_files[0])
        check_faults(first, why)
        assert counts["applied"] == len(first.events) - len(first.fault_events)
        after_first = state.read_bytes()

        second = erp().run_once()
        assert {e.order_id for e in second.payments} == {str(o["id"]) for o in on_hold}
        assert second.refunds
        counts, why = sync(second.status_files[0])
        check_faults(second, why)
        assert counts["applied"] == len(second.events) - len(second.fault_events)

        for line in second.payments:
            order = shop.get_order(int(line.order_id))
            assert order["transaction_id"] == line.reference and order["date_paid_gmt"]
            assert order["status"] in ("processing", "completed")
            assert f"(reference {line.reference})" in " ".join(n["note"] for n in shop.notes(int(line.order_id)))
        for line in second.refunds:
            [refund] = shop.refunds(int(line.order_id))
            assert refund["amount"] == line.amount and refund["refunded_payment"] is False
            assert refund["meta_data"][0]["value"] == line.reference
            if line.sku:
                assert [(li["sku"], li["quantity"]) for li in refund["line_items"]] == [(line.sku, -int(line.quantity))]
            else:
                assert shop.get_order(int(line.order_id))["status"] == "refunded"
        writes = [r for r in shop.request_log if r[0] != "GET"]

        # a crash after the second upload, before the state was saved: the ERP sends it all again
        # (same references); the status sync recognises every payment and refund on the storefront
        state.write_bytes(after_first)
        replay = _sim(area, money=ALL_IN, faults=MONEY_FAULTS, state_path=state,
                      clock=lambda: NOW.add(minutes=5)).run_once()  # other times: other event keys
        assert [(e.order_id, e.reference) for e in replay.payments + replay.refunds] == [
            (e.order_id, e.reference) for e in second.payments + second.refunds]
        sync(replay.status_files[0])
        for line in second.refunds:
            assert len(shop.refunds(int(line.order_id))) == 1
        for line in second.payments:
            assert shop.get_order(int(line.order_id))["transaction_id"] == line.reference
        new_writes = [r for r in shop.request_log if r[0] != "GET"][len(writes):]
        assert not [w for w in new_writes if "refunds" in w[1]], new_writes
    finally:
        writer.close()
        shop.stop()
