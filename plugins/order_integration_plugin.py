"""Airflow plugin: puts each run's one-line summary on the DAG run as its note, and serves the
webhook receiver (real-time mode) and the integration-health view on the api-server.

The export's ``publish`` task and the status sync's ``sync_files`` task return a ``note`` (the line
operators grep for); when the run finishes, this listener — running in the scheduler, in
the transaction that finishes the run — copies it to the run's note so the grid view shows
it. A failed run gets a note naming its failed tasks. An operator's own
note is never overwritten, and nothing here can fail a run (Airflow logs listener errors).

The webhook receiver, ``POST /order-integration/webhooks/<store_id>``, is
:mod:`order_integration.webhooks_http` (HTTP) over :mod:`order_integration.webhooks` (the
rules); Airflow does not authenticate plugin apps, and this one authenticates each delivery by
its signature. It imports FastAPI on its first request only.

The integration-health view, ``GET /order-integration-health/`` (in the UI's navigation as
"Integration health", docs/health.md), is :mod:`order_integration.health_http` over
:mod:`order_integration.health`; it requires Airflow's own login. It too imports FastAPI (and
SQLAlchemy, the ledger) on its first request only.
"""

from __future__ import annotations

from typing import ClassVar

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from order_integration import health_http, webhooks_http
from order_integration.dag_defaults import DAG_KINDS

PREFIXES = tuple(f"{kind}__" for kind in DAG_KINDS)
SUMMARY_TASKS = ("publish", "sync_files")
MAX_NOTE = 1000  # dag_run_note.content is String(1000)


def _session(dag_run):
    """The session the run is being updated in; the note joins that transaction (a second
    session would wait on the row lock the scheduler holds). ``airflow dags test`` hands
    listeners a detached run: no session, no note there."""
    from sqlalchemy.orm import object_session

    if not str(dag_run.dag_id).startswith(PREFIXES):
        return None
    session = object_session(dag_run)
    if session is None or dag_run.note:  # never overwrite an operator's note
        return None
    return session


def _xcom_values(session, dag_run, key: str, task_ids=None) -> list:
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    query = select(XComModel).where(
        XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id, XComModel.key == key)
    if task_ids is not None:
        query = query.where(XComModel.task_id.in_(task_ids))
    return [XComModel.deserialize_value(row) for row in session.scalars(query).all()]


def _summary_note(session, dag_run) -> str | None:
    for value in _xcom_values(session, dag_run, "return_value", SUMMARY_TASKS):
        if isinstance(value, dict) and value.get("note"):
            return str(value["note"])
    return None


def _refusal(session, dag_run) -> str | None:
    """The one-sentence reason a task refused the run's request (``tasks.refuse``)."""
    from order_integration.tasks import REFUSAL_KEY

    reasons = [str(v) for v in _xcom_values(session, dag_run, REFUSAL_KEY) if v]
    return reasons[0] if reasons else None


class RunNotes:
    """The listener (an object with ``hookimpl`` methods, as Airflow's listener docs show)."""

    @hookimpl
    def on_dag_run_success(self, dag_run, msg: str) -> None:
        session = _session(dag_run)
        if session is not None:
            note = _summary_note(session, dag_run)
            if note:
                dag_run.note = note[:MAX_NOTE]

    @hookimpl
    def on_dag_run_failed(self, dag_run, msg: str) -> None:
        session = _session(dag_run)
        if session is not None:
            tis = dag_run.get_task_instances(state=["failed"], session=session)
            failed = sorted({ti.task_id for ti in tis})
            note = f"FAILED ({msg}): {', '.join(failed) or 'see the task logs'}"
            reason = _refusal(session, dag_run)
            if reason:
                note += f": refused: {reason}"
            dag_run.note = note[:MAX_NOTE]


class OrderIntegrationPlugin(AirflowPlugin):
    name = "order_integration"
    listeners: ClassVar[list] = [RunNotes()]
    fastapi_apps: ClassVar[list] = [
        {"app": webhooks_http.app, "url_prefix": webhooks_http.URL_PREFIX,
         "name": "order-integration webhook receiver"},
        {"app": health_http.app, "url_prefix": health_http.URL_PREFIX,
         "name": "order-integration health view"},
    ]
    external_views: ClassVar[list] = [
        {"name": "Integration health", "href": f"{health_http.URL_PREFIX}/", "destination": "nav",
         "url_route": "integration-health"},
    ]
