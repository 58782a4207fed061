"""Crash at every step: a worker killed (SIGKILL) at each step boundary and in the middle of the
upload and of the ledger write, then Airflow's own retry — on a real deployment (api-server,
scheduler, dag-processor; LocalExecutor), the sandbox storefront and OpenSSH.

The kills come from :mod:`order_integration.failpoints`: the deployment runs with
``ORDER_INTEGRATION_FAILPOINTS`` pointing at a plan, and the task process that reaches a
planned point kills itself — no exception handler, no ``finally``, like a worker lost to the
OOM killer. Four stores run side by side, each with its own points (a store's second point
fires on the retry after the first, so every recovery also starts from a crashed state):

=====  ==========================================  =============================
store  export                                      status sync
=====  ==========================================  =============================
1      after the extract staged; after the         after a wave's notes, before
       quarantine was recorded                     its batch of status changes
2      after the batch was claimed; after the      between two status changes
       file was rendered and named in the ledger   (one ``PUT`` each)
3      in the middle of the upload (``.part``      after a batch of storefront
       half written); after the rename, before     writes, before the ledger rows
       the ledger write
4      inside the ledger's delivery transaction    after the ledger rows, before
                                                   the file is archived
=====  ==========================================  =============================

Each store then has every eligible order in the backend exactly once (no duplicate row, none
missing, the invalid one quarantined), no ``.part`` left, and every status event applied
exactly once: one note per event on the storefront, the right status, one ``applied`` ledger
row per line, the file archived.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pendulum
import pytest
import yaml

from order_integration.failpoints import ENV as FAILPOINTS_ENV
from order_integration.failpoints import PLAN_FILE, fired
from sandbox.generator import generate_orders
from sandbox.storefront import SandboxStorefront
from tests.support.airflow_run import ExportHarness, migrate_airflow_db, sandbox_stores
from tests.support.airflow_services import (
    API_SERVER,
    DAG_PROCESSOR,
    LEAN_SETTINGS,
    SCHEDULER,
    AirflowServices,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(900)]

DAY = pendulum.datetime(2026, 11, 2, tz="UTC")
WINDOW_END = DAY.add(hours=11)  # logical date 11:00: window [10:00, 11:00)
#: Enough orders that the backend file spans several SFTP write chunks (32 KiB), so the
#: mid-upload kill leaves a truly partial ``.part``.
ORDERS = generate_orders(150, start=DAY.add(hours=10), end=DAY.add(hours=11), seed=61)
EXPORTABLE = ("processing", "on-hold")
INVALID_ID = next(o["id"] for o in ORDERS if o["status"] == "processing")
for _o in ORDERS:
    if _o["id"] == INVALID_ID:
        _o["billing"]["email"] = "not-an-email"  # email_valid: quarantined, never delivered

EXPORT_POINTS = (
    ("extract.after_staging", "validate.after_quarantine"),
    ("load.after_claim", "load.after_render"),
    ("sftp.upload.partial", "load.after_upload"),
    ("ledger.complete_batch.mid",),
)
STATUS_POINTS = ("status_sync.after_notes", "status_sync.mid_writes", "status_sync.before_ledger",
                 "status_sync.before_move")
RUN_TIMEOUT = 600.0
STATUS_HEADER = "order_id,event,occurred_at,carrier,tracking_number,tracking_url,sku,quantity,note"


def _ids(status: str, n: int) -> list[int]:
    found = [o["id"] for o in ORDERS if o["status"] == status and o["id"] != INVALID_ID][:n]
    assert len(found) == n, f"the seeded orders need {n} {status!r} orders"
    return found


#: One wave of twelve status changes: from ten on, they go through ``POST /orders/batch``, so a
#: kill after the notes or before the ledger rows lands around a batch of storefront writes.
BATCH_EVENTS = (
    [(oid, "accepted", "processing") for oid in _ids("on-hold", 5)]
    + [(oid, "shipped", "completed") for oid in _ids("processing", 5)]
    + [(oid, "cancelled", "cancelled") for oid in _ids("pending", 2)]
)
#: Seven changes (below the batch threshold: one PUT each), for the kill between two PUTs.
PUT_EVENTS = BATCH_EVENTS[:3] + BATCH_EVENTS[5:8] + BATCH_EVENTS[10:11]


def _status_file(events: tuple[tuple[int, str, str], ...] | list[tuple[int, str, str]]) -> str:
    lines = [STATUS_HEADER]
    for n, (oid, event, _target) in enumerate(events):
        tracking = f"DHL,JD{oid:012d},https://track.example/{oid}" if event == "shipped" else ",,"
        lines.append(f"{oid},{event},2026-11-02T12:{n:02d}:00Z,{tracking},,,")
    return "\n".join(lines) + "\n"


@dataclass
class Store:
    harness: ExportHarness
    shop: SandboxStorefront
    points: tuple[str, ...]
    export_run: str = ""
    events: list[tuple[int, str, str]] = field(default_factory=list)
    status_run: str = ""

    @property
    def id(self) -> str:
        return self.harness.store_id

    @property
    def status_dag(self) -> str:
        return f"order_status_sync__{self.id}"


@dataclass
class Cluster:
    stores: list[Store]
    services: AirflowServices
    failpoints: Path
    export_states: dict[str, str]
    status_states: dict[str, str]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, sshd):
    home = tmp_path_factory.mktemp("crash_home")
    migrate_airflow_db(home)
    failpoints = tmp_path_factory.mktemp("failpoints")
    with sandbox_stores(home, sshd, tmp_path_factory.mktemp("crash_stores")) as make:
        stores = []
        for n, export_points in enumerate(EXPORT_POINTS):
            harness, shop = make(ORDERS, retries=3, retry_delay_seconds=1)
            events = PUT_EVENTS if STATUS_POINTS[n] == "status_sync.mid_writes" else BATCH_EVENTS
            stores.append(Store(harness, shop, (*export_points, STATUS_POINTS[n]), events=list(events)))
        plan = {point: {"action": "kill", "times": 1, "store": s.id} for s in stores for point in s.points}
        (failpoints / PLAN_FILE).write_text(json.dumps(plan, indent=1))
        config = home / "stores.yaml"
        config.write_text(yaml.safe_dump({"stores": [
            yaml.safe_load(s.harness.config_path.read_text())["stores"][0] for s in stores]}))

        env = {k: v for s in stores for k, v in s.harness.env().items() if os.environ.get(k) != v}
        env.update(LEAN_SETTINGS)
        env.update({"ORDER_INTEGRATION_CONFIG": str(config), FAILPOINTS_ENV: str(failpoints),
                    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})
        dag_ids = [d for s in stores for d in (s.harness.dag_id, s.status_dag)]
        # No triggerer: nothing here defers, and on two cores its start-up is not free.
        with AirflowServices(home, env, (API_SERVER, SCHEDULER, DAG_PROCESSOR), dag_ids=dag_ids) as services:
            from order_integration.config import load_config
            from order_integration.pools import pools_for

            api = services.api
            api.ensure_pools(pools_for(load_config(config).stores))
            for dag_id in dag_ids:
                api.unpause(dag_id)
            # The four exports first, then the four status syncs: a status change moves the
            # order's date_modified to now, out of the window, so a sync that overtook an export's
            # retry (extract killed after staging) would take its orders out of that window's
            # file -- correctly (they belong to a later window), but this test counts the window.
            for s in stores:
                s.export_run = api.trigger(s.harness.dag_id, logical_date=WINDOW_END.to_iso8601_string(),
                                           run_id=f"crash__{s.id}")
            export_states = {s.id: api.wait_for_run(s.harness.dag_id, s.export_run, timeout=RUN_TIMEOUT,
                                                    fail_fast=False) for s in stores}
            for s in stores:
                s.harness.outbound_dir.mkdir(parents=True, exist_ok=True)
                (s.harness.outbound_dir / "status_20261102T120000Z.csv").write_text(_status_file(s.events))
                s.status_run = api.trigger(s.status_dag, run_id=f"crash_status__{s.id}")
            status_states = {s.id: api.wait_for_run(s.status_dag, s.status_run, timeout=RUN_TIMEOUT,
                                                    fail_fast=False) for s in stores}
            yield Cluster(stores, services, failpoints, export_states, status_states)


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def _tries(cluster: Cluster, dag_id: str, run_id: str) -> dict[str, tuple[str, int]]:
    return {f"{ti['task_id']}[{ti['map_index']}]": (ti["state"], ti["try_number"])
            for ti in cluster.services.api.task_instances(dag_id, run_id)}


def test_every_planned_crash_happened_and_airflow_retried_the_task(cluster):
    """The suite proves nothing unless the kills really happened: each point fired once, and
    the task that met it is ``success`` after more than one try."""
    assert fired(cluster.failpoints) == {f"{p}@{s.id}": 1 for s in cluster.stores for p in s.points}
    task_of = {"extract": "extract", "validate": "validate", "load": "load", "sftp": "load",
               "ledger": "load"}
    for s in cluster.stores:
        assert cluster.export_states[s.id] == "success", cluster.services.api.describe_run(
            s.harness.dag_id, s.export_run)
        assert cluster.status_states[s.id] == "success", cluster.services.api.describe_run(
            s.status_dag, s.status_run)
        tries = _tries(cluster, s.harness.dag_id, s.export_run)
        for point in s.points:
            if point.startswith("status_sync."):
                status_tries = _tries(cluster, s.status_dag, s.status_run)
                assert status_tries["sync_files[-1]"][1] >= 2, status_tries
                continue
            task = task_of[point.split(".")[0]]
            kills = sum(1 for p in s.points if task_of.get(p.split(".")[0]) == task)
            assert tries[f"{task}[-1]"] == ("success", kills + 1), (point, tries)


def test_every_eligible_order_reaches_the_backend_exactly_once(cluster):
    eligible = {str(o["id"]) for o in ORDERS if o["status"] in EXPORTABLE} - {str(INVALID_ID)}
    assert len(eligible) > 40
    for s in cluster.stores:
        files = s.harness.inbound_files()
        assert [p.name for p in files if p.name.startswith(".")] == [], f"{s.id}: a .part was left behind"
        assert len(files) == 1, (s.id, [p.name for p in files])
        if "sftp.upload.partial" in s.points:
            assert files[0].stat().st_size > 2 * 32768, "the mid-upload kill must leave a partial file"
        rows = _rows(files[0])
        per_order = Counter((r["order_id"], r["line_number"]) for r in rows)
        assert [k for k, n in per_order.items() if n > 1] == [], f"{s.id}: a row delivered twice"
        assert {r["order_id"] for r in rows} == eligible, f"{s.id}: lost or foreign orders"
        deliveries = s.harness.ledger().deliveries.delivered(s.id)
        assert sorted(d["order_id"] for d in deliveries) == sorted(eligible)
        assert {d["file_name"] for d in deliveries} == {files[0].name}
        assert s.harness.ledger().deliveries.pending_batches(s.id) == []
        assert [q["order_id"] for q in s.harness.ledger().quarantine.entries(s.id)] == [str(INVALID_ID)]
        summary = cluster.services.api.xcom(s.harness.dag_id, s.export_run, "publish")
        assert summary["delivered"] == len(eligible) and summary["quarantined"] == 1, summary
        assert summary["extracted"] == len(ORDERS)


def test_every_status_event_is_applied_exactly_once(cluster):
    for s in cluster.stores:
        assert not (s.harness.outbound_dir / "status_20261102T120000Z.csv").exists()
        archived = sorted(p.name for p in (s.harness.outbound_dir / "archive").iterdir())
        assert archived == ["status_20261102T120000Z.csv"], (s.id, archived)
        assert not (s.harness.outbound_dir / "error").exists() or not any(
            (s.harness.outbound_dir / "error").iterdir())
        writes = {(method, path.rstrip("/").rsplit("/", 1)[-1]) for method, path, _status in s.shop.request_log}
        if s.events == list(BATCH_EVENTS):
            assert ("POST", "batch") in writes, f"{s.id}: the batch endpoint was not used"
        else:
            assert ("POST", "batch") not in writes and any(m == "PUT" for m, _p in writes), writes
        for oid, event, target in s.events:
            order = s.shop.get_order(oid)
            assert order is not None and order["status"] == target, (s.id, oid, event, order and order["status"])
            notes = s.shop.notes(oid)
            assert len(notes) == 1, f"{s.id}: order {oid} ({event}) has {len(notes)} notes: {notes}"
        events = s.harness.ledger().status_events.recorded(s.id)
        assert Counter(e["line_number"] for e in events if e["outcome"] == "applied") == Counter(
            range(2, 2 + len(s.events))), (s.id, events)
        # The summary counts what the successful try did: after a crash past the ledger rows,
        # the retry finds the lines applied (by the killed try) and says so.
        counts = cluster.services.api.xcom(s.status_dag, s.status_run, "sync_files")["counts"]
        assert counts["applied"] + counts["skipped_duplicate"] == len(s.events), counts
        assert counts["refused"] == counts["error"] == counts["invalid"] == 0, counts
        if "status_sync.before_move" not in s.points:
            assert counts["applied"] == len(s.events), counts

