"""What every DAG of this package shares: owner, retry policy, start date.

Imported at DAG parse time: standard library and pendulum (the notifier is built on demand).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pendulum

if TYPE_CHECKING:
    from order_integration.config import StoreConfig

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def default_args(
    store: StoreConfig | None = None, *, max_retry_delay: timedelta = timedelta(minutes=20)
) -> dict[str, Any]:
    """Retries with exponential backoff; permanent errors skip them (``tasks.fail_fast``).
    With a store: its failure notifier on every task (after the last try)."""
    args: dict[str, Any] = {
        "owner": "order-integration",
        "retries": 3 if store is None else store.retries,
        "retry_delay": timedelta(seconds=60 if store is None else store.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": max_retry_delay,
    }
    if store is not None:
        from order_integration.alerts import failure_notifier

        args["on_failure_callback"] = [failure_notifier(store)]
    return args


#: The DAGs a store can have: ``<kind>__<store id>`` (the DAG files in ``dags/``);
#: ``order_export_realtime`` only for a store in ``mode: realtime``.
DAG_KINDS = ("order_export", "order_export_on_demand", "order_status_sync", "inventory_sync",
             "order_export_realtime")


def dag_ids(store_id: str) -> tuple[str, ...]:
    """The ids ``store_id``'s DAGs can have (a batch store has no ``order_export_realtime__``)."""
    return tuple(f"{kind}__{store_id}" for kind in DAG_KINDS)


def tags(store_id: str, kind: str) -> list[str]:
    return ["order-integration", f"store:{store_id}", kind]
