"""The operator-facing DAG contract: the on-demand form, pools, failure alerts, many stores."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.dags

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def many_stores(tmp_path_factory):
    """Three stores: two share a storefront connection; different schedules and folders."""
    from airflow.dag_processing.dagbag import DagBag

    stores = [
        {"id": "eu", "storefront_conn_id": "shop_eu", "backend_conn_id": "erp", "schedule": "*/30 * * * *",
         "storefront_concurrency": 4, "backend": {"inbound_dir": "in/eu", "outbound_dir": "out/eu"}},
        {"id": "uk", "storefront_conn_id": "shop_eu", "backend_conn_id": "erp",
         "backend": {"inbound_dir": "in/uk", "outbound_dir": "out/uk"}},
        {"id": "us", "storefront_conn_id": "shop_us", "backend_conn_id": "erp_us", "schedule": "@daily",
         "alerts": {"conn_id": "mail", "to": ["ops@example.com"]}},
    ]
    cfg = tmp_path_factory.mktemp("cfg") / "stores.yaml"
    cfg.write_text(yaml.safe_dump({"stores": stores}))
    mp = pytest.MonkeyPatch()
    mp.setenv("ORDER_INTEGRATION_CONFIG", str(cfg))
    try:
        from order_integration.config import load_config

        yield DagBag(dag_folder=str(DAGS)), load_config()
    finally:
        mp.undo()


def test_on_demand_dag_has_a_typed_form_and_no_schedule(dagbag):
    dag = dagbag.dags["order_export_on_demand__demo"]
    assert type(dag.timetable).__name__ == "NullTimetable"
    assert {"order-integration", "store:demo", "on-demand"} <= set(dag.tags)
    assert [t.task_id for t in dag.topological_sort()] == ["check_request", "extract", "validate", "load",
                                                            "publish"]
    params = dag.params
    for name, kind in (("start", ["null", "string"]), ("end", ["null", "string"]),
                       ("order_ids", ["null", "array"]), ("resend", "boolean"), ("dry_run", "boolean")):
        param = params.get_param(name)
        assert param.schema["type"] == kind, name
        assert param.schema.get("title") and param.description, f"{name}: the form needs a title and help"
    assert params.get_param("order_ids").schema["maxItems"] == 500
    assert params["resend"] is False and params["dry_run"] is False
    assert dag.get_task("check_request").retries == 0, "a refused form is not retried"


def test_every_task_alerts_on_failure_and_storefront_and_load_tasks_use_pools(dagbag):
    from order_integration.config import load_config
    from order_integration.pools import pools_for

    declared = set(pools_for(load_config().stores))
    ours = [d for d in dagbag.dags.values() if "order-integration" in d.tags]
    assert len(ours) >= 4
    for dag in ours:
        for t in dag.tasks:
            callbacks = t.on_failure_callback or []
            names = {type(c).__name__ for c in (callbacks if isinstance(callbacks, list) else [callbacks])}
            assert "StoreFailureNotifier" in names, f"{dag.dag_id}.{t.task_id} does not alert"
            assert t.pool == "default_pool" or t.pool in declared, f"{dag.dag_id}.{t.task_id}: {t.pool}"
    for dag_id in ("order_export__demo", "order_export_on_demand__demo"):
        dag = dagbag.dags[dag_id]
        assert dag.get_task("extract").pool == "storefront__storefront_demo"
        assert dag.get_task("load").pool == "order_load__demo"
    assert dagbag.dags["order_status_sync__demo"].get_task("sync_file").pool == "storefront__storefront_demo"


def test_each_store_gets_its_own_dags_pools_and_settings(many_stores):
    bag, config = many_stores
    assert bag.import_errors == {}
    for store in ("eu", "uk", "us"):
        for prefix in ("order_export__", "order_export_on_demand__", "order_status_sync__"):
            assert f"{prefix}{store}" in bag.dag_ids
    assert bag.dags["order_export__eu"].timetable.expression == "*/30 * * * *"
    assert bag.dags["order_export__us"].timetable.expression == "0 0 * * *"
    # stores sharing a storefront share its pool; loads are serialised per store only
    assert bag.dags["order_export__eu"].get_task("extract").pool == "storefront__shop_eu"
    assert bag.dags["order_export__uk"].get_task("extract").pool == "storefront__shop_eu"
    assert bag.dags["order_export__us"].get_task("extract").pool == "storefront__shop_us"
    assert {bag.dags[f"order_export__{s}"].get_task("load").pool for s in ("eu", "uk", "us")} == {
        "order_load__eu", "order_load__uk", "order_load__us"}
    # one store's notifier names that store
    notifier = bag.dags["order_export__us"].get_task("load").on_failure_callback[0]
    assert notifier.store_id == "us"
    from order_integration.pools import pools_for

    assert pools_for(config.stores)["storefront__shop_eu"]["slots"] == 4
