"""Canonical orders for tests, built directly from the model's dataclasses."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pendulum

from order_integration.model import Address, LineItem, Order


def make_order(order_id: str = "1001", **changes: Any) -> Order:
    """A valid EUR order with two lines: 2 x 10.00 + 1 x 5.50, 2.50 off, 4.90 shipping, tax."""
    order = Order(
        store_id="demo",
        order_id=order_id,
        order_number=order_id,
        status="processing",
        created_at=pendulum.datetime(2026, 11, 2, 10, 5, tz="UTC"),
        updated_at=pendulum.datetime(2026, 11, 2, 10, 15, tz="UTC"),
        currency="EUR",
        customer_email="zoe@example.de",
        billing=Address(first_name="Zoë", last_name="Müller", phone="+49 30 1234567",
                        email="zoe@example.de", country="DE"),
        shipping=Address(first_name="Zoë", last_name="Müller", address1="Hauptstraße 1",
                         city="Berlin", postcode="10115", country="DE"),
        lines=(
            LineItem(1, "TEE-RED-M", "T-shirt, red", 2, Decimal("10.00"), Decimal("20.00"),
                     Decimal("18.00"), Decimal("3.42")),
            LineItem(2, "MUG-01", "Mug", 1, Decimal("5.50"), Decimal("5.50"), Decimal("5.00"),
                     Decimal("0.95")),
        ),
        subtotal=Decimal("25.50"),
        discount=Decimal("2.50"),
        shipping_total=Decimal("4.90"),
        fees=Decimal("0.00"),
        tax=Decimal("5.30"),
        total=Decimal("33.20"),
        customer_note="",
        needs_shipping=True,
    )
    return replace(order, **changes)
