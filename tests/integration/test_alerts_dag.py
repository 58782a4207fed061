"""A failing task alerts through its DAG's notifier: a real `airflow dags test` run whose
storefront refuses the credentials sends one e-mail to a real SMTP server on loopback."""

from __future__ import annotations

import email
import json
import socket

import pendulum
import pytest

from sandbox.generator import generate_orders

pytestmark = pytest.mark.integration


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_credentials_fail_at_once_and_mail_the_operators(export_harness, monkeypatch):
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    messages = []

    class Collect(Sink):
        async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
            messages.append(envelope)
            return "250 OK"

    controller = Controller(Collect(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_ALERTS_MAIL", json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": controller.port,
            "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "airflow@example.com",
                      "retry_limit": 0}}))
        day = pendulum.datetime(2026, 11, 2, tz="UTC")
        harness, _ = export_harness(
            generate_orders(5, start=day.add(hours=10), end=day.add(hours=11), seed=3),
            alerts={"conn_id": "alerts_mail", "to": ["ops@example.com"]},
        )
        harness.storefront_secret = "cs_wrong_secret"
        result = harness.run("2026-11-02T11:00:00+00:00")
    finally:
        controller.stop()

    assert result.summary is None and harness.inbound_files() == []
    assert "credentials refused for connection" in result.output
    assert "cs_wrong_secret" not in result.output, "the secret is never logged"
    [message] = messages  # no retries for refused credentials: one failure, one mail
    assert message.rcpt_tos == ["ops@example.com"]
    mail = email.message_from_bytes(message.content)
    assert mail["Subject"] == f"[order-integration] store {harness.store_id}: extract failed"
    html = next(p for p in mail.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    assert "StorefrontAuthError" in html and f"order_export__{harness.store_id}" in html
