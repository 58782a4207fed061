"""Validation in chunks (issue 18): a window larger than a chunk reads as one run.

The same orders are validated once in one chunk and once in chunks of 3 (monkeypatched), each
with its own ledger and staging; every staged file (deliverable records, quarantine, the GX
summary, the HTML report) and every count must be the same, byte for byte. Duplicated order ids
sit in different chunks, so ``order_id_unique`` (a rule of the whole run) is checked across them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from order_integration import export
from order_integration.config import parse_config
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.model import Address, Order, Problem
from order_integration.validation import gx_runner
from tests.support.orders import make_order

pytestmark = pytest.mark.unit

CHUNK = 3


def _orders() -> list[Order]:
    bad = [
        make_order("2001", currency="EURO"),
        make_order("2002", customer_email="nobody"),
        make_order("2003", shipping=Address(country="Germany")),
        make_order("2004", total=Decimal("1.00")),
        make_order("2005", lines=()),
        make_order("2006", total=None, parse_problems=(Problem("total_not_a_number", "total 'x'"),)),
        make_order(""),  # missing id: its detail names its position in the whole run
    ]
    good = [make_order(str(1000 + i)) for i in range(20)]
    orders = [make_order("3000", customer_email="first@example.de")]  # duplicated far below
    for i, order in enumerate(good):
        orders.append(order)
        if i < len(bad):
            orders.append(bad[i])
    orders.append(make_order("9000", status="pending"))  # not ready
    orders.append(make_order("3000", customer_email="second@example.de"))
    return orders


ORDERS = _orders()
_VALIDATE_CHUNK = gx_runner.SuiteRun.validate_chunk


class _ByIndex:
    """A normaliser over the test's orders: each raw row is ``{"i": index}``."""

    platform = "test"

    @staticmethod
    def normalise(raw: dict[str, Any], store_id: str) -> Order:
        return ORDERS[raw["i"]]

    @staticmethod
    def identify(raw: dict[str, Any]) -> tuple[str, str]:
        return ORDERS[raw["i"]].order_id, ORDERS[raw["i"]].status


def _validate(tmp: Path, name: str, monkeypatch: pytest.MonkeyPatch, chunk: int) -> dict[str, Any]:
    from airflow.sdk import ObjectStoragePath

    store = parse_config({"stores": [{
        "id": "demo", "storefront_conn_id": "sf", "backend_conn_id": "be",
        "export_statuses": ["processing"], "validation": {"max_quarantine_ratio": 1.0},
    }]}).store("demo")
    folder = tmp / name
    folder.mkdir()
    raw = folder / "raw_orders.jsonl"
    raw.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(len(ORDERS))))
    staging = ObjectStoragePath(f"file://{folder / 'staging'}")
    staging.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(export, "VALIDATE_CHUNK", chunk)
    monkeypatch.setattr(gx_runner, "GX_ROWS", 2 * chunk + 1)  # GX over three chunks' frames at a time
    chunks: list[int] = []

    def counting(self: gx_runner.SuiteRun, orders: Any) -> Any:
        chunks.append(len(orders))
        return _VALIDATE_CHUNK(self, orders)

    monkeypatch.setattr(gx_runner.SuiteRun, "validate_chunk", counting)
    result = export.validate(store, staging, ObjectStoragePath(f"file://{raw}"), _ByIndex(),
                             Ledger(sqlite_engine(folder / "ledger.db"), create=True),
                             run_id="manual__chunks")
    files = {p.name: p.read_bytes() for p in (folder / "staging").iterdir()}
    paths = {k: result.pop(k) for k in ("deliverable_path", "quarantine_path", "report_paths")}
    assert paths["deliverable_path"].endswith(export.DELIVERABLE_FILE)
    return {"result": result, "files": files, "chunks": chunks}


def test_a_window_larger_than_a_chunk_validates_as_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _validate(tmp_path, "whole", monkeypatch, 10_000)
    chunked = _validate(tmp_path, "chunked", monkeypatch, CHUNK)

    assert len(whole["chunks"]) == 1
    assert len(chunked["chunks"]) > 5 and sum(chunked["chunks"]) == sum(whole["chunks"])
    assert chunked["result"] == whole["result"]
    assert sorted(chunked["files"]) == sorted(whole["files"])
    for name, content in whole["files"].items():
        assert chunked["files"][name] == content, name

    # ... and that one run is right, so a chunk lost or counted twice on both sides fails too.
    counts = whole["result"]
    assert counts["extracted"] == len(ORDERS)
    assert counts["not_ready"] == 1
    assert counts["validated"] == len(ORDERS) - 1
    assert counts["deliverable"] == 20 and counts["quarantined"] == 9
    deliverable = [json.loads(line) for line in whole["files"][export.DELIVERABLE_FILE].splitlines()]
    assert [r["order_id"] for r in deliverable] == [str(1000 + i) for i in range(20)]
    quarantine = json.loads(whole["files"][export.QUARANTINE_FILE])
    rules = {(e["order_id"], tuple(r["rule"] for r in e["reasons"])) for e in quarantine}
    assert rules == {
        ("3000", ("order_id_unique",)), ("2001", ("currency_iso4217",)), ("2002", ("email_valid",)),
        ("2003", ("ship_country_iso3166_alpha2",)), ("2004", ("order_adds_up",)),
        ("2005", ("has_lines",)), ("2006", ("total_not_a_number",)), ("", ("order_id_present",)),
    }
    assert quarantine[0]["order_id"] == "3000" and quarantine[-1]["order_id"] == "3000"
    missing = next(e for e in quarantine if e["order_id"] == "")
    position = next(i for i, o in enumerate(o for o in ORDERS if o.status == "processing") if not o.order_id)
    assert missing["reasons"][0]["detail"] == (
        f"order_id is missing or empty (order at position {position} of the batch)")
    summary = json.loads(whole["files"][export.VALIDATION_FILE])
    rows = {(e["rule"], e["column"]): e for e in summary["expectations"]}
    assert summary["frames"]["orders"]["rows"] == counts["validated"]
    assert rows[("order_id_unique", "order_id")]["element_count"] == counts["validated"]
    assert rows[("order_id_unique", "order_id")]["unexpected_count"] == 2
    assert rows[("email_valid", "customer_email")]["element_count"] == counts["validated"]
    assert summary["success"] is False
    report = whole["files"][next(n for n in whole["files"] if n.startswith("validation_report_"))].decode()
    assert f"{counts['validated']} order(s) validated, 9 quarantined." in report


@pytest.mark.parametrize("gx_rows", [1, 6, 10_000])
def test_a_suite_run_in_chunks_equals_one_run(gx_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner alone: chunks of 4, GX run on every chunk, on the frames of two chunks (the
    second call returns the first chunk's failures too) or once at the end, give each order
    the same problems and the same summary."""
    orders = [o for o in ORDERS if o.status == "processing"]
    one = gx_runner.validate_orders(orders)
    monkeypatch.setattr(gx_runner, "GX_ROWS", gx_rows)
    run = gx_runner.SuiteRun()
    found: dict[int, list[Any]] = {}
    returned = []
    for start in range(0, len(orders), 4):
        failures = run.validate_chunk(orders[start:start + 4])
        returned.append(sorted(failures))
        for position, failed in failures.items():
            assert position not in found  # each failure is returned once
            found[position] = failed
    rest, summary = run.finish()
    problems = [gx_runner.merge_problems(o.parse_problems, found.get(i, ()), rest.get(i, ()))
                for i, o in enumerate(orders)]
    assert summary == one.gx_result
    assert [tuple(p) for p in problems if p] == [bad.problems for bad in one.invalid_orders]
    assert run.rows["orders"] == len(orders)
    if gx_rows == 1:  # each call validates its own chunk
        assert any(returned) and all(4 * call <= p < 4 * call + 4 for call, r in enumerate(returned) for p in r)
    if gx_rows == 6:  # every second call validates two chunks
        assert returned[0] == [] and any(p < 4 for p in returned[1])
    if gx_rows == 10_000:
        assert not any(returned) and rest


def test_an_order_not_ready_is_never_normalised_unless_a_version_of_it_went_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``identify`` sets a not-exported status aside; the ledger decides per chunk: never
    claimed -> not_ready, unnormalised; claimed before -> normalised and validated (its new
    status is a change the backend must get)."""
    from airflow.sdk import ObjectStoragePath

    orders = [make_order("4000", status="cancelled"), make_order("4001", status="cancelled"),
              make_order("4002"), make_order("4003", status="pending"), make_order("4004")]
    normalised: list[str] = []

    class Counting:
        platform = "test"

        @staticmethod
        def normalise(raw: dict[str, Any], store_id: str) -> Order:
            normalised.append(orders[raw["i"]].order_id)
            return orders[raw["i"]]

        @staticmethod
        def identify(raw: dict[str, Any]) -> tuple[str, str]:
            return orders[raw["i"]].order_id, orders[raw["i"]].status

    store = parse_config({"stores": [{"id": "demo", "storefront_conn_id": "sf", "backend_conn_id": "be",
                                      "export_statuses": ["processing"]}]}).store("demo")
    ledger = Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)
    delivered = make_order("4000").record()  # 4000 went out while processing
    ledger.deliveries.claim("demo", "earlier", "w", "src", [("4000", delivered["order_version"], None)])
    raw = tmp_path / "raw_orders.jsonl"
    raw.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(len(orders))))
    staging = ObjectStoragePath(f"file://{tmp_path / 'staging'}")
    staging.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(export, "VALIDATE_CHUNK", 2)  # 4000 and 4001 share a chunk, 4003 is in another

    result = export.validate(store, staging, ObjectStoragePath(f"file://{raw}"), Counting(), ledger)

    assert normalised == ["4000", "4002", "4004"]  # 4000 once the ledger knew; 4001 and 4003 never
    assert result["not_ready"] == 2 and result["not_ready_by_status"] == {"cancelled": 1, "pending": 1}
    assert result["deliverable"] == 3 and result["extracted"] == 5
    staged = [json.loads(line) for line in (tmp_path / "staging" / export.DELIVERABLE_FILE).read_text().splitlines()]
    assert [(r["order_id"], r["order_status"]) for r in staged] == [
        ("4000", "cancelled"), ("4002", "processing"), ("4004", "processing")]
