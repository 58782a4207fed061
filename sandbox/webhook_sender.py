"""Webhooks from the sandbox storefronts: signed deliveries of order changes to a configured URL.

The WooCommerce sandbox (:class:`sandbox.storefront.SandboxStorefront`) and the Shopify sandbox
(:class:`sandbox.shopify_admin.SandboxShopify`) announce every order change to a
:class:`WebhookSender` (``shop.send_webhooks(url, secret, ...)``, or the ``--webhook-*`` flags of
their CLIs). The storefront only queues the change — O(1), under its lock — and answers its API
request at once; background sender threads build nothing, they POST what was queued.

What is sent, as the platforms do it:

* **WooCommerce** (``WC_Webhook::deliver`` and ``log_delivery`` in core's
  ``includes/class-wc-webhook.php``): topics ``order.created``, ``order.updated`` and
  ``order.deleted``, one webhook per topic (ids 1, 2, 3). The body is the order as
  ``GET /orders/<id>`` returns it at the change (``{"id": N}`` for ``order.deleted``); headers
  ``X-WC-Webhook-Source`` (the shop's home URL), ``-Topic``, ``-Resource`` (``order``),
  ``-Event`` (``created``...), ``-Signature`` (base64 HMAC-SHA256 of the body), ``-ID`` (the
  webhook's id) and ``-Delivery-ID`` (a hash of the webhook id and the current *second*: two
  deliveries of one webhook in one second share it); ``User-Agent: WooCommerce/… Hookshot``.
  Never retried. 2xx, 301 and 302 are delivered; anything else (or no answer in ``timeout``,
  60 s) is a failure, and a webhook whose failure count is already above ``max_failures`` (the
  ``woocommerce_max_webhook_delivery_failures`` filter, 5) when it fails again is **disabled**:
  later changes of its topic are not sent (logged ``disabled``). A success resets the count.
* **Shopify** (shopify.dev, "Webhooks delivery structure" and the 2024-09 retry change):
  topics ``orders/create``, ``orders/updated`` (every change), and beside it ``orders/paid``,
  ``orders/cancelled``, ``orders/fulfilled`` when the change is that. The body is the REST Order
  resource (a subset: ids, name, times with the shop's offset, statuses, money, lines); headers
  ``X-Shopify-Topic``, ``-Hmac-Sha256``, ``-Shop-Domain``, ``-API-Version``, ``-Webhook-Id`` (one
  per delivery, the same on its retries), ``-Triggered-At`` and ``-Event-Id`` (one per change,
  shared by that change's topics). 2xx is delivered; anything else (or no answer in 5 s) is
  retried with the original payload, 8 times over about 4 hours with exponential backoff
  (:data:`SHOPIFY_RETRY_DELAYS`; ``retry_scale`` shortens it, 0.001 makes it seconds).

Switches (:class:`Switches`), all drawn from one ``random.Random(seed)`` in the order the changes
happen, so a run is reproducible: ``drop`` (a share of the changes never sent, as a lost webhook),
``duplicate`` (a share sent twice: the same request again), ``delay`` and ``jitter`` (each change
waits ``delay + uniform(0, jitter)`` seconds before it is sent), ``workers`` (concurrent
senders; 1 keeps the order of the changes).

The delivery log (:meth:`WebhookSender.log`) has one entry per change dropped or not sent
(``disabled``) and one per HTTP attempt, with the answer: what the tests read.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import requests

Platform = Literal["woocommerce", "shopify"]
Outcome = Literal["delivered", "failed", "dropped", "disabled", "gave_up"]

#: WooCommerce: one webhook per order topic, as a shop registers them.
WOOCOMMERCE_WEBHOOK_IDS: Mapping[str, int] = {"order.created": 1, "order.updated": 2, "order.deleted": 3}
WOOCOMMERCE_USER_AGENT = "WooCommerce/10.3.0 Hookshot (WordPress/6.8.3)"
#: Shopify: 8 retries over about 4 hours, doubling (seconds after the previous attempt).
SHOPIFY_RETRY_DELAYS: tuple[float, ...] = tuple(56.0 * 2**n for n in range(8))
SHOPIFY_API_VERSION = "2026-10"
_TIMEOUTS: Mapping[str, float] = {"woocommerce": 60.0, "shopify": 5.0}


@dataclass(frozen=True)
class Switches:
    """Where and how the sandbox sends its webhooks (see the module docstring)."""

    url: str
    secret: str
    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    seed: int = 0
    workers: int = 1
    #: seconds to wait for an answer (default: the platform's, 60 s WooCommerce, 5 s Shopify)
    timeout: float | None = None
    #: WooCommerce: a webhook already failed more than this many times in a row is disabled on
    #: its next failure; None never disables
    max_failures: int | None = 5
    #: Shopify: the documented retry delays times this (0 retries at once; retries off: ``retries=False``)
    retry_scale: float = 1.0
    retries: bool = True

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"webhook {name} must be a share between 0 and 1")
        if self.delay < 0 or self.jitter < 0 or self.retry_scale < 0:
            raise ValueError("webhook delay, jitter and retry_scale must not be negative")
        if self.workers < 1:
            raise ValueError("webhook workers must be at least 1")


@dataclass(frozen=True)
class LogEntry:
    """One line of the delivery log: a change not sent (``dropped``, ``disabled``) or one HTTP
    attempt (``delivered``, ``failed``; ``gave_up`` is Shopify's last failed retry)."""

    change: int  # the change's number, from 1, in the order the storefront announced them
    topic: str
    order_id: int
    outcome: Outcome
    delivery_id: str = ""
    copy: int = 0  # 0 the delivery, 1 its duplicate
    attempt: int = 1
    status: int | None = None  # the HTTP status; None when there was no answer
    answer: str = ""  # the answer's body (first 300 characters) or the error
    at: float = 0.0  # wall time of the attempt (or of the decision)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Job:
    change: int
    topic: str
    order_id: int
    body: bytes
    headers: dict[str, str]
    copy: int = 0
    attempt: int = 1


@dataclass
class _WooWebhook:
    webhook_id: int
    failures: int = 0
    status: str = "active"


@dataclass
class WebhookSender:
    """Queues the storefront's changes and sends them from background threads (see the module
    docstring). ``announce`` is what a storefront calls; ``close`` stops the threads."""

    platform: Platform
    switches: Switches
    #: WooCommerce: the shop's home URL (``X-WC-Webhook-Source``); Shopify: its myshopify domain
    source: str = ""
    _log: list[LogEntry] = field(default_factory=list, init=False)
    _queue: list[tuple[float, int, _Job]] = field(default_factory=list, init=False)
    _order: Any = field(default_factory=itertools.count, init=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False)
    _busy: int = field(default=0, init=False)
    _changes: int = field(default=0, init=False)
    _closed: bool = field(default=False, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    _webhooks: dict[str, _WooWebhook] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.platform not in ("woocommerce", "shopify"):
            raise ValueError(f"unknown platform {self.platform!r}")
        self._rng = random.Random(self.switches.seed)
        self._webhooks = {t: _WooWebhook(i) for t, i in WOOCOMMERCE_WEBHOOK_IDS.items()}
        self._session = requests.Session()
        self._session.trust_env = False  # the URL is given; no proxy from the environment
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=self.switches.workers)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        for n in range(self.switches.workers):
            thread = threading.Thread(target=self._work, name=f"sandbox-webhooks-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    # -- what a storefront calls

    def announce(self, topics: list[str], order_id: int, body: bytes) -> None:
        """One change of an order: its topics (Shopify may name several) and the body. Never blocks
        on the network: the change is queued (or dropped) and the caller goes on."""
        now = time.time()
        with self._cond:
            if self._closed:
                return
            self._changes += 1
            change = self._changes
            drop = self._rng.random() < self.switches.drop
            twice = self._rng.random() < self.switches.duplicate
            wait = self.switches.delay + self._rng.random() * self.switches.jitter
            event_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            for topic in topics:
                if drop:
                    self._log.append(LogEntry(change, topic, order_id, "dropped", at=now))
                    continue
                if self.platform == "woocommerce" and self._webhooks[topic].status != "active":
                    self._log.append(LogEntry(change, topic, order_id, "disabled", at=now,
                                              answer=f"webhook {self._webhooks[topic].webhook_id} disabled"))
                    continue
                headers = self._headers(topic, body, now, event_id)
                for copy in (0, 1) if twice else (0,):
                    job = _Job(change, topic, order_id, body, headers, copy)
                    heapq.heappush(self._queue, (time.monotonic() + wait, next(self._order), job))
            self._cond.notify_all()

    # -- the log and the life cycle

    def log(self) -> list[LogEntry]:
        """Every entry so far, in the order they happened."""
        with self._cond:
            return list(self._log)

    def summary(self) -> dict[str, int]:
        """Changes announced, and the log's entries counted by outcome (``duplicates`` sent)."""
        with self._cond:
            counts = Counter(e.outcome for e in self._log)
            counts["duplicates"] = sum(1 for e in self._log if e.copy and e.attempt == 1
                                       and e.outcome in ("delivered", "failed", "gave_up"))
            counts["changes"] = self._changes
            return dict(counts)

    def disabled(self) -> list[str]:
        """WooCommerce topics whose webhook was disabled after consecutive failures."""
        with self._cond:
            return [t for t, w in self._webhooks.items() if w.status != "active"]

    def enable(self) -> None:
        """Set every disabled WooCommerce webhook active again (as a shop owner does)."""
        with self._cond:
            for webhook in self._webhooks.values():
                webhook.status, webhook.failures = "active", 0

    @property
    def closed(self) -> bool:
        return self._closed

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._busy

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until nothing is queued or being sent (retries waiting count as queued)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    def close(self) -> None:
        """Stop sending; what is still queued is not sent."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._session.close()

    # -- the sender threads

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._queue or self._queue[0][0] > time.monotonic()):
                    due = self._queue[0][0] - time.monotonic() if self._queue else 0.2
                    self._cond.wait(max(0.001, min(due, 0.2)))
                if self._closed:
                    return
                _due, _n, job = heapq.heappop(self._queue)
                self._busy += 1
            try:
                self._send(job)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _send(self, job: _Job) -> None:
        status: int | None = None
        try:
            resp = self._session.post(self.switches.url, data=job.body, headers=job.headers,
                                      timeout=self.switches.timeout or _TIMEOUTS[self.platform],
                                      allow_redirects=False)
            status, answer = resp.status_code, resp.text[:300]
        except requests.RequestException as exc:
            answer = f"{type(exc).__name__}: {str(exc)[:250]}"
        if self.platform == "woocommerce":
            ok = status is not None and 200 <= status < 303
        else:
            ok = status is not None and 200 <= status < 300
        with self._cond:
            outcome: Outcome = "delivered" if ok else "failed"
            if self.platform == "woocommerce":
                self._count_woocommerce(job.topic, ok)
            elif not ok:
                outcome = self._retry_shopify(job)
            delivery_id = (job.headers.get("X-WC-Webhook-Delivery-ID")
                           or job.headers.get("X-Shopify-Webhook-Id", ""))
            self._log.append(LogEntry(job.change, job.topic, job.order_id, outcome, delivery_id, job.copy,
                                      job.attempt, status, answer, time.time()))

    def _count_woocommerce(self, topic: str, ok: bool) -> None:
        """``log_delivery``/``failed_delivery``: a success resets the count; a failure when the
        count is already above ``max_failures`` disables the webhook, else adds one."""
        webhook = self._webhooks[topic]
        limit = self.switches.max_failures
        if ok:
            webhook.failures = 0
        elif limit is not None and webhook.failures > limit:
            webhook.status = "disabled"
        else:
            webhook.failures += 1

    def _retry_shopify(self, job: _Job) -> Outcome:
        if not self.switches.retries or job.attempt > len(SHOPIFY_RETRY_DELAYS):
            return "gave_up"
        wait = SHOPIFY_RETRY_DELAYS[job.attempt - 1] * self.switches.retry_scale
        again = _Job(job.change, job.topic, job.order_id, job.body, job.headers, job.copy, job.attempt + 1)
        heapq.heappush(self._queue, (time.monotonic() + wait, next(self._order), again))
        return "failed"

    # -- headers, as each platform sends them

    def _headers(self, topic: str, body: bytes, now: float, event_id: str) -> dict[str, str]:
        digest = hmac.new(self.switches.secret.encode(), body, hashlib.sha256).digest()
        signature = base64.b64encode(digest).decode()
        if self.platform == "woocommerce":
            webhook_id = self._webhooks[topic].webhook_id
            resource, _, event = topic.partition(".")
            return {"Content-Type": "application/json", "User-Agent": WOOCOMMERCE_USER_AGENT,
                    "X-WC-Webhook-Source": self.source, "X-WC-Webhook-Topic": topic,
                    "X-WC-Webhook-Resource": resource, "X-WC-Webhook-Event": event,
                    "X-WC-Webhook-Signature": signature, "X-WC-Webhook-ID": str(webhook_id),
                    "X-WC-Webhook-Delivery-ID": woocommerce_delivery_id(webhook_id, int(now))}
        triggered = datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        return {"Content-Type": "application/json", "User-Agent": "Shopify-Captain-Hook",
                "X-Shopify-Topic": topic, "X-Shopify-Hmac-Sha256": signature,
                "X-Shopify-Shop-Domain": self.source, "X-Shopify-API-Version": SHOPIFY_API_VERSION,
                "X-Shopify-Webhook-Id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                "X-Shopify-Triggered-At": triggered, "X-Shopify-Event-Id": event_id}


def woocommerce_delivery_id(webhook_id: int, second: int) -> str:
    """``wp_hash($webhook_id . strtotime('now'))``: an HMAC-MD5 with the site's salt, 32 hex
    characters, the same for every delivery of one webhook in one second."""
    return hmac.new(b"sandbox-wp-salt", f"{webhook_id}{second}".encode(), hashlib.md5).hexdigest()


def parse_delay(text: str) -> tuple[float, float]:
    """``--webhook-delay``: ``SECONDS`` (fixed) or ``SECONDS+JITTER`` (plus up to JITTER, seeded)."""
    fixed, _, jitter = text.partition("+")
    try:
        values = float(fixed), float(jitter or 0)
    except ValueError:
        raise ValueError(f"--webhook-delay {text!r}: SECONDS or SECONDS+JITTER") from None
    if min(values) < 0:
        raise ValueError("--webhook-delay must not be negative")
    return values


def add_cli_flags(parser: Any) -> None:
    """The ``--webhook-*`` flags both sandbox CLIs take."""
    group = parser.add_argument_group("webhooks (sent when orders change; off without --webhook-url)")
    group.add_argument("--webhook-url", help="POST signed deliveries here, e.g. "
                       "http://127.0.0.1:8080/order-integration/webhooks/demo")
    group.add_argument("--webhook-secret", default="", help="the webhook secret (signs every delivery)")
    group.add_argument("--webhook-drop", type=float, default=0.0, help="share of changes never sent (0..1)")
    group.add_argument("--webhook-duplicate", type=float, default=0.0,
                       help="share of deliveries sent twice (0..1)")
    group.add_argument("--webhook-delay", default="0", help="SECONDS or SECONDS+JITTER before each delivery")
    group.add_argument("--webhook-seed", type=int, default=0, help="seed of the drop/duplicate/jitter draws")
    group.add_argument("--webhook-workers", type=int, default=1, help="concurrent senders")
    group.add_argument("--webhook-max-failures", type=int, default=5,
                       help="WooCommerce: disable a webhook failing again after more than this many "
                       "failures in a row (-1: never)")
    group.add_argument("--webhook-retry-scale", type=float, default=1.0,
                       help="Shopify: multiply the retry schedule (8 retries over ~4 h) by this")


def switches_from_cli(args: Any) -> Switches | None:
    """The switches the ``--webhook-*`` flags give (None without ``--webhook-url``)."""
    if not args.webhook_url:
        return None
    if not args.webhook_secret:
        raise SystemExit("--webhook-url needs --webhook-secret")
    delay, jitter = parse_delay(args.webhook_delay)
    return Switches(url=args.webhook_url, secret=args.webhook_secret, drop=args.webhook_drop,
                    duplicate=args.webhook_duplicate, delay=delay, jitter=jitter, seed=args.webhook_seed,
                    workers=args.webhook_workers,
                    max_failures=None if args.webhook_max_failures < 0 else args.webhook_max_failures,
                    retry_scale=args.webhook_retry_scale)
