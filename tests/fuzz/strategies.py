"""Hypothesis strategies for outside data: hostile text, CSV files built cell by cell, times."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

#: Values that broke (or nearly broke) parsers before: digits that are not ASCII, numbers in
#: other spellings, huge numbers (Python refuses int() of more than 4,300 digits), BOMs,
#: formula starts, control and bidi characters.
TRICKY = [
    "", " ", "0", "-0", "1", "-1", "+1", "01", "1.0", "1,5", "1e3", "1E-2", "NaN", "nan", "Infinity", "-inf",
    "²", "٣", "１２", "Ⅻ", "18446744073709551615", "18446744073709551616", "2147483647", "2147483648",
    "9" * 30, "9" * 4301, "0" * 4301 + "7", "\ufeff", "\ufeff1", "=1+1", "+49 30 1234", "@SUM(A1)", "\t1",
    "\x00", "a\x00b", "\u202eevil", "\r", "\n", "\r\n", '"', '""', ",", "a,b", "null", "None", "true",
    "2026-11-02T10:00:00Z", "2026-11-02T10:00:00", "2026-11-02T10:00:00+01:00", "2026-11-02T10:00:00+00:00",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59.999999+00:00", "2026-13-40T25:61:61Z",
    "2026-11-02", "10:00:00Z", "2026-W45-1T10:00:00Z", "20261102T100000Z", "2026-11-02T10:00:00-00:00",
    "https://track.example/1", "javascript:alert(1)", "../../x", "CON", "x" * 200,
]


def hostile_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Any text (all planes, controls, surrogates excluded), or one of :data:`TRICKY`."""
    return st.one_of(
        st.sampled_from(TRICKY),
        st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size),
        st.text(st.sampled_from("0123456789 ,.-+eE:TZ\"\r\n\t\ufeff²٣"), max_size=max_size),
    )


EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@st.composite
def utc_times(draw) -> str:
    """An ISO 8601 UTC time as a backend writes it (``Z`` or ``+00:00``, maybe fractions)."""
    moment = EPOCH + timedelta(seconds=draw(st.integers(0, 60 * 365 * 24 * 3600)),
                               microseconds=draw(st.sampled_from([0, 0, 500_000, 123_456])))
    text = moment.isoformat()  # ...+00:00
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


def padded(value: str) -> st.SearchStrategy[str]:
    """``value`` with blanks around it (parsers strip cells)."""
    return st.sampled_from(["", " ", "  ", "\t"]).map(lambda pad: pad + value + pad)


@dataclass(frozen=True)
class CsvFile:
    """A generated file: its bytes, and per non-blank data record whether it was built valid."""

    data: bytes
    header_ok: bool
    records: list[bool | None]  # True: built valid; False: built broken; None: unknown
    truncated: bool


def render_csv(header: list[str], rows: list[list[str]], *, bom: bool, newline: str, final_newline: bool) -> bytes:
    buffer = io.StringIO()
    # QUOTE_MINIMAL quotes a cell holding a character of the line terminator only: with "\n"
    # a bare "\r" in a cell would end the record (as any CSV reader reads it), so quote all then.
    writer = csv.writer(buffer, lineterminator=newline,
                        quoting=csv.QUOTE_MINIMAL if newline == "\r\n" else csv.QUOTE_ALL)
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if not final_newline:
        text = text[: -len(newline)]
    return (("\ufeff" if bom else "") + text).encode("utf-8")


def is_blank(cells: list[str]) -> bool:
    return not any(cell.strip() for cell in cells)
