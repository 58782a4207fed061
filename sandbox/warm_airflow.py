"""``python -m airflow ARGS`` for ``make demo`` and the tests, each run in its own process,
without importing Airflow, pandas and Great Expectations from scratch each time: a warm runner
that forks. (``make demo``'s seven ``airflow dags test`` runs took about 16 s each, almost all of
it the start-up below.)

Why a forking runner, not ``dag.test()`` in the pytest process
--------------------------------------------------------------
``airflow dags test`` is ``get_bagged_dag()`` + ``dag.test()``; its tasks already run in its
own process (``run_task_in_process``). Of the ~25 s one export run took on two cores, about
15 s were the same every time: the interpreter and CLI imports, building the in-process
Execution API app (Cadwyn) before the first task, pandas and GX imports in the first task
that uses them, and interpreter teardown. Calling ``dag.test()`` in the pytest process would
save that too, but would change what is tested:

* a failpoint ``kill`` (``SIGKILL`` of the task process) would kill pytest, so those runs
  would still need a process, and the suite would mix two ways of running the same DAG;
* Airflow reads ``AIRFLOW_HOME`` and its SQLAlchemy URL once, at import: the fault, scheduler
  and demo tests use homes of their own, and one pytest process imports Airflow once;
* each run's environment (``ORDER_INTEGRATION_CONFIG``, ``AIRFLOW_CONN_*``, failpoint plans)
  would be set and undone around in-process calls, and whatever the package or Airflow
  caches at module level (parsed DAG modules, connections, plugins, log handlers) would
  carry from one run into the next;
* a run's output would be log records caught in pytest, not the stdout/stderr the summary
  parser reads from a real ``airflow dags test``.

The runner keeps the process boundary and the command instead. A server process (one per
Airflow environment, see below) imports the third-party stack once — Airflow's CLI, the task
SDK, the Execution API app, the SFTP and HTTP providers, pandas, Great Expectations — and
writes ``airflow.cfg`` if the home has none, as the first CLI run would. For every run it
``fork()``s a child that takes the run's environment and working directory, points fd 0 at
``/dev/null`` and fds 1 and 2 at files, and runs ``python -m airflow ARGS``
(``runpy.run_module("airflow", run_name="__main__")``, exactly what ``-m`` does). The child
is an ordinary process with its own pid: a failpoint's ``SIGKILL`` ends it and only it (the
return code is ``-9``, as ``subprocess`` reports it), a timeout kills it, its SQLite
connections are its own (the pooled engine inherited from the server is disposed with
``close=False`` first, as SQLAlchemy prescribes after a fork), nothing it does reaches the
next run. The package under test (``order_integration``), the DAG files and the plugins are
*not* imported by the server — the server checks that — so they are imported and parsed in
each run under that run's environment, as in a fresh ``airflow dags test``. After the
command the child runs the ``atexit`` hooks (Airflow's ORM disposal, logging shutdown,
finalizers) and leaves with ``os._exit``: the interpreter's module teardown, ~3 s of garbage
collection, is the one step skipped.

What a server pre-imports is read under its environment, so a server is keyed by the run
environment minus the variables read while a run runs (``AIRFLOW_CONN_*`` — the environment
secrets backend looks them up per call —, ``ORDER_INTEGRATION_*`` — the package is imported
only in the child — and ``PYTEST_CURRENT_TEST``). A run whose environment differs in anything
else (another ``AIRFLOW_HOME``, an ``AIRFLOW__…`` setting) gets a server of its own.

``SANDBOX_COLD_AIRFLOW=1`` runs every command as a plain ``subprocess.run`` instead (the old
way; for comparing timings or ruling the runner out when a run fails).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

COLD_ENV = "SANDBOX_COLD_AIRFLOW"
#: Read at run time, never while the server warms up (see the module docstring).
RUN_TIME_PREFIXES = ("AIRFLOW_CONN_", "ORDER_INTEGRATION_")
RUN_TIME_NAMES = frozenset({"PYTEST_CURRENT_TEST"})
#: Third-party modules a run of the package's DAGs imports anyway; nothing of the package.
WARM_MODULES = (
    "airflow.__main__",
    "airflow.cli.commands.dag_command",
    "airflow.dag_processing.dagbag",
    "airflow.models.dagrun",
    "airflow.sdk",
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.api_fastapi.execution_api.app",
    "airflow.providers.sftp.hooks.sftp",
    "airflow.providers.http.hooks.http",
    "airflow.providers.standard.operators.python",
    "pandas",
    "great_expectations",
    "msgspec",
    "pendulum",
    "yaml",
)
PACKAGE_MODULES = ("order_integration", "dags", "plugins", "sandbox", "tests")


def _server_key(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in env.items()
                        if k not in RUN_TIME_NAMES and not k.startswith(RUN_TIME_PREFIXES)))


# ---------------------------------------------------------------------------------------------
# client side (the demo's or pytest's process)


class _Server:
    """One warm server process; runs one command at a time."""

    def __init__(self, env: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="warm_airflow_"))
        self.log = self.dir / "server.log"
        self.lock = threading.Lock()
        self.runs = 0
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "sandbox.warm_airflow"],
                                         env=env, cwd=Path(__file__).resolve().parents[1],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self.ready = False

    def _answer(self, deadline: float | None) -> dict[str, Any]:
        out = self.proc.stdout
        assert out is not None
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([out], [], [], wait)[0]:
            raise TimeoutError
        line = out.readline()
        if not line:
            raise RuntimeError(f"warm Airflow server exited ({self.proc.poll()}):\n"
                               f"{self.log.read_text(errors='replace')[-4000:]}")
        return json.loads(line)

    def run(self, args: list[str], env: dict[str, str], timeout: float,
            log: Path | None = None) -> tuple[int, str, str]:
        with self.lock:
            if not self.ready:  # the warm-up (imports) counts against no run's timeout
                ready = self._answer(None)
                assert ready["ready"] is True, ready
                _add_cpu(ready)  # the warm-up's, counted to the first run's test
                self.ready = True
            self.runs += 1
            out, err = (log, log) if log else (self.dir / f"run_{self.runs}.out",
                                               self.dir / f"run_{self.runs}.err")
            request = {"args": args, "env": env, "cwd": os.getcwd(), "stdout": str(out), "stderr": str(err)}
            stdin: IO[bytes] | None = self.proc.stdin
            assert stdin is not None
            stdin.write(json.dumps(request).encode() + b"\n")
            stdin.flush()
            pid = self._answer(time.monotonic() + 60)["pid"]
            try:
                answer = self._answer(time.monotonic() + timeout)
            except TimeoutError:
                os.kill(pid, 9)
                _add_cpu(self._answer(None))
                raise subprocess.TimeoutExpired(["airflow", *args], timeout, _read(out),
                                                None if log else _read(err)) from None
            _add_cpu(answer)
            if log:
                return answer["returncode"], _read(log), ""
            try:
                return answer["returncode"], _read(out), _read(err)
            finally:
                out.unlink(missing_ok=True)
                err.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.dir.rmdir()


#: CPU seconds of the runs that ended so far (user + system, each run's reaped children
#: included): they are the servers' children, not this process's, so ``RUSAGE_CHILDREN`` misses
#: them until a server stops. The suite's "most CPU" list adds them to the test that ran them.
runs_cpu = 0.0


def _add_cpu(answer: dict[str, Any]) -> None:
    global runs_cpu
    runs_cpu += answer.get("cpu", 0.0)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


_servers: dict[tuple[tuple[str, str], ...], _Server] = {}
_servers_lock = threading.Lock()


@atexit.register
def _stop_servers() -> None:
    for server in _servers.values():
        server.stop()
    _servers.clear()


def run_airflow(args: list[str], env: dict[str, str], timeout: float, *,
                log: Path | None = None) -> tuple[int, str]:
    """``python -m airflow ARGS`` with ``env``: ``(returncode, stdout + stderr)``, like
    ``subprocess.run(..., capture_output=True, text=True, timeout=timeout)`` (which is what
    runs when ``SANDBOX_COLD_AIRFLOW`` is set); raises ``subprocess.TimeoutExpired`` likewise.
    With ``log``, stdout and stderr go to that file as the run writes them, interleaved as on a
    terminal, and the text returned is the file's."""
    if os.environ.get(COLD_ENV):
        # here, not at the top: the server (this module run as ``__main__``) imports no sandbox module
        from sandbox.airflow_services import airflow_argv

        argv = list(airflow_argv(*args))
        if log:
            with log.open("w") as fh:
                proc = subprocess.run(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False,
                                      timeout=timeout)
            return proc.returncode, _read(log)
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=timeout)
        return proc.returncode, proc.stdout + proc.stderr
    key = _server_key(env)
    with _servers_lock:
        server = _servers.get(key)
        if server is None or server.proc.poll() is not None:
            server = _servers[key] = _Server(dict(key))
    code, out, err = server.run(args, env, timeout, log)
    return code, out + err


# ---------------------------------------------------------------------------------------------
# server side (python -m sandbox.warm_airflow)


def _warm_up() -> None:
    import importlib

    from airflow.configuration import write_default_airflow_configuration_if_needed

    write_default_airflow_configuration_if_needed()
    for name in WARM_MODULES:
        importlib.import_module(name)
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    app = in_process_api_server().app  # built once per process, before the first task
    # Cadwyn generates the versioned routers on the app's first request, not when it is built:
    # about 4 s of CPU, which every run would otherwise pay again in its own child.
    if not app._cadwyn_initialized:
        app._cadwyn_initialize()
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in PACKAGE_MODULES
                    and m not in ("sandbox", "sandbox.warm_airflow"))
    if loaded:
        raise RuntimeError(f"the warm-up imported the package under test or its DAGs: {loaded}")
    if threading.active_count() != 1:
        raise RuntimeError(f"threads alive before fork: {threading.enumerate()}")


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become ``python -m airflow ARGS`` with the request's env; never returns."""
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        # 0o666 less the umask, as open() creates files: a demo's log is as readable as the
        # shell's would be; a test's files are in the server's private (0700) folder
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        os.dup2(out, 1)  # one file for both (a log) is one open file: interleaved, not overwritten
        os.dup2(out if request["stderr"] == request["stdout"] else
                os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), 2)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]  # as ``python -m`` started there would have it
        from airflow import settings

        if settings.engine is not None:
            settings.engine.dispose(close=False)
        import numpy

        numpy.random.seed()  # a fresh process draws its own seed; a fork would share the server's
        import runpy

        sys.argv = ["airflow", *request["args"]]
        # imported by the warm-up (its imports are what is kept); left in sys.modules, runpy
        # would warn at the top of every run's output that it is executed a second time
        sys.modules.pop("airflow.__main__", None)
        try:
            runpy.run_module("airflow", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:  # as the interpreter reports it
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # nothing left to report to
                stream.flush()
        os._exit(code)


def _serve() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints of the server go to its log, never into the answers
    _warm_up()
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    answers.write(json.dumps({"ready": True, "cpu": own.ru_utime + own.ru_stime}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            answers.close()
            _child(request)
        answers.write(json.dumps({"pid": pid}) + "\n")
        _, status, usage = os.wait4(pid, 0)  # the run's CPU, its own reaped children's included
        answers.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status),
                                  "cpu": usage.ru_utime + usage.ru_stime}) + "\n")


if __name__ == "__main__":
    _serve()
