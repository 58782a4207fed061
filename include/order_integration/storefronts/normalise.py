"""Strict parsing of outside order data, shared by every platform's normaliser.

A platform's normaliser reads its own field names and shapes; the rules for a value are the
same everywhere and live here: money is a plain decimal (no exponent, no decimal comma),
quantities are integers, times ISO 8601, text is passed on unless it carries control or bidi
control characters or is longer than a spreadsheet cell. Nothing here raises on bad input:
each problem is collected (:class:`Problems`) under a rule name that becomes the quarantine
reason, and the value becomes ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import pendulum

from order_integration.currency import is_valid_currency, quantize
from order_integration.model import Address, Order, Problem, format_time

#: Largest decimal exponent accepted for money and quantities (a quadrillion): beyond is garbage.
MAX_DIGITS = 15
#: Money as stores write it: a plain decimal. An exponent (``1e2``) or a decimal comma
#: (``29,99``) means a plugin or locale broke the format: refused.
PLAIN_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_ZERO = timedelta(0)
#: No real order was created before this; 1970-01-01 is an unset (zero) date.
EARLIEST = pendulum.datetime(2000, 1, 1, tz="UTC")
#: Characters no text may carry to the backend: control characters other than tab, LF and CR
#: (NUL, the ESC of ANSI sequences, DEL, C1) and the bidi embeddings, overrides and isolates,
#: which reorder how the text is shown (CVE-2021-42574). Zero-width joiners stay: emoji and
#: Persian need them.
UNSAFE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: Longest text passed on: a spreadsheet cell's limit (32,767), well inside the 128 KiB field
#: limit of common CSV readers (Python's csv module).
MAX_TEXT_LENGTH = 32_767
#: The text attributes of :class:`~order_integration.model.Address`, in the order they are checked.
ADDRESS_ATTRS = ("first_name", "last_name", "company", "address1", "address2", "city", "region",
                 "postcode", "country", "phone", "email")


class Problems:
    """The problems found in one order, in the order they were found."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, rule: str, detail: str) -> None:
        self.items.append(Problem(rule, detail))


def parse_iso(value: object) -> datetime | None:
    """ISO 8601 → an aware ``datetime`` (a value without offset is taken as UTC), in the offset
    it was written with; ``None`` if it does not parse. Cheap: no pendulum."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def parse_time(value: object) -> pendulum.DateTime | None:
    """ISO 8601 → aware UTC; a value without offset is taken as UTC. ``None`` if it does not parse."""
    parsed = parse_iso(value)
    if parsed is None:
        return None
    if parsed.utcoffset() == _ZERO:  # the usual case (``*_gmt`` fields): 10x cheaper than instance()
        return pendulum.DateTime(parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute,
                                 parsed.second, parsed.microsecond, tzinfo=pendulum.UTC)
    return pendulum.instance(parsed).in_timezone("UTC")


def time_field(raw: Mapping[str, Any], key: str, problems: Problems) -> pendulum.DateTime | None:
    """``raw[key]`` as an aware UTC time; a problem (``parseable_date``) when missing or bad."""
    value = raw.get(key)
    parsed = parse_time(value)
    if parsed is None:
        detail = f"{key} is missing" if value in (None, "") else f"{key} {value!r} is not an ISO 8601 time"
        problems.add("parseable_date", detail)
    return parsed


def text(value: object) -> str:
    """A string field as sent; numbers become their text, anything else (null, objects) empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float | Decimal):
        return str(value)
    return ""


def decimal_or_none(value: object) -> Decimal | None:
    """A finite decimal from a string or JSON number, else ``None`` (no problem recorded: for
    amounts the status sync reads, where a missing value means "unknown")."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def money(value: object, label: str, problems: Problems, *, required: bool = True) -> Decimal | None:
    """A plain decimal amount (``12.30``; a JSON number too) as ``Decimal``; else a problem
    (``parseable_money``) naming ``label`` and the value."""
    if type(value) is str and len(value) <= MAX_DIGITS and PLAIN_DECIMAL.fullmatch(value):
        return Decimal(value)  # the usual case: a short plain decimal needs none of the checks below
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.add("parseable_money", f"{label} is missing")
        return None
    amount: Decimal | None = None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            amount = None
    if amount is None or not amount.is_finite():
        problems.add("parseable_money", f"{label} {value!r} is not a decimal amount")
        return None
    if amount and amount.adjusted() > MAX_DIGITS:  # '1e999999' parses but breaks rounding later
        problems.add("parseable_money", f"{label} {value!r} is out of range")
        return None
    if not PLAIN_DECIMAL.fullmatch(str(value).strip()):
        problems.add("parseable_money", f"{label} {value!r} is not a plain decimal amount (like 12.30)")
        return None
    return amount


def quantity(value: object, label: str, problems: Problems) -> int | None:
    """An integer (``3``, ``"3"``, ``3.0``); else a problem (``parseable_quantity``)."""
    number: Decimal | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float | str):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            number = None
    # bounded before int(): int(Decimal('1e999999')) would build a million-digit number
    if (
        number is not None and number.is_finite() and (not number or number.adjusted() <= MAX_DIGITS)
        and number == number.to_integral_value()
    ):
        return int(number)
    problems.add("parseable_quantity", f"{label} {value!r} is not an integer")
    return None


def unit_price(
    subtotal: Decimal | None, qty: int | None, currency: str, label: str, problems: Problems
) -> Decimal | None:
    """``subtotal / qty`` rounded half-up to the currency's minor units (when ISO 4217)."""
    if subtotal is None or qty is None:
        return None  # the cause is already recorded
    if qty == 0:
        problems.add("parseable_money", f"{label} unit price is undefined: quantity is 0")
        return None
    unit = subtotal / qty
    return quantize(unit, currency) if is_valid_currency(currency) else unit


def total(values: Sequence[Decimal | None]) -> Decimal | None:
    """The sum, or ``None`` when any part is unknown."""
    if any(v is None for v in values):
        return None
    return sum((v for v in values if v is not None), Decimal(0))


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut for a message."""
    shown_text = repr(value)
    return shown_text if len(shown_text) <= limit else f"{shown_text[:limit]}… ({len(shown_text)} characters)"


def check_dates(order: Order, problems: Problems, created_key: str, updated_key: str) -> None:
    """Times that parse but cannot be true: before 2000 (an unset date) or created after
    modified. ``created_key``/``updated_key`` are the platform's field names, for the message."""
    created, updated = order.created_at, order.updated_at
    for key, value in ((created_key, created), (updated_key, updated)):
        if value is not None and value < EARLIEST:
            problems.add("plausible_date", f"{key} {format_time(value)} is before 2000: an unset date, "
                                           "not a real order time")
    if created is not None and updated is not None and created >= EARLIEST and created > updated:
        problems.add("plausible_date", f"{created_key} {format_time(created)} is after {updated_key} "
                                       f"{format_time(updated)}: an order is not modified before it exists")


def check_text(order: Order, problems: Problems, address_keys: Sequence[str] = ADDRESS_ATTRS) -> None:
    """Every text field the backend gets, checked for :data:`UNSAFE_TEXT` and its length (one
    problem per field and kind). One search over all of them first: clean orders cost little.

    ``address_keys``: the platform's names of the :data:`ADDRESS_ATTRS`, for the messages."""
    texts = [order.order_number, order.status, order.currency, order.customer_note]
    for address in (order.billing, order.shipping):
        texts += [getattr(address, attr) for attr in ADDRESS_ATTRS]
    for line in order.lines:
        texts += (line.sku, line.product_name)
    if max(map(len, texts)) <= MAX_TEXT_LENGTH and UNSAFE_TEXT.search("\n".join(texts)) is None:
        return
    labels = ["number", "status", "currency", "customer_note"]
    for prefix in ("billing", "shipping"):
        labels += [f"{prefix}.{key}" for key in address_keys]
    for line in order.lines:
        labels += (f"line {line.line_number} sku", f"line {line.line_number} name")
    for label, value in zip(labels, texts, strict=True):
        if len(value) > MAX_TEXT_LENGTH:
            problems.add("text_length", f"{label} is {len(value):,} characters long, more than "
                                        f"{MAX_TEXT_LENGTH:,}: a backend's CSV reader may refuse the file")
        found = UNSAFE_TEXT.search(value)
        if found is not None:
            problems.add("safe_text", f"{label} contains U+{ord(found.group()):04X} at character "
                                      f"{found.start() + 1}: control and bidi control characters are not "
                                      "passed on to the backend")


def unnormalisable(store_id: str, order_id: int | None, problems: Problems, *, number: str = "",
                   status: str = "", currency: str = "") -> Order:
    """The order a normaliser returns when it failed unexpectedly: no values, every problem so far
    (a ``normalisable`` one among them), so it is quarantined instead of stopping the batch."""
    return Order(
        store_id=store_id, order_id="" if order_id is None else str(order_id), order_number=number,
        status=status, created_at=None, updated_at=None, currency=currency, customer_email="",
        billing=Address(), shipping=Address(), lines=(), subtotal=None, discount=None,
        shipping_total=None, fees=None, tax=None, total=None, parse_problems=tuple(problems.items),
    )
