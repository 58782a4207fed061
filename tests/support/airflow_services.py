"""Real Airflow components for tests and benchmarks: a re-export of :mod:`sandbox.airflow_services`.

The harness moved into the product (``make up`` starts the same components through it); the
names tests and benchmarks import from here stay (see that module's docstring for the API)::

    from tests.support.airflow_services import AirflowServices, Component, airflow_argv, LOCAL_COMPONENTS
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sandbox.airflow_services import (
    API_SERVER,
    BAD_TI_STATES,
    DAG_PROCESSOR,
    LEAN_SETTINGS,
    LOCAL_COMPONENTS,
    ROOT,
    SCHEDULER,
    TERMINAL_RUN_STATES,
    TRIGGERER,
    AirflowApi,
    AirflowServices,
    Component,
    ServicesError,
    airflow_argv,
    descendants,
    process_running,
    tail,
)

__all__ = [
    "API_SERVER", "BAD_TI_STATES", "DAG_PROCESSOR", "LEAN_SETTINGS", "LOCAL_COMPONENTS", "ROOT", "SCHEDULER",
    "TERMINAL_RUN_STATES", "TRIGGERER", "AirflowApi", "AirflowServices", "Component", "ServicesError",
    "airflow_argv", "cmdline", "descendants", "preloaded", "process_running", "tail", "wait_until",
]

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, services: AirflowServices,
               poll: float = 1.0) -> T:
    """``condition()``'s first truthy value, polled every ``poll`` s; past ``timeout`` a
    :class:`ServicesError` naming ``what`` with the components' diagnostics."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ServicesError(f"{what}: not within {timeout:.0f}s\n{services.diagnostics()}")
        time.sleep(poll)


def cmdline(pid: int) -> bytes:
    """Process ``pid``'s command line as its title shows it (``setproctitle`` rewrites it), or
    ``b""`` once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def preloaded(pid: int) -> bool:
    """Whether process ``pid`` holds ``order_integration.preload``'s imports (pandas' compiled
    libraries are mapped into it), so that the task processes forked from it inherit them."""
    try:
        return "/pandas/_libs/" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
