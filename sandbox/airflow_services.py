"""Real Airflow components on this machine: start them, drive them like an operator, stop them.

``make up`` (:mod:`sandbox.stack`), the tests and the benchmarks start Airflow through this
module (the tests import it as ``tests.support.airflow_services``, a re-export).

``airflow standalone`` is not used: it opens log servers on all interfaces. Each component runs
as its own process (its own session, so its own process group), bound to 127.0.0.1, with log
serving off, and is stopped by process group (TERM, then KILL) — nothing outlives the ``with``.

Stable API (another test tier builds on it — extend, do not rename)::

    from sandbox.airflow_services import AirflowServices, Component, airflow_argv, LOCAL_COMPONENTS

    with AirflowServices(airflow_home, env={"ORDER_INTEGRATION_CONFIG": ..., "AIRFLOW_CONN_X": ...},
                         components=LOCAL_COMPONENTS, dag_ids=["order_export__demo"]) as services:
        api = services.api                          # AirflowApi; token from POST /auth/token on first use
        api.ensure_pools(pools)                     # {name: {"slots", "description", ...}}
                                                    # (or services.import_pools)
        api.unpause("order_export__demo")
        run_id = api.trigger("order_export__demo", conf={"k": "v"})
        state = api.wait_for_run("order_export__demo", run_id)           # "success" | "failed"
        api.task_instances("order_export__demo", run_id)                 # dicts, incl. "hostname"
        backfill = services.backfill("order_export__demo", "2026-11-02T09:00:00+00:00",
                                     "2026-11-02T11:00:00+00:00", max_active_runs=2)
        runs = api.wait_for_backfill(backfill["id"], run_ids=backfill["run_ids"])  # its dag runs
        api.wait_for_backfill(backfill["id"])       # ...and marked complete (the scheduler looks every 30 s;
                                                    # Airflow allows one running backfill per DAG)
        api.xcom("order_export__demo", run_id, "publish")                # a task's return value
        services.cli("dags", "list")                                     # any CLI call, same env

* :class:`Component` — ``name``, ``argv``, extra ``env``, and how to know it is up: ``health_key``
  (its entry in ``GET /api/v2/monitor/health``: ``scheduler``, ``triggerer``, ``dag_processor``)
  and/or ``ready_pattern`` (a regex awaited in its log, e.g. a Celery worker's ``ready.``).
  A CeleryExecutor topology is the same harness with other data::

      worker = Component("celery-worker", airflow_argv("celery", "worker", "--skip-serve-logs",
                         "--concurrency", "2"), env={"AIRFLOW__CELERY__WORKER_CONCURRENCY": "2"},
                         ready_pattern=r"celery@\\S+ ready")
      AirflowServices(home, env={"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                                 "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://...", ...},
                      components=(*LOCAL_COMPONENTS, worker), migrate=True)

* The API server's port is picked free on 127.0.0.1 (``api_port=`` to choose); every component
  gets ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL`` pointing at it, one JWT secret, and free
  ports for the (unused) log servers. Environment precedence: ``os.environ`` < harness defaults
  < ``env`` < ``Component.env``.
* Logs: ``<airflow_home>/services/<name>.log`` (stdout and stderr). Every failure —
  a component exiting, a health or DAG-parse timeout, a failed run or task retry while waiting —
  raises :class:`ServicesError` with the tail of the relevant logs (component or task logs).
* ``migrate=True`` runs ``airflow db migrate`` with the same environment first (a SQLite home
  from ``tests.support.airflow_run.migrate_airflow_db`` needs no second migration).
* Defaults for a loaded shared machine: the SQLite database ``<home>/airflow.db`` with a 60 s
  busy timeout and a 90 s execution-API timeout for task supervisors (with 5 s, a lock held by
  ``backfill create`` makes tasks fail to start). :data:`LEAN_SETTINGS` (parallelism 4, DAG
  files re-parsed every 10 minutes) is opt-in: merge it into ``env``.
* :func:`process_running` tells whether a pid is still there (tests of "nothing left behind").
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import requests

ROOT = Path(__file__).resolve().parents[1]
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
#: Task-instance states that mean "this run is going wrong": waiting on fails fast on them
#: (a retry costs at least ``retry_delay``, a minute, and would hide the first error).
BAD_TI_STATES = frozenset({"failed", "up_for_retry", "upstream_failed"})


def free_port() -> int:
    """A 127.0.0.1 port that was free a moment ago (the caller may lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Pids of all processes below ``pid`` (Linux /proc), deepest last."""
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = Path(f"/proc/{parent}/task").iterdir()
            kids = {int(k) for t in tasks for k in (t / "children").read_text().split()}
        except OSError:
            continue
        found.extend(sorted(kids))
        queue.extend(kids)
    return found


class ServicesError(RuntimeError):
    """A component or a run did not behave; the message carries the relevant log tails."""


def airflow_argv(*args: str) -> tuple[str, ...]:
    """``python -m airflow <args>`` with this interpreter (the venv's Airflow, no PATH lookup)."""
    return (sys.executable, "-m", "airflow", *args)


@dataclass(frozen=True)
class Component:
    """One long-running Airflow process, described as data.

    ``health_key`` names its entry in ``/api/v2/monitor/health`` (waited for ``healthy``);
    ``ready_pattern`` is a regex waited for in its log. With neither, "still running after the
    API server is healthy" is all that is checked."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    health_key: str | None = None
    ready_pattern: str | None = None


API_SERVER = Component("api-server", airflow_argv("api-server", "--workers", "1"))
SCHEDULER = Component("scheduler", airflow_argv("scheduler", "--skip-serve-logs"), health_key="scheduler")
DAG_PROCESSOR = Component("dag-processor", airflow_argv("dag-processor"), health_key="dag_processor")
TRIGGERER = Component("triggerer", airflow_argv("triggerer", "--skip-serve-logs"), health_key="triggerer")
#: The LocalExecutor topology: everything but workers (LocalExecutor runs tasks in the scheduler).
LOCAL_COMPONENTS: tuple[Component, ...] = (API_SERVER, SCHEDULER, DAG_PROCESSOR, TRIGGERER)


#: Settings that spare CPU in tests on small machines; merge them into ``env`` when wanted.
#: PARALLELISM: LocalExecutor would start 32 workers otherwise; DAG files are re-parsed every
#: 10 minutes instead of 30 s (the DAG files do not change during a test).
LEAN_SETTINGS: Mapping[str, str] = {
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
}


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a text file ("" when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class AirflowApi:
    """A small client of the Airflow 3 public REST API (``/api/v2``), simple auth manager.

    The token comes from ``POST /auth/token`` with the admin password the API server wrote to
    ``<airflow_home>/simple_auth_manager_passwords.json.generated``; it is fetched again on 401."""

    def __init__(self, base_url: str, airflow_home: Path, *, username: str = "admin",
                 timeout: float = 90.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.airflow_home = Path(airflow_home)
        self.username = username
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only: no proxy from the environment
        self._token: str | None = None
        #: Set by AirflowServices: extra log text for failure messages (component logs).
        self.diagnostics: Callable[[], str] = lambda: ""

    # -- plumbing ------------------------------------------------------------------------------

    def password(self) -> str:
        """The generated admin password (the API server writes the file on its first start)."""
        path = self.airflow_home / "simple_auth_manager_passwords.json.generated"
        return json.loads(path.read_text())[self.username]

    def token(self) -> str:
        """A fresh JWT from ``POST /auth/token``."""
        resp = self.session.post(f"{self.base_url}/auth/token", timeout=self.timeout,
                                 json={"username": self.username, "password": self.password()})
        if resp.status_code not in (200, 201):
            raise ServicesError(f"POST /auth/token -> {resp.status_code}: {resp.text[:500]}")
        self._token = resp.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, *, ok: Iterable[int] = (200,), **kwargs: Any) -> Any:
        """``method`` on ``/api/v2`` + ``path``; returns the decoded JSON (None when empty).

        Any status outside ``ok`` raises :class:`ServicesError` with the body."""
        url = f"{self.base_url}/api/v2{path}"
        extra_headers = kwargs.pop("headers", {})
        for attempt in range(2):
            if self._token is None:
                self.token()
            headers = {**extra_headers, "Authorization": f"Bearer {self._token}"}
            resp = self.session.request(method, url, timeout=self.timeout, headers=headers, **kwargs)
            if resp.status_code == 401 and attempt == 0:
                self._token = None  # expired: one new token, then give up
                continue
            break
        if resp.status_code not in set(ok):
            raise ServicesError(f"{method} {path} -> {resp.status_code}: {resp.text[:2000]}")
        return resp.json() if resp.content else None

    # -- DAGs and runs -------------------------------------------------------------------------

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG as the API knows it (parsed by the dag-processor), None if unknown yet."""
        found = self.request("GET", f"/dags/{_q(dag_id)}", ok=(200, 404))
        return found if found and found.get("dag_id") == dag_id else None  # a 404 body is {"detail": ...}

    def import_errors(self) -> list[dict[str, Any]]:
        """DAG files that failed to parse (``filename``, ``stack_trace``)."""
        return list(self.request("GET", "/importErrors", params={"limit": 100})["import_errors"])

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self.request("PATCH", f"/dags/{_q(dag_id)}", json={"is_paused": paused})

    def unpause(self, dag_id: str) -> dict[str, Any]:
        """Unpause: the scheduler runs nothing (not even manual runs) of a paused DAG."""
        return self.set_paused(dag_id, False)

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *,
                run_id: str | None = None, note: str | None = None, logical_date: str | None = None) -> str:
        """Trigger a manual run (no logical date, as the UI does, unless ``logical_date`` is
        given: then the run covers that date's data interval); returns its run id.

        On SQLite a concurrent writer can make the API answer 500 ("database is locked"); the
        request is sent again (up to 3 times) under the same run id, so a retry never makes a
        second run: 409 (the first attempt did commit) counts as created."""
        from datetime import UTC, datetime

        run_id = run_id or f"manual__{datetime.now(UTC).isoformat()}"
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {}), "dag_run_id": run_id}
        if note:
            body["note"] = note
        path = f"/dags/{_q(dag_id)}/dagRuns"
        for attempt in range(3):
            created = self.request("POST", path, json=body, ok=(200, 409, 500))
            if created and created.get("dag_run_id") == run_id:
                return run_id
            if attempt and self.run_or_none(dag_id, run_id) is not None:
                return run_id  # 409 after a 500: the earlier attempt went through
            time.sleep(2)
        raise ServicesError(f"POST {path} failed 3 times: {created}\n{self.diagnostics(['api-server'])}")

    def run_or_none(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        found = self.request("GET", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}", ok=(200, 404))
        return found if found and found.get("dag_run_id") == run_id else None

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def runs(self, dag_id: str, *, run_type: str | Sequence[str] | None = None,
             state: str | Sequence[str] | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Runs of ``dag_id``, oldest logical date / run_after first."""
        params: dict[str, Any] = {"limit": limit, "order_by": "run_after"}
        if run_type:
            params["run_type"] = [run_type] if isinstance(run_type, str) else list(run_type)
        if state:
            params["state"] = [state] if isinstance(state, str) else list(state)
        return list(self.request("GET", f"/dags/{_q(dag_id)}/dagRuns", params=params)["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's task instances: ``task_id``, ``map_index``, ``state``, ``try_number``,
        ``hostname`` (the worker that ran it), ``start_date``/``end_date``..."""
        path = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances"
        return list(self.request("GET", path, params={"limit": 1000})["task_instances"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """One try's log as text (read by the API server from the local log folder)."""
        path = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}"
        body = self.request("GET", path, params={"full_content": "true", "map_index": map_index},
                            headers={"Accept": "application/json"}, ok=(200, 404))
        if not body or "content" not in body:  # 404: {"detail": ...}
            return ""
        content = body["content"]
        if isinstance(content, str):
            return content
        # structured logs: a list of {"event": ..., "timestamp": ..., "level": ..., "error_detail": ...}
        return "\n".join(_log_line(c) for c in content)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value",
             map_index: int = -1) -> Any:
        """A task's XCom value (e.g. a summary a task returned), None when there is none."""
        path = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}"
        body = self.request("GET", path, params={"map_index": map_index, "deserialize": "true"},
                            ok=(200, 404))
        if not body or "value" not in body:
            return None
        value = body["value"]
        if isinstance(value, str):  # deserialize=true may hand back the JSON text
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value

    # -- pools ---------------------------------------------------------------------------------

    def ensure_pools(self, pools: Mapping[str, Mapping[str, Any]]) -> None:
        """Create or update pools from ``{name: {"slots", "description", "include_deferred"}}``
        (the ``airflow pools import`` format) through the API: no 3-second CLI start."""
        for name, spec in pools.items():
            body = {"name": name, "slots": int(spec["slots"]), "description": spec.get("description"),
                    "include_deferred": bool(spec.get("include_deferred", False))}
            created = self.request("POST", "/pools", json=body, ok=(200, 201, 409))
            if created is None or created.get("name") != name:  # 409: it exists, update it
                self.request("PATCH", f"/pools/{_q(name)}", json=body)

    def describe_run(self, dag_id: str, run_id: str, log_lines: int = 40) -> str:
        """Each task instance's state, and the log tail of every one that went wrong."""
        out = [f"run {dag_id} / {run_id}:"]
        for ti in self.task_instances(dag_id, run_id):
            out.append(f"  {ti['task_id']}[{ti['map_index']}] {ti['state']} try={ti['try_number']} "
                       f"host={ti.get('hostname')}")
            if ti["state"] in BAD_TI_STATES and ti["try_number"]:
                log = self.task_log(dag_id, run_id, ti["task_id"], ti["try_number"], ti["map_index"])
                out.extend("      " + line for line in log.splitlines()[-log_lines:])
        return "\n".join(out)

    def _check_tis(self, dag_id: str, run_id: str, fail_fast: bool) -> None:
        if fail_fast and any(ti["state"] in BAD_TI_STATES for ti in self.task_instances(dag_id, run_id)):
            raise ServicesError(f"a task went wrong\n{self.describe_run(dag_id, run_id)}")

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float = 300, poll: float = 1.0,
                     fail_fast: bool = True) -> str:
        """Wait until the run is ``success`` or ``failed``; return that state.

        ``fail_fast`` raises at once when a task fails or is up for retry (with its log) rather
        than sit out retry delays. A timeout raises with the run's task states and component logs."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run(dag_id, run_id)["state"]
            if state in TERMINAL_RUN_STATES:
                if state == "failed" and fail_fast:
                    raise ServicesError(f"run failed\n{self.describe_run(dag_id, run_id)}")
                return state
            self._check_tis(dag_id, run_id, fail_fast)
            if time.monotonic() > deadline:
                raise ServicesError(f"run still {state} after {timeout:.0f}s\n"
                                    f"{self.describe_run(dag_id, run_id)}\n{self.diagnostics()}")
            time.sleep(poll)

    # -- backfills -----------------------------------------------------------------------------

    def backfills(self, dag_id: str) -> list[dict[str, Any]]:
        """Backfills of ``dag_id``, newest last."""
        found = self.request("GET", "/backfills", params={"dag_id": dag_id, "limit": 100})["backfills"]
        return sorted(found, key=lambda b: b["id"])

    def backfill(self, backfill_id: int) -> dict[str, Any]:
        return self.request("GET", f"/backfills/{backfill_id}")

    def wait_for_backfill(self, backfill_id: int, *, run_ids: Iterable[str] | None = None,
                          timeout: float = 600, poll: float = 2.0,
                          fail_fast: bool = True) -> list[dict[str, Any]]:
        """Wait until the backfill is done; return its runs (oldest first).

        Done: every run in ``run_ids`` (as :meth:`AirflowServices.backfill` returns them) is
        ``success``/``failed`` — or, without ``run_ids``, the scheduler has set ``completed_at``,
        which it checks only every 30 s. Its runs are those of type ``backfill`` in its date
        range queued after it was created (a reprocessed run keeps its id and is queued again)."""
        wanted = set(run_ids) if run_ids is not None else None
        deadline = time.monotonic() + timeout
        while True:
            bf = self.backfill(backfill_id)
            runs = self.backfill_runs(bf)
            if fail_fast:
                for run in runs:
                    if run["state"] == "failed":
                        described = self.describe_run(bf["dag_id"], run["dag_run_id"])
                        raise ServicesError(f"backfill run failed\n{described}")
                    if run["state"] == "running":
                        self._check_tis(bf["dag_id"], run["dag_run_id"], True)
            terminal = {r["dag_run_id"] for r in runs if r["state"] in TERMINAL_RUN_STATES}
            if wanted is not None and wanted <= terminal:
                return [r for r in runs if r["dag_run_id"] in wanted]
            if wanted is None and bf["completed_at"] and len(terminal) == len(runs):
                return runs
            if time.monotonic() > deadline:
                states = ", ".join(f"{r['dag_run_id']}={r['state']}" for r in runs)
                raise ServicesError(f"backfill {backfill_id} not complete after {timeout:.0f}s: "
                                    f"{states or 'no runs'}\n{self.diagnostics()}")
            time.sleep(poll)

    def backfill_runs(self, bf: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The runs of backfill ``bf`` (a dict from :meth:`backfill`), oldest logical date first."""
        lo, hi, created = _utc(bf["from_date"]), _utc(bf["to_date"]), _utc(bf["created_at"])
        return [r for r in self.runs(bf["dag_id"], run_type="backfill", limit=1000)
                if r["logical_date"] and lo <= _utc(r["logical_date"]) <= hi
                and r["queued_at"] and _utc(r["queued_at"]) >= created]


class AirflowServices:
    """Start ``components`` against ``airflow_home``; a context manager (see the module docstring).

    ``env`` is added to ``os.environ`` (after the harness's defaults) for every component and
    for :meth:`cli`. ``dag_ids``: wait until the API lists these DAGs (the dag-processor has
    parsed them) before ``__enter__`` returns; an import error of the DAG folder fails at once."""

    def __init__(
        self,
        airflow_home: Path | str,
        env: Mapping[str, str] | None = None,
        components: Sequence[Component] = LOCAL_COMPONENTS,
        *,
        dag_ids: Iterable[str] = (),
        api_port: int | None = None,
        migrate: bool = False,
        start_timeout: float = 240.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.airflow_home = Path(airflow_home).resolve()
        self.components = tuple(components)
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique: {names}")
        self.dag_ids = tuple(dag_ids)
        self.api_port = api_port or free_port()
        self.migrate = migrate
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.log_dir = self.airflow_home / "services"
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.env = {**os.environ, **self._defaults(), **(env or {})}
        self.api = AirflowApi(self.base_url, self.airflow_home)
        self.api.diagnostics = self.diagnostics
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_handles: list[Any] = []

    def _defaults(self) -> dict[str, str]:
        """Loopback only, no log servers, one JWT secret, the execution API on our port."""
        return {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            # Log servers are switched off per component (--skip-serve-logs); should one start
            # anyway (a component without the flag), it gets a free port, not the fixed 8793/8794.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # SQLite: four components write at once; on a loaded machine a writer can hold the
            # lock longer than sqlite3's default 5 s busy timeout ("database is locked" -> HTTP
            # 500 from the execution API, a task that never starts). Wait up to 60 s instead.
            # Callers with another database pass their own AIRFLOW__DATABASE__SQL_ALCHEMY_CONN.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}?timeout=60",
            # ...and the task supervisors must wait for such an answer: with the default 5 s they
            # time out, retry a call that did go through, get 409/400 back and fail the task.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "90",
            # LocalExecutor: the scheduler's workers fork from a forkserver that imported GX and
            # pandas once, so a task process starts with them (~3 s CPU less per task;
            # include/order_integration/preload.py).
            "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
            "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": "order_integration.preload",
            "GX_ANALYTICS_ENABLED": "False",
            "NO_PROXY": "127.0.0.1,localhost",
        }

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> AirflowServices:
        atexit.register(self.stop)  # belt and braces: an interpreter exit also stops the groups
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        atexit.unregister(self.stop)

    def start(self) -> None:
        """Spawn every component, then wait for health, readiness and the DAGs."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.migrate:
            self.cli("db", "migrate", timeout=600)
        for comp in self.components:
            log = open(self.log_dir / f"{comp.name}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._log_handles.append(log)
            self.procs[comp.name] = subprocess.Popen(
                list(comp.argv), env={**self.env, **comp.env}, cwd=self.airflow_home,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stopped as a whole
            )
        deadline = time.monotonic() + self.start_timeout
        self._wait_healthy(deadline)
        self._wait_ready_patterns(deadline)
        if self.dag_ids:
            self.wait_for_dags(self.dag_ids, timeout=max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        """TERM every process group (last started first), KILL what is left after the timeout,
        then any descendant that left the group. Idempotent."""
        procs = list(self.procs.items())[::-1]
        self.procs = {}
        family = {name: [p.pid, *descendants(p.pid)] for name, p in procs}
        for _, proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for _, proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _, proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group may outlive its leader
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        leftovers = [pid for pids in family.values() for pid in pids]
        for pid in leftovers:  # e.g. a task process that started its own session
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5  # SIGKILL is asynchronous: return once they are gone
        while ((leftovers := [pid for pid in leftovers if process_running(pid)])
               and time.monotonic() < deadline):
            time.sleep(0.05)
        for handle in self._log_handles:
            handle.close()
        self._log_handles = []

    # -- readiness -----------------------------------------------------------------------------

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ServicesError(f"{name} exited with {proc.returncode}\n"
                                    f"--- {name}.log ---\n{tail(self.log_file(name), 80)}")

    def health(self) -> dict[str, Any] | None:
        """``GET /api/v2/monitor/health`` (no auth needed), None while the API is not up."""
        try:
            resp = self.api.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
        except requests.RequestException:
            return None
        return resp.json() if resp.status_code == 200 else None

    def _wait_healthy(self, deadline: float) -> None:
        keys = [c.health_key for c in self.components if c.health_key]
        while True:
            self._check_alive()
            health = self.health()
            if health is not None and all((health.get(k) or {}).get("status") == "healthy"
                                          for k in ["metadatabase", *keys]):
                return
            if time.monotonic() > deadline:
                raise ServicesError(f"components not healthy after {self.start_timeout:.0f}s: "
                                    f"{health}\n{self.diagnostics()}")
            time.sleep(1)

    def _wait_ready_patterns(self, deadline: float) -> None:
        for comp in self.components:
            if not comp.ready_pattern:
                continue
            pattern = re.compile(comp.ready_pattern)
            while not pattern.search(self.log_file(comp.name).read_text(errors="replace")):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise ServicesError(f"{comp.name}: {comp.ready_pattern!r} not in its log\n"
                                        f"{self.diagnostics([comp.name])}")
                time.sleep(1)

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 120.0) -> None:
        """Wait until the API knows every DAG of ``dag_ids``; fail at once on an import error."""
        missing = list(dag_ids)
        deadline = time.monotonic() + timeout
        while missing:
            self._check_alive()
            missing = [d for d in missing if self.api.dag(d) is None]
            if not missing:
                return
            errors = self.api.import_errors()
            if errors:
                text = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise ServicesError(f"DAG import errors:\n{text}")
            if time.monotonic() > deadline:
                raise ServicesError(f"DAGs not parsed after {timeout:.0f}s: {missing}\n"
                                    f"{self.diagnostics(['dag-processor'])}")
            time.sleep(1)

    # -- logs and CLI --------------------------------------------------------------------------

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def diagnostics(self, names: Iterable[str] | None = None, lines: int = 40) -> str:
        """The tail of each component's log (all components by default)."""
        chosen = list(names) if names is not None else [c.name for c in self.components]
        return "\n".join(f"--- {n}.log ---\n{tail(self.log_file(n), lines)}" for n in chosen)

    def cli(self, *args: str, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``airflow <args>`` with the services' environment; raises with its output unless
        ``check=False``."""
        proc = subprocess.run(list(airflow_argv(*args)), env=self.env, cwd=self.airflow_home,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise ServicesError(f"airflow {' '.join(args)} -> {proc.returncode}\n"
                                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def import_pools(self, pools: Mapping[str, Mapping[str, Any]]) -> None:
        """``airflow pools import`` of ``{name: {"slots", "description", "include_deferred"}}``
        (the format of ``airflow pools export``); Airflow never schedules a task whose pool is
        missing. Works before :meth:`start` too (it only needs the database)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / "pools.json"
        path.write_text(json.dumps(dict(pools), indent=1))
        self.cli("pools", "import", str(path))

    def backfill(self, dag_id: str, from_date: str, to_date: str, *, max_active_runs: int | None = None,
                 reprocess_behavior: str | None = None, run_backwards: bool = False,
                 conf: Mapping[str, Any] | None = None, dry_run: bool = False) -> dict[str, Any]:
        """``airflow backfill create --dag-id … --from-date … --to-date …`` (both dates inclusive,
        logical dates). Returns the new backfill as the API shows it (``id``, ``from_date``…)
        plus ``run_ids``, the runs it queued (new or reprocessed; pass them to
        :meth:`AirflowApi.wait_for_backfill`); for ``dry_run`` returns ``{"output": <the CLI's
        list of runs>}``."""
        args = ["backfill", "create", "--dag-id", dag_id, "--from-date", from_date, "--to-date", to_date]
        if max_active_runs is not None:
            args += ["--max-active-runs", str(max_active_runs)]
        if reprocess_behavior:
            args += ["--reprocess-behavior", reprocess_behavior]
        if run_backwards:
            args.append("--run-backwards")
        if conf:
            args += ["--dag-run-conf", json.dumps(dict(conf))]
        if dry_run:
            args.append("--dry-run")
        before = {b["id"] for b in self.api.backfills(dag_id)}
        attempts = 4  # a loaded machine (parallel test workers) holds SQLite's write lock longer
        for attempt in range(1, attempts + 1):
            proc = self.cli(*args, check=False)
            if proc.returncode == 0 or attempt == attempts or "database is locked" not in proc.stderr:
                break
            if any(b["id"] not in before for b in self.api.backfills(dag_id)):
                break  # a half-made backfill: report it, a retry would be refused anyway
            time.sleep(2 * attempt)  # SQLite: another component held the write lock; nothing was created
        if proc.returncode != 0:
            raise ServicesError(f"airflow {' '.join(args)} -> {proc.returncode}\n"
                                f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        if dry_run:
            return {"output": proc.stdout}
        created = [b for b in self.api.backfills(dag_id) if b["id"] not in before]
        if len(created) != 1:
            raise ServicesError(f"expected one new backfill of {dag_id}, found {created}\n"
                                f"{proc.stdout[-3000:]}")
        # The CLI commits every run before it returns, so they can be listed now.
        return {**created[0], "run_ids": [r["dag_run_id"] for r in self.api.backfill_runs(created[0])]}


def _log_line(entry: Any) -> str:
    """One structured task-log entry as text, with the exception when it carries one."""
    if not isinstance(entry, dict):
        return str(entry)
    line = f"{entry.get('level', '')} {entry.get('event', '')}".strip()
    for err in entry.get("error_detail") or []:
        if isinstance(err, dict):
            line += f"\n    {err.get('exc_type')}: {err.get('exc_value')}"
    return line


def process_running(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie has exited; its parent reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _q(part: str) -> str:
    """URL-quote one path segment (run ids contain ``:`` and ``+``)."""
    return quote(part, safe="")


def _utc(text: str) -> float:
    """An API timestamp (ISO 8601 with ``Z`` or offset) as a POSIX time, for comparisons."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
