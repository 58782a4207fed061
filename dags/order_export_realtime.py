"""
### Order export, real-time: the webhook inbox → validation → backend SFTP

One DAG per store in `mode: realtime` (store config). The storefront's webhooks are recorded
in the ledger's `webhook_inbox` by the receiver on the api-server; a trigger in Airflow's
triggerer watches the inbox (every `realtime_poll_seconds`) and updates this DAG's Asset when
new deliveries wait. With `realtime_source: polling` (a storefront that cannot reach the
api-server) that trigger first asks the storefront for the orders modified since its last scan
and writes them to the same inbox (topic `poll`); the run is the same. Each run:

1. **take_waiting** — the orders waiting in the inbox (fetch time noted first); none: skipped;
2. **extract** — each order fetched by id, as it is now (the webhook body is only a hint);
3. **validate** / **load** — the export's own tasks and ledger: a version already delivered
   (by the schedule, on demand, or an earlier run) is not delivered again;
4. **publish** — summary and note: `realtime: N order(s) from the webhook inbox; order export …`;
5. **mark_done** — the inbox rows received up to the fetch time are done, whatever the order's
   outcome (delivered, not ready, quarantined, deleted).

One run at a time: deliveries that come while a run is active wake one more run, so a burst
is one or two runs. The scheduled `order_export__<store>` stays on as the safety net for
webhooks that never came.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from order_integration.assets import orders_asset, webhook_inbox_asset
from order_integration.config import StoreConfig, load_config
from order_integration.dag_defaults import START_DATE, default_args, tags


def build_realtime_dag(store: StoreConfig):
    @dag(
        dag_id=f"order_export_realtime__{store.id}",
        schedule=[webhook_inbox_asset(store)],
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(store, max_retry_delay=timedelta(minutes=5)),
        tags=tags(store.id, "realtime"),
        doc_md=__doc__,
    )
    def order_export_realtime() -> None:
        from order_integration import realtime, tasks

        @task(execution_timeout=timedelta(minutes=2))
        def take_waiting(**context) -> dict:
            return realtime.take_waiting(store.id, context)

        @task(execution_timeout=timedelta(minutes=30), pool=store.storefront_pool)
        def extract(request: dict, **context) -> dict:
            return tasks.extract(store.id, context, request)

        @task(execution_timeout=timedelta(minutes=30))
        def validate(request: dict, extracted: dict, **context) -> dict:
            return tasks.validate(store.id, extracted, context, request)

        @task(execution_timeout=timedelta(minutes=30), pool=store.load_pool)
        def load(request: dict, validated: dict, **context) -> dict:
            return tasks.load(store.id, validated, context, request)

        @task(execution_timeout=timedelta(minutes=5), outlets=[orders_asset(store.id)])
        def publish(request: dict, extracted: dict, validated: dict, loaded: dict, **context) -> dict:
            return realtime.publish(store.id, extracted, validated, loaded, context, request)

        @task(execution_timeout=timedelta(minutes=5))
        def mark_done(request: dict, published: dict, **context) -> dict:
            return realtime.mark_done(store.id, request, published, context)

        request = take_waiting()
        extracted = extract(request)
        validated = validate(request, extracted)
        mark_done(request, publish(request, extracted, validated, load(request, validated)))

    return order_export_realtime()


for _store in load_config().stores:
    if _store.mode == "realtime":
        globals()[f"order_export_realtime__{_store.id}"] = build_realtime_dag(_store)
