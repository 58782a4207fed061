"""Transport of the Shopify Admin GraphQL API: one POST per query, cost-based throttling, the
package's error mapping. Nothing here knows orders (see :mod:`.shopify`).

Connection contract
-------------------
Airflow connection type ``http``; ``host`` is the shop's admin origin
``https://<shop>.myshopify.com`` (no path). The Admin API is served on the ``myshopify.com``
domain only, so any other ``https://`` host is refused (``ConfigError``) before a request: the
access token goes nowhere else. A loopback ``http://127.0.0.1:<port>`` (or ``localhost``,
``::1``) is accepted for local stand-ins, as for WooCommerce. The credential is one of:

* ``password`` an Admin API access token (``shpat_…``, a custom app created in the shop's
  admin before 2026; :data:`ACCESS_TOKEN_PREFIXES`), or ``login`` empty: it is sent as
  ``X-Shopify-Access-Token`` (``login`` is then not used, and never sent);
* else, ``login`` set: ``login`` is the client ID and ``password`` the client secret of an app
  created in Shopify's Dev Dashboard and installed on the shop (since 2026 the only kind a
  merchant can create). Its access tokens expire (``expires_in``, 24 hours): the transport gets
  one with the **client credentials grant** (``POST {host}/admin/oauth/access_token``, form
  ``grant_type=client_credentials``, ``client_id``, ``client_secret``) before its first query,
  gets a new one :data:`TOKEN_MARGIN_SECONDS` before it expires, and once more when Shopify
  answers 401 to a token it had not yet expired (revoked, secret rotated). A refused grant
  (wrong ID or secret, ``shop_not_permitted``: the app's organisation does not own the shop)
  fails at once with Shopify's words. The secret is sent only there, never as a header.

``extra.api_version`` pins the Admin GraphQL version (``"2026-10"``; default
:data:`DEFAULT_API_VERSION`); the endpoint is ``POST {host}/admin/api/{version}/graphql.json``.
TLS, redirect and retry rules are :class:`~order_integration.storefronts.http.StoreHttp`'s.

API versions
------------
Shopify releases a version each quarter (``YYYY-01/04/07/10``) and supports each for at least
12 months. A request for a version it no longer supports is *not* refused: Shopify "falls
forward" and answers with the oldest supported version, saying which in the
``X-Shopify-API-Version`` response header (shopify.dev/docs/api/usage/versioning). Answers
from another schema than the one the queries were written for are not trusted: a response
whose header names another version than the pinned one raises ``ConfigError`` naming both. A
version name Shopify does not know (not released, malformed) is answered 404.

Throttling (shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits)
-----------------------------------------------------------------------
Every answer carries ``extensions.cost``: ``requestedQueryCost`` (what the bucket must hold
before the query runs), ``actualQueryCost`` and ``throttleStatus`` (``maximumAvailable``,
``currentlyAvailable``, ``restoreRate`` points per second; a leaky bucket). Before each query
the client waits exactly until the bucket, refilled at ``restoreRate`` since the last answer,
holds the query's requested cost (:func:`throttle_wait`; the cost is the one Shopify last
reported for that operation, or the caller's estimate). A query Shopify throttles anyway
(HTTP 200 with ``errors[].extensions.code == "THROTTLED"``, ``actualQueryCost`` null) is
retried after the wait its own ``throttleStatus`` says; HTTP 429 after ``Retry-After``.

Errors
------
401/403 and GraphQL ``ACCESS_DENIED`` → ``StorefrontAuthError`` at once (no retry), naming the
access scope Shopify says is missing; ``MAX_COST_EXCEEDED`` and other GraphQL errors in a 200
(a query the schema refuses, a bad argument) → ``StorefrontRequestRejected`` with Shopify's
messages and paths (partial ``data`` beside ``errors`` is never used); 404 →
``StorefrontRequestRejected`` naming the version and host; 402/423 (shop frozen or locked) →
``StorefrontRequestRejected``. 429, 5xx, 408, ``INTERNAL_SERVER_ERROR``, transport errors and a
body that is not a JSON object → retried with the shared tenacity policy
(:meth:`StoreHttp._retried`), then ``StorefrontError``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from order_integration.exceptions import ConfigError, StorefrontAuthError, StorefrontError
from order_integration.storefronts.base import StorefrontRequestRejected
from order_integration.storefronts.http import (
    StoreHttp,
    TransientError,
    is_loopback_host,
    origin,
    parse_retry_after,
    snippet,
)

if TYPE_CHECKING:
    from airflow.providers.http.hooks.http import HttpHook
    from airflow.sdk import Connection

log = logging.getLogger(__name__)

#: The Admin GraphQL version the queries are written and tested against (Shopify's newest
#: stable version on 2026-12-04; supported until at least 2027-10).
DEFAULT_API_VERSION = "2026-10"
#: The connection extras the package reads (the export's ``bulk_threshold`` and
#: ``index_settle_seconds`` too): never sent as HTTP headers, whichever client opens the session.
PACKAGE_EXTRAS = ("api_version", "bulk_threshold", "index_settle_seconds")
#: Shopify refuses a single query whose requested cost is above this (``MAX_COST_EXCEEDED``).
MAX_QUERY_COST = 1000
_VERSION = re.compile(r"[0-9]{4}-(?:01|04|07|10)|unstable")
_SHOP_HOST = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
_VERSION_HEADER = "X-Shopify-API-Version"


def throttle_wait(
    requested: float,
    available: float,
    restore_rate: float,
    *,
    elapsed: float = 0.0,
    maximum: float | None = None,
) -> float:
    """Seconds to wait before a query of cost ``requested`` can run.

    ``available``/``restore_rate``/``maximum`` are the last ``throttleStatus``; ``elapsed`` the
    seconds since it was reported (the bucket refilled ``restore_rate * elapsed`` meanwhile, up
    to ``maximum``). 0 when the bucket already holds the cost. Raises ``ValueError`` for a cost
    the bucket can never hold (above ``maximum``) or a bucket that does not refill.
    """
    if maximum is not None and requested > maximum:
        raise ValueError(f"a query costing {requested:g} points can never run in a bucket of {maximum:g}")
    now_available = available + max(0.0, elapsed) * max(0.0, restore_rate)
    if maximum is not None:
        now_available = min(now_available, maximum)
    missing = requested - now_available
    if missing <= 0:
        return 0.0
    if restore_rate <= 0:
        raise ValueError(
            f"the bucket lacks {missing:g} points and does not refill (restoreRate {restore_rate!r})"
        )
    return missing / restore_rate


@dataclass(frozen=True, slots=True)
class Throttle:
    """One ``extensions.cost.throttleStatus``, and when it was received (monotonic seconds)."""

    maximum: float
    available: float
    restore_rate: float
    at: float

    @classmethod
    def from_cost(cls, cost: object, at: float) -> Throttle | None:
        status = cost.get("throttleStatus") if isinstance(cost, dict) else None
        if not isinstance(status, dict):
            return None
        try:
            return cls(
                float(status["maximumAvailable"]),
                float(status["currentlyAvailable"]),
                float(status["restoreRate"]),
                at,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def wait_for(self, requested: float, now: float) -> float:
        return throttle_wait(
            requested, self.available, self.restore_rate, elapsed=now - self.at, maximum=self.maximum
        )


def check_shop_url(url: str, conn_id: str) -> None:
    """The Admin API lives on ``https://<shop>.myshopify.com`` only (or a loopback stand-in):
    anything else is refused before the token is sent (``ConfigError``)."""
    parts = urlsplit(url)
    scheme, host, _port = origin(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(
            f"connection {conn_id!r}: host {url!r} must be the shop's origin without a path, "
            "e.g. https://your-shop.myshopify.com"
        )
    if is_loopback_host(host):
        return
    if scheme == "https" and _SHOP_HOST.fullmatch(host):
        return
    raise ConfigError(
        f"connection {conn_id!r}: host {url!r} is not a Shopify admin origin; the Admin API is served "
        "on https://<shop>.myshopify.com only (the access token is sent nowhere else); a loopback "
        "http:// host is accepted for local stand-ins"
    )


class GraphQLError(StorefrontRequestRejected):
    """Shopify answered a query with GraphQL ``errors`` that retrying cannot fix."""

    def __init__(self, message: str, errors: list[Any]) -> None:
        super().__init__(message)
        self.errors = errors


def _error_text(errors: list[Any], limit: int = 5) -> str:
    parts = []
    for error in errors[:limit]:
        if not isinstance(error, dict):
            parts.append(repr(error)[:200])
            continue
        text = str(error.get("message", "")).strip()
        code = (
            (error.get("extensions") or {}).get("code") if isinstance(error.get("extensions"), dict) else None
        )
        path = error.get("path")
        where = f" at {'.'.join(map(str, path))}" if isinstance(path, list) and path else ""
        parts.append(f"{code + ': ' if code else ''}{text}{where}")
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def _codes(errors: list[Any]) -> set[str]:
    return {
        str(e["extensions"].get("code"))
        for e in errors
        if isinstance(e, dict) and isinstance(e.get("extensions"), dict) and e["extensions"].get("code")
    }


def _required_access(errors: list[Any]) -> str:
    """What Shopify says is missing (``extensions.requiredAccess`` or the message)."""
    for error in errors:
        if isinstance(error, dict) and isinstance(error.get("extensions"), dict):
            needed = error["extensions"].get("requiredAccess")
            if needed:
                return str(needed)
    return _error_text(errors)


#: How long before a client-credentials token expires a new one is got (a long query must not
#: start with a token that dies during it).
TOKEN_MARGIN_SECONDS = 300
#: How Shopify's access tokens begin (a password like this is a token even with a login set).
ACCESS_TOKEN_PREFIXES = ("shpat_", "shpca_", "shppa_")
#: A token's life when the token endpoint does not say (Shopify documents 24 hours).
DEFAULT_TOKEN_LIFETIME = 86_399
#: What an access token may look like (it becomes a header value).
_TOKEN = re.compile(r"[A-Za-z0-9_\-.]{1,512}")


class ShopifyGraphQL(StoreHttp):
    """Sends Admin GraphQL queries for one shop (one session for the client's lifetime)."""

    platform = "shopify"

    def __init__(
        self,
        conn_id: str,
        *,
        max_attempts: int = 6,
        max_wait_seconds: float = 60,
        timeout: float = 60,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            conn_id,
            max_attempts=max_attempts,
            max_wait_seconds=max_wait_seconds,
            timeout=timeout,
            sleep=sleep,
        )
        self._monotonic = monotonic
        self.api_version = DEFAULT_API_VERSION
        self._token = ""
        #: (client ID, client secret) of a Dev Dashboard app; None: ``_token`` is a static token
        self._client: tuple[str, str] | None = None
        self._token_deadline = 0.0  # monotonic time to get a new token by (client credentials)
        self.tokens_obtained = 0
        self._hook: HttpHook | None = None
        self._session: requests.Session | None = None
        self._url = ""
        self.throttle: Throttle | None = None
        #: operation name -> the requested cost Shopify last reported for it
        self.costs: dict[str, float] = {}
        #: the version named by the last answer's ``X-Shopify-API-Version``
        self.answered_version: str | None = None
        self.requests_sent = 0

    # -- connection ----------------------------------------------------------------------------

    def _check_connection(self, conn: Connection) -> None:
        check_shop_url(conn.host or "", self.conn_id)
        if not conn.password:
            raise ConfigError(
                f"connection {self.conn_id!r}: password must hold the Shopify Admin API access token "
                "(shpat_…), or, with login set to a Dev Dashboard app's client ID, the app's client secret"
            )
        extra = conn.extra_dejson or {}
        version = extra.get("api_version", DEFAULT_API_VERSION)
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise ConfigError(
                f"connection {self.conn_id!r}: extra.api_version {version!r} is not a Shopify API version "
                f"(YYYY-01, -04, -07 or -10, e.g. {DEFAULT_API_VERSION!r})"
            )
        self.api_version = version
        if conn.login and not conn.password.startswith(ACCESS_TOKEN_PREFIXES):
            self._client, self._token = (conn.login, conn.password), ""
        else:
            self._client, self._token = None, conn.password

    def open(self) -> None:
        """Open the session (checks the connection); idempotent."""
        if self._session is not None:
            return
        hook, session, _url = self._open_session("")
        session.auth = None  # HttpHook would send a login as Basic auth: the token header is the credential
        for key in PACKAGE_EXTRAS:  # HttpHook turns unknown extras into headers
            session.headers.pop(key, None)
        if self._token:  # a client-credentials token is got before the first query
            session.headers["X-Shopify-Access-Token"] = self._token
        session.headers["Content-Type"] = "application/json"
        session.headers["Accept"] = "application/json"
        self._hook, self._session = hook, session
        self._url = f"{hook.base_url.rstrip('/')}/admin/api/{self.api_version}/graphql.json"

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = self._hook = None

    def __enter__(self) -> ShopifyGraphQL:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def host(self) -> str:
        return self._host

    # -- queries -------------------------------------------------------------------------------

    def execute(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        operation: str,
        estimate: float = 0.0,
        describe: str = "",
    ) -> dict[str, Any]:
        """``data`` of ``query``; waits for the bucket first, retries transient failures.

        ``operation`` names the query for the cost memory and messages; ``estimate`` is its
        requested cost when Shopify has not reported one yet."""
        self.open()
        payload = {"query": query, "variables": dict(variables or {})}
        what = f"{operation}{' ' + describe if describe else ''}"
        return self._retried(lambda: self._attempt(payload, operation, estimate), what)

    def _attempt(self, payload: dict[str, Any], operation: str, estimate: float) -> dict[str, Any]:
        cost = self.costs.get(operation)
        if cost is None and self.throttle is not None:  # our estimate; Shopify's own figure may be lower
            cost = min(estimate, self.throttle.maximum)
        self._pace(cost or 0.0)
        assert self._hook is not None and self._session is not None
        fresh = self._ensure_token()
        request = requests.Request("POST", self._url, data=json.dumps(payload).encode("utf-8"))
        response = self._send(self._hook, self._session, request)
        self.requests_sent += 1
        if response.status_code == 401 and self._client is not None and not fresh:
            log.warning(
                "shopify %s: the access token was refused before it expired (revoked, or the client "
                "secret rotated); getting a new one with the client credentials grant",
                self._host,
            )
            self._token_deadline = 0.0
            self._ensure_token()
            response = self._send(self._hook, self._session, request)
            self.requests_sent += 1
        return self._read(response, operation)

    def _ensure_token(self) -> bool:
        """Get an access token with the client credentials grant when there is none or it is
        about to expire; True when one was got now. A static token: nothing to do."""
        if self._client is None or (self._token and self._monotonic() < self._token_deadline):
            return False
        assert self._hook is not None and self._session is not None
        client_id, secret = self._client
        request = requests.Request(
            "POST",
            f"{self._hook.base_url.rstrip('/')}/admin/oauth/access_token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-Shopify-Access-Token": None},
        )
        started = self._monotonic()
        response = self._send(self._hook, self._session, request)
        token, lifetime = self._read_grant(response)
        self._token = token
        self._session.headers["X-Shopify-Access-Token"] = token
        self._token_deadline = started + max(0.0, lifetime - TOKEN_MARGIN_SECONDS)
        self.tokens_obtained += 1
        log.info(
            "shopify %s: got an access token for client %s with the client credentials grant "
            "(expires in %ds)",
            self._host,
            client_id,
            lifetime,
        )
        return True

    def _read_grant(self, response: requests.Response) -> tuple[str, float]:
        """(access token, seconds it lives) from the token endpoint's answer, else the error."""
        status = response.status_code
        if status == 429 or status >= 500 or status == 408:
            raise self._status_error(response)  # transient: retried
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if status != 200 or not isinstance(body, dict):
            said = _shopify_errors(response)
            if isinstance(body, dict) and body.get("error"):
                said = f"{body['error']}: {body.get('error_description') or ''}".rstrip(": ")
            raise StorefrontAuthError(
                f"shopify {self._host}: the client credentials grant for connection {self.conn_id!r} "
                f"was refused (HTTP {status} {said}); check login (the app's client ID) and password "
                "(its client secret), and that the app is installed on this shop by the organisation "
                "that owns it"
            )
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token or not _TOKEN.fullmatch(token):
            raise StorefrontError(
                f"shopify {self._host}: the token endpoint answered 200 without a usable access_token"
            )
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME  # Shopify documents 24 hours
        return token, float(lifetime)

    def _pace(self, cost: float) -> None:
        """Wait until the bucket (as last reported, refilled since) holds ``cost``."""
        if self.throttle is None or cost <= 0:
            return
        try:
            wait = self.throttle.wait_for(cost, self._monotonic())
        except ValueError as exc:
            raise StorefrontRequestRejected(f"shopify {self._host}: {exc}") from exc
        if wait > 0:
            log.info(
                "shopify %s: waiting %.2fs for the cost bucket (%g points needed)", self._host, wait, cost
            )
            self._sleep(wait)

    def _read(self, response: requests.Response, operation: str) -> dict[str, Any]:
        self._check_version(response)
        status = response.status_code
        if status != 200:
            raise self._status_error(response)
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            raise TransientError(
                f"HTTP 200 body is not valid JSON ({exc}); starts {snippet(response)!r}"
            ) from exc
        if not isinstance(body, dict):
            raise TransientError(f"HTTP 200 body is a JSON {type(body).__name__}, not an object")
        cost = (
            (body.get("extensions") or {}).get("cost") if isinstance(body.get("extensions"), dict) else None
        )
        throttle = Throttle.from_cost(cost, self._monotonic())
        if throttle is not None:
            self.throttle = throttle
        if isinstance(cost, dict) and isinstance(cost.get("requestedQueryCost"), int | float):
            self.costs[operation] = float(cost["requestedQueryCost"])
        errors = body.get("errors")
        if errors:
            raise self._graphql_error(errors if isinstance(errors, list) else [errors], cost, operation)
        data = body.get("data")
        if not isinstance(data, dict):
            raise TransientError(f"HTTP 200 without data or errors; body starts {snippet(response)!r}")
        return data

    def _check_version(self, response: requests.Response) -> None:
        answered = response.headers.get(_VERSION_HEADER)
        self.answered_version = answered
        if answered and answered != self.api_version:
            raise ConfigError(
                f"shopify {self._host}: asked for Admin API version {self.api_version} but the shop answered "
                f"with {answered} ({_VERSION_HEADER}); Shopify does "
                "this when the requested version is no longer "
                "supported (it falls forward to the oldest "
                f"supported one). Set connection {self.conn_id!r}'s "
                "extra.api_version to a supported version (this "
                f"package is tested with {DEFAULT_API_VERSION})"
            )

    def _graphql_error(self, errors: list[Any], cost: object, operation: str) -> StorefrontError:
        codes = _codes(errors)
        if "THROTTLED" in codes:
            wait = None
            if isinstance(cost, dict) and self.throttle is not None:
                requested = cost.get("requestedQueryCost")
                if isinstance(requested, int | float):
                    try:
                        wait = self.throttle.wait_for(float(requested), self._monotonic())
                    except ValueError as exc:
                        return StorefrontRequestRejected(f"shopify {self._host}: {operation}: {exc}")
            return TransientError(
                f"THROTTLED ({operation}; waiting {wait if wait is not None else '?'}s for the cost bucket)",
                retry_after=wait,
            )
        if "ACCESS_DENIED" in codes:
            return StorefrontAuthError(
                f"shopify {self._host}: access denied for connection "
                f"{self.conn_id!r} ({operation}): the app's "
                f"token lacks access scope {_required_access(errors)}; grant it in the app's configuration "
                f"and reinstall. Shopify said: {_error_text(errors)}"
            )
        if codes and codes <= {"INTERNAL_SERVER_ERROR"}:
            return TransientError(f"Shopify internal error ({_error_text(errors)})")
        if "MAX_COST_EXCEEDED" in codes:
            return GraphQLError(
                f"shopify {self._host}: {operation} costs more than Shopify allows for one query "
                f"({MAX_QUERY_COST} points): {_error_text(errors)}; lower the page size",
                errors,
            )
        return GraphQLError(
            f"shopify {self._host}: Admin API {self.api_version} refused {operation}: {_error_text(errors)}",
            errors,
        )

    def _status_error(self, response: requests.Response) -> StorefrontError:
        status = response.status_code
        said = _shopify_errors(response)
        if status in (401, 403):
            return StorefrontAuthError(
                f"shopify {self._host}: access token refused for connection {self.conn_id!r} "
                f"(HTTP {status} {said})"
            )
        if status == 404:
            return StorefrontRequestRejected(
                f"shopify {self._host}: HTTP 404 for "
                f"{response.request.method} {response.url}: either no shop "
                "answers at this host or Admin API version "
                f"{self.api_version!r} is not one Shopify serves (not "
                f"released yet); Shopify said {said}"
            )
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return TransientError(f"HTTP {status} (Retry-After {retry_after})", retry_after=retry_after)
        if status >= 500 or status == 408:
            return TransientError(f"HTTP {status} {said}")
        if status in (402, 423):
            return StorefrontRequestRejected(
                f"shopify {self._host}: HTTP {status}: the shop is "
                f"{'frozen (unpaid)' if status == 402 else 'locked'}"
                f"; {said}"
            )
        if 400 <= status < 500:
            return StorefrontRequestRejected(
                f"shopify {self._host}: request rejected with HTTP {status} {said}"
            )
        return TransientError(f"unexpected HTTP {status} {said}")


def _shopify_errors(response: requests.Response) -> str:
    """Shopify's ``errors`` from an error body (a string, a list or an object), else the body's start."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return repr(snippet(response))
    if isinstance(body, dict) and "errors" in body:
        errors = body["errors"]
        return _error_text(errors) if isinstance(errors, list) else repr(errors)[:300]
    return repr(snippet(response))
