"""The Assets of a store: what its export publishes, and what wakes its real-time export.

Imported by the DAG files at parse time: ``airflow.sdk`` and the trigger module (cheap).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import Asset, AssetWatcher

if TYPE_CHECKING:
    from order_integration.config import StoreConfig


def orders_asset(store_id: str) -> Asset:
    """Updated by every export run that delivered (its ``extra`` is the run's summary)."""
    # An "x-" scheme is Airflow's mark of a custom URI: no provider normaliser is looked up,
    # so parsing never loads every installed provider's asset handlers (amazon's pull boto).
    return Asset(name=f"order_integration__{store_id}__orders", uri=f"x-order-integration://{store_id}/orders")


def webhook_inbox_asset(store: StoreConfig) -> Asset:
    """The store's webhook inbox, watched from the triggerer (real-time mode): an Asset event
    each time deliveries newer than the last signalled are waiting. With ``realtime_source:
    polling`` the watcher's trigger also fills the inbox from the storefront (no webhooks)."""
    if store.realtime_source == "polling":
        from order_integration.poll_trigger import StorefrontPollTrigger as Trigger

        watcher = f"storefront_poll__{store.id}"
    else:
        from order_integration.inbox_trigger import WebhookInboxTrigger as Trigger

        watcher = f"webhook_inbox__{store.id}"
    trigger = Trigger(store_id=store.id, poll_seconds=store.realtime_poll_seconds)
    return Asset(name=f"order_integration__{store.id}__webhook_inbox",
                 uri=f"x-order-integration://{store.id}/webhook-inbox",
                 watchers=[AssetWatcher(name=watcher, trigger=trigger)])
