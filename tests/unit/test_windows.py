import pendulum
import pytest

from order_integration.exceptions import ConfigError
from order_integration.windows import Window, stamp, window_from_context

pytestmark = pytest.mark.unit


def test_lookback_widens_only_the_start():
    w = Window.parse("2026-11-02T10:00:00Z", "2026-11-02T11:00:00Z")
    wide = w.with_lookback(10)
    assert wide.start == pendulum.datetime(2026, 11, 2, 9, 50, tz="UTC")
    assert wide.end == w.end
    assert w.with_lookback(0) == w


def test_window_is_normalised_to_utc_and_labelled():
    w = Window(pendulum.datetime(2026, 11, 2, 11, tz="Europe/Berlin"), pendulum.datetime(2026, 11, 2, 12, tz="Europe/Berlin"))
    assert w.start == pendulum.datetime(2026, 11, 2, 10, tz="UTC")
    assert w.label == "20261102T100000Z_20261102T110000Z"
    assert stamp(pendulum.datetime(2026, 1, 2, 3, 4, 5, tz="UTC")) == "20260102T030405Z"


def test_window_across_midnight_and_dst_change():
    # Europe/Berlin leaves DST on 2026-10-25 at 03:00 local: the UTC hour is still one hour.
    w = Window.parse("2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z")
    assert (w.end - w.start).in_seconds() == 3600
    assert Window.parse("2026-12-31T23:00:00Z", "2027-01-01T00:00:00Z").label == "20261231T230000Z_20270101T000000Z"


@pytest.mark.parametrize(("start", "end"), [("2026-11-02T11:00:00Z", "2026-11-02T10:00:00Z"),
                                            ("2026-11-02T10:00:00Z", "2026-11-02T10:00:00Z")])
def test_empty_or_reversed_window_is_refused(start, end):
    with pytest.raises(ValueError, match="is not after its start"):
        Window.parse(start, end)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="aware"):
        Window(pendulum.naive(2026, 1, 1), pendulum.naive(2026, 1, 2))


def test_window_from_context_uses_the_data_interval():
    ctx = {"data_interval_start": pendulum.datetime(2026, 11, 2, 10, tz="UTC"),
           "data_interval_end": pendulum.datetime(2026, 11, 2, 11, tz="UTC")}
    assert window_from_context(ctx).label == "20261102T100000Z_20261102T110000Z"


def test_context_without_interval_is_refused_clearly():
    t = pendulum.datetime(2026, 11, 2, 10, tz="UTC")
    for ctx in ({}, {"data_interval_start": t, "data_interval_end": t}):
        with pytest.raises(ConfigError, match="no usable data interval"):
            window_from_context(ctx)
