"""Parsing and validation of the backend's status files, and the file-name helpers."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pendulum
import pytest

from order_integration.backend.status_files import (
    STATUS_COLUMNS,
    list_status_files,
    parse_status_file,
    unique_name,
)

pytestmark = pytest.mark.unit

T = "2026-11-29T10:00:00Z"


def status_csv(*rows: dict[str, object], columns: tuple[str, ...] = STATUS_COLUMNS, bom: bool = False) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode()


def line(**values: object) -> dict[str, object]:
    return {"order_id": "1001", "event": "accepted", "occurred_at": T, **values}


def only_error(data: bytes) -> str:
    parsed = parse_status_file(data, "s.csv")
    assert parsed.events == []
    assert len(parsed.errors) == 1, parsed.errors
    return parsed.errors[0].reason


# -- good files ---------------------------------------------------------------------------------


def test_good_lines_become_events_with_line_numbers_and_utc_times() -> None:
    data = status_csv(
        line(),
        line(order_id="1002", event="shipped", occurred_at="2026-11-29T11:30:00+00:00", carrier="DHL",
             tracking_number="JJD0001", tracking_url="https://track.example/JJD0001"),
        line(order_id="1003", event="shipped", carrier="UPS", sku="SKU-A", quantity="2"),
        line(order_id="1004", event="rejected", note="out of stock"),
        line(order_id="1005", event="cancelled"),
    )
    parsed = parse_status_file(data, "s.csv")
    assert parsed.errors == [] and parsed.file_error is None
    assert [(e.line_number, e.order_id, e.event) for e in parsed.events] == [
        (2, "1001", "accepted"), (3, "1002", "shipped"), (4, "1003", "shipped"), (5, "1004", "rejected"),
        (6, "1005", "cancelled"),
    ]
    shipped = parsed.events[1]
    assert shipped.occurred_at == pendulum.datetime(2026, 11, 29, 11, 30, tz="UTC")
    assert shipped.occurred_at.utcoffset().total_seconds() == 0
    assert (shipped.carrier, shipped.tracking_number, shipped.tracking_url) == (
        "DHL", "JJD0001", "https://track.example/JJD0001")
    assert (shipped.sku, shipped.quantity, shipped.is_partial) == (None, None, False)
    partial = parsed.events[2]
    assert (partial.sku, partial.quantity, partial.is_partial) == ("SKU-A", 2, True)
    assert parsed.events[3].note == "out of stock"
    with pytest.raises(AttributeError):
        parsed.events[0].order_id = "x"  # type: ignore[misc]  # frozen


def test_bom_and_column_order_and_blank_lines_are_tolerated() -> None:
    columns = tuple(reversed(STATUS_COLUMNS))
    data = status_csv(line(), columns=columns, bom=True) + b"\r\n" + status_csv(
        line(order_id="1002"), columns=columns).split(b"\r\n", 1)[1]
    parsed = parse_status_file(data, "s.csv")
    assert parsed.errors == []
    assert [(e.line_number, e.order_id) for e in parsed.events] == [(2, "1001"), (4, "1002")]


def test_quoted_multiline_note_keeps_the_line_number_of_its_start() -> None:
    data = status_csv(line(event="rejected", note="first\nsecond"), line(order_id="1002"))
    parsed = parse_status_file(data, "s.csv")
    assert parsed.errors == []
    assert [e.line_number for e in parsed.events] == [2, 4]
    assert parsed.events[0].note == "first\nsecond"


def test_header_only_file_has_nothing() -> None:
    parsed = parse_status_file(status_csv(), "s.csv")
    assert parsed.events == [] and parsed.errors == [] and parsed.file_error is None


# -- whole-file errors ----------------------------------------------------------------------------


def test_missing_column_fails_the_whole_file() -> None:
    columns = tuple(c for c in STATUS_COLUMNS if c != "tracking_url")
    parsed = parse_status_file(status_csv(line(), columns=columns), "s.csv")
    assert parsed.events == []
    assert parsed.file_error is not None and "missing column(s) tracking_url" in parsed.file_error
    assert [(e.line_number, e.order_id) for e in parsed.errors] == [(1, "")]


def test_unknown_and_repeated_columns_fail_the_whole_file() -> None:
    assert "unknown column(s) 'warehouse'" in only_error(status_csv(line(), columns=(*STATUS_COLUMNS, "warehouse")))
    assert "repeated column(s) note" in only_error(status_csv(columns=(*STATUS_COLUMNS, "note")))


def test_empty_and_non_utf8_files() -> None:
    assert "empty file" in only_error(b"")
    assert "empty file" in only_error(b"\xef\xbb\xbf\r\n")
    reason = only_error(status_csv(line(note="ok")) + b"1001,accepted," + T.encode() + b",,,,,,caf\xe9\r\n")
    assert "not UTF-8" in reason and "line 3" in reason


# -- line rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"event": "delivered"}, "event 'delivered' is not one of accepted, shipped, cancelled, rejected, paid, refunded"),
        ({"event": ""}, "event '' is not one of"),
        ({"event": "Accepted"}, "event 'Accepted' is not one of"),
        ({"order_id": ""}, "order_id is missing"),
        # str.isdigit takes these; int() refuses the first and reads the second as order 3
        ({"order_id": "\u00b2"}, "order_id '\u00b2' is not an order id (ASCII digits 1.."),
        ({"order_id": "\u0663"}, "order_id '\u0663' is not an order id"),
        ({"order_id": "../../x"}, "order_id '../../x' is not an order id"),
        ({"order_id": "-3"}, "order_id '-3' is not an order id"),
        ({"order_id": "0"}, "order_id '0' is not an order id"),
        ({"order_id": "1e3"}, "order_id '1e3' is not an order id"),
        ({"order_id": "1" * 21}, "is not an order id"),
        ({"order_id": str(2**64)}, "is not an order id"),
        ({"occurred_at": ""}, "occurred_at is missing"),
        ({"occurred_at": "29/11/2026 10:00"}, "occurred_at '29/11/2026 10:00' is not an ISO 8601 time"),
        ({"occurred_at": "2026-11-29T10:00:00"}, "has no time zone"),
        ({"occurred_at": "2026-11-29T11:00:00+01:00"}, "is not UTC"),
        ({"occurred_at": "2026-02-30T10:00:00Z"}, "is not an ISO 8601 time"),
        ({"event": "shipped", "carrier": "DHL", "sku": "A", "quantity": "0"}, "quantity '0' is not a positive integer"),
        ({"event": "shipped", "carrier": "DHL", "sku": "A", "quantity": "-1"}, "quantity '-1' is not a positive"),
        ({"event": "shipped", "carrier": "DHL", "sku": "A", "quantity": "1.5"}, "quantity '1.5' is not a positive"),
        ({"event": "shipped", "carrier": "DHL", "sku": "A", "quantity": "two"}, "quantity 'two' is not a positive"),
        # int() refuses more than 4,300 digits with a ValueError: a crash on every run, not a line error
        ({"event": "shipped", "carrier": "DHL", "sku": "A", "quantity": "9" * 4301}, "is not a positive integer"),
        ({"event": "shipped", "carrier": "DHL", "sku": "A", "quantity": str(2**31)}, "is not a positive integer"),
        ({"event": "shipped", "carrier": "DHL", "sku": "A", "quantity": "\u00b2"}, "is not a positive integer"),
        ({"event": "shipped", "carrier": "DHL", "sku": "A"}, "sku 'A' is given without quantity"),
        ({"event": "shipped", "carrier": "DHL", "quantity": "2"}, "quantity '2' is given without sku"),
        ({"event": "accepted", "sku": "A", "quantity": "1"}, "sku/quantity are only allowed with 'shipped' or 'refunded'"),
        ({"event": "shipped"}, "shipped needs carrier or tracking_number"),
        ({"event": "shipped", "carrier": "DHL", "tracking_url": "javascript:alert(1)"}, "is not an http(s) URL"),
        ({"event": "rejected"}, "rejected needs the reason in note"),
    ],
)
def test_each_line_rule_names_the_rule_and_the_value(values: dict[str, str], expected: str) -> None:
    good = line(order_id="2000")
    parsed = parse_status_file(status_csv(good, line(**values), good), "s.csv")
    assert [e.line_number for e in parsed.events] == [2, 4]  # the other lines still count
    assert len(parsed.errors) == 1
    err = parsed.errors[0]
    assert err.line_number == 3
    assert err.order_id == values.get("order_id", "1001")
    assert expected in err.reason


def test_a_quantity_with_leading_zeros_is_its_number_however_long() -> None:
    data = status_csv(line(event="shipped", carrier="DHL", sku="A", quantity="007"),
                      line(event="shipped", carrier="DHL", sku="B", quantity="0" * 5000 + "2"))
    parsed = parse_status_file(data, "s.csv")
    assert parsed.errors == [] and [e.quantity for e in parsed.events] == [7, 2]


def test_several_broken_rules_are_all_named() -> None:
    reason = only_error(status_csv(line(event="shipped", occurred_at="yesterday", quantity="x")))
    assert "occurred_at 'yesterday'" in reason and "quantity 'x'" in reason
    assert "given without sku" in reason and "needs carrier or tracking_number" in reason


def test_wrong_field_count_is_a_line_error() -> None:
    data = status_csv(line()) + b"1002,accepted\r\n"
    parsed = parse_status_file(data, "s.csv")
    assert [e.order_id for e in parsed.events] == ["1001"]
    assert [(e.line_number, e.order_id) for e in parsed.errors] == [(3, "1002")]
    assert "2 fields" in parsed.errors[0].reason


def test_shipped_with_tracking_number_only_is_valid() -> None:
    parsed = parse_status_file(status_csv(line(event="shipped", tracking_number="123")), "s.csv")
    assert parsed.errors == [] and len(parsed.events) == 1


# -- event keys ------------------------------------------------------------------------------------


def test_event_key_depends_on_content_not_on_file_or_line() -> None:
    one = parse_status_file(status_csv(line(), line(event="cancelled")), "a.csv").events
    other = parse_status_file(status_csv(line(order_id="9"), line(event="cancelled"), line()), "b.csv").events
    assert one[0].event_key == other[2].event_key  # same event, other file and line
    assert one[1].event_key == other[1].event_key
    assert len({one[0].event_key, one[1].event_key, other[0].event_key}) == 3
    # the same instant written another way is the same event; another instant is not
    same_instant = parse_status_file(status_csv(line(occurred_at="2026-11-29T10:00:00.000+00:00")), "c.csv")
    later = parse_status_file(status_csv(line(occurred_at="2026-11-29T10:00:01Z")), "d.csv")
    assert same_instant.events[0].event_key == one[0].event_key
    assert later.events[0].event_key != one[0].event_key
    partial = parse_status_file(status_csv(line(event="shipped", carrier="DHL", sku="A", quantity="1"),
                                           line(event="shipped", carrier="DHL", sku="A", quantity="2")), "e.csv")
    assert partial.events[0].event_key != partial.events[1].event_key
    assert len(one[0].event_key) == 64


# -- names -------------------------------------------------------------------------------------------


def test_list_status_files() -> None:
    names = ["b.csv", ".a.csv.part", ".hidden.csv", "archive", "error", "notes.txt", "a.csv", "x.CSV", "c.csv.bak"]
    assert list_status_files(names) == ["a.csv", "b.csv"]


def test_unique_name() -> None:
    assert unique_name(set(), "a.csv") == "a.csv"
    assert unique_name({"a.csv"}, "a.csv") == "a-1.csv"
    assert unique_name({"a.csv", "a-1.csv", "a-2.csv"}, "a.csv") == "a-3.csv"
    assert unique_name({"a.csv", "a-2.csv"}, "a.csv") == "a-1.csv"
    assert unique_name({"status.2026.csv"}, "status.2026.csv") == "status.2026-1.csv"
    assert unique_name({"readme"}, "readme") == "readme-1"


# -- paid / refunded: the optional money columns ------------------------------------------------

MONEY = (*STATUS_COLUMNS, "amount", "currency", "reference")


def money_line(event: str = "paid", **values: object) -> dict[str, object]:
    return line(event=event, reference="PAY-1", **values)


def test_files_without_the_money_columns_stay_valid_and_keep_their_event_keys() -> None:
    plain = parse_status_file(status_csv(line()), "a.csv").events[0]
    wide = parse_status_file(status_csv(line(), columns=MONEY), "b.csv").events[0]
    assert plain.event_key == wide.event_key  # keys recorded by earlier releases still match
    assert (plain.amount, plain.currency, plain.reference) == (None, "", "")


def test_paid_and_refunded_lines_carry_amount_currency_reference() -> None:
    data = status_csv(
        money_line(),
        money_line(amount="12.3", currency="EUR"),
        line(event="refunded", amount="1200", currency="JPY", reference="CN-7", note="damaged"),
        line(event="refunded", amount="0.500", currency="KWD", reference="CN-8", sku="A", quantity="2"),
        columns=MONEY,
    )
    parsed = parse_status_file(data, "s.csv")
    assert parsed.errors == []
    paid, paid_amount, whole, by_line = parsed.events
    assert (paid.event, paid.amount, paid.currency, paid.reference) == ("paid", None, "", "PAY-1")
    assert (paid_amount.amount, paid_amount.currency) == (Decimal("12.3"), "EUR")
    assert (whole.amount, whole.currency, whole.reference, whole.note) == (Decimal(1200), "JPY", "CN-7", "damaged")
    assert (by_line.sku, by_line.quantity, by_line.amount) == ("A", 2, Decimal("0.500"))
    # one payment however the backend writes the amount; another reference is another payment
    again = parse_status_file(status_csv(money_line(amount="12.30", currency="EUR"), columns=MONEY), "t.csv")
    assert again.events[0].event_key == paid_amount.event_key
    other = parse_status_file(status_csv(line(event="paid", reference="PAY-2", amount="12.30", currency="EUR"),
                                         columns=MONEY), "u.csv")
    assert other.events[0].event_key != paid_amount.event_key


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (line(event="paid"), "paid needs reference"),
        (line(event="refunded", amount="5", currency="EUR"), "refunded needs reference"),
        (money_line("refunded"), "refunded needs amount and currency"),
        (money_line(amount="12.345", currency="EUR"), "amount '12.345' has 3 decimals; EUR has 2"),
        (money_line(amount="12.5", currency="JPY"), "amount '12.5' has 1 decimals; JPY has 0"),
        (money_line(amount="0", currency="EUR"), "amount '0' is not greater than zero"),
        (money_line(amount="0.00", currency="EUR"), "is not greater than zero"),
        (money_line(amount="-5", currency="EUR"), "amount '-5' is not a plain decimal"),
        (money_line(amount="1e3", currency="EUR"), "is not a plain decimal"),
        (money_line(amount="1,50", currency="EUR"), "is not a plain decimal"),
        (money_line(amount="NaN", currency="EUR"), "is not a plain decimal"),
        (money_line(amount="\u0663", currency="EUR"), "is not a plain decimal"),
        (money_line(amount="1" * 16, currency="EUR"), "is too large"),
        (money_line(amount="5", currency="eur"), "currency 'eur' is not an ISO 4217 code"),
        (money_line(amount="5", currency="XYZ"), "currency 'XYZ' is not an ISO 4217 code"),
        (money_line(amount="5"), "amount '5' is given without currency"),
        (money_line(currency="EUR"), "currency 'EUR' is given without amount"),
        (money_line(sku="A", quantity="1"), "sku/quantity are only allowed with 'shipped' or 'refunded'"),
        (line(event="paid", reference="x" * 101), "is not printable text of at most 100"),
        (line(event="paid", reference="a\tb"), "is not printable text"),
    ],
)
def test_each_money_rule_names_the_rule_and_the_value(values: dict[str, object], expected: str) -> None:
    good = money_line(order_id="2000")
    parsed = parse_status_file(status_csv(good, values, good, columns=MONEY), "s.csv")
    assert [e.line_number for e in parsed.events] == [2, 4]
    assert [e.line_number for e in parsed.errors] == [3]
    assert expected in parsed.errors[0].reason, parsed.errors[0].reason


def test_money_columns_on_other_events_are_kept_but_unused() -> None:
    parsed = parse_status_file(status_csv(line(amount="x", currency="??", reference="R"), columns=MONEY), "s.csv")
    assert parsed.errors == []
    assert (parsed.events[0].amount, parsed.events[0].reference) == (None, "")
