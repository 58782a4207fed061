"""What a new operator met in the first hour (issue 12), as unit-sized checks: the breaker on
small windows and id runs, the run summary naming quarantined ids, GX's log noise, and the
validation report (self-contained, keyed by order id and rule)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pendulum
import pytest

from order_integration.config import parse_config
from order_integration.exceptions import QuarantineRatioExceeded
from order_integration.export import ValidateCounts, _check_breaker, summary_line
from order_integration.validation.report import render_report
from order_integration.windows import Window

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _store(**validation):
    raw = {"id": "demo", "storefront_conn_id": "sf", "backend_conn_id": "be"}
    if validation:
        raw["validation"] = validation
    return parse_config({"stores": [raw]}).stores[0]


def test_min_validated_for_ratio_defaults_to_20_and_is_checked():
    assert _store().validation.min_validated_for_ratio == 20
    assert _store(min_validated_for_ratio=0).validation.min_validated_for_ratio == 0
    with pytest.raises(Exception, match=r"validation\.min_validated_for_ratio"):
        _store(min_validated_for_ratio=-1)


def test_a_run_by_order_ids_never_trips_the_breaker():
    """Ids 1200 and 1204 still broken, 1210 fixed: 2 of 3 quarantined must not stop 1210."""
    counts = ValidateCounts(validated=3, newly_quarantined=2, quarantined=2)
    _check_breaker(_store(min_validated_for_ratio=0), counts, by_ids=True, dry_run=False)
    with pytest.raises(QuarantineRatioExceeded):  # the same counts in a window do
        _check_breaker(_store(min_validated_for_ratio=0), counts, by_ids=False, dry_run=False)


def test_a_window_trips_the_breaker_only_from_the_minimum_on():
    store = _store(max_quarantine_ratio=0.05, min_validated_for_ratio=20)
    _check_breaker(store, ValidateCounts(validated=19, newly_quarantined=10), by_ids=False, dry_run=False)
    with pytest.raises(QuarantineRatioExceeded, match="of 20 validated"):
        _check_breaker(store, ValidateCounts(validated=20, newly_quarantined=2), by_ids=False, dry_run=False)
    _check_breaker(store, ValidateCounts(validated=20, newly_quarantined=1), by_ids=False, dry_run=False)
    # a dry run only warns
    _check_breaker(store, ValidateCounts(validated=20, newly_quarantined=2), by_ids=False, dry_run=True)


def _summary(quarantined_ids, quarantined):
    return {"store_id": "demo", "window_start": "2026-11-02T10:00:00Z", "window_end": "2026-11-02T11:00:00Z",
            "extracted": 30, "delivered": 30 - quarantined, "quarantined": quarantined, "already_delivered": 0,
            "not_ready": 0, "files": ["orders_x.csv"], "quarantined_ids": quarantined_ids,
            "report_paths": ["file:///staging/validation_report_demo_x.html"]}


def test_the_summary_line_names_a_handful_of_quarantined_ids_then_a_count():
    line = summary_line(_summary(["1200", "1204"], 2))
    assert "quarantined_ids=1200,1204;" in line and "more" not in line
    assert line.endswith("; report=file:///staging/validation_report_demo_x.html")
    many = summary_line(_summary([str(i) for i in range(1000, 1020)], 27))
    assert "quarantined_ids=1000,1001,1002,1003,1004 +22 more" in many
    clean = summary_line({**_summary([], 0)})
    assert "quarantined_ids" not in clean and "report=" not in clean


def test_validate_imports_and_runs_gx_without_its_info_chatter():
    """In a fresh process (GX logs most of it once, at import), with the root logger at INFO as
    in a task: GX's own INFO lines ("Skipping registering function …") stay out of the log."""
    script = textwrap.dedent("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
        from order_integration.validation.gx_runner import validate_orders
        from tests.unit.test_validation import make_order
        order = make_order("1200")
        outcome = validate_orders([order])
        print("RESULT", len(outcome.valid), len(outcome.invalid_orders))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT " in proc.stdout
    chatter = [line for line in proc.stdout.splitlines() if line.startswith("great_expectations")]
    assert chatter == [], f"{len(chatter)} GX lines, first: {chatter[:3]}"


def test_the_validation_report_is_self_contained_and_keyed_by_order_id_and_rule():
    window = Window(pendulum.datetime(2026, 11, 2, 10, tz="UTC"), pendulum.datetime(2026, 11, 2, 11, tz="UTC"))
    page = render_report(
        store_id="demo", scope=f"window {window}", run_id="scheduled__2026-11-02T10:00:00+00:00", validated=55,
        quarantined=[
            {"order_id": "1204", "order_version": "v2", "reasons": [
                {"rule": "email_valid", "detail": "customer_email 'x(at)y' <script>"},
                {"rule": "order_adds_up", "detail": "total 1 != 2"}]},
            {"order_id": "1200", "order_version": "v1", "reasons": [{"rule": "country_iso", "detail": "XX"}]},
        ],
        expectations=[{"rule": "email_valid", "frame": "orders", "expectation": "ExpectColumnValuesToMatchRegex",
                       "column": "customer_email", "success": False, "unexpected_count": 1}],
    )
    assert not re.search(r"<script|<link|\bsrc=|https?://", page), "no script, stylesheet or outside reference"
    assert "store demo" in page and str(window) in page and "scheduled__2026-11-02T10:00:00+00:00" in page
    assert "&lt;script&gt;" in page, "order text is escaped"
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    assert any("1204" in r and "email_valid" in r for r in rows)
    assert any("order_adds_up" in r for r in rows) and any("1200" in r and "country_iso" in r for r in rows)
    assert page.index(">1200<") < page.index(">1204<"), "orders in id order"
    assert "55 order(s) validated, 2 quarantined" in page
