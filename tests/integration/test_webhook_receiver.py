"""The webhook receiver on the REAL api-server (issue 15, part 1): the package's plugin mounted by
``airflow api-server``, signed WooCommerce and Shopify deliveries POSTed over HTTP without an
Airflow login, and the ledger's ``webhook_inbox`` read afterwards.

One api-server for the module (about a minute to start on 2 cores); no scheduler, no DAG runs:
turning the inbox into export runs is not built yet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from order_integration.ledger import WebhookInbox, sqlite_engine
from tests.support.airflow_run import ROOT, migrate_airflow_db
from tests.support.airflow_services import API_SERVER, AirflowServices

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

WOO_SECRET = "woo-webhook-secret-7f3a"
SHOP_SECRET = "shpss_0123456789abcdef"
STORES = """
stores:
  - id: wh_woo
    platform: woocommerce
    storefront_conn_id: storefront_wh_woo
    backend_conn_id: backend_wh
  - id: wh_shop
    platform: shopify
    storefront_conn_id: storefront_wh_shop
    backend_conn_id: backend_wh
"""


def _sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _woo(order_id: int, *, delivery: str = "0f1e2d3c", topic: str = "order.created",
         secret: str = WOO_SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"id": order_id, "status": "processing", "billing": {"email": "c@example.com"}}).encode()
    return body, {"Content-Type": "application/json", "X-WC-Webhook-Signature": _sign(body, secret),
                  "X-WC-Webhook-Topic": topic, "X-WC-Webhook-Delivery-ID": delivery, "X-WC-Webhook-ID": "5"}


def _shopify(order_id: int, webhook_id: str, topic: str = "orders/create") -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"id": order_id, "admin_graphql_api_id": f"gid://shopify/Order/{order_id}"}).encode()
    return body, {"Content-Type": "application/json", "X-Shopify-Hmac-Sha256": _sign(body, SHOP_SECRET),
                  "X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": webhook_id,
                  "X-Shopify-Shop-Domain": "wh-shop.myshopify.com"}


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    home = tmp_path_factory.mktemp("webhook_home")
    migrate_airflow_db(home)  # also the default ledger, $AIRFLOW_HOME/order_ledger.db, at this schema
    config = home / "stores.yaml"
    config.write_text(STORES)
    env = {
        "ORDER_INTEGRATION_CONFIG": str(config),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW_CONN_STOREFRONT_WH_WOO": json.dumps({
            "conn_type": "http", "host": "https://shop.example.com", "login": "ck", "password": "cs",
            "extra": {"webhook_secret": WOO_SECRET}}),
        "AIRFLOW_CONN_STOREFRONT_WH_SHOP": json.dumps({
            "conn_type": "http", "host": "https://wh-shop.myshopify.com", "password": "shpat_x",
            "extra": {"webhook_secret": SHOP_SECRET, "api_version": "2026-10"}}),
    }
    env = {k: v for k, v in env.items() if os.environ.get(k) != v}
    with AirflowServices(home, env, (API_SERVER,)) as services:
        session = requests.Session()
        session.trust_env = False  # loopback: no proxy
        yield {"url": f"{services.base_url}/order-integration/webhooks", "session": session,
               "inbox": WebhookInbox(sqlite_engine(Path(home) / "order_ledger.db")), "services": services}


def _post(receiver, store: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    return receiver["session"].post(f"{receiver['url']}/{store}", data=body, headers=headers, timeout=60)


def test_signed_deliveries_are_recorded_without_an_airflow_login(receiver):
    inbox = receiver["inbox"]
    woo = _post(receiver, "wh_woo", *_woo(101))
    shop = _post(receiver, "wh_shop", *_shopify(9001, "a1b2c3d4-0001"))
    assert (woo.status_code, woo.json()) == (200, {"outcome": "recorded", "order_id": 101})
    assert (shop.status_code, shop.json()) == (200, {"outcome": "recorded", "order_id": 9001})
    assert inbox.waiting("wh_woo")[:1] == ["101"]
    [row] = [r for r in inbox.rows("wh_shop") if r["delivery_id"] == "a1b2c3d4-0001"]
    assert (row["order_id"], row["topic"], row["done_at"]) == ("9001", "orders/create", None)
    # the core API next to it still wants a login: only the plugin's route is open
    core = receiver["session"].get(f"{receiver['services'].base_url}/api/v2/dags", timeout=60)
    assert core.status_code == 401


def test_a_duplicate_is_recorded_once_and_a_shared_delivery_id_is_not_a_duplicate(receiver):
    inbox = receiver["inbox"]
    body, headers = _woo(202, delivery="dup-0202")
    answers = [_post(receiver, "wh_woo", body, headers).json()["outcome"] for _ in range(3)]
    assert answers == ["recorded", "duplicate", "duplicate"]
    other = _post(receiver, "wh_woo", *_woo(203, delivery="dup-0202"))  # same second, another order
    assert other.json()["outcome"] == "recorded"
    shop = [_post(receiver, "wh_shop", *_shopify(9002, "retry-9002")).json()["outcome"] for _ in range(2)]
    assert shop == ["recorded", "duplicate"]
    rows = [r for r in inbox.rows("wh_woo") if r["delivery_id"] == "dup-0202"]
    assert sorted(r["order_id"] for r in rows) == ["202", "203"]
    assert len([r for r in inbox.rows("wh_shop") if r["delivery_id"] == "retry-9002"]) == 1


def test_bad_deliveries_are_refused_with_their_status(receiver):
    inbox = receiver["inbox"]
    before = len(inbox.rows("wh_woo"))
    body, headers = _woo(301)
    assert _post(receiver, "wh_woo", body.replace(b"301", b"302"), headers).status_code == 401  # tampered
    assert _post(receiver, "wh_woo", *_woo(301, secret="not-the-secret")).status_code == 401
    unsigned = {k: v for k, v in headers.items() if k != "X-WC-Webhook-Signature"}
    assert _post(receiver, "wh_woo", body, unsigned).status_code == 401
    assert _post(receiver, "no_such_store", body, headers).status_code == 404
    bad = b'{"id": 301,'
    assert _post(receiver, "wh_woo", bad, {**headers, "X-WC-Webhook-Signature": _sign(bad, WOO_SECRET)}
                 ).status_code == 400
    big = b'{"id": 301, "pad": "' + b"x" * (1024 * 1024) + b'"}'
    too_large = _post(receiver, "wh_woo", big, {**headers, "X-WC-Webhook-Signature": _sign(big, WOO_SECRET)})
    assert (too_large.status_code, too_large.json()["outcome"]) == (413, "too_large")
    ping = receiver["session"].post(f"{receiver['url']}/wh_woo", data={"webhook_id": "5"}, timeout=60)
    assert (ping.status_code, ping.json()) == (200, {"outcome": "ping"})  # WooCommerce needs exactly 200
    assert len(inbox.rows("wh_woo")) == before
    log = receiver["services"].log_file("api-server").read_text(errors="replace")
    assert "webhook store=wh_woo topic=- order=- delivery=- outcome=bad_signature status=401" in log
    assert "outcome=too_large status=413" in log
    assert WOO_SECRET not in log and "c@example.com" not in log  # never the secret, never the body


def test_a_burst_of_200_parallel_deliveries_is_recorded_whole(receiver):
    inbox = receiver["inbox"]
    deliveries = [("wh_woo", *_woo(10_000 + i, delivery=f"burst-{i // 7}")) if i % 2 else
                  ("wh_shop", *_shopify(20_000 + i, f"burst-{i}")) for i in range(200)]
    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(lambda d: _post(receiver, *d).status_code, deliveries))
    assert statuses == [200] * 200
    waiting = set(inbox.waiting("wh_woo")) | set(inbox.waiting("wh_shop"))
    expected = {str(10_000 + i) if i % 2 else str(20_000 + i) for i in range(200)}
    assert expected <= waiting
