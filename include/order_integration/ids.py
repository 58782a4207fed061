"""Order ids from outside data, checked in one place.

Every storefront the package speaks keys orders by a positive integer (WooCommerce's
``BIGINT UNSIGNED`` post id, Shopify's numeric ``legacyResourceId``). Ids reach us as text
from status files, the on-demand form, the CLI and storefront JSON; they are accepted only
as ASCII digits (``str.isdigit`` also takes ``²`` and ``٣``, which ``int`` then refuses or
silently reads as another order) and within the range a storefront can hold.

Standard library only: imported at DAG parse time.
"""

from __future__ import annotations

import re

#: The largest order id any supported storefront can hold (an unsigned 64-bit integer).
MAX_ORDER_ID = 2**64 - 1
_ASCII_ID = re.compile(r"[0-9]{1,20}")


def parse_order_id(value: object) -> int | None:
    """``value`` as an order id (an ``int``, or ASCII digits with optional surrounding
    blanks) in ``1 … MAX_ORDER_ID``; ``None`` for anything else (a bool, ``"²"``, ``"-3"``,
    ``"1e3"``, ``"0"``, 21 digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _ASCII_ID.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        return None
    return number if 0 < number <= MAX_ORDER_ID else None


def is_order_id(value: object) -> bool:
    """Whether :func:`parse_order_id` accepts ``value``."""
    return parse_order_id(value) is not None
