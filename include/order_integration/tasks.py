"""Airflow edge of the export: context in, library calls, Airflow exceptions out.

The DAG files call these from ``@task`` functions; everything they do is plain library code
in :mod:`order_integration.export`. A :class:`~order_integration.exceptions.PermanentError`
(refused credentials or host key, bad config, the quarantine breaker) becomes
``AirflowFailException`` so no retry is wasted on it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, ParamSpec, TypeVar

from order_integration.config import StoreConfig, load_config, staging_base
from order_integration.exceptions import PermanentError
from order_integration.on_demand import ExportRequest, RequestRefused, parse_request
from order_integration.windows import Window, window_from_context

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def fail_fast(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a :class:`PermanentError` into ``AirflowFailException`` (no retries)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except PermanentError as exc:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


def _store(store_id: str) -> StoreConfig:
    return load_config().store(store_id)


def _staging(store: StoreConfig, window: Window, context: Mapping[str, Any]) -> Any:
    from airflow.sdk import ObjectStoragePath

    from order_integration.export import run_dir

    return run_dir(ObjectStoragePath(staging_base()), store.id, window, str(context["run_id"]))


def _progress(store_id: str) -> Callable[[int, int, int | None], None]:
    """Log extraction progress: every page for the first few, then every 10th."""

    def on_page(pages: int, orders: int, total_estimate: int | None) -> None:
        if pages <= 5 or pages % 10 == 0:
            of = f" of ~{total_estimate}" if total_estimate is not None else ""
            log.info("store %s: extract page %d, %d orders so far%s", store_id, pages, orders, of)

    return on_page


def _request(context: Mapping[str, Any], request: Mapping[str, Any] | None) -> ExportRequest:
    """What this run exports: the on-demand form's checked request, else the data interval."""
    if request is not None:
        return ExportRequest.from_dict(request)
    return ExportRequest(window_from_context(context))


#: XCom key of a refused request's reason; the run-note listener (``plugins/``) shows it.
REFUSAL_KEY = "refusal"


class Refused(SystemExit):
    """Ends a task whose request the operator must change: no retry is due and a traceback
    would bury the one sentence that says what to fix. Airflow's task runner logs a
    ``SystemExit`` as ``Task exited`` without a traceback and fails the task once its tries
    are used up (the on-demand ``check_request`` has none left: ``retries=0``)."""


def refuse(store_id: str, reason: str, context: Mapping[str, Any]) -> NoReturn:
    """Fail this task with ``reason`` as its only message: in the log and, through XCom
    (``REFUSAL_KEY``), in the run's note."""
    log.error("store %s: request refused: %s", store_id, reason)
    ti = context.get("ti")
    if ti is not None:
        ti.xcom_push(key=REFUSAL_KEY, value=reason)
    raise Refused(f"refused: {reason}")


@fail_fast
def check_request(store_id: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """The on-demand form, checked before anything runs. A refusal fails the run at once with
    one sentence (:func:`refuse`); the form itself refuses what its JSON schema can say."""
    import pendulum

    _store(store_id)
    dag_run = context.get("dag_run")
    run_after = getattr(dag_run, "run_after", None) or context.get("logical_date")
    try:
        if run_after is None:
            raise RequestRefused("the run has no trigger time (run_after)")
        request = parse_request(context.get("params") or {}, run_after=pendulum.instance(run_after))
    except RequestRefused as exc:
        refuse(store_id, str(exc), context)
    log.info("store %s: on-demand export of %s", store_id, request.describe())
    return request.as_dict()


def _ledger() -> Any:
    from order_integration.ledger import Ledger, engine_from_airflow

    return Ledger(engine_from_airflow())


@fail_fast
def extract(
    store_id: str, context: Mapping[str, Any], request: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    from order_integration import export
    from order_integration.storefronts import get_client

    store = _store(store_id)
    req = _request(context, request)
    client = get_client(store.platform, store.storefront_conn_id, on_page=_progress(store.id))
    return export.extract(store, req.window, _staging(store, req.window, context), client,
                          order_ids=req.order_ids)


@fail_fast
def validate(
    store_id: str, extracted: Mapping[str, Any], context: Mapping[str, Any],
    request: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    from airflow.sdk import ObjectStoragePath

    from order_integration import export
    from order_integration.storefronts import get_normaliser

    store = _store(store_id)
    req = _request(context, request)
    return export.validate(
        store, _staging(store, req.window, context), ObjectStoragePath(extracted["raw_path"]),
        get_normaliser(store.platform),
        _ledger(), resend=req.resend, dry_run=req.dry_run, by_ids=req.by_ids, window=req.window,
        run_id=str(context["run_id"]),
    )


@fail_fast
def load(
    store_id: str, validated: Mapping[str, Any], context: Mapping[str, Any],
    request: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    from airflow.sdk import ObjectStoragePath

    from order_integration import export
    from order_integration.backend.sftp import SftpBackend

    store = _store(store_id)
    req = _request(context, request)
    return export.load(
        store, req.window, str(context["run_id"]), _staging(store, req.window, context),
        ObjectStoragePath(validated["deliverable_path"]), _ledger().deliveries,
        SftpBackend(store.backend_conn_id), resend=req.resend, dry_run=req.dry_run,
    )


@fail_fast
def publish(
    store_id: str, extracted: Mapping[str, Any], validated: Mapping[str, Any], loaded: Mapping[str, Any],
    context: Mapping[str, Any], request: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's summary: logged, printed, on the Asset event, and returned (XCom); the
    ``note`` key is what the run-note listener puts on the DAG run."""
    from order_integration import export

    req = _request(context, request)
    summary = export.summarise(store_id, req.window, dict(validated), dict(loaded),
                               unknown_ids=extracted.get("unknown_ids") or (), order_ids=req.order_ids)
    line = export.summary_line(summary)
    log.info("%s", line)
    print(line)  # the one line operators grep for; also in `airflow dags test` output
    dag_run = context.get("dag_run")
    if request is None and str(getattr(dag_run, "run_type", "")).lower().endswith("scheduled"):
        # only the schedule's own runs: a backfill or a repair is late by design
        import pendulum

        from order_integration.alerts import check_lateness

        check_lateness(_store(store_id), req.window.end, pendulum.now("UTC"), context)
    if req.dry_run:
        return {**summary, "note": line}  # nothing was delivered: no Asset event
    outlet_events = context.get("outlet_events")
    task = context.get("task")
    if outlet_events is not None and task is not None:
        for outlet in getattr(task, "outlets", []) or []:
            outlet_events[outlet].extra = summary
    return {**summary, "note": line}


# -- status sync (backend -> storefront) ---------------------------------------------------
@fail_fast
def sync_status_files(store_id: str) -> dict[str, Any]:
    """Apply every complete status file in the store's ``outbound_dir`` (no dot or ``.part``
    names), oldest name first; archive each (or move it to error/); log and print the run's
    summary line.

    One task, not one mapped task per file: a later file must never overtake an earlier one
    (``rejected`` then ``accepted`` must end ``processing``), and a mapped file waiting for its
    retry let the next one run. The first file that fails stops the task: it and the files
    after it stay for the retry, the files before it are archived already."""
    from order_integration import status_sync
    from order_integration.backend.sftp import SftpBackend
    from order_integration.storefronts import get_status_applier

    store = _store(store_id)
    with (
        get_status_applier(store.platform, store.storefront_conn_id) as applier,
        SftpBackend(store.backend_conn_id).session() as sftp,
    ):
        result = status_sync.sync_outbound(store, sftp, applier, _ledger().status_events)
    files = [{"file": f.name, "moved_to": f.moved_to, "errors_file": f.errors_file, "counts": f.counts}
             for f in result.files]
    return summarise_status_sync(store_id, files)


def summarise_status_sync(store_id: str, results: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One line over every file of the run; a file that went to error/ is named."""
    totals: dict[str, int] = {}
    for result in results:
        for key, value in (result.get("counts") or {}).items():
            totals[key] = totals.get(key, 0) + value
    errors = [r["file"] for r in results if r.get("errors_file")]
    line = (f"status sync {store_id}: files={len(results)} "
            + " ".join(f"{k}={v}" for k, v in sorted(totals.items()))
            + f"; files with errors={','.join(errors) or '-'}")
    log.info("%s", line)
    print(line)
    return {"store_id": store_id, "files": len(results), "counts": totals, "error_files": errors,
            "note": line}


# -- inventory sync (backend stock files -> storefront) ------------------------------------
@fail_fast
def sync_stock_files(store_id: str) -> dict[str, Any]:
    """Apply every complete stock file in the store's ``stock_dir`` (no dot or ``.part`` names),
    oldest name first, with one storefront look-up cache for the whole run; archive each file
    (or move it to error/); log and print the run's summary line.

    One task, not one mapped task per file: files must go in name order (mapped instances run
    in no guaranteed order), and the look-up cache then spans the run."""
    from order_integration import inventory
    from order_integration.backend.sftp import SftpBackend
    from order_integration.storefronts import get_stock_client

    store = _store(store_id)
    with (
        get_stock_client(store.platform, store.storefront_conn_id, stock_locations=store.stock_locations,
                         default_stock_location=store.default_stock_location) as client,
        SftpBackend(store.backend_conn_id).session() as sftp,
    ):
        result = inventory.sync_stock_dir(store, sftp, client, _ledger().stock_levels)
    files = [{"file": f.name, "moved_to": f.moved_to, "errors_file": f.errors_file, "rows": f.rows,
              "counts": f.counts} for f in result.files]
    return summarise_inventory_sync(store_id, files, requests=client.requests)


def summarise_inventory_sync(
    store_id: str, results: list[Mapping[str, Any]], *, requests: int = 0
) -> dict[str, Any]:
    """One line over every file of the run: rows = applied + unchanged + stale + unknown_sku +
    unmanaged + rejected; a file that went to error/ is named."""
    from order_integration.inventory import OUTCOMES

    totals = dict.fromkeys(OUTCOMES, 0)
    for result in results:
        for key, value in (result.get("counts") or {}).items():
            totals[key] = totals.get(key, 0) + value
    rows = sum(int(r.get("rows") or 0) for r in results)
    errors = [r["file"] for r in results if r.get("errors_file")]
    line = (f"inventory sync {store_id}: files={len(results)} rows={rows} = "
            + " + ".join(f"{k}={totals[k]}" for k in OUTCOMES)
            + f"; storefront requests={requests}; files with errors={','.join(errors) or '-'}")
    log.info("%s", line)
    print(line)  # the one line operators grep for; also in `airflow dags test` output
    return {"store_id": store_id, "files": results, "rows": rows, "counts": totals,
            "storefront_requests": requests, "error_files": errors}
