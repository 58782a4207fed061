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
from order_integration.model import CSV_COLUMNS, LINE_COLUMNS, ORDER_COLUMNS, TOTAL_COLUMNS

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


def _cells(source: Mapping[str, Any], columns: tuple[str, ...]) -> list[str]:
    return [source[c] if c in _NOT_TEXT else guard_cell(source[c]) for c in columns]


def _csv_rows(record: Mapping[str, Any]) -> Iterable[list[str]]:
    # Order-level cells are guarded once per order, not once per line.
    head, tail = _cells(record, ORDER_COLUMNS), _cells(record, TOTAL_COLUMNS)
    for line in record["lines"]:
        yield head + _cells(line, LINE_COLUMNS) + tail


def write_orders(records: Iterable[Mapping[str, Any]], fmt: FileFormat, target: BinaryIO) -> WrittenFile:
    """Stream order records (:func:`~order_integration.model.order_record`) to ``target`` in
    ``fmt`` (UTF-8, no BOM); returns counts and the content digest."""
    if fmt not in ("csv", "jsonl"):  # config refuses other formats first
        raise ValueError(f"unknown orders file format {fmt!r}")
    sha = hashlib.sha256()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 quoting
    if fmt == "csv":
        writer.writerow(CSV_COLUMNS)
    n_orders = n_rows = 0

    def flush() -> None:
        data = buffer.getvalue().encode("utf-8")
        sha.update(data)
        target.write(data)
        buffer.seek(0)
        buffer.truncate()

    for record in records:
        if fmt == "csv":
            rows = list(_csv_rows(record))
            writer.writerows(rows)
            n_rows += len(rows)
        else:
            buffer.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            n_rows += 1
        n_orders += 1
        if buffer.tell() > 1 << 16:  # 64 KiB writes: object stores dislike tiny ones
            flush()
    flush()
    return WrittenFile(orders=n_orders, rows=n_rows, digest=sha.hexdigest()[:DIGEST_LENGTH])
