"""Interval math: the run's window, the lookback, and how they name files.

A run covers ``[start, end)``: its data interval. Extraction re-reads ``lookback`` before
``start`` so an order whose modification was committed late (clock skew, long
transactions) is not lost between two windows; the ledger makes the overlap harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pendulum

from order_integration.exceptions import ConfigError


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open UTC interval ``[start, end)``."""

    start: pendulum.DateTime
    end: pendulum.DateTime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, pendulum.DateTime) or value.tzinfo is None:
                raise ValueError(f"window {name} must be an aware pendulum.DateTime, got {value!r}")
            object.__setattr__(self, name, value.in_timezone("UTC"))
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} is not after its start {self.start}")

    @classmethod
    def parse(cls, start: str, end: str) -> Window:
        return cls(_parse(start), _parse(end))

    def with_lookback(self, minutes: int) -> Window:
        """The extraction range: the window widened by ``minutes`` before its start."""
        return Window(self.start.subtract(minutes=minutes), self.end)

    @property
    def label(self) -> str:
        """``20261102T100000Z_20261102T110000Z``: the window as file names carry it."""
        return f"{stamp(self.start)}_{stamp(self.end)}"

    def __str__(self) -> str:
        return f"[{self.start.to_iso8601_string()}, {self.end.to_iso8601_string()})"


def stamp(value: pendulum.DateTime) -> str:
    """``YYYYMMDDTHHMMSSZ`` in UTC."""
    return value.in_timezone("UTC").strftime("%Y%m%dT%H%M%SZ")


def _parse(value: str) -> pendulum.DateTime:
    parsed = pendulum.parse(value)
    if not isinstance(parsed, pendulum.DateTime):
        raise ValueError(f"{value!r} is not a date-time")
    return parsed


def window_from_context(context: Mapping[str, Any]) -> Window:
    """The run's data interval. Manual runs have no logical date but still have an interval
    (the timetable infers one from ``run_after``); a run without one is refused clearly."""
    start = context.get("data_interval_start")
    end = context.get("data_interval_end")
    if start is None or end is None or end <= start:
        raise ConfigError(
            f"this run has no usable data interval ({start} .. {end}); the export DAG needs an "
            "interval timetable — trigger order_export_on_demand__<store> for an explicit window"
        )
    return Window(pendulum.instance(start), pendulum.instance(end))
