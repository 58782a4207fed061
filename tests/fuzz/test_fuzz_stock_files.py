"""Property tests of the stock-file parser (outside data from the backend).

Properties: ``parse_stock_file`` never raises on content; every non-blank data row ends in
exactly one of ``rows`` / ``superseded`` / ``errors`` (or the file is one file error); a row
built valid is never refused except as a contradicting duplicate; a quantity is an integer in
``0..MAX_QUANTITY`` and survives exactly (its digits are the number applied).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from order_integration.backend.stock_files import (
    MAX_QUANTITY,
    MAX_SKU_LENGTH,
    STOCK_COLUMNS,
    ParsedStockFile,
    parse_quantity,
    parse_stock_file,
)
from tests.fuzz.strategies import CsvFile, hostile_text, is_blank, padded, render_csv, utc_times

pytestmark = pytest.mark.fuzz

HEADER = b"sku,quantity,as_of\n"


@st.composite
def valid_row(draw) -> dict[str, str]:
    sku = draw(st.sampled_from(["SKU-1", "SKU-2", "É-3", "名前", "a" * MAX_SKU_LENGTH, "x,y", 'q"q']))
    return {"sku": draw(padded(sku)), "quantity": draw(padded(str(draw(st.integers(0, MAX_QUANTITY))))),
            "as_of": draw(padded(draw(utc_times()))), "location": draw(st.sampled_from(["", "WH-1", "WH 2"]))}


@st.composite
def stock_files(draw) -> CsvFile:
    columns = list(draw(st.permutations([*STOCK_COLUMNS, *(["location"] if draw(st.booleans()) else [])])))
    header, header_ok = list(columns), True
    mutation = draw(st.sampled_from(["none"] * 8 + ["drop", "repeat", "unknown"]))
    if mutation == "drop":
        header.remove(draw(st.sampled_from(STOCK_COLUMNS)))
        header_ok = False
    elif mutation == "repeat":
        header.append(draw(st.sampled_from(header)))
        header_ok = False
    elif mutation == "unknown":
        header.append(draw(st.sampled_from(["warehouse", "SKU", "qty"])))
        header_ok = False
    rows: list[list[str]] = []
    built: list[bool | None] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["valid", "valid", "valid", "mutated", "garbage", "blank", "short"]))
        if kind == "blank":
            rows.append(["" for _ in columns])
            continue
        row = draw(valid_row())
        if kind == "mutated":
            row[draw(st.sampled_from(STOCK_COLUMNS))] = draw(hostile_text())
        elif kind == "garbage":
            row = {c: draw(hostile_text()) for c in (*STOCK_COLUMNS, "location")}
        cells = [row[c] for c in columns]
        if kind == "short":
            cells = cells[:-1] if len(cells) > 1 and draw(st.booleans()) else [*cells, "extra"]
        if is_blank(cells):
            continue
        rows.append(cells)
        built.append({"valid": True, "short": False}.get(kind))
    final_newline = draw(st.booleans()) or draw(st.booleans())
    data = render_csv(header, rows, bom=draw(st.booleans()), newline=draw(st.sampled_from(["\n", "\r\n"])),
                      final_newline=final_newline)
    return CsvFile(data, header_ok, built, truncated=not final_newline)


def check_accounted(parsed: ParsedStockFile) -> list[tuple[int, str]]:
    """Each data row in exactly one outcome (or one file error); returns (line, outcome) sorted."""
    if parsed.file_error is not None:
        assert parsed.rows == [] and parsed.superseded == [] and len(parsed.errors) == 1, parsed
        return []
    outcomes = sorted([(r.line_number, "row") for r in parsed.rows]
                      + [(s.row.line_number, f"superseded:{s.kind}") for s in parsed.superseded]
                      + [(e.line_number, f"error:{e.reason}") for e in parsed.errors])
    lines = [n for n, _ in outcomes]
    assert len(lines) == len(set(lines)), outcomes
    assert len({r.sku for r in parsed.rows}) == len(parsed.rows), "one level per SKU"
    for row in [*parsed.rows, *(s.row for s in parsed.superseded)]:
        assert 0 <= row.quantity <= MAX_QUANTITY and row.sku and len(row.sku) <= MAX_SKU_LENGTH
        assert row.as_of.utcoffset().total_seconds() == 0
    return outcomes


@given(stock_files())
def test_stock_file_every_row_one_outcome(file: CsvFile) -> None:
    parsed = parse_stock_file(file.data, "fuzz.csv")
    outcomes = check_accounted(parsed)
    if not file.header_ok:
        assert parsed.file_error is not None and ("header" in parsed.file_error or not file.records)
        return
    if not file.records:
        return
    assert parsed.file_error is None, parsed.file_error
    assert parsed.row_count == len(outcomes) == len(file.records)
    for position, ((_line, outcome), verdict) in enumerate(zip(outcomes, file.records, strict=True)):
        last = position == len(outcomes) - 1
        if verdict is True and not (last and file.truncated):
            assert not outcome.startswith("error:") or "duplicate sku" in outcome, (position, outcome)
        if verdict is False or (last and file.truncated):
            assert outcome.startswith("error:"), (position, outcome)


@given(st.binary(max_size=2000))
@example(HEADER + b"A," + b"9" * 4301 + b",2026-11-02T10:00:00Z\n")
@example(HEADER + b"A," + b"0" * 5000 + b"7,2026-11-02T10:00:00Z\n")
@example(HEADER + b"A,1,2026-11-02T10:00:00Z\n\"B,2")
def test_stock_file_any_bytes_never_raise(data: bytes) -> None:
    check_accounted(parse_stock_file(data, "fuzz.csv"))


@given(st.one_of(st.integers(0, 10**30).map(str), hostile_text(), st.integers(0, 6000).map(lambda n: "9" * n)))
@example("9" * 4301)
@example("0" * 4400 + "12")
def test_quantity_is_a_bounded_int_or_a_reason(text: str) -> None:
    quantity = parse_quantity(text)
    if isinstance(quantity, int):
        assert text.isascii() and text.isdigit() and quantity == int(text.lstrip("0") or "0") <= MAX_QUANTITY
    else:
        assert isinstance(quantity, str) and quantity.startswith("quantity")
        significant = text.lstrip("0") or "0"
        assert not (text.isascii() and text.isdigit() and len(significant) <= 10
                    and int(significant) <= MAX_QUANTITY)
