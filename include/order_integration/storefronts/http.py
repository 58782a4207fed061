"""HTTP plumbing every storefront client shares: one ``requests`` session from the provider's
``HttpHook``, the rules that keep the API secret off the wire in clear, redirects followed by
hand inside the store's own origin, and one tenacity retry policy.

Nothing here knows a platform. A client extends :class:`StoreHttp`, says how its connection
must look (:meth:`StoreHttp._check_connection`) and how a response that is not a success
maps to the package's errors; it sends through :meth:`StoreHttp._send` and retries through
:meth:`StoreHttp._retrying` (:class:`TransientError` is retried, anything else raised).

Rules (the same for every platform):

* TLS verification stays on: a connection whose extra disables it is refused (``ConfigError``).
* Plain ``http://`` only to a loopback host (a local stand-in); anything else must be
  ``https://`` (:func:`check_store_url`, before any request).
* A redirect is followed only inside the store's origin (same scheme, host and port) and only
  when the method stays the same; one to ``http://`` or to another host is refused with
  ``ConfigError``, nothing sent to its target.
* A refused TLS certificate is ``StorefrontAuthError`` (no retry); connection errors and
  timeouts are transient.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import pendulum
import requests
import tenacity

from order_integration.exceptions import ConfigError, StorefrontAuthError, StorefrontError

if TYPE_CHECKING:
    from airflow.providers.http.hooks.http import HttpHook
    from airflow.sdk import Connection

log = logging.getLogger(__name__)

#: Redirects followed inside the store's own origin (scheme, host and port) before giving up.
MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SNIPPET = 120


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, lower case, the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number or out of range
        port = -1
    return scheme, (parts.hostname or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def is_loopback_host(host: str) -> bool:
    """``localhost`` or an address of 127.0.0.0/8 or ``::1`` (no name is looked up)."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_store_url(url: str, conn_id: str) -> None:
    """Refuse a base URL that would carry the API secret in clear: only ``https://`` is allowed,
    and plain ``http://`` only to a loopback host (a local stand-in). Raises ``ConfigError``."""
    scheme, host, _port = origin(url)
    if scheme == "https" and host:
        return
    if scheme == "http" and is_loopback_host(host):
        return
    if scheme == "http":
        raise ConfigError(
            f"connection {conn_id!r}: host {url!r} is plain HTTP to a remote host, which would send the "
            "API secret and the orders in clear; refused. Use the store's https:// URL "
            "(plain http:// is allowed only for loopback: localhost, 127.0.0.0/8, ::1)"
        )
    raise ConfigError(
        f"connection {conn_id!r}: host {url!r} must be the store's base URL with an https:// scheme, "
        "e.g. https://shop.example.com"
    )


class TransientError(StorefrontError):
    """A failure worth retrying; ``retry_after`` is the server's requested wait, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: pendulum.DateTime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); ``None`` if absent/bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=pendulum.UTC)
        now = now or pendulum.now("UTC")
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def snippet(response: requests.Response) -> str:
    """The start of a response body, for messages."""
    return response.content[: _SNIPPET * 4].decode("utf-8", "replace")[:_SNIPPET]


class StoreHttp:
    """The session, TLS and redirect rules and the retry policy of one store's API client."""

    #: the platform's name, first word of every message (``woocommerce https://shop…: …``)
    platform = "storefront"

    def __init__(
        self,
        conn_id: str,
        *,
        max_attempts: int = 6,
        max_wait_seconds: float = 60,
        timeout: float = 60,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """
        :param conn_id: the store's Airflow ``http`` connection.
        :param max_attempts: tries per request before giving up with ``StorefrontError``.
        :param max_wait_seconds: cap of one wait (``Retry-After`` or backoff).
        :param timeout: seconds for connect and for each read.
        :param sleep: how to wait between attempts (injected by tests).
        """
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        self.conn_id = conn_id
        self.max_attempts = max_attempts
        self.max_wait_seconds = max_wait_seconds
        self.timeout = timeout
        self._sleep = sleep
        self._host = "?"
        self._backoff = tenacity.wait_exponential(multiplier=1, min=1, max=max_wait_seconds)

    # -- the platform's part -----------------------------------------------------------------

    def _check_connection(self, conn: Connection) -> None:
        """Refuse a connection this platform cannot use (``ConfigError`` naming the field)."""

    # -- session ---------------------------------------------------------------------------

    def _open_session(self, endpoint: str, method: str = "GET") -> tuple[HttpHook, requests.Session, str]:
        """``(hook, session, URL of endpoint)``; the session holds the connection's credentials."""
        from airflow.providers.http.hooks.http import HttpHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        hook = HttpHook(method=method, http_conn_id=self.conn_id)
        try:
            conn = hook.get_connection(self.conn_id)
        except AirflowNotFoundException as exc:
            raise ConfigError(f"storefront connection {self.conn_id!r} is not defined") from exc
        host = conn.host or ""
        self._host = host
        if "://" not in host:
            raise ConfigError(
                f"connection {self.conn_id!r}: host {host!r} must be the store's base URL with scheme, "
                "e.g. https://shop.example.com"
            )
        check_store_url(host, self.conn_id)  # before the hook builds a session holding the secret
        self._check_connection(conn)
        session = hook.get_conn()
        verify = session.verify
        if verify is False or str(verify).strip().lower() in {"false", "0", "no", "off", ""}:
            session.close()
            raise ConfigError(
                f"connection {self.conn_id!r} disables TLS verification (extra verify={verify!r}); "
                "that is not allowed: install the store's CA instead"
            )
        try:
            check_store_url(hook.base_url, self.conn_id)  # the URL the hook really uses (port added)
        except ConfigError:
            session.close()
            raise
        return hook, session, hook.url_from_endpoint(endpoint)

    # -- retries ---------------------------------------------------------------------------

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.max_wait_seconds)
        return float(self._backoff(state))

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0
        log.warning(
            "%s %s: attempt %d/%d failed (%s); retrying in %.1fs",
            self.platform, self._host, state.attempt_number, self.max_attempts, error, wait,
        )

    def _retrying(self) -> tenacity.Retrying:
        """The retry policy of one request: ``TransientError`` is retried, anything else raised."""
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(TransientError),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def _retried(self, attempt: Callable[[], Any], describe: str) -> Any:
        """``attempt()`` under :meth:`_retrying`; when every try failed, ``StorefrontError``
        saying how many and the last error (``describe``: which request, for the message)."""
        try:
            return self._retrying()(attempt)
        except TransientError as exc:
            raise StorefrontError(
                f"{self.platform} {self._host}: giving up after {self.max_attempts} attempts "
                f"({describe}); last error: {exc}"
            ) from exc

    # -- sending ---------------------------------------------------------------------------

    def _send(
        self, hook: HttpHook, session: requests.Session, request: requests.Request
    ) -> requests.Response:
        """Send one request on the session; transport failures become the package's errors.

        The response is returned whatever its status. Redirects are followed by hand, only
        inside the store's own origin and only when the method stays the same: a redirect to
        plain HTTP or to another host is refused with ``ConfigError`` before anything is sent
        there (requests would follow it, and only strips the credentials)."""
        prepared = session.prepare_request(request)
        check_store_url(prepared.url or "", self.conn_id)
        home = origin(prepared.url or "")
        for _hop in range(MAX_REDIRECTS + 1):
            response = self._send_once(hook, session, prepared)
            if not response.is_redirect:
                return response
            following = response.next  # what requests would send next (method and auth rules applied)
            target = following.url if following is not None and following.url else urljoin(
                response.url, response.headers.get("Location", ""))
            response.close()
            if origin(target) != home:
                raise ConfigError(self._redirect_refused(prepared, response, target, home))
            if following is None or following.method != prepared.method:
                raise ConfigError(
                    f"{self.platform} {self._host}: {prepared.method} {response.url} was redirected "
                    f"(HTTP {response.status_code}) to {target!r} as a {getattr(following, 'method', '?')}; "
                    f"not followed. Set connection {self.conn_id!r}'s host to the URL the store answers on"
                )
            prepared = following
        raise ConfigError(
            f"{self.platform} {self._host}: more than {MAX_REDIRECTS} redirects from {request.url!r}; "
            f"check connection {self.conn_id!r}'s host"
        )

    def _redirect_refused(
        self, prepared: requests.PreparedRequest, response: requests.Response, target: str,
        home: tuple[str, str, int | None],
    ) -> str:
        if origin(target)[0] == "http" and home[0] == "https":
            why = "plain HTTP, which would carry the orders (and could carry the credentials) in clear"
        else:
            why = "another origin than the store's (scheme, host or port differ)"
        return (
            f"{self.platform} {self._host}: {prepared.method} {response.url} was redirected (HTTP "
            f"{response.status_code}) to {target!r}, {why}; not followed. Set connection "
            f"{self.conn_id!r}'s host to the store's real https:// base URL (or fix the redirect on the "
            "web server)"
        )

    def _send_once(
        self, hook: HttpHook, session: requests.Session, prepared: requests.PreparedRequest
    ) -> requests.Response:
        url = prepared.url
        try:
            response = hook.run_and_check(
                session, prepared,
                {"check_response": False, "timeout": self.timeout, "allow_redirects": False},
            )
        except requests.exceptions.SSLError as exc:
            if "certificate" in str(exc).lower():
                raise StorefrontAuthError(
                    f"{self.platform} {self._host}: TLS certificate refused for connection "
                    f"{self.conn_id!r}: {exc}"
                ) from exc
            raise TransientError(f"TLS error: {exc}") from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise ConfigError(f"connection {self.conn_id!r}: bad store URL {url!r}: {exc}") from exc
        except requests.exceptions.RequestException as exc:  # connection refused/reset, timeouts
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        return response
