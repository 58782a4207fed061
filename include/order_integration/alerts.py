"""Alerts: a failed task, a window exported late.

Every alert is first one structured log line (``order_integration.alert {json}``), so a log
pipeline can alert even with nothing else configured. When the store's ``alerts.conn_id``
names a connection, the alert is also sent through the provider's hook: type ``smtp``
(e-mail to ``alerts.to``) or ``slackwebhook``. Sending can fail (wrong password, server
down): that is logged with the connection id and never changes the task's outcome.

Lateness: the export's ``publish`` task alerts when its window was exported more than
``alerts.export_late_after_minutes`` after it closed. (Airflow's experimental DeadlineAlert
would alert earlier, but in Airflow 3.3.2 ``airflow dags test`` crashes on a DAG that has one
once the run succeeds; operators rely on ``dags test``, so it is not used yet.)

Imported at DAG parse time to build the notifier: only the standard library and
``airflow.sdk`` here; providers are imported when an alert is sent.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseNotifier

from order_integration.config import StoreConfig, load_config

log = logging.getLogger(__name__)
ALERT_PREFIX = "order_integration.alert"


def alert_event(kind: str, store_id: str, context: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The alert's fields, from an Airflow context (task or DAG-run callback)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    exception = context.get("exception")
    event = {
        "kind": kind,
        "store_id": store_id,
        "dag_id": getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", None),
        "run_id": getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None),
        "task_id": getattr(ti, "task_id", None),
        "try_number": getattr(ti, "try_number", None),
        "error": None if exception is None else _error_text(exception)[:2000],
        **extra,
    }
    return {k: v for k, v in event.items() if v is not None}


def _error_text(exception: BaseException) -> str:
    """``Type: message``; a task that ended itself with a sentence (``tasks.Refused``, a
    ``SystemExit`` whose code is its text) gives that sentence alone."""
    if isinstance(exception, SystemExit) and isinstance(exception.code, str):
        return exception.code
    return f"{type(exception).__name__}: {exception}"


def emit(store: StoreConfig, event: Mapping[str, Any]) -> bool:
    """Log the alert, then send it where the store's config says. True when it was sent."""
    log.error("%s %s", ALERT_PREFIX, json.dumps(event, default=str, sort_keys=True))
    conn_id = store.alerts.conn_id
    if conn_id is None:
        return False
    subject = _subject(event)
    try:
        _send(conn_id, store.alerts.to, subject, event)
    except Exception as exc:  # any failure to alert is reported, never raised (see module doc)
        log.error("%s: sending via connection %r failed (%s: %s); the alert is only in this log",
                  ALERT_PREFIX, conn_id, type(exc).__name__, exc)
        return False
    log.info("%s sent via connection %r: %s", ALERT_PREFIX, conn_id, subject)
    return True


def _subject(event: Mapping[str, Any]) -> str:
    where = event.get("task_id") or event.get("dag_id")
    what = {"task_failed": "failed", "export_late": "window not exported in time"}.get(
        str(event.get("kind")), str(event.get("kind")))
    return f"[order-integration] store {event.get('store_id')}: {where} {what}"


def _send(conn_id: str, to: tuple[str, ...], subject: str, event: Mapping[str, Any]) -> None:
    from airflow.sdk import BaseHook

    conn_type = (BaseHook.get_connection(conn_id).conn_type or "").lower()
    if conn_type in ("smtp", "email"):
        if not to:
            raise ValueError("alerts.to lists no recipient for the smtp connection")
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        rows = "".join(
            f"<tr><th align=left>{html.escape(str(k))}</th><td><pre>{html.escape(str(v))}</pre></td></tr>"
            for k, v in event.items()
        )
        with SmtpHook(smtp_conn_id=conn_id) as hook:
            hook.send_email_smtp(to=list(to), subject=subject, html_content=f"<table>{rows}</table>")
    elif conn_type == "slackwebhook":
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        lines = "\n".join(f"*{k}*: {v}" for k, v in event.items() if k != "kind")
        SlackWebhookHook(slack_webhook_conn_id=conn_id).send(text=f"{subject}\n{lines}")
    else:
        raise ValueError(f"connection type {conn_type!r} is not supported for alerts (smtp, slackwebhook)")


class StoreFailureNotifier(BaseNotifier):
    """``on_failure_callback`` of every task of a store's DAGs."""

    template_fields = ()

    def __init__(self, store_id: str) -> None:
        super().__init__()
        self.store_id = store_id

    def notify(self, context: Any) -> None:
        store = load_config().store(self.store_id)
        emit(store, alert_event("task_failed", self.store_id, context))


def failure_notifier(store: StoreConfig) -> StoreFailureNotifier:
    return StoreFailureNotifier(store.id)


def check_lateness(store: StoreConfig, window_end: Any, now: Any, context: Mapping[str, Any]) -> bool:
    """Alert when a window was exported more than ``export_late_after_minutes`` after it
    closed (a backlog, a stalled scheduler, runs queued behind a pool). True when late."""
    minutes = store.alerts.export_late_after_minutes
    if not minutes:
        return False
    lag = now - window_end
    if lag.total_seconds() <= minutes * 60:
        return False
    emit(store, alert_event("export_late", store.id, context, window_end=str(window_end),
                            minutes_after_close=int(lag.total_seconds() // 60),
                            late_after_minutes=minutes))
    return True
