"""Throw-away infrastructure for the distributed tier: PostgreSQL, Redis, an S3 server.

Each server runs from the machine's Debian / PyPI packages on a free 127.0.0.1 port, as one
child process in its own process group (``start_new_session``), so ``stop()`` ends it and
anything it forked by process group id, never by name. Everything a server writes lives in
the ``base_dir`` it is given (PostgreSQL's data directory excepted, see :class:`Postgres`).

* :class:`Postgres` — ``initdb`` + ``postgres`` (apt ``postgresql``); databases on demand.
* :class:`Redis` — ``redis-server --bind 127.0.0.1 --save ''`` (apt ``redis-server``).
* :class:`S3Server` — moto's standalone server (PyPI ``moto[s3]`` + flask/flask-cors): an
  S3 REST API that ``s3fs`` / ``ObjectStoragePath("s3://…")`` talk to through an Airflow
  ``aws`` connection whose extra holds ``endpoint_url``. MinIO is not on PyPI or in Debian.

The system packages are installed by ``make system-deps``; a missing one fails with the
``apt-get`` line that brings it.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self

import yaml

from tests.support.sshd import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
HOST = "127.0.0.1"
# Test-only credentials for loopback servers; nothing here is a real secret.
S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION = "test-access-key", "test-secret-key", "us-east-1"


def _apt_hint(package: str) -> str:
    return f"apt-get install -y {package} (or: make system-deps)"


def worker_hostname() -> str:
    """``[core] hostname_callable`` for tests: ``$ORDER_INTEGRATION_TEST_HOSTNAME``, else the FQDN.

    Two Celery workers on one machine share its hostname; giving each its own name here is
    what lets a test see, in the task instances' ``hostname``, which worker ran what."""
    return os.environ.get("ORDER_INTEGRATION_TEST_HOSTNAME") or socket.getfqdn()


class ServerProcess:
    """One server process in its own process group, with a log file and a readiness probe."""

    name = "server"
    #: the signal that asks the server for a quick, clean stop
    stop_signal = signal.SIGTERM

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.base_dir / f"{self.name}.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _spawn(self, argv: Sequence[str], *, ready: Callable[[], bool], timeout: float,
               env: dict[str, str] | None = None, **popen: Any) -> None:
        """Start ``argv`` in a new session and wait until ``ready()`` or the process dies."""
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=env, start_new_session=True, **popen,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready on port {self.port} within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """Signal the process group, wait, then SIGKILL it if it is still there."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, self.stop_signal)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # children that outlived the leader are still in its group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- PostgreSQL ----------------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    """Path of a PostgreSQL server binary: on PATH, else Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found. {_apt_hint('postgresql')}")
    return found


class Postgres(ServerProcess):
    """A PostgreSQL cluster on 127.0.0.1:``port`` (and a unix socket), superuser ``airflow``,
    ``trust`` authentication (loopback only), durability off (test data, speed matters).

    PostgreSQL refuses to run as root: as root the cluster runs as the ``postgres`` user
    (created by the Debian package), in a directory of its own under the system temp dir,
    because pytest's temp dirs are private to root. Removed again by :meth:`stop`."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: rolls back open sessions instead of waiting
    user = "airflow"

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self._run_as: str | None = None
        self.cluster_dir: Path | None = None

    def start(self, timeout: float = 60.0) -> Self:
        initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
        popen: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise RuntimeError(f"running as root needs the 'postgres' user. {_apt_hint('postgresql')}") from exc
            self._run_as = "postgres"
            popen = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self.cluster_dir = Path(tempfile.mkdtemp(prefix="oi-postgres-"))
        if self._run_as:
            os.chown(self.cluster_dir, popen["user"], popen["group"])
        data = self.cluster_dir / "data"
        with self.log_file.open("ab") as log:
            subprocess.run(
                [initdb, "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--locale=C",
                 "--no-sync"],
                check=True, stdout=log, stderr=log, cwd=self.cluster_dir, timeout=120, **popen,
            )
        self.port = free_port()
        argv = [postgres, "-D", str(data), "-h", HOST, "-p", str(self.port), "-k", str(self.cluster_dir),
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200", "-c", "logging_collector=off"]
        self._spawn(argv, ready=self._ready, timeout=timeout, cwd=self.cluster_dir, **popen)
        return self

    def _ready(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(host=HOST, port=self.port, user=self.user, dbname="postgres",
                             connect_timeout=1).close()
            return True
        except psycopg2.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        """Create database ``name`` (if missing) and return its SQLAlchemy URL (psycopg2)."""
        import psycopg2

        conn = psycopg2.connect(host=HOST, port=self.port, user=self.user, dbname="postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@{HOST}:{self.port}/{database}"

    def airflow_connection(self, database: str) -> dict[str, Any]:
        """An Airflow ``postgres`` connection (JSON form) to ``database``."""
        return {"conn_type": "postgres", "host": HOST, "port": self.port, "login": self.user,
                "schema": database}

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        if self.cluster_dir is not None:
            shutil.rmtree(self.cluster_dir, ignore_errors=True)
            self.cluster_dir = None


# -- Redis ------------------------------------------------------------------------------------------


class Redis(ServerProcess):
    """``redis-server`` on 127.0.0.1:``port``, no persistence, protected mode on."""

    name = "redis"

    def start(self, timeout: float = 20.0) -> Self:
        server = shutil.which("redis-server")
        if not server:
            raise RuntimeError(f"redis-server not found. {_apt_hint('redis-server')}")
        self.port = free_port()
        argv = [server, "--bind", HOST, "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--dir", str(self.base_dir), "--daemonize", "no", "--protected-mode", "yes"]
        self._spawn(argv, ready=self._ready, timeout=timeout)
        return self

    def _ready(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host=HOST, port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"


# -- S3 ---------------------------------------------------------------------------------------------


class S3Server(ServerProcess):
    """moto's S3 server on 127.0.0.1:``port`` (in memory: its buckets die with it)."""

    name = "s3"

    def start(self, timeout: float = 30.0) -> Self:
        self.port = free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]
        # moto needs some credentials to sign against, never real ones
        env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
        self._spawn(argv, ready=self._ready, timeout=timeout, env=env)
        return self

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _ready(self) -> bool:
        if not _port_open(self.port):
            return False
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=1):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=S3_REGION,
                            aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in ``bucket``."""
        paginator = self.client().get_paginator("list_objects_v2")
        return [obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
                for obj in page.get("Contents", [])]

    def airflow_connection(self) -> dict[str, Any]:
        """An Airflow ``aws`` connection (JSON form) to this server: ``endpoint_url`` in extra."""
        return {"conn_type": "aws", "login": S3_ACCESS_KEY, "password": S3_SECRET_KEY,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": S3_REGION}}


# -- the deployment's environment, shared with docker-compose.yaml ------------------------------

#: Keys of the compose Airflow environment whose values are paths inside the image; a loopback
#: run replaces them with the repository's paths (the names stay the same).
IMAGE_PATH_KEYS = frozenset({"AIRFLOW__CORE__DAGS_FOLDER", "ORDER_INTEGRATION_CONFIG"})
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(KeyError):
    """A ``${NAME:?message}`` whose variable is unset or empty (compose refuses to start)."""


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Docker compose's interpolation of ``text``: ``${NAME}``, ``${NAME:-default}``,
    ``${NAME-default}``, ``${NAME:?message}``, ``${NAME?message}`` and ``$$`` (a literal ``$``)."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = variables.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and missing:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and missing:
            return arg
        return value or ""

    return _VARIABLE.sub(sub, text)


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """docker-compose.yaml as data (YAML anchors and merge keys resolved)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def check_env_module() -> ModuleType:
    """``docker/check_env.py`` (the deployment's start-up check; not a package) as a module."""
    spec = importlib.util.spec_from_file_location("order_integration_check_env", ROOT / "docker" / "check_env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env_example() -> dict[str, str]:
    """The committed ``.env.example`` as docker compose reads it."""
    return check_env_module().read_env_file(ENV_EXAMPLE)


def compose_airflow_env(variables: Mapping[str, str], compose: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The Airflow services' environment of docker-compose.yaml (``x-airflow-common``), with
    ``${...}`` filled from ``.env.example`` overlaid by ``variables``."""
    compose = compose if compose is not None else load_compose()
    merged = {**env_example(), **variables}
    raw = compose["x-airflow-common"]["environment"]
    return {key: interpolate(str(value), merged) for key, value in raw.items()}


# -- the compose topology on loopback: servers + Airflow (CeleryExecutor, two workers) ----------

#: What a loopback run of the compose deployment sets on top of its environment, and why.
LOOPBACK_ENV: dict[str, str] = {
    # the scheduler's health server binds all interfaces; only loopback is allowed here
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
    # two workers on one machine share its hostname: each reports its own name instead
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.support.infra.worker_hostname",
    "PYTHONPATH": str(ROOT),
    # a killed worker's task is declared dead after 20 s without heartbeat (default 300 s)
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
    # CI has 2 cores for everything here: one task per worker (compose: 2 per worker machine)
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
    # only the runs a test creates (backfills, triggers): a scheduled run of the current hour
    # would also call the storefront and could take a fault a test queued for its own run
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
}
#: A cluster policy for test deployments: retries after 2 s instead of the DAGs' minute with
#: exponential backoff, so a retry costs seconds (that it happens, and where, is what counts).
FAST_RETRY_POLICY = '''
from datetime import timedelta


def task_policy(task):
    task.retry_delay = timedelta(seconds=2)
    task.retry_exponential_backoff = 0
'''
#: Health entries of /api/v2/monitor/health per compose command; workers are awaited by log.
HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
STAGING_BUCKET, STAGING_PREFIX = "order-staging", "staging"


def compose_components(compose: Mapping[str, Any], workers: Sequence[str]) -> tuple[Any, ...]:
    """The Airflow components of the compose file, from the services' own commands; one
    Celery worker per name in ``workers`` (none: LocalExecutor runs tasks in the scheduler)."""
    from tests.support.airflow_services import Component, airflow_argv

    found = []
    worker_command: list[str] = []
    for name, service in compose["services"].items():
        command = [str(part) for part in service.get("command") or []]
        if not name.startswith("airflow-") or not command:
            continue
        if command[0] == "celery":
            worker_command = command
            continue
        found.append(Component(command[0], airflow_argv(*command), health_key=HEALTH_KEYS.get(command[0])))
    for worker in workers:
        argv = airflow_argv(*worker_command, "--celery-hostname", f"{worker}@%h")
        found.append(Component(worker, argv, env={"ORDER_INTEGRATION_TEST_HOSTNAME": worker},
                               ready_pattern=rf"{worker}@\S+ ready"))
    return tuple(found)


class Cluster:
    """A running loopback deployment: servers, Airflow services (``services``/``api``), env."""

    def __init__(self, *, services: Any, pg: Postgres, redis: Redis, s3: S3Server, sshd: Any,
                 env: dict[str, str], variables: dict[str, str]) -> None:
        self.services, self.api = services, services.api
        self.pg, self.redis, self.s3, self.sshd = pg, redis, s3, sshd
        self.env, self.variables = env, variables

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's process group and every descendant (its task processes run in
        groups of their own): what losing the worker's machine looks like to the others."""
        from tests.support.sshd import _descendants

        proc = self.services.procs[name]
        family = [proc.pid, *_descendants(proc.pid)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def loopback_cluster(base_dir: Path, storefront: Any, *, workers: Sequence[str] = ("worker-1", "worker-2"),
                     executor_env: Mapping[str, str] | None = None, local_settings: str | None = None,
                     dag_ids: Sequence[str] = ()) -> Iterator[Cluster]:
    """docker-compose.yaml's topology on 127.0.0.1, by process id: PostgreSQL (metadata DB and
    the ``order_ledger`` database), Redis, the S3 server (bucket ``order-staging``), OpenSSH,
    and the compose Airflow services with ``workers`` Celery workers, for ``include/stores.yaml``
    against ``storefront`` (a started :class:`~sandbox.storefront.SandboxStorefront`).

    The environment is the compose file's (``x-airflow-common``, filled from ``.env.example``
    and this run's addresses) with the image paths replaced, plus :data:`LOOPBACK_ENV` and
    ``executor_env``. ``local_settings``: an ``airflow_local_settings.py`` (cluster policies)."""
    import base64
    import json
    import secrets

    from order_integration.config import load_config
    from order_integration.pools import pools_for
    from tests.support.airflow_services import AirflowServices
    from tests.support.sshd import start_sshd

    compose = load_compose()
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(Postgres(base_dir / "postgres").start())
        redis = stack.enter_context(Redis(base_dir / "redis").start())
        s3 = stack.enter_context(S3Server(base_dir / "s3").start())
        sshd = stack.enter_context(start_sshd(base_dir / "sshd"))
        pg.create_database("airflow")
        pg.create_database("order_ledger")
        s3.create_bucket(STAGING_BUCKET)
        api_port = free_port()
        variables = {  # what .env would hold on these machines
            "POSTGRES_HOST": HOST, "POSTGRES_PORT": str(pg.port),
            "POSTGRES_PASSWORD": "loopback-trust-auth",  # the test cluster trusts loopback
            "REDIS_HOST": HOST, "REDIS_PORT": str(redis.port),
            "AIRFLOW_API_HOST": HOST, "AIRFLOW_API_PORT": str(api_port),
            "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "AIRFLOW_JWT_SECRET": secrets.token_hex(32), "AIRFLOW_API_SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW_ADMIN_PASSWORD": secrets.token_hex(8),
            "MINIO_ROOT_USER": S3_ACCESS_KEY, "MINIO_ROOT_PASSWORD": S3_SECRET_KEY,
            "S3_ENDPOINT_URL": s3.endpoint_url,
            "ORDER_INTEGRATION_STAGING": f"s3://order_staging@{STAGING_BUCKET}/{STAGING_PREFIX}",
            "AIRFLOW_CONN_STOREFRONT_DEMO": json.dumps({
                "conn_type": "http", "host": storefront.base_url,
                "login": storefront.app.key, "password": storefront.app.secret}),
            "AIRFLOW_CONN_BACKEND_SFTP_DEMO": json.dumps(sshd.airflow_connection()),
        }
        env = compose_airflow_env(variables, compose)
        env.update({"AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                    "ORDER_INTEGRATION_CONFIG": str(ROOT / "include" / "stores.yaml")})
        problems = check_env_module().check({**variables, **env})
        if problems:  # the start-up check must accept a working environment
            raise RuntimeError(f"docker/check_env.py refuses the loopback environment: {problems}")
        env.update(LOOPBACK_ENV)
        env.update(executor_env or {})

        home = base_dir / "airflow_home"
        (home / "config").mkdir(parents=True, exist_ok=True)
        if local_settings:
            (home / "config" / "airflow_local_settings.py").write_text(local_settings)
        # the ledger's schema, as airflow-init makes it (docker/airflow-init.sh): workers never do
        migrated = subprocess.run([sys.executable, "-m", "order_integration", "ledger", "migrate"],
                                  env={**os.environ, **env, "AIRFLOW_HOME": str(home)}, cwd=home,
                                  capture_output=True, text=True, timeout=120, check=False)
        if migrated.returncode != 0:
            raise RuntimeError(f"ledger migrate failed:\n{migrated.stdout[-2000:]}\n{migrated.stderr[-2000:]}")
        services = stack.enter_context(AirflowServices(
            home, env=env, components=compose_components(compose, workers), dag_ids=list(dag_ids),
            api_port=api_port, migrate=True, start_timeout=240))
        # the pools the DAGs use, as airflow-init creates them in the compose deployment
        services.api.ensure_pools(pools_for(load_config(env["ORDER_INTEGRATION_CONFIG"]).stores))
        yield Cluster(services=services, pg=pg, redis=redis, s3=s3, sshd=sshd, env=env, variables=variables)
