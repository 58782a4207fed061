"""The bad-input catalogue (issue 6, item 3): every case ends quarantined or refused with its
reason, or handled correctly; none crashes a run or reaches the backend wrongly.

* ``catalogue/orders.yaml`` — WooCommerce orders, each a patch of a real v3 order, checked
  through the library (normalise → GX validation → ``write_orders``; all cases in one GX run)
  and end to end (sandbox storefront over HTTP → ``export.extract/validate/load`` with the
  real client, GX, the embedded SFTP server and a SQLite ledger).
* ``catalogue/status_files.yaml`` — backend status files through ``status_sync.sync_file``
  (embedded SFTP, sandbox storefront, ``WooCommerceWriter``).
"""

from __future__ import annotations

import copy
import csv
import io
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pendulum
import pytest
import yaml

from order_integration import export
from order_integration.backend.formats import write_orders
from order_integration.backend.sftp import SftpBackend
from order_integration.config import parse_config
from order_integration.exceptions import StorefrontError
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.status_sync import ERRORS_SUFFIX, sync_file
from order_integration.storefronts.woocommerce import WooCommerceClient, normalise_order
from order_integration.storefronts.woocommerce_normalise import identify
from order_integration.storefronts.woocommerce_writes import WooCommerceWriter
from order_integration.validation.gx_runner import validate_orders
from order_integration.windows import Window
from sandbox.sftp_server import EmbeddedSftpServer
from sandbox.storefront import SandboxStorefront

pytestmark = pytest.mark.faults

HERE = Path(__file__).parent / "catalogue"
ORDERS = yaml.safe_load((HERE / "orders.yaml").read_text(encoding="utf-8"))
BASE = json.loads((HERE / ORDERS["base"]).resolve().read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = ORDERS["cases"]
STATUS_CASES: list[dict[str, Any]] = yaml.safe_load(
    (HERE / "status_files.yaml").read_text(encoding="utf-8"))["cases"]
STORE = "catalogue"
FIRST_ID = 50_001
KEY, SECRET = "ck_catalogue", "cs_catalogue"
SHOP_CONN, SFTP_CONN = "catalogue_shop", "catalogue_sftp"
WINDOW = Window.parse("2026-11-29T10:00:00Z", "2026-11-29T11:00:00Z")
EDIT_WINDOW = Window.parse("2026-11-29T11:00:00Z", "2026-11-29T12:00:00Z")


# ------------------------------------------------------------------------------- building cases


def _path(path: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in str(path).split(".")]


def _expand(value: Any, times: int | None) -> Any:
    if times is None:
        return copy.deepcopy(value)
    if isinstance(value, str):
        return value * times
    return [{k: v.replace("{n}", str(n)) if isinstance(v, str) else v for k, v in value.items()}
            for n in range(1, times + 1)]


def apply_patch(order: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """``order`` (changed in place) with the catalogue's patch operations applied."""
    for op in ops:
        keys = _path(op["set"] if "set" in op else op["delete"])
        target: Any = order
        for key in keys[:-1]:
            target = target[key] if isinstance(key, int) else target.setdefault(key, {})
        if "delete" in op:
            del target[keys[-1]]
        else:
            target[keys[-1]] = _expand(op["value"], op.get("times"))
    return order


def get_path(order: dict[str, Any], path: str) -> Any:
    value: Any = order
    for key in _path(path):
        value = value[key]
    return value


def build_raw(case: dict[str, Any], index: int) -> dict[str, Any]:
    """The case's order: the base with its own id and number (the case id), then the patch."""
    raw = copy.deepcopy(BASE)
    raw["id"] = FIRST_ID + index
    raw["number"] = case["id"]
    return apply_patch(raw, case.get("patch") or [])


def expectation(case: dict[str, Any], api: bool) -> dict[str, Any]:
    return case["api"] if api and "api" in case else case["expect"]


def csv_rows(data: bytes) -> dict[str, list[dict[str, str]]]:
    """The CSV's rows grouped by ``order_number`` (= case id), parsed with the csv module."""
    assert not data.startswith(b"\xef\xbb\xbf"), "orders files are UTF-8 without BOM"
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")):
        rows[row["order_number"]].append(row)
    return rows


def check_delivered(case: dict[str, Any], expect: dict[str, Any], rows: list[dict[str, str]],
                    raw: dict[str, Any]) -> None:
    where = case["id"]
    assert len(rows) == expect["rows"], (where, len(rows))
    assert [r["line_number"] for r in rows] == [str(n) for n in range(1, len(rows) + 1)], where
    assert len({r["order_version"] for r in rows}) == 1, where
    for column, value in (expect.get("cells") or {}).items():
        assert rows[0][column] == value, (where, column, rows[0][column][:200], value[:200])
    for row, cells in zip(rows, expect.get("lines") or [], strict=False):
        for column, value in cells.items():
            assert row[column] == value, (where, row["line_number"], column, row[column], value)
    for column, path in (expect.get("preserved") or {}).items():
        assert rows[0][column].encode() == get_path(raw, path).encode(), (where, column)


def check_quarantined(case: dict[str, Any], expect: dict[str, Any], problems: list[dict[str, str]]) -> None:
    rules = {p["rule"] for p in problems}
    assert rules == set(expect["rules"]), (case["id"], problems)
    if "detail" in expect:
        assert any(expect["detail"] in p["detail"] for p in problems), (case["id"], problems)


def test_the_catalogue_covers_the_issue() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))
    outcomes = Counter(c["expect"]["outcome"] for c in CASES)
    assert outcomes["delivered"] and outcomes["quarantined"] and outcomes["not_ready"]
    for case in CASES:
        assert case["why"].strip() and case["expect"]["outcome"] in ("delivered", "quarantined", "not_ready")
    for needed in ("quantity_zero", "quantity_negative", "quantity_fraction", "quantity_2_pow_31",
                   "discount_above_subtotal", "money_1e2", "money_decimal_comma", "ten_thousand_lines",
                   "note_one_megabyte", "null_byte", "ansi_escape", "rtl_override", "csv_injection_tab",
                   "id_path_traversal", "id_above_2_pow_53", "dst_gap_local_time", "created_1970",
                   "duplicate_id_in_one_page", "duplicate_id_across_pages", "edited_after_export"):
        assert needed in ids, needed
    assert {c["id"] for c in STATUS_CASES} >= {
        "bom", "latin1", "unknown_orders", "shipped_above_ordered", "half_written_no_final_newline",
        "csv_injection_in_note", "order_id_path_traversal", "order_id_superscript_two",
        "order_id_arabic_indic_three"}


# ------------------------------------------------------------------------------- library drive


class Library:
    """Every case normalised, validated in ONE GX run, and the valid ones written as CSV."""

    def __init__(self) -> None:
        self.raws = {case["id"]: build_raw(case, i) for i, case in enumerate(CASES)}
        orders = []
        for case in CASES:
            order = normalise_order(copy.deepcopy(self.raws[case["id"]]), STORE)
            orders += [order] * (2 if case.get("twice") else 1)
        self.orders = orders
        ready = [o for o in orders if o.status in ("processing", "on-hold")]
        self.not_ready = {o.order_number for o in orders} - {o.order_number for o in ready}
        self.outcome = validate_orders(ready)
        self.problems: dict[str, list[dict[str, str]]] = {}
        for bad in self.outcome.invalid_orders:
            self.problems[bad.order.order_number] = [p.as_dict() for p in bad.problems]
        buffer = io.BytesIO()
        self.written = write_orders([o.record() for o in self.outcome.valid], "csv", buffer)
        self.rows = csv_rows(buffer.getvalue())


@pytest.fixture(scope="module")
def library() -> Library:
    return Library()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case_through_the_library(library: Library, case: dict[str, Any]) -> None:
    expect, name = case["expect"], case["id"]
    outcome = expect["outcome"]
    assert (name in library.rows) == (outcome == "delivered"), name
    assert (name in library.problems) == (outcome == "quarantined"), (name, library.problems.get(name))
    assert (name in library.not_ready) == (outcome == "not_ready"), name
    if outcome == "delivered":
        check_delivered(case, expect, library.rows[name], library.raws[name])
    elif outcome == "quarantined":
        check_quarantined(case, expect, library.problems[name])
    if "edit" in case:
        raw = library.raws[name]
        edited = apply_patch(copy.deepcopy(raw), case["edit"])
        edited["date_modified_gmt"] = "2026-11-29T11:30:00"
        before, after = normalise_order(raw, STORE), normalise_order(edited, STORE)
        assert (before.version != after.version) == case["edit_is_new_version"], name


def test_identify_gives_the_id_and_status_normalise_gives_for_every_case() -> None:
    """The export sets an order aside as not ready from ``identify`` alone, never normalising
    it: for every bad input, the two must agree, or an order would change bucket."""
    for index, case in enumerate(CASES):
        raw = build_raw(case, index)
        order = normalise_order(copy.deepcopy(raw), STORE)
        assert identify(raw) == (order.order_id, order.status), case["id"]
    for odd in (None, [], "order", 7):
        order = normalise_order(odd, STORE)  # type: ignore[arg-type]
        assert identify(odd) == (order.order_id, order.status) == ("", "")


def test_the_written_file_holds_only_the_valid_orders(library: Library) -> None:
    delivered = {c["id"] for c in CASES if c["expect"]["outcome"] == "delivered"}
    assert set(library.rows) == delivered
    assert library.written.orders == len(delivered)
    assert library.written.rows == sum(len(r) for r in library.rows.values())


# ------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSftpServer]:
    base = tmp_path_factory.mktemp("catalogue_sftp")
    with EmbeddedSftpServer(base / "root", base / "keys") as server:
        yield server


def _store(outbound: str = "outbound", inbound: str = "inbound"):
    return parse_config({"stores": [{
        "id": STORE, "storefront_conn_id": SHOP_CONN, "backend_conn_id": SFTP_CONN,
        "export_statuses": ["processing", "on-hold"], "validation": {"max_quarantine_ratio": 1.0},
        "backend": {"inbound_dir": inbound, "outbound_dir": outbound, "format": "csv"}}]}).stores[0]


@pytest.fixture
def shop_env(monkeypatch: pytest.MonkeyPatch, sftp_server: EmbeddedSftpServer):
    shops: list[SandboxStorefront] = []

    def start(orders: list[dict[str, Any]]) -> SandboxStorefront:
        shop = SandboxStorefront(orders, consumer_key=KEY, consumer_secret=SECRET,
                                 clock=lambda: datetime(2026, 11, 29, 12, 30, tzinfo=UTC)).start()
        shops.append(shop)
        monkeypatch.setenv(f"AIRFLOW_CONN_{SHOP_CONN.upper()}", json.dumps(
            {"conn_type": "http", "host": shop.base_url, "login": KEY, "password": SECRET}))
        monkeypatch.setenv(f"AIRFLOW_CONN_{SFTP_CONN.upper()}", json.dumps(sftp_server.airflow_connection()))
        return shop

    yield start
    for shop in shops:
        shop.stop()


def _run(store, window: Window, staging_base, client, ledger, run_id: str) -> dict[str, Any]:
    staging = export.run_dir(staging_base, store.id, window, run_id)
    extracted = export.extract(store, window, staging, client)
    validated = export.validate(store, staging, type(staging)(extracted["raw_path"]), client, ledger)
    loaded = export.load(store, window, run_id, staging, type(staging)(validated["deliverable_path"]),
                         ledger.deliveries, SftpBackend(store.backend_conn_id, conn_retry_attempts=1))
    return export.summarise(store.id, window, validated, loaded)


def test_every_order_case_end_to_end(shop_env, sftp_server: EmbeddedSftpServer, tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    # Served in catalogue order, one second apart, inside the window; the fault cases first, so
    # they are on the first page (the duplicate), and the drift case first of all: a drift moves
    # the order served first.
    refused = [c for c in CASES if expectation(c, True)["outcome"] == "refused"]
    fault_rank = {"drift": 0}
    served = sorted((c for c in CASES if c not in refused),
                    key=lambda c: fault_rank.get(c["sandbox_fault"]["type"], 1) if "sandbox_fault" in c else 2)
    start = pendulum.datetime(2026, 11, 29, 10, 20, 1, tz="UTC")
    raws: dict[str, dict[str, Any]] = {}
    for n, case in enumerate(served):
        raw = build_raw(case, CASES.index(case))
        raw["date_modified_gmt"] = start.add(seconds=n).strftime("%Y-%m-%dT%H:%M:%S")
        raw.pop("date_modified", None)
        raws[case["id"]] = raw
    for n, case in enumerate(refused):  # each alone in its own later hour: the page is refused
        raw = build_raw(case, CASES.index(case))
        raw["date_modified_gmt"] = f"2026-11-29T{13 + n}:10:00"
        raws[case["id"]] = raw
    shop = shop_env(list(raws.values()))
    served_copy = {c["id"]: shop.get_order(raws[c["id"]]["id"]) for c in served}
    faults = [{**c["sandbox_fault"], "path": "/orders"} for c in served if "sandbox_fault" in c]
    for fault in faults:
        if fault["type"] == "duplicate":
            fault["id"] = next(raws[c["id"]]["id"] for c in served if c.get("sandbox_fault", {}).get("type")
                               == "duplicate")
    shop.inject_faults(faults)

    store = _store(inbound=f"inbound_{tmp_path.name}")
    ledger = Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)
    staging = ObjectStoragePath(f"file://{tmp_path / 'staging'}")
    client = WooCommerceClient(SHOP_CONN, per_page=20, sleep=lambda _s: None)
    summary = _run(store, WINDOW, staging, client, ledger, "run_1")
    assert shop.pending_faults == [], "every sandbox fault was served"
    # the drift moved the order served first (page 1) ahead of the cursor: it was served again later
    drifted = [c for c in served if c.get("sandbox_fault", {}).get("type") == "drift"]
    for case in drifted:
        assert shop.get_order(raws[case["id"]]["id"])["date_modified_gmt"] == "2026-11-29T10:59:59"

    expected = {c["id"]: expectation(c, True) for c in served}
    by_outcome = Counter(e["outcome"] for e in expected.values())
    [file_name] = summary["files"]
    inbound = sftp_server.root / store.backend.inbound_dir
    assert sorted(p.name for p in inbound.iterdir()) == [file_name]
    rows = csv_rows((inbound / file_name).read_bytes())
    assert sorted(rows) == sorted(name for name, e in expected.items() if e["outcome"] == "delivered")
    assert (summary["extracted"], summary["delivered"], summary["quarantined"], summary["not_ready"],
            summary["already_delivered"]) == (len(served), by_outcome["delivered"], by_outcome["quarantined"],
                                              by_outcome["not_ready"], 0), summary

    # as the storefront serves them (WooCommerce fills in a missing _gmt twin from the local time)
    versions = {name: normalise_order(served_copy[name], STORE).version for name in expected}
    deliveries = {(d["order_id"], d["order_version"]) for d in ledger.deliveries.delivered(store.id)}
    quarantine = {q["order_version"]: q for q in ledger.quarantine.entries(store.id)}
    for name, expect in expected.items():
        case = next(c for c in CASES if c["id"] == name)
        version = versions[name]
        if expect["outcome"] == "delivered":
            check_delivered(case, expect, rows[name], raws[name])
            assert (rows[name][0]["order_id"], rows[name][0]["order_version"]) in deliveries, name
            assert rows[name][0]["order_version"] == version, name
            assert version not in quarantine, name
        elif expect["outcome"] == "quarantined":
            entry = quarantine[version]
            reasons = entry["reasons"] if isinstance(entry["reasons"], list) else json.loads(entry["reasons"])
            check_quarantined(case, expect, reasons)
        else:
            assert version not in quarantine and name not in rows, name
    assert len(deliveries) == by_outcome["delivered"] and len(quarantine) == by_outcome["quarantined"]

    # Edited after export: the new version goes out once; a bare bump does not go out again.
    edits = [c for c in served if "edit" in c]
    for case in edits:
        order = shop.get_order(raws[case["id"]]["id"])
        assert order is not None
        changed = apply_patch(order, case["edit"])
        changed["date_modified_gmt"] = "2026-11-29T11:30:00"
        changed.pop("date_modified", None)
        shop.upsert_order(changed)
    again = _run(store, EDIT_WINDOW, staging, client, ledger, "run_2")
    new_versions = [c for c in edits if c["edit_is_new_version"]]
    # the drifted orders (10:59:59) are in this run's lookback too, already delivered
    assert (again["extracted"], again["delivered"], again["already_delivered"], again["quarantined"]) == (
        len(edits) + len(drifted), len(new_versions), len(edits) + len(drifted) - len(new_versions), 0), again
    [second] = again["files"]
    rows2 = csv_rows((inbound / second).read_bytes())
    assert set(rows2) == {c["id"] for c in new_versions}
    for case in new_versions:
        assert rows2[case["id"]][0]["order_version"] != versions[case["id"]]
        assert rows2[case["id"]][0]["ship_address1"] == "2 Harbour Road"
    assert _run(store, EDIT_WINDOW, staging, client, ledger, "run_3")["delivered"] == 0

    # Rows the client cannot even deduplicate (no integer id): the window fails loudly, naming the
    # row; nothing is staged for validation, nothing reaches the backend.
    for n, case in enumerate(refused):
        window = Window.parse(f"2026-11-29T{13 + n}:00:00Z", f"2026-11-29T{14 + n}:00:00Z")
        run = export.run_dir(staging, store.id, window, f"refused_{n}")
        with pytest.raises(StorefrontError) as caught:
            export.extract(store, window, run, client)
        assert case["api"]["reason"] in str(caught.value), (case["id"], str(caught.value))
    assert sorted(p.name for p in inbound.iterdir()) == sorted([file_name, second])


# ------------------------------------------------------------------------------- status files


def _status_order(spec: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw.update(id=spec["id"], number=str(spec["id"]), status=spec["status"])
    raw["line_items"] = [{"id": spec["id"] * 10 + n, "sku": sku, "name": sku, "quantity": qty,
                          "subtotal": "10.00", "total": "10.00"} for n, (sku, qty) in enumerate(spec["lines"])]
    return raw


@pytest.mark.parametrize("case", STATUS_CASES, ids=[c["id"] for c in STATUS_CASES])
def test_status_file_case(shop_env, sftp_server: EmbeddedSftpServer, tmp_path: Path, case: dict[str, Any]) -> None:
    shop = shop_env([_status_order(o) for o in case["orders"]])
    outbound = f"outbound_{case['id']}_{tmp_path.name[-6:]}"
    store = _store(outbound=outbound)
    folder = sftp_server.root / outbound
    folder.mkdir(parents=True)
    name = f"status_{case['id']}.csv"
    (folder / name).write_bytes(case["content"].encode(case.get("encoding", "utf-8")))
    expect = case["expect"]

    writer = WooCommerceWriter(SHOP_CONN, timeout=10, sleep=lambda _s: None)
    ledger = Ledger(sqlite_engine(tmp_path / "status.db"), create=True)
    try:
        with SftpBackend(SFTP_CONN, conn_retry_attempts=1).session() as session:
            result = sync_file(store, name, session, writer, ledger.status_events)
    finally:
        writer.close()

    placement = expect["placement"]
    assert result.moved_to == f"{outbound}/{placement}/{name}"
    assert not (folder / name).exists() and (folder / placement / name).exists()
    report_path = folder / "error" / (name + ERRORS_SUFFIX)
    assert report_path.exists() == (placement == "error")
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {"errors": []}
    errors = {e["line_number"]: e for e in report["errors"]}

    outcomes = {o.event.line_number: (o.kind, o.event.order_id, o.outcome) for o in result.outcomes}
    outcomes.update({e.line_number: ("invalid", e.order_id, e.reason) for e in result.invalid_lines})
    assert set(outcomes) == set(expect["lines"]), (case["id"], outcomes)
    if "file_error" in expect:
        assert not result.outcomes and len(result.invalid_lines) == 1
        assert expect["file_error"] in result.invalid_lines[0].reason, result.invalid_lines
    for line, want in expect["lines"].items():
        kind, order_id, reason = outcomes[line]
        assert (kind, order_id) == (want["outcome"], want["order"]), (case["id"], line, outcomes[line])
        if kind == "applied":
            assert line not in errors, (case["id"], line)
            continue
        assert want["reason"] in reason, (case["id"], line, reason)
        assert (errors[line]["order_id"], want["reason"] in errors[line]["reason"]) == (want["order"], True)
    assert set(errors) == {n for n, w in expect["lines"].items() if w["outcome"] != "applied"}

    for order_id, want in expect["storefront"].items():
        order = shop.get_order(int(order_id))
        assert order is not None and order["status"] == want["status"], (case["id"], order_id)
        notes = [n["note"] for n in shop.notes(int(order_id))]
        if "note" in want:
            assert any(want["note"] in n for n in notes), (case["id"], notes)
        if "notes" in want:
            assert len(notes) == want["notes"], (case["id"], notes)
    assert not any("/../" in path or "%2F" in path for _m, path, _s in shop.request_log), shop.request_log
