"""Apply the backend's status files to the storefront, exactly once per event.

Flow of one file (:func:`sync_file`): read ``outbound_dir/NAME`` → parse and validate
(:mod:`order_integration.backend.status_files`) → apply the good lines (:func:`apply_file`)
→ record every line in the ledger's ``status_events`` → move the file to
``outbound_dir/archive/`` when every line was applied (or was a duplicate), else to
``outbound_dir/error/`` next to ``NAME.errors.json`` (line number, order, event, reason of
each line that was not applied). Nothing there is overwritten: a taken name gets ``-1``,
``-2``… before its extension. A transient storefront failure (after the client's retries)
or a refused login raises instead and leaves the file in place for the next run; what was
applied until then is recorded, so the next run does not repeat it.

Deciding
--------
What an event does to an order is the platform's rule (its :class:`StatusApplier`'s
``decide``; WooCommerce's table is in :mod:`order_integration.storefronts.woocommerce_status`):
the status it moves the order to, whether its note is for the customer, or why it is refused
(outcome ``refused: <reason>``, the line goes to ``errors.json``). What is the same on every
platform is decided here: unknown orders (404, or an id that is not an order id:
:mod:`order_integration.ids`) are ``error: order not found``; a partial shipment of a SKU the
order does not have, or of more units than ordered minus those already shipped, is refused;
a tracking number already used for another order is refused.

Money (``paid``, ``refunded``) is checked here too, on the order's money as the storefront
shows it (:class:`~order_integration.storefronts.base.Payment`): a ``currency`` other than the
order's, a ``paid`` ``amount`` other than the order's total, a refund above what remains
refundable (total minus the refunds so far, earlier lines of the file included), a line
refund of a SKU the order lacks or of more units than remain are refused. A storefront that
does not apply money events (no ``money_events`` on its applier) gets them refused, never
half-applied. An event the platform finds already on the order (its ``reference`` on the
payment or on a refund) is ``recovered`` before any of these rules: the refund it made counts
in "refunded so far" and must not refuse itself.

Partial shipments are summed per (order, SKU) from the ledger's applied ``shipped`` rows
(``quantity`` is per event, not a running total) and compared with the order's lines
(quantities of lines sharing a SKU add up); the platform learns whether the order is fully
shipped once the event is. An order with a line that has no SKU can only be completed by a
whole-order ``shipped`` event.

Exactly once
------------
* An event whose ``event_key`` (a digest of its content, not of its file or line) is already
  ``applied`` for the store is ``skipped_duplicate`` without any storefront call — the same
  file dropped again, under any name, changes nothing. A repeat inside one file is skipped too.
* Before writing, the orders' current state is read (``read_orders``): a status an order
  already has is not set again.
* Note texts are deterministic (they contain the event's time), so the platform can answer
  whether an event is already on the order (WooCommerce: the note is there; the note is
  written first, the status last, so a re-run still sees the old status and completes the
  event). This covers a crash between a storefront write and its ledger row.

Batches
-------
Events are applied in waves: wave *k* holds the *k*-th applicable event of each order, so
several events of one order keep their file order while different orders go together; the
platform applies a wave as it can best (WooCommerce: the notes, then ``POST /orders/batch``
from ``batch_threshold`` (10) status changes, else one ``PUT`` each). A failed write marks
that event ``error: …`` and every later event of the same order in the file (they were
decided on the state the failed one would have left).
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pendulum

from order_integration.backend.sftp import FileTooLarge
from order_integration.backend.status_files import (
    MONEY_EVENTS,
    LineError,
    ParsedFile,
    StatusEvent,
    list_status_files,
    parse_status_file,
    unique_name,
)
from order_integration.currency import format_money, is_valid_currency, to_minor
from order_integration.exceptions import InvariantViolation
from order_integration.failpoints import failpoint
from order_integration.ids import parse_order_id
from order_integration.storefronts.base import OrderNotFound, OrderState, StatusApplier, StatusChange

if TYPE_CHECKING:
    from order_integration.backend.sftp import SftpSession
    from order_integration.config import StoreConfig
    from order_integration.ledger import StatusEvents

log = logging.getLogger(__name__)

ARCHIVE_DIR = "archive"
ERROR_DIR = "error"
ERRORS_SUFFIX = ".errors.json"
#: Longest file name in bytes the backend's file system takes (NAME_MAX of Linux and most others).
NAME_MAX = 255
#: Status changes in one wave from which the batch endpoint is used instead of PUTs.
BATCH_THRESHOLD = 10

APPLIED = "applied"
SKIPPED_DUPLICATE = "skipped_duplicate"




def refused(reason: str) -> str:
    return f"refused: {reason}"


def error(reason: str) -> str:
    return f"error: {reason}"


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What became of one event: ``outcome`` is ``applied``, ``skipped_duplicate``,
    ``refused: <reason>`` or ``error: <reason>``.

    ``new_status`` is the status this event set on the storefront (``None``: the status was
    left alone); ``note`` the note text it put on the order (posted now or found there)."""

    event: StatusEvent
    outcome: str
    new_status: str | None = None
    note: str | None = None

    @property
    def kind(self) -> str:
        """``applied``, ``skipped_duplicate``, ``refused`` or ``error``."""
        return self.outcome.split(":", 1)[0]

    @property
    def failed(self) -> bool:
        """Refused or in error: the line belongs in ``errors.json``."""
        return self.kind in ("refused", "error")

    def ledger_row(self) -> dict[str, Any]:
        e = self.event
        return {
            "line_number": e.line_number, "order_id": e.order_id[:64], "event": e.event,
            "outcome": self.outcome, "event_key": e.event_key, "sku": e.sku, "quantity": e.quantity,
            "new_status": self.new_status, "note": self.note, "occurred_at": e.occurred_at,
            "tracking_number": e.tracking_number or None,
        }


@dataclass(frozen=True, slots=True)
class FileResult:
    """One status file's fate: where it went and what each line did."""

    name: str
    moved_to: str
    errors_file: str | None
    outcomes: tuple[EventOutcome, ...]
    invalid_lines: tuple[LineError, ...]

    @property
    def ok(self) -> bool:
        return self.errors_file is None

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(o.kind for o in self.outcomes)
        return {
            "applied": counts["applied"], "skipped_duplicate": counts["skipped_duplicate"],
            "refused": counts["refused"], "error": counts["error"], "invalid": len(self.invalid_lines),
        }


# --------------------------------------------------------------------------------------------
# deciding
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Step:
    """An event decided to be applicable, with what the platform made of it."""

    index: int  # position in the file's events
    change: StatusChange
    outcome: EventOutcome | None = None


def _when(event: StatusEvent) -> str:
    return event.occurred_at.in_timezone("UTC").format("YYYY-MM-DD HH:mm") + " UTC"


def _tracking(event: StatusEvent) -> str:
    text = ""
    if event.tracking_number:
        text += f" Tracking number: {event.tracking_number}."
    if event.tracking_url:
        text += f" Track your parcel: {event.tracking_url}"
    return text


def _money(amount: Decimal | None, currency: str) -> str:
    if amount is None:
        return ""
    return f"{format_money(amount, currency) if is_valid_currency(currency) else amount} {currency}"


def _units(event: StatusEvent, order_lines: dict[str, tuple[int, str]] | None) -> str:
    name = (order_lines or {}).get(event.sku or "", (0, event.sku))[1]
    return f"{event.quantity} × {name} ({event.sku})" if name != event.sku else f"{event.quantity} × {name}"


def _money_note(event: StatusEvent, when: str, extra: str,
                order_lines: dict[str, tuple[int, str]] | None) -> str:
    if event.event == "paid":
        amount = f" of {_money(event.amount, event.currency)}" if event.amount is not None else ""
        return f"Payment{amount} booked by the backend on {when} (reference {event.reference}).{extra}"
    what = f" for {_units(event, order_lines)}" if event.sku is not None else ""
    return (f"Refund of {_money(event.amount, event.currency)}{what} booked by the backend on {when} "
            f"(reference {event.reference}); no money was moved through the payment gateway.{extra}")


def note_text(event: StatusEvent, order_lines: dict[str, tuple[int, str]] | None = None) -> str:
    """The note an event puts on the order. Deterministic (same event, same text), so a note
    already on the order is recognised. Shipment notes go to the customer and never carry the
    backend's free-text ``note`` (it may be internal); the others are private."""
    when = _when(event)
    extra = f" {event.note}" if event.note else ""
    if event.event in MONEY_EVENTS:
        return _money_note(event, when, extra, order_lines)
    if event.event == "accepted":
        return f"Accepted by the backend on {when}.{extra}"
    if event.event == "cancelled":
        return f"Cancelled by the backend on {when}.{extra}"
    if event.event == "rejected":
        return f"Rejected by the backend on {when}: {event.note}"
    via = f" with {event.carrier}" if event.carrier else ""
    if event.sku is None:
        return f"Your order was shipped on {when}{via}.{_tracking(event)}"
    return f"Part of your order was shipped on {when}{via}: {_units(event, order_lines)}.{_tracking(event)}"


def _shipment(event: StatusEvent, order: OrderState, shipped: dict[str, int]) -> str | bool:
    """For a partial shipment: why it cannot be (a SKU the order lacks, more units than ordered
    minus those shipped), else whether every line is fully shipped once it is. A whole-order
    shipment ships everything."""
    if event.sku is None or event.quantity is None:
        return True
    if event.sku not in order.lines:
        return f"sku {event.sku!r} is not in the order (skus: {', '.join(sorted(order.lines)) or 'none'})"
    ordered = order.lines[event.sku][0]
    before = shipped.get(event.sku, 0)
    if before + event.quantity > ordered:
        return (f"over-shipment: sku {event.sku!r} ordered {ordered}, already shipped {before}, "
                f"this event ships {event.quantity}")
    after = {**shipped, event.sku: before + event.quantity}
    return bool(order.lines) and not order.has_line_without_sku and all(
        after.get(sku, 0) >= units for sku, (units, _name) in order.lines.items()
    )


def money_refusal(event: StatusEvent, order: OrderState) -> str | None:
    """Why a ``paid``/``refunded`` event cannot be applied to ``order``'s money as the
    storefront shows it (see the module docstring), or ``None``."""
    payment = order.payment
    if payment is None:
        return "the storefront did not say the order's total and payments"
    if event.currency and event.currency != payment.currency:
        return f"currency {event.currency} differs from the order's currency {payment.currency or '(none)'}"
    if event.amount is None:
        return None  # a paid line without amount (the parser wants one for refunded)
    currency = payment.currency
    if payment.total is None or not is_valid_currency(currency):
        return "the order's total is unknown on the storefront"
    if event.event == "paid":
        if to_minor(event.amount, currency) != to_minor(payment.total, currency):
            return (f"amount {_money(event.amount, currency)} differs from the order's total "
                    f"{_money(payment.total, currency)}")
        return None
    if to_minor(event.amount, currency) > to_minor(payment.refundable, currency):
        return (f"refund of {_money(event.amount, currency)} exceeds what remains refundable: "
                f"{_money(payment.refundable, currency)} (total {_money(payment.total, currency)}, "
                f"refunded so far {_money(payment.refunded, currency)})")
    if event.sku is not None and event.quantity is not None:
        if event.sku not in order.lines:
            return f"sku {event.sku!r} is not in the order (skus: {', '.join(sorted(order.lines)) or 'none'})"
        ordered, before = order.lines[event.sku][0], payment.refunded_units.get(event.sku, 0)
        if before + event.quantity > ordered:
            return (f"over-refund: sku {event.sku!r} ordered {ordered}, already refunded {before}, "
                    f"this event refunds {event.quantity}")
    return None


def _book(event: StatusEvent, order: OrderState) -> None:
    """Later events of the file see this payment or refund as made."""
    payment = order.payment
    if payment is None:
        return
    payment.references.add(event.reference)
    if event.event == "paid":
        payment.paid, payment.transaction_id = True, event.reference
    elif event.amount is not None:
        payment.refunded += event.amount
        if event.sku is not None and event.quantity is not None:
            payment.refunded_units[event.sku] = payment.refunded_units.get(event.sku, 0) + event.quantity


# --------------------------------------------------------------------------------------------
# applying
# --------------------------------------------------------------------------------------------


class _Run:
    """The state of one :func:`apply_file` call."""

    def __init__(self, store_id: str, source_file: str, applier: StatusApplier, status_events: StatusEvents,
                 batch_threshold: int, restock_refunds: bool = False) -> None:
        self.store_id = store_id
        self.restock_refunds = restock_refunds
        self.money_events: frozenset[str] = getattr(applier, "money_events", frozenset())
        self.source_file = source_file
        self.applier = applier
        self.status_events = status_events
        self.batch_threshold = batch_threshold
        self.outcomes: dict[int, EventOutcome] = {}
        self.steps: dict[int, list[_Step]] = {}  # order id -> its applicable events in file order
        self.shipped: dict[int, dict[str, int]] = {}  # order id -> sku -> units shipped (ledger + file)
        self.failed_line: dict[int, int] = {}  # order id -> the line whose write failed

    def settle(self, index: int, outcome: EventOutcome) -> None:
        self.outcomes[index] = outcome

    # -- planning ----------------------------------------------------------------------------

    def plan(self, events: Sequence[StatusEvent]) -> None:
        done_before = self.status_events.applied_keys(self.store_id, [e.event_key for e in events])
        first_line: dict[str, int] = {}
        fresh: list[tuple[int, StatusEvent]] = []
        for index, event in enumerate(events):
            # applied by an earlier file, or a repeat of a line of this file
            if event.event_key in done_before or event.event_key in first_line:
                self.settle(index, EventOutcome(event, SKIPPED_DUPLICATE))
            else:
                first_line[event.event_key] = event.line_number
                fresh.append((index, event))
        fresh = self._refuse_reused_tracking(fresh)
        # The parser refuses a bad id already; events built otherwise meet the same rule here.
        numeric = {e.order_id: n for _i, e in fresh if (n := parse_order_id(e.order_id)) is not None}
        states = self.applier.read_orders(sorted(set(numeric.values()))) if numeric else {}
        shipped = self.status_events.shipped_quantities(self.store_id, numeric)
        orders: dict[str, OrderState] = {}
        for oid, number in numeric.items():
            state = states.get(number)
            if state is not None:
                orders[oid] = state
                self.shipped[number] = {sku: units for (o, sku), units in shipped.items() if o == oid}
        for index, event in fresh:
            order = orders.get(event.order_id)
            if order is None:
                detail = "" if event.order_id in numeric else f" ({event.order_id!r} is not an order id)"
                self.settle(index, EventOutcome(event, error(f"order not found{detail}")))
                continue
            self.plan_event(index, event, order)

    def _refuse_reused_tracking(self, fresh: list[tuple[int, StatusEvent]]) -> list[tuple[int, StatusEvent]]:
        """A tracking number belongs to one order: a ``shipped`` event reusing another order's
        number (applied before, or earlier in this file) is refused — it is a backend mistake
        that would show a stranger's parcel to the customer."""
        numbers = [e.tracking_number for _i, e in fresh if e.event == "shipped" and e.tracking_number]
        owners = self.status_events.tracking_owners(self.store_id, numbers) if numbers else {}
        kept = []
        for index, event in fresh:
            number = event.tracking_number if event.event == "shipped" else ""
            owner = owners.setdefault(number, event.order_id) if number else event.order_id
            if owner != event.order_id:
                self.settle(index, EventOutcome(event, refused(
                    f"tracking number {number} is already used for order {owner}")))
            else:
                kept.append((index, event))
        return kept

    def plan_event(self, index: int, event: StatusEvent, order: OrderState) -> None:
        if event.event in MONEY_EVENTS and event.event not in self.money_events:
            self.settle(index, EventOutcome(event, refused(
                f"this storefront's platform does not apply {event.event!r} events yet")))
            return
        shipped = self.shipped[order.order_id]
        shipment = _shipment(event, order, shipped) if event.event == "shipped" else False
        note = note_text(event, order.lines)
        try:
            effect = self.applier.decide(event, order, note, fully_shipped=shipment is True)
        except OrderNotFound:
            self.settle(index, EventOutcome(event, error("order not found")))
            return
        if event.event in MONEY_EVENTS and not isinstance(effect, str) and not effect.recovered:
            shipment = money_refusal(event, order) or shipment
        if isinstance(effect, str) or isinstance(shipment, str):
            # the platform's refusal first (an event for a cancelled order), then the shipment's
            # or the money's
            reason = effect if isinstance(effect, str) else str(shipment)
            self.settle(index, EventOutcome(event, refused(reason)))
            return
        if event.event in MONEY_EVENTS and not effect.note_only and not effect.recovered:
            _book(event, order)  # a recovered refund is in the storefront's "refunded so far" already
        before = None
        if event.event == "shipped" and event.sku is not None and event.quantity is not None:
            before = shipped.get(event.sku, 0)
            shipped[event.sku] = before + event.quantity
        write = effect.target is not None and effect.target != order.status and not effect.recovered
        change = StatusChange(event, order, note, effect, write_status=write, shipped_before=before,
                              restock=self.restock_refunds and event.event == "refunded")
        if effect.target is not None:
            order.status = effect.target  # later events of this order are decided on the new status
        self.steps.setdefault(order.order_id, []).append(_Step(index, change))

    # -- executing ---------------------------------------------------------------------------

    def execute(self) -> None:
        waves = max((len(s) for s in self.steps.values()), default=0)
        for k in range(waves):
            wave = [steps[k] for steps in self.steps.values() if len(steps) > k]
            try:
                self.run_wave(wave)
            finally:  # record what reached the storefront, even when a failure aborts the file
                self.record([s.outcome for s in wave if s.outcome is not None])

    def run_wave(self, wave: list[_Step]) -> None:
        live = []
        for step in wave:
            failed = self.failed_line.get(step.change.order.order_id)
            if failed is not None:
                step.outcome = EventOutcome(
                    step.change.event, error(f"not applied: line {failed} of this order failed"))
            else:
                live.append(step)
        try:
            self.applier.apply([s.change for s in live], store_id=self.store_id,
                               batch_threshold=self.batch_threshold)
        finally:  # the changes refused before a failure are settled (and recorded) all the same
            for step in live:
                if step.change.error is not None:
                    self.fail(step)
        failpoint("status_sync.before_ledger", store=self.store_id)
        for step in live:
            if step.outcome is None and step.change.effect.note_only:
                # written as a note only: the backend hears why nothing else happened
                change = step.change
                step.outcome = EventOutcome(change.event, refused(change.effect.note_only), None, change.note)
            elif step.outcome is None:
                change = step.change
                written = change.write_status or change.recovered
                step.outcome = EventOutcome(change.event, APPLIED, change.effect.target if written else None,
                                            change.note)

    def fail(self, step: _Step) -> None:
        change = step.change
        step.outcome = EventOutcome(change.event, error(change.error or "not applied"))
        self.failed_line[change.order.order_id] = change.event.line_number

    def record(self, outcomes: Sequence[EventOutcome]) -> None:
        self.status_events.record(self.store_id, self.source_file, [o.ledger_row() for o in outcomes])


def apply_file(
    store_id: str,
    events: Sequence[StatusEvent],
    applier: StatusApplier,
    status_events: StatusEvents,
    *,
    source_file: str = "-",
    batch_threshold: int = BATCH_THRESHOLD,
    restock_refunds: bool = False,
) -> list[EventOutcome]:
    """Apply a file's valid events to the storefront and record each in ``status_events``.

    See the module docstring for the rules. Returns one outcome per event, in file order.
    Storefront failures other than a refused or unknown order (transient after retries,
    credentials) raise; the events applied before are recorded.

    :param source_file: the file name recorded in the ledger.
    :param batch_threshold: status changes in one wave from which ``batch_update`` is used.
    :param restock_refunds: line refunds put their units back in stock (the store's setting).
    """
    run = _Run(store_id, source_file, applier, status_events, batch_threshold, restock_refunds)
    run.plan(events)
    run.execute()
    applied = {s.index: s.outcome for steps in run.steps.values() for s in steps if s.outcome is not None}
    # refusals and duplicates are recorded once the file went through (a failed run repeats them)
    run.record([run.outcomes[i] for i in sorted(run.outcomes)])
    merged = {**run.outcomes, **applied}
    return [merged[i] for i in range(len(events))]


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def free_name(existing: set[str], name: str, *, with_errors: bool) -> str:
    """A name free in a directory; in ``error/`` its ``.errors.json`` companion must be free too.

    Shared with the inventory sync (stock files move the same way).

    The backend names the file; a name so long that ``-N`` or the companion (uploaded as
    ``.NAME.errors.json.part``) would pass :data:`NAME_MAX` is shortened (its stem, in whole
    UTF-8 characters): else the move or the report fails on every run and the file is stuck."""
    taken = set(existing)
    if with_errors:
        taken |= {n[: -len(ERRORS_SUFFIX)] for n in existing if n.endswith(ERRORS_SUFFIX)}
    limit = NAME_MAX - (len(f".{ERRORS_SUFFIX}.part") if with_errors else 0)
    target = unique_name(taken, _fit(name, limit))
    if len(target.encode()) > limit:  # the "-N" pushed it over
        target = unique_name(taken, _fit(name, limit - 8))
    return target


def _fit(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` UTF-8 bytes by shortening its stem (the extension stays)."""
    if len(name.encode()) <= limit:
        return name
    stem, ext = posixpath.splitext(name)
    return stem.encode()[: max(1, limit - len(ext.encode()))].decode(errors="ignore") + ext


def _error_report(store_id: str, name: str, moved_to: str, invalid: Sequence[LineError],
                  outcomes: Sequence[EventOutcome], counts: dict[str, int]) -> bytes:
    entries = [
        {"line_number": e.line_number, "order_id": e.order_id, "event": e.event, "reason": e.reason}
        for e in invalid
    ] + [
        {"line_number": o.event.line_number, "order_id": o.event.order_id, "event": o.event.event,
         "reason": o.outcome}
        for o in outcomes if o.failed
    ]
    entries.sort(key=lambda e: e["line_number"])
    report = {
        "store_id": store_id, "file": name, "moved_to": moved_to,
        "processed_at": pendulum.now("UTC").isoformat(), "counts": counts, "errors": entries,
    }
    return json.dumps(report, ensure_ascii=False, indent=2).encode()


def _check_accounted(store_id: str, name: str, parsed: ParsedFile, outcomes: Sequence[EventOutcome]) -> None:
    """Every line of the file ends as exactly one outcome (applied, skipped_duplicate,
    refused, error) or one invalid line; else stop before the file moves anywhere."""
    lines = {e.line_number for e in parsed.events}
    if [o.event.line_number for o in outcomes] != [e.line_number for e in parsed.events] or (
        parsed.file_error is None
        and (len(parsed.events) + len(parsed.errors) != parsed.records
             or lines & {e.line_number for e in parsed.errors})
    ):
        raise InvariantViolation(
            f"store {store_id}: status file {name}: {parsed.records} lines but {len(outcomes)} outcomes "
            f"for {len(parsed.events)} events and {len(parsed.errors)} invalid lines")


def sync_file(
    store: StoreConfig,
    name: str,
    sftp_session: SftpSession,
    applier: StatusApplier,
    status_events: StatusEvents,
    *,
    batch_threshold: int = BATCH_THRESHOLD,
) -> FileResult:
    """Read, apply, record and move one status file of ``store.backend.outbound_dir``.

    :raises FileNotFoundError: the file is gone (another run took it).
    :raises StorefrontError, BackendError: transient failures; the file stays for a re-run.
    """
    outbound = store.backend.outbound_dir
    path = posixpath.join(outbound, name)
    try:
        parsed = parse_status_file(sftp_session.read_bytes(path), name)
    except FileTooLarge as exc:  # refused unread, as an unreadable file: to error/ with the reason
        log.warning("store %s: status file %s: %s", store.id, name, exc.reason)
        parsed = ParsedFile(errors=[LineError(1, "", exc.reason)], file_error=exc.reason)
    outcomes = apply_file(store.id, parsed.events, applier, status_events, source_file=name,
                          batch_threshold=batch_threshold,
                          restock_refunds=store.restock_refunds) if parsed.events else []
    status_events.record(store.id, name, [
        {"line_number": e.line_number, "order_id": e.order_id[:64], "event": e.event[:32],
         "outcome": error(f"invalid line: {e.reason}")}
        for e in parsed.errors
    ])
    _check_accounted(store.id, name, parsed, outcomes)
    failed = bool(parsed.errors) or any(o.failed for o in outcomes)
    result_dir = posixpath.join(outbound, ERROR_DIR if failed else ARCHIVE_DIR)
    sftp_session.makedirs(result_dir)
    target = free_name(set(sftp_session.listdir(result_dir)), name, with_errors=failed)
    moved_to = posixpath.join(result_dir, target)
    result = FileResult(name, moved_to, None, tuple(outcomes), tuple(parsed.errors))
    if failed:
        # The report first: a crash before the move leaves the file to re-run (harmlessly, it
        # is idempotent) rather than a file in error/ without its reason.
        report = _error_report(store.id, name, moved_to, parsed.errors, outcomes, result.counts)
        errors_file = sftp_session.upload_atomic(io.BytesIO(report), result_dir, target + ERRORS_SUFFIX)
        result = FileResult(name, moved_to, errors_file, result.outcomes, result.invalid_lines)
    failpoint("status_sync.before_move", store=store.id)
    sftp_session.move(path, moved_to)
    counts = result.counts
    log.info(
        "store %s: status file %s: %d lines: applied=%d skipped_duplicate=%d refused=%d error=%d "
        "invalid=%d -> %s", store.id, name, len(outcomes) + len(parsed.errors), counts["applied"],
        counts["skipped_duplicate"], counts["refused"], counts["error"], counts["invalid"], moved_to,
    )
    return result


@dataclass(slots=True)
class OutboundResult:
    """Every status file one :func:`sync_outbound` call handled."""

    files: list[FileResult] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.counts)
        return dict(total)


def sync_outbound(
    store: StoreConfig, sftp_session: SftpSession, applier: StatusApplier, status_events: StatusEvents,
    *, batch_threshold: int = BATCH_THRESHOLD,
) -> OutboundResult:
    """:func:`sync_file` for every status file in ``outbound_dir``, oldest name first.

    The order is the contract's promise that a later file never overtakes an earlier one, so
    the first file that fails stops the call: its error is raised, and it and every file after
    it stay in ``outbound_dir`` for the next try (the files before it are archived already).
    A file another run took meanwhile is skipped."""
    outbound = store.backend.outbound_dir
    try:
        names = list_status_files(sftp_session.listdir(outbound))
    except FileNotFoundError:
        log.info("store %s: no outbound directory %s yet", store.id, outbound)
        return OutboundResult()
    log.info("store %s: %d status file(s) in %s/: %s", store.id, len(names), outbound,
             ", ".join(names) or "none")
    result = OutboundResult()
    for position, name in enumerate(names):
        try:
            result.files.append(sync_file(store, name, sftp_session, applier, status_events,
                                          batch_threshold=batch_threshold))
        except FileNotFoundError:
            log.info("store %s: status file %s disappeared (taken by another run)", store.id, name)
        except Exception:
            log.error("store %s: status file %s failed; it and the %d file(s) after it stay in %s/ "
                      "for the retry (%d file(s) before it done)", store.id, name,
                      len(names) - position - 1, outbound, len(result.files))
            raise
    log.info("store %s: %d status files: %s", store.id, len(result.files), result.counts)
    return result
