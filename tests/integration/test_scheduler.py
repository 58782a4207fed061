"""A real Airflow deployment driven like an operator: api-server, scheduler, dag-processor and
triggerer (LocalExecutor) on loopback, against the sandbox storefront and OpenSSH, with the
metadata database on PostgreSQL as in production (the ledger stays in its default SQLite file).

Why not SQLite, as the other single-machine deployments use: ``airflow backfill create
--reprocess-behavior completed`` clears task instances in one long transaction while the
scheduler writes every second; on a loaded machine (parallel test workers) SQLite's lock upgrade
then fails at once with "database is locked" — no busy timeout helps (2 of 4 parallel runs).

The components start once per module (``tests.support.airflow_services``). The operator's
moves come in two phases, each a module fixture, so every test sees the same history in
whatever order the tests run:

1. pools from the store config; unpause; ``airflow backfill create`` of two hourly windows
   (CLI), and — while it runs — an on-demand run by order ids and a status-sync run, both
   triggered through the REST API. One of the asked-for ids lies in a backfilled window, so
   the on-demand load and a backfill load compete for it.
2. a second backfill (CLI) with ``--reprocess-behavior completed`` that re-runs a completed
   window and adds the next one.

The tests then check the SFTP server's files and the ledger: every eligible order delivered
exactly once, nothing twice, and the status file applied to the storefront.

``[scheduler] use_job_schedule`` is off: the wall clock's current hour has nothing to do with
these tests (the sandbox's orders are on 2 November 2026), and a scheduled run would cost a full
export (each validate task imports pandas and GX). Backfill, manual and API-triggered runs are
scheduled as usual.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pendulum
import pytest

from order_integration.config import load_config
from order_integration.pools import pools_for
from sandbox.generator import generate_orders
from sandbox.storefront import SandboxStorefront
from tests.support.airflow_run import ROOT, ExportHarness, migrate_ledger_db, sandbox_stores
from tests.support.airflow_services import (
    LEAN_SETTINGS,
    LOCAL_COMPONENTS,
    AirflowServices,
    Component,
    ServicesError,
    process_running,
)

# The module's fixtures start a deployment and run about eight DAG runs: on a shared 2-core
# machine that can take longer than the suite's 600 s per-test timeout, which counts the first
# test's fixture setup too.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

DAY = pendulum.datetime(2026, 11, 2, tz="UTC")
EXPORTABLE = {"processing", "on-hold"}
LOOKBACK = pendulum.duration(minutes=10)
#: 60 orders modified between 08:00 and 13:00, a dozen an hour.
ORDERS = generate_orders(60, start=DAY.add(hours=8), end=DAY.add(hours=13), seed=17)
#: Two orders awaiting the backend's acceptance (modified at 06:xx: in no exported window).
HELD = [{**o, "status": "on-hold"}
        for o in generate_orders(2, start=DAY.add(hours=6), end=DAY.add(hours=7), seed=18, first_id=9001)]
UNKNOWN_ID = 999_999
STATUS_FILE = "status_20261102T063000Z.csv"
ON_DEMAND_FILE = ROOT / "dags" / "order_export_on_demand.py"
RUN_TIMEOUT = 480.0  # seconds; a loaded 2-core machine needs about 2 minutes per phase


def _modified(order: dict[str, Any]) -> pendulum.DateTime:
    return pendulum.parse(order["date_modified_gmt"] + "Z")


def _eligible(start: pendulum.DateTime, end: pendulum.DateTime) -> set[str]:
    """Ids an export of modifications in ``[start, end)`` must deliver."""
    return {str(o["id"]) for o in ORDERS if start <= _modified(o) < end and o["status"] in EXPORTABLE}


def _hour(h: int) -> pendulum.DateTime:
    return DAY.add(hours=h)


def _iso(dt: pendulum.DateTime) -> str:
    return dt.to_iso8601_string()


def _stamp(dt: pendulum.DateTime) -> str:
    return dt.format("YYYYMMDD[T]HHmmss[Z]")


#: The on-demand request: three orders no backfill covers, one a backfill covers, one unknown.
FRESH_IDS = sorted(_eligible(_hour(12), _hour(13)), key=int)[:3]
CONTENDED_ID = sorted(_eligible(_hour(9), _hour(9).add(minutes=50)), key=int)[0]


@dataclass
class Deployment:
    harness: ExportHarness
    shop: SandboxStorefront
    services: AirflowServices

    @property
    def store(self) -> str:
        return self.harness.store_id

    @property
    def export_dag(self) -> str:
        return self.harness.dag_id

    def window_files(self, start: pendulum.DateTime, end: pendulum.DateTime) -> list[Path]:
        """Orders files named for the window ``[start, end)`` (the contract: window without lookback)."""
        prefix = f"orders_{self.store}_{_stamp(start)}_{_stamp(end)}_"
        return [p for p in self.harness.inbound_files() if p.name.startswith(prefix)]


def ids_in(files: list[Path]) -> list[str]:
    """Order ids, one entry per order and file (an order has one row per line)."""
    ids: list[str] = []
    for path in files:
        rows = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
        ids.extend({r["order_id"] for r in rows})
    return ids


@dataclass
class Outcome:
    """What one operator action gave: a value, or the error to re-raise in the test that checks it."""

    value: Any = None
    error: BaseException | None = None

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def _attempt(action: Callable[[], Any]) -> Outcome:
    try:
        return Outcome(action())
    except Exception as exc:  # reported by the test that checks this action, not by all of them
        return Outcome(error=exc)


@dataclass
class PhaseOne:
    backfill_id: int | None
    backfill_runs: Outcome
    status_run: Outcome
    on_demand_run: Outcome
    files: set[Path] = field(default_factory=set)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, sshd, postgres):
    home = tmp_path_factory.mktemp("scheduler_home")
    migrate_ledger_db(home)
    with sandbox_stores(home, sshd, tmp_path_factory.mktemp("scheduler_stores")) as make:
        harness, shop = make(ORDERS + HELD)
        # Only what differs from this process's environment (the harness adds its own defaults).
        env = {k: v for k, v in harness.env().items() if os.environ.get(k) != v}
        env.update(LEAN_SETTINGS)
        env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"  # see the module docstring
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = postgres.create_database("airflow_scheduler_test")
        dag_ids = [harness.dag_id, f"order_status_sync__{harness.store_id}"]
        if ON_DEMAND_FILE.exists():
            dag_ids.append(f"order_export_on_demand__{harness.store_id}")
        with AirflowServices(home, env, LOCAL_COMPONENTS, dag_ids=dag_ids, migrate=True) as services:
            # The pools `python -m order_integration pools | airflow pools import` would create.
            services.api.ensure_pools(pools_for(load_config(harness.config_path).stores))
            for dag_id in dag_ids:
                services.api.unpause(dag_id)
            yield Deployment(harness, shop, services)


@pytest.fixture(scope="module")
def phase_one(deployment):
    """Backfill of logical dates 09:00 and 10:00 (windows [09, 10) and [10, 11)) through the CLI,
    with an on-demand run and a status-sync run triggered through the API meanwhile."""
    d, api = deployment, deployment.services.api
    outbound = d.harness.outbound_dir
    outbound.mkdir(parents=True, exist_ok=True)
    lines = ["order_id,event,occurred_at,carrier,tracking_number,tracking_url,sku,quantity,note"]
    lines += [f"{o['id']},accepted,2026-11-02T06:30:00Z,,,,,,accepted by the ERP" for o in HELD]
    (outbound / STATUS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")

    # The backfill goes first, while nothing runs yet (as it did when this deployment ran on
    # SQLite, where `backfill create` failed while task state updates held the lock).
    backfill = _attempt(lambda: d.services.backfill(d.export_dag, _iso(_hour(9)), _iso(_hour(10))))
    backfill_id = None if backfill.error else backfill.value["id"]
    status_dag = f"order_status_sync__{d.store}"
    status = _attempt(lambda: api.trigger(status_dag))
    on_demand = Outcome(error=pytest.skip.Exception("no on-demand DAG"))
    if ON_DEMAND_FILE.exists():
        on_demand_dag = f"order_export_on_demand__{d.store}"
        ids = [int(i) for i in [*FRESH_IDS, CONTENDED_ID]] + [UNKNOWN_ID]
        on_demand = _attempt(lambda: api.trigger(on_demand_dag, conf={"order_ids": ids}))

    if backfill.error is None:
        created = backfill.value
        backfill = _attempt(lambda: api.wait_for_backfill(created["id"], run_ids=created["run_ids"],
                                                          timeout=RUN_TIMEOUT))
    if status.error is None:
        run_id = status.value
        status = _attempt(lambda: (run_id, api.wait_for_run(status_dag, run_id, timeout=RUN_TIMEOUT)))
    if on_demand.error is None:
        run_id = on_demand.value
        on_demand = _attempt(lambda: (run_id, api.wait_for_run(on_demand_dag, run_id, timeout=RUN_TIMEOUT)))
    return PhaseOne(backfill_id, backfill, status, on_demand, set(d.harness.inbound_files()))


@pytest.fixture(scope="module")
def phase_two(deployment, phase_one):
    """``--reprocess-behavior completed`` over 10:00-11:00: [10, 11) again and [11, 12) new."""
    d = deployment
    phase_one.backfill_runs.get()
    # Airflow allows one running backfill per DAG, and the scheduler marks one complete only
    # every 30 s: wait for that, as an operator would see it in the UI.
    d.services.api.wait_for_backfill(phase_one.backfill_id, timeout=120)
    backfill = d.services.backfill(d.export_dag, _iso(_hour(10)), _iso(_hour(11)),
                                   reprocess_behavior="completed", max_active_runs=2)
    return d.services.api.wait_for_backfill(backfill["id"], run_ids=backfill["run_ids"], timeout=RUN_TIMEOUT)


def test_a_backfill_delivers_every_eligible_order_of_its_windows_once(deployment, phase_one):
    d, api = deployment, deployment.services.api
    runs = phase_one.backfill_runs.get()
    assert [(r["data_interval_start"], r["data_interval_end"], r["state"]) for r in runs] == [
        ("2026-11-02T09:00:00Z", "2026-11-02T10:00:00Z", "success"),
        ("2026-11-02T10:00:00Z", "2026-11-02T11:00:00Z", "success"),
    ]
    for run in runs:
        tis = api.task_instances(d.export_dag, run["dag_run_id"])
        assert {ti["task_id"]: ti["state"] for ti in tis} == dict.fromkeys(
            ["extract", "validate", "load", "publish"], "success")
        assert all(ti["hostname"] for ti in tis), "every task instance records the host that ran it"

    first, second = d.window_files(_hour(9), _hour(10)), d.window_files(_hour(10), _hour(11))
    assert len(first) == 1 and len(second) == 1, d.harness.inbound_files()
    # Each run reads its window plus the lookback; the runs (and the on-demand run, which asked
    # for one order of the first window) ran side by side, so whichever load came first
    # delivered a shared order and the others skipped it.
    assert set(ids_in(first)) <= _eligible(_hour(9) - LOOKBACK, _hour(10))
    assert set(ids_in(second)) <= _eligible(_hour(10) - LOOKBACK, _hour(11))
    expected = _eligible(_hour(9) - LOOKBACK, _hour(11))
    assert len(expected) >= 15, "the seeded orders must fill both windows"
    by_backfill = ids_in(first + second)
    assert len(by_backfill) == len(set(by_backfill)), "an order in two backfill files"
    assert set(by_backfill) | {CONTENDED_ID} == expected, "every eligible order, nothing else"

    ledger = d.harness.ledger().deliveries.delivered(d.store)
    assert sorted(r["order_id"] for r in ledger if r["file_name"] in {p.name for p in first + second}) \
        == sorted(by_backfill)
    assert not any(p.name.startswith(".") for p in d.harness.inbound_dir.iterdir()), "no .part left behind"


@pytest.mark.skipif(not ON_DEMAND_FILE.exists(), reason="dags/order_export_on_demand.py not written yet")
def test_an_on_demand_run_by_order_ids_delivers_each_asked_order_once(deployment, phase_one):
    d, api = deployment, deployment.services.api
    run_id, state = phase_one.on_demand_run.get()
    assert state == "success"
    backfill_files = {*d.window_files(_hour(9), _hour(10)), *d.window_files(_hour(10), _hour(11))}
    on_demand_files = sorted(phase_one.files - backfill_files)
    assert sorted(ids_in(on_demand_files)) == sorted({*FRESH_IDS} | (
        {CONTENDED_ID} - set(ids_in(sorted(backfill_files))))), "asked-for ids not delivered before"
    all_ids = ids_in(sorted(phase_one.files))
    assert all(all_ids.count(oid) == 1 for oid in [*FRESH_IDS, CONTENDED_ID])
    summary = api.xcom(f"order_export_on_demand__{d.store}", run_id, "publish")
    assert summary is not None and summary["unknown_ids"] == [str(UNKNOWN_ID)], summary
    # the plugin's listener put the summary line on the run as its note (the UI shows it)
    note = api.run(f"order_export_on_demand__{d.store}", run_id)["note"]
    assert note == summary["note"] and note.startswith(f"order export {d.store} ["), note


def test_status_sync_triggered_through_the_api_applies_the_backends_file(deployment, phase_one):
    d, api = deployment, deployment.services.api
    run_id, state = phase_one.status_run.get()
    assert state == "success"
    synced = [ti for ti in api.task_instances(f"order_status_sync__{d.store}", run_id)
              if ti["task_id"] == "sync_files"]
    assert [ti["state"] for ti in synced] == ["success"], "this run applied the one file"
    assert [d.shop.get_order(o["id"])["status"] for o in HELD] == ["processing", "processing"]
    assert api.run(f"order_status_sync__{d.store}", run_id)["note"].startswith(f"status sync {d.store}: files=1")
    outbound = d.harness.outbound_dir
    assert (outbound / "archive" / STATUS_FILE).exists() and not (outbound / STATUS_FILE).exists()
    events = d.harness.ledger().status_events.recorded(d.store, STATUS_FILE)
    assert sorted((r["order_id"], r["outcome"]) for r in events) == sorted(
        (str(o["id"]), "applied") for o in HELD)


def test_an_overlapping_backfill_that_reprocesses_delivers_nothing_twice(deployment, phase_one, phase_two):
    d, api = deployment, deployment.services.api
    runs = phase_two
    assert [(r["data_interval_start"], r["state"]) for r in runs] == [
        ("2026-11-02T10:00:00Z", "success"), ("2026-11-02T11:00:00Z", "success")]
    rerun = runs[0]
    assert rerun["dag_run_id"] in {r["dag_run_id"] for r in phase_one.backfill_runs.get()}, \
        "the completed window ran again (same run, cleared), it was not skipped"
    summary = api.xcom(d.export_dag, rerun["dag_run_id"], "publish")
    assert summary is not None, "publish returns the run summary"
    eligible_again = _eligible(_hour(10) - LOOKBACK, _hour(11))
    assert (summary["delivered"], summary["already_delivered"]) == (0, len(eligible_again)), summary

    new_files = sorted(set(d.harness.inbound_files()) - phase_one.files)
    assert new_files == d.window_files(_hour(11), _hour(12)), "one new file: the new window's"
    assert sorted(ids_in(new_files)) == sorted(_eligible(_hour(11), _hour(12)))

    every = d.harness.delivered_versions()
    assert len(every) == len(set(every)), "an order version was delivered twice"
    ledger = d.harness.ledger().deliveries.delivered(d.store)
    assert len(ledger) == len({(r["order_id"], r["order_version"]) for r in ledger}) == len(every)


def test_a_component_that_dies_fails_the_start_with_its_log_and_nothing_is_left_behind(tmp_path):
    """The harness itself: a crashing component is reported with its log tail; the others —
    one ignoring SIGTERM, with a child in a session of its own — are gone after the ``with``."""
    pids = tmp_path / "pids"
    stubborn = Component("stubborn", (sys.executable, "-c", (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True)\n"
        f"open({str(pids)!r}, 'w').write(f'{{__import__(\"os\").getpid()}} {{child.pid}}')\n"
        "time.sleep(600)\n")))
    crasher = Component("crasher", (sys.executable, "-c", (
        "import os, sys, time\n"
        f"while not os.path.exists({str(pids)!r}): time.sleep(0.05)\n"
        "print('boom: no database', flush=True); sys.exit(3)\n")))
    services = AirflowServices(tmp_path / "home", {}, [stubborn, crasher], start_timeout=60, stop_timeout=1)
    with pytest.raises(ServicesError, match=r"(?s)crasher exited with 3.*boom: no database"), services:
        pass
    assert pids.exists()
    for pid in map(int, pids.read_text().split()):
        assert not process_running(pid), f"process {pid} outlived the harness"
    assert services.procs == {}

