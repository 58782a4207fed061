"""Webhook verification per platform and the receiver's answers (issue 15, part 1).

The verifiers get the headers and raw bytes a storefront sends; the receiver is driven with a
store config, connections and an inbox of the test's own, and its HTTP side through Starlette's
test client (the real api-server is tests/integration/test_webhook_receiver.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from pathlib import Path

import pytest

from order_integration.config import load_config
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.storefronts import PLATFORMS, get_webhook_verifier
from order_integration.storefronts.webhook import WebhookKind, WebhookRefusal, WebhookRefused
from order_integration.webhooks import Receiver, ReceiverUnavailable, StorefrontConnection

pytestmark = pytest.mark.unit

SECRET = "wh-secret-Ünï&code"
ORDER = {"id": 4711, "status": "processing", "billing": {"email": "a@example.com"}}


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def woo_headers(body: bytes, topic: str = "order.updated", delivery: str = "d41d8cd9", **extra) -> dict:
    return {"X-WC-Webhook-Signature": sign(body), "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Delivery-ID": delivery, "X-WC-Webhook-ID": "3", **extra}


def shopify_headers(body: bytes, topic: str = "orders/updated", webhook_id: str = "b54557e4-bdd9-4b37",
                    shop: str = "demo-shop.myshopify.com") -> dict:
    return {"X-Shopify-Hmac-Sha256": sign(body), "X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Shop-Domain": shop}


def lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def woo(secret: str = SECRET):
    return get_webhook_verifier("woocommerce", secret, host="https://shop.example.com")


def shopify(secret: str = SECRET):
    return get_webhook_verifier("shopify", secret, host="https://demo-shop.myshopify.com")


BODY = json.dumps(ORDER).encode()


# -- WooCommerce ---------------------------------------------------------------------------------
@pytest.mark.parametrize("topic", ["order.created", "order.updated", "order.deleted", "order.restored"])
def test_woocommerce_order_topics_verify_to_the_order_id(topic):
    body = b'{"id": 4711}' if topic == "order.deleted" else BODY  # a deleted order's body is its id
    got = woo().verify(lower(woo_headers(body, topic)), body)
    assert (got.kind, got.topic, got.delivery_id, got.order_id) == (WebhookKind.ORDER, topic, "d41d8cd9", 4711)


@pytest.mark.parametrize(("case", "secret", "body", "headers"), [
    ("tampered body", SECRET, BODY.replace(b"4711", b"4712"), woo_headers(BODY)),
    ("wrong secret", "another-secret", BODY, woo_headers(BODY)),
    ("signature of another body", SECRET, BODY, woo_headers(b"{}")),
    ("not base64", SECRET, BODY, {**woo_headers(BODY), "X-WC-Webhook-Signature": "!!!"}),
    ("non-ASCII signature", SECRET, BODY, {**woo_headers(BODY), "X-WC-Webhook-Signature": "é" * 44}),
    ("empty signature", SECRET, BODY, {**woo_headers(BODY), "X-WC-Webhook-Signature": ""}),
])
def test_woocommerce_wrong_signatures_are_refused(case, secret, body, headers):
    with pytest.raises(WebhookRefused) as refused:
        woo(secret).verify(lower(headers), body)
    assert refused.value.refusal is WebhookRefusal.BAD_SIGNATURE and refused.value.refusal.status == 401
    assert SECRET not in refused.value.reason and "4711" not in refused.value.reason


def test_woocommerce_without_a_signature_is_refused_unless_it_is_the_ping():
    headers = lower(woo_headers(BODY))
    del headers["x-wc-webhook-signature"]
    with pytest.raises(WebhookRefused, match="no X-WC-Webhook-Signature") as refused:
        woo().verify(headers, BODY)
    assert refused.value.refusal is WebhookRefusal.UNSIGNED
    # WooCommerce's ping (WC_Webhook::deliver_ping): a form body, no signature, no topic
    ping = woo().verify({"content-type": "application/x-www-form-urlencoded"}, b"webhook_id=12")
    assert (ping.kind, ping.order_id, ping.detail) == (WebhookKind.PING, None, "webhook 12")
    for not_a_ping in (b"webhook_id=12&x=1", b"webhook_id=", b"id=12"):
        with pytest.raises(WebhookRefused):
            woo().verify({}, not_a_ping)
    with pytest.raises(WebhookRefused):  # a ping shape with a topic claims to be a delivery
        woo().verify({"x-wc-webhook-topic": "order.created"}, b"webhook_id=12")


def test_woocommerce_signed_other_topics_are_ignored_and_bad_order_bodies_are_malformed():
    other = woo().verify(lower(woo_headers(BODY, "product.updated")), BODY)
    assert (other.kind, other.order_id) == (WebhookKind.IGNORED, None) and "product.updated" in other.detail
    for body in (b"not json", b"[1, 2]", b'{"id": "12a"}', b'{"id": 1.5}', b'{"id": true}', b'{"id": "\xc2\xb2"}',
                 b'{"id": -3}', b"\xff\xfe", b"{}"):
        with pytest.raises(WebhookRefused) as refused:
            woo().verify(lower(woo_headers(body)), body)
        assert refused.value.refusal is WebhookRefusal.MALFORMED and refused.value.refusal.status == 400
    assert woo().verify(lower(woo_headers(b'{"id": "42"}')), b'{"id": "42"}').order_id == 42


def test_woocommerce_signs_with_the_secret_as_wordpress_decodes_it():
    """A secret stored as ``a&amp;b`` is signed with ``a&b`` (``wp_specialchars_decode``)."""
    body = BODY
    headers = lower({**woo_headers(body), "X-WC-Webhook-Signature": sign(body, "a&b")})
    assert woo("a&amp;b").verify(headers, body).order_id == 4711
    assert woo("a&b").verify(headers, body).order_id == 4711


# -- Shopify -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("topic", "body"), [
    ("orders/create", BODY),
    ("orders/paid", BODY),
    ("orders/cancelled", BODY),
    ("orders/delete", b'{"id": 4711}'),
    ("orders/updated", b'{"admin_graphql_api_id": "gid://shopify/Order/4711"}'),
    ("orders/edited", b'{"order_edit": {"id": 9, "order_id": 4711}}'),
])
def test_shopify_order_topics_verify_to_the_order_id(topic, body):
    got = shopify().verify(lower(shopify_headers(body, topic)), body)
    assert (got.kind, got.topic, got.delivery_id, got.order_id) == (
        WebhookKind.ORDER, topic, "b54557e4-bdd9-4b37", 4711)


def test_shopify_wrong_missing_and_misrouted_deliveries_are_refused():
    cases = [
        (BODY.replace(b"4711", b"4712"), shopify_headers(BODY), WebhookRefusal.BAD_SIGNATURE),
        (BODY, {**shopify_headers(BODY), "X-Shopify-Hmac-Sha256": sign(BODY, "x")}, WebhookRefusal.BAD_SIGNATURE),
        (BODY, {k: v for k, v in shopify_headers(BODY).items() if k != "X-Shopify-Hmac-Sha256"},
         WebhookRefusal.UNSIGNED),
        (BODY, shopify_headers(BODY, shop="other-shop.myshopify.com"), WebhookRefusal.WRONG_STORE),
        (b"{", shopify_headers(b"{"), WebhookRefusal.MALFORMED),
        (b'{"admin_graphql_api_id": "gid://shopify/Product/1"}',
         shopify_headers(b'{"admin_graphql_api_id": "gid://shopify/Product/1"}'), WebhookRefusal.MALFORMED),
    ]
    for body, headers, refusal in cases:
        with pytest.raises(WebhookRefused) as refused:
            shopify().verify(lower(headers), body)
        assert refused.value.refusal is refusal, refusal
    # a loopback stand-in host names no shop: the shop header is not checked
    local = get_webhook_verifier("shopify", SECRET, host="http://127.0.0.1:8443")
    assert local.verify(lower(shopify_headers(BODY, shop="any.myshopify.com")), BODY).order_id == 4711
    ignored = shopify().verify(lower(shopify_headers(BODY, "products/update")), BODY)
    assert ignored.kind is WebhookKind.IGNORED


def test_every_platform_verifies_and_needs_a_secret():
    for platform in PLATFORMS:
        with pytest.raises(ValueError, match="secret"):
            get_webhook_verifier(platform, "")


# -- the receiver --------------------------------------------------------------------------------
STORES = """
stores:
  - id: woo
    platform: woocommerce
    storefront_conn_id: storefront_woo
    backend_conn_id: backend_woo
  - id: shop
    platform: shopify
    storefront_conn_id: storefront_shop
    backend_conn_id: backend_shop
  - id: nosecret
    platform: woocommerce
    storefront_conn_id: storefront_nosecret
    backend_conn_id: backend_woo
"""
CONNECTIONS = {
    "storefront_woo": StorefrontConnection("https://shop.example.com", {"webhook_secret": SECRET}),
    "storefront_shop": StorefrontConnection("https://demo-shop.myshopify.com", {"webhook_secret": SECRET}),
    "storefront_nosecret": StorefrontConnection("https://shop.example.com", {}),
}


def _connection(conn_id: str) -> StorefrontConnection:
    if conn_id not in CONNECTIONS:
        raise ReceiverUnavailable(f"storefront connection {conn_id!r} is not defined")
    return CONNECTIONS[conn_id]


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)


@pytest.fixture
def receiver(tmp_path, ledger) -> Receiver:
    config = tmp_path / "stores.yaml"
    config.write_text(STORES)
    return Receiver(config=lambda: load_config(config), connection=_connection,
                    inbox=lambda: ledger.webhook_inbox, max_body=4096)


def test_verified_deliveries_are_recorded_once_and_answered_200(receiver, ledger, caplog):
    caplog.set_level(logging.INFO, "order_integration.webhooks")
    first = receiver.receive("woo", woo_headers(BODY), BODY)
    again = receiver.receive("woo", woo_headers(BODY), BODY)
    other = receiver.receive("woo", woo_headers(b'{"id": 4712}'), b'{"id": 4712}')  # same delivery id
    shop = receiver.receive("shop", shopify_headers(BODY, "orders/paid"), BODY)
    assert [(a.status, a.body["outcome"]) for a in (first, again, other, shop)] == [
        (200, "recorded"), (200, "duplicate"), (200, "recorded"), (200, "recorded")]
    assert first.body == {"outcome": "recorded", "order_id": 4711}
    assert ledger.webhook_inbox.waiting("woo") == ["4711", "4712"]
    [row] = ledger.webhook_inbox.rows("shop")
    assert (row["order_id"], row["topic"], row["delivery_id"]) == ("4711", "orders/paid", "b54557e4-bdd9-4b37")
    assert row["body_digest"] == hashlib.sha256(BODY).hexdigest()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("webhook store=woo topic=order.updated order=4711 delivery=d41d8cd9 outcome=recorded "
                        "status=200")
    assert lines[1].endswith("outcome=duplicate status=200") and len(lines) == 4


def test_every_refusal_has_its_status_and_its_log_line_without_body_or_secret(receiver, ledger, caplog):
    caplog.set_level(logging.INFO, "order_integration.webhooks")
    secret_body = b'{"id": 4711, "billing": {"email": "private@example.com"}}'
    unsigned = {k: v for k, v in woo_headers(secret_body).items() if k != "X-WC-Webhook-Signature"}
    answers = {
        "unknown store": receiver.receive("nope", woo_headers(secret_body), secret_body),
        "too large": receiver.receive("woo", woo_headers(b" " * 4097), b" " * 4097),
        "unsigned": receiver.receive("woo", unsigned, secret_body),
        "tampered": receiver.receive("woo", woo_headers(secret_body), secret_body + b" "),
        "malformed": receiver.receive("woo", woo_headers(b"{nope"), b"{nope"),
        "ping": receiver.receive("woo", {}, b"webhook_id=3"),
        "ignored": receiver.receive("woo", woo_headers(BODY, "coupon.created"), BODY),
        "no secret": receiver.receive("nosecret", woo_headers(BODY), BODY),
        "wrong shop": receiver.receive("shop", shopify_headers(BODY, shop="x.myshopify.com"), BODY),
    }
    assert {k: (a.status, a.body["outcome"]) for k, a in answers.items()} == {
        "unknown store": (404, "unknown_store"), "too large": (413, "too_large"), "unsigned": (401, "unsigned"),
        "tampered": (401, "bad_signature"), "malformed": (400, "malformed"), "ping": (200, "ping"),
        "ignored": (200, "ignored"), "no secret": (503, "unavailable"), "wrong shop": (400, "wrong_store")}
    assert ledger.webhook_inbox.rows("woo") == []  # nothing recorded but order deliveries
    assert answers["no secret"].body["detail"] == "not recorded now; send it again later"  # no names
    text = caplog.text
    assert "private@example.com" not in text and SECRET not in text
    assert "storefront_nosecret' has no extra.webhook_secret" in text  # the operator's log says why
    levels = {r.getMessage().split(" outcome=")[1].split()[0]: r.levelname for r in caplog.records}
    assert levels["bad_signature"] == "WARNING" and levels["unavailable"] == "ERROR" and levels["ping"] == "INFO"


def test_a_delivery_the_ledger_cannot_record_is_answered_503_and_recorded_on_the_retry(tmp_path, receiver, ledger):
    from order_integration.ledger import WebhookInbox

    down = sqlite_engine(tmp_path / "no-such-dir" / "ledger.db")  # cannot be opened
    receiver.inbox = lambda: WebhookInbox(down)
    answer = receiver.receive("woo", woo_headers(BODY), BODY)
    assert (answer.status, answer.body["outcome"]) == (503, "unavailable")
    receiver.inbox = lambda: ledger.webhook_inbox  # the ledger is back: the storefront's retry lands
    assert receiver.receive("woo", woo_headers(BODY), BODY).body["outcome"] == "recorded"


def test_an_unreadable_config_or_connection_is_503(receiver, tmp_path):
    def boom(_conn_id):
        raise OSError("metastore down")

    receiver.connection = boom
    assert receiver.receive("woo", woo_headers(BODY), BODY).status == 503
    bad = tmp_path / "bad.yaml"
    bad.write_text("stores: [")
    receiver.config = lambda: load_config(bad)
    assert receiver.receive("woo", woo_headers(BODY), BODY).status == 503


# -- the HTTP side (the app the plugin mounts), without a server ----------------------------------
def test_the_http_route_reads_at_most_the_limit_and_answers_what_the_receiver_decides(receiver, ledger):
    from starlette.testclient import TestClient

    from order_integration.webhooks_http import create_app

    client = TestClient(create_app(lambda: receiver))
    url = "/webhooks/woo"
    assert client.post(url, content=BODY, headers=woo_headers(BODY)).json() == {
        "outcome": "recorded", "order_id": 4711}
    assert client.post("/webhooks/nope", content=BODY, headers=woo_headers(BODY)).status_code == 404
    big = b"x" * 5000
    assert client.post(url, content=big, headers=woo_headers(big)).status_code == 413  # declared length

    read: list[int] = []

    def chunks():  # no Content-Length: chunked; the route stops reading past the limit
        for _ in range(100):
            read.append(1)
            yield b"y" * 1000

    assert client.post(url, content=chunks(), headers=woo_headers(b"")).status_code == 413
    assert client.post("/webhooks/nope", content=big, headers=woo_headers(big)).status_code == 404
    assert client.get(url).status_code == 405
    assert ledger.webhook_inbox.waiting("woo") == ["4711"]


def test_the_plugin_mounts_the_receiver_lazily():
    """The plugin is loaded by every Airflow process; its app imports FastAPI on its first request
    only (ruff's TID253 bans module-level FastAPI imports in the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "order_integration_plugin", Path(__file__).resolve().parents[2] / "plugins" / "order_integration_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    [mounted] = [a for a in module.OrderIntegrationPlugin.fastapi_apps if a["url_prefix"] == "/order-integration"]
    assert type(mounted["app"]).__name__ == "WebhookApp" and mounted["app"]._app is None
