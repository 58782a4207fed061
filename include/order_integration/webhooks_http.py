"""The HTTP side of the webhook receiver: the ASGI app the plugin mounts on Airflow's api-server.

``POST /order-integration/webhooks/<store_id>`` reads the raw body — never more than the
receiver's limit, :data:`~order_integration.webhooks.MAX_BODY_BYTES` (a larger declared ``Content-Length`` is
refused before reading, a body that grows past it is refused as soon as it does) — and hands it
to :meth:`order_integration.webhooks.Receiver.receive` in a worker thread (it reads the
connection and writes the ledger, both blocking). Nothing else is decided here.

Authentication: Airflow mounts a plugin's FastAPI app with ``app.mount()``; it inherits none of
the core API's auth dependencies and no api-server middleware authenticates it, so this route is
reachable without an Airflow login — as storefronts need. It authenticates every delivery by
its signature instead, and offers nothing else (no GET, no listing).

:data:`app` builds the FastAPI app on its first request, so the many processes that load the
plugin only for its listener (scheduler, dag-processor, task runners) never import FastAPI.
"""

# No ``from __future__ import annotations``: FastAPI reads the route's annotations, and
# ``Request`` is imported inside create_app (string annotations would not resolve there).
import re
from typing import Any

from order_integration.lazy_app import LazyApp
from order_integration.webhooks import ROUTE, URL_PREFIX, default_receiver

_DIGITS = re.compile(r"[0-9]{1,18}")  # a Content-Length (ASCII digits only)

__all__ = ["URL_PREFIX", "WebhookApp", "app", "create_app"]


def create_app(receiver_factory: Any = default_receiver) -> Any:
    """The FastAPI app with the one route. ``receiver_factory`` gives the
    :class:`~order_integration.webhooks.Receiver` at request time (tests pass their own)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    api = FastAPI(title="order-integration webhooks", docs_url=None, redoc_url=None, openapi_url=None)

    @api.post(ROUTE)
    async def webhook(store_id: str, request: Request) -> JSONResponse:
        receiver = receiver_factory()
        limit = receiver.max_body
        declared = request.headers.get("content-length", "")
        body = bytearray()
        too_large = _DIGITS.fullmatch(declared) is not None and int(declared) > limit
        if not too_large:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    too_large = True
                    break
        if too_large:
            answer = await run_in_threadpool(receiver.oversize, store_id)
        else:
            answer = await run_in_threadpool(receiver.receive, store_id, dict(request.headers), bytes(body))
        return JSONResponse(answer.body, status_code=answer.status)

    return api


class WebhookApp(LazyApp):
    """An ASGI app that builds :func:`create_app` on its first request."""

    def __init__(self) -> None:
        super().__init__(create_app)


#: What the plugin mounts at :data:`URL_PREFIX`.
app = WebhookApp()
