"""Shopify-shaped records for the sandbox: ids, money, times, search syntax, cursors, and the conversion
of ``sandbox.generator`` (WooCommerce-shaped) orders into Shopify orders.

Orders are kept as plain dicts with Python values (aware UTC ``datetime``, ``Decimal``); the GraphQL
layer (``graph.py``) turns them into API values.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from sandbox.generator import CATALOGUE

ZERO = Decimal(0)
GID_PREFIX = "gid://shopify/"


# --- ids, money, time ------------------------------------------------------------------------------


def gid(kind: str, number: int) -> str:
    return f"{GID_PREFIX}{kind}/{number}"


def parse_gid(value: Any, kind: str | None = None) -> tuple[str, int] | None:
    """``gid://shopify/Order/12`` -> ``("Order", 12)``; None when malformed (or of another kind)."""
    if not isinstance(value, str) or not value.startswith(GID_PREFIX):
        return None
    rest = value[len(GID_PREFIX) :].split("?", 1)[0]
    parts = rest.split("/")
    if len(parts) != 2 or not parts[1].isdigit() or (kind is not None and parts[0] != kind):
        return None
    return parts[0], int(parts[1])


def money_text(amount: Decimal) -> str:
    """A ``Decimal`` scalar as Shopify writes it: trailing zeros dropped, at least one decimal
    (``12.5``, ``10.0``, ``1500.0``) - clients must parse, not assume two decimals."""
    text = format(amount.normalize(), "f")
    return text if "." in text else text + ".0"


def time_text(when: datetime | None) -> str | None:
    """A ``DateTime`` scalar: ISO 8601 UTC with ``Z`` at whole seconds."""
    if when is None:
        return None
    return when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with ``Z`` or an offset (naive values are UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def money_bag(amount: Decimal, currency: str) -> dict[str, Any]:
    money = {"amount": money_text(amount), "currencyCode": currency}
    return {"shopMoney": money, "presentmentMoney": dict(money)}


# --- cursors ---------------------------------------------------------------------------------------


def encode_cursor(last_id: int, last_value: Any) -> str:
    """An opaque cursor; Shopify's are base64 JSON of the row's sort value and id."""
    raw = json.dumps({"last_id": last_id, "last_value": last_value}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, Any] | None:
    try:
        data = json.loads(base64.b64decode(cursor.encode(), validate=True))
        return int(data["last_id"]), data["last_value"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


# --- search syntax ---------------------------------------------------------------------------------

_TERM = re.compile(
    r"""(-?)([A-Za-z_][A-Za-z0-9_.]*):(<=|>=|<|>)?('[^']*'|"[^"]*"|\S+)|('[^']*'|"[^"]*"|\S+)"""
)


@dataclass
class Term:
    name: str  # "" for a bare word (the default field)
    op: str  # "=", "<", "<=", ">", ">="
    value: str
    negated: bool = False


@dataclass
class SearchQuery:
    terms: list[Term] = field(default_factory=list)
    has_or: bool = False


def parse_search(text: str | None) -> SearchQuery:
    """Shopify search syntax, the subset clients use: ``name:value``, ``name:>=value`` (also ``<``,
    ``<=``, ``>``), quoted values, ``-name:value`` / ``NOT``, and implicit or explicit ``AND``."""
    query = SearchQuery()
    negate_next = False
    for m in _TERM.finditer(text or ""):
        bare = m.group(5)
        if bare is not None:
            word = bare.strip("'\"")
            if bare in ("AND",):
                continue
            if bare == "OR":
                query.has_or = True
                continue
            if bare == "NOT":
                negate_next = True
                continue
            query.terms.append(Term("", "=", word, negate_next))
            negate_next = False
            continue
        neg, name, op, value = m.group(1), m.group(2), m.group(3) or "=", m.group(4)
        query.terms.append(Term(name.lower(), op, value.strip("'\""), bool(neg) or negate_next))
        negate_next = False
    return query


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "=":
        return bool(left == right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def parse_search_time(value: str, shop_tz: tzinfo) -> datetime | None:
    """A time term: ISO 8601 with ``Z``/offset, or without (then in the shop's timezone), or a date
    (midnight in the shop's timezone)."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, time(0), shop_tz).astimezone(UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=shop_tz)
    return parsed.astimezone(UTC)


def time_term_matches(term: Term, actual: datetime | None, shop_tz: tzinfo) -> bool:
    bound = parse_search_time(term.value, shop_tz)
    if bound is None or actual is None:
        return False
    return _compare(actual.replace(microsecond=0), term.op, bound)


def id_term_matches(term: Term, actual: int) -> bool:
    parsed = parse_gid(term.value)
    raw = str(parsed[1]) if parsed else term.value
    try:
        return _compare(actual, term.op, int(raw))
    except ValueError:
        return False


# --- orders ----------------------------------------------------------------------------------------


def _dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else ZERO
    except InvalidOperation:
        return ZERO


def _wc_time(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text).replace(tzinfo=UTC)


_COUNTRY_NAMES = {
    "DE": "Germany",
    "FR": "France",
    "PL": "Poland",
    "GB": "United Kingdom",
    "US": "United States",
    "JP": "Japan",
    "SE": "Sweden",
    "KW": "Kuwait",
    "AT": "Austria",
    "NL": "Netherlands",
    "IT": "Italy",
    "ES": "Spain",
    "CH": "Switzerland",
    "BE": "Belgium",
}


def mailing_address(wc: dict[str, Any] | None) -> dict[str, Any] | None:
    """A WooCommerce address as a Shopify ``MailingAddress`` (None when empty, like a digital order)."""
    if not wc or not (wc.get("address_1") or wc.get("city") or wc.get("last_name")):
        return None
    first, last = wc.get("first_name") or None, wc.get("last_name") or None
    code = wc.get("country") or None
    state = wc.get("state") or None
    return {
        "id": gid("MailingAddress", abs(hash((first, last, wc.get("address_1")))) % 10**12),
        "firstName": first,
        "lastName": last,
        "name": " ".join(p for p in (first, last) if p) or None,
        "company": wc.get("company") or None,
        "address1": wc.get("address_1") or None,
        "address2": wc.get("address_2") or None,
        "city": wc.get("city") or None,
        "province": state,
        "provinceCode": state,
        "zip": wc.get("postcode") or None,
        "country": _COUNTRY_NAMES.get(code or "", code),
        "countryCodeV2": code,
        "phone": wc.get("phone") or None,
    }


@dataclass
class Ids:
    """Counters for the ids the shop hands out (fulfillment orders, fulfillments, refunds ...)."""

    next_id: int = 900_000_000

    def take(self) -> int:
        self.next_id += 1
        return self.next_id


def _tax_lines(
    wc_taxes: list[dict[str, Any]],
    rate_by_id: dict[int, tuple[str, Decimal]],
) -> list[dict[str, Any]]:
    lines = []
    for tax in wc_taxes:
        title, rate = rate_by_id.get(int(tax.get("id") or 0), ("Tax", ZERO))
        lines.append({"title": title, "rate": rate / 100, "amount": _dec(tax.get("total"))})
    return lines


_VIRTUAL_SKUS = frozenset(p.sku for p in CATALOGUE if p.virtual)


def fulfillable(line: dict[str, Any]) -> bool:
    """Whether the line is on a fulfillment order: every product line, digital ones too (Shopify
    fulfils them without shipping); not the custom lines WooCommerce fees become."""
    return bool(line["requiresShipping"] or line.get("sku"))


def _line_from_wc(
    line: dict[str, Any], rates: dict[int, tuple[str, Decimal]], gross: bool = False
) -> dict[str, Any]:
    qty = int(line["quantity"])
    subtotal, total = _dec(line["subtotal"]), _dec(line["total"])
    if gross:  # a tax-inclusive shop: prices with their tax in them
        subtotal += _dec(line.get("subtotal_tax"))
        total += _dec(line.get("total_tax"))
    return {
        "id": int(line["id"]),
        "sku": line.get("sku") or None,
        "name": line["name"],
        "title": line.get("parent_name") or line["name"],
        "variantTitle": None,
        "quantity": qty,
        "unitPrice": (subtotal / qty) if qty else ZERO,
        "subtotal": subtotal,
        "total": total,
        "taxLines": _tax_lines(line.get("taxes") or [], rates),
        # the generator's virtual products (e-books, gift cards) ship nothing, as in Shopify
        "requiresShipping": (line.get("sku") or "") not in _VIRTUAL_SKUS,
        "refunded": 0,
        "fulfilled": 0,
    }


def _fee_line(
    fee: dict[str, Any], line_id: int, rates: dict[int, tuple[str, Decimal]], gross: bool = False
) -> dict[str, Any]:
    """A WooCommerce fee becomes a custom line item (Shopify has no fee lines): no SKU, no shipping."""
    amount = _dec(fee["total"]) + (_dec(fee.get("total_tax")) if gross else ZERO)
    return {
        "id": line_id,
        "sku": None,
        "name": fee["name"],
        "title": fee["name"],
        "variantTitle": None,
        "quantity": 1,
        "unitPrice": amount,
        "subtotal": amount,
        "total": amount,
        "taxLines": _tax_lines(fee.get("taxes") or [], rates),
        "requiresShipping": False,
        "refunded": 0,
        "fulfilled": 0,
    }


_FINANCIAL = {
    "pending": "PENDING",
    "processing": "PAID",
    "on-hold": "AUTHORIZED",
    "completed": "PAID",
    "cancelled": "VOIDED",
    "refunded": "REFUNDED",
    "failed": "EXPIRED",
    "checkout-draft": "PENDING",
}


def order_from_woocommerce(wc: dict[str, Any], ids: Ids, taxes_included: bool = False) -> dict[str, Any]:
    """A ``sandbox.generator`` order as a Shopify order; ``legacyResourceId`` is the WooCommerce id.

    Statuses: processing/completed -> PAID (completed also FULFILLED and closed); pending -> PENDING;
    on-hold -> AUTHORIZED; cancelled -> cancelled (VOIDED); refunded -> REFUNDED with a refund; failed
    -> EXPIRED. Fees become custom line items, so the lines still add up to the subtotal.

    ``taxes_included`` is a shop whose prices include tax (``taxesIncluded``: EU, UK, Australia):
    line prices, shipping and discounts carry their tax (WooCommerce's ``subtotal_tax``,
    ``total_tax``, shipping taxes, ``discount_tax`` added); the tax lines, the total tax and the
    total are the same amounts, so ``subtotal - discounts + shipping = total`` there.
    """
    rates = {
        int(t["rate_id"]): (t.get("label") or "Tax", _dec(t.get("rate_percent")))
        for t in wc.get("tax_lines") or []
    }
    currency = wc["currency"]
    gross = taxes_included
    lines = [_line_from_wc(line, rates, gross) for line in wc.get("line_items") or []]
    lines += [_fee_line(fee, int(fee["id"]), rates, gross) for fee in wc.get("fee_lines") or []]
    created = _wc_time(wc.get("date_created_gmt")) or datetime.now(UTC)
    updated = _wc_time(wc.get("date_modified_gmt")) or created
    status = wc.get("status") or "pending"
    shipping = [
        {
            "id": int(s["id"]),
            "title": s.get("method_title") or "",
            "code": s.get("method_id") or "",
            "amount": _dec(s.get("total")) + (_dec(s.get("total_tax")) if gross else ZERO),
            "taxLines": _tax_lines(s.get("taxes") or [], rates),
        }
        for s in wc.get("shipping_lines") or []
    ]
    billing = wc.get("billing") or {}
    order: dict[str, Any] = {
        "id": int(wc["id"]),
        "name": f"#{wc.get('number') or wc['id']}",
        "createdAt": created,
        "updatedAt": updated,
        "processedAt": created,
        "cancelledAt": None,
        "cancelReason": None,
        "closed": False,
        "closedAt": None,
        "financial": _FINANCIAL.get(status, "PENDING"),
        "currency": currency,
        "email": billing.get("email") or None,
        "phone": billing.get("phone") or None,
        "note": wc.get("customer_note") or None,
        "tags": [],
        "customer": None
        if not wc.get("customer_id")
        else {
            "id": int(wc["customer_id"]),
            "firstName": billing.get("first_name") or None,
            "lastName": billing.get("last_name") or None,
            "email": billing.get("email") or None,
            "phone": billing.get("phone") or None,
        },
        "billingAddress": mailing_address(billing),
        "shippingAddress": mailing_address(wc.get("shipping")),
        "lineItems": lines,
        "shippingLines": shipping,
        "discount": _dec(wc.get("discount_total")) + (_dec(wc.get("discount_tax")) if gross else ZERO),
        "taxesIncluded": gross,
        "tax": _dec(wc.get("total_tax")),
        "total": _dec(wc.get("total")),
        "refunds": [],
        "fulfillmentOrders": [],
        "fulfillments": [],
        "test": False,
    }
    fo_lines = [
        {"id": ids.take(), "lineItemId": line["id"], "total": line["quantity"]}
        for line in lines
        if fulfillable(line)
    ]
    if fo_lines:
        order["fulfillmentOrders"].append(
            {
                "id": ids.take(),
                "status": "OPEN",
                "createdAt": created,
                "updatedAt": created,
                "lineItems": fo_lines,
            }
        )
    _apply_wc_status(order, status, updated, wc, ids)
    return order


def _apply_wc_status(
    order: dict[str, Any], status: str, when: datetime, wc: dict[str, Any], ids: Ids
) -> None:
    if status == "completed":
        for fo in order["fulfillmentOrders"]:
            fulfil(order, fo, [(li["id"], li["total"]) for li in fo["lineItems"]], None, when, ids)
        order["closed"], order["closedAt"] = True, when
    elif status in ("cancelled", "refunded"):
        order["cancelledAt"], order["cancelReason"] = when, "CUSTOMER"
        for fo in order["fulfillmentOrders"]:
            fo["status"] = "CLOSED" if status == "refunded" else "CANCELLED"
        order["closed"], order["closedAt"] = True, when
    for refund in wc.get("refunds") or []:
        amount = -_dec(refund.get("total"))
        order["refunds"].append(
            {
                "id": int(refund["id"]),
                "createdAt": when,
                "note": refund.get("reason") or None,
                "amount": amount,
                "lines": [],
            }
        )


def remaining(fo: dict[str, Any], order: dict[str, Any]) -> dict[int, int]:
    """Fulfillment order line id -> quantity still to fulfil."""
    done: dict[int, int] = {}
    for ful in order["fulfillments"]:
        for fo_line_id, qty in ful["foLines"]:
            done[fo_line_id] = done.get(fo_line_id, 0) + qty
    return {li["id"]: li["total"] - done.get(li["id"], 0) for li in fo["lineItems"]}


def fulfil(
    order: dict[str, Any],
    fo: dict[str, Any],
    wanted: list[tuple[int, int]],
    tracking: dict[str, Any] | None,
    when: datetime,
    ids: Ids,
) -> dict[str, Any]:
    """Record a fulfillment of ``(fulfillment order line id, quantity)`` pairs (already checked)."""
    by_fo_line = {li["id"]: li for li in fo["lineItems"]}
    ful = {
        "id": ids.take(),
        "status": "SUCCESS",
        "createdAt": when,
        "updatedAt": when,
        "tracking": [tracking] if tracking else [],
        "foLines": list(wanted),
        "lines": [(ids.take(), by_fo_line[i]["lineItemId"], q) for i, q in wanted],
    }
    order["fulfillments"].append(ful)
    left = remaining(fo, order)
    fo["status"] = "CLOSED" if all(v <= 0 for v in left.values()) else "IN_PROGRESS"
    fo["updatedAt"] = when
    return ful


def fulfillment_status(order: dict[str, Any]) -> str:
    shippable = sum(li["quantity"] - li["refunded"] for li in order["lineItems"] if fulfillable(li))
    shipped = sum(q for ful in order["fulfillments"] for _i, _l, q in ful["lines"])
    if not order["fulfillments"]:
        return "UNFULFILLED"
    return "FULFILLED" if shipped >= shippable else "PARTIALLY_FULFILLED"


def order_status_terms(order: dict[str, Any]) -> set[str]:
    """The values ``status:`` matches: open / closed / cancelled / not_closed (and ``any``)."""
    terms = {"any"}
    if order["cancelledAt"] is not None:
        terms.add("cancelled")
    if order["closed"]:
        terms.add("closed")
    else:
        terms.update({"open", "not_closed"})
    return terms


def subtotal(order: dict[str, Any]) -> Decimal:
    return sum((li["total"] for li in order["lineItems"]), ZERO)


def shipping_total(order: dict[str, Any]) -> Decimal:
    return sum((s["amount"] for s in order["shippingLines"]), ZERO)


def refunded_total(order: dict[str, Any]) -> Decimal:
    return sum((r["amount"] for r in order["refunds"]), ZERO)


def matches_order(order: dict[str, Any], term: Term, shop_tz: tzinfo) -> bool | None:
    """Whether ``order`` (as the search index has it) matches one term; None for an unknown field."""
    checks: dict[str, Callable[[], bool]] = {
        "updated_at": lambda: time_term_matches(term, order["updatedAt"], shop_tz),
        "created_at": lambda: time_term_matches(term, order["createdAt"], shop_tz),
        "processed_at": lambda: time_term_matches(term, order["processedAt"], shop_tz),
        "id": lambda: id_term_matches(term, order["id"]),
        "status": lambda: term.value.lower() in order_status_terms(order),
        "tag": lambda: term.value.lower() in {t.lower() for t in order["tags"]},
        "tag_not": lambda: term.value.lower() not in {t.lower() for t in order["tags"]},
        "name": lambda: order["name"].lstrip("#") == term.value.lstrip("#"),
        "email": lambda: (order["email"] or "").lower() == term.value.lower(),
        "financial_status": lambda: order["financial"].lower() == term.value.lower(),
        "fulfillment_status": lambda: _fulfillment_term(order, term.value.lower()),
        "sku": lambda: any((li["sku"] or "").lower() == term.value.lower() for li in order["lineItems"]),
        "test": lambda: str(order["test"]).lower() == term.value.lower(),
        "": lambda: term.value.lower() in f"{order['name']} {order['email'] or ''}".lower(),
    }
    check = checks.get(term.name)
    if check is None:
        return None
    return check() != term.negated


_TIME_FIELDS = {"updated_at": "updatedAt", "created_at": "createdAt", "processed_at": "processedAt"}


def compile_term(term: Term, shop_tz: tzinfo) -> Callable[[dict[str, Any]], bool] | None:
    """A fast check of one term (time bounds parsed once); None for a field orders have no filter for."""
    key = _TIME_FIELDS.get(term.name)
    if key is not None:
        bound = parse_search_time(term.value, shop_tz)
        if bound is None:
            return lambda _order: term.negated
        return lambda order: _compare(order[key].replace(microsecond=0), term.op, bound) != term.negated
    probe = {"updatedAt": None, "createdAt": None, "processedAt": None, "id": 0, "cancelledAt": None,
             "closed": False, "tags": [], "name": "", "email": None, "financial": "", "lineItems": [],
             "fulfillments": [], "test": False}
    if matches_order(probe, term, shop_tz) is None:
        return None
    return lambda order: bool(matches_order(order, term, shop_tz))


def _fulfillment_term(order: dict[str, Any], value: str) -> bool:
    status = fulfillment_status(order)
    aliases = {
        "shipped": "FULFILLED",
        "fulfilled": "FULFILLED",
        "partial": "PARTIALLY_FULFILLED",
        "unshipped": "UNFULFILLED",
        "unfulfilled": "UNFULFILLED",
    }
    return aliases.get(value) == status


def chunked(items: Iterable[Any], size: int) -> list[list[Any]]:
    out: list[list[Any]] = []
    for item in items:
        if not out or len(out[-1]) >= size:
            out.append([])
        out[-1].append(item)
    return out
