"""Orders files for the backend: CSV (one row per order line) and JSONL (one order a line).

Both are rendered from order records (:func:`order_integration.model.order_record`), the one
place that defines what the backend sees, so the two formats and the order version agree.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from order_integration.config import FileFormat
from order_integration.model import CSV_COLUMNS

#: Cells that hold numbers or times, never free text: the injection guard leaves them alone
#: (a negative fee ``-5.00`` must stay a number).
_NOT_TEXT = frozenset({
    "order_version", "created_at", "updated_at", "line_number", "quantity", "unit_price",
    "line_total", "order_subtotal", "order_discount", "order_shipping", "order_fees", "order_tax",
    "order_total",
})
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
DIGEST_LENGTH = 12


def guard_cell(value: str) -> str:
    """Prefix ``'`` to a text cell a spreadsheet would run as a formula (``+49…`` -> ``'+49…``)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


@dataclass(frozen=True, slots=True)
class WrittenFile:
    orders: int
    rows: int
    digest: str  # short sha256 of the bytes written


def _csv_rows(record: Mapping[str, Any]) -> Iterable[list[str]]:
    for line in record["lines"]:
        row = {**record, **line}
        yield [row[c] if c in _NOT_TEXT else guard_cell(row[c]) for c in CSV_COLUMNS]


def _header(fmt: FileFormat) -> str:
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerow(CSV_COLUMNS)
        return buffer.getvalue()
    if fmt == "jsonl":
        return ""
    raise ValueError(f"unknown orders file format {fmt!r}")  # config refuses it first


def _render(record: Mapping[str, Any], fmt: FileFormat, buffer: io.StringIO) -> int:
    """Append one order record to ``buffer``; returns the number of rows written."""
    if fmt == "csv":
        rows = list(_csv_rows(record))
        csv.writer(buffer, lineterminator="\r\n").writerows(rows)  # RFC 4180 quoting
        return len(rows)
    buffer.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    return 1


def write_orders(records: Iterable[Mapping[str, Any]], fmt: FileFormat, target: BinaryIO) -> WrittenFile:
    """Stream order records (:func:`~order_integration.model.order_record`) to ``target`` in
    ``fmt`` (UTF-8, no BOM); returns counts and the content digest."""
    sha = hashlib.sha256()
    buffer = io.StringIO(_header(fmt))
    buffer.seek(0, io.SEEK_END)
    n_orders = n_rows = 0

    def flush() -> None:
        data = buffer.getvalue().encode("utf-8")
        sha.update(data)
        target.write(data)
        buffer.seek(0)
        buffer.truncate()

    for record in records:
        n_rows += _render(record, fmt, buffer)
        n_orders += 1
        if buffer.tell() > 1 << 16:  # 64 KiB writes: object stores dislike tiny ones
            flush()
    flush()
    return WrittenFile(orders=n_orders, rows=n_rows, digest=sha.hexdigest()[:DIGEST_LENGTH])
