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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pendulum

from order_integration.exceptions import StorefrontRequestRejected
from order_integration.model import Order

if TYPE_CHECKING:
    from order_integration.backend.status_files import StatusEvent

__all__ = [
    "BatchItemResult", "CatalogItem", "Effect", "Normaliser", "OrderNotFound", "OrderState", "PageProgress",
    "StatusApplier", "StatusChange", "StockClient", "StockUpdate", "StockWriteResult", "StorefrontClient",
    "StorefrontRequestRejected", "same_note",
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
    """A read-only view of one store's orders."""

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


class Normaliser(Protocol):
    """Raw platform order → canonical :class:`~order_integration.model.Order` (what validation needs)."""

    def normalise(self, raw: dict[str, Any], store_id: str) -> Order:
        """The canonical order; never raises, malformed values become ``parse_problems``."""
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
class OrderState:
    """What the status sync knows of one storefront order while it applies a file.

    ``status`` is the platform's own word (what the orders file carries). ``lines`` maps each
    SKU to (units ordered, product name); quantities of lines sharing a SKU add up.
    ``cache`` is the platform applier's own (notes it read, fulfillment orders...)."""

    order_id: int
    status: str
    lines: dict[str, tuple[int, str]]
    has_line_without_sku: bool
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Effect:
    """What an applicable event does to an order, as the platform decided it.

    ``target``: the status the order has after the event (``None``: unchanged);
    ``customer_note``: the event's note is for the customer (a shipment) or private;
    ``recovered``: the storefront already shows this event (an earlier run applied it and
    stopped before its ledger row): nothing is written again, it counts as applied."""

    target: str | None
    customer_note: bool = False
    recovered: bool = False


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
    error: str | None = None
    recovered: bool = False


class StatusApplier(Protocol):
    """What the status sync needs from a storefront: the orders' state, the platform's rules for
    each event, and applying a wave of changes (at most one per order) with an idempotency
    check the platform answers (a change already on the order is ``recovered``, not repeated).

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
@dataclass(frozen=True, slots=True)
class CatalogItem:
    """What the store says about one SKU: where to write and what it shows now."""

    sku: str
    product_id: int  # the product, or the variation's parent product
    variation_id: int | None  # set for a variation
    manage_stock: bool | str  # True / False, or "parent" for a variation managed by its parent
    stock_quantity: int | None
    type: str = "simple"

    @property
    def managed(self) -> bool:
        """Whether this product/variation keeps its own stock level."""
        return self.manage_stock is True

    @property
    def label(self) -> str:
        if self.variation_id is None:
            return f"product {self.product_id}"
        return f"variation {self.variation_id} of product {self.product_id}"


@dataclass(frozen=True, slots=True)
class StockUpdate:
    """Set ``item``'s stock to ``quantity`` (and switch management on: ``manage_stock``)."""

    item: CatalogItem
    quantity: int
    key: Any = None  # the caller's handle (e.g. the stock row), passed back in the result


@dataclass(frozen=True, slots=True)
class StockWriteResult:
    update: StockUpdate
    error: str | None = None  # the store's ``code: message`` for a refused item
    stock_quantity: int | None = None  # what the store answered after the write

    @property
    def ok(self) -> bool:
        return self.error is None


class StockClient(Protocol):
    """What the inventory sync needs from a storefront."""

    def lookup(self, skus: Iterable[str]) -> dict[str, CatalogItem]: ...

    def problem(self, sku: str) -> str | None: ...

    def set_stock(self, updates: Sequence[StockUpdate], *, manage_stock: bool = True,
                  on_applied: Callable[[list[StockWriteResult]], None] | None = None,
                  ) -> list[StockWriteResult]: ...
