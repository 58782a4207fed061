"""What an operator asks of an on-demand export run, checked before anything runs.

The on-demand DAG's Params form gives either a window (``start``, ``end``) or a list of
order ids, plus ``resend`` and ``dry_run``. :func:`parse_request` turns the form into an
:class:`ExportRequest` or refuses it with one message that says what to fix; the export
tasks then run exactly as for a scheduled window (one code path).

Imported at DAG parse time for the Params' limits: standard library and pendulum only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pendulum

from order_integration.exceptions import PermanentError
from order_integration.ids import MAX_ORDER_ID, parse_order_id
from order_integration.windows import Window

MAX_ORDER_IDS = 500  # one run; a larger repair is a window run or a backfill
MAX_WINDOW_DAYS = 31  # wider windows belong to a backfill, which runs them one by one

#: JSON schema of one ``order_ids`` entry, checked when the run is triggered (form, CLI, REST),
#: before a run exists. Airflow's form renders an array whose items have no ``type`` as a text
#: box with one entry per line, which arrive as strings; the CLI and the REST API send numbers.
#: A line may hold several ids split by commas or blanks, and may be blank. The pattern is kept
#: short because the form shows it in its refusal ("'12a' does not match '^[0-9,\s]*$'");
#: ids out of range are refused by :func:`parse_request`.
ORDER_ID_ITEM_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": MAX_ORDER_ID},
        {"type": "string", "pattern": r"^[0-9,\s]*$"},
    ],
}


class RequestRefused(PermanentError):
    """The on-demand form asks for something the export cannot do; nothing has run."""


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """One export run: a window, or order ids (then ``window`` only names the files)."""

    window: Window
    order_ids: tuple[int, ...] = ()
    resend: bool = False
    dry_run: bool = False

    @property
    def by_ids(self) -> bool:
        return bool(self.order_ids)

    def describe(self) -> str:
        what = (f"{len(self.order_ids)} order id(s)" if self.by_ids else f"window {self.window}")
        flags = [f for f, on in (("resend", self.resend), ("dry_run", self.dry_run)) if on]
        return what + (f" ({', '.join(flags)})" if flags else "")

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.window.start.to_iso8601_string(), "end": self.window.end.to_iso8601_string(),
                "order_ids": list(self.order_ids), "resend": self.resend, "dry_run": self.dry_run}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportRequest:
        return cls(Window.parse(data["start"], data["end"]), tuple(data.get("order_ids") or ()),
                   bool(data.get("resend")), bool(data.get("dry_run")))


def parse_request(params: Mapping[str, Any], *, run_after: pendulum.DateTime) -> ExportRequest:
    """Check the form; ``run_after`` (when the run was triggered) names an id run's files.

    Refused: neither or both of a window and ids; a window with one bound, unparsable,
    empty, reversed or wider than ``MAX_WINDOW_DAYS``; a window ending in the future;
    more than ``MAX_ORDER_IDS`` ids or an id that is not a positive integer."""
    start, end = _blank(params.get("start")), _blank(params.get("end"))
    ids = _order_ids(params.get("order_ids"))
    resend, dry_run = _flag(params, "resend"), _flag(params, "dry_run")
    has_window = start is not None or end is not None
    if has_window and ids:
        raise RequestRefused("give either a window (start, end) or order_ids, not both")
    if ids:
        # An id run has no window; the trigger second names its file and staging folder.
        moment = run_after.in_timezone("UTC").start_of("second")
        return ExportRequest(Window(moment, moment.add(seconds=1)), ids, resend, dry_run)
    if not has_window:
        raise RequestRefused("give a window (start and end) or a list of order_ids")
    if start is None or end is None:
        raise RequestRefused(f"the window needs both start and end (got start={start!r}, end={end!r})")
    window_start, window_end = _time("start", start), _time("end", end)
    if window_end <= window_start:
        raise RequestRefused(
            f"the window is empty or reversed: end {_shown(window_end)} is not after "
            f"start {_shown(window_start)}"
        )
    if window_end - window_start > pendulum.duration(days=MAX_WINDOW_DAYS):
        raise RequestRefused(
            f"the window spans more than {MAX_WINDOW_DAYS} days; backfill order_export__<store> instead"
        )
    if window_end > run_after:
        raise RequestRefused(
            f"the window ends at {_shown(window_end)}, after the run started ({_shown(run_after)}); orders "
            "modified later would be missed by this run and by nothing else — end it in the past"
        )
    return ExportRequest(Window(window_start, window_end), (), resend, dry_run)


def _shown(moment: pendulum.DateTime) -> str:
    """A time as the form takes it (``2026-11-02T10:00:00Z``), not as file names carry it."""
    return moment.in_timezone("UTC").to_iso8601_string()


def _blank(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _time(name: str, value: Any) -> pendulum.DateTime:
    if not isinstance(value, str):
        raise RequestRefused(f"{name} must be an ISO 8601 date-time string, got {value!r}")
    try:
        parsed = pendulum.parse(value.strip(), exact=True)
    except ValueError as exc:  # pendulum's ParserError is a ValueError
        raise RequestRefused(f"{name} {value!r} is not an ISO 8601 date-time ({exc})") from None
    if not isinstance(parsed, pendulum.DateTime):
        raise RequestRefused(f"{name} {value!r} is a date or time alone; give a date-time")
    try:
        return parsed.in_timezone("UTC")  # a time without offset is UTC, as everywhere in Airflow
    except OverflowError:  # year 1 at +14:00, year 9999 at -12:00: no UTC time exists
        raise RequestRefused(f"{name} {value!r} is outside the calendar in UTC") from None


def _order_ids(value: Any) -> tuple[int, ...]:
    """The ids as the form (one per line: a list of strings, blank lines included), the CLI or
    the REST API (a list of numbers, or one string of ids split by commas or blanks) give them."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise RequestRefused(f"order_ids must be a list of order numbers, got {value!r}")
    items: list[Any] = []
    for item in value:
        items.extend(item.replace(",", " ").split() if isinstance(item, str) else [item])
    ids: list[int] = []
    bad = []
    for item in items:
        number = parse_order_id(item)
        if number is None:
            bad.append(item)
        else:
            ids.append(number)
    if bad:
        raise RequestRefused(
            f"order_ids must be order numbers (digits 0-9, 1 to {MAX_ORDER_ID}); refused: "
            + ", ".join(repr(b) for b in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        )
    unique = tuple(dict.fromkeys(ids))
    if len(unique) > MAX_ORDER_IDS:
        raise RequestRefused(
            f"{len(unique)} order ids given; at most {MAX_ORDER_IDS} per run (split them, or use a window)"
        )
    return unique


def _flag(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestRefused(f"{name} must be true or false, got {value!r}")
    return value
