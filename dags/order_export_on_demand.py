"""
### Order export on demand: a window or a list of orders, when an operator asks

Trigger with **Trigger DAG → the form**. Give either a window (`start`, `end`, UTC) or
order ids (one per line), not both:

* **window** — exports orders modified in `[start - lookback, end)`, exactly like a
  scheduled run of that window (versions already delivered are skipped);
* **order ids** — fetches those orders as they are now (up to 500), validates them and
  delivers the valid ones. This is how quarantined orders are released once fixed in the
  storefront; unknown ids are reported, not fatal;
* **resend** — deliver again even what the ledger says was delivered (recorded in
  `order_resends`, the first delivery stays in `order_deliveries`);
* **dry_run** — build and validate the file and keep it in staging; nothing is uploaded or
  recorded. The log and the summary say where the file is.

The form is checked first (`check_request`): an empty or reversed window, too many ids, or
both a window and ids fail the run before anything is read. The tasks are the scheduled
export's own (extract → validate → load → publish).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from order_integration.config import StoreConfig, load_config
from order_integration.dag_defaults import START_DATE, default_args, tags
from order_integration.on_demand import MAX_ORDER_IDS, ORDER_ID_ITEM_SCHEMA

SECTION_WHAT = "What to export: a window or order ids"
SECTION_HOW = "How"


def build_on_demand_dag(store: StoreConfig):
    @dag(
        dag_id=f"order_export_on_demand__{store.id}",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=2,
        default_args={**default_args(store), "retries": 1},
        tags=tags(store.id, "on-demand"),
        doc_md=__doc__,
        params={
            "start": Param(
                None, type=["null", "string"], format="date-time", section=SECTION_WHAT,
                title="Window start (UTC)",
                description="Orders modified from this time on (the store's lookback is added before it).",
            ),
            "end": Param(
                None, type=["null", "string"], format="date-time", section=SECTION_WHAT,
                title="Window end (UTC, exclusive)", description="Must be after start and in the past.",
            ),
            "order_ids": Param(
                [], type=["null", "array"], items=ORDER_ID_ITEM_SCHEMA, maxItems=MAX_ORDER_IDS,
                section=SECTION_WHAT, title="Order ids",
                description=f"Storefront order numbers (digits only), one per line, at most "
                f"{MAX_ORDER_IDS}. Leave the window empty when you use this.",
            ),
            "resend": Param(
                False, type=["null", "boolean"], section=SECTION_HOW, title="Resend",
                description="Deliver again even versions the ledger says were delivered.",
            ),
            "dry_run": Param(
                False, type=["null", "boolean"], section=SECTION_HOW, title="Dry run",
                description="Build and validate the file, keep it in staging, upload nothing.",
            ),
        },
    )
    def order_export_on_demand() -> None:
        from order_integration import tasks

        @task(execution_timeout=timedelta(minutes=2), retries=0)
        def check_request(**context) -> dict:
            return tasks.check_request(store.id, context)

        @task(execution_timeout=timedelta(minutes=60), pool=store.storefront_pool)
        def extract(request: dict, **context) -> dict:
            return tasks.extract(store.id, context, request)

        @task(execution_timeout=timedelta(minutes=30))
        def validate(request: dict, extracted: dict, **context) -> dict:
            return tasks.validate(store.id, extracted, context, request)

        @task(execution_timeout=timedelta(minutes=30), pool=store.load_pool)
        def load(request: dict, validated: dict, **context) -> dict:
            return tasks.load(store.id, validated, context, request)

        @task(execution_timeout=timedelta(minutes=5))
        def publish(request: dict, extracted: dict, validated: dict, loaded: dict, **context) -> dict:
            return tasks.publish(store.id, extracted, validated, loaded, context, request)

        request = check_request()
        extracted = extract(request)
        validated = validate(request, extracted)
        publish(request, extracted, validated, load(request, validated))

    return order_export_on_demand()


for _store in load_config().stores:
    globals()[f"order_export_on_demand__{_store.id}"] = build_on_demand_dag(_store)
