"""The HTTP side of the integration-health view: the ASGI app the plugin mounts on Airflow's api-server.

Routes under :data:`URL_PREFIX` (the plugin also puts the page in the UI's navigation as an
external view, shown in a frame of the UI):

* ``GET /`` — the page (:func:`order_integration.health.render_page`) for the stores whose
  ``order_export__S`` DAG the user may read;
* ``POST /stores/<store_id>/release`` — form field ``order_id`` (repeated): triggers
  ``order_export_on_demand__S`` with those ids when every one is open in quarantine (else 409
  and the page with one sentence; nothing triggered), then redirects (303) to the page, which
  links the run;
* ``GET /report/<dag_id>/<run_id>`` — the run's validation report (the HTML file whose path the
  run's ``publish`` or ``validate`` task returned), read from staging.

Authentication is Airflow's own: unlike the webhook receiver, every route depends on
Airflow's ``GetUserDep`` (:func:`airflow.api_fastapi.core_api.security.get_user`: the
``Authorization: Bearer`` token, or the ``_token`` cookie the UI sets, so the framed page needs no
login of its own; no token is 401),
and on the auth manager's DAG permissions (reading the export DAG; triggering the on-demand DAG:
403 otherwise). A form post must come from the same origin (``Origin`` header), besides the
cookie being ``SameSite=Lax``.

Airflow's data is read through the api-server's own metadata session, as its core API does
(:func:`order_integration.health.read_runs`: two queries for every store's runs and summaries;
:func:`order_integration.health.read_run_dags`: the DAG of the few runs whose deliveries the ledger
cannot place by itself, on-demand runs mostly);
the release uses Airflow's ``trigger_dag`` (the function behind the REST API's trigger), with
the user as the run's triggering user. The ledger is the ``order_ledger`` connection's, read-only;
when it cannot be read (down, behind its schema) the page shows an error panel and Airflow's part.

:data:`app` builds the FastAPI app on its first request: the many processes that load the plugin
for its listener never import FastAPI or SQLAlchemy through it.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime.
import logging
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from order_integration.lazy_app import LazyApp

log = logging.getLogger(__name__)

URL_PREFIX = "/order-integration-health"
MAX_FORM_BYTES = 64 * 1024

__all__ = ["URL_PREFIX", "app", "create_app"]

_ENGINE: Any = None
_ENGINE_LOCK = threading.Lock()


def _ledger_engine() -> Any:
    """The ledger's engine, made once per process (a failure is not kept: the next request tries
    again). Never migrates: the view reads, and tells when the ledger is behind."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            from order_integration.ledger import engine_from_airflow

            _ENGINE = engine_from_airflow(migrate_default=False)
        return _ENGINE


def _reason(exc: BaseException) -> str:
    """One line that says what went wrong, without a traceback or a password."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.orig is not None:
        first = (str(exc.orig).strip().splitlines() or [""])[0]
        return f"{type(exc.orig).__name__}: {first}"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _ui_path() -> str:
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _links() -> Any:
    from order_integration.health import Links

    ui = _ui_path()
    return Links(app=ui + URL_PREFIX, ui=ui)


def _readable_stores(user: Any) -> list[str]:
    from airflow.api_fastapi.app import get_auth_manager

    from order_integration.config import load_config
    from order_integration.health import dag_id

    allowed = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
    return [s.id for s in load_config().stores if dag_id("order_export", s.id) in allowed]


def _page(user: Any, notice: Any = None) -> str:
    """The page for ``user``: every read behind it, each failure an error panel."""
    from airflow.utils.session import create_session

    from order_integration import health
    from order_integration.config import load_config
    from order_integration.ledger import check_schema

    config = load_config()
    stores = _readable_stores(user)
    now = datetime.now(UTC)
    runs: list[Any] = []
    airflow_error = ledger_error = None
    facts = None
    try:
        with create_session() as session:
            runs = health.read_runs(session, [health.dag_id(k, s) for s in stores for k in health.KINDS])
    except Exception as exc:  # the page still shows the ledger's part
        log.exception("health view: Airflow's runs could not be read")
        airflow_error = _reason(exc)
    try:
        engine = _ledger_engine()
        check_schema(engine)
        facts = health.read_ledger(engine, stores, now, config=config)
    except Exception as exc:  # a panel, not a 500: the ledger is another database that may be down
        log.warning("health view: the ledger could not be read: %s", _reason(exc))
        ledger_error = _reason(exc)
    run_dags: dict[Any, str] = {}
    unplaced = health.unplaced_runs(facts)  # on-demand runs and the like: their DAG says the path
    if unplaced and airflow_error is None:
        try:
            with create_session() as session:
                run_dags = health.read_run_dags(session, unplaced)
        except Exception as exc:  # those deliveries show as "a run Airflow no longer has"
            log.exception("health view: the runs of some deliveries could not be read")
            airflow_error = _reason(exc)
    view = health.build_view(config, runs, facts, now, ledger_error=ledger_error, airflow_error=airflow_error,
                             store_ids=stores, run_dags=run_dags)
    return health.render_page(view, _links(), notice)


def _released_notice(store_id: str, run_id: str) -> Any:
    """The notice for a release that triggered ``run_id``, from the run itself (its conf), so a
    made-up link shows nothing."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from order_integration.health import Notice, dag_id

    with create_session() as session:
        conf = session.scalar(select(DagRun.conf).where(
            DagRun.dag_id == dag_id("order_export_on_demand", store_id), DagRun.run_id == run_id))
    if conf is None:
        return None
    ids = ", ".join(str(i) for i in (conf or {}).get("order_ids") or ())
    return Notice("triggered", f"Release of order(s) {ids} from quarantine: triggered run", store_id, run_id)


def _trigger(store_id: str, user: Any, order_ids: list[str]) -> tuple[int, Any]:
    """Check and trigger a release: (HTTP status, the run id or the refusal notice)."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.exceptions import DagNotFound
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    from order_integration.health import Notice, dag_id, plan_release

    ondemand = dag_id("order_export_on_demand", store_id)
    if not get_auth_manager().is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                                details=DagDetails(id=ondemand), user=user):
        return 403, Notice("refused", f"You may not trigger {ondemand}. Nothing was released.", store_id)
    try:
        plan = plan_release(_ledger_engine(), store_id, order_ids)
    except Exception as exc:
        return 503, Notice("refused", f"The ledger could not be read ({_reason(exc)}). Nothing was released.",
                           store_id)
    if plan.refusal:
        return 409, Notice("refused", plan.refusal, store_id)
    try:
        with create_session() as session:
            run = trigger_dag(ondemand, triggered_by=DagRunTriggeredByType.UI, conf=plan.conf,
                              triggering_user_name=user.get_name(), session=session)
            run_id = run.run_id if run is not None else None
    except DagNotFound:
        return 409, Notice("refused", f"{ondemand} is not in Airflow (not parsed yet?). "
                           "Nothing was released.", store_id)
    log.info("health view: %s released order(s) %s of store %s: run %s", user.get_name(),
             ",".join(map(str, plan.order_ids)), store_id, run_id)
    return 303, run_id


def _report(user: Any, dag: str, run_id: str) -> tuple[int, str]:
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.sdk import ObjectStoragePath
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from order_integration.health import dag_id

    kinds = ("order_export", "order_export_on_demand")
    if not any(dag == dag_id(kind, s) for s in _readable_stores(user) for kind in kinds):
        return 404, "No such export DAG that you may read."
    with create_session() as session:
        rows = session.scalars(select(XComModel).join(DagRun, DagRun.id == XComModel.dag_run_id).where(
            DagRun.dag_id == dag, DagRun.run_id == run_id, XComModel.key == "return_value",
            XComModel.task_id.in_(("publish", "validate")))).all()
        values = [XComModel.deserialize_value(x) for x in rows]
    paths = [p for v in values if isinstance(v, dict) for p in v.get("report_paths") or ()]
    if not paths:
        return 404, f"Run {run_id} of {dag} has no validation report (it did not get to validate)."
    try:
        return 200, ObjectStoragePath(str(paths[0])).read_text()
    except OSError as exc:
        return 404, f"The report {paths[0]} could not be read from staging: {_reason(exc)}"


def _same_origin(request: Any) -> bool:
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


def create_app() -> Any:
    """The FastAPI app with the view's routes."""
    from airflow.api_fastapi.core_api.security import GetUserDep
    from fastapi import FastAPI, Request
    from fastapi.middleware.gzip import GZipMiddleware
    from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
    from starlette.concurrency import run_in_threadpool

    from order_integration.health import Notice

    api = FastAPI(title="order-integration health", docs_url=None, redoc_url=None, openapi_url=None)
    api.add_middleware(GZipMiddleware, minimum_size=4096)  # 50 stores' charts: ~1.6 MB of HTML, ~10x less

    @api.get("/", response_class=HTMLResponse)
    async def page(request: Request, user: GetUserDep) -> HTMLResponse:
        notice = None
        store, run_id = request.query_params.get("released_store"), request.query_params.get("run_id")
        if store and run_id:
            notice = await run_in_threadpool(_released_notice, store, run_id)
        return HTMLResponse(await run_in_threadpool(_page, user, notice))

    @api.post("/stores/{store_id}/release", response_model=None)
    async def release(store_id: str, request: Request, user: GetUserDep) -> Any:
        if not _same_origin(request):
            return PlainTextResponse("A release must come from the health page itself.", status_code=403)
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return PlainTextResponse("Too many order ids in one release.", status_code=413)
        ids = parse_qs(body.decode("utf-8", "replace")).get("order_id", [])
        status, outcome = await run_in_threadpool(_trigger, store_id, user, ids)
        if status == 303:
            target = (f"{_links().app}/?released_store={quote(store_id, safe='')}"
                      f"&run_id={quote(str(outcome), safe='')}")
            return RedirectResponse(target, status_code=303)
        notice = outcome if isinstance(outcome, Notice) else None
        return HTMLResponse(await run_in_threadpool(_page, user, notice), status_code=status)

    @api.get("/report/{dag}/{run_id}", response_model=None)
    async def report(dag: str, run_id: str, user: GetUserDep) -> Any:
        status, text = await run_in_threadpool(_report, user, dag, run_id)
        return HTMLResponse(text) if status == 200 else PlainTextResponse(text, status_code=status)

    return api


#: What the plugin mounts at :data:`URL_PREFIX`.
app = LazyApp(create_app)
