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
                       ("order_ids", ["null", "array"]), ("resend", ["null", "boolean"]),
                       ("dry_run", ["null", "boolean"])):
        param = params.get_param(name)
        assert param.schema["type"] == kind, name
        assert param.schema.get("title") and param.description, f"{name}: the form needs a title and help"
    assert params.get_param("order_ids").schema["maxItems"] == 500
    assert params["resend"] is False and params["dry_run"] is False
    assert dag.get_task("check_request").retries == 0, "a refused form is not retried"


# What Airflow 3.3's trigger form does with a param schema (its UI bundle, FieldSelector and
# FlexibleForm): an array whose ``items`` have no ``type`` (or type ``string``) is a text box,
# one entry per line, sent as a list of strings; any other array is a JSON editor. A field is
# marked required (a red star) unless its ``type`` lists ``null``.
def _ui_renders_lines(schema):
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return "array" in types and (schema.get("items") or {}).get("type") in (None, "string")


def _ui_marks_required(schema):
    return bool(schema.get("type")) and (not isinstance(schema["type"], list) or "null" not in schema["type"])


def test_on_demand_form_takes_ids_one_per_line_and_marks_nothing_required(dagbag):
    params = dagbag.dags["order_export_on_demand__demo"].params
    assert _ui_renders_lines(params.get_param("order_ids").schema), "order ids must be a text box"
    for name in ("start", "end", "order_ids", "resend", "dry_run"):
        assert not _ui_marks_required(params.get_param(name).schema), f"{name} shows a required star"


@pytest.fixture(scope="module")
def served_params(dagbag):
    """The form as the api-server holds it (the serialized DAG): the REST API and the UI's
    trigger validate a run's conf against it before the run exists (HTTP 400 when it fails)."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dagbag.dags["order_export_on_demand__demo"]
    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).params


@pytest.mark.parametrize("conf", [
    {"order_ids": ["1200", "1204"]},                 # the form, one id per line
    {"order_ids": ["1200", "", "1204, 1205", " "]},  # blank lines, a pasted "a, b" line
    {"order_ids": [1001, 1002], "resend": True},     # the CLI / REST form the README shows
    {"start": "2026-11-02T10:00:00Z", "end": "2026-11-02T11:00:00Z", "dry_run": True},
])
def test_on_demand_form_accepts_the_documented_forms(served_params, conf):
    served_params.deep_merge(conf).validate()


@pytest.mark.parametrize("conf", [
    {"order_ids": ["12a"]}, {"order_ids": ["²"]}, {"order_ids": ["٣"]}, {"order_ids": [0]},
    {"order_ids": [-5]}, {"order_ids": [2**64]}, {"order_ids": [1.5]}, {"order_ids": ["1-2"]},
    {"order_ids": [str(i) for i in range(1, 502)]},
])
def test_on_demand_form_refuses_what_its_schema_can_say_before_a_run_exists(served_params, conf):
    from airflow.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        served_params.deep_merge(conf).validate()


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
    assert dagbag.dags["order_status_sync__demo"].get_task("sync_files").pool == "storefront__storefront_demo"


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
