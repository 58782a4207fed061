"""Flatten orders into the two pandas frames the expectation suite runs on.

* the **order frame**: one row per order, ``row_key`` = the order's position in the input;
* the **line frame**: one row per line item, ``line_key`` = the row's position in the frame and
  ``row_key`` pointing back at its order.

Built per chunk of a run, both keys count from the chunk's offsets (positions in the run).

Money is turned into exact integer minor units (nullable ``Int64``) exactly as
:func:`order_integration.currency.to_minor` does (half-up to the currency's decimals), so "adds
up" is an integer comparison, never a float one. An order whose currency is not ISO 4217 is
converted with 2 decimals only so the arithmetic can run; ``currency_iso4217`` quarantines it.

pandas is imported inside the functions: the library is imported at DAG parse time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from order_integration.currency import MINOR_UNITS, to_minor
from order_integration.model import Order

if TYPE_CHECKING:
    import pandas as pd

#: Decimals used to compute with an order whose currency is not ISO 4217.
FALLBACK_DECIMALS = 2

#: Money fields of an order: (frame column prefix, Order attribute).
ORDER_MONEY: tuple[tuple[str, str], ...] = (
    ("subtotal", "subtotal"),
    ("discount", "discount"),
    ("shipping", "shipping_total"),
    ("fees", "fees"),
    ("tax", "tax"),
    ("total", "total"),
)

#: Columns of the order frame, in order. ``*_minor`` columns are money in integer minor units.
ORDER_FRAME_COLUMNS: tuple[str, ...] = (
    "row_key", "order_id", "currency", "decimals", "customer_email", "ship_country",
    "needs_shipping", "line_count",
    *(f"{name}_minor" for name, _ in ORDER_MONEY),
    "expected_total_minor",   # subtotal - discount + shipping + fees + tax
    "adds_up_diff_minor",     # total - expected_total: must be 0
)

#: Columns of the line frame, in order.
LINE_FRAME_COLUMNS: tuple[str, ...] = (
    "line_key", "row_key", "order_id", "line_number", "sku", "decimals", "quantity",
    "unit_price_minor", "line_total_minor",
)

_INT64 = "Int64"
_MONEY_SUFFIX = "_minor"


@dataclass(frozen=True, slots=True)
class OrderFrames:
    """The two frames built from one batch of orders."""

    orders: pd.DataFrame
    lines: pd.DataFrame


def decimals_of(currency: str) -> int:
    """Minor units of ``currency``, or :data:`FALLBACK_DECIMALS` when it is not ISO 4217."""
    return MINOR_UNITS.get(currency, FALLBACK_DECIMALS) if isinstance(currency, str) else FALLBACK_DECIMALS


def minor_of(amount: Decimal | None, currency: str) -> int | None:
    """``amount`` in integer minor units of ``currency`` (fallback decimals for a bad currency).

    For an ISO 4217 currency this is :func:`order_integration.currency.to_minor` (half-up to
    the currency's decimals). ``None`` stays ``None`` (its parse problem is already recorded);
    a non-finite ``Decimal`` (NaN, Infinity) cannot be money either and is treated the same way.
    """
    if amount is None or not amount.is_finite():
        return None
    if isinstance(currency, str) and currency in MINOR_UNITS:
        return to_minor(amount, currency)
    return _fast_minor(amount, _quantum(FALLBACK_DECIMALS), FALLBACK_DECIMALS)


def _quantum(decimals: int) -> Decimal:
    return Decimal(1).scaleb(-decimals)


def _fast_minor(amount: Decimal | None, quantum: Decimal, decimals: int) -> int | None:
    """:func:`minor_of` with the quantum computed once per currency, for the bulk loop.

    Same operations as ``currency.to_minor`` (quantize half-up, then scale), minus the two
    dictionary look-ups and the quantum it rebuilds on every call: this halves frame building
    for 100k orders. A unit test pins it to ``to_minor``.
    """
    if amount is None or not amount.is_finite():
        return None
    return int(amount.quantize(quantum, rounding=ROUND_HALF_UP).scaleb(decimals))


def format_minor(value: int, decimals: int) -> str:
    """Integer minor units as an exact decimal string: ``1240, 2 -> "12.40"``, ``-5, 2 -> "-0.05"``."""
    if decimals <= 0:
        return str(value)
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}"


def _present(value: str | None) -> str | None:
    """The value, or ``None`` for a missing or blank string (so not-null expectations catch it)."""
    if value is None or not str(value).strip():
        return None
    return value


def build_frames(orders: Sequence[Order], *, row_offset: int = 0, line_offset: int = 0) -> OrderFrames:
    """Build the order frame and the line frame for ``orders``.

    One pass over the orders fills plain Python column lists (cheap); pandas then builds each
    column once and the totals arithmetic runs vectorised on the ``Int64`` columns.
    ``row_offset`` / ``line_offset``: the first ``row_key`` / ``line_key``, when ``orders`` is a
    chunk of a run (the keys then count across chunks).
    """
    import pandas as pd

    cols: dict[str, list[Any]] = {name: [] for name in ORDER_FRAME_COLUMNS[:8]}
    money: dict[str, list[int | None]] = {f"{name}_minor": [] for name, _ in ORDER_MONEY}
    lcols: dict[str, list[Any]] = {name: [] for name in LINE_FRAME_COLUMNS}
    quanta: dict[int, Decimal] = {}
    line_key = line_offset
    for row_key, order in enumerate(orders, start=row_offset):
        currency = order.currency if isinstance(order.currency, str) else ""
        decimals = decimals_of(currency)
        quantum = quanta.get(decimals)
        if quantum is None:
            quantum = quanta[decimals] = _quantum(decimals)
        order_id = _present(order.order_id)
        cols["row_key"].append(row_key)
        cols["order_id"].append(order_id)
        cols["currency"].append(currency)
        cols["decimals"].append(decimals)
        # Kept as "" when missing (not None): regex / in-set expectations skip nulls, and a
        # missing e-mail or ship-to country must fail those rules.
        cols["customer_email"].append(order.customer_email or "")
        cols["ship_country"].append(order.shipping.country or "")
        cols["needs_shipping"].append(bool(order.needs_shipping))
        cols["line_count"].append(len(order.lines))
        for name, attr in ORDER_MONEY:
            money[f"{name}_minor"].append(_fast_minor(getattr(order, attr), quantum, decimals))
        for line in order.lines:
            lcols["line_key"].append(line_key)
            lcols["row_key"].append(row_key)
            lcols["order_id"].append(order_id)
            lcols["line_number"].append(line.line_number)
            lcols["sku"].append(line.sku or "")
            lcols["decimals"].append(decimals)
            lcols["quantity"].append(line.quantity)
            lcols["unit_price_minor"].append(_fast_minor(line.unit_price, quantum, decimals))
            lcols["line_total_minor"].append(_fast_minor(line.line_total, quantum, decimals))
            line_key += 1

    frame = pd.DataFrame(
        {
            "row_key": pd.array(cols["row_key"], dtype="int64"),
            "order_id": pd.array(cols["order_id"], dtype=object),
            "currency": pd.array(cols["currency"], dtype=object),
            "decimals": pd.array(cols["decimals"], dtype="int64"),
            "customer_email": pd.array(cols["customer_email"], dtype=object),
            "ship_country": pd.array(cols["ship_country"], dtype=object),
            "needs_shipping": pd.array(cols["needs_shipping"], dtype=bool),
            "line_count": pd.array(cols["line_count"], dtype="int64"),
            **{name: pd.array(values, dtype=_INT64) for name, values in money.items()},
        }
    )
    # Integer arithmetic on nullable Int64: a missing component gives <NA>, which the
    # expectations skip (that order already carries the parse problem for the missing value).
    expected = (
        frame["subtotal_minor"] - frame["discount_minor"] + frame["shipping_minor"]
        + frame["fees_minor"] + frame["tax_minor"]
    )
    frame["expected_total_minor"] = expected
    frame["adds_up_diff_minor"] = frame["total_minor"] - expected

    lines = pd.DataFrame(
        {
            "line_key": pd.array(lcols["line_key"], dtype="int64"),
            "row_key": pd.array(lcols["row_key"], dtype="int64"),
            "order_id": pd.array(lcols["order_id"], dtype=object),
            "line_number": pd.array(lcols["line_number"], dtype=_INT64),
            "sku": pd.array(lcols["sku"], dtype=object),
            "decimals": pd.array(lcols["decimals"], dtype="int64"),
            "quantity": pd.array(lcols["quantity"], dtype=_INT64),
            "unit_price_minor": pd.array(lcols["unit_price_minor"], dtype=_INT64),
            "line_total_minor": pd.array(lcols["line_total_minor"], dtype=_INT64),
        }
    )
    return OrderFrames(orders=frame, lines=lines)


def template_fields(columns: Sequence[str]) -> frozenset[str]:
    """Names a detail template may use for a frame: its columns, plus each ``*_minor`` column
    without the suffix (the amount formatted with the currency's decimals)."""
    money = {c[: -len(_MONEY_SUFFIX)] for c in columns if c.endswith(_MONEY_SUFFIX)}
    return frozenset(columns) | money


def detail_context(
    frame: pd.DataFrame, positions: Sequence[int], fields: Sequence[str]
) -> list[dict[str, Any]]:
    """Values for the detail templates of the rows at ``positions`` (only failing rows).

    A field that is a column gives its value; a money field ``x`` gives ``x_minor`` formatted
    with the row's decimals. Missing values read ``missing``.
    """
    import pandas as pd

    wanted = {f for f in fields if f in frame.columns}
    money = {f for f in fields if f not in frame.columns and f"{f}{_MONEY_SUFFIX}" in frame.columns}
    needed = sorted(wanted | {f"{f}{_MONEY_SUFFIX}" for f in money} | {"decimals"})
    records = frame.iloc[list(positions)][needed].to_dict("records")
    out: list[dict[str, Any]] = []
    for rec in records:
        ctx: dict[str, Any] = {}
        for name in wanted:
            value = rec[name]
            ctx[name] = "missing" if value is None or value is pd.NA else value
        for name in money:
            value = rec[f"{name}{_MONEY_SUFFIX}"]
            missing = value is None or value is pd.NA
            ctx[name] = "missing" if missing else format_minor(int(value), int(rec["decimals"]))
        out.append(ctx)
    return out
