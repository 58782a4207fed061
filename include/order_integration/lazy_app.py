"""An ASGI app built on its first request: what the plugin mounts on the api-server.

The plugin is loaded by every Airflow process (scheduler, dag-processor, task runners) for its
listener; only the api-server serves its apps. Building each FastAPI app on its first request keeps
FastAPI (and what the app imports) out of all the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class LazyApp:
    """An ASGI app that builds ``factory()`` on its first request (once, under a lock)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._app: Any = None
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._factory()
        await self._app(scope, receive, send)
