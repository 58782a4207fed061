"""Stock file parsing: every rule, with the line numbers operators will see."""

from __future__ import annotations

import pendulum
import pytest

from order_integration.backend.stock_files import (
    MAX_QUANTITY,
    list_stock_files,
    parse_quantity,
    parse_stock_file,
)

pytestmark = pytest.mark.unit

T1 = "2026-11-29T10:00:00Z"
T2 = "2026-11-29T11:00:00Z"


def stock(*lines: str, header: str = "sku,quantity,as_of", end: str = "\n") -> bytes:
    return (header + "\n" + "\n".join(lines) + (end if lines else "")).encode()


def reasons(parsed) -> dict[int, str]:
    return {e.line_number: e.reason for e in parsed.errors}


def test_good_rows_are_parsed_with_line_numbers_and_utc_times():
    parsed = parse_stock_file(stock(f"A-1,12,{T1}", "", "B-2,0,2026-11-29T12:30:00+00:00"), "s.csv")
    assert parsed.errors == [] and parsed.file_error is None
    assert [(r.line_number, r.sku, r.quantity) for r in parsed.rows] == [(2, "A-1", 12), (4, "B-2", 0)]
    assert parsed.rows[1].as_of == pendulum.datetime(2026, 11, 29, 12, 30, tz="UTC")
    assert parsed.rows[0].location is None
    assert parsed.row_count == 2


def test_bom_any_column_order_and_optional_location():
    data = "\ufeffas_of,location,quantity,sku\r\n" + f"{T1},WH-1,5,A-1\r\n"
    parsed = parse_stock_file(data.encode(), "s.csv")
    assert [(r.sku, r.quantity, r.location) for r in parsed.rows] == [("A-1", 5, "WH-1")]


@pytest.mark.parametrize(("cell", "reason"), [
    ("-3", "quantity '-3' is negative"),
    ("1.5", "quantity '1.5' is fractional"),
    ("3.0", "quantity '3.0' is fractional"),
    ("2,5", None),  # a comma splits the field: a field-count error instead
    ("ten", "quantity 'ten' is not a whole number"),
    ("", "quantity is missing"),
    (str(MAX_QUANTITY + 1), "is too large"),
])
def test_bad_quantities_are_refused_per_row(cell, reason):
    parsed = parse_stock_file(stock(f"A-1,{cell},{T1}", f"B-2,4,{T1}"), "s.csv")
    assert [r.sku for r in parsed.rows] == ["B-2"]
    [error] = parsed.errors
    assert error.line_number == 2 and error.sku == "A-1"
    assert reason is None or reason in error.reason, error.reason


def test_parse_quantity_accepts_zero_and_the_maximum():
    assert parse_quantity("0") == 0
    assert parse_quantity(str(MAX_QUANTITY)) == MAX_QUANTITY


@pytest.mark.parametrize(("cell", "reason"), [
    ("", "as_of is missing"),
    ("2026-11-29T10:00:00", "as_of '2026-11-29T10:00:00' has no time zone"),
    ("2026-11-29T11:00:00+01:00", "is not UTC"),
    ("yesterday", "as_of 'yesterday' is not an ISO 8601 time"),
])
def test_bad_as_of_is_refused(cell, reason):
    parsed = parse_stock_file(stock(f"A-1,3,{cell}"), "s.csv")
    assert parsed.rows == []
    assert reason in reasons(parsed)[2]


def test_missing_sku_and_every_problem_of_a_row_are_named():
    parsed = parse_stock_file(stock(",-1,nope"), "s.csv")
    reason = reasons(parsed)[2]
    assert "sku is missing" in reason and "negative" in reason and "not an ISO 8601" in reason


def test_newest_duplicate_wins_and_older_ones_are_superseded():
    parsed = parse_stock_file(stock(f"A-1,5,{T1}", f"B-2,1,{T1}", f"A-1,7,{T2}", f"A-1,9,{T1}"), "s.csv")
    assert [(r.line_number, r.sku, r.quantity) for r in parsed.rows] == [(3, "B-2", 1), (4, "A-1", 7)]
    assert sorted((m.row.line_number, m.kind, m.by_line) for m in parsed.superseded) == [
        (2, "stale", 4), (5, "stale", 4)]
    assert parsed.errors == []
    assert parsed.row_count == 4


def test_identical_duplicates_are_one_level():
    parsed = parse_stock_file(stock(f"A-1,5,{T1}", f"A-1,5,{T1}"), "s.csv")
    assert [r.line_number for r in parsed.rows] == [2]
    assert [(m.row.line_number, m.kind) for m in parsed.superseded] == [(3, "repeated")]


def test_equal_as_of_with_different_quantities_refuses_every_such_row():
    parsed = parse_stock_file(stock(f"A-1,4,{T1}", f"A-1,5,{T2}", f"A-1,6,{T2}", f"B-2,1,{T1}"), "s.csv")
    assert [r.sku for r in parsed.rows] == ["B-2"]
    assert sorted(reasons(parsed)) == [3, 4]
    assert "different quantities (5, 6)" in reasons(parsed)[3] and "lines 3, 4" in reasons(parsed)[3]
    assert [(m.row.line_number, m.kind) for m in parsed.superseded] == [(2, "stale")]
    assert parsed.row_count == 4


def test_rows_of_one_sku_in_two_locations_are_duplicates_with_a_hint():
    data = stock(f"A-1,4,{T1},WH-1", f"A-1,3,{T1},WH-2", header="sku,quantity,as_of,location")
    parsed = parse_stock_file(data, "s.csv")
    assert parsed.rows == []
    assert "this storefront keeps one level per SKU: send the total over all locations" in reasons(parsed)[2]


def test_per_location_two_locations_of_one_sku_are_two_levels():
    data = stock(f"A-1,4,{T1},WH-1", f"A-1,3,{T1},WH-2", f"A-1,2,{T1},", f"B-2,1,{T1},WH-1",
                 header="sku,quantity,as_of,location")
    parsed = parse_stock_file(data, "s.csv", per_location=True)
    assert parsed.errors == [] and parsed.superseded == []
    assert [(r.sku, r.location, r.quantity) for r in parsed.rows] == [
        ("A-1", "WH-1", 4), ("A-1", "WH-2", 3), ("A-1", None, 2), ("B-2", "WH-1", 1)]


def test_per_location_duplicates_are_resolved_per_sku_and_location():
    data = stock(f"A-1,4,{T1},WH-1", f"A-1,5,{T2},WH-1", f"A-1,3,{T1},WH-2", f"A-1,3,{T1},WH-2",
                 f"A-1,7,{T2},WH-3", f"A-1,8,{T2},WH-3", header="sku,quantity,as_of,location")
    parsed = parse_stock_file(data, "s.csv", per_location=True)
    assert [(r.line_number, r.location, r.quantity) for r in parsed.rows] == [(3, "WH-1", 5), (4, "WH-2", 3)]
    assert sorted((m.row.line_number, m.kind, m.by_line) for m in parsed.superseded) == [
        (2, "stale", 3), (5, "repeated", 4)]
    assert sorted(reasons(parsed)) == [6, 7]  # two quantities for WH-3 at one as_of
    assert "different quantities (7 at WH-3, 8 at WH-3)" in reasons(parsed)[6]
    assert "one level per SKU" not in reasons(parsed)[6]
    assert parsed.row_count == 6


def test_a_file_without_final_line_break_refuses_its_last_row_only():
    parsed = parse_stock_file(stock(f"A-1,4,{T1}", f"B-2,12,{T1}", end=""), "s.csv")
    assert [r.sku for r in parsed.rows] == ["A-1"]
    assert reasons(parsed)[3].startswith("the file does not end with a line break")
    assert parse_stock_file(stock(f"A-1,4,{T1}", f"B-2,12,{T1}", end="\r\n"), "s.csv").errors == []


def test_a_truncated_row_and_an_open_quote():
    parsed = parse_stock_file(stock(f"A-1,4,{T1}", "B-2,12", f"C-3,2,{T1}"), "s.csv")
    assert reasons(parsed) == {3: "row has 2 fields, the header has 3"}
    assert [r.sku for r in parsed.rows] == ["A-1", "C-3"]
    parsed = parse_stock_file(stock(f"A-1,4,{T1}", f'"B-2,12,{T1}'), "s.csv")
    assert [r.sku for r in parsed.rows] == ["A-1"]
    [error] = parsed.errors
    assert "not readable as CSV" in error.reason and "rest of the file" in error.reason


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty file"),
    (b"sku,quantity\nA-1,3\n", "missing column(s) as_of"),
    (b"sku,quantity,as_of,colour\n", "unknown column(s) 'colour'"),
    (b"sku,quantity,as_of,sku\n", "repeated column(s) sku"),
    (b"\xff\xfesku", "not UTF-8"),
])
def test_file_level_errors(data, reason):
    parsed = parse_stock_file(data, "bad.csv")
    assert parsed.file_error is not None and reason in parsed.file_error
    assert parsed.rows == [] and len(parsed.errors) == 1 and parsed.row_count == 1


def test_header_only_file_has_no_rows():
    parsed = parse_stock_file(b"sku,quantity,as_of\n", "empty.csv")
    assert (parsed.rows, parsed.errors, parsed.file_error, parsed.row_count) == ([], [], None, 0)


def test_listing_skips_dot_files_and_other_suffixes():
    names = ["b.csv", ".a.csv.part", ".hidden.csv", "notes.txt", "a.csv", "C.CSV"]
    assert list_stock_files(names) == ["a.csv", "b.csv"]
