"""The Airflow pools the DAGs use, derived from the store config.

* ``storefront__<conn id>``: every task that calls a storefront takes a slot, so parallel
  runs (backfills, several DAGs of a store, stores sharing one shop) stay within what the
  shop tolerates. Slots: the largest ``storefront_concurrency`` of the stores using it.
* ``order_load__<store>``: one slot, so loads of overlapping runs of a store (a backfill
  beside the schedule, an on-demand run) take turns; the ledger's claims stay the last line
  of defence.

Airflow never schedules a task whose pool does not exist, so create them with
``python -m order_integration pools > pools.json && airflow pools import pools.json``
(``make airflow-db`` does) whenever stores are added.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from order_integration.config import StoreConfig


def pools_for(stores: Iterable[StoreConfig]) -> dict[str, dict[str, Any]]:
    """``{name: {"slots", "description", "include_deferred"}}``, the ``airflow pools import`` format."""
    pools: dict[str, dict[str, Any]] = {}
    for store in stores:
        shared = pools.get(store.storefront_pool)
        slots = max(store.storefront_concurrency, shared["slots"] if shared else 0)
        users = sorted({*(shared["stores"] if shared else ()), store.id})
        pools[store.storefront_pool] = {"slots": slots, "stores": users}
        pools[store.load_pool] = {"slots": 1, "stores": [store.id]}
    return {
        name: {
            "slots": pool["slots"],
            "description": (
                f"order-integration: calls to storefront connection of {', '.join(pool['stores'])}"
                if name.startswith("storefront__")
                else f"order-integration: one load at a time for store {pool['stores'][0]}"
            ),
            "include_deferred": False,
        }
        for name, pool in sorted(pools.items())
    }
