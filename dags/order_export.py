"""
### Order export (one-way): storefront → validation → backend SFTP

One DAG per store in the store config (`ORDER_INTEGRATION_CONFIG`, default
`include/stores.yaml`). Each run covers its data interval `[start, end)`:

1. **extract** — orders modified in `[start - lookback, end)`, keyset-paged, staged as JSONL;
2. **validate** — canonical model + Great Expectations suite; invalid orders are quarantined
   with every failed rule; the run fails when the newly quarantined share passes
   `max_quarantine_ratio`;
3. **load** — versions not delivered yet go out as one file (`.part`, then rename), recorded
   in the ledger;
4. **publish** — Asset event and the summary
   `extracted = delivered + quarantined + already_delivered + not_ready`.

Re-running a window delivers nothing twice; backfill with
`airflow backfill create --dag-id order_export__<store> --from-date … --to-date …`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronDataIntervalTimetable, dag, task

from order_integration.assets import orders_asset
from order_integration.config import StoreConfig, cron_of, load_config
from order_integration.dag_defaults import START_DATE, default_args, tags


def build_export_dag(store: StoreConfig):
    @dag(
        dag_id=f"order_export__{store.id}",
        schedule=CronDataIntervalTimetable(cron_of(store.schedule), timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=4,
        default_args=default_args(store),
        tags=tags(store.id, "export"),
        doc_md=__doc__,
    )
    def order_export() -> None:
        from order_integration import tasks  # cheap: only config/windows at import

        @task(execution_timeout=timedelta(minutes=60), pool=store.storefront_pool)
        def extract(**context) -> dict:
            return tasks.extract(store.id, context)

        @task(execution_timeout=timedelta(minutes=30))
        def validate(extracted: dict, **context) -> dict:
            return tasks.validate(store.id, extracted, context)

        @task(execution_timeout=timedelta(minutes=30), pool=store.load_pool)
        def load(validated: dict, **context) -> dict:
            return tasks.load(store.id, validated, context)

        @task(execution_timeout=timedelta(minutes=5), outlets=[orders_asset(store.id)])
        def publish(extracted: dict, validated: dict, loaded: dict, **context) -> dict:
            return tasks.publish(store.id, extracted, validated, loaded, context)

        extracted = extract()
        validated = validate(extracted)
        publish(extracted, validated, load(validated))

    return order_export()


for _store in load_config().stores:
    globals()[f"order_export__{_store.id}"] = build_export_dag(_store)
