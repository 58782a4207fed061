"""The canonical order model every storefront is normalised to.

Money is ``Decimal``; times are aware UTC ``pendulum.DateTime``. Normalisation never raises
on a malformed order: a value that cannot be parsed is kept as ``None`` and the reason is
recorded in ``Order.parse_problems``, so validation can quarantine the order with every
reason while the rest of the batch goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import pendulum

from order_integration.currency import is_valid_currency, money_formatter

#: Canonical JSON for digests: sorted keys, compact, UTF-8 (msgspec: ~6x faster than json).
_SORTED_JSON = msgspec.json.Encoder(order="sorted")

#: Columns of the orders file, in contract order.
ORDER_COLUMNS: tuple[str, ...] = (
    "store_id", "order_id", "order_number", "order_version", "order_status", "created_at",
    "updated_at", "currency", "customer_email", "customer_name", "ship_name", "ship_company",
    "ship_address1", "ship_address2", "ship_city", "ship_region", "ship_postcode", "ship_country",
    "ship_phone",
)
LINE_COLUMNS: tuple[str, ...] = (
    "line_number", "sku", "product_name", "quantity", "unit_price", "line_total",
)
TOTAL_COLUMNS: tuple[str, ...] = (
    "order_subtotal", "order_discount", "order_shipping", "order_fees", "order_tax", "order_total",
    "customer_note",
)
CSV_COLUMNS: tuple[str, ...] = ORDER_COLUMNS + LINE_COLUMNS + TOTAL_COLUMNS


@dataclass(frozen=True, slots=True)
class Problem:
    """One failed rule: its name and a detail that names the value."""

    rule: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Address:
    first_name: str = ""
    last_name: str = ""
    company: str = ""
    address1: str = ""
    address2: str = ""
    city: str = ""
    region: str = ""
    postcode: str = ""
    country: str = ""
    phone: str = ""
    email: str = ""

    @property
    def name(self) -> str:
        """First and last name, each stripped, joined by one space; either alone if the other is blank."""
        first, last = self.first_name.strip(), self.last_name.strip()
        return f"{first} {last}" if first and last else first or last

    def is_empty(self) -> bool:
        return not any((self.first_name, self.last_name, self.address1, self.city, self.country))


@dataclass(frozen=True, slots=True)
class LineItem:
    line_number: int
    sku: str
    product_name: str
    quantity: int | None          # None: the platform sent something that is not an integer
    unit_price: Decimal | None    # per unit, before discounts
    line_subtotal: Decimal | None  # the line before discounts
    line_total: Decimal | None    # the line after its discounts, before tax
    line_tax: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Order:
    store_id: str
    order_id: str
    order_number: str
    status: str
    created_at: pendulum.DateTime | None
    updated_at: pendulum.DateTime | None
    currency: str
    customer_email: str
    billing: Address
    shipping: Address
    lines: tuple[LineItem, ...]
    subtotal: Decimal | None        # sum of the lines before discounts
    discount: Decimal | None        # positive
    shipping_total: Decimal | None
    fees: Decimal | None
    tax: Decimal | None             # all tax, shipping tax included
    total: Decimal | None
    customer_note: str = ""
    needs_shipping: bool = True
    parse_problems: tuple[Problem, ...] = field(default=())

    @property
    def customer_name(self) -> str:
        return self.billing.name

    @property
    def ship_phone(self) -> str:
        return self.shipping.phone or self.billing.phone

    @property
    def version(self) -> str:
        """Digest of the exported content, ``updated_at`` excluded: a bare bump is no new version."""
        return content_version(exported_content(self))

    def record(self) -> dict[str, Any]:
        """:func:`exported_content` plus ``order_version``: one order as the backend gets it."""
        return order_record(self)


def format_time(value: pendulum.DateTime | None) -> str:
    """UTC ISO 8601 with ``Z`` (``2026-11-02T10:15:00Z``); empty for ``None``."""
    if value is None:
        return ""
    if value.tzinfo is not pendulum.UTC:  # a normalised order's times already are
        value = value.in_timezone("UTC")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _money_of(currency: str) -> Callable[[Decimal | None], str]:
    """How an order in ``currency`` writes an amount: exact, the currency's minor units, ``""``
    for ``None``; an invalid currency (only quarantined orders have one) as the amount is."""
    formatted = money_formatter(currency) if is_valid_currency(currency) else (lambda a: f"{a:f}")
    return lambda amount: "" if amount is None else formatted(amount)


def exported_content(order: Order) -> dict[str, Any]:
    """The order as the backend sees it: the contract's fields as strings, lines nested.

    One place defines the content, so the CSV and JSONL writers and the order version agree.
    """
    cur = order.currency
    money = _money_of(cur)
    ship = order.shipping
    return {
        "store_id": order.store_id,
        "order_id": order.order_id,
        "order_number": order.order_number,
        "order_status": order.status,
        "created_at": format_time(order.created_at),
        "updated_at": format_time(order.updated_at),
        "currency": cur,
        "customer_email": order.customer_email,
        "customer_name": order.customer_name,
        "ship_name": ship.name,
        "ship_company": ship.company,
        "ship_address1": ship.address1,
        "ship_address2": ship.address2,
        "ship_city": ship.city,
        "ship_region": ship.region,
        "ship_postcode": ship.postcode,
        "ship_country": ship.country,
        "ship_phone": order.ship_phone,
        "lines": [
            {
                "line_number": str(line.line_number),
                "sku": line.sku,
                "product_name": line.product_name,
                "quantity": "" if line.quantity is None else str(line.quantity),
                "unit_price": money(line.unit_price),
                "line_total": money(line.line_total),
            }
            for line in order.lines
        ],
        "order_subtotal": money(order.subtotal),
        "order_discount": money(order.discount),
        "order_shipping": money(order.shipping_total),
        "order_fees": money(order.fees),
        "order_tax": money(order.tax),
        "order_total": money(order.total),
        "customer_note": order.customer_note,
    }


#: Fields no version digest covers: a bare ``updated_at`` bump is no new version.
_UNVERSIONED = ("updated_at", "order_version")


def content_version(content: dict[str, Any], *, without: tuple[str, ...] = _UNVERSIONED) -> str:
    """Short digest of exported content without ``updated_at`` (and without a version field)."""
    stable = {k: v for k, v in content.items() if k not in without}
    return hashlib.sha256(_SORTED_JSON.encode(stable)).hexdigest()[:16]


def order_record(order: Order) -> dict[str, Any]:
    """:func:`exported_content` plus its ``order_version``; what staging and the writers carry."""
    content = exported_content(order)
    content["order_version"] = content_version(content)
    return content


def status_free_version(record: dict[str, Any]) -> str:
    """Digest of a record without ``order_status`` (nor ``updated_at``): two versions with the
    same status-free digest differ only in their status. The export uses it to recognise the
    echo of a status this package wrote back itself, which must not go out again."""
    return content_version(record, without=(*_UNVERSIONED, "order_status"))
