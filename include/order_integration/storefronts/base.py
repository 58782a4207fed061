"""What every storefront client offers the tasks: a window scan and a normaliser.

A client is deliberately small. ``iter_orders`` answers one question — which orders were
modified in ``[modified_from, modified_to)`` and what do they look like now — and
``normalise`` turns one raw platform dict into the canonical :class:`~order_integration.model.Order`
without ever raising. Everything platform-specific (paging, auth, retries) lives behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import pendulum

from order_integration.exceptions import StorefrontRequestRejected
from order_integration.model import Order

__all__ = ["PageProgress", "StorefrontClient", "StorefrontRequestRejected"]


class PageProgress(Protocol):
    """Called after every page a scan fetched, so the task can log progress.

    ``pages``: requests answered so far; ``orders``: distinct orders seen so far;
    ``total_estimate``: the store's count for the window (``X-WP-Total`` of the first page,
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
