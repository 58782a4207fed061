"""What every DAG of this package shares: owner, retry policy, start date.

Imported at DAG parse time: standard library and pendulum only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def default_args(*, max_retry_delay: timedelta = timedelta(minutes=20)) -> dict[str, Any]:
    """Retries with exponential backoff; permanent errors skip them (``tasks.fail_fast``)."""
    return {
        "owner": "order-integration",
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": max_retry_delay,
    }


def tags(store_id: str, kind: str) -> list[str]:
    return ["order-integration", f"store:{store_id}", kind]
