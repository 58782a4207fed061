"""
### Inventory sync: backend stock files → storefront stock levels

One DAG per store (`inventory_sync__<store>`), every 15 minutes by default
(`inventory_sync_schedule`). It lists the complete stock files in the backend's `stock_dir`
(`*.csv`, never a dot or `.part` name; columns `sku,quantity,as_of[,location]`), and for each
file sets the storefront's stock of every SKU whose level is newer than, and different from,
the last one applied (ledger table `stock_levels`) and differs from what the store shows —
looked up 99 SKUs per request, written 100 per batch request. Stale rows are skipped and
counted; the same file dropped twice changes nothing. The file moves to `stock_dir/archive/`,
or — when a row was refused or names an unknown SKU, after every good row was applied — to
`stock_dir/error/` beside `<name>.errors.json`. Products that do not manage their stock are
reported, not switched on, unless the store sets `manage_stock_on_apply: true`.

One task applies the files one after the other in name order (a file that fails stops the
run; it and the files after it stay for the retry); the newest `as_of` per SKU wins whatever
the order the files arrive in. The task logs one summary line per file and one for the run.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from order_integration.config import StoreConfig, load_config
from order_integration.dag_defaults import START_DATE, default_args, tags


def build_inventory_sync_dag(store: StoreConfig):
    @dag(
        dag_id=f"inventory_sync__{store.id}",
        schedule=store.inventory_sync_schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # two runs must not apply the same file at once
        default_args=default_args(store, max_retry_delay=timedelta(minutes=10)),
        tags=tags(store.id, "inventory-sync"),
        doc_md=__doc__,
    )
    def inventory_sync() -> None:
        from order_integration import tasks

        # One task for all files: they must apply in name order, which mapped task instances
        # do not guarantee, and the storefront look-up cache then serves the whole run.
        @task(execution_timeout=timedelta(minutes=60), pool=store.storefront_pool)
        def sync_files() -> dict:
            return tasks.sync_stock_files(store.id)

        sync_files()

    return inventory_sync()


for _store in load_config().stores:
    globals()[f"inventory_sync__{_store.id}"] = build_inventory_sync_dag(_store)
