"""A pretend ERP for local runs and tests: it answers orders files with status files, over SFTP.

It plays the backend side of the two-way integration the way a real ERP would: it polls the
store's ``inbound_dir`` on the backend's SFTP server for complete orders files (never a
``.part`` or other dot file), reads them, decides an outcome per order and writes ONE status
file per run into ``outbound_dir`` (uploaded as a dot ``.part`` file, then renamed), and moves
the orders files it read into its own ``processed_dir``.

Connection: the simulator talks through the package's own
:class:`~order_integration.backend.sftp.SftpBackend`, i.e. an Airflow connection id. Airflow
resolves it as usual, so in a plain process set ``AIRFLOW_CONN_<ID>`` to the connection JSON
(the CLI's ``--conn-file`` does that from the file ``python -m sandbox.sftp_server --conn-file``
writes; :meth:`sandbox.sftp_server.EmbeddedSftpServer.airflow_connection` gives the same JSON).

Status file contract (binding; the backend -> us direction): UTF-8, header row, RFC 4180, columns
:data:`STATUS_COLUMNS`, plus :data:`MONEY_COLUMNS` (``amount,currency,reference``) in a file
that has a ``paid`` or ``refunded`` line (files without them keep the old header); ``event`` one
of ``accepted``, ``shipped``, ``cancelled``, ``rejected``, ``paid``, ``refunded``;
``occurred_at`` UTC ISO 8601 with ``Z``. A ``shipped`` line without ``sku`` ships the whole
order; with ``sku`` + ``quantity`` it ships that many units of that sku (per event, not a running
total). ``rejected``/``cancelled`` carry the reason in ``note``.

Decisions are deterministic: one ``random.Random`` per order seeded from ``(seed, order_id)``,
so the same seed and input give the same events (the times come from ``clock``). For an order
seen for the first time, roughly: 70 % accepted, 12 % accepted + shipped whole, 8 % accepted +
shipped in parts, 5 % rejected, 5 % cancelled by the ERP. An order whose ``order_status`` is
``cancelled`` (or ``refunded``/``failed``) gets no events. A re-delivered order (same
``order_id`` again) never gets a second acceptance or shipment: the same version again is
ignored; a new version of an order the ERP rejected is decided afresh from
``(seed, order_id, order_version)`` (the shop may have fixed it); any other new version is
acknowledged silently.

Payments and refunds (only with a :class:`MoneyPolicy`; without one the ERP answers as before):

* an order received while it awaits payment (``order_status`` ``on-hold`` — WooCommerce's bank
  transfer and cheque checkouts — or ``pending``) is neither accepted nor shipped yet: the ERP
  waits for the money. After ``payment_delay_runs`` runs and ``payment_delay_minutes`` (both
  counted from the run that received it), a ``payment_share`` of them is booked: a ``paid``
  line with the order's total and currency and a bank-statement ``reference``, then the
  order is fulfilled (accepted, shipped whole or in parts) in the same file, after the
  ``paid`` line. The rest never pays and stays waiting. A new version that no longer awaits
  payment (paid in the shop, cancelled) ends the wait: it is decided as a fresh order, or not
  answered at all when cancelled.
* an order the ERP shipped (whole or in parts) is, for a ``refund_share`` of them, refunded
  ``refund_delay_runs`` runs and ``refund_delay_minutes`` after the shipping run: a
  ``refunded`` line with a credit-note ``reference``; a ``line_refund_share`` of the refunds
  name one line (``sku`` + ``quantity``, the amount that many units of its ``line_total``),
  the others give back the whole rest (total minus what the ERP refunded before). Orders the
  shop cancelled or refunded since get none.
* each order is paid at most once and refunded at most once: the state remembers the
  reference it sent. References derive from ``(seed, order_id)``, so a line sent again after
  a crash (before the state was saved) carries the same reference, which the status sync
  recognises on the storefront: one payment, one refund.

Crash safety, in this order per run: read files -> upload the status file -> save the JSON
state (the files answered, by name and sha256, each order's outcome, payments and refunds,
the run counter) -> move the files to ``processed_dir``. A crash before the state is saved
answers the files again after a restart (at least once); a crash after it only moves them,
without answering twice. A run that fails (the upload, the server) leaves the in-memory state
as it was before the run, so the next poll answers everything again.

CLI::

    python -m sandbox.erp_simulator --conn-id backend_sftp_demo [--conn-file .sandbox/sftp_conn.json]
        [--interval 5] [--once] [--faults bom,unknown_order,malformed] [--seed 7] [--state PATH]
        [--stock snapshot|update] [--stock-dir stock] [--no-money] [--payment-share 0.9]
        [--payment-delay-runs 1] [--payment-delay-minutes 0] [--refund-share 0.25]
        [--line-refund-share 0.5] [--refund-delay-runs 1] [--refund-delay-minutes 0]

Fault modes for status files: ``bom``, ``unknown_order``, ``malformed`` (see the class), and
one broken money line each (:data:`MONEY_FAULTS`, every one refused by the status sync with
its reason): ``amount_decimals`` (a refund with one decimal more than the currency has),
``amount_zero``, ``amount_negative``, ``refund_above_remaining`` (one minor unit more than the
order's total less the ERP's refunds), ``currency_mismatch`` (a refund in another currency of
the same decimals), ``paid_already_paid`` (``paid`` for an order the shop exported as paid by
its gateway), ``refund_cancelled`` (a refund of an order cancelled by the ERP or the shop) and
``missing_reference`` (a refund without reference). A money fault needs a suitable order the
ERP knows; without one its line is left out (:attr:`ErpReport.faults_missing` says which).

Stock files (:meth:`ErpSimulator.write_stock`): ``stock_<time>_<seq>_<kind>.csv`` in
``stock_dir``, columns ``sku,quantity,as_of``, absolute levels: full snapshots of every SKU the
warehouse stocks, or small updates of a few. Fault modes ``unknown_sku`` and ``stale_stock``
add a SKU the shop does not sell, and a late file with older levels.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import posixpath
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pendulum

from order_integration.backend.sftp import SftpBackend, SftpSession
from order_integration.currency import MINOR_UNITS, format_money, is_valid_currency
from order_integration.exceptions import BackendError

log = logging.getLogger(__name__)

#: Columns of a status file, in contract order.
STATUS_COLUMNS: tuple[str, ...] = (
    "order_id", "event", "occurred_at", "carrier", "tracking_number", "tracking_url", "sku",
    "quantity", "note",
)
#: Optional columns after ``note``, written only in a file with a ``paid``/``refunded`` line.
MONEY_COLUMNS: tuple[str, ...] = ("amount", "currency", "reference")
EVENTS: tuple[str, ...] = ("accepted", "shipped", "cancelled", "rejected", "paid", "refunded")
#: Order statuses the ERP does not answer: the shop itself has called the order off.
NO_EVENT_STATUSES = frozenset({"cancelled", "refunded", "failed"})
#: Order statuses of an order that awaits its payment (WooCommerce puts bank transfer and
#: cheque checkouts ``on-hold``; ``pending`` is unpaid on WooCommerce and Shopify alike).
AWAITING_PAYMENT = frozenset({"on-hold", "pending"})
#: Order statuses of an order the shop's payment gateway has paid (WooCommerce, Shopify).
PAID_BY_SHOP = frozenset({"processing", "completed", "paid"})
#: One broken money line each; see the module docstring.
MONEY_FAULTS = frozenset({
    "amount_decimals", "amount_zero", "amount_negative", "refund_above_remaining",
    "currency_mismatch", "paid_already_paid", "refund_cancelled", "missing_reference",
})
FAULTS = frozenset({"bom", "unknown_order", "malformed", "unknown_sku", "stale_stock"}) | MONEY_FAULTS
#: The order id of the ``unknown_order`` fault line; no shop hands out an id that high here.
UNKNOWN_ORDER_ID = "999999999"
#: Columns of a stock file, in contract order.
STOCK_COLUMNS: tuple[str, ...] = ("sku", "quantity", "as_of")
#: The SKU of the ``unknown_sku`` fault row; the shop sells nothing by that name.
UNKNOWN_SKU = "NO-SUCH-SKU-404"
#: How far behind the ``stale_stock`` fault file's ``as_of`` lies (it arrives after a newer one).
STALE_STOCK_AGE = 3600
ORDER_FILE_SUFFIXES = (".csv", ".jsonl")

#: (outcome, weight) for an order seen for the first time.
OUTCOME_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("accepted", 70), ("shipped", 12), ("partial", 8), ("rejected", 5), ("cancelled", 5),
)
#: A paid order is fulfilled: the outcomes of :data:`OUTCOME_WEIGHTS` that ship or accept it.
PAID_OUTCOME_WEIGHTS: tuple[tuple[str, int], ...] = tuple(
    (o, w) for o, w in OUTCOME_WEIGHTS if o in ("accepted", "shipped", "partial"))
REJECT_NOTES: tuple[str, ...] = (
    "unknown SKU {sku}", "address undeliverable", "customer on credit hold",
)
CANCEL_NOTES: tuple[str, ...] = ("out of stock: {sku}", "discontinued: {sku}")
WHOLE_REFUND_NOTES: tuple[str, ...] = ("returned within 14 days", "parcel refused by the customer",
                                      "goodwill: delivery late")
LINE_REFUND_NOTES: tuple[str, ...] = ("returned: {sku}", "damaged in transit: {sku}")
#: Another currency with the same minor digits, for the ``currency_mismatch`` fault.
_OTHER_CURRENCY = {0: ("JPY", "KRW"), 2: ("EUR", "USD"), 3: ("KWD", "BHD"), 4: ("CLF", "UYW")}

#: Where events fall relative to the run's clock: acceptances first, shipments after.
_ACCEPT_WINDOW = (-1800, -1200)  # seconds relative to now
_SHIP_WINDOW = (-900, -60)

Clock = Callable[[], pendulum.DateTime]


def _utc_now() -> pendulum.DateTime:
    return pendulum.now("UTC")


# -- carriers ------------------------------------------------------------------------------------


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(n))


#: carrier -> (tracking number maker, tracking URL template). Number shapes look like the real
#: ones; the numbers themselves are made up.
CARRIERS: dict[str, tuple[Callable[[random.Random], str], str]] = {
    "DHL": (lambda r: "00340434" + _digits(r, 12),
            "https://www.dhl.com/de-en/home/tracking/tracking-parcel.html?tracking-id={n}"),
    "UPS": (lambda r: "1Z" + _letters(r, 3) + _digits(r, 3) + "68" + _digits(r, 8),
            "https://www.ups.com/track?tracknum={n}"),
    "DPD": (lambda r: "0" + _digits(r, 13), "https://tracking.dpd.de/status/en_US/parcel/{n}"),
    "PostNL": (lambda r: "3S" + _letters(r, 4) + _digits(r, 7),
               "https://jouw.postnl.nl/track-and-trace/{n}"),
    "GLS": (lambda r: _digits(r, 11), "https://gls-group.com/track/{n}"),
}


# -- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MoneyPolicy:
    """When the ERP books payments of orders awaiting one and how often it refunds shipped
    orders (see the module docstring). Shares are fractions in ``[0, 1]``; a delay is met
    when both its runs and its minutes have passed since the run that received (payments) or
    shipped (refunds) the order."""

    payment_share: float = 0.9
    payment_delay_runs: int = 1
    payment_delay_minutes: float = 0.0
    refund_share: float = 0.25
    line_refund_share: float = 0.5
    refund_delay_runs: int = 1
    refund_delay_minutes: float = 0.0

    def __post_init__(self) -> None:
        for name in ("payment_share", "refund_share", "line_refund_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within 0..1, not {getattr(self, name)!r}")
        for name in ("payment_delay_runs", "payment_delay_minutes", "refund_delay_runs",
                     "refund_delay_minutes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One line of a status file; every field is the cell's text."""

    order_id: str
    event: str
    occurred_at: str
    carrier: str = ""
    tracking_number: str = ""
    tracking_url: str = ""
    sku: str = ""
    quantity: str = ""
    note: str = ""
    amount: str = ""
    currency: str = ""
    reference: str = ""

    @property
    def has_money(self) -> bool:
        return bool(self.amount or self.currency or self.reference) or self.event in ("paid", "refunded")

    def row(self, money: bool = False) -> list[str]:
        return [getattr(self, c) for c in STATUS_COLUMNS + (MONEY_COLUMNS if money else ())]


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    quantity: int | None  # None: not a positive integer in the file
    line_total: str = ""  # the line after discounts, before tax, as the file writes it


@dataclass(frozen=True, slots=True)
class InOrder:
    """What the ERP reads of one order in an orders file."""

    order_id: str
    order_version: str
    order_status: str
    created_at: pendulum.DateTime | None
    lines: tuple[OrderLine, ...]
    currency: str = ""
    total: str = ""  # order_total as the file writes it


@dataclass(slots=True)
class FileSummary:
    """Per orders file: how many orders got which answer (order counts, not event lines)."""

    name: str
    orders: int = 0
    accepted: int = 0
    shipped: int = 0
    partial: int = 0
    rejected: int = 0
    cancelled: int = 0
    awaiting_payment: int = 0  # held until the payment is booked (with a MoneyPolicy)
    unanswered: int = 0  # cancelled by the shop, or a re-delivery that needs no answer
    error: str = ""  # set when the file could not be read (it is moved anyway)

    def describe(self, status_file: str | None) -> str:
        """The CLI's one line for this file."""
        if self.error:
            return f"could not read {self.name}: {self.error} (moved aside)"
        text = (f"answered {self.name}: {self.accepted} accepted, {self.shipped} shipped "
                f"({self.partial} partial), {self.rejected} rejected, {self.cancelled} cancelled")
        if self.awaiting_payment:
            text += f", {self.awaiting_payment} awaiting payment"
        if self.unanswered:
            text += f", {self.unanswered} without answer"
        return f"{text} -> {status_file or 'no status file'}"


@dataclass(slots=True)
class ErpReport:
    """What one :meth:`ErpSimulator.run_once` did.

    ``counts`` counts the good event lines by event; ``events`` are all lines written, in file
    order, fault lines included; ``fault_events`` are just the injected broken lines.
    """

    files_read: list[str] = field(default_factory=list)
    files_skipped: list[str] = field(default_factory=list)  # answered before a restart: moved only
    status_files: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    events: list[StatusEvent] = field(default_factory=list)
    fault_events: list[StatusEvent] = field(default_factory=list)
    files: list[FileSummary] = field(default_factory=list)
    #: The good ``paid`` and ``refunded`` lines of this run (also in ``events``).
    payments: list[StatusEvent] = field(default_factory=list)
    refunds: list[StatusEvent] = field(default_factory=list)
    #: Money fault modes that found no suitable order this run (their line is left out).
    faults_missing: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One human-readable line per orders file handled, and one for payments and refunds."""
        status = self.status_files[-1] if self.status_files else None
        out = [summary.describe(status) for summary in self.files]
        out += [f"moved {name} (answered before)" for name in self.files_skipped]
        if self.payments or self.refunds:
            by_line = sum(1 for e in self.refunds if e.sku)
            whole = len(self.refunds) - by_line
            out.append(f"booked {len(self.payments)} payment(s) of orders awaiting one, "
                       f"{len(self.refunds)} refund(s) of shipped orders ({whole} whole, {by_line} by line) "
                       f"-> {status or 'no status file'}")
        if self.faults_missing:
            out.append(f"no order for fault line(s) {', '.join(self.faults_missing)}")
        return out


# -- reading orders files ----------------------------------------------------------------------


def _parse_time(value: Any) -> pendulum.DateTime | None:
    try:
        parsed = pendulum.parse(str(value))
    except Exception:  # an ERP shrugs at a bad timestamp; only used to place event times
        return None
    return parsed.in_timezone("UTC") if isinstance(parsed, pendulum.DateTime) else None


def _quantity(value: Any) -> int | None:
    try:
        qty = int(str(value).strip())
    except ValueError:
        return None
    return qty if qty > 0 else None


def _make_order(head: Mapping[str, Any], lines: Iterable[Mapping[str, Any]]) -> InOrder:
    order_id = str(head.get("order_id") or "").strip()
    if not order_id:
        raise ValueError("an order without order_id")
    return InOrder(
        order_id=order_id,
        order_version=str(head.get("order_version") or ""),
        order_status=str(head.get("order_status") or "").strip().lower(),
        created_at=_parse_time(head.get("created_at")),
        lines=tuple(OrderLine(str(ln.get("sku") or "").strip(), _quantity(ln.get("quantity")),
                              str(ln.get("line_total") or "").strip())
                    for ln in lines),
        currency=str(head.get("currency") or "").strip().upper(),
        total=str(head.get("order_total") or "").strip(),
    )


def parse_orders_file(name: str, data: bytes) -> list[InOrder]:
    """Orders of a CSV (one row per line) or JSONL (one order per line) orders file.

    :raises ValueError: the file is not UTF-8, lacks the needed columns or is not JSON.
    """
    text = data.decode("utf-8-sig")
    if name.endswith(".jsonl"):
        orders = []
        for number, raw in enumerate(text.splitlines(), start=1):
            if raw.strip():
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {number} is not JSON: {exc}") from exc
                orders.append(_make_order(record, record.get("lines") or []))
        return orders
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"order_id", "order_version", "order_status", "sku", "quantity"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"missing columns {sorted(missing)}")
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in reader:
        grouped.setdefault(row["order_id"], []).append(row)  # keeps first-seen order
    return [_make_order(rows[0], rows) for rows in grouped.values()]


def render_status_file(events: Iterable[StatusEvent], *, bom: bool = False) -> bytes:
    """The status file's bytes: header and one line per event, RFC 4180, UTF-8. The money
    columns are written only when a line has money (files without stay as they always were)."""
    events = list(events)
    money = any(e.has_money for e in events)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(STATUS_COLUMNS + (MONEY_COLUMNS if money else ()))
    writer.writerows(event.row(money) for event in events)
    return ("\ufeff" if bom else "").encode("utf-8") + buffer.getvalue().encode("utf-8")


# -- the simulator -------------------------------------------------------------------------------


def _stamp(value: pendulum.DateTime) -> str:
    return value.in_timezone("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


class ErpSimulator:
    """Plays the backend (ERP) against the SFTP server of Airflow connection ``conn_id``.

    :param conn_id: Airflow connection id (e.g. from ``AIRFLOW_CONN_<ID>``), as for the export.
    :param inbound_dir: where the export drops orders files.
    :param outbound_dir: where status files are written.
    :param processed_dir: where orders files read are moved (the ERP's own folder).
    :param seed: decides the outcomes, with each order id.
    :param clock: the current time (aware); event times and file names derive from it.
    :param state_path: JSON file remembering answered files and order outcomes across restarts;
        ``None`` keeps the state in memory only (for tests).
    :param faults: broken lines to add to each status file: ``bom``, ``unknown_order``, ``malformed``;
        for stock files: ``unknown_sku`` (a row of a SKU the shop does not sell, in every stock
        file) and ``stale_stock`` (after each stock file, a second one with older ``as_of`` and
        other quantities, named so it arrives later: it must be skipped as stale); and the
        money faults of :data:`MONEY_FAULTS` (module docstring).
    :param stock_dir: where stock files are written.
    :param stock_skus: the SKUs the warehouse stocks (default: the physical products of
        ``sandbox.generator.CATALOGUE``).
    :param money: books payments and refunds as it says; ``None`` (the default) answers as the
        ERP always did, without either (an order awaiting payment is accepted at once).
    """

    def __init__(
        self,
        conn_id: str,
        *,
        inbound_dir: str = "inbound",
        outbound_dir: str = "outbound",
        processed_dir: str = "erp_processed",
        seed: int = 7,
        clock: Clock = _utc_now,
        state_path: str | Path | None = None,
        faults: Iterable[str] = (),
        stock_dir: str = "stock",
        stock_skus: Iterable[str] | None = None,
        money: MoneyPolicy | None = None,
    ) -> None:
        unknown = set(faults) - FAULTS
        if unknown:
            raise ValueError(f"unknown fault mode(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
        self.conn_id = conn_id
        self.inbound_dir = inbound_dir
        self.outbound_dir = outbound_dir
        self.processed_dir = processed_dir
        self.seed = seed
        self.clock = clock
        self.faults = frozenset(faults)
        self.stock_dir = stock_dir
        self.stock_skus = tuple(stock_skus) if stock_skus is not None else _catalogue_skus()
        self.money = money
        self.state_path = Path(state_path) if state_path is not None else None
        self._state = self._load_state()
        self._backend = SftpBackend(conn_id)

    # -- state -----------------------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"seq": 0, "files": {}, "orders": {}, "stock": {}, "stock_seq": 0, "runs": 0}
        if self.state_path is not None and self.state_path.exists():
            state.update(json.loads(self.state_path.read_text(encoding="utf-8")))
        return state

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp")
        tmp.write_text(json.dumps(self._state, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.state_path)  # a crash never leaves half a state file

    # -- one run ---------------------------------------------------------------------------------

    def run_once(self) -> ErpReport:
        """Answer every complete orders file in ``inbound_dir`` and book the payments and refunds
        that are due (with a :class:`MoneyPolicy`), all in one status file."""
        before = copy.deepcopy(self._state)
        try:
            return self._run()
        except BaseException:
            self._state = before  # nothing of a failed run counts as answered
            raise

    def _run(self) -> ErpReport:
        report = ErpReport()
        now = self.clock().in_timezone("UTC").replace(microsecond=0)
        self._state["runs"] = self._state.get("runs", 0) + 1
        with self._backend.session() as session:
            names = self._pending(session)
            events: list[StatusEvent] = []
            answered: dict[str, str] = {}
            for name in names:
                data = session.read_bytes(posixpath.join(self.inbound_dir, name))
                digest = hashlib.sha256(data).hexdigest()
                if self._state["files"].get(name) == digest:
                    report.files_skipped.append(name)
                    continue
                report.files_read.append(name)
                answered[name] = digest
                report.files.append(self._answer_file(name, data, now, events))
            if self.money is not None:
                events += self._money_events(now, report)
            self._write_status(session, events, now, report)
            self._state["files"].update(answered)
            self._save_state()  # the run counter moves on every run: delays count runs
            for name in names:
                self._move_processed(session, name)
        for line in report.lines():
            log.info("erp simulator %s: %s", self.conn_id, line)
        return report

    def _pending(self, session: SftpSession) -> list[str]:
        """Complete orders files in ``inbound_dir``: no dot files (so no uploads in progress)."""
        try:
            names = session.listdir(self.inbound_dir)
        except FileNotFoundError:
            return []
        return [n for n in names if not n.startswith(".") and n.endswith(ORDER_FILE_SUFFIXES)]

    def _answer_file(self, name: str, data: bytes, now: pendulum.DateTime,
                     events: list[StatusEvent]) -> FileSummary:
        summary = FileSummary(name)
        try:
            orders = parse_orders_file(name, data)
        except (UnicodeDecodeError, ValueError, csv.Error) as exc:
            summary.error = str(exc)
            return summary
        for order in orders:
            summary.orders += 1
            outcome, order_events = self._decide(order, now)
            events.extend(order_events)
            _count(summary, outcome)
        return summary

    def _write_status(self, session: SftpSession, events: list[StatusEvent], now: pendulum.DateTime,
                      report: ErpReport) -> None:
        if not events:
            return
        # An ERP books the money before it accepts (accepting an unpaid on-hold order would mark
        # it processing, and then the payment "already paid"), accepts before it ships, and
        # refunds last (stable otherwise).
        rank = {"paid": 0, "accepted": 1, "rejected": 2, "cancelled": 2, "shipped": 3, "refunded": 4}
        good = sorted(events, key=lambda e: rank[e.event])
        broken = self._fault_events(good, now)
        self._state["seq"] += 1
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        name = f"status_{stamp}_{self._state['seq']}.csv"
        while session.exists(posixpath.join(self.outbound_dir, name)):  # never overwrite an answer
            self._state["seq"] += 1
            name = f"status_{stamp}_{self._state['seq']}.csv"
        body = render_status_file(good + broken, bom="bom" in self.faults)
        session.upload_atomic(io.BytesIO(body), self.outbound_dir, name)
        report.status_files.append(name)
        report.events.extend(good + broken)
        report.fault_events.extend(broken)
        report.counts.update(e.event for e in good)
        report.payments = [e for e in good if e.event == "paid"]
        report.refunds = [e for e in good if e.event == "refunded"]
        report.faults_missing = sorted(m for m in self.faults & MONEY_FAULTS
                                       if not any(e.note == _fault_note(m) for e in broken))

    def _move_processed(self, session: SftpSession, name: str) -> None:
        session.makedirs(self.processed_dir)
        target = name
        stem, dot, ext = name.rpartition(".")
        n = 0
        while session.exists(posixpath.join(self.processed_dir, target)):
            n += 1
            target = f"{stem}-{n}{dot}{ext}"
        session.move(posixpath.join(self.inbound_dir, name), posixpath.join(self.processed_dir, target))

    # -- decisions -------------------------------------------------------------------------------

    def _decide(self, order: InOrder, now: pendulum.DateTime) -> tuple[str, list[StatusEvent]]:
        """The outcome for ``order`` and its events; updates the order's remembered state."""
        seen = self._state["orders"].get(order.order_id)
        if seen is not None and order.order_version in seen["versions"]:
            return "duplicate", []
        waits = self.money is not None and order.order_status in AWAITING_PAYMENT
        if order.order_status in NO_EVENT_STATUSES:
            outcome, events = "shop_cancelled", []
            if seen is not None and seen["outcome"] != "awaiting_payment":
                outcome = seen["outcome"]  # a cancellation does not undo what the ERP already did
        elif waits and (seen is None or seen["outcome"] == "awaiting_payment"):
            outcome, events = "awaiting_payment", []  # no acceptance before the money is there
        elif seen is None or seen["outcome"] in ("rejected", "shop_cancelled", "awaiting_payment"):
            # a new order; or a new version of one the ERP rejected (the shop may have fixed it)
            # or one paid in the shop meanwhile
            first = seen is None or seen["outcome"] == "awaiting_payment"
            key = f"{self.seed}:{order.order_id}" + ("" if first else f":{order.order_version}")
            outcome, events = self._fresh_decision(order, random.Random(key), now)
        else:
            # Accepted, shipped or cancelled by the ERP already: a new version changes nothing
            # (no second acceptance, no duplicate shipment).
            outcome, events = seen["outcome"], []
        entry = {**(seen or {}), "versions": [*(seen["versions"] if seen else []), order.order_version],
                 "outcome": outcome, "status": order.order_status}
        if order.currency and order.total:
            entry.update(currency=order.currency, total=order.total,
                         lines=[[ln.sku, ln.quantity, ln.line_total] for ln in order.lines])
        entry.setdefault("first_status", order.order_status)
        entry.setdefault("received_run", self._state["runs"])
        entry.setdefault("received_at", _stamp(now))
        self._note_shipped(entry, outcome, events, now)
        self._state["orders"][order.order_id] = entry
        if outcome == "awaiting_payment":
            return outcome, []
        return (outcome if events else "unanswered"), events

    def _note_shipped(self, entry: dict[str, Any], outcome: str, events: list[StatusEvent],
                      now: pendulum.DateTime) -> None:
        if outcome in ("shipped", "partial") and any(e.event == "shipped" for e in events):
            entry.update(shipped_run=self._state["runs"], shipped_at=_stamp(now))

    def _fresh_decision(self, order: InOrder, rng: random.Random, now: pendulum.DateTime, *,
                        paid: bool = False) -> tuple[str, list[StatusEvent]]:
        outcomes, weights = zip(*(PAID_OUTCOME_WEIGHTS if paid else OUTCOME_WEIGHTS), strict=True)
        outcome = rng.choices(outcomes, weights=weights)[0]
        floor = min(now, order.created_at) if order.created_at else now.add(seconds=_ACCEPT_WINDOW[0])
        decided_at = max(now.add(seconds=rng.randint(*_ACCEPT_WINDOW)), floor)
        skus = [line.sku for line in order.lines if line.sku] or ["?"]
        if outcome in ("rejected", "cancelled"):
            notes = REJECT_NOTES if outcome == "rejected" else CANCEL_NOTES
            note = rng.choice(notes).format(sku=rng.choice(skus))
            return outcome, [StatusEvent(order.order_id, outcome, _stamp(decided_at), note=note)]
        events = [StatusEvent(order.order_id, "accepted", _stamp(decided_at))]
        if outcome == "accepted":
            return outcome, events
        shipped_at = max(now.add(seconds=rng.randint(*_SHIP_WINDOW)), decided_at)
        parts = _split_lines(order, rng) if outcome == "partial" else None
        if parts is None:  # whole order in one parcel
            return "shipped", [*events, _shipment(order.order_id, rng, shipped_at)]
        for offset, parcel in enumerate(parts):
            parcel_at = min(shipped_at.add(seconds=30 * offset), now)
            template = _shipment(order.order_id, rng, parcel_at)
            # one line per sku and parcel: two identical lines would read as one event repeated
            per_sku: dict[str, int] = {}
            for sku, qty in parcel:
                per_sku[sku] = per_sku.get(sku, 0) + qty
            events += [dataclasses.replace(template, sku=sku, quantity=str(n)) for sku, n in per_sku.items()]
        return "partial", events

    # -- payments and refunds ----------------------------------------------------------------------

    def _money_events(self, now: pendulum.DateTime, report: ErpReport) -> list[StatusEvent]:
        """The payments and refunds due this run (see the module docstring); remembers them."""
        assert self.money is not None
        policy, run, events = self.money, self._state["runs"], []
        for order_id in sorted(self._state["orders"], key=_id_key):
            entry = self._state["orders"][order_id]
            if not entry.get("total") or entry["status"] in NO_EVENT_STATUSES:
                continue
            if (entry["outcome"] == "awaiting_payment" and entry["status"] in AWAITING_PAYMENT and _due(
                    entry, "received", run, now, policy.payment_delay_runs, policy.payment_delay_minutes)):
                rng = random.Random(f"{self.seed}:{order_id}:payment")
                if rng.random() < policy.payment_share:
                    events += self._book_payment(order_id, entry, rng, now)
            elif (entry["outcome"] in ("shipped", "partial") and "shipped_run" in entry
                  and "refund" not in entry and entry["shipped_run"] < run
                  and _due(entry, "shipped", run, now, policy.refund_delay_runs,
                           policy.refund_delay_minutes)):
                events += self._book_refund(order_id, entry, now)
        return events

    def _book_payment(self, order_id: str, entry: dict[str, Any], rng: random.Random,
                      now: pendulum.DateTime) -> list[StatusEvent]:
        """``paid`` (the bank statement line that names the order), then the order's fulfilment."""
        reference = f"BANK-{rng.randrange(10**10):010d}"
        order = _order_of(order_id, entry)
        outcome, fulfilment = self._fresh_decision(
            order, random.Random(f"{self.seed}:{order_id}"), now, paid=True)
        paid_at = fulfilment[0].occurred_at  # booked, then accepted in the same second
        entry.update(outcome=outcome, paid=reference, paid_run=self._state["runs"])
        self._note_shipped(entry, outcome, fulfilment, now)
        paid = StatusEvent(order_id, "paid", paid_at, note="bank transfer received",
                           amount=entry["total"], currency=entry["currency"], reference=reference)
        return [paid, *fulfilment]

    def _book_refund(self, order_id: str, entry: dict[str, Any], now: pendulum.DateTime) -> list[StatusEvent]:
        """A whole or one-line ``refunded`` for a ``refund_share`` of shipped orders; decided
        once per order (``entry['refund']`` is the credit note, or ``''`` for none)."""
        assert self.money is not None
        rng = random.Random(f"{self.seed}:{order_id}:refund")
        entry["refund"] = ""
        if rng.random() >= self.money.refund_share:
            return []
        currency = entry["currency"]
        remaining = _decimal(entry["total"])
        if remaining is None or remaining <= 0 or not is_valid_currency(currency):
            return []
        reference = f"CN-{rng.randrange(10**7):07d}"
        event = StatusEvent(order_id, "refunded", _stamp(now), currency=currency, reference=reference)
        lines = [(sku, qty, _decimal(total)) for sku, qty, total in entry.get("lines", [])
                 if sku and qty and (_decimal(total) or 0) > 0]
        if lines and rng.random() < self.money.line_refund_share:
            sku, qty, line_total = rng.choice(lines)
            units = rng.randint(1, qty)
            amount = line_total if units == qty else line_total * units / qty
            event = dataclasses.replace(event, sku=sku, quantity=str(units),
                                        amount=format_money(amount, currency),
                                        note=rng.choice(LINE_REFUND_NOTES).format(sku=sku))
        else:
            event = dataclasses.replace(event, amount=format_money(remaining, currency),
                                        note=rng.choice(WHOLE_REFUND_NOTES))
        entry["refund"] = reference
        entry["refunded"] = event.amount
        return [event]

    # -- stock files -----------------------------------------------------------------------------

    def write_stock(self, kind: str = "snapshot", *, changes: int = 3) -> StockReport:
        """Write one stock file into ``stock_dir`` (uploaded as ``.part``, then renamed).

        ``snapshot``: every stocked SKU's level (the first snapshot invents levels, later ones
        move each level a little, as sales and receipts would); ``update``: ``changes`` SKUs
        only. Levels are absolute, ``as_of`` is the clock's now. Deterministic for a seed.
        With the ``stale_stock`` fault a second, older file follows (see the class docstring).
        """
        if kind not in ("snapshot", "update"):
            raise ValueError(f"stock file kind {kind!r} is not snapshot or update")
        now = self.clock().in_timezone("UTC").replace(microsecond=0)
        levels: dict[str, int] = self._state.setdefault("stock", {})
        rng = random.Random(f"{self.seed}:stock:{self._state.get('stock_seq', 0)}")
        if kind == "snapshot" or not levels:
            chosen = list(self.stock_skus)
        else:
            chosen = rng.sample(list(self.stock_skus), min(changes, len(self.stock_skus)))
        rows = []
        for sku in chosen:
            before = levels.get(sku)
            level = rng.randint(0, 60) if before is None else max(0, before + rng.randint(-4, 6))
            if kind == "update" and level == before:
                level += 1  # an update reports a change
            levels[sku] = level
            rows.append((sku, level))
        report = StockReport()
        with self._backend.session() as session:
            extra = [(UNKNOWN_SKU, 5)] if "unknown_sku" in self.faults else []
            report.files.append(self._upload_stock(session, kind, rows + extra, now))
            report.rows.extend(rows + extra)
            if "stale_stock" in self.faults:
                older = [(sku, level + 7) for sku, level in rows]
                report.stale_files.append(self._upload_stock(
                    session, "stale", older, now.subtract(seconds=STALE_STOCK_AGE)))
        self._save_state()
        return report

    def _upload_stock(self, session: SftpSession, kind: str, rows: list[tuple[str, int]],
                      as_of: pendulum.DateTime) -> str:
        self._state["stock_seq"] = self._state.get("stock_seq", 0) + 1
        stamp = self.clock().in_timezone("UTC").strftime("%Y%m%dT%H%M%SZ")
        name = f"stock_{stamp}_{self._state['stock_seq']:04d}_{kind}.csv"
        session.upload_atomic(io.BytesIO(render_stock_file(rows, as_of)), self.stock_dir, name)
        return name

    # -- faults ----------------------------------------------------------------------------------

    def _fault_events(self, good: list[StatusEvent], now: pendulum.DateTime) -> list[StatusEvent]:
        """The broken lines of the configured fault modes (added after the good lines)."""
        out: list[StatusEvent] = []
        at = _stamp(now)
        for mode in sorted(self.faults & MONEY_FAULTS):
            line = self._money_fault(mode, good, at)
            if line is not None:
                out.append(line)
        if "unknown_order" in self.faults:
            out.append(StatusEvent(UNKNOWN_ORDER_ID, "accepted", at))
        if "malformed" in self.faults:
            # Real, accepted order ids, so each line has exactly one defect.
            accepted = [e.order_id for e in good if e.event == "accepted"] or [good[0].order_id]
            shipped = next((e for e in good if e.event == "shipped" and e.sku), None)
            oid, sku = (shipped.order_id, shipped.sku) if shipped else (accepted[0], "SKU-1")
            out += [
                StatusEvent(accepted[0], "dispatched", at),
                StatusEvent(oid, "shipped", at, "DHL", "003404340000000001",
                            CARRIERS["DHL"][1].format(n="003404340000000001"), sku, "two"),
                StatusEvent(accepted[-1], "accepted", "yesterday"),
            ]
        return out

    def _money_fault(self, mode: str, good: list[StatusEvent], at: str) -> StatusEvent | None:
        """One broken money line of fault ``mode`` for a suitable order the ERP knows, or ``None``.

        The targets are chosen so that the line has exactly the one defect its mode names when
        the status sync reaches it: the refunds go to orders that are paid and live on the
        storefront (paid by the shop's gateway, or by this file's or an earlier ``paid`` line)."""
        oid = self._fault_target(mode, good)
        if oid is None:
            return None
        entry = self._state["orders"][oid]
        currency, total = entry["currency"], _decimal(entry["total"]) or Decimal(0)
        digits = MINOR_UNITS.get(currency, 2)
        unit = Decimal(1).scaleb(-digits)
        one = f"{unit:f}"
        line = StatusEvent(oid, "refunded", at, note=_fault_note(mode), amount=one, currency=currency,
                           reference=f"CN-FAULT-{mode}-{oid}")
        if mode == "paid_already_paid":
            return dataclasses.replace(line, event="paid", amount=entry["total"],
                                       reference=f"BANK-FAULT-{oid}")
        left = total - (_decimal(entry.get("refunded", "")) or Decimal(0))
        changes = {
            "amount_decimals": {"amount": "1." + "0" * digits + "1"},
            "amount_zero": {"amount": f"{Decimal(0).scaleb(-digits):f}"},
            "amount_negative": {"amount": f"-{one}"},
            "refund_above_remaining": {"amount": f"{left + unit:f}"},
            "currency_mismatch": {"currency": next(
                c for c in _OTHER_CURRENCY.get(digits, ("EUR", "USD")) if c != currency)},
            "missing_reference": {"reference": ""},
        }.get(mode, {})  # refund_cancelled: a plain refund of one minor unit
        return dataclasses.replace(line, **changes)

    def _fault_target(self, mode: str, good: list[StatusEvent]) -> str | None:
        """The lowest order id fit for the money fault ``mode`` (see :meth:`_money_fault`)."""
        orders = self._state["orders"]
        paid_here = {e.order_id for e in good if e.event == "paid"}
        cancelled_here = {e.order_id for e in good if e.event == "cancelled"}

        def fits(oid: str) -> bool:
            e = orders[oid]
            if not e.get("total"):
                return False
            if mode == "refund_cancelled":  # by the ERP: a processing order it cancelled
                return e["outcome"] == "cancelled" or oid in cancelled_here
            if e["status"] in NO_EVENT_STATUSES or e["outcome"] in ("cancelled", "shop_cancelled"):
                return False
            if mode == "paid_already_paid":
                return e["first_status"] in PAID_BY_SHOP
            return e["outcome"] in ("accepted", "shipped", "partial") and (
                e["first_status"] in PAID_BY_SHOP or bool(e.get("paid")) or oid in paid_here)

        pool = [oid for oid in orders if fits(oid)]
        if mode == "refund_cancelled":  # cancelled by the shop itself is surest
            by_shop = [o for o in orders if orders[o].get("total") and orders[o]["status"] == "cancelled"]
            pool = by_shop or pool
        return min(pool, key=_id_key) if pool else None


@dataclass(slots=True)
class StockReport:
    """What one :meth:`ErpSimulator.write_stock` wrote: file names and ``(sku, quantity)`` rows
    of the current-level file (fault rows included); ``stale_files`` the late, older ones."""

    files: list[str] = field(default_factory=list)
    rows: list[tuple[str, int]] = field(default_factory=list)
    stale_files: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"stock file {name}: {len(self.rows)} skus" for name in self.files]
        return out + [f"stale stock file {name} (older as_of, arrives late)" for name in self.stale_files]


def render_stock_file(rows: Iterable[tuple[str, int]], as_of: pendulum.DateTime) -> bytes:
    """A stock file's bytes: header and one ``sku,quantity,as_of`` line per row, RFC 4180, UTF-8."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(STOCK_COLUMNS)
    writer.writerows((sku, quantity, _stamp(as_of)) for sku, quantity in rows)
    return buffer.getvalue().encode("utf-8")


def _catalogue_skus() -> tuple[str, ...]:
    from sandbox.generator import CATALOGUE

    return tuple(p.sku for p in CATALOGUE if not p.virtual)


def _id_key(order_id: str) -> tuple[int, str]:
    """Orders by numeric id (then text): the ERP's payments and refunds go out in id order."""
    return (int(order_id), order_id) if order_id.isdigit() else (2**63, order_id)


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def _due(entry: Mapping[str, Any], since: str, run: int, now: pendulum.DateTime, runs: int,
         minutes: float) -> bool:
    """Whether ``runs`` runs and ``minutes`` have passed since the order's ``since`` run."""
    start = _parse_time(entry.get(f"{since}_at"))
    return (run - entry.get(f"{since}_run", run) >= runs
            and (start is None or (now - start).total_seconds() >= minutes * 60))


def _order_of(order_id: str, entry: Mapping[str, Any]) -> InOrder:
    """The order as the ERP remembers it (for the decision once it is paid)."""
    lines = tuple(OrderLine(sku, qty, total) for sku, qty, total in entry.get("lines", []))
    # received_at as the floor of its event times: nothing is booked before the ERP had the order
    return InOrder(order_id, entry["versions"][-1], entry["status"], _parse_time(entry.get("received_at")),
                   lines, entry.get("currency", ""), entry.get("total", ""))


def _fault_note(mode: str) -> str:
    """The ``note`` of a money fault line: names the fault, so a reader of the file sees it."""
    return f"fault {mode}"


def _count(summary: FileSummary, outcome: str) -> None:
    if outcome in ("shipped", "partial"):
        summary.accepted += 1
        summary.shipped += 1
        summary.partial += outcome == "partial"
    elif outcome in ("accepted", "rejected", "cancelled", "awaiting_payment"):
        setattr(summary, outcome, getattr(summary, outcome) + 1)
    else:
        summary.unanswered += 1


def _shipment(order_id: str, rng: random.Random, at: pendulum.DateTime) -> StatusEvent:
    """A whole-order ``shipped`` event in one new parcel (the caller adds sku/quantity for a part)."""
    carrier = rng.choice(sorted(CARRIERS))
    make_number, url = CARRIERS[carrier]
    number = make_number(rng)
    return StatusEvent(order_id, "shipped", _stamp(at), carrier, number, url.format(n=number))


def _split_lines(order: InOrder, rng: random.Random) -> list[list[tuple[str, int]]] | None:
    """The order's units in two or more parcels of ``(sku, quantity)``; ``None`` if it cannot be split.

    One item per line item, and sometimes a line's quantity split across two parcels. A line
    without sku or with an unusable quantity cannot be named in a part shipment.
    """
    lines = order.lines
    if not lines or any(not ln.sku or ln.quantity is None for ln in lines):
        return None
    first: list[tuple[str, int]] = []
    second: list[tuple[str, int]] = []
    for ln in lines:
        qty = ln.quantity or 0
        if qty >= 2 and (len(lines) == 1 or rng.random() < 0.4):
            part = rng.randint(1, qty - 1)  # a split line: one part in each parcel
            first.append((ln.sku, part))
            second.append((ln.sku, qty - part))
        else:
            (first if rng.random() < 0.5 else second).append((ln.sku, qty))
    if not first or not second:
        return None  # everything fell in one parcel: ship it whole instead
    return [first, second]


# -- CLI -----------------------------------------------------------------------------------------


def _parse_faults(value: str) -> frozenset[str]:
    faults = frozenset(f.strip() for f in value.split(",") if f.strip())
    unknown = faults - FAULTS
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
    return faults


def main(argv: list[str] | None = None) -> int:
    """Poll forever (or once with ``--once``), printing one line per orders file handled."""
    parser = argparse.ArgumentParser(description="Sandbox ERP: answers orders files with status files.")
    parser.add_argument("--conn-id", required=True, help="Airflow connection id of the SFTP server")
    parser.add_argument("--conn-file", type=Path,
                        help="connection JSON (as sandbox.sftp_server --conn-file writes) to use for "
                             "--conn-id via AIRFLOW_CONN_<ID>")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--once", action="store_true", help="one run, then exit")
    parser.add_argument("--faults", type=_parse_faults, default=frozenset(),
                        help=f"comma-separated: {','.join(sorted(FAULTS))}")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--inbound-dir", default="inbound")
    parser.add_argument("--outbound-dir", default="outbound")
    parser.add_argument("--processed-dir", default="erp_processed")
    parser.add_argument("--state", type=Path, help="state JSON (default .sandbox/erp_state_<conn-id>.json)")
    parser.add_argument("--stock", choices=("snapshot", "update"),
                        help="also write one stock file per poll into --stock-dir")
    parser.add_argument("--stock-dir", default="stock")
    defaults = MoneyPolicy()
    parser.add_argument("--no-money", action="store_true",
                        help="book no payments and refunds (orders awaiting payment are accepted at once)")
    parser.add_argument("--payment-share", type=float, default=defaults.payment_share,
                        help="share of orders awaiting payment whose payment the ERP books")
    parser.add_argument("--payment-delay-runs", type=int, default=defaults.payment_delay_runs)
    parser.add_argument("--payment-delay-minutes", type=float, default=defaults.payment_delay_minutes)
    parser.add_argument("--refund-share", type=float, default=defaults.refund_share,
                        help="share of shipped orders the ERP refunds")
    parser.add_argument("--line-refund-share", type=float, default=defaults.line_refund_share,
                        help="share of the refunds that name one line (the rest refund the whole order)")
    parser.add_argument("--refund-delay-runs", type=int, default=defaults.refund_delay_runs)
    parser.add_argument("--refund-delay-minutes", type=float, default=defaults.refund_delay_minutes)
    args = parser.parse_args(argv)
    try:
        money = None if args.no_money else MoneyPolicy(
            payment_share=args.payment_share, payment_delay_runs=args.payment_delay_runs,
            payment_delay_minutes=args.payment_delay_minutes, refund_share=args.refund_share,
            line_refund_share=args.line_refund_share, refund_delay_runs=args.refund_delay_runs,
            refund_delay_minutes=args.refund_delay_minutes)
    except ValueError as exc:
        parser.error(str(exc))
    # Airflow sets up logging when the hook module is first imported; quiet the per-poll
    # connect/upload chatter afterwards, so the output is the one line per file handled.
    import airflow.providers.sftp.hooks.sftp  # noqa: F401

    for name in ("paramiko", "order_integration", __name__):
        logging.getLogger(name).setLevel(logging.WARNING)

    if args.conn_file is not None:
        os.environ[f"AIRFLOW_CONN_{args.conn_id.upper()}"] = args.conn_file.read_text(encoding="utf-8")
    simulator = ErpSimulator(
        args.conn_id, inbound_dir=args.inbound_dir, outbound_dir=args.outbound_dir,
        processed_dir=args.processed_dir, seed=args.seed, faults=args.faults, stock_dir=args.stock_dir,
        state_path=args.state or Path(".sandbox") / f"erp_state_{args.conn_id}.json", money=money,
    )
    try:
        while True:
            try:
                report = simulator.run_once()
            except BackendError as exc:  # server restarting or unreachable: try again next poll
                if args.once:
                    print(f"erp simulator: {exc}", file=sys.stderr)
                    return 1
                log.warning("erp simulator: %s; retrying in %.0f s", exc, args.interval)
                report = ErpReport()
            for line in report.lines():
                print(line, flush=True)
            if args.stock:
                for line in simulator.write_stock(args.stock).lines():
                    print(line, flush=True)
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0

if __name__ == "__main__":
    sys.exit(main())
