"""The quarantine, for people: a readable table and the operator's release path.

An order is quarantined with every rule it failed. Once the storefront data is fixed, the
operator triggers ``order_export_on_demand__<store>`` with those order ids: the run fetches
them as they are now, validates them again and delivers the valid ones; delivery sets
``released_at`` on the order's quarantine entries (see ``Ledger.complete_batch``).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_REASON_WIDTH = 120


def _reasons(reasons: Any) -> str:
    if isinstance(reasons, str):
        try:
            reasons = json.loads(reasons)
        except ValueError:
            return reasons
    parts = [f"{r.get('rule')}: {r.get('detail')}" if isinstance(r, Mapping) else str(r)
             for r in reasons or ()]
    text = "; ".join(parts)
    return text if len(text) <= MAX_REASON_WIDTH else text[: MAX_REASON_WIDTH - 1] + "…"


def _when(value: Any) -> str:
    if value is None:
        return "-"
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text[:19].replace("T", " ")


def quarantine_table(entries: Iterable[Mapping[str, Any]]) -> str:
    """A fixed-width table: order, version, when, released, reasons (``rule: detail; …``)."""
    header = ("order_id", "version", "quarantined_at", "released_at", "reasons")
    rows = [
        (str(e["order_id"]), str(e["order_version"]), _when(e.get("quarantined_at")),
         _when(e.get("released_at")), _reasons(e.get("reasons")))
        for e in entries
    ]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(4)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells[:4], widths, strict=True)) + "  " + cells[4]

    return "\n".join([line(header), *(line(r) for r in rows)])


def release_command(store_id: str, order_ids: Sequence[str]) -> str:
    """The Airflow CLI call that re-validates and delivers these orders."""
    conf = json.dumps({"order_ids": [int(i) for i in order_ids]})
    return f"airflow dags trigger order_export_on_demand__{store_id} --conf {shlex.quote(conf)}"
