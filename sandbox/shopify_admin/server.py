"""HTTP for the Shopify sandbox: ``POST /admin/api/{version}/graphql.json``, control endpoints under
``/__sandbox/``, bulk result files, and the ``SandboxShopify`` object."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from sandbox.shopify_admin import data as d
from sandbox.shopify_admin import graph as g
from sandbox.shopify_admin import mutations, resolvers
from sandbox.webhook_sender import Switches, WebhookSender, add_cli_flags, switches_from_cli

CONTROL_PREFIX = "/__sandbox"
TOKEN_PATH = "/admin/oauth/access_token"
JSON_TYPE = "application/json; charset=utf-8"
_API_PATH = re.compile(r"^/admin/api/([^/]+)/graphql\.json$")
_VERSION = re.compile(r"^\d{4}-(01|04|07|10)$")
FAULT_TYPES = frozenset(
    {
        "429",
        "500",
        "502",
        "503",
        "internal",
        "throttled",
        "truncated",
        "broken_cursor",
        "bulk_failed",
        "bulk_partial",
    }
)
_UNAUTHORIZED = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
_BAD_GATEWAY = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
    b"</h1></center>\r\n</body>\r\n</html>\r\n"
)


class Reply:
    def __init__(
        self,
        status: int,
        body: Any,
        headers: list[tuple[str, str]] | None = None,
        content_type: str = JSON_TYPE,
    ) -> None:
        self.status = status
        self.body = body if isinstance(body, bytes) else g.json_bytes(body)
        self.headers = headers or []
        self.content_type = content_type


def root_value() -> dict[str, Any]:
    return {
        "orders": resolvers.orders,
        "order": resolvers.order,
        "ordersCount": resolvers.orders_count,
        "node": resolvers.node,
        "nodes": resolvers.nodes,
        "shop": resolvers.shop,
        "currentAppInstallation": resolvers.current_app_installation,
        "productVariants": resolvers.product_variants,
        "inventoryItems": resolvers.inventory_items,
        "inventoryItem": resolvers.inventory_item,
        "locations": resolvers.locations,
        "location": resolvers.location,
        **mutations.ROOT,
    }


def resolve_version(requested: str, state: g.ShopState) -> str | None:
    """The version that answers: itself when served, else the oldest supported one (Shopify "falls
    forward"); None (404) for a name that is no version or one not released yet."""
    if requested == "unstable" or requested in state.supported or requested == g.RELEASE_CANDIDATE:
        return requested
    if not _VERSION.match(requested) or requested > g.RELEASE_CANDIDATE:
        return None
    newer = [v for v in state.supported if v >= requested]
    return newer[0] if requested < state.supported[0] else (newer[0] if newer else state.supported[-1])


def schema_version(version: str) -> str:
    return g.CURRENT_VERSION if version in ("unstable", g.RELEASE_CANDIDATE) else version


class ShopifyApp:
    def __init__(self, state: g.ShopState, owner: SandboxShopify) -> None:
        self.state = state
        self.owner = owner

    def handle(self, path: str, headers: Any, body: bytes) -> Reply:
        if path == TOKEN_PATH:
            return self.grant(body)
        m = _API_PATH.match(path)
        if m is None:
            return Reply(404, {"errors": "Not Found"})
        version = resolve_version(m.group(1), self.state)
        if version is None:
            return Reply(404, {"errors": "Not Found"})
        vheader = [("X-Shopify-API-Version", version)]
        token = headers.get("X-Shopify-Access-Token") or ""
        with self.state.lock:
            scopes = self.state.tokens.get(token)
            expires = self.owner.token_expiry.get(token)
            if expires is not None and self.state.clock() >= expires:
                scopes = None  # an expired client-credentials token
        if scopes is None:
            return Reply(401, _UNAUTHORIZED, vheader)
        fault = self.state.take_fault(FAULT_TYPES - {"broken_cursor", "bulk_failed", "bulk_partial"})
        early = _early_fault(fault, self.state)
        if early is not None:
            early.headers += vheader
            return early
        try:
            payload = json.loads(body or b"{}")
            query = payload["query"]
        except (ValueError, KeyError, TypeError):
            return Reply(400, {"errors": {"query": "Required parameter missing or invalid"}}, vheader)
        reply = self.graphql(
            version, scopes, query, payload.get("variables") or {}, payload.get("operationName")
        )
        reply.headers += vheader
        if fault and fault["type"] == "truncated":
            reply.body = reply.body[: max(1, len(reply.body) // 2)]
        return reply

    def grant(self, body: bytes) -> Reply:
        """``POST /admin/oauth/access_token`` with the client credentials grant (Dev Dashboard
        apps): a new token with the app's scopes, expiring after ``token_lifetime`` seconds."""
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type"})
        app = self.owner.apps.get(form.get("client_id") or "")
        if app is None or app != form.get("client_secret"):
            return Reply(
                400, {"error": "invalid_client", "error_description": "Client credentials are invalid"}
            )
        if self.owner.grant_refusal:
            return Reply(
                400,
                {
                    "error": self.owner.grant_refusal,
                    "error_description": "Client credentials cannot be performed on this shop.",
                },
            )
        token = f"shpat_{uuid.uuid4().hex}"
        with self.state.lock:
            self.state.tokens[token] = set(self.state.tokens.get(self.owner.token, g.ALL_SCOPES))
            lifetime = self.owner.token_lifetime
            self.owner.token_expiry[token] = self.state.clock() + timedelta(seconds=lifetime)
            self.owner.grants += 1
        scope = ",".join(sorted(self.state.tokens[token]))
        return Reply(200, {"access_token": token, "scope": scope, "expires_in": lifetime})

    def graphql(self, version: str, scopes: set[str], query: Any, variables: Any, operation: Any) -> Reply:
        ctx = g.Context(self.state, schema_version(version), g.effective_scopes(scopes), self.owner.base_url)
        ctx.api_version = version  # type: ignore[attr-defined]
        try:
            body, actual, requested = g.run(
                ctx,
                str(query),
                variables if isinstance(variables, dict) else {},
                operation if isinstance(operation, str) else None,
                root_value(),
            )
        except g.Throttled as exc:
            return Reply(200, _throttled(self.state, int(exc.args[0])))
        with self.state.lock:
            status = self.state.bucket.status()
        ext: dict[str, Any] = {
            "cost": {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": status}
        }
        if ctx.search_warnings:
            ext["search"] = ctx.search_warnings
        body["extensions"] = ext
        return Reply(200, body)


def _throttled(state: g.ShopState, requested: int) -> dict[str, Any]:
    with state.lock:
        status = state.bucket.status()
    return {
        "errors": [
            {"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": g.DOCS_RATE}}
        ],
        "extensions": {
            "cost": {"requestedQueryCost": requested, "actualQueryCost": None, "throttleStatus": status}
        },
    }


def _early_fault(fault: dict[str, Any] | None, state: g.ShopState) -> Reply | None:
    if fault is None or fault["type"] == "truncated":
        return None
    kind = fault["type"]
    retry = fault.get("retry_after", 2)
    if kind in ("429", "503"):
        headers = [] if retry is None else [("Retry-After", str(retry))]
        message = (
            "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted "
            "service."
            if kind == "429"
            else "Service Unavailable"
        )
        return Reply(int(kind), {"errors": message}, headers)
    if kind == "500":
        return Reply(500, {"errors": "Internal Server Error"})
    if kind == "502":
        return Reply(502, _BAD_GATEWAY, content_type="text/html")
    if kind == "throttled":
        return Reply(200, _throttled(state, int(fault.get("cost", 1))))
    request_id = str(uuid.uuid4())
    return Reply(
        200,
        {
            "errors": [
                {
                    "message": "Internal error. Looks like something went wrong on our end.\n"
                    f"Request ID: {request_id} "
                    "(include this in support requests).",
                    "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
                }
            ]
        },
    )


# --- HTTP ------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: SandboxShopify) -> None:
        self.owner = owner
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self) -> str:
        return "cloudflare"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            if path.startswith(CONTROL_PREFIX):
                reply = owner.control(method, path[len(CONTROL_PREFIX) :].rstrip("/"), body)
            elif method == "POST":
                reply = owner.app.handle(path, self.headers, body)
            else:
                reply = Reply(404, {"errors": "Not Found"})
        except Exception as exc:  # a sandbox bug must still answer, and loudly
            print(f"sandbox shopify: error on {method} {self.path}: {exc!r}", file=sys.stderr, flush=True)
            reply = Reply(500, {"errors": f"sandbox internal error: {exc!r}"})
        if not path.startswith(CONTROL_PREFIX):
            with owner.state.lock:
                owner.state.log.append(
                    {
                        "method": method,
                        "path": path,
                        "status": reply.status,
                        "body": body.decode("utf-8", "replace")[:4000],
                    }
                )
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


# --- the public object -----------------------------------------------------------------------------


class SandboxShopify:
    """A Shopify Admin GraphQL API stand-in on a background thread.

    >>> with SandboxShopify(generate_orders(...)) as shop:     # port 0 picks a free port
    ...     requests.post(shop.graphql_url, json={"query": "{ shop { name } }"},
    ...                   headers={"X-Shopify-Access-Token": shop.token})

    ``orders`` are ``sandbox.generator`` (WooCommerce-shaped) orders, converted to Shopify orders with the
    same numeric id (``legacyResourceId``). ``clock`` (aware ``datetime``) is the shop's "now".
    ``taxes_included``: the shop's prices include tax (``Order.taxesIncluded``), as in most of
    Europe and Australia. ``apps`` (client ID -> client secret) answer the client credentials
    grant at ``/admin/oauth/access_token`` with tokens that expire after ``token_lifetime``
    seconds of the shop's clock.
    """

    def __init__(
        self,
        orders: list[dict[str, Any]] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "shpat_sandbox",
        scopes: Iterable[str] = g.ALL_SCOPES,
        clock: Callable[[], datetime] | None = None,
        shop_timezone: str = "UTC",
        bucket_size: float = 2000.0,
        restore_rate: float = 100.0,
        taxes_included: bool = False,
        apps: dict[str, str] | None = None,
        token_lifetime: int = 86_399,
    ) -> None:
        self.host, self.port, self.token = host, port, token
        #: Dev Dashboard apps installed on the shop: client ID -> client secret; their tokens
        #: (client credentials grant) get the scopes of ``token`` and expire
        self.apps = dict(apps or {})
        self.token_lifetime = token_lifetime
        self.token_expiry: dict[str, datetime] = {}
        self.grant_refusal = ""  # e.g. "shop_not_permitted": the grant is refused with that error
        self.grants = 0
        self.state = g.ShopState(clock or (lambda: datetime.now(UTC)), ZoneInfo(shop_timezone))
        self.state.taxes_included = taxes_included
        self.state.tokens[token] = set(scopes)
        self.set_bucket(bucket_size, restore_rate)
        self._initial = list(orders or [])
        self.app = ShopifyApp(self.state, self)
        self.add_orders(self._initial)
        self.add_default_catalog()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: ``X-Shopify-Shop-Domain`` of its webhooks
        self.shop_domain = "sandbox-shop.myshopify.com"
        #: The webhook sender while the shop sends webhooks (:meth:`send_webhooks`).
        self.webhooks: WebhookSender | None = None

    # -- lifecycle

    def start(self) -> SandboxShopify:
        if self._server is None:
            self._server = _Server((self.host, self.port), self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"sandbox-shopify-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_webhooks()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> SandboxShopify:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def graphql_url(self, version: str = g.CURRENT_VERSION) -> str:
        return f"{self.base_url}/admin/api/{version}/graphql.json"

    # -- webhooks

    def send_webhooks(self, url: str, secret: str, **switches: Any) -> WebhookSender:
        """From now on, send a signed webhook for every order created or changed, as Shopify does
        (:mod:`sandbox.webhook_sender`; ``switches``: ``drop``, ``duplicate``, ``delay``,
        ``jitter``, ``seed``, ``workers``, ``timeout``, ``retry_scale``, ``retries``). Returns the
        sender: its ``log()`` says what was sent, dropped, duplicated, retried, and the answers."""
        self.stop_webhooks()
        options = Switches(url=url, secret=secret, **switches)
        sender = WebhookSender("shopify", options, source=self.shop_domain)
        self.webhooks = sender
        self.state.on_change = self._announce
        return sender

    def stop_webhooks(self) -> None:
        """Send no more webhooks (retries and queued deliveries are not sent); the log stays."""
        self.state.on_change = None
        if self.webhooks is not None:
            self.webhooks.close()

    def _announce(self, before: dict[str, Any] | None, order: dict[str, Any]) -> None:
        """The topics of one stored change, and the payload (under the state's lock: cheap)."""
        if self.webhooks is None:
            return
        if before is None:
            topics = ["orders/create"]
        else:
            topics = ["orders/updated"]
            if order["financial"] == "PAID" and before["financial"] != "PAID":
                topics.append("orders/paid")
            if order["cancelledAt"] is not None and before["cancelledAt"] is None:
                topics.append("orders/cancelled")
            if d.fulfillment_status(order) == "FULFILLED" and d.fulfillment_status(before) != "FULFILLED":
                topics.append("orders/fulfilled")
        body = json.dumps(rest_order(order, self.state.shop_tz), separators=(",", ":")).encode()
        self.webhooks.announce(topics, order["id"], body)

    # -- in-process helpers

    def add_orders(self, orders: Iterable[dict[str, Any]]) -> int:
        """Upsert ``sandbox.generator`` orders (converted); the search index sees them at once."""
        count = 0
        with self.state.lock:
            for wc in orders:
                self.state.put_order(
                    d.order_from_woocommerce(wc, self.state.ids, self.state.taxes_included),
                    indexed_now=True,
                )
                count += 1
        return count

    def order(self, order_id: int) -> dict[str, Any] | None:
        """The stored order (internal shape, a view of fulfillments/tags/note/cancel state)."""
        with self.state.lock:
            o = self.state.orders.get(order_id)
            return None if o is None else json.loads(json.dumps(o, default=str))

    def touch_order(self, order_id: int, when: datetime | None = None, **changes: Any) -> dict[str, Any]:
        """Edit an order (``note``, ``email``, ``tags`` ...) and move ``updatedAt`` (to ``when`` or now)."""
        with self.state.lock:
            o = self.state.orders[order_id]
            o.update(changes)
            self.state.touch(o, when)
        return self.order(order_id) or {}

    def set_scopes(self, scopes: Iterable[str], token: str | None = None) -> None:
        with self.state.lock:
            self.state.tokens[token or self.token] = set(scopes)

    def set_index_lag(self, seconds: float) -> None:
        with self.state.lock:
            self.state.index_lag = float(seconds)

    def set_bucket(self, size: float, restore_rate: float, *, max_cost: int | None = None) -> None:
        with self.state.lock:
            self.state.bucket = g.Bucket(float(size), float(restore_rate), float(size))
            if max_cost is not None:
                self.state.max_cost = max_cost

    def set_versions(self, supported: Iterable[str]) -> None:
        """Which stable versions are still served (a request for another falls forward)."""
        with self.state.lock:
            self.state.supported = tuple(sorted(supported))

    def inject_faults(self, faults: list[dict[str, Any]]) -> None:
        for fault in faults:
            if fault.get("type") not in FAULT_TYPES:
                raise ValueError(f"unknown fault type {fault.get('type')!r}; one of {sorted(FAULT_TYPES)}")
        with self.state.lock:
            self.state.faults.extend(dict(f) for f in faults)

    @property
    def request_log(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(e) for e in self.state.log]

    def inventory(self) -> dict[str, dict[str, int]]:
        """sku -> {location name: available}."""
        with self.state.lock:
            out: dict[str, dict[str, int]] = {}
            for (iid, lid), qty in self.state.levels.items():
                out.setdefault(self.state.items[iid]["sku"], {})[self.state.locations[lid]["name"]] = qty
            return out

    def add_catalog(self, locations: list[dict[str, Any]], variants: list[dict[str, Any]]) -> None:
        """Seed locations ``{"id", "name"}`` and variants ``{"id", "sku", "title", "item_id",
        "levels": {location id: available}}`` (product and inventory item come with each variant)."""
        with self.state.lock:
            for loc in locations:
                self.state.locations[int(loc["id"])] = {
                    "id": int(loc["id"]),
                    "name": loc["name"],
                    "isActive": loc.get("isActive", True),
                }
            for v in variants:
                vid, iid = int(v["id"]), int(v.get("item_id") or int(v["id"]) + 1_000_000)
                self.state.variants[vid] = {
                    "id": vid,
                    "sku": v["sku"],
                    "title": v.get("title") or v["sku"],
                    "itemId": iid,
                    "productId": int(v.get("product_id") or vid),
                }
                self.state.items[iid] = {
                    "id": iid,
                    "sku": v["sku"],
                    "variantId": vid,
                    "tracked": v.get("tracked", True),
                }
                for lid, qty in (v.get("levels") or {}).items():
                    self.state.levels[(iid, int(lid))] = int(qty)

    def add_default_catalog(self) -> None:
        """One location and a variant per SKU of the generator's catalogue, 25 available each."""
        from sandbox.generator import _catalogue

        variants = [
            {"id": 40_000 + i, "sku": p.sku, "title": p.name, "levels": {1: 25}}
            for i, p in enumerate(_catalogue())
            if p.sku
        ]
        self.add_catalog([{"id": 1, "name": "Warehouse"}], variants)

    def reset(self) -> None:
        """Back to the orders given at construction, default catalogue, full bucket, no faults."""
        with self.state.lock:
            fresh = g.ShopState(self.state.clock, self.state.shop_tz)
            fresh.tokens = {self.token: set(g.ALL_SCOPES)}
            fresh.taxes_included = self.state.taxes_included
            fresh.bucket = g.Bucket(
                self.state.bucket.maximum, self.state.bucket.restore_rate, self.state.bucket.maximum
            )
            for name in vars(fresh):
                if name != "lock":
                    setattr(self.state, name, getattr(fresh, name))
        self.add_orders(self._initial)  # no webhooks: on_change is the fresh state's None
        self.add_default_catalog()
        if self.webhooks is not None and not self.webhooks.closed:
            self.state.on_change = self._announce

    # -- control endpoints (out-of-process tests)

    def control(self, method: str, route: str, body: bytes) -> Reply:
        if method == "GET" and route.startswith("/bulk/"):
            return self._bulk_file(route[len("/bulk/") :])
        try:
            data = json.loads(body) if body.strip() else None
            return self._control(method, route, data)
        except (TypeError, ValueError, KeyError) as exc:
            return Reply(400, {"error": str(exc)})

    def _bulk_file(self, name: str) -> Reply:
        with self.state.lock:
            blob = self.state.bulk_files.get(name)
        if blob is None:
            return Reply(404, b"<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
        return Reply(200, blob, content_type="application/jsonl")

    def _control(self, method: str, route: str, data: Any) -> Reply:  # noqa: C901 (a flat routing table)
        if method == "POST" and route == "/faults":
            self.inject_faults(data if isinstance(data, list) else [data])
            return Reply(200, {"queued": len(self.state.faults)})
        if method == "GET" and route == "/faults":
            return Reply(200, list(self.state.faults))
        if method == "POST" and route == "/orders":
            return Reply(200, {"upserted": self.add_orders(data if isinstance(data, list) else [data])})
        if method == "GET" and route.startswith("/orders/"):
            found = self.order(int(route[len("/orders/") :]))
            return Reply(404 if found is None else 200, found or {"error": "no such order"})
        if method == "POST" and route == "/touch":
            when = d.parse_time(data["when"]) if data.get("when") else None
            changes = {k: v for k, v in data.items() if k in ("note", "email", "tags", "phone")}
            return Reply(200, self.touch_order(int(data["id"]), when, **changes))
        if method == "POST" and route == "/reset":
            self.reset()
            return Reply(200, {"orders": len(self.state.orders)})
        if method == "POST" and route == "/scopes":
            self.set_scopes(data["scopes"], data.get("token"))
            return Reply(200, {"ok": True})
        if method == "POST" and route == "/index_lag":
            self.set_index_lag(data["seconds"])
            return Reply(200, {"ok": True})
        if method == "POST" and route == "/bucket":
            self.set_bucket(data["size"], data["restore_rate"], max_cost=data.get("max_cost"))
            return Reply(200, {"ok": True})
        if method == "POST" and route == "/versions":
            self.set_versions(data["supported"])
            return Reply(200, {"supported": list(self.state.supported)})
        if method == "POST" and route == "/catalog":
            self.add_catalog(data.get("locations") or [], data.get("variants") or [])
            return Reply(200, {"ok": True})
        if method == "GET" and route == "/inventory":
            return Reply(200, self.inventory())
        if method == "POST" and route == "/bulk_hold":
            with self.state.lock:
                self.state.bulk_hold = bool(data["hold"])
                if not self.state.bulk_hold:
                    mutations.release_held(self.state, self.base_url)
            return Reply(200, {"ok": True})
        if method == "GET" and route == "/requests":
            return Reply(200, self.request_log)
        return Reply(404, {"error": f"No sandbox route {method} {route}."})


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.shopify_admin --port 8082 --orders 300 --seed 42``; serves until SIGTERM/SIGINT."""
    import pendulum

    from sandbox.generator import generate_orders

    now = datetime.now(UTC).replace(microsecond=0)
    parser = argparse.ArgumentParser(prog="python -m sandbox.shopify_admin", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--days", type=float, default=7.0, help="updatedAt spreads over the last N days")
    parser.add_argument("--first-id", type=int, default=1001)
    parser.add_argument("--token", default="shpat_sandbox")
    parser.add_argument(
        "--taxes-included", action="store_true", help="prices include tax (Order.taxesIncluded), as in the EU"
    )
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="CLIENT_ID:SECRET",
        help="a Dev Dashboard app that gets tokens with the client credentials grant (repeatable)",
    )
    add_cli_flags(parser)
    args = parser.parse_args(argv)
    webhooks = switches_from_cli(args)
    apps = dict(app.split(":", 1) for app in args.app if ":" in app)
    orders = generate_orders(
        args.orders,
        start=pendulum.instance(now - timedelta(days=args.days)),
        end=pendulum.instance(now),
        seed=args.seed,
        first_id=args.first_id,
    )
    shop = SandboxShopify(
        orders,
        host=args.host,
        port=args.port,
        token=args.token,
        taxes_included=args.taxes_included,
        apps=apps,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    shop.start()
    print(f"sandbox Shopify listening on {shop.graphql_url()}", flush=True)
    if webhooks is not None:
        shop.send_webhooks(**vars(webhooks))
        print(f"sandbox Shopify sends webhooks to {webhooks.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        shop.stop()
    return 0


# --- webhook payloads ------------------------------------------------------------------------------


def _rest_time(when: datetime | None, tz: Any) -> str | None:
    """A REST resource time: ISO 8601 at whole seconds with the shop's offset (``-05:00``)."""
    return None if when is None else when.astimezone(tz).replace(microsecond=0).isoformat()


def _rest_money(amount: Any) -> str:
    return f"{amount:.2f}"


def _rest_address(address: dict[str, Any] | None) -> dict[str, Any] | None:
    if address is None:
        return None
    return {"first_name": address["firstName"], "last_name": address["lastName"], "name": address["name"],
            "company": address["company"], "address1": address["address1"], "address2": address["address2"],
            "city": address["city"], "province": address["province"],
            "province_code": address["provinceCode"],
            "zip": address["zip"], "country": address["country"], "country_code": address["countryCodeV2"],
            "phone": address["phone"]}


def rest_order(order: dict[str, Any], tz: Any) -> dict[str, Any]:
    """The REST ``Order`` resource an ``orders/*`` webhook carries (the fields a receiver reads:
    ids, name, times, statuses, money, customer, addresses, lines; not every field Shopify has)."""
    fulfillment = d.fulfillment_status(order)
    number = int("".join(c for c in order["name"] if c.isdigit()) or order["id"])
    return {
        "id": order["id"],
        "admin_graphql_api_id": d.gid("Order", order["id"]),
        "name": order["name"],
        "number": number - 1000 if number > 1000 else number,
        "order_number": number,
        "email": order["email"],
        "contact_email": order["email"],
        "phone": order["phone"],
        "created_at": _rest_time(order["createdAt"], tz),
        "updated_at": _rest_time(order["updatedAt"], tz),
        "processed_at": _rest_time(order["processedAt"], tz),
        "cancelled_at": _rest_time(order["cancelledAt"], tz),
        "cancel_reason": (order["cancelReason"] or "").lower() or None,
        "closed_at": _rest_time(order["closedAt"], tz),
        "currency": order["currency"],
        "presentment_currency": order["currency"],
        "financial_status": order["financial"].lower(),
        "fulfillment_status": {"FULFILLED": "fulfilled", "PARTIALLY_FULFILLED": "partial"}.get(fulfillment),
        "subtotal_price": _rest_money(d.subtotal(order)),
        "total_discounts": _rest_money(order["discount"]),
        "total_tax": _rest_money(order["tax"]),
        "total_price": _rest_money(order["total"]),
        "taxes_included": order.get("taxesIncluded", False),
        "note": order["note"],
        "tags": ", ".join(sorted(order["tags"])),
        "test": order["test"],
        "customer": None if order["customer"] is None else {
            "id": order["customer"]["id"], "email": order["customer"]["email"],
            "first_name": order["customer"]["firstName"], "last_name": order["customer"]["lastName"],
            "admin_graphql_api_id": d.gid("Customer", order["customer"]["id"])},
        "billing_address": _rest_address(order["billingAddress"]),
        "shipping_address": _rest_address(order["shippingAddress"]),
        "line_items": [
            {"id": li["id"], "admin_graphql_api_id": d.gid("LineItem", li["id"]), "sku": li["sku"],
             "name": li["name"], "title": li["title"], "quantity": li["quantity"],
             "price": _rest_money(li["unitPrice"]), "requires_shipping": li["requiresShipping"],
             "fulfillable_quantity": max(0, li["quantity"] - li["refunded"] - li["fulfilled"])}
            for li in order["lineItems"]
        ],
    }
