"""Property tests of the status-file parser (outside data from the backend).

Properties: ``parse_status_file`` never raises on content; every non-blank data line ends in
exactly one outcome (an event or a line error), or the whole file is one file error; a line
built valid becomes an event carrying its values; a line built broken never becomes one.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from order_integration.backend.status_files import (
    EVENTS,
    MONEY_COLUMNS,
    STATUS_COLUMNS,
    ParsedFile,
    parse_status_file,
)
from tests.fuzz.strategies import CsvFile, hostile_text, is_blank, padded, render_csv, utc_times

pytestmark = pytest.mark.fuzz


#: The events whose lines need the optional money columns (a reference, and for a refund the amount).
MONEY_EVENTS = ("paid", "refunded")


@st.composite
def valid_line(draw, money: bool = False) -> dict[str, str]:
    event = draw(st.sampled_from([e for e in EVENTS if money or e not in MONEY_EVENTS]))
    line = {c: "" for c in (*STATUS_COLUMNS, *(MONEY_COLUMNS if money else ()))}
    if event in MONEY_EVENTS:
        line["reference"] = draw(st.sampled_from(["BANK-1", "CN-2026-7"]))
        if event == "refunded" or draw(st.booleans()):
            line["amount"], line["currency"] = draw(st.sampled_from([("12.30", "EUR"), ("1200", "JPY")]))
    line["order_id"] = str(draw(st.integers(1, 2**64 - 1)))
    line["event"] = event
    line["occurred_at"] = draw(utc_times())
    if event == "shipped":
        line["carrier"] = draw(st.sampled_from(["DHL", "UPS", "La Poste", "ヤマト"]))
        line["tracking_number"] = draw(st.sampled_from(["", "00340434", "1Z999"]))
        line["tracking_url"] = draw(st.sampled_from(["", "https://track.example/00340434"]))
        if draw(st.booleans()):
            line["sku"], line["quantity"] = draw(st.sampled_from(["SKU-1", "É-2"])), str(draw(st.integers(1, 10**6)))
    line["note"] = draw(st.sampled_from(["", "ok", "a, \"quoted\"\nnote"])) or ("reason" if event == "rejected" else "")
    if event == "rejected" and not line["note"]:
        line["note"] = "out of stock"
    return {k: draw(padded(v)) if k != "note" and v else v for k, v in line.items()}


@st.composite
def status_files(draw) -> CsvFile:
    money = draw(st.booleans())
    all_columns = (*STATUS_COLUMNS, *(MONEY_COLUMNS if money else ()))
    columns = list(draw(st.permutations(all_columns)))
    header_ok = True
    mutation = draw(st.sampled_from(["none"] * 8 + ["drop", "repeat", "unknown", "garbage"]))
    header = list(columns)
    if mutation == "drop":
        # a required column (the money columns are optional: a header without one is fine)
        header.remove(draw(st.sampled_from(STATUS_COLUMNS)))
        header_ok = False
    elif mutation == "repeat":
        header.append(draw(st.sampled_from(columns)))
        header_ok = False
    elif mutation == "unknown":
        header.append(draw(st.sampled_from(["amount_x", "ORDER_ID", "", "note "])))
        header_ok = False  # unknown, empty, or 'note ' (a repeat once stripped): all refused
    elif mutation == "garbage":
        header = draw(st.lists(hostile_text(), max_size=4))
        header_ok = False
    rows: list[list[str]] = []
    built: list[bool | None] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["valid", "valid", "mutated", "garbage", "blank", "short"]))
        if kind == "blank":
            rows.append([draw(st.sampled_from(["", " "])) for _ in columns])
            continue
        line = draw(valid_line(money))
        if kind == "mutated":  # one cell replaced by anything
            line[draw(st.sampled_from(all_columns))] = draw(hostile_text())
            verdict = None
        elif kind == "garbage":
            line = {c: draw(hostile_text()) for c in all_columns}
            verdict = None
        elif kind == "short":
            verdict = False
        else:
            verdict = True
        cells = [line[c] for c in columns]
        if kind == "short":
            cells = cells[: draw(st.integers(1, len(cells) - 1))] if draw(st.booleans()) else [*cells, "extra"]
        if is_blank(cells):
            continue
        rows.append(cells)
        built.append(verdict)
    final_newline = draw(st.booleans()) or draw(st.booleans())
    data = render_csv(header, rows, bom=draw(st.booleans()), newline=draw(st.sampled_from(["\n", "\r\n"])),
                      final_newline=final_newline)
    return CsvFile(data, header_ok, built, truncated=not final_newline)


def check_accounted(parsed: ParsedFile) -> None:
    """Each data line in exactly one outcome, or one file-level error and nothing else."""
    if parsed.file_error is not None:
        assert parsed.events == [] and len(parsed.errors) == 1, parsed
        assert parsed.errors[0].reason == parsed.file_error
        return
    lines = [e.line_number for e in parsed.events] + [e.line_number for e in parsed.errors]
    assert len(lines) == len(set(lines)) == parsed.records, parsed
    assert all(n >= 2 for n in lines), lines  # the header is line 1 or later, data after it
    for event in parsed.events:
        assert event.event in EVENTS and event.order_id.isascii() and event.order_id.isdigit()
        assert 0 < int(event.order_id) < 2**64
        assert event.occurred_at.utcoffset().total_seconds() == 0
        assert event.quantity is None or event.quantity > 0


@given(status_files())
def test_status_file_every_line_one_outcome(file: CsvFile) -> None:
    parsed = parse_status_file(file.data, "fuzz.csv")
    check_accounted(parsed)
    if not file.header_ok and file.records == []:
        return
    if not file.header_ok:
        assert parsed.file_error is not None and "header" in parsed.file_error
        return
    assert parsed.file_error is None, parsed.file_error
    assert parsed.records == len(file.records)
    outcomes = sorted([(e.line_number, True) for e in parsed.events] + [(e.line_number, False) for e in parsed.errors])
    for position, ((_line, is_event), verdict) in enumerate(zip(outcomes, file.records, strict=True)):
        last = position == len(outcomes) - 1
        if verdict is True and not (last and file.truncated):
            assert is_event, (position, parsed)
        if verdict is False or (last and file.truncated):
            assert not is_event, (position, parsed)


@given(st.binary(max_size=2000))
@example(b"\xef\xbb\xbf\xef\xbb\xbforder_id,event\n")
@example(b"order_id,event,occurred_at,carrier,tracking_number,tracking_url,sku,quantity,note\n\"1,acc")
def test_status_file_any_bytes_never_raise(data: bytes) -> None:
    check_accounted(parse_status_file(data, "fuzz.csv"))


@given(st.lists(st.sampled_from([
    b"order_id,event,occurred_at,carrier,tracking_number,tracking_url,sku,quantity,note",
    b"1,accepted,2026-11-02T10:00:00Z,,,,,,", b"2,shipped,2026-11-02T10:00:00+00:00,DHL,1,,SKU,2,",
    b"x,\"a\nb\",c", b"\"open", b"", b",,,,,,,,", b"\xff\xfe", b"\x00", b"3,rejected,2026-11-02T10:00:00Z,,,,,,no",
]), max_size=12), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_status_file_spliced_lines_never_raise(lines: list[bytes], newline: bytes) -> None:
    check_accounted(parse_status_file(newline.join(lines), "fuzz.csv"))


HUGE_QUANTITY = (b"order_id,event,occurred_at,carrier,tracking_number,tracking_url,sku,quantity,note\n"
                 b"1,shipped,2026-11-02T10:00:00Z,DHL,1,,A," + b"9" * 4301 + b",\n")


def test_status_file_quantity_of_4301_digits_is_a_line_error_not_a_crash() -> None:
    """Found by the fuzzer (test_status_file_any_bytes_never_raise's first run, 2026-12-04);
    fixed in status_files.parse_quantity (length before int())."""
    parsed = parse_status_file(HUGE_QUANTITY, "fuzz.csv")
    check_accounted(parsed)
    assert parsed.events == [] and "quantity" in parsed.errors[0].reason
