import textwrap

import pytest

from order_integration.config import cron_of, load_config, parse_config, staging_base
from order_integration.exceptions import ConfigError

pytestmark = pytest.mark.unit

MINIMAL = {"stores": [{"id": "demo", "storefront_conn_id": "sf", "backend_conn_id": "be"}]}


def test_packaged_default_config_loads():
    config = load_config()
    store = config.store("demo")
    assert store.platform == "woocommerce"
    assert store.export_statuses == ("processing", "on-hold")
    assert store.backend.format == "csv"


def test_defaults_fill_optional_keys():
    store = parse_config(MINIMAL).stores[0]
    assert (store.schedule, store.lookback_minutes, store.validation.max_quarantine_ratio) == ("@hourly", 10, 0.05)
    assert store.status_sync_schedule == "*/10 * * * *"
    assert (store.inventory_sync_schedule, store.manage_stock_on_apply) == ("*/15 * * * *", False)
    assert (store.backend.inbound_dir, store.backend.outbound_dir, store.backend.stock_dir) == (
        "inbound", "outbound", "stock")


@pytest.mark.parametrize(
    ("patch", "names"),
    [
        ({"colour": "red"}, "stores[0] (demo): unknown key 'colour'"),
        ({"backend": {"format": "xml"}}, "stores[0] (demo).backend.format: 'xml'"),
        ({"backend": {"inbox": "x"}}, "stores[0] (demo).backend: unknown key 'inbox'"),
        ({"validation": {"max_quarantine_ratio": 1.5}}, "validation.max_quarantine_ratio: 1.5"),
        ({"lookback_minutes": -1}, "lookback_minutes: -1"),
        ({"lookback_minutes": True}, "lookback_minutes: True"),
        ({"schedule": "every hour"}, "schedule: 'every hour'"),
        ({"status_sync_schedule": "*/10 * *"}, "status_sync_schedule: '*/10 * *'"),
        ({"inventory_sync_schedule": "often"}, "stores[0] (demo).inventory_sync_schedule: 'often'"),
        ({"manage_stock_on_apply": "yes"}, "stores[0] (demo).manage_stock_on_apply: 'yes' is not true or false"),
        ({"manage_stock_on_apply": 1}, "manage_stock_on_apply: 1"),
        ({"platform": "magento"}, "platform: 'magento'"),
        ({"mode": "streaming"}, "stores[0] (demo).mode: 'streaming' is not one of batch, realtime"),
        ({"realtime_poll_seconds": 0}, "stores[0] (demo).realtime_poll_seconds: 0 is not an integer in 1..3600"),
        ({"mode": "realtime", "realtime_source": "sse"},
         "stores[0] (demo).realtime_source: 'sse' is not one of webhooks, polling"),
        ({"realtime_source": "polling"}, "stores[0] (demo).realtime_source: 'polling' needs mode: realtime"),
        ({"export_statuses": []}, "export_statuses"),
        ({"id": "Bad-Id"}, "stores[0].id: 'Bad-Id'"),
    ],
)
def test_bad_values_are_refused_naming_the_key(patch, names):
    raw = {"stores": [{**MINIMAL["stores"][0], **patch}]}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert names in str(err.value)


@pytest.mark.parametrize(("key", "cron"), [
    ("schedule", "99 * * * *"), ("status_sync_schedule", "0 24 * * *"), ("inventory_sync_schedule", "0 0 32 * *"),
    ("schedule", "0 0 * 13 *"), ("schedule", "0 0 * * 8"), ("schedule", "*/0 * * * *"), ("schedule", "0 0 * * MON-XYZ"),
])
def test_a_cron_airflow_would_refuse_is_refused_at_load_naming_store_and_key(key, cron):
    """The shape check took ``99 * * * *``; the DAG then failed to import. croniter (what
    Airflow's timetables validate with) decides, when the config is read (issue 13, defect 6)."""
    raw = {"stores": [{**MINIMAL["stores"][0], key: cron}]}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert str(err.value).startswith(f"stores[0] (demo).{key}: {cron!r} is not a valid cron expression: ")


@pytest.mark.parametrize("cron", ["*/7 * * * *", "0 6-18 * * MON-FRI", "30 2 L * *", "0 0 * * 5#2", "0 0 1W * *",
                                  "0 0 ? * *", "0 0 * * 7", "@daily"])
def test_crons_airflow_takes_are_taken(cron):
    from airflow.timetables.interval import CronDataIntervalTimetable

    store = parse_config({"stores": [{**MINIMAL["stores"][0], "schedule": cron}]}).stores[0]
    CronDataIntervalTimetable(cron_of(store.schedule), timezone="UTC").validate()


def test_mode_is_batch_unless_realtime_is_asked_for():
    assert (parse_config(MINIMAL).stores[0].mode, parse_config(MINIMAL).stores[0].realtime_poll_seconds) == (
        "batch", 5)
    raw = {"stores": [{**MINIMAL["stores"][0], "mode": "realtime", "realtime_poll_seconds": 2}]}
    store = parse_config(raw).stores[0]
    assert (store.mode, store.realtime_poll_seconds, store.realtime_source) == ("realtime", 2, "webhooks")
    polled = parse_config({"stores": [{**raw["stores"][0], "realtime_source": "polling"}]}).stores[0]
    assert (polled.mode, polled.realtime_source) == ("realtime", "polling")


def test_inventory_keys_are_read():
    raw = {"stores": [{**MINIMAL["stores"][0], "inventory_sync_schedule": "*/5 * * * *",
                       "manage_stock_on_apply": True}]}
    store = parse_config(raw).stores[0]
    assert (store.inventory_sync_schedule, store.manage_stock_on_apply) == ("*/5 * * * *", True)


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError, match=r"stores\[0\] \(demo\)\.backend_conn_id: required"):
        parse_config({"stores": [{"id": "demo", "storefront_conn_id": "sf"}]})


def test_duplicate_store_ids_are_refused():
    with pytest.raises(ConfigError, match="appears twice"):
        parse_config({"stores": [MINIMAL["stores"][0], MINIMAL["stores"][0]]})


def test_unknown_top_level_key_and_empty_stores():
    with pytest.raises(ConfigError, match="unknown key 'store'"):
        parse_config({"store": []})
    with pytest.raises(ConfigError, match="non-empty list"):
        parse_config({"stores": []})


def test_unknown_store_lookup_lists_known_ones():
    with pytest.raises(ConfigError, match=r"store 'nope' is not in the config \(stores: demo\)"):
        parse_config(MINIMAL).store("nope")


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "stores.yaml"
    bad.write_text("stores: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read store config"):
        load_config(tmp_path / "missing.yaml")


def test_env_var_selects_config(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""
        stores:
          - id: shop_b
            storefront_conn_id: sf_b
            backend_conn_id: be_b
            schedule: "*/30 * * * *"
    """))
    monkeypatch.setenv("ORDER_INTEGRATION_CONFIG", str(path))
    assert [s.id for s in load_config().stores] == ["shop_b"]


def test_cron_presets_and_staging_default(monkeypatch, tmp_path):
    assert cron_of("@hourly") == "0 * * * *"
    assert cron_of("*/30 * * * *") == "*/30 * * * *"
    monkeypatch.delenv("ORDER_INTEGRATION_STAGING", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert staging_base() == f"file://{tmp_path.resolve()}/order_staging"
    monkeypatch.setenv("ORDER_INTEGRATION_STAGING", "s3://bucket/staging/")
    assert staging_base() == "s3://bucket/staging"


def test_an_unchanged_file_is_parsed_once_and_a_changed_one_again(tmp_path):
    import os

    from order_integration.config import load_config

    path = tmp_path / "stores.yaml"
    path.write_text("stores:\n  - {id: a, storefront_conn_id: s, backend_conn_id: b}\n")
    first = load_config(path)
    assert load_config(path) is first
    path.write_text("stores:\n  - {id: b, storefront_conn_id: s, backend_conn_id: b}\n")
    os.utime(path, ns=(1, 1))  # a changed file, even one whose mtime went backwards
    assert [s.id for s in load_config(path).stores] == ["b"]
