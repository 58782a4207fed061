"""A window ``[from, to)`` as whole epoch seconds: what every storefront's time filter needs.

Storefronts store modification times at whole-second precision. Both bounds are rounded the
same way, *up* to the next whole second, so a boundary ``b`` maps to the same second whether it
ends ``[a, b)`` or starts ``[b, c)``: adjacent windows partition time, and an order lands in
exactly one of them (see ``woocommerce.py``'s module docstring for the proof).
"""

from __future__ import annotations

import calendar
from datetime import datetime

import pendulum

_GMT_TIME = "%Y-%m-%dT%H:%M:%S"


def _require_utc(value: object, name: str) -> pendulum.DateTime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be an aware UTC datetime, got {type(value).__name__}: {value!r}")
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"{name} {value.isoformat()} is naive; pass an aware UTC time (pendulum UTC)")
    if offset.total_seconds() != 0:
        raise ValueError(
            f"{name} {value.isoformat()} is not UTC (offset {offset}); convert it with .in_timezone('UTC')"
        )
    return pendulum.instance(value).in_timezone("UTC")


def _ceil_epoch(value: pendulum.DateTime) -> int:
    """Whole seconds since the epoch, rounded up (integer arithmetic: no float rounding)."""
    seconds = calendar.timegm(value.utctimetuple())
    return seconds + (1 if value.microsecond else 0)


def _floor_epoch(value: datetime) -> int:
    return calendar.timegm(value.utctimetuple())


def format_gmt(epoch_seconds: int) -> str:
    """Naive UTC ``YYYY-MM-DDTHH:MM:SS`` (WooCommerce with ``dates_are_gmt=true``; Shopify adds ``Z``)."""
    return pendulum.from_timestamp(epoch_seconds, tz="UTC").strftime(_GMT_TIME)


def window_seconds(modified_from: datetime, modified_to: datetime) -> tuple[int, int]:
    """``[from, to)`` as whole epoch seconds ``(first included, first excluded)``.

    Both ends are ceiled (see the module docstring), so adjacent windows partition. Raises
    ``ValueError``/``TypeError`` for naive or non-UTC inputs and for ``from > to``.
    """
    start = _require_utc(modified_from, "modified_from")
    end = _require_utc(modified_to, "modified_to")
    if start > end:
        raise ValueError(f"modified_from {start.isoformat()} is after modified_to {end.isoformat()}")
    return _ceil_epoch(start), _ceil_epoch(end)
