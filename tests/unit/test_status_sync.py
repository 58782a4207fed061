"""Status sync end to end in this process: the sandbox storefront (HTTP), the embedded SFTP
server (real SSH through SFTPHook) and a temporary SQLite ledger."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pendulum
import pytest

from order_integration.backend.sftp import SftpBackend, SftpSession
from order_integration.backend.status_files import STATUS_COLUMNS, parse_status_file
from order_integration.config import BackendConfig, StoreConfig
from order_integration.exceptions import StorefrontError
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.status_sync import FileResult, apply_file, sync_file, sync_outbound
from order_integration.storefronts.woocommerce_status import LineMoney, refund_line_items
from order_integration.storefronts.woocommerce_writes import OrderNotFound, WooCommerceWriter
from sandbox.generator import generate_orders
from sandbox.sftp_server import EmbeddedSftpServer
from sandbox.storefront import SandboxStorefront

pytestmark = pytest.mark.unit

KEY, SECRET = "ck_status_sync", "cs_status_sync"
SHOP_CONN, SFTP_CONN = "status_sync_shop", "status_sync_backend"
STORE = "s1"
T = "2026-11-29T10:00:00Z"
ORDER_IDS = list(range(1001, 1016))
LINES = [("SKU-A", "Alpha mug", 2), ("SKU-B", "Beta plate", 1)]


def _orders() -> list[dict[str, Any]]:
    orders = generate_orders(len(ORDER_IDS), start=pendulum.datetime(2026, 11, 1, tz="UTC"),
                             end=pendulum.datetime(2026, 11, 2, tz="UTC"), seed=11, first_id=ORDER_IDS[0])
    for order in orders:
        order["status"] = "pending"
        order["line_items"] = [
            {"id": order["id"] * 10 + n, "sku": sku, "name": name, "quantity": qty, "subtotal": "10.00",
             "total": "10.00"}
            for n, (sku, name, qty) in enumerate(LINES)
        ]
    return orders


def status_csv(*rows: dict[str, object], columns: tuple[str, ...] = STATUS_COLUMNS) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return out.getvalue().encode()


def ev(order_id: int, event: str, **values: object) -> dict[str, object]:
    return {"order_id": str(order_id), "event": event, "occurred_at": T, **values}


def ship(order_id: int, **values: object) -> dict[str, object]:
    tracking = {"carrier": "DHL", "tracking_number": "JJD000123", "tracking_url": "https://track.example/JJD000123"}
    return ev(order_id, "shipped", **{**tracking, **values})


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSftpServer]:
    base = tmp_path_factory.mktemp("status_sftp")
    with EmbeddedSftpServer(base / "root", base / "keys") as server:
        yield server


@dataclass
class Env:
    shop: SandboxStorefront
    store: StoreConfig
    session: SftpSession
    writer: WooCommerceWriter
    ledger: Ledger
    outbound: Path

    def drop(self, name: str, data: bytes) -> None:
        """The backend puts a status file in outbound_dir."""
        self.outbound.mkdir(parents=True, exist_ok=True)
        (self.outbound / name).write_bytes(data)

    def sync(self, name: str, data: bytes | None = None, **kwargs: Any) -> FileResult:
        if data is not None:
            self.drop(name, data)
        return sync_file(self.store, name, self.session, self.writer, self.ledger.status_events, **kwargs)

    def status(self, order_id: int) -> str:
        order = self.shop.get_order(order_id)
        assert order is not None
        return order["status"]

    def set_status(self, order_id: int, status: str) -> None:
        order = self.shop.get_order(order_id)
        assert order is not None
        self.shop.upsert_order({**order, "status": status})

    def writes(self) -> list[tuple[str, str, int]]:
        return [r for r in self.shop.request_log if r[0] != "GET"]

    def rows(self, source_file: str | None = None) -> list[dict[str, Any]]:
        return self.ledger.status_events.recorded(STORE, source_file)

    def files(self, sub: str) -> list[str]:
        folder = self.outbound / sub
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, sftp_server: EmbeddedSftpServer, tmp_path: Path) -> Iterator[Env]:
    shop = SandboxStorefront(_orders(), consumer_key=KEY, consumer_secret=SECRET).start()
    monkeypatch.setenv(f"AIRFLOW_CONN_{SHOP_CONN.upper()}", json.dumps(
        {"conn_type": "http", "host": shop.base_url, "login": KEY, "password": SECRET}))
    monkeypatch.setenv(f"AIRFLOW_CONN_{SFTP_CONN.upper()}", json.dumps(sftp_server.airflow_connection()))
    outbound = f"outbound_{uuid.uuid4().hex[:8]}"
    store = StoreConfig(id=STORE, storefront_conn_id=SHOP_CONN, backend_conn_id=SFTP_CONN,
                        backend=BackendConfig(outbound_dir=outbound))
    writer = WooCommerceWriter(SHOP_CONN, timeout=10, sleep=lambda _s: None)
    try:
        with SftpBackend(SFTP_CONN, conn_retry_attempts=1).session() as session:
            yield Env(shop, store, session, writer, Ledger(sqlite_engine(tmp_path / "l.db"), create=True),
                      sftp_server.root / outbound)
    finally:
        writer.close()
        shop.stop()


# ------------------------------------------------------------------------------------------------
# the writer
# ------------------------------------------------------------------------------------------------


def test_writer_reads_updates_and_adds_notes(env: Env) -> None:
    w = env.writer
    assert w.get_order(1001)["status"] == "pending"
    with pytest.raises(OrderNotFound):
        w.get_order(999_999)
    assert sorted(w.get_orders([1003, "1001", 999_999])) == [1001, 1003]
    assert w.update_status(1001, "processing")["status"] == "processing"
    assert env.status(1001) == "processing"
    note = w.add_note(1001, "Hello", customer_note=True)
    assert (note["note"], note["customer_note"]) == ("Hello", True)
    assert [(n["note"], n["customer_note"]) for n in w.list_notes(1001)] == [("Hello", True)]
    with pytest.raises(OrderNotFound):
        w.add_note(999_999, "x", customer_note=False)


@pytest.mark.parametrize("bad", ["\u00b2", "\u0661\u0660\u0660\u0662", "-1002", "0", str(2**64), True])
def test_writer_refuses_an_id_that_is_not_ascii_digits_before_any_request(env: Env, bad: object) -> None:
    """``١٠٠٢`` passed ``str.isdigit`` and ``int`` made it order 1002; ``²`` crashed in ``int``."""
    for call in (lambda: env.writer.update_status(bad, "processing"),  # type: ignore[arg-type]
                 lambda: env.writer.add_note(bad, "x", False),  # type: ignore[arg-type]
                 lambda: env.writer.get_orders([bad]),  # type: ignore[list-item]
                 lambda: env.writer.batch_update([{"id": bad, "status": "processing"}])):
        with pytest.raises(ValueError, match=r"is not an order id \(ASCII digits 1\.\."):
            call()
    assert env.shop.request_log == [] and env.status(1002) == "pending"


def test_batch_update_chunks_and_reports_item_errors(env: Env) -> None:
    writer = WooCommerceWriter(SHOP_CONN, timeout=10, batch_size=5, sleep=lambda _s: None)
    updates = [{"id": oid, "status": "processing"} for oid in ORDER_IDS[:11]] + [{"id": 999_999, "status": "processing"}]
    with writer:
        results = writer.batch_update(updates)
    assert [r.order_id for r in results] == [u["id"] for u in updates]
    assert all(r.ok for r in results[:11])
    assert results[11].not_found and not results[11].ok and "invalid_id" in (results[11].error or "")
    assert [env.status(oid) for oid in ORDER_IDS[:11]] == ["processing"] * 11
    batches = [r for r in env.writes() if r[1].endswith("/orders/batch")]
    assert len(batches) == 3  # 12 items in chunks of 5


def test_add_note_retry_does_not_post_twice(env: Env) -> None:
    # The note is stored, but the answer arrives truncated: the retry finds it instead of posting again.
    env.shop.inject_faults([{"type": "truncated", "method": "POST", "path": "/notes"}])
    env.writer.add_note(1002, "Shipped!", customer_note=True)
    assert [n["note"] for n in env.shop.notes(1002)] == ["Shipped!"]
    assert [r[0] for r in env.shop.request_log] == ["POST", "GET"]


def test_add_note_retries_a_refused_attempt(env: Env) -> None:
    env.shop.inject_faults([{"type": "503", "retry_after": 0, "method": "POST"}])
    env.writer.add_note(1002, "Shipped!", customer_note=False)
    assert [n["note"] for n in env.shop.notes(1002)] == ["Shipped!"]


# ------------------------------------------------------------------------------------------------
# one event type at a time
# ------------------------------------------------------------------------------------------------


def test_accepted_pending_becomes_processing_with_a_private_note(env: Env) -> None:
    result = env.sync("s1.csv", status_csv(ev(1001, "accepted", note="picked in Leipzig")))
    assert [o.outcome for o in result.outcomes] == ["applied"]
    assert env.status(1001) == "processing"
    notes = env.shop.notes(1001)
    assert [(n["note"], n["customer_note"]) for n in notes] == [
        ("Accepted by the backend on 2026-11-29 10:00 UTC. picked in Leipzig", False)]
    assert result.ok and result.moved_to == f"{env.store.backend.outbound_dir}/archive/s1.csv"
    assert env.files("archive") == ["s1.csv"] and not (env.outbound / "s1.csv").exists()
    [row] = env.rows("s1.csv")
    assert (row["order_id"], row["event"], row["outcome"], row["new_status"], row["line_number"]) == (
        "1001", "accepted", "applied", "processing", 2)


def test_accepted_on_processing_adds_the_note_only(env: Env) -> None:
    env.set_status(1001, "processing")
    result = env.sync("s1.csv", status_csv(ev(1001, "accepted")))
    assert [o.outcome for o in result.outcomes] == ["applied"]
    assert result.outcomes[0].new_status is None
    assert [w[0] for w in env.writes()] == ["POST"]  # the note, no PUT
    assert len(env.shop.notes(1001)) == 1 and env.status(1001) == "processing"


def test_shipped_whole_completes_with_a_customer_note(env: Env) -> None:
    env.set_status(1003, "processing")
    env.sync("s1.csv", status_csv(ship(1003)))
    assert env.status(1003) == "completed"
    [note] = env.shop.notes(1003)
    assert note["customer_note"] is True
    assert "DHL" in note["note"] and "JJD000123" in note["note"]
    assert "https://track.example/JJD000123" in note["note"]


def test_a_tracking_number_of_another_order_is_refused(env: Env) -> None:
    env.set_status(1003, "processing")
    env.set_status(1005, "processing")
    env.sync("s1.csv", status_csv(ship(1003)))
    result = env.sync("s2.csv", status_csv(ship(1005, occurred_at="2026-11-30T10:00:00Z")))  # same JJD000123
    [outcome] = result.outcomes
    assert outcome.outcome == "refused: tracking number JJD000123 is already used for order 1003"
    assert env.status(1005) == "processing" and result.errors_file is not None
    # within one file too; parts of one order may share a parcel
    env.set_status(1006, "processing")
    result = env.sync("s3.csv", status_csv(ship(1006, tracking_number="T-NEW"),
                                           ship(1007, tracking_number="T-NEW", occurred_at="2026-11-30T11:00:00Z")))
    assert [o.outcome.split(":")[0] for o in result.outcomes] == ["applied", "refused"]


def test_partial_shipments_across_files_complete_after_the_last_part(env: Env) -> None:
    env.set_status(1004, "processing")
    env.sync("part1.csv", status_csv(ship(1004, sku="SKU-A", quantity=1)))
    assert env.status(1004) == "processing"
    assert env.ledger.status_events.shipped_quantities(STORE, ["1004"]) == {("1004", "SKU-A"): 1}
    result = env.sync("part2.csv", status_csv(
        ship(1004, sku="SKU-B", quantity=1, occurred_at="2026-11-30T09:00:00Z"),
        ship(1004, sku="SKU-A", quantity=1, occurred_at="2026-11-30T09:00:00Z", tracking_number="JJD000999"),
    ))
    assert [(o.outcome, o.new_status) for o in result.outcomes] == [("applied", None), ("applied", "completed")]
    assert env.status(1004) == "completed"
    notes = [n["note"] for n in reversed(env.shop.notes(1004))]
    assert len(notes) == 3 and all(n.startswith("Part of your order was shipped") for n in notes)
    assert "1 × Alpha mug (SKU-A)" in notes[0] and "1 × Beta plate (SKU-B)" in notes[1]
    assert [w[0] for w in env.writes()].count("PUT") == 1  # completed set once, by the last part


def test_partial_shipment_short_of_full_does_not_complete(env: Env) -> None:
    env.set_status(1004, "processing")
    env.sync("p.csv", status_csv(ship(1004, sku="SKU-A", quantity=2)))  # SKU-B still open
    assert env.status(1004) == "processing"


def test_over_shipment_is_refused(env: Env) -> None:
    env.set_status(1005, "processing")
    result = env.sync("over.csv", status_csv(
        ship(1005, sku="SKU-A", quantity=1),
        ship(1005, sku="SKU-A", quantity=2, occurred_at="2026-11-29T11:00:00Z"),
        ship(1005, sku="SKU-Z", quantity=1),
    ))
    outcomes = [o.outcome for o in result.outcomes]
    assert outcomes[0] == "applied"
    assert outcomes[1].startswith("refused: over-shipment: sku 'SKU-A' ordered 2, already shipped 1")
    assert outcomes[2].startswith("refused: sku 'SKU-Z' is not in the order")
    assert env.status(1005) == "processing" and len(env.shop.notes(1005)) == 1
    assert env.ledger.status_events.shipped_quantities(STORE, ["1005"]) == {("1005", "SKU-A"): 1}
    assert not result.ok and env.files("error") == ["over.csv", "over.csv.errors.json"]


def test_cancelled(env: Env) -> None:
    env.sync("c.csv", status_csv(ev(1006, "cancelled", note="customer called")))
    assert env.status(1006) == "cancelled"
    [note] = env.shop.notes(1006)
    assert note["customer_note"] is False and "customer called" in note["note"]


def test_rejected_puts_the_order_on_hold_with_the_reason(env: Env) -> None:
    env.set_status(1007, "processing")
    env.sync("r.csv", status_csv(ev(1007, "rejected", note="address undeliverable")))
    assert env.status(1007) == "on-hold"
    [note] = env.shop.notes(1007)
    assert note["customer_note"] is False and "address undeliverable" in note["note"]


def test_event_for_a_cancelled_order_is_refused(env: Env) -> None:
    env.set_status(1008, "cancelled")
    result = env.sync("x.csv", status_csv(ship(1008), ev(1008, "accepted", occurred_at="2026-11-29T10:05:00Z")))
    assert [o.outcome for o in result.outcomes] == ["refused: order is cancelled on the storefront"] * 2
    assert env.writes() == [] and env.shop.notes(1008) == [] and env.status(1008) == "cancelled"
    report = json.loads((env.outbound / "error" / "x.csv.errors.json").read_bytes())
    assert [(e["line_number"], e["order_id"]) for e in report["errors"]] == [(2, "1008"), (3, "1008")]


@pytest.mark.parametrize(("status", "event"), [("completed", "accepted"), ("completed", "rejected"),
                                               ("completed", "cancelled"), ("cancelled", "rejected")])
def test_backwards_moves_are_refused(env: Env, status: str, event: str) -> None:
    env.set_status(1009, status)
    result = env.sync("b.csv", status_csv(ev(1009, event, note="why")))
    assert result.outcomes[0].outcome.startswith("refused: order is")
    assert env.writes() == [] and env.status(1009) == status


def test_unknown_order_is_a_line_error(env: Env) -> None:
    result = env.sync("u.csv", status_csv(ev(999_999, "accepted"), ev("ABC", "accepted"), ev(1001, "accepted")))
    assert [o.outcome for o in result.outcomes] == ["error: order not found", "applied"]
    assert [(e.line_number, e.order_id) for e in result.invalid_lines] == [(3, "ABC")]
    report = json.loads((env.outbound / "error" / "u.csv.errors.json").read_bytes())
    assert [(e["line_number"], e["order_id"]) for e in report["errors"]] == [(2, "999999"), (3, "ABC")]
    assert report["errors"][0]["reason"] == "error: order not found"
    assert "'ABC' is not an order id" in report["errors"][1]["reason"]


def test_an_id_of_non_ascii_digits_is_an_invalid_line_not_a_stuck_file(env: Env) -> None:
    """``str.isdigit`` takes ``²`` (``int`` then raised and failed the file on every run) and
    Arabic-Indic ``١٠٠٢`` (``int`` read it as order 1002 and changed that order)."""
    data = status_csv(ev("\u00b2", "accepted"), ev("\u0661\u0660\u0660\u0662", "accepted"), ev(1001, "accepted"))
    result = env.sync("digits.csv", data)
    assert [(o.event.order_id, o.outcome) for o in result.outcomes] == [("1001", "applied")]
    assert [(e.line_number, e.order_id) for e in result.invalid_lines] == [
        (2, "\u00b2"), (3, "\u0661\u0660\u0660\u0662")]
    assert env.files("error") == ["digits.csv", "digits.csv.errors.json"]
    report = json.loads((env.outbound / "error" / "digits.csv.errors.json").read_bytes())
    assert [(e["line_number"], "is not an order id" in e["reason"]) for e in report["errors"]] == [
        (2, True), (3, True)]
    assert env.status(1001) == "processing"
    assert env.status(1002) == "pending" and env.shop.notes(1002) == []


def test_apply_file_never_reads_a_non_ascii_id_as_a_number(env: Env) -> None:
    """Events built without the parser get the same rule: an error line, not a crash or order 1002."""
    good = parse_status_file(status_csv(ev(1001, "accepted")), "x.csv").events[0]
    events = [replace(good, order_id="\u00b2", event_key="k1"),
              replace(good, order_id="\u0661\u0660\u0660\u0662", event_key="k2")]
    outcomes = apply_file(STORE, events, env.writer, env.ledger.status_events, source_file="x.csv")
    assert [o.outcome for o in outcomes] == [
        "error: order not found ('\u00b2' is not an order id)",
        "error: order not found ('\u0661\u0660\u0660\u0662' is not an order id)"]
    assert env.writes() == [] and env.status(1002) == "pending"


def test_several_events_of_one_order_in_one_file_keep_their_order(env: Env) -> None:
    result = env.sync("m.csv", status_csv(ev(1010, "accepted"), ship(1010, occurred_at="2026-11-29T12:00:00Z")))
    assert [(o.outcome, o.new_status) for o in result.outcomes] == [("applied", "processing"), ("applied", "completed")]
    assert env.status(1010) == "completed"
    puts = [w for w in env.writes() if w[0] == "PUT"]
    assert len(puts) == 2
    assert env.ledger.status_events.statuses_written(STORE, ["1010", "1001"]) == {"1010": "completed"}


# ------------------------------------------------------------------------------------------------
# idempotence, files, batches
# ------------------------------------------------------------------------------------------------


def test_same_file_twice_changes_nothing_the_second_time(env: Env) -> None:
    data = status_csv(ev(1001, "accepted"), ship(1002), ev(1003, "cancelled"))
    first = env.sync("s.csv", data)
    assert [o.outcome for o in first.outcomes] == ["applied"] * 3
    log_before = env.shop.request_log
    notes_before = {oid: len(env.shop.notes(oid)) for oid in (1001, 1002, 1003)}
    second = env.sync("s.csv", data)
    assert [o.outcome for o in second.outcomes] == ["skipped_duplicate"] * 3
    assert env.shop.request_log == log_before  # not even a read
    assert {oid: len(env.shop.notes(oid)) for oid in (1001, 1002, 1003)} == notes_before
    # both copies archived, the second under a suffixed name
    assert env.files("archive") == ["s-1.csv", "s.csv"] and second.moved_to.endswith("/archive/s-1.csv")
    assert [r["outcome"] for r in env.rows("s.csv")] == ["applied"] * 3 + ["skipped_duplicate"] * 3


def test_same_events_under_another_name_change_nothing(env: Env) -> None:
    env.sync("a.csv", status_csv(ev(1001, "accepted"), ship(1002)))
    writes = len(env.writes())
    result = env.sync("other-name.csv", status_csv(ship(1002), ev(1001, "accepted"), ev(1001, "accepted")))
    assert [o.outcome for o in result.outcomes] == ["skipped_duplicate"] * 3
    assert len(env.writes()) == writes
    assert result.ok and env.files("archive") == ["a.csv", "other-name.csv"]


def test_good_and_bad_lines(env: Env) -> None:
    data = status_csv(
        ev(1001, "accepted"),
        ev(1002, "delivered"),  # invalid
        ship(1003, sku="SKU-A"),  # invalid: no quantity
        ev(1004, "accepted"),
    )
    env.set_status(1005, "cancelled")
    data += b"1005,accepted,2026-11-29T10:00:00Z,,,,,,\n"  # refused
    result = env.sync("mixed.csv", data)
    assert env.status(1001) == "processing" and env.status(1004) == "processing"
    assert env.status(1002) == "pending" and env.status(1003) == "pending"
    assert result.counts == {"applied": 2, "skipped_duplicate": 0, "refused": 1, "error": 0, "invalid": 2}
    assert env.files("error") == ["mixed.csv", "mixed.csv.errors.json"] and env.files("archive") == []
    assert result.errors_file == f"{env.store.backend.outbound_dir}/error/mixed.csv.errors.json"
    report = json.loads((env.outbound / "error" / "mixed.csv.errors.json").read_bytes())
    assert [(e["line_number"], e["order_id"]) for e in report["errors"]] == [(3, "1002"), (4, "1003"), (6, "1005")]
    assert "event 'delivered'" in report["errors"][0]["reason"]
    assert "sku 'SKU-A' is given without quantity" in report["errors"][1]["reason"]
    assert report["errors"][2]["reason"] == "refused: order is cancelled on the storefront"
    assert (env.outbound / "error" / "mixed.csv").read_bytes() == data
    rows = sorted(env.rows("mixed.csv"), key=lambda r: r["line_number"])
    assert [r["outcome"].split(":")[0] for r in rows] == ["applied", "error", "error", "applied", "refused"]


def test_error_names_collide_and_get_a_suffix_with_their_report(env: Env) -> None:
    bad = status_csv(ev(1001, "delivered"))
    env.sync("e.csv", bad)
    env.sync("e.csv", bad)
    assert env.files("error") == ["e-1.csv", "e-1.csv.errors.json", "e.csv", "e.csv.errors.json"]


def test_bad_header_moves_the_whole_file_to_error(env: Env) -> None:
    result = env.sync("h.csv", b"order_id,event\n1001,accepted\n")
    assert result.outcomes == () and len(result.invalid_lines) == 1
    assert env.writes() == [] and env.files("error") == ["h.csv", "h.csv.errors.json"]


def test_many_status_changes_use_the_batch_endpoint(env: Env) -> None:
    rows = [ev(oid, "accepted") for oid in ORDER_IDS[:12]]
    result = env.sync("many.csv", status_csv(*rows))
    assert [o.outcome for o in result.outcomes] == ["applied"] * 12
    assert all(env.status(oid) == "processing" for oid in ORDER_IDS[:12])
    methods = [(w[0], w[1].split("?")[0].rsplit("/", 1)[-1]) for w in env.writes()]
    assert methods.count(("POST", "batch")) == 1 and not any(m == "PUT" for m, _ in methods)
    assert methods.count(("POST", "notes")) == 12
    assert env.ledger.status_events.statuses_written(STORE, [str(o) for o in ORDER_IDS]) == {
        str(oid): "processing" for oid in ORDER_IDS[:12]}


def test_few_status_changes_use_put(env: Env) -> None:
    env.sync("few.csv", status_csv(*[ev(oid, "accepted") for oid in ORDER_IDS[:3]]))
    assert [w[0] for w in env.writes()].count("PUT") == 3
    assert not any(w[1].endswith("/batch") for w in env.writes())


def test_a_rerun_after_a_crash_recognises_what_is_already_on_the_storefront(env: Env, tmp_path: Path) -> None:
    events = parse_status_file(status_csv(ev(1011, "cancelled"), ev(1012, "accepted")), "c.csv").events
    apply_file(STORE, events, env.writer, env.ledger.status_events, source_file="c.csv")
    writes = len(env.writes())
    # Same storefront, but a ledger that never saw the rows (the crash came before them).
    fresh = Ledger(sqlite_engine(tmp_path / "fresh.db"), create=True)
    outcomes = apply_file(STORE, events, env.writer, fresh.status_events, source_file="c.csv")
    assert [(o.outcome, o.new_status) for o in outcomes] == [("applied", "cancelled"), ("applied", "processing")]
    assert len(env.writes()) == writes  # nothing written again
    assert len(env.shop.notes(1011)) == 1 and len(env.shop.notes(1012)) == 1


def test_sync_outbound_handles_every_status_file(env: Env) -> None:
    env.drop("b.csv", status_csv(ev(1001, "accepted")))
    env.drop("a.csv", status_csv(ev(1002, "accepted")))
    env.drop(".c.csv.part", status_csv(ev(1003, "accepted")))
    result = sync_outbound(env.store, env.session, env.writer, env.ledger.status_events)
    assert [f.name for f in result.files] == ["a.csv", "b.csv"]
    assert result.counts["applied"] == 2 and env.status(1003) == "pending"
    assert sorted(p.name for p in env.outbound.iterdir() if p.is_file()) == [".c.csv.part"]


def test_sync_outbound_stops_at_the_first_failing_file_and_keeps_the_later_ones(env: Env) -> None:
    """A later file never overtakes an earlier one: a.csv's first try fails (transient), so
    b.csv (which accepts the order a.csv rejects) waits; the retry applies both, in order."""
    env.drop("a.csv", status_csv(ev(1003, "accepted"), ev(1004, "rejected", note="no address")))
    env.drop("b.csv", status_csv(ev(1004, "accepted", occurred_at="2026-11-29T11:00:00Z")))
    env.shop.inject_faults([{"type": "503", "retry_after": 0, "times": 6, "method": "POST",
                             "path": "/orders/1003/notes"}])
    with pytest.raises(StorefrontError):
        sync_outbound(env.store, env.session, env.writer, env.ledger.status_events)
    assert sorted(p.name for p in env.outbound.iterdir() if p.is_file()) == ["a.csv", "b.csv"]
    assert env.status(1004) == "pending" and env.shop.notes(1004) == []
    result = sync_outbound(env.store, env.session, env.writer, env.ledger.status_events)
    assert [f.name for f in result.files] == ["a.csv", "b.csv"] and result.counts["applied"] == 3
    assert env.status(1004) == "processing"
    assert [n["note"].split(" ", 1)[0] for n in env.shop.notes(1004)] == ["Rejected", "Accepted"]


def test_a_line_left_without_an_outcome_stops_the_file_before_it_moves() -> None:
    """The invariant: every line of a status file ends as exactly one outcome or invalid line."""
    from order_integration.exceptions import InvariantViolation
    from order_integration.status_sync import APPLIED, EventOutcome, _check_accounted

    data = (",".join(STATUS_COLUMNS) + "\n"
            "1001,accepted,2026-11-02T10:00:00Z,,,,,,\n"
            "1002,accepted,2026-11-02T10:00:00Z,,,,,,\n"
            "1003,teleported,2026-11-02T10:00:00Z,,,,,,\n").encode()
    parsed = parse_status_file(data, "s.csv")
    assert (parsed.records, len(parsed.events), len(parsed.errors)) == (3, 2, 1)
    outcomes = [EventOutcome(e, APPLIED) for e in parsed.events]
    _check_accounted("demo", "s.csv", parsed, outcomes)  # all accounted for
    with pytest.raises(InvariantViolation, match=r"s\.csv: 3 lines but 1 outcomes for 2 events"):
        _check_accounted("demo", "s.csv", parsed, outcomes[:1])
    parsed.events.pop()  # a line the parser dropped silently
    with pytest.raises(InvariantViolation):
        _check_accounted("demo", "s.csv", parsed, outcomes[:1])


# ------------------------------------------------------------------------------------------------
# money: paid and refunded (WooCommerce)
# ------------------------------------------------------------------------------------------------

MONEY_COLUMNS = (*STATUS_COLUMNS, "amount", "currency", "reference")


def money_csv(*rows: dict[str, object]) -> bytes:
    return status_csv(*rows, columns=MONEY_COLUMNS)


def unpaid(env: Env, order_id: int, status: str, **fields: object) -> dict[str, Any]:
    """Put the order in ``status`` without any payment (bank transfer, nothing refunded)."""
    order = env.shop.get_order(order_id)
    assert order is not None
    order = {**order, "status": status, "date_paid": None, "date_paid_gmt": None, "transaction_id": "",
             "payment_method": "bacs", "refunds": [], **fields}
    env.shop.upsert_order(order)
    return order


def paid_by_gateway(env: Env, order_id: int, status: str = "processing") -> dict[str, Any]:
    return unpaid(env, order_id, status, date_paid_gmt="2026-11-01T10:00:00", transaction_id="pi_gateway",
                  payment_method="stripe")


def reasons(env: Env, name: str) -> dict[int, str]:
    report = json.loads((env.outbound / "error" / f"{name}.errors.json").read_text())
    return {e["line_number"]: e["reason"] for e in report["errors"]}


def test_paid_marks_pending_and_on_hold_orders_paid_and_refuses_what_does_not_match(env: Env) -> None:
    pending, on_hold = unpaid(env, 1001, "pending"), unpaid(env, 1002, "on-hold")
    paid_by_gateway(env, 1003)
    other = unpaid(env, 1004, "on-hold")
    unpaid(env, 1005, "on-hold")
    unpaid(env, 1006, "cancelled")
    result = env.sync("paid.csv", money_csv(
        ev(1001, "paid", reference="PAY-1", amount=pending["total"], currency=pending["currency"]),
        ev(1002, "paid", reference="PAY-2"),
        ev(1003, "paid", reference="PAY-3"),
        ev(1004, "paid", reference="PAY-4", amount="0.01", currency=other["currency"]),
        ev(1005, "paid", reference="PAY-5", amount="1", currency="XAF"),
        ev(1006, "paid", reference="PAY-6"),
        ev(1007, "paid", reference="PAY-7", amount="1.005", currency="EUR"),
    ))
    assert result.counts == {"applied": 2, "skipped_duplicate": 0, "refused": 4, "error": 0, "invalid": 1}
    for oid, ref in ((1001, "PAY-1"), (1002, "PAY-2")):
        order = env.shop.get_order(oid)
        assert order is not None
        assert (order["status"], order["transaction_id"], bool(order["date_paid_gmt"])) == ("processing", ref, True)
        assert [n["customer_note"] for n in env.shop.notes(oid)] == [False]
        assert f"(reference {ref})" in env.shop.notes(oid)[0]["note"]
    assert on_hold["status"] == "on-hold"
    gateway = env.shop.get_order(1003)
    assert gateway is not None and gateway["transaction_id"] == "pi_gateway"  # no second payment
    assert len(env.shop.notes(1003)) == 1  # but the booking is noted
    why = reasons(env, "paid.csv")
    assert "already paid on the storefront (transaction pi_gateway)" in why[4]
    assert f"amount 0.01 {other['currency']} differs from the order's total" in why[5]
    assert "currency XAF differs from the order's currency" in why[6]
    assert "order is cancelled" in why[7]
    assert "amount '1.005' has 3 decimals; EUR has 2" in why[8]
    puts = [w for w in env.writes() if w[0] == "PUT"]
    assert len(puts) == 2
    # the echo: the status the payment wrote is ours
    assert env.ledger.status_events.statuses_written(STORE, ["1001", "1002"]) == {
        "1001": "processing", "1002": "processing"}


def test_refunds_partial_by_line_then_whole_never_above_what_remains(env: Env) -> None:
    order = paid_by_gateway(env, 1008)
    order = unpaid(env, 1008, "processing", date_paid_gmt="2026-11-01T10:00:00", transaction_id="PAY-8")
    total, cur = Decimal(order["total"]), order["currency"]
    part = (total / 4).quantize(Decimal("0.01"))
    rest = total - part
    unpaid(env, 1009, "cancelled", date_paid_gmt="2026-11-01T10:00:00")
    unpaid(env, 1010, "on-hold")
    data = money_csv(
        ev(1008, "refunded", reference="CN-1", amount=f"{part}", currency=cur, sku="SKU-A", quantity="1",
           note="one mug broken"),
        ev(1008, "refunded", reference="CN-2", amount=f"{rest + Decimal('0.01')}", currency=cur),
        ev(1008, "refunded", reference="CN-3", amount=f"{rest}", currency=cur),
        ev(1008, "refunded", reference="CN-4", amount="0.01", currency=cur),
        ev(1009, "refunded", reference="CN-5", amount="1.00", currency=cur),
        ev(1010, "refunded", reference="CN-6", amount="1.00", currency=cur),
        ev(1008, "refunded", reference="CN-7", amount="1.00", currency=cur, sku="SKU-A", quantity="5"),
    )
    result = env.sync("refunds.csv", data)
    assert result.counts == {"applied": 2, "skipped_duplicate": 0, "refused": 5, "error": 0, "invalid": 0}
    refunds = env.shop.refunds(1008)
    assert [(r["amount"], r["refunded_payment"], r["meta_data"][0]["value"]) for r in refunds] == [
        (f"{part}", False, "CN-1"), (f"{rest}", False, "CN-3")]
    assert refunds[0]["reason"] == "one mug broken (backend reference CN-1)"
    assert [(li["sku"], li["quantity"]) for li in refunds[0]["line_items"]] == [("SKU-A", -1)]
    assert env.status(1008) == "refunded"  # WooCommerce's own move on a full refund
    why = reasons(env, "refunds.csv")
    assert "exceeds what remains refundable" in why[3]
    assert "exceeds what remains refundable: 0.00" in why[5] or "exceeds what remains refundable: 0 " in why[5]
    assert "order is cancelled" in why[6]
    assert "not paid on the storefront" in why[7]
    assert "over-refund" in why[8] or "exceeds" in why[8]
    posts = [w for w in env.writes() if w[0] == "POST" and w[1].split("?")[0].endswith("/refunds")]
    assert len(posts) == 2
    assert env.ledger.status_events.statuses_written(STORE, ["1008"]) == {"1008": "refunded"}
    # the same file again (any name): nothing new on the storefront
    writes = len(env.writes())
    again = env.sync("refunds-again.csv", data)
    assert again.counts["skipped_duplicate"] == 2 and again.counts["applied"] == 0
    assert len(env.shop.refunds(1008)) == 2
    assert not [w for w in env.writes()[writes:] if w[1].split("?")[0].endswith("/refunds") and w[0] == "POST"]


def test_a_crash_between_the_storefront_and_the_ledger_repeats_no_payment_and_no_refund(
    env: Env, tmp_path: Path,
) -> None:
    unpaid(env, 1011, "on-hold")
    order = unpaid(env, 1012, "completed", date_paid_gmt="2026-11-01T10:00:00", transaction_id="PAY-12")
    events = parse_status_file(money_csv(
        ev(1011, "paid", reference="PAY-11"),
        ev(1012, "refunded", reference="CN-12", amount=order["total"], currency=order["currency"]),
    ), "c.csv").events
    apply_file(STORE, events, env.writer, env.ledger.status_events, source_file="c.csv")
    writes = len(env.writes())
    fresh = Ledger(sqlite_engine(tmp_path / "fresh.db"), create=True)  # the rows never written
    outcomes = apply_file(STORE, events, env.writer, fresh.status_events, source_file="c.csv")
    assert [(o.outcome, o.new_status) for o in outcomes] == [("applied", "processing"), ("applied", "refunded")]
    assert len(env.writes()) == writes
    assert len(env.shop.refunds(1012)) == 1 and len(env.shop.notes(1012)) == 1


def test_a_refund_found_on_the_storefront_is_not_counted_twice_for_the_next_line(
    env: Env, tmp_path: Path,
) -> None:
    """A kill after the first refund reached the storefront, before its ledger row: on the
    re-run that refund is recovered (already in "refunded so far"), and the next line of the
    same order, which refunds the rest, still fits."""
    order = unpaid(env, 1001, "processing", date_paid_gmt="2026-11-01T10:00:00", transaction_id="PAY-1")
    total, cur = Decimal(order["total"]), order["currency"]
    part = (total / 4).quantize(Decimal("1") if cur == "JPY" else Decimal("0.01"))
    first = ev(1001, "refunded", reference="CN-1a", amount=f"{part}", currency=cur)
    rest = ev(1001, "refunded", reference="CN-1b", amount=f"{total - part}", currency=cur)
    crashed = Ledger(sqlite_engine(tmp_path / "crashed.db"), create=True)
    apply_file(STORE, parse_status_file(money_csv(first), "r.csv").events, env.writer, crashed.status_events,
               source_file="r.csv")
    outcomes = apply_file(STORE, parse_status_file(money_csv(first, rest), "r.csv").events, env.writer,
                          env.ledger.status_events, source_file="r.csv")
    assert [o.outcome for o in outcomes] == ["applied", "applied"]
    assert [r["meta_data"][0]["value"] for r in env.shop.refunds(1001)] == ["CN-1a", "CN-1b"]
    assert env.status(1001) == "refunded"


def test_a_line_refund_is_split_into_net_and_tax_per_rate_as_woocommerce_records_it() -> None:
    # 3 units at 10.00 net, 19% VAT (rate 7) = 5.70 tax; 1 unit at 20.00 net, 7% (rate 8) +
    # 1.40 and a 0.60 surcharge (rate 9). Refunding 2 of the 3 units and the single unit for
    # 45.00: shares by value (23.80 and 22.00 of 45.80) -> 23.38 and 21.62; then net and tax.
    money = {11: LineMoney(3, Decimal("30.00"), ((7, Decimal("5.70")),)),
             12: LineMoney(1, Decimal("20.00"), ((8, Decimal("1.40")), (9, Decimal("0.60"))))}
    items = refund_line_items(Decimal("45.00"), "EUR", [{"id": 11, "quantity": 2}, {"id": 12, "quantity": 1}],
                              money)
    assert items == [
        {"id": 11, "quantity": 2, "refund_total": "19.65", "refund_tax": [{"id": 7, "refund_total": "3.73"}]},
        {"id": 12, "quantity": 1, "refund_total": "19.65",
         "refund_tax": [{"id": 8, "refund_total": "1.38"}, {"id": 9, "refund_total": "0.59"}]},
    ]
    # JPY: whole yen, and the parts still add up
    [item] = refund_line_items(Decimal("1001"), "JPY", [{"id": 11, "quantity": 1}],
                               {11: LineMoney(1, Decimal("1000"), ((7, Decimal("100")),))})
    assert (item["refund_total"], item["refund_tax"]) == ("910", [{"id": 7, "refund_total": "91"}])
    # a line whose money is unknown: the whole amount on the first line, net (as before)
    assert refund_line_items(Decimal("5.00"), "EUR", [{"id": 11, "quantity": 1}, {"id": 13, "quantity": 1}],
                             money) == [{"id": 11, "quantity": 1, "refund_total": "5.00"},
                                        {"id": 13, "quantity": 1, "refund_total": "0.00"}]


def test_a_line_refund_reaches_the_storefront_with_its_tax(env: Env) -> None:
    def line(n: int, sku: str, qty: int, net: str, rate: int, tax: str) -> dict[str, Any]:
        return {"id": 10020 + n, "sku": sku, "name": sku, "quantity": qty, "subtotal": net, "total": net,
                "total_tax": tax, "taxes": [{"id": rate, "total": tax, "subtotal": tax}]}

    unpaid(env, 1002, "processing", date_paid_gmt="2026-11-01T10:00:00", transaction_id="PAY-2", currency="EUR",
           total="34.50", line_items=[line(0, "SKU-A", 2, "20.00", 7, "3.80"), line(1, "SKU-B", 1, "10.00", 8, "0.70")])
    result = env.sync("line.csv", money_csv(ev(1002, "refunded", reference="CN-L", amount="11.90", currency="EUR",
                                                  sku="SKU-A", quantity="1")))
    assert result.counts["applied"] == 1
    [refund] = env.shop.refunds(1002)
    [item] = refund["line_items"]
    assert (refund["amount"], item["id"], item["quantity"]) == ("11.90", 10020, -1)
    assert (item["total"], item["total_tax"], item["taxes"]) == (
        "-10.00", "-1.90", [{"id": 7, "total": "-1.90", "subtotal": "-1.90"}])


def test_restock_follows_the_store_setting(env: Env) -> None:
    env.shop.add_products([{"id": 501, "sku": "SKU-A", "manage_stock": True, "stock_quantity": 10}])
    for oid in (1013, 1014):
        unpaid(env, oid, "processing", date_paid_gmt="2026-11-01T10:00:00", transaction_id=f"PAY-{oid}")
    def refund(oid: int) -> dict[str, object]:
        cur = env.shop.get_order(oid)["currency"]  # type: ignore[index]
        return ev(oid, "refunded", reference=f"CN-{oid}", amount="1" if cur == "JPY" else "1.00", currency=cur,
                  sku="SKU-A", quantity="2")

    assert env.sync("r1.csv", money_csv(refund(1013))).counts["applied"] == 1
    assert env.shop.stock_levels()["SKU-A"] == 10  # default: the warehouse decides
    env.store = replace(env.store, restock_refunds=True)
    assert env.sync("r2.csv", money_csv(refund(1014))).counts["applied"] == 1
    assert env.shop.stock_levels()["SKU-A"] == 12


def test_a_platform_without_money_events_refuses_them_untouched(env: Env) -> None:
    class NoMoney(WooCommerceWriter):
        money_events = frozenset()

    unpaid(env, 1015, "pending")
    with NoMoney(SHOP_CONN, timeout=10, sleep=lambda _s: None) as writer:
        events = parse_status_file(money_csv(ev(1015, "paid", reference="P")), "n.csv").events
        [outcome] = apply_file(STORE, events, writer, env.ledger.status_events)
    assert outcome.outcome == "refused: this storefront's platform does not apply 'paid' events yet"
    assert env.status(1015) == "pending" and env.writes() == []
