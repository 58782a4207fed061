"""
### Status sync (two-way): backend status files → storefront

One DAG per store (`order_status_sync__<store>`), every 10 minutes by default
(`status_sync_schedule`). It lists the complete status files in the backend's
`outbound_dir` (never a dot or `.part` name), applies each file's events to the
storefront — accepted, shipped (whole or in parts, with tracking), cancelled, rejected —
idempotently, records every event in the ledger's `status_events`, and moves the file to
`outbound_dir/archive/`, or to `outbound_dir/error/` beside `<name>.errors.json` when some
lines could not be applied (every good line is applied first).

Files are mapped one task each, one at a time in name order, so one bad file never blocks
the others and the events of a later file never overtake an earlier one.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from order_integration.config import StoreConfig, load_config
from order_integration.dag_defaults import START_DATE, default_args, tags


def build_status_sync_dag(store: StoreConfig):
    @dag(
        dag_id=f"order_status_sync__{store.id}",
        schedule=store.status_sync_schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # two runs must not apply the same file at once
        default_args=default_args(store, max_retry_delay=timedelta(minutes=10)),
        tags=tags(store.id, "status-sync"),
        doc_md=__doc__,
    )
    def order_status_sync() -> None:
        from order_integration import tasks

        @task(execution_timeout=timedelta(minutes=5))
        def list_files() -> list[str]:
            return tasks.list_status_files(store.id)

        @task(execution_timeout=timedelta(minutes=30), max_active_tis_per_dagrun=1,
              pool=store.storefront_pool)
        def sync_file(name: str) -> dict:
            return tasks.sync_status_file(store.id, name)

        # all_success (the default): a file that failed fails the run, visibly, while the
        # other files' mapped tasks still ran to the end.
        @task(execution_timeout=timedelta(minutes=5))
        def summary(results: list[dict]) -> dict:
            return tasks.summarise_status_sync(store.id, list(results))

        summary(sync_file.expand(name=list_files()))

    return order_status_sync()


for _store in load_config().stores:
    globals()[f"order_status_sync__{_store.id}"] = build_status_sync_dag(_store)
