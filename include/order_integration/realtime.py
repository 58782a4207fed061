"""Airflow edge of a real-time run (``order_export_realtime__S``): the webhook inbox in, the
export's own tasks in the middle, the inbox rows done at the end.

1. :func:`take_waiting` — note the fetch time, then read every order waiting in the inbox (at
   most ``MAX_ORDER_IDS``, longest waiting first); nothing waiting: the run is skipped;
2. the export's ``extract`` / ``validate`` / ``load`` with that list as an on-demand request by
   order ids (:mod:`order_integration.tasks`): each order is fetched as it is now (the webhook
   body was only a hint), validated, and delivered unless the ledger has that version already
   — so the scheduled window, the on-demand DAG and this path never deliver a version twice;
3. :func:`publish` — the export's summary, its note saying it was the real-time path, how
   many orders and where from (``webhook inbox``; ``storefront poll`` for ``realtime_source:
   polling``, whose trigger fills the inbox from the storefront);
4. :func:`mark_done` — the rows of those orders received up to the fetch time are done, whatever
   their outcome (delivered, already delivered, not ready, quarantined, or no longer in the
   storefront); a delivery that came in while the run exported stays waiting for the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from order_integration.tasks import _ledger, _store, fail_fast

log = logging.getLogger(__name__)

#: Where the run came from, in its summary and note.
PATH = "realtime"
#: The summary's buckets an inbox row's order can end in (besides "not in the storefront").
OUTCOMES = ("delivered", "already_delivered", "not_ready", "quarantined")


@fail_fast
def take_waiting(store_id: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """The run's request: the orders waiting in the inbox, and ``fetched_at``.

    ``fetched_at`` is taken *before* the inbox is read and the storefront asked, so every delivery
    received up to then announces a change the fetch will see; :func:`mark_done` marks only those."""
    import pendulum

    from order_integration.on_demand import MAX_ORDER_IDS, ExportRequest
    from order_integration.windows import Window

    store = _store(store_id)
    fetched_at = pendulum.now("UTC")
    waiting = _ledger().webhook_inbox.waiting(store.id, limit=MAX_ORDER_IDS)
    if not waiting:
        from airflow.sdk.exceptions import AirflowSkipException

        log.info("store %s: nothing waiting in the webhook inbox", store.id)
        raise AirflowSkipException("nothing waiting in the webhook inbox")
    dag_run = context.get("dag_run")
    run_after = getattr(dag_run, "run_after", None) or fetched_at
    # As an on-demand run by ids: the trigger second names the run's file and staging folder.
    moment = pendulum.instance(run_after).in_timezone("UTC").start_of("second")
    request = ExportRequest(Window(moment, moment.add(seconds=1)), tuple(int(i) for i in waiting))
    more = f" +{len(waiting) - 20} more" if len(waiting) > 20 else ""
    log.info("store %s: real-time export of %d order(s) waiting in the webhook inbox: %s%s", store.id,
             len(waiting), ", ".join(waiting[:20]), more)
    return {**request.as_dict(), "fetched_at": fetched_at.to_iso8601_string(), "path": PATH}


def publish(
    store_id: str, extracted: Mapping[str, Any], validated: Mapping[str, Any], loaded: Mapping[str, Any],
    context: Mapping[str, Any], request: Mapping[str, Any],
) -> dict[str, Any]:
    """The export's summary (Asset event, XCom), its note led by the path and the order count."""
    from order_integration import tasks

    summary = tasks.publish(store_id, extracted, validated, loaded, context, request)
    polled = _store(store_id).realtime_source == "polling"  # the inbox filled by the storefront poll
    source = "storefront poll" if polled else "webhook inbox"
    note = f"{PATH}: {len(request['order_ids'])} order(s) from the {source}; {summary['note']}"
    log.info("%s", note)
    print(note)
    return {**summary, "path": PATH, "note": note}


@fail_fast
def mark_done(store_id: str, request: Mapping[str, Any], published: Mapping[str, Any],
              context: Mapping[str, Any]) -> dict[str, Any]:
    """Mark the run's orders done in the inbox (deliveries received up to the fetch time)."""
    import pendulum

    ids = [str(i) for i in request["order_ids"]]
    fetched_at = pendulum.parse(request["fetched_at"])
    inbox = _ledger().webhook_inbox
    marked = inbox.mark_done(store_id, ids, str(context["run_id"]), received_before=fetched_at)
    outcomes = {k: published.get(k, 0) for k in OUTCOMES}
    gone = list(published.get("unknown_ids") or ())
    log.info("store %s: %d webhook inbox row(s) of %d order(s) done (%s, not in the storefront=%d%s)",
             store_id, marked, len(ids), " ".join(f"{k}={v}" for k, v in outcomes.items()), len(gone),
             f": {','.join(gone)}" if gone else "")
    return {"store_id": store_id, "orders": len(ids), "rows_done": marked, **outcomes, "not_found": gone}
