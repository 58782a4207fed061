"""Import, once, what every task process of this package would otherwise import for itself.

Airflow runs each task in a process forked from a long-lived one (a LocalExecutor worker, a
Celery pool process). A task that validates imports Great Expectations and pandas: about 3 s of
CPU and 240 MB, every task, and most of a per-order run's latency. When the process the tasks
are forked from has imported them already, a task inherits them copy-on-write and starts at
once. Name this module where Airflow preloads (README, "Deployment": "Task start-up"):

* LocalExecutor (the scheduler's workers)::

      AIRFLOW__SCHEDULER__MP_START_METHOD=forkserver
      AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD=order_integration.preload

* CeleryExecutor (the workers' pool processes): ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=
  order_integration.celery_config.CELERY_CONFIG`` (Celery imports this module before it forks
  its pool).

Nothing here connects to anything or reads the configuration: importing it only loads code.
"""

from __future__ import annotations

#: The modules imported, heaviest first: what the export's tasks import (``tests/unit/test_preload.py``
#: checks that every one of them is loaded after the preload).
MODULES: tuple[str, ...] = (
    "great_expectations",
    "great_expectations.expectations",
    "pandas",
    "order_integration.validation.gx_runner",
    "order_integration.validation.frames",
    "order_integration.tasks",
    "airflow.sdk.execution_time.task_runner",
    "airflow.providers.sftp.hooks.sftp",
    "airflow.providers.http.hooks.http",
)


def preload() -> None:
    """Import :data:`MODULES` (GX through :func:`~order_integration.validation.gx_runner.quiet_gx`,
    so the importing process logs none of GX's import-time bookkeeping), then ``gc.freeze()``.

    Freezing moves every object alive now out of the cyclic collector's reach, so a forked task's
    collections never write to the shared pages that hold them (each such write copies a page):
    ``bench/validate_bench.py --forked`` at 100k, the task's own memory (USS) 251 -> 174 MB and
    CPU 16.1 -> 14.6 s. These are module-level objects that live as long as the process anyway."""
    import gc
    import importlib

    from order_integration.validation.gx_runner import quiet_gx

    quiet_gx()
    for name in MODULES:
        importlib.import_module(name)
    gc.freeze()


preload()
