"""DAG integrity: the DAG files import cleanly, cheaply and without touching connections."""

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
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


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_dags_per_configured_store(dagbag):
    assert {"order_export__demo", "order_status_sync__demo", "inventory_sync__demo"} <= set(dagbag.dag_ids)


@pytest.mark.parametrize(("dag_id", "tasks"), [
    ("order_export__demo", ["extract", "validate", "load", "publish"]),
    ("order_status_sync__demo", ["sync_files"]),
    ("inventory_sync__demo", ["sync_files"]),
])
def test_tags_owner_retries_and_timeouts(dagbag, dag_id, tasks):
    dag = dagbag.dags[dag_id]
    assert {"order-integration", "store:demo"} <= set(dag.tags)
    assert [t.task_id for t in dag.topological_sort()] == tasks
    for t in dag.tasks:
        assert t.owner == "order-integration"
        assert t.retries >= 2, t.task_id
        assert t.retry_exponential_backoff, t.task_id
        assert t.execution_timeout is not None and t.execution_timeout <= timedelta(hours=2), t.task_id
    if dag_id.startswith("order_export"):
        assert dag.get_task("publish").outlets, "publish emits the store's Asset"


def test_status_sync_applies_files_in_one_task_every_ten_minutes(dagbag):
    """One task, files in name order: mapped tasks let file n+1 run while file n waits for
    its retry (issue 13, defect 2)."""
    dag = dagbag.dags["order_status_sync__demo"]
    assert dag.max_active_runs == 1
    assert [t.task_id for t in dag.tasks] == ["sync_files"]
    assert dag.timetable.expression == "*/10 * * * *"


def test_inventory_sync_applies_files_in_one_task_every_fifteen_minutes(dagbag):
    dag = dagbag.dags["inventory_sync__demo"]
    assert dag.max_active_runs == 1
    assert [t.task_id for t in dag.tasks] == ["sync_files"]
    assert dag.timetable.expression == "*/15 * * * *"
    assert "inventory-sync" in dag.tags


def test_schedule_is_an_interval_timetable(dagbag):
    """A run must cover the period before it ([10:00, 11:00) for the 11:00 run), not [L, L)
    as a plain "@hourly" string would give; the integration tests check the window itself."""
    dag = dagbag.dags["order_export__demo"]
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert dag.timetable.expression == "0 * * * *"
    assert str(dag.timetable.timezone) == "UTC"


_PROBE = textwrap.dedent(
    """
    import json, runpy, sys
    import airflow.sdk
    from airflow.sdk import BaseHook, Variable
    calls = []
    def refuse(kind):
        def _f(*a, **k):
            calls.append(kind)
            raise AssertionError(f"{kind} looked up at parse time: {a}")
        return _f
    BaseHook.get_connection = classmethod(refuse("connection"))
    Variable.get = staticmethod(refuse("variable"))
    import socket
    socket.socket.connect = refuse("network")
    before = set(sys.modules)
    for path in sys.argv[1:]:
        runpy.run_path(path)
    heavy = sorted(m for m in set(sys.modules) - before
                   if m.split(".")[0] in {"pandas", "numpy", "great_expectations", "paramiko", "asyncssh", "requests"})
    print(json.dumps({"calls": calls, "heavy": heavy}))
    """
)


def _probe(tmp_path, config_text=None):
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    env.pop("AIRFLOW_CONN_STOREFRONT_DEMO", None)
    if config_text is not None:
        cfg = tmp_path / "stores.yaml"
        cfg.write_text(config_text)
        env["ORDER_INTEGRATION_CONFIG"] = str(cfg)
    files = sorted(str(p) for p in DAGS.glob("*.py"))
    proc = subprocess.run([sys.executable, "-c", _PROBE, *files], env=env, capture_output=True, text=True,
                          check=False, timeout=120)
    return proc


def test_parse_does_no_lookups_and_no_heavy_imports(tmp_path):
    import json

    proc = _probe(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"calls": [], "heavy": []}


def test_fifty_stores_parse_without_lookups(tmp_path):
    import json

    stores = [{"id": f"shop_{i:02d}", "storefront_conn_id": f"sf_{i}", "backend_conn_id": f"be_{i}",
               "schedule": "*/30 * * * *" if i % 2 else "@hourly"} for i in range(50)]
    proc = _probe(tmp_path, yaml.safe_dump({"stores": stores}))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"calls": [], "heavy": []}


def test_bad_config_is_an_import_error_naming_the_key(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    cfg = tmp_path / "stores.yaml"
    cfg.write_text("stores:\n  - id: demo\n    storefront_conn_id: a\n    backend_conn_id: b\n    lookback: 5\n")
    monkeypatch.setenv("ORDER_INTEGRATION_CONFIG", str(cfg))
    bag = DagBag(dag_folder=str(DAGS))
    errors = "\n".join(bag.import_errors.values())
    assert "stores[0] (demo): unknown key 'lookback'" in errors


REALTIME_STORES = """
stores:
  - id: demo
    storefront_conn_id: storefront_demo
    backend_conn_id: backend_sftp_demo
  - id: fast
    mode: realtime
    realtime_poll_seconds: 2
    storefront_conn_id: storefront_fast
    backend_conn_id: backend_fast
  - id: polled
    platform: shopify
    mode: realtime
    realtime_source: polling
    storefront_conn_id: storefront_polled
    backend_conn_id: backend_polled
"""


@pytest.fixture(scope="module")
def realtime_dagbag(tmp_path_factory):
    from airflow.dag_processing.dagbag import DagBag

    cfg = tmp_path_factory.mktemp("realtime") / "stores.yaml"
    cfg.write_text(REALTIME_STORES)
    with pytest.MonkeyPatch.context() as mp:  # parsed now: the env var is gone for other fixtures
        mp.setenv("ORDER_INTEGRATION_CONFIG", str(cfg))
        return DagBag(dag_folder=str(DAGS))


def test_a_realtime_store_gets_the_realtime_dag_and_keeps_its_schedule(realtime_dagbag, dagbag):
    """Real-time mode adds ``order_export_realtime__S`` on the store's webhook-inbox Asset, watched
    by the inbox trigger; the scheduled export stays (the safety net). Batch stores get none."""
    bag = realtime_dagbag
    assert bag.import_errors == {}
    assert {"order_export__fast", "order_export_realtime__fast", "order_export__demo"} <= set(bag.dag_ids)
    assert "order_export_realtime__demo" not in bag.dag_ids
    assert not [d for d in dagbag.dag_ids if d.startswith("order_export_realtime__")]  # the packaged config
    dag = bag.dags["order_export_realtime__fast"]
    assert {"order-integration", "store:fast", "realtime"} <= set(dag.tags)
    assert dag.max_active_runs == 1
    assert [t.task_id for t in dag.topological_sort()] == [
        "take_waiting", "extract", "validate", "load", "publish", "mark_done"]
    for t in dag.tasks:
        assert t.owner == "order-integration"
        assert t.retries >= 2, t.task_id
        assert t.execution_timeout is not None and t.execution_timeout <= timedelta(hours=1), t.task_id
    assert dag.get_task("publish").outlets, "publish emits the store's orders Asset"
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    [asset] = dag.timetable.asset_condition.objects
    [watcher] = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "order_integration.inbox_trigger.WebhookInboxTrigger"
    assert kwargs["store_id"] == "fast" and kwargs["poll_seconds"] == 2.0
    assert type(bag.dags["order_export__fast"].timetable).__name__ == "CronDataIntervalTimetable"


def test_a_polling_store_gets_the_same_realtime_dag_watched_by_the_storefront_poll(realtime_dagbag):
    """``realtime_source: polling``: the same DAG and tasks on the store's inbox Asset; only the
    watcher's trigger differs (it fills the inbox from the storefront, then watches it)."""
    bag = realtime_dagbag
    dag, webhooks = bag.dags["order_export_realtime__polled"], bag.dags["order_export_realtime__fast"]
    assert [t.task_id for t in dag.topological_sort()] == [t.task_id for t in webhooks.topological_sort()]
    assert dag.max_active_runs == 1 and {"store:polled", "realtime"} <= set(dag.tags)
    [asset] = dag.timetable.asset_condition.objects
    assert asset.uri == "x-order-integration://polled/webhook-inbox"
    [watcher] = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert (watcher.name, classpath) == ("storefront_poll__polled", "order_integration.poll_trigger.StorefrontPollTrigger")
    assert kwargs == {"store_id": "polled", "poll_seconds": 5.0, "resignal_seconds": 300.0}


def test_a_realtime_store_parses_without_lookups_or_heavy_imports(tmp_path):
    import json

    proc = _probe(tmp_path, REALTIME_STORES)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"calls": [], "heavy": []}
