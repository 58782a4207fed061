"""The deployment of docker-compose.yaml, proven on loopback without Docker.

The same topology, started by process id from Debian and PyPI packages: PostgreSQL (metadata
database AND the ledger, connection ``order_ledger``), Redis (Celery broker), an S3 server
(moto; staging on ``s3://``), OpenSSH (the backend), the sandbox storefront, and Airflow with
CeleryExecutor: api-server, scheduler, dag-processor, triggerer and TWO Celery workers with
their own hostnames. The Airflow environment is docker-compose.yaml's own (``x-airflow-common``
filled from ``.env.example`` plus this run's addresses), so the compose file and this tier
cannot drift apart.

Checks: a backfill of the demo store's export delivers every eligible order exactly once and
its tasks ran on both workers; the status sync applies the ERP simulator's answers; a worker
killed mid-task (its process group and every descendant, as if its machine died) leads to a
retry on the other worker with nothing lost or doubled.
"""

from __future__ import annotations

import csv
import io
import time

import pendulum
import pytest
from sqlalchemy import create_engine

from order_integration.ledger import Ledger
from sandbox.erp_simulator import ErpSimulator
from sandbox.generator import generate_orders
from sandbox.storefront import SandboxStorefront
from tests.support.airflow_services import cmdline, descendants, preloaded
from tests.support.infra import FAST_RETRY_POLICY, STAGING_BUCKET, STAGING_PREFIX, loopback_cluster

pytestmark = pytest.mark.distributed

DAY = pendulum.datetime(2026, 11, 2, tz="UTC")
STORE = "demo"  # include/stores.yaml, the config the image ships
EXPORT, STATUS_SYNC = f"order_export__{STORE}", f"order_status_sync__{STORE}"
EXPORTABLE = {"processing", "on-hold"}
WORKERS = ("worker-1", "worker-2")


def _orders():
    """120 orders modified in [08:00, 12:00) of DAY, around the windows of the backfill."""
    return generate_orders(120, start=DAY.add(hours=8), end=DAY.add(hours=12), seed=31)


def _modified(order) -> pendulum.DateTime:
    return pendulum.parse(order["date_modified_gmt"] + "Z")


def _exportable(orders, start, end) -> set[str]:
    return {str(o["id"]) for o in orders if start <= _modified(o) < end and o["status"] in EXPORTABLE}


class Deployment:
    """The loopback cluster plus what the checks read: the storefront, SFTP files, the ledger."""

    def __init__(self, cluster, shop, orders) -> None:
        self.cluster, self.services, self.api = cluster, cluster.services, cluster.api
        self.shop, self.orders, self.sshd, self.s3 = shop, orders, cluster.sshd, cluster.s3
        self.env = cluster.env

    def ledger(self) -> Ledger:
        return Ledger(create_engine(self.cluster.pg.url("order_ledger")), create=False)

    def delivered(self) -> list[tuple[str, str]]:
        """(order_id, order_version) per order per file on the SFTP server, duplicates kept;
        files the ERP simulator already took (erp_processed/) count too."""
        seen: list[tuple[str, str]] = []
        for folder in ("inbound", "erp_processed"):
            base = self.sshd.root / folder
            for path in sorted(base.glob("orders_*.csv")) if base.exists() else []:
                rows = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
                seen.extend({(r["order_id"], r["order_version"]) for r in rows})
        return seen

    def kill_worker(self, name: str) -> None:
        self.cluster.kill_worker(name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("distributed")
    orders = _orders()
    with (
        SandboxStorefront(orders, consumer_key="ck_distributed", consumer_secret="cs_distributed") as shop,
        loopback_cluster(base, shop, workers=WORKERS, local_settings=FAST_RETRY_POLICY,
                         dag_ids=[EXPORT, STATUS_SYNC]) as running,
    ):
        task = running.api.request("GET", f"/dags/{EXPORT}/tasks/extract")
        assert task["retry_delay"]["seconds"] == 2, task  # the test's retry policy is in force
        running.api.unpause(EXPORT)
        running.api.unpause(STATUS_SYNC)
        yield Deployment(running, shop, orders)


def test_backfill_delivers_every_eligible_order_once_on_both_workers(cluster):
    # three hourly windows, three runs at once: overlapping lookbacks race for the same orders
    backfill = cluster.services.backfill(EXPORT, "2026-11-02T09:00:00+00:00", "2026-11-02T11:00:00+00:00",
                                         max_active_runs=3)
    runs = cluster.api.wait_for_backfill(backfill["id"], timeout=300)
    assert [r["state"] for r in runs] == ["success"] * 3, runs
    start = min(pendulum.parse(r["data_interval_start"]) for r in runs).subtract(minutes=10)
    end = max(pendulum.parse(r["data_interval_end"]) for r in runs)

    expected = _exportable(cluster.orders, start, end)
    assert expected
    delivered = cluster.delivered()
    assert len(delivered) == len(set(delivered)), "an order version was delivered twice"
    assert sorted(oid for oid, _ in delivered) == sorted(expected)
    ledger_ids = [d["order_id"] for d in cluster.ledger().deliveries.delivered(STORE)]
    assert sorted(ledger_ids) == sorted(expected), "the Postgres ledger disagrees with the SFTP server"

    hosts = {ti["hostname"] for r in runs for ti in cluster.api.task_instances(EXPORT, r["dag_run_id"])}
    assert hosts == set(WORKERS), f"tasks of the backfill ran on {hosts}"
    staged = cluster.s3.keys(STAGING_BUCKET, f"{STAGING_PREFIX}/{STORE}/")
    assert any(k.endswith("raw_orders.jsonl") for k in staged), staged  # staging really went to s3://
    assert not list((cluster.sshd.root / "inbound").glob(".*")), "a .part file was left behind"


def test_each_worker_imported_gx_and_pandas_before_forking_its_pool(cluster):
    """docker-compose.yaml's Celery settings (order_integration.celery_config): the worker and its
    pool processes, which the task processes fork from, already hold GX and pandas."""
    for worker in WORKERS:
        main = cluster.services.procs[worker].pid
        # the prefork pool (an idle one is "ForkPoolWorker-N", one that ran a task keeps its
        # "airflow supervisor: ..." title); not Airflow's helper the worker starts before Celery
        pool = [pid for pid in descendants(main) if b"ForkPoolWorker" in cmdline(pid) or b"supervisor" in cmdline(pid)]
        assert pool and preloaded(main) and all(preloaded(pid) for pid in pool), (worker, pool)


def test_status_sync_applies_the_erp_answers(cluster, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_BACKEND_SFTP_DEMO", cluster.env["AIRFLOW_CONN_BACKEND_SFTP_DEMO"])
    report = ErpSimulator("backend_sftp_demo").run_once()
    assert report.status_files and report.events
    last_event = {}
    for event in report.events:
        last_event[event.order_id] = event.event

    run_id = cluster.api.trigger(STATUS_SYNC)
    assert cluster.api.wait_for_run(STATUS_SYNC, run_id, timeout=120) == "success"
    # an earlier scheduled run of the DAG may have applied the file first: check the outcome
    archive = cluster.sshd.root / "outbound" / "archive"
    assert sorted(p.name for p in archive.iterdir()) == report.status_files
    expected = {"accepted": "processing", "shipped": "completed", "rejected": "on-hold", "cancelled": "cancelled"}
    actual = {oid: cluster.shop.get_order(int(oid))["status"] for oid in last_event}
    assert actual == {oid: expected[e] for oid, e in last_event.items()}
    applied = [e for e in cluster.ledger().status_events.recorded(STORE) if e["outcome"] == "applied"]
    assert len(applied) == len(report.events), "every event applied exactly once"


def test_a_worker_killed_mid_task_is_retried_on_the_other_worker(cluster):
    late = generate_orders(40, start=DAY.add(hours=12), end=DAY.add(hours=13), seed=32, first_id=5001)
    cluster.shop.add_orders(late)
    # the first orders request of the next run hangs long enough to kill its worker mid-task
    cluster.shop.inject_faults([{"type": "delay", "seconds": 15, "method": "GET", "path": "/orders"}])
    before = set(cluster.delivered())
    backfill = cluster.services.backfill(EXPORT, "2026-11-02T12:00:00+00:00", "2026-11-02T12:00:00+00:00")

    deadline = time.monotonic() + 120
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, "extract never started"
        runs = cluster.api.backfill_runs(cluster.api.backfill(backfill["id"]))
        for run in runs:
            for ti in cluster.api.task_instances(EXPORT, run["dag_run_id"]):
                if ti["task_id"] == "extract" and ti["state"] == "running" and ti["hostname"] in WORKERS:
                    victim, run_id = ti["hostname"], run["dag_run_id"]
        time.sleep(0.5)
    time.sleep(2)  # well inside the delayed request
    cluster.kill_worker(victim)

    [run] = cluster.api.wait_for_backfill(backfill["id"], timeout=180, fail_fast=False)
    assert run["state"] == "success", cluster.api.describe_run(EXPORT, run_id)
    tis = {ti["task_id"]: ti for ti in cluster.api.task_instances(EXPORT, run_id)}
    survivor = next(w for w in WORKERS if w != victim)
    assert tis["extract"]["try_number"] == 2, tis["extract"]
    assert tis["extract"]["hostname"] == survivor
    assert {ti["state"] for ti in tis.values()} == {"success"}

    delivered = cluster.delivered()
    assert len(delivered) == len(set(delivered)), "an order version was delivered twice"
    new = {oid for oid, _ in set(delivered) - before}
    window_ids = _exportable(late, DAY.add(hours=11, minutes=50), DAY.add(hours=13))
    assert window_ids <= new | {oid for oid, _ in before}, "an eligible order of the window was lost"
    assert {oid for oid in new} >= window_ids
    ledger = [(d["order_id"], d["order_version"]) for d in cluster.ledger().deliveries.delivered(STORE)]
    assert sorted(ledger) == sorted(set(delivered))
