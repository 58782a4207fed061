"""docker-compose.yaml, checked as far as a machine without Docker allows.

The file loads; the image tag, the Dockerfile and the lock agree on the Airflow version; every
Airflow command (services and health checks) parses with Airflow's own CLI; every
``AIRFLOW__SECTION__KEY`` is a real option; the environment carries the package's contract
(the store config's connections, the ledger, staging) and is the one the distributed tier runs
with; a missing or malformed ``.env`` value fails at start-up naming the variable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from order_integration.config import load_config
from order_integration.ledger import LEDGER_CONN_ID
from tests.support.infra import (
    COMPOSE_FILE,
    IMAGE_PATH_KEYS,
    LOOPBACK_ENV,
    ROOT,
    MissingVariable,
    check_env_module,
    compose_airflow_env,
    env_example,
    interpolate,
    load_compose,
)

pytestmark = pytest.mark.unit

AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker-1", "airflow-worker-2")
#: the secrets .env must provide (empty in .env.example)
SECRETS = {"POSTGRES_PASSWORD": "p4ssw0rd", "AIRFLOW_FERNET_KEY": "A" * 43 + "=",
           "AIRFLOW_JWT_SECRET": "j" * 40, "AIRFLOW_API_SECRET_KEY": "s" * 40,
           "AIRFLOW_ADMIN_PASSWORD": "admin-pw", "MINIO_ROOT_PASSWORD": "minio-pw"}
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcOhZ0h1e6vYbY2WQq3q0fP7Zr2Xr1w7zqfJmPq9k1H"


@pytest.fixture(scope="module")
def compose():
    return load_compose()


def _airflow_pin() -> str:
    [pin] = re.findall(r"^apache-airflow==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    return pin


def _filled_env(**changes: str) -> dict[str, str]:
    """What a filled-in .env gives: .env.example + secrets + the SFTP host key."""
    env = {**env_example(), **SECRETS}
    sftp = json.loads(env["AIRFLOW_CONN_BACKEND_SFTP_DEMO"])
    sftp["extra"]["host_key"] = HOST_KEY
    env["AIRFLOW_CONN_BACKEND_SFTP_DEMO"] = json.dumps(sftp)
    env.update(changes)
    return env


def test_every_service_is_there_with_health_checks_and_start_order(compose):
    services = compose["services"]
    assert set(AIRFLOW_SERVICES) | {"postgres", "redis", "minio", "minio-init", "sftp", "storefront",
                                    "erp-simulator"} == set(services)
    for name in ("postgres", "redis", "minio", "sftp", *AIRFLOW_SERVICES[1:], "storefront"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in AIRFLOW_SERVICES[1:]:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy"
        assert deps["minio-init"]["condition"] == "service_completed_successfully"
    assert {services[n]["profiles"][0] for n in ("storefront", "erp-simulator")} == {"sandbox"}
    assert all("profiles" not in services[n] for n in set(services) - {"storefront", "erp-simulator"})
    assert services["airflow-worker-1"]["hostname"] != services["airflow-worker-2"]["hostname"]


def test_the_airflow_image_is_the_pinned_version_everywhere(compose):
    pin = _airflow_pin()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG AIRFLOW_VERSION={pin}\n" in dockerfile
    assert "FROM apache/airflow:${AIRFLOW_VERSION}-python" in dockerfile
    assert re.search(r"-r /opt/order-integration/requirements\.txt", dockerfile)
    built = [n for n, s in compose["services"].items() if s.get("build") == compose["x-airflow-build"]]
    assert set(built) == {*AIRFLOW_SERVICES, "storefront", "erp-simulator"}
    assert compose["x-airflow-build"]["args"]["AIRFLOW_VERSION"] == pin
    for name in built:
        assert compose["services"][name]["image"].endswith(f":{pin}"), name


def _airflow_commands(compose) -> list[list[str]]:
    """Every Airflow CLI call of the compose file: service commands and health checks."""
    found = []
    for name in AIRFLOW_SERVICES[1:]:
        service = compose["services"][name]
        found.append([str(a) for a in service["command"]])
        test = service["healthcheck"]["test"]
        text = test[1] if test[0] == "CMD-SHELL" else " ".join(test[1:])
        if text.startswith("airflow "):
            found.append([a.strip('"') for a in text.split()[1:]])
    init = (ROOT / "docker" / "airflow-init.sh").read_text()
    found += [line.split()[1:] for line in init.splitlines() if line.startswith("airflow ")]
    return found


def test_commands_are_airflow_subcommands_of_the_pinned_version(compose):
    commands = _airflow_commands(compose)
    assert ["celery", "worker", "--skip-serve-logs"] in commands and ["api-server"] in commands
    keys = sorted({k for k in compose["x-airflow-common"]["environment"] if k.startswith("AIRFLOW__")}
                  | {k for k in LOOPBACK_ENV if k.startswith("AIRFLOW__")})
    # one interpreter parses every command with Airflow's own CLI (the celery group exists only
    # under CeleryExecutor) and looks every AIRFLOW__SECTION__KEY up in Airflow's config
    script = """
import json, sys
from airflow.cli.cli_parser import get_parser
from airflow.configuration import conf
commands, keys = json.loads(sys.argv[1]), json.loads(sys.argv[2])
bad = []
for argv in commands:
    try:
        get_parser().parse_args(argv)
    except SystemExit:
        bad.append(" ".join(argv))
described = conf.configuration_description
unknown = [k for k in keys
           if k.lower().split("__")[2] not in described.get(k.lower().split("__")[1], {}).get("options", {})]
print(json.dumps({"bad": bad, "unknown": unknown, "version": __import__("airflow").__version__}))
"""
    env = {**os.environ, "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(commands), json.dumps(keys)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["version"] == _airflow_pin()
    assert result["bad"] == [], f"not Airflow {result['version']} commands: {result['bad']}\n{proc.stderr[-2000:]}"
    assert result["unknown"] == [], f"unknown config options: {result['unknown']}"


def test_the_init_and_make_airflow_db_migrate_the_ledger():
    """Workers never create or alter ledger tables: the one-shot init does, before them (every
    Airflow service waits for airflow-init), and so does ``make airflow-db`` locally."""
    from order_integration.__main__ import parser

    init = [line.strip() for line in (ROOT / "docker" / "airflow-init.sh").read_text().splitlines()]
    step = "python -m order_integration ledger migrate"
    assert step in init and init.index(step) > init.index("airflow db migrate")
    makefile = (ROOT / "Makefile").read_text()
    target = makefile[makefile.index("\nairflow-db:"):makefile.index("\ndemo:")]
    assert "$(PY) -m order_integration ledger migrate" in target
    assert parser().parse_args(step.split()[3:]).func.__name__ == "_ledger_migrate"


def test_the_environment_carries_the_package_contract(compose):
    env = compose_airflow_env(_filled_env(), compose)
    assert {"ORDER_INTEGRATION_CONFIG", "ORDER_INTEGRATION_STAGING"} <= set(env)
    assert f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}" in env
    for store in load_config(ROOT / "include" / "stores.yaml").stores:
        for conn_id in (store.storefront_conn_id, store.backend_conn_id):
            assert f"AIRFLOW_CONN_{conn_id.upper()}" in env, conn_id
            assert f"AIRFLOW_CONN_{conn_id.upper()}" in env_example(), conn_id
    staging = env["ORDER_INTEGRATION_STAGING"]
    assert staging.startswith("s3://")
    conn_id = staging[len("s3://"):].split("@", 1)[0]
    assert json.loads(env[f"AIRFLOW_CONN_{conn_id.upper()}"])["conn_type"] == "aws"
    for name in (k for k in env if k.startswith("AIRFLOW_CONN_")):
        json.loads(env[name])  # every connection is valid JSON once interpolated
    mounted = "/opt/airflow/config/stores.yaml"
    assert env["ORDER_INTEGRATION_CONFIG"] == mounted
    assert f"./include/stores.yaml:{mounted}:ro" in compose["x-airflow-common"]["volumes"]
    assert check_env_module().check({**_filled_env(), **env}) == []


def test_the_distributed_tier_runs_with_the_same_environment(compose):
    # the loopback tier takes the compose environment as it is and changes only image paths;
    # what it adds on top (LOOPBACK_ENV) is tuning for one small machine, never the contract
    assert set(compose["x-airflow-common"]["environment"]) >= IMAGE_PATH_KEYS
    contract = {k for k in compose["x-airflow-common"]["environment"]
                if k.startswith(("ORDER_INTEGRATION_", "AIRFLOW_CONN_"))}
    assert not contract & set(LOOPBACK_ENV)
    assert "AIRFLOW__CORE__EXECUTOR" not in LOOPBACK_ENV


def test_no_secret_is_committed_in_the_template():
    example = env_example()
    for name in SECRETS:
        assert example[name] == "", f"{name} must be empty in .env.example"
    sftp = json.loads(example["AIRFLOW_CONN_BACKEND_SFTP_DEMO"])
    assert sftp["extra"]["host_key"] == "" and "private_key" not in sftp["extra"]
    assert "no_host_key_check" not in sftp["extra"]
    assert (ROOT / "docker" / "secrets" / ".gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]


@pytest.mark.parametrize("name", ["POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_CONN_STOREFRONT_DEMO",
                                  "ORDER_INTEGRATION_STAGING"])
def test_a_missing_variable_stops_compose_naming_it(compose, name):
    variables = _filled_env()
    variables[name] = ""
    with pytest.raises(MissingVariable, match=name):
        compose_airflow_env(variables, compose)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("AIRFLOW_CONN_BACKEND_SFTP_DEMO", '{"conn_type": "sftp", "host": "sftp"', "not valid JSON"),
    ("AIRFLOW_CONN_BACKEND_SFTP_DEMO", json.dumps({"conn_type": "sftp", "host": "sftp", "login": "backend",
                                                   "extra": {"key_file": "/k", "host_key": "AAAAC3Nza"}}),
     "host_key must be"),
    ("AIRFLOW_CONN_BACKEND_SFTP_DEMO", json.dumps({"conn_type": "sftp", "host": "sftp", "login": "backend",
                                                   "extra": {"key_file": "/k", "host_key": HOST_KEY,
                                                             "no_host_key_check": "true"}}),
     "no_host_key_check is refused"),
    ("AIRFLOW_CONN_STOREFRONT_DEMO", json.dumps({"conn_type": "http", "host": "shop.example.com"}),
     "base URL with scheme"),
    ("AIRFLOW_FERNET_KEY", "not-a-key", "32 bytes"),
    ("AIRFLOW_JWT_SECRET", "short", "too short"),
    ("POSTGRES_PASSWORD", 'p"w@x', "use only"),
    ("ORDER_INTEGRATION_STAGING", "gs://bucket/x", "not supported"),
])
def test_a_malformed_value_fails_the_start_up_check_naming_it(tmp_path, name, value, message):
    env_file = tmp_path / ".env"
    env = {**_filled_env(), name: value}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    config = str(ROOT / "include" / "stores.yaml")
    proc = subprocess.run([sys.executable, str(ROOT / "docker" / "check_env.py"), "--env-file", str(env_file),
                           "--config", config], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    problems = [line for line in proc.stderr.splitlines() if line.startswith("check_env: ") and ": " in line[11:]]
    assert any(line.startswith(f"check_env: {name}: ") and message in line for line in problems), proc.stderr


def test_a_store_without_its_connection_fails_the_start_up_check(tmp_path):
    config = tmp_path / "stores.yaml"
    stores = yaml.safe_load((ROOT / "include" / "stores.yaml").read_text())
    stores["stores"].append({**stores["stores"][0], "id": "shop2", "storefront_conn_id": "storefront_shop2"})
    config.write_text(yaml.safe_dump(stores))
    problems = check_env_module().check({**_filled_env(), "AIRFLOW_CONN_ORDER_STAGING": "{\"conn_type\": \"aws\"}"},
                                        str(config))
    assert problems == ["AIRFLOW_CONN_STOREFRONT_SHOP2: missing; the store config names connection 'storefront_shop2'"]


def test_interpolation_follows_compose_rules():
    assert interpolate("${A:-x}/${B-y}/${C}/$$HOME", {"A": "", "B": ""}) == "x//" + "/$HOME"
    with pytest.raises(MissingVariable, match="A: say"):
        interpolate("${A:?say}", {"A": ""})
    assert interpolate("${A?say}", {"A": ""}) == ""
    assert COMPOSE_FILE.name == "docker-compose.yaml"
