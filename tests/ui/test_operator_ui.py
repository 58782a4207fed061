"""What an operator does in Airflow's own UI on ``make up``'s stack, in a real browser (issue 17).

Sign in with the printed login; trigger ``order_export_on_demand__demo`` from its form with a
window (picked in the form's date and time pickers) and with order ids typed one per line; see
each run succeed and its note on the run's page, the note held against the seeded orders and
the run's own summary. Screenshots: ``.artifacts/ui/``.
"""

from __future__ import annotations

import re

import pendulum
import pytest
from playwright.sync_api import expect

from tests.ui.conftest import RUN_TIMEOUT, VIEWPORT, iso_z, sign_in

pytestmark = [pytest.mark.ui, pytest.mark.timeout(900)]

NOTE = re.compile(r"order export (?P<store>\S+) \[(?P<start>\S+), (?P<end>\S+)\): extracted=(?P<extracted>\d+) = "
                  r"delivered=(?P<delivered>\d+) \+ quarantined=(?P<quarantined>\d+) \+ "
                  r"already_delivered=(?P<already>\d+) \+ not_ready=(?P<not_ready>\d+); files=\S+")


def _on_demand(stack) -> str:
    return f"order_export_on_demand__{stack.store.id}"


def _open_form(page, stack):
    """The DAG's page, its Trigger button, the form's section with the window and the ids."""
    page.goto(f"{stack.url}/dags/{_on_demand(stack)}", wait_until="networkidle")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("What to export: a window or order ids", exact=True).click()
    page.wait_for_timeout(300)
    return dialog


def _pick(page, dialog, label: str, when: pendulum.DateTime) -> None:
    """The form's date-time field labelled ``label``: its popover (UTC) takes a date and a time."""
    field = dialog.locator(".chakra-field__root").filter(has=page.get_by_text(label, exact=True))
    field.locator("[data-testid=datetime-input]").click()
    popover = page.locator("[data-scope=popover][data-part=content][data-state=open]")
    popover.get_by_placeholder("YYYY/MM/DD").fill(when.format("YYYY/MM/DD"))
    popover.get_by_placeholder("HH:mm").fill(when.format("HH:mm"))
    page.keyboard.press("Escape")  # closes the popover, keeps the dialog
    expect(popover).to_have_count(0)


def _trigger(page, dialog) -> dict:
    """Press the form's Trigger; return the run the API created (HTTP 200)."""
    with page.expect_response(lambda r: r.url.endswith("/dagRuns") and r.request.method == "POST") as sent:
        dialog.get_by_role("button", name="Trigger").click()
    assert sent.value.status == 200, sent.value.text()[:500]
    return sent.value.json()


def _see_run_succeed(page, stack, run_id: str) -> dict[str, str]:
    """Wait for the run, then its page: the run and its five tasks shown as Success, and the
    note, parsed (it is the one the API holds)."""
    api = stack.services.api
    assert api.wait_for_run(_on_demand(stack), run_id, timeout=RUN_TIMEOUT) == "success"
    note = api.run(_on_demand(stack), run_id)["note"]
    page.goto(f"{stack.url}/dags/{_on_demand(stack)}/runs/{run_id}", wait_until="networkidle")
    expect(page.get_by_text(run_id).first).to_be_visible()
    expect(page.get_by_text(note)).to_be_visible()
    expect(page.get_by_text("Success", exact=True)).to_have_count(6)  # the run and its 5 tasks
    found = NOTE.match(note)
    assert found, note
    return found.groupdict()


def _modified(order: dict) -> pendulum.DateTime:
    return pendulum.parse(order["date_modified_gmt"], tz="UTC")


def test_sign_in_with_the_printed_login(stack, chromium, shot):
    lines = stack.lines()
    assert lines[0] == f"Airflow UI    {stack.url}" and f"admin / {stack.password()}" in lines[1], lines
    context = chromium.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        sign_in(page, stack, on_form=lambda form: shot(form, "login_form"))
        page.goto(f"{stack.url}/dags?tags=store%3A{stack.store.id}", wait_until="networkidle")
        for dag_id in stack.dag_ids():
            expect(page.get_by_role("link", name=dag_id, exact=True)).to_be_visible()
        shot(page, "the_stores_dags")
    finally:
        context.close()


def test_the_on_demand_form_exports_a_window(stack, page, shot):
    """The first seeded hour, picked in the form: the run exports exactly the seeded orders
    modified in it (and the store's lookback before it) and quarantines the broken one. (No
    status write-back reaches them: the schedule delivered only the last hour's orders.)"""
    start, end = stack.seed_hour.subtract(hours=3), stack.seed_hour.subtract(hours=2)
    dialog = _open_form(page, stack)
    _pick(page, dialog, "Window start (UTC)", start)
    _pick(page, dialog, "Window end (UTC, exclusive)", end)
    shot(page, "form_with_a_window")
    run = _trigger(page, dialog)
    assert pendulum.parse(run["conf"]["start"]) == start and pendulum.parse(run["conf"]["end"]) == end, run["conf"]

    note = _see_run_succeed(page, stack, run["dag_run_id"])
    shot(page, "run_succeeded_with_its_note")
    lookback = start.subtract(minutes=stack.store.lookback_minutes)
    in_window = [o for o in stack.seeded if lookback <= _modified(o) < end]
    broken = [str(o["id"]) for o in in_window if int(o["id"]) in stack.broken]
    assert (note["start"], note["end"]) == (iso_z(start), iso_z(end)), note
    assert int(note["extracted"]) == len(in_window), (note, len(in_window))
    assert int(note["quarantined"]) == len(broken) == 1, (note, stack.broken)
    assert sum(int(note[k]) for k in ("delivered", "quarantined", "already", "not_ready")) == int(note["extracted"])
    not_ready = [o for o in in_window if o["status"] not in stack.store.export_statuses]
    assert int(note["not_ready"]) == len(not_ready), note
    summary = stack.services.api.xcom(_on_demand(stack), run["dag_run_id"], "publish")
    assert summary["quarantined_ids"] == broken, summary


def test_the_on_demand_form_takes_order_ids_one_per_line(stack, page, shot):
    """Three valid orders typed one per line (a blank line among them) go out: the run's note
    counts exactly those three, none quarantined, none unknown."""
    valid = [o for o in stack.seeded if o["status"] in stack.store.export_statuses
             and int(o["id"]) not in stack.broken]
    ids = [str(o["id"]) for o in valid[-3:]]
    dialog = _open_form(page, stack)
    box = dialog.locator("#element_order_ids")
    assert box.evaluate("e => e.tagName") == "TEXTAREA", "order ids must be a text box, not a JSON editor"
    box.fill(f"{ids[0]}\n{ids[1]}\n\n{ids[2]}\n")
    shot(page, "form_with_ids_one_per_line")
    run = _trigger(page, dialog)
    assert [i for i in run["conf"]["order_ids"] if i.strip()] == ids, run["conf"]

    note = _see_run_succeed(page, stack, run["dag_run_id"])
    shot(page, "run_succeeded_with_its_note")
    assert int(note["extracted"]) == 3 and int(note["quarantined"]) == 0 and int(note["not_ready"]) == 0, note
    assert int(note["delivered"]) + int(note["already"]) == 3, note
    summary = stack.services.api.xcom(_on_demand(stack), run["dag_run_id"], "publish")
    assert summary["unknown_ids"] == [], summary
