"""
### Status sync (two-way): backend status files → storefront

One DAG per store (`order_status_sync__<store>`), every 10 minutes by default
(`status_sync_schedule`). It lists the complete status files in the backend's
`outbound_dir` (never a dot or `.part` name), applies each file's events to the
storefront — accepted, shipped (whole or in parts, with tracking), cancelled, rejected —
idempotently, records every event in the ledger's `status_events`, and moves the file to
`outbound_dir/archive/`, or to `outbound_dir/error/` beside `<name>.errors.json` when some
lines could not be applied (every good line is applied first).

One task applies the files one after the other in name order, so the events of a later
file never overtake an earlier one. A file with bad lines does not stop the others (it goes
to `error/`); a file that fails (storefront or SFTP down) stops the run: it and the files
after it stay for the retry. The task logs one summary line per file and one for the run.
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

        # One task for all files: they must apply in name order, and a mapped file waiting
        # for its retry would let the next one overtake it.
        @task(execution_timeout=timedelta(minutes=60), pool=store.storefront_pool)
        def sync_files() -> dict:
            return tasks.sync_status_files(store.id)

        sync_files()

    return order_status_sync()


for _store in load_config().stores:
    globals()[f"order_status_sync__{_store.id}"] = build_status_sync_dag(_store)
