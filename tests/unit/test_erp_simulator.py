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
from order_integration.model import LineItem
from sandbox import erp_simulator
from sandbox.erp_simulator import STATUS_COLUMNS, UNKNOWN_ORDER_ID, ErpSimulator, StatusEvent
from sandbox.sftp_server import EmbeddedSftpServer
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
