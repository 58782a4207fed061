"""The on-demand form: what is accepted, and the message for everything refused."""

from __future__ import annotations

import pendulum
import pytest

from order_integration.exceptions import PermanentError
from order_integration.on_demand import MAX_ORDER_IDS, ExportRequest, RequestRefused, parse_request

pytestmark = pytest.mark.unit

NOW = pendulum.datetime(2026, 11, 29, 12, 30, 15, 123456, tz="UTC")


def _parse(**params):
    return parse_request(params, run_after=NOW)


def test_a_window_in_utc_with_flags():
    req = _parse(start="2026-11-29T09:00:00+01:00", end="2026-11-29T10:00:00Z", resend=True, dry_run=True)
    assert req.window.start == pendulum.datetime(2026, 11, 29, 8, tz="UTC")
    assert req.window.end == pendulum.datetime(2026, 11, 29, 10, tz="UTC")
    assert (req.order_ids, req.resend, req.dry_run, req.by_ids) == ((), True, True, False)
    assert "window [" in req.describe() and "resend, dry_run" in req.describe()


def test_a_time_without_offset_is_utc():
    req = _parse(start="2026-11-29T09:00:00", end="2026-11-29T10:00:00")
    assert req.window.start == pendulum.datetime(2026, 11, 29, 9, tz="UTC")


def test_order_ids_from_a_list_or_the_forms_text_deduplicated_in_order():
    assert _parse(order_ids=[5, "3", 5]).order_ids == (5, 3)
    assert _parse(order_ids="12\n7, 12 9").order_ids == (12, 7, 9)
    # the form's text box: one entry per line, as strings; blank lines and "a, b" lines too
    assert _parse(order_ids=["1200", "", "1204, 1205", "  1210 "]).order_ids == (1200, 1204, 1205, 1210)


def test_an_id_run_is_named_after_its_trigger_second():
    req = _parse(order_ids=[1])
    assert req.window.start == pendulum.datetime(2026, 11, 29, 12, 30, 15, tz="UTC")
    assert req.window.label == "20261129T123015Z_20261129T123016Z"


def test_the_request_survives_xcom():
    req = _parse(order_ids=[1, 2], resend=True)
    assert ExportRequest.from_dict(req.as_dict()) == req
    win = _parse(start="2026-11-29T09:00:00Z", end="2026-11-29T10:00:00Z", dry_run=True)
    assert ExportRequest.from_dict(win.as_dict()) == win


@pytest.mark.parametrize(("params", "message"), [
    ({}, "give a window (start and end) or a list of order_ids"),
    ({"start": "", "end": None, "order_ids": []}, "give a window (start and end) or a list of order_ids"),
    ({"start": "2026-11-29T09:00:00Z", "end": "2026-11-29T10:00:00Z", "order_ids": [1]},
     "either a window (start, end) or order_ids, not both"),
    ({"start": "2026-11-29T09:00:00Z"}, "needs both start and end"),
    ({"start": "2026-11-29T10:00:00Z", "end": "2026-11-29T10:00:00Z"}, "empty or reversed"),
    ({"start": "2026-11-29T11:00:00Z", "end": "2026-11-29T10:00:00Z"},  # times as the form takes them
     "empty or reversed: end 2026-11-29T10:00:00Z is not after start 2026-11-29T11:00:00Z"),
    ({"start": "yesterday", "end": "2026-11-29T10:00:00Z"}, "start 'yesterday' is not an ISO 8601 date-time"),
    ({"start": "2026-11-29", "end": "2026-11-29T10:00:00Z"}, "a date or time alone"),
    ({"start": 1700000000, "end": "2026-11-29T10:00:00Z"}, "start must be an ISO 8601 date-time string"),
    ({"start": "2026-10-01T00:00:00Z", "end": "2026-11-29T00:00:00Z"}, "more than 31 days; backfill"),
    ({"start": "2026-11-29T12:00:00Z", "end": "2026-11-29T14:00:00+01:00"},
     "the window ends at 2026-11-29T13:00:00Z, after the run started (2026-11-29T12:30:15.123456Z)"),
    ({"order_ids": [1, -2, "x", 1.5, True]}, "refused: -2, 'x', 1.5, True"),
    # str.isdigit() takes these; int() then fails on '²' and reads '٣' as order 3
    ({"order_ids": ["²", "٣", "１２", "9" * 21]}, "refused: '²', '٣', '１２', '999999999999999999999'"),
    ({"order_ids": {"id": 1}}, "order_ids must be a list"),
    ({"order_ids": list(range(1, MAX_ORDER_IDS + 2))}, f"at most {MAX_ORDER_IDS} per run"),
    ({"order_ids": [1], "resend": "yes"}, "resend must be true or false"),
])
def test_refusals_name_what_to_fix(params, message):
    with pytest.raises(RequestRefused) as info:
        _parse(**params)
    assert message in str(info.value)
    assert isinstance(info.value, PermanentError), "a refused form must not be retried"


def test_exactly_the_maximum_is_accepted():
    assert len(_parse(order_ids=list(range(1, MAX_ORDER_IDS + 1))).order_ids) == MAX_ORDER_IDS
