"""The storefront interfaces: what the export, the status sync and the stock sync need from a
platform, with the types and errors they share. Nothing here knows a platform; each platform
module implements these and is chosen by :mod:`order_integration.storefronts` (the registry).

Reading orders: a window scan and a normaliser.

A client is deliberately small. ``iter_orders`` answers one question — which orders were
modified in ``[modified_from, modified_to)`` and what do they look like now — and
``normalise`` turns one raw platform dict into the canonical :class:`~order_integration.model.Order`
without ever raising. Everything platform-specific (paging, auth, retries) lives behind it.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec
import pendulum

from order_integration.exceptions import StorefrontRequestRejected
from order_integration.model import Order

if TYPE_CHECKING:
    from order_integration.backend.status_files import StatusEvent

__all__ = [
    "BatchItemResult", "CatalogItem", "Effect", "Normaliser", "OrderNotFound", "OrderState", "PageProgress",
    "Payment", "RawOrderWriter",
    "StatusApplier", "StatusChange", "StockClient", "StockUpdate", "StockWriteResult", "StorefrontClient",
    "StorefrontRequestRejected", "UnknownLocation", "same_note", "write_window_jsonl",
]


class PageProgress(Protocol):
    """Called after every page a scan fetched, so the task can log progress.

    ``pages``: requests answered so far; ``orders``: distinct orders seen so far;
    ``total_estimate``: the store's count for the window (as the first page said it,
    raised to ``orders`` if the scan found more), ``None`` when the store sent no count.
    Arguments are passed positionally, so a plain ``lambda p, o, t: ...`` fits.
    """

    def __call__(self, pages: int, orders: int, total_estimate: int | None, /) -> None: ...


@runtime_checkable
class StorefrontClient(Protocol):
    """A read-only view of one store's orders.

    A client whose time filter lags the store's writes (Shopify's search index) has a
    ``settle_seconds`` attribute: a window is read only once its end is that old (its
    ``iter_orders`` waits for that); the real-time polling fallback ends its windows that far
    back instead of waiting. A client without it reads any window at once."""

    def iter_orders(
        self, modified_from: pendulum.DateTime, modified_to: pendulum.DateTime
    ) -> Iterator[dict[str, Any]]:
        """Raw platform dicts of the orders modified in ``[modified_from, modified_to)``.

        Inclusive start, exclusive end, so adjacent windows partition time. Each order comes
        exactly once, in the latest version the scan saw. Both bounds must be aware UTC. The
        iterator raises (never ends early) when the window could not be read completely.
        """
        ...

    def fetch_orders(self, order_ids: Iterable[int]) -> Iterator[dict[str, Any]]:
        """Raw platform dicts of these orders as they are now, each once; an id the store does
        not know is left out (the caller reports it), never an error."""
        ...

    def normalise(self, raw: dict[str, Any], store_id: str) -> Order:
        """The canonical order; never raises, malformed values become ``parse_problems``."""
        ...

    def identify(self, raw: dict[str, Any]) -> tuple[str, str]:
        """``(order_id, status)`` exactly as :meth:`normalise` gives them, without normalising
        the rest (the export sets orders that are not ready aside unnormalised); never raises."""
        ...


@runtime_checkable
class RawOrderWriter(Protocol):
    """A client that can stage a window's orders as the store sent them, without decoding them
    into dicts and encoding them again (optional; see :func:`write_window_jsonl`)."""

    def write_orders_jsonl(
        self, modified_from: pendulum.DateTime, modified_to: pendulum.DateTime, out: IO[bytes]
    ) -> int:
        """Write what ``iter_orders`` would yield to ``out`` as JSON Lines (one order a line,
        same order, same guarantees: nothing is written unless the window was read completely);
        return how many orders."""
        ...


def write_window_jsonl(
    client: StorefrontClient, modified_from: pendulum.DateTime, modified_to: pendulum.DateTime,
    out: IO[bytes],
) -> int:
    """Stage the window's raw orders to ``out`` as JSON Lines; return how many.

    A client that keeps the store's bytes (:class:`RawOrderWriter`) copies them; any other
    client's dicts are encoded here."""
    if isinstance(client, RawOrderWriter):
        return client.write_orders_jsonl(modified_from, modified_to, out)
    encode = msgspec.json.Encoder().encode
    count = 0
    for row in client.iter_orders(modified_from, modified_to):
        out.write(encode(row) + b"\n")
        count += 1
    return count


class Normaliser(Protocol):
    """Raw platform order → canonical :class:`~order_integration.model.Order` (what validation needs)."""

    def normalise(self, raw: dict[str, Any], store_id: str) -> Order:
        """The canonical order; never raises, malformed values become ``parse_problems``."""
        ...

    def identify(self, raw: dict[str, Any]) -> tuple[str, str]:
        """``(order_id, status)`` exactly as :meth:`normalise` gives them, without normalising
        the rest (the export sets orders that are not ready aside unnormalised); never raises."""
        ...


# -- writing order statuses back (status sync) ---------------------------------------------
class OrderNotFound(StorefrontRequestRejected):
    """The store has no order with that id."""

    def __init__(self, order_id: int | str, message: str) -> None:
        super().__init__(message)
        self.order_id = order_id


@dataclass(frozen=True, slots=True)
class BatchItemResult:
    """One item of a batch update: the updated order, or the store's error for it
    (``not_found`` when the store has no such order)."""

    order_id: int
    order: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    not_found: bool = False

    @property
    def ok(self) -> bool:
        return self.error_code is None and self.error_message is None

    @property
    def error(self) -> str | None:
        """``code: message`` of a failed item, ``None`` when it succeeded."""
        return None if self.ok else f"{self.error_code}: {self.error_message}"


def same_note(a: str, b: str) -> bool:
    """Whether two note texts are the same note (entities and whitespace runs do not count)."""
    return " ".join(html.unescape(a).split()) == " ".join(html.unescape(b).split())


@dataclass(slots=True)
class Payment:
    """An order's money as the storefront shows it, for the backend's ``paid``/``refunded``.

    ``total`` is what the customer owes (``None``: the store sent no usable total);
    ``refunded`` the sum of the refunds so far. ``paid``: the storefront records the order as
    paid (WooCommerce ``date_paid``; Shopify a paid financial status); ``transaction_id`` the
    payment's id on the order ('' none; a ``paid`` event whose reference it is was applied).
    ``references``: the backend references found on the order's refunds (what this package
    wrote there before: the idempotency check the platform answers, so a crash between the
    write and the ledger repeats nothing).
    ``refunded_units``: SKU → units already refunded by line."""

    currency: str
    total: Decimal | None
    refunded: Decimal = Decimal(0)
    paid: bool = False
    transaction_id: str = ""
    references: set[str] = field(default_factory=set)
    refunded_units: dict[str, int] = field(default_factory=dict)

    @property
    def refundable(self) -> Decimal:
        """What may still be refunded: the total minus the refunds so far (never below 0)."""
        return max(Decimal(0), (self.total or Decimal(0)) - self.refunded)


@dataclass(slots=True)
class OrderState:
    """What the status sync knows of one storefront order while it applies a file.

    ``status`` is the platform's own word (what the orders file carries). ``lines`` maps each
    SKU to (units ordered, product name); quantities of lines sharing a SKU add up.
    ``payment``: its money, for ``paid``/``refunded`` (``None``: the platform does not say).
    ``cache`` is the platform applier's own (notes it read, fulfillment orders...)."""

    order_id: int
    status: str
    lines: dict[str, tuple[int, str]]
    has_line_without_sku: bool
    cache: dict[str, Any] = field(default_factory=dict)
    payment: Payment | None = None


@dataclass(frozen=True, slots=True)
class Effect:
    """What an applicable event does to an order, as the platform decided it.

    ``target``: the status the order has after the event (``None``: unchanged);
    ``customer_note``: the event's note is for the customer (a shipment) or private;
    ``recovered``: the storefront already shows this event (an earlier run applied it and
    stopped before its ledger row): nothing is written again, it counts as applied.
    ``note_only``: the event is written as its note and nothing else, and reported to the
    backend as refused with this reason (``paid`` for an order its gateway paid already: the
    customer's history shows the booking, but no second payment is marked)."""

    target: str | None
    customer_note: bool = False
    recovered: bool = False
    note_only: str | None = None


@dataclass(slots=True)
class StatusChange:
    """One applicable event on its way to the storefront. The status sync builds it (the note
    text is its own, deterministic, so an applier recognises it on the order later); the
    applier fills in ``error`` (why it was not applied) or ``recovered`` (it was already there)."""

    event: StatusEvent
    order: OrderState
    note: str
    effect: Effect
    write_status: bool  # the target differs from the order's status before the event
    #: a partial shipment: units of ``event.sku`` shipped before this event (applied events
    #: in the ledger and earlier lines of the file); lets a platform without a per-event
    #: marker tell a shipment it already made from one it has yet to make
    shipped_before: int | None = None
    #: a ``refunded`` event: put the refunded units back in stock (the store's ``restock_refunds``)
    restock: bool = False
    error: str | None = None
    recovered: bool = False


class StatusApplier(Protocol):
    """What the status sync needs from a storefront: the orders' state, the platform's rules for
    each event, and applying a wave of changes (at most one per order) with an idempotency
    check the platform answers (a change already on the order is ``recovered``, not repeated).

    Money events: an applier that applies ``paid``/``refunded`` names them in a class
    attribute ``money_events`` (a frozenset), fills ``OrderState.payment`` in ``read_orders``
    and carries them out in ``apply``: ``paid`` marks the order paid with ``event.reference``
    as its transaction; ``refunded`` records a refund of ``event.amount`` (by line for
    ``event.sku``/``event.quantity``, restocking when ``change.restock``) *without moving
    money through the gateway*, with ``event.reference`` stored on it where ``read_orders``
    finds it again (``Payment.references``). An applier without the attribute gets such
    events refused by the status sync, never half-applied.

    A context manager: its HTTP session closes on exit."""

    def __enter__(self) -> StatusApplier: ...

    def __exit__(self, *exc: object) -> None: ...

    def read_orders(self, order_ids: Sequence[int]) -> dict[int, OrderState]:
        """The state of these orders; an id the store does not know is left out."""
        ...

    def decide(
        self, event: StatusEvent, order: OrderState, note: str, *, fully_shipped: bool
    ) -> Effect | str:
        """The event's effect on ``order`` under the platform's rules, or why it is refused.

        ``fully_shipped``: every line of the order is shipped once this event is (partial
        shipments counted by the status sync). May read the storefront (to recognise an event
        it applied before); raises :class:`OrderNotFound` when the order is gone."""
        ...

    def apply(self, changes: Sequence[StatusChange], *, store_id: str, batch_threshold: int) -> None:
        """Apply one wave (at most one change per order): set ``error`` on each change that was
        not applied and ``recovered`` on each found already applied. Transient failures after
        retries and refused credentials raise."""
        ...


# -- stock levels (inventory sync) ---------------------------------------------------------
# The stock sync (:mod:`order_integration.inventory`) knows SKUs, quantities and location keys;
# what a platform calls an item, where it keeps levels and when it refuses a write is the
# platform module's. A platform keeps either one level per SKU (WooCommerce: ``per_location``
# false, every level under the key ``None``) or one per SKU and location (Shopify: the key is
# the platform's location id).


class UnknownLocation(ValueError):
    """A stock file's ``location`` the store cannot place (:meth:`StockClient.location_for`);
    its message is the row's reason, e.g. ``location 'WH-9' is not in stock_locations (known:
    WH-1, WH-2)``. The row is refused; the rest of the file is applied."""


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """What the store says about one SKU: where to write (``ref``) and what it shows now.

    ``ref`` is the platform's handle, opaque to the stock sync (WooCommerce: ``(product_id,
    variation_id)``; Shopify: the inventory item's GID). ``label`` names the item in reports
    (``variation 12 of product 10``). ``managed``: the store keeps a level for this item; when
    it does not, ``unmanaged_reason`` says why in the platform's words (``its stock is managed
    on the parent product``). ``levels``: location key → the quantity the store shows there
    (``None`` when it shows none); a platform with one level per SKU has the single key
    ``None``. A location key absent from ``levels`` is one the store does not stock the item at."""

    sku: str
    ref: Any
    label: str
    managed: bool
    levels: Mapping[str | None, int | None]
    unmanaged_reason: str = ""

    def quantity(self, location: str | None = None) -> int | None:
        """The quantity the store shows at ``location`` (``None``: none, or not stocked there)."""
        return self.levels.get(location)


@dataclass(frozen=True, slots=True)
class StockUpdate:
    """Set ``item``'s stock at ``location`` (a key of the platform, ``None`` for a platform with
    one level per SKU) to ``quantity``; ``key`` is the caller's handle (e.g. the stock row),
    passed back in the result."""

    item: CatalogItem
    quantity: int
    key: Any = None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class StockWriteResult:
    update: StockUpdate
    error: str | None = None  # why the store refused this item (its own words)
    stock_quantity: int | None = None  # what the store answered after the write

    @property
    def ok(self) -> bool:
        return self.error is None


class StockClient(Protocol):
    """What the stock sync needs from a storefront. A context manager (its HTTP session closes
    on exit); one client serves one run, so it may cache look-ups for its lifetime."""

    #: Whether the platform keeps a level per location (then two rows of one SKU at two
    #: locations are two levels) or one per SKU (then they contradict each other).
    per_location: bool

    def location_for(self, name: str | None) -> str | None:
        """The platform's location key for a stock file's ``location`` value (``None``: the
        column is absent or empty), with the store config's ``stock_locations`` and
        ``default_stock_location`` applied. A platform with one level per SKU answers ``None``
        whatever the name. Raises :class:`UnknownLocation` (the row's reason) for a name it
        cannot place."""
        ...

    def lookup(self, skus: Iterable[str]) -> dict[str, CatalogItem]:
        """sku → the item with exactly that SKU, for those the store has (unknown and ambiguous
        SKUs are absent; :meth:`problem` says why an answer was not usable)."""
        ...

    def problem(self, sku: str) -> str | None:
        """Why a SKU the look-up answered cannot be used (ambiguous, differs in case), or ``None``."""
        ...

    def set_stock(self, updates: Sequence[StockUpdate], *, manage_stock: bool = True,
                  on_applied: Callable[[list[StockWriteResult]], None] | None = None,
                  ) -> list[StockWriteResult]:
        """Write absolute levels; one result per update, in input order. ``manage_stock``: an
        unmanaged item may be switched to managed by the write. ``on_applied`` gets each
        request's results as soon as the store answered (so a later failure loses nothing).
        A refused item is a result with ``error``; transient failures after retries raise."""
        ...
