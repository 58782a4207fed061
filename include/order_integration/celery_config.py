"""Celery settings for a CeleryExecutor deployment of this package: Airflow's own defaults, plus
:mod:`order_integration.preload` imported by each worker before it forks its pool, so task
processes start with Great Expectations and pandas loaded instead of importing them per task.

Select it with ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=order_integration.celery_config.CELERY_CONFIG``
(``docker-compose.yaml`` does). Importing this module is light: Celery imports the preload
module only when a worker starts (``imports``), never in the scheduler that sends the tasks.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CELERY_CONFIG,
    "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), "order_integration.preload"),
}
