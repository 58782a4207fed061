"""The validation report of one run: one self-contained HTML page for operators.

GX's own Data Docs page pulls bootstrap, jquery and vega from public CDNs (unstyled where
those are unreachable, as on most workers) and names failing rows by DataFrame position. This
page has no script and no outside reference, names each failing order by its order id with
every rule it broke, and says which store, window and run it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em; color: #1d1d1f; }
h1 { font-size: 1.35em; margin-bottom: .2em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.meta { color: #555; } table { border-collapse: collapse; margin-top: .5em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; } .fail { color: #a40000; font-weight: 600; }
.ok { color: #1b6e20; } td.detail { max-width: 60em; white-space: pre-wrap; word-break: break-word; }
"""


def render_report(
    *, store_id: str, scope: str, run_id: str, validated: int,
    quarantined: Iterable[Mapping[str, Any]], expectations: Iterable[Mapping[str, Any]],
) -> str:
    """The page. ``scope`` says what was validated (``window [a, b)``, or order ids);
    ``quarantined``: ``{"order_id", "order_version", "reasons": [{"rule", "detail"}]}`` per
    order; ``expectations``: the GX summary rows (``rule``, ``frame``, ``expectation``,
    ``column``, ``success``, ``unexpected_count``)."""
    entries = list(quarantined)
    title = f"Order validation: store {store_id}, {scope}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">Run <code>{escape(run_id)}</code>: {validated} order(s) validated, '
        f"{len(entries)} quarantined.</p>",
        "<h2>Quarantined orders</h2>",
    ]
    if entries:
        parts.append("<table>" + _row(_th("order_id"), _th("order_version"), _th("rule"), _th("detail")))
        for entry in sorted(entries, key=lambda e: (len(str(e["order_id"])), str(e["order_id"]))):
            reasons = list(entry.get("reasons") or [{"rule": "?", "detail": ""}])
            span = len(reasons)
            for n, reason in enumerate(reasons):
                head = [_td(entry["order_id"], rowspan=span), _td(entry["order_version"], rowspan=span)]
                parts.append(_row(*(head if n == 0 else []), _td(reason.get("rule", "")),
                                  _td(reason.get("detail", ""), css="detail")))
        parts.append("</table>")
    else:
        parts.append("<p>None: every validated order passed every rule.</p>")
    parts.append("<h2>Rules (Great Expectations suite)</h2>")
    parts.append("<table>" + _row(*map(_th, ("rule", "checked on", "expectation", "column", "result",
                                              "failing rows"))))
    for row in expectations:
        ok = bool(row.get("success"))
        parts.append(_row(
            _td(row.get("rule", "")), _td(row.get("frame", "")), _td(row.get("expectation", "")),
            _td(row.get("column") or ""), _td("passed" if ok else "failed", css="ok" if ok else "fail"),
            _td(int(row.get("unexpected_count") or 0), css="num"),
        ))
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def _th(text: str) -> str:
    return f"<th>{escape(text)}</th>"


def _td(value: object, *, css: str = "", rowspan: int = 1) -> str:
    attrs = (f' class="{css}"' if css else "") + (f' rowspan="{rowspan}"' if rowspan > 1 else "")
    return f"<td{attrs}>{escape(str(value))}</td>"


def _row(*cells: str) -> str:
    return f"<tr>{''.join(cells)}</tr>"
