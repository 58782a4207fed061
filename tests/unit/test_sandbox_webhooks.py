"""The sandbox storefronts send signed webhooks as WooCommerce and Shopify do (issue 15, item 6).

Each sandbox sends to a small HTTP server in this test that hands every request to the package's
own :class:`~order_integration.webhooks.Receiver` (its verifiers, its answers, a real ledger
inbox) and keeps the request: so the sandbox's deliveries are checked by the code that will
receive them in production, and bad input the sandbox can produce (a wrong secret) gets the
receiver's real answer. Loopback only, port 0.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pendulum
import pytest
import requests

from order_integration.config import load_config
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.webhooks import Receiver, StorefrontConnection
from sandbox.generator import generate_orders
from sandbox.shopify_admin import SandboxShopify
from sandbox.storefront import SandboxStorefront
from sandbox.webhook_sender import SHOPIFY_RETRY_DELAYS, add_cli_flags, parse_delay, switches_from_cli

pytestmark = pytest.mark.unit

SECRET = "sandbox-wh-secret-9d1"
AUTH = ("ck_sandbox", "cs_sandbox")
ORDERS = generate_orders(12, start=pendulum.datetime(2026, 11, 2, 10, tz="UTC"),
                         end=pendulum.datetime(2026, 11, 2, 11, tz="UTC"), seed=3, first_id=7001)
NEW = generate_orders(1, start=pendulum.datetime(2026, 11, 2, 11, tz="UTC"),
                      end=pendulum.datetime(2026, 11, 2, 12, tz="UTC"), seed=4, first_id=7100)[0]
STORES = """
stores:
  - id: woo
    platform: woocommerce
    storefront_conn_id: storefront_woo
    backend_conn_id: backend
  - id: shop
    platform: shopify
    storefront_conn_id: storefront_shop
    backend_conn_id: backend
"""


class Receiving(ThreadingHTTPServer):
    """The package's receiver behind HTTP; ``fail_first`` answers 503 to that many requests first."""

    daemon_threads = True

    def __init__(self, receiver: Receiver, store_id: str) -> None:
        self.receiver, self.store_id = receiver, store_id
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.fail_first = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/order-integration/webhooks/{self.store_id}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiving

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = dict(self.headers.items())
        with self.server.lock:
            failing = self.server.fail_first > 0
            self.server.fail_first -= failing
        if failing:
            status, answer = 503, {"outcome": "unavailable"}
        else:
            result = self.server.receiver.receive(self.server.store_id, headers, body)
            status, answer = result.status, result.body
        with self.server.lock:
            self.server.requests.append((headers, body, status))
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)


def _receiving(tmp_path, ledger, store_id: str, secret: str = SECRET):
    config = tmp_path / "stores.yaml"
    config.write_text(STORES)
    hosts = {"storefront_woo": "http://127.0.0.1:1", "storefront_shop": "https://sandbox-shop.myshopify.com"}
    receiver = Receiver(config=lambda: load_config(config),
                        connection=lambda conn_id: StorefrontConnection(hosts[conn_id], {"webhook_secret": secret}),
                        inbox=lambda: ledger.webhook_inbox)
    server = Receiving(receiver, store_id)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


@pytest.fixture
def woo_receiver(tmp_path, ledger):
    server = _receiving(tmp_path, ledger, "woo")
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def shop_receiver(tmp_path, ledger):
    server = _receiving(tmp_path, ledger, "shop")
    yield server
    server.shutdown()
    server.server_close()


def _wait(sender, timeout: float = 20.0) -> None:
    assert sender.wait_idle(timeout), f"the sender is still busy: {sender.summary()}"


def _sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()


# -- WooCommerce ---------------------------------------------------------------------------------


def test_woocommerce_sends_created_updated_deleted_as_core_does(woo_receiver, ledger):
    with SandboxStorefront(ORDERS) as shop:  # the orders it starts with announce nothing
        sender = shop.send_webhooks(woo_receiver.url, SECRET)
        home = shop.base_url + "/"
        base = shop.base_url + "/wp-json/wc/v3/orders"
        assert requests.post(shop.base_url + "/__sandbox/orders", json=NEW, timeout=10).status_code == 200
        created = requests.get(f"{base}/{NEW['id']}", auth=AUTH, timeout=10).content
        _wait(sender)
        updated = requests.put(f"{base}/7001", json={"customer_note": "ring twice"}, auth=AUTH, timeout=10)
        _wait(sender)
        assert requests.delete(f"{base}/7002", auth=AUTH, timeout=10).status_code == 200  # to the trash
        assert requests.delete(f"{base}/7003", params={"force": "true"}, auth=AUTH, timeout=10).status_code == 200
        assert requests.delete(f"{base}/7002", auth=AUTH, timeout=10).status_code == 410  # trashed already: no webhook
        shop.upsert_order({**NEW, "id": 7101, "status": "checkout-draft"})  # drafts fire nothing
        _wait(sender)
    sent = woo_receiver.requests
    assert [(h["X-WC-Webhook-Topic"], json.loads(b)["id"], s) for h, b, s in sent] == [
        ("order.created", NEW["id"], 200), ("order.updated", 7001, 200), ("order.deleted", 7002, 200),
        ("order.deleted", 7003, 200)]
    headers, body, _ = sent[0]
    assert body == created  # the order as GET /orders/<id> returns it
    assert headers["X-WC-Webhook-Signature"] == _sign(body)
    assert (headers["X-WC-Webhook-Resource"], headers["X-WC-Webhook-Event"], headers["X-WC-Webhook-ID"]) == (
        "order", "created", "1")
    assert headers["X-WC-Webhook-Source"] == home
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-WC-Webhook-Delivery-ID"])
    assert headers["User-Agent"].startswith("WooCommerce/") and "Hookshot" in headers["User-Agent"]
    assert headers["Content-Type"] == "application/json"
    assert json.loads(sent[1][1]) == json.loads(updated.content)
    assert sent[1][0]["X-WC-Webhook-ID"] == "2" and sent[2][0]["X-WC-Webhook-ID"] == "3"
    assert [json.loads(b) for _h, b, _s in sent[2:]] == [{"id": 7002}, {"id": 7003}]
    assert [r["topic"] for r in ledger.webhook_inbox.rows("woo")] == [
        "order.created", "order.updated", "order.deleted", "order.deleted"]
    assert {e.outcome for e in sender.log()} == {"delivered"}


def test_the_api_answers_at_once_and_the_delivery_follows_after_its_delay(woo_receiver):
    with SandboxStorefront(ORDERS) as shop:
        sender = shop.send_webhooks(woo_receiver.url, SECRET, delay=1.5)
        started = time.monotonic()
        resp = requests.put(f"{shop.base_url}/wp-json/wc/v3/orders/7004", json={"status": "completed"},
                            auth=AUTH, timeout=10)
        answered = time.monotonic() - started
        assert resp.status_code == 200 and answered < 1.0
        assert woo_receiver.requests == []
        _wait(sender)
        [entry] = sender.log()
        assert entry.at - started >= 1.4 and entry.status == 200


def test_drops_and_duplicates_are_seeded_and_each_delivery_is_recorded_once(woo_receiver, ledger):
    def burst(seed: int) -> tuple[list[Any], dict[str, int]]:
        with SandboxStorefront(ORDERS) as shop:
            sender = shop.send_webhooks(woo_receiver.url, SECRET, drop=0.3, duplicate=0.1, seed=seed, workers=4)
            for n in range(200):
                shop.update_order(7001 + n % 12, customer_note=f"change {n} seed {seed}")
            _wait(sender)
            return sender.log(), sender.summary()

    log, summary = burst(11)
    assert summary["changes"] == 200
    assert 40 <= summary["dropped"] <= 80 and 8 <= summary["duplicates"] <= 30, summary
    assert summary["delivered"] == 200 - summary["dropped"] + summary["duplicates"]
    answers = Counter(json.loads(e.answer)["outcome"] for e in log if e.outcome == "delivered")
    assert answers == {"recorded": 200 - summary["dropped"], "duplicate": summary["duplicates"]}
    assert len(ledger.webhook_inbox.rows("woo")) == 200 - summary["dropped"]  # each delivery once

    def decisions(entries: list[Any]) -> list[tuple[int, str, int]]:
        return sorted((e.change, e.outcome, e.copy) for e in entries)

    assert decisions(burst(11)[0]) == decisions(log)  # the same seed, the same drops and duplicates
    assert decisions(burst(12)[0]) != decisions(log)


def test_a_wrong_secret_is_refused_401_and_woocommerce_disables_the_webhook(tmp_path, ledger):
    server = _receiving(tmp_path, ledger, "woo", secret="the-store-has-another-secret")
    try:
        with SandboxStorefront(ORDERS) as shop:
            sender = shop.send_webhooks(server.url, SECRET, max_failures=2)
            for n in range(6):
                shop.update_order(7001, customer_note=f"try {n}")
                _wait(sender)
            log = sender.log()
            assert [(e.outcome, e.status) for e in log] == [("failed", 401)] * 4 + [("disabled", None)] * 2
            assert json.loads(log[0].answer)["outcome"] == "bad_signature"
            assert sender.disabled() == ["order.updated"]
            shop.upsert_order(NEW)  # order.created is another webhook: still active (and failing)
            _wait(sender)
            assert sender.log()[-1].topic == "order.created" and sender.log()[-1].status == 401
        assert ledger.webhook_inbox.rows("woo") == []
        assert len(server.requests) == 5  # never retried
    finally:
        server.shutdown()
        server.server_close()


def test_a_success_resets_the_failure_count(woo_receiver):
    with SandboxStorefront(ORDERS) as shop:
        sender = shop.send_webhooks(woo_receiver.url, SECRET, max_failures=1)
        for n in range(8):
            woo_receiver.fail_first = 2 if n % 3 == 0 else 0  # two failures, then a success
            shop.update_order(7001 + n, customer_note="x")
            _wait(sender)
            if woo_receiver.fail_first:
                shop.update_order(7001 + n, customer_note="y")
                _wait(sender)
        assert sender.disabled() == []


# -- Shopify -------------------------------------------------------------------------------------


def test_shopify_sends_orders_topics_with_its_headers_and_retries_with_the_same_webhook_id(shop_receiver, ledger):
    with SandboxShopify(ORDERS) as shop:
        sender = shop.send_webhooks(shop_receiver.url, SECRET, retry_scale=0.001)
        shop.add_orders([NEW])
        _wait(sender)
        shop_receiver.fail_first = 2
        unpaid = next(o["id"] for o in ORDERS if o["status"] == "pending")
        with shop.state.lock:
            order = shop.state.orders[unpaid]
            pending = order["financial"] == "PENDING"
            order["financial"] = "PAID"
            shop.state.touch(order)
        _wait(sender)
    sent = shop_receiver.requests
    topics = [(h["X-Shopify-Topic"], s) for h, _b, s in sent]
    assert topics[0] == ("orders/create", 200)
    assert pending, "the test needs an order that was not paid"
    assert sorted(topics[1:]) == sorted([("orders/updated", 503), ("orders/paid", 503),
                                         ("orders/updated", 200), ("orders/paid", 200)])
    headers, body, _ = sent[0]
    order = json.loads(body)
    assert (order["id"], order["admin_graphql_api_id"]) == (NEW["id"], f"gid://shopify/Order/{NEW['id']}")
    assert headers["X-Shopify-Hmac-Sha256"] == _sign(body)
    assert headers["X-Shopify-Shop-Domain"] == "sandbox-shop.myshopify.com"
    assert re.fullmatch(r"\d{4}-\d{2}", headers["X-Shopify-API-Version"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T[\d:.]+Z", headers["X-Shopify-Triggered-At"])
    assert {"X-Shopify-Webhook-Id", "X-Shopify-Event-Id"} <= set(headers)
    change = [h for h, _b, _s in sent[1:]]
    assert len({h["X-Shopify-Event-Id"] for h in change}) == 1  # one change, one event id
    by_topic: dict[str, set[str]] = {}
    for h in change:
        by_topic.setdefault(h["X-Shopify-Topic"], set()).add(h["X-Shopify-Webhook-Id"])
    assert all(len(ids) == 1 for ids in by_topic.values())  # a retry keeps its delivery's id
    log = sender.log()
    assert sorted((e.topic, e.attempt, e.outcome) for e in log if e.change == 2) == [
        ("orders/paid", 1, "failed"), ("orders/paid", 2, "delivered"),
        ("orders/updated", 1, "failed"), ("orders/updated", 2, "delivered")]
    assert sorted(r["topic"] for r in ledger.webhook_inbox.rows("shop")) == [
        "orders/create", "orders/paid", "orders/updated"]


def test_shopify_gives_up_after_eight_retries(shop_receiver):
    shop_receiver.fail_first = 100
    with SandboxShopify(ORDERS) as shop:
        sender = shop.send_webhooks(shop_receiver.url, SECRET, retry_scale=0.0)
        shop.add_orders([NEW])
        _wait(sender)
        log = sender.log()
    assert len(SHOPIFY_RETRY_DELAYS) == 8 and 3.5 * 3600 <= sum(SHOPIFY_RETRY_DELAYS) <= 4.5 * 3600
    assert [e.attempt for e in log] == list(range(1, 10))
    assert [e.outcome for e in log] == ["failed"] * 8 + ["gave_up"]
    assert len(shop_receiver.requests) == 9


def test_the_cli_flags_give_the_switches():
    parser = argparse.ArgumentParser()
    add_cli_flags(parser)
    assert switches_from_cli(parser.parse_args([])) is None
    args = parser.parse_args(["--webhook-url", "http://127.0.0.1:9/x", "--webhook-secret", "s",
                              "--webhook-drop", "0.3", "--webhook-duplicate", "0.1", "--webhook-delay", "0.5+2",
                              "--webhook-seed", "5", "--webhook-max-failures", "-1"])
    found = switches_from_cli(args)
    assert (found.drop, found.duplicate, found.delay, found.jitter, found.seed, found.max_failures) == (
        0.3, 0.1, 0.5, 2.0, 5, None)
    assert parse_delay("3") == (3.0, 0.0)
    with pytest.raises(ValueError):
        parse_delay("soon")
    with pytest.raises(SystemExit):
        switches_from_cli(parser.parse_args(["--webhook-url", "http://127.0.0.1:9/x"]))
