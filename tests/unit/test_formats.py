import csv
import io
import json
from decimal import Decimal

import pytest

from order_integration.backend.formats import guard_cell, write_orders
from order_integration.model import CSV_COLUMNS, Address, LineItem, order_record
from tests.support.orders import make_order

pytestmark = pytest.mark.unit


def _csv(orders):
    buf = io.BytesIO()
    written = write_orders([order_record(o) for o in orders], "csv", buf)
    return written, buf.getvalue()


def test_csv_has_contract_header_and_one_row_per_line():
    written, data = _csv([make_order("1"), make_order("2")])
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert data.splitlines()[0].decode() == ",".join(CSV_COLUMNS)
    assert (written.orders, written.rows, len(rows)) == (2, 4, 4)
    first = rows[0]
    assert first["order_subtotal"] == "25.50" and first["order_discount"] == "2.50"
    assert first["order_total"] == "33.20" and first["unit_price"] == "10.00" and first["line_total"] == "18.00"
    assert first["created_at"] == "2026-11-02T10:05:00Z"
    assert first["customer_name"] == "Zoë Müller"
    assert first["ship_phone"] == "'+49 30 1234567"  # falls back to the billing phone, guarded
    assert [r["line_number"] for r in rows] == ["1", "2", "1", "2"]


def test_csv_is_utf8_without_bom_and_crlf():
    _, data = _csv([make_order()])
    assert not data.startswith(b"\xef\xbb\xbf")
    assert data.count(b"\r\n") == 3


def test_quotes_commas_newlines_survive_a_round_trip():
    order = make_order(customer_note='Ring twice, "please"\nthen wait', shipping=Address(
        first_name="A", last_name="B", address1="1, Rue \"X\"", city="Zürich", country="CH"))
    _, data = _csv([order])
    row = next(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert row["customer_note"] == 'Ring twice, "please"\nthen wait'
    assert row["ship_address1"] == '1, Rue "X"'


@pytest.mark.parametrize("value", ["=SUM(A1)", "+49", "-1", "@cmd", "\tx", "\rx"])
def test_injection_guard_prefixes_formula_starts(value):
    assert guard_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["", "Zoë", "a=b", "49+", "'quoted"])
def test_injection_guard_leaves_other_text_alone(value):
    assert guard_cell(value) == value


def test_guard_applies_to_text_not_to_money():
    order = make_order(
        customer_note="=HYPERLINK(1)",
        fees=Decimal("-1.00"), total=Decimal("32.20"),
        lines=(LineItem(1, "-SKU", "@name", 1, Decimal("25.50"), Decimal("25.50"), Decimal("23.00")),),
    )
    _, data = _csv([order])
    row = next(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert row["customer_note"] == "'=HYPERLINK(1)"
    assert row["sku"] == "'-SKU" and row["product_name"] == "'@name"
    assert row["order_fees"] == "-1.00"  # a number, not text


@pytest.mark.parametrize(("currency", "total", "expected"), [("JPY", "1200", "1200"), ("KWD", "12.3", "12.300"),
                                                              ("EUR", "12.3", "12.30")])
def test_money_uses_the_currency_minor_units(currency, total, expected):
    order = make_order(currency=currency, total=Decimal(total))
    _, data = _csv([order])
    assert next(csv.DictReader(io.StringIO(data.decode()))) ["order_total"] == expected


def test_jsonl_carries_the_same_fields_nested():
    order = make_order()
    buf = io.BytesIO()
    written = write_orders([order_record(order)], "jsonl", buf)
    lines = buf.getvalue().decode().splitlines()
    assert written.orders == 1 and len(lines) == 1
    doc = json.loads(lines[0])
    flat = set(doc) - {"lines"} | set(doc["lines"][0])
    assert flat == set(CSV_COLUMNS)
    assert doc["order_version"] == order.version
    assert doc["ship_phone"] == "+49 30 1234567"  # the CSV guard is for spreadsheets only


def test_digest_depends_on_content_only():
    a1, _ = _csv([make_order("1")])
    a2, _ = _csv([make_order("1")])
    b, _ = _csv([make_order("2")])
    assert a1.digest == a2.digest != b.digest


def test_version_ignores_updated_at_but_not_content():
    base = make_order()
    bumped = make_order(updated_at=base.updated_at.add(hours=1))
    assert base.version == bumped.version
    assert make_order(status="cancelled").version != base.version
    assert make_order(customer_note="x").version != base.version


def test_large_file_is_streamed_in_chunks():
    class Counting(io.BytesIO):
        writes = 0

        def write(self, b):
            Counting.writes += 1
            return super().write(b)

    target = Counting()
    written = write_orders((order_record(make_order(str(i))) for i in range(2000)), "csv", target)
    assert written.orders == 2000 and written.rows == 4000
    assert 1 < Counting.writes < 100


def test_status_free_version_ignores_only_the_status():
    from order_integration.model import status_free_version

    base = order_record(make_order())
    assert status_free_version(base) == status_free_version(order_record(make_order(status="completed")))
    assert status_free_version(base) != status_free_version(order_record(make_order(customer_note="x")))
    assert base["order_version"] != order_record(make_order(status="completed"))["order_version"]
    # the ledger keeps these digests (claims' base versions): the same record, the same digest as ever
    from order_integration.model import content_version

    assert status_free_version(base) == content_version({k: v for k, v in base.items() if k != "order_status"})
    assert base["order_version"] == content_version({k: v for k, v in base.items() if k != "updated_at"})
