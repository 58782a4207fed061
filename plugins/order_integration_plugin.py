"""Airflow plugin: puts each run's one-line summary on the DAG run as its note.

The export's ``publish`` task and the syncs' ``summary`` task return a ``note`` (the line
operators grep for); when the run finishes, this listener — running in the scheduler, in
the transaction that finishes the run — copies it to the run's note so the grid view shows
it. A failed run gets a note naming its failed tasks. An operator's own
note is never overwritten, and nothing here can fail a run (Airflow logs listener errors).
"""

from __future__ import annotations

from typing import ClassVar

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

PREFIXES = ("order_export__", "order_export_on_demand__", "order_status_sync__", "inventory_sync__")
SUMMARY_TASKS = ("publish", "summary")
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


def _summary_note(session, dag_run) -> str | None:
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    rows = session.scalars(
        select(XComModel).where(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id,
            XComModel.key == "return_value", XComModel.task_id.in_(SUMMARY_TASKS),
        )
    ).all()
    for row in rows:
        value = XComModel.deserialize_value(row)
        if isinstance(value, dict) and value.get("note"):
            return str(value["note"])
    return None


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
            dag_run.note = f"FAILED ({msg}): {', '.join(failed) or 'see the task logs'}"[:MAX_NOTE]


class OrderIntegrationPlugin(AirflowPlugin):
    name = "order_integration"
    listeners: ClassVar[list] = [RunNotes()]
