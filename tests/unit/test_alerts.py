"""Alerts go out through the real provider hooks to real servers on loopback: an SMTP server
(aiosmtpd) and an HTTP endpoint standing in for a Slack webhook. A broken alert connection
is logged and never raises."""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pendulum
import pytest

from order_integration.alerts import ALERT_PREFIX, StoreFailureNotifier, alert_event, check_lateness, emit
from order_integration.config import parse_config

pytestmark = pytest.mark.unit


def _store(**alerts):
    return parse_config({"stores": [{"id": "demo", "storefront_conn_id": "sf", "backend_conn_id": "be",
                                     "alerts": alerts}]}).stores[0]


_REFUSED = RuntimeError("SFTP upload refused")


def _context(error=_REFUSED):
    ti = SimpleNamespace(dag_id="order_export__demo", run_id="scheduled__x", task_id="load", try_number=4)
    return {"ti": ti, "dag_run": SimpleNamespace(dag_id="order_export__demo", run_id="scheduled__x"),
            "exception": error}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    class Collect(Sink):
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
            self.messages.append(envelope)
            return "250 OK"

    handler = Collect()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller, handler
    controller.stop()


def _alert_log(caplog):
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(ALERT_PREFIX + " {")]
    return [json.loads(line.split(" ", 1)[1]) for line in lines]


def test_without_a_connection_the_alert_is_one_structured_log_line(caplog):
    caplog.set_level(logging.INFO)
    assert emit(_store(), alert_event("task_failed", "demo", _context())) is False
    [event] = _alert_log(caplog)
    assert event == {"kind": "task_failed", "store_id": "demo", "dag_id": "order_export__demo",
                     "run_id": "scheduled__x", "task_id": "load", "try_number": 4,
                     "error": "RuntimeError: SFTP upload refused"}


def test_a_refused_request_is_alerted_as_its_sentence():
    from order_integration.tasks import Refused

    refused = alert_event("task_failed", "demo", _context(Refused("refused: the window is empty or reversed")))
    assert refused["error"] == "refused: the window is empty or reversed"
    assert alert_event("task_failed", "demo", _context(SystemExit(3)))["error"] == "SystemExit: 3"


def test_smtp_alert_is_delivered_by_the_smtp_provider(smtp_server, monkeypatch, caplog):
    controller, handler = smtp_server
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_MAIL", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": controller.port,
        "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "airflow@example.com",
                  "retry_limit": 0, "timeout": 10}}))
    caplog.set_level(logging.INFO)
    store = _store(conn_id="alerts_mail", to=["ops@example.com", "oncall@example.com"])
    assert emit(store, alert_event("task_failed", "demo", _context())) is True
    [message] = handler.messages
    assert sorted(message.rcpt_tos) == ["oncall@example.com", "ops@example.com"]
    import email

    mail = email.message_from_bytes(message.content)
    assert mail["Subject"] == "[order-integration] store demo: load failed"
    html = next(p for p in mail.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    assert "RuntimeError: SFTP upload refused" in html and "<th align=left>task_id</th>" in html
    assert _alert_log(caplog), "the log line comes first, whatever the channel"


def test_slack_webhook_alert_is_posted_by_the_slack_provider(monkeypatch):
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # http.server's hook name
            received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/services/T000/B000/XXX"
        monkeypatch.setenv("AIRFLOW_CONN_ALERTS_SLACK", json.dumps({"conn_type": "slackwebhook", "password": url}))
        assert emit(_store(conn_id="alerts_slack"), alert_event("task_failed", "demo", _context())) is True
    finally:
        server.shutdown()
    [(path, payload)] = received
    assert path == "/services/T000/B000/XXX"
    assert "store demo: load failed" in payload["text"] and "SFTP upload refused" in payload["text"]


@pytest.mark.parametrize(("conn", "expected"), [
    (None, "The conn_id `alerts_broken` isn't defined"),
    ({"conn_type": "smtp", "host": "127.0.0.1", "port": 1,
      "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "a@example.com", "retry_limit": 0,
                "timeout": 5}}, "ConnectionRefusedError"),
    ({"conn_type": "http", "host": "https://example.com"}, "connection type 'http' is not supported"),
])
def test_a_broken_alert_connection_is_logged_and_never_raises(monkeypatch, caplog, conn, expected):
    if conn is not None:
        monkeypatch.setenv("AIRFLOW_CONN_ALERTS_BROKEN", json.dumps(conn))
    caplog.set_level(logging.INFO)
    assert emit(_store(conn_id="alerts_broken", to=["ops@example.com"]),
                alert_event("task_failed", "demo", _context())) is False
    failures = [r.getMessage() for r in caplog.records if "sending via connection 'alerts_broken' failed" in r.getMessage()]
    assert failures and expected in failures[0], [r.getMessage() for r in caplog.records]
    assert _alert_log(caplog), "the alert is still in the log"


def test_the_notifier_reads_the_store_config(tmp_path, monkeypatch, caplog):
    cfg = tmp_path / "stores.yaml"
    cfg.write_text("stores:\n  - {id: shop2, storefront_conn_id: sf, backend_conn_id: be}\n")
    monkeypatch.setenv("ORDER_INTEGRATION_CONFIG", str(cfg))
    caplog.set_level(logging.INFO)
    StoreFailureNotifier("shop2").notify(_context(ValueError("boom")))
    [event] = _alert_log(caplog)
    assert event["store_id"] == "shop2" and event["error"] == "ValueError: boom"


def test_lateness_alerts_only_past_the_allowance(caplog):
    caplog.set_level(logging.INFO)
    store = _store(export_late_after_minutes=30)
    end = pendulum.datetime(2026, 11, 2, 11, tz="UTC")
    assert check_lateness(store, end, end.add(minutes=30), _context(None)) is False
    assert check_lateness(store, end, end.add(minutes=95), _context(None)) is True
    [event] = _alert_log(caplog)
    assert event["kind"] == "export_late" and event["minutes_after_close"] == 95
    assert check_lateness(_store(export_late_after_minutes=0), end, end.add(days=3), _context(None)) is False
