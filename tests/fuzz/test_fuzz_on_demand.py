"""Property tests of the on-demand form (outside data: whatever an operator, the CLI or the REST
API puts in the run's params).

Properties: ``parse_request`` returns an :class:`ExportRequest` or raises ``RequestRefused``,
nothing else; an accepted request is what the export can run (a non-empty window of at most
``MAX_WINDOW_DAYS`` ending by ``run_after``, or 1..``MAX_ORDER_IDS`` distinct ids in range);
``as_dict`` -> ``from_dict`` gives the same request back (the XCom round trip).
"""

from __future__ import annotations

from typing import Any

import pendulum
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from order_integration.ids import MAX_ORDER_ID
from order_integration.on_demand import (
    MAX_ORDER_IDS,
    MAX_WINDOW_DAYS,
    ExportRequest,
    RequestRefused,
    parse_request,
)
from tests.fuzz.strategies import hostile_text

pytestmark = pytest.mark.fuzz

RUN_AFTER = pendulum.datetime(2026, 11, 29, 12, 0, 30, tz="UTC")

iso_times = st.one_of(
    st.datetimes(min_value=pendulum.datetime(1, 1, 2).naive(), max_value=pendulum.datetime(9999, 12, 30).naive(),
                 timezones=st.sampled_from([pendulum.UTC, pendulum.timezone("Europe/Berlin"),
                                            pendulum.timezone("Pacific/Kiritimati"), pendulum.fixed_timezone(-12 * 3600)])
                 | st.none()).map(lambda d: d.isoformat()),
    st.integers(-10**6, 10**6).map(lambda h: RUN_AFTER.add(minutes=h).isoformat()),
    hostile_text(),
)
id_items = st.one_of(st.integers(-5, 2**64 + 5), st.integers(1, 2**64 - 1).map(str), hostile_text(),
                     st.lists(st.integers(1, 10**6).map(str), max_size=5).map(", ".join),
                     st.floats(), st.none(), st.booleans())
anything = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text(),
                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
plausible_window = st.tuples(st.integers(0, 40 * 24 * 60), st.integers(-60, 40 * 24 * 60)).map(
    lambda t: {"start": RUN_AFTER.subtract(minutes=t[0]).isoformat(),
               "end": RUN_AFTER.subtract(minutes=t[0]).add(minutes=t[1]).to_iso8601_string()})
plausible_ids = st.lists(st.one_of(st.integers(1, 10**9), st.integers(1, 10**9).map(str)), min_size=1,
                         max_size=20).map(lambda ids: {"order_ids": ids})
wild = st.fixed_dictionaries({}, optional={
    "start": st.one_of(iso_times, anything), "end": st.one_of(iso_times, anything),
    "order_ids": st.one_of(st.lists(id_items, max_size=8), id_items, anything,
                           st.lists(st.integers(1, 10**9), min_size=490, max_size=520)),
    "resend": st.one_of(st.booleans(), anything), "dry_run": st.one_of(st.booleans(), anything),
})
flags = st.fixed_dictionaries({}, optional={"resend": st.booleans(), "dry_run": st.booleans()})
params = st.one_of(wild, st.builds(lambda a, b: {**a, **b}, st.one_of(plausible_window, plausible_ids), flags))


@given(params)
@example({"start": "0001-01-01T00:00:00+14:00", "end": "0001-01-01T01:00:00+14:00"})
@example({"start": "9999-12-31T23:00:00-12:00", "end": "9999-12-31T23:30:00-12:00"})
@example({"order_ids": ["1\n2", "", " , "]})
@example({"order_ids": "18446744073709551615,18446744073709551616"})
@example({"start": "2026-11-29T10:00:00Z", "end": "2026-11-29T11:00:00Z", "resend": None, "dry_run": True})
def test_parse_request_accepts_or_refuses_nothing_else(form: dict[str, Any]) -> None:
    try:
        request = parse_request(form, run_after=RUN_AFTER)
    except RequestRefused as refused:
        assert str(refused)
        event("refused")
        return
    event("accepted: " + ("ids" if request.by_ids else "window"))
    assert isinstance(request, ExportRequest)
    window = request.window
    assert window.start < window.end and window.start.utcoffset().total_seconds() == 0
    if request.by_ids:
        assert 1 <= len(request.order_ids) <= MAX_ORDER_IDS
        assert len(set(request.order_ids)) == len(request.order_ids)
        assert all(type(i) is int and 0 < i <= MAX_ORDER_ID for i in request.order_ids)
    else:
        assert window.end <= RUN_AFTER and window.end - window.start <= pendulum.duration(days=MAX_WINDOW_DAYS)
    assert ExportRequest.from_dict(request.as_dict()) == request


@pytest.mark.parametrize("start, end", [("0001-01-01T00:00:00+14:00", "0001-01-01T01:00:00+14:00"),
                                        ("9999-12-31T23:00:00-12:00", "9999-12-31T23:30:00-12:00")])
def test_a_window_at_the_edge_of_the_calendar_is_refused_not_a_crash(start: str, end: str) -> None:
    """Found by the fuzzer's first run (2026-12-04): an OverflowError escaped parse_request."""
    with pytest.raises(RequestRefused):
        parse_request({"start": start, "end": end}, run_after=RUN_AFTER)
