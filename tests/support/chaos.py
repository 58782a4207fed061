"""A seeded, randomized schedule of faults over many export and status-sync runs, with totals.

Shared by the fault suite (``tests/faults/test_randomized_faults.py``, a few dozen runs) and
the benchmark (``bench/chaos_bench.py``, a few hundred). One store, the sandbox storefront,
a real SFTP server (OpenSSH in the tests) and a SQLite ledger; no Airflow scheduler — each
task is run the way Airflow's LocalExecutor runs it, in a forked child process, and retried
in a new child when it dies or fails (up to ``attempts`` tries, like ``retries=3``):

* **crashes**: each run plans a random set of :mod:`order_integration.failpoints` (``kill`` —
  SIGKILL of the child — or ``raise``), fresh markers per run, so a point fires on the first
  try that reaches it and the retry goes through;
* **transport faults**: a random storefront fault queued for the run's extract (429 with or
  without ``Retry-After``, 500, 502, 503, HTML or truncated 200, an empty page, orders edited
  while paging, a duplicated row);
* **history**: before each hourly run, orders delivered earlier are edited (a new version) or
  touched (no new version), pending orders get paid; a run sometimes re-runs an older window
  (a backfill overlapping delivered windows);
* **backend answers**: after each run, the ERP answers some delivered orders in a status file
  (accepted / shipped / cancelled), sometimes the same file again under another name, and the
  status sync applies it under the same crash plan.

A run whose task fails every try is re-run at the end, as an operator would clear it. Then a
clean sweep of the whole span exports again: whatever it still delivers was lost before.

Totals (:class:`ChaosReport`): runs, task tries, faults injected by kind; **lost** (versions the
sweep had to deliver, versions recorded but not in a file, status lines without an outcome) and
**duplicated** (a version in two files or twice in one, a status event applied twice, a note
posted twice). Both must be 0.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import random
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pendulum
import yaml

from order_integration import failpoints
from sandbox.generator import generate_orders
from sandbox.storefront import SandboxStorefront

EXPORT_POINTS = tuple(p for p in failpoints.POINTS if not p.startswith("status_sync."))
STATUS_POINTS = tuple(p for p in failpoints.POINTS if p.startswith("status_sync."))
TRANSPORT_FAULTS: tuple[dict[str, Any], ...] = (
    {"type": "429", "retry_after": 0, "times": 2},
    {"type": "429", "retry_after": None, "times": 1},
    {"type": "500", "times": 1},
    {"type": "502", "times": 1},
    {"type": "503", "retry_after": 0, "times": 1},
    {"type": "html", "times": 1},
    {"type": "truncated", "times": 1},
    {"type": "empty", "times": 1},
    {"type": "drift", "count": 3, "times": 1},
    {"type": "duplicate", "times": 1},
)
STORE_ID = "chaos"
HEADER = "order_id,event,occurred_at,carrier,tracking_number,tracking_url,sku,quantity,note"


@dataclass
class ChaosReport:
    seed: int
    runs: int = 0
    reruns_of_old_windows: int = 0
    failed_runs_recovered: int = 0
    task_tries: int = 0
    crashes_planned: int = 0
    kills: int = 0
    raises: int = 0
    transport_faults: int = 0
    faults_by_kind: dict[str, int] = field(default_factory=dict)
    orders: int = 0
    versions_delivered: int = 0
    quarantined: int = 0
    status_files: int = 0
    status_lines: int = 0
    status_applied: int = 0
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        return (f"chaos seed={self.seed}: export runs={self.runs} (re-runs of old windows="
                f"{self.reruns_of_old_windows}, failed and re-run={self.failed_runs_recovered}) "
                f"status sync runs={self.status_files} task tries={self.task_tries} "
                f"faults injected={self.kills + self.raises + self.transport_faults} (kill={self.kills} "
                f"raise={self.raises} transport={self.transport_faults}) orders={self.orders} "
                f"versions delivered={self.versions_delivered} quarantined={self.quarantined} "
                f"status lines={self.status_lines} applied={self.status_applied} (the rest: applied by a "
                f"killed try, dropped twice, or refused) | "
                f"LOST={self.lost} DUPLICATED={self.duplicated} in {self.seconds:.1f}s")


# -- the child side: one task try ----------------------------------------------------------------
def _child(step: str, args: dict[str, Any], result: str) -> None:
    """Run one step in this (forked) process; write its result or error; exit."""
    code = 0
    try:
        out = _STEPS[step](**args)
        Path(result).write_text(json.dumps(out, default=str))
    except BaseException:  # the parent reports it; a failed try is what we are testing
        Path(result).write_text(json.dumps({"__error__": traceback.format_exc()[-2000:]}))
        code = 1
    os._exit(code)


def _env_store() -> Any:
    from order_integration.config import load_config

    return load_config().store(STORE_ID)


def _ledger() -> Any:
    from order_integration.ledger import Ledger, sqlite_engine

    # as a task on the default SQLite ledger: migrated on first use (ledger.engine_from_airflow)
    return Ledger(sqlite_engine(Path(os.environ["CHAOS_LEDGER"])), create=True)


def _staging(window: Any, run_id: str) -> Any:
    from airflow.sdk import ObjectStoragePath

    from order_integration.config import staging_base
    from order_integration.export import run_dir

    return run_dir(ObjectStoragePath(staging_base()), STORE_ID, window, run_id)


def _window(start: str, end: str) -> Any:
    from order_integration.windows import Window

    return Window.parse(start, end)


def _extract(start: str, end: str, run_id: str) -> dict[str, Any]:
    from order_integration import export
    from order_integration.storefronts import get_client

    store, window = _env_store(), _window(start, end)
    client = get_client(store.platform, store.storefront_conn_id, per_page=5)
    return export.extract(store, window, _staging(window, run_id), client)


def _validate(start: str, end: str, run_id: str, raw_path: str) -> dict[str, Any]:
    from airflow.sdk import ObjectStoragePath

    from order_integration import export
    from order_integration.storefronts import get_client

    store, window = _env_store(), _window(start, end)
    client = get_client(store.platform, store.storefront_conn_id)
    return export.validate(store, _staging(window, run_id), ObjectStoragePath(raw_path), client, _ledger())


def _load(start: str, end: str, run_id: str, deliverable_path: str) -> dict[str, Any]:
    from airflow.sdk import ObjectStoragePath

    from order_integration import export
    from order_integration.backend.sftp import SftpBackend

    store, window = _env_store(), _window(start, end)
    return export.load(store, window, run_id, _staging(window, run_id), ObjectStoragePath(deliverable_path),
                       _ledger().deliveries, SftpBackend(store.backend_conn_id, conn_retry_attempts=1))


def _publish(start: str, end: str, validated: dict[str, Any], loaded: dict[str, Any]) -> dict[str, Any]:
    from order_integration import export

    return export.summarise(STORE_ID, _window(start, end), validated, loaded)


def _sync() -> dict[str, Any]:
    """The status-sync DAG's one task: every file in outbound_dir, in name order."""
    from order_integration import status_sync
    from order_integration.backend.sftp import SftpBackend
    from order_integration.storefronts.woocommerce_writes import WooCommerceWriter

    store = _env_store()
    with (WooCommerceWriter(store.storefront_conn_id) as writer,
          SftpBackend(store.backend_conn_id, conn_retry_attempts=1).session() as sftp):
        result = status_sync.sync_outbound(store, sftp, writer, _ledger().status_events)
    return {"moved_to": [f.moved_to for f in result.files], "counts": result.counts}


_STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    "extract": _extract, "validate": _validate, "load": _load, "publish": _publish, "sync": _sync,
}


# -- the parent side ------------------------------------------------------------------------------
class Chaos:
    """Set up once (``with Chaos(...) as chaos``), then :meth:`run` a schedule; see the module doc."""

    def __init__(self, work: Path, sftp_connection: dict[str, Any], sftp_root: Path, *, seed: int,
                 orders_per_hour: int = 12, attempts: int = 4, crash_rate: float = 0.6,
                 transport_rate: float = 0.35, log: Callable[[str], None] = lambda _line: None) -> None:
        self.work = work
        self.seed = seed
        self.rng = random.Random(seed)
        self.attempts = attempts
        self.crash_rate = crash_rate
        self.transport_rate = transport_rate
        self.orders_per_hour = orders_per_hour
        self.log = log
        self.sftp_connection = sftp_connection
        self.inbound = sftp_root / f"inbound_{STORE_ID}_{seed}"
        self.outbound = sftp_root / f"outbound_{STORE_ID}_{seed}"
        self.day = pendulum.datetime(2026, 11, 2, tz="UTC")
        self.report = ChaosReport(seed)
        self.shop: SandboxStorefront | None = None
        self._saved_env: dict[str, str | None] = {}
        self._status_seq = 0
        self._answered: set[int] = set()
        self.step_seconds: dict[str, float] = {}

    def __enter__(self) -> Chaos:
        self.work.mkdir(parents=True, exist_ok=True)
        self.shop = SandboxStorefront([], consumer_key="ck_chaos", consumer_secret="cs_chaos").start()
        config = self.work / "stores.yaml"
        config.write_text(yaml.safe_dump({"stores": [{
            "id": STORE_ID, "storefront_conn_id": "storefront_chaos", "backend_conn_id": "backend_chaos",
            "lookback_minutes": 10,
            "backend": {"inbound_dir": self.inbound.name, "outbound_dir": self.outbound.name, "format": "csv"},
            "validation": {"max_quarantine_ratio": 0.5},
        }]}))
        env = {
            "ORDER_INTEGRATION_CONFIG": str(config),
            "ORDER_INTEGRATION_STAGING": f"file://{self.work / 'staging'}",
            "CHAOS_LEDGER": str(self.work / "ledger.db"),
            "AIRFLOW_CONN_STOREFRONT_CHAOS": json.dumps({
                "conn_type": "http", "host": self.shop.base_url, "login": "ck_chaos", "password": "cs_chaos"}),
            "AIRFLOW_CONN_BACKEND_CHAOS": json.dumps(self.sftp_connection),
        }
        for key, value in env.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        self._saved_env[failpoints.ENV] = os.environ.get(failpoints.ENV)
        # Warm the imports once: every forked try starts with them, as Airflow's workers do.
        import great_expectations  # noqa: F401
        from airflow.providers.http.hooks.http import HttpHook  # noqa: F401
        from airflow.providers.sftp.hooks.sftp import SFTPHook  # noqa: F401
        from airflow.sdk import ObjectStoragePath  # noqa: F401

        from order_integration import export, status_sync  # noqa: F401
        from order_integration.storefronts import woocommerce, woocommerce_writes  # noqa: F401
        from order_integration.validation import gx_runner  # noqa: F401
        return self

    def __exit__(self, *exc: object) -> None:
        if self.shop is not None:
            self.shop.stop()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    # -- one task, tried like Airflow tries it ---------------------------------------------------
    def _try(self, step: str, args: dict[str, Any], tag: str) -> dict[str, Any] | None:
        ctx = multiprocessing.get_context("fork")
        for attempt in range(1, self.attempts + 1):
            result = self.work / "results" / f"{tag}.{step}.{attempt}.json"
            result.parent.mkdir(parents=True, exist_ok=True)
            proc = ctx.Process(target=_child, args=(step, args, str(result)), daemon=True)
            self.report.task_tries += 1
            began = time.monotonic()
            proc.start()
            proc.join(300)
            self.step_seconds[step] = self.step_seconds.get(step, 0.0) + time.monotonic() - began
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
                proc.join()
            if proc.exitcode == 0:
                return json.loads(result.read_text())
            why = "killed" if proc.exitcode == -signal.SIGKILL else (
                json.loads(result.read_text())["__error__"].strip().splitlines()[-1]
                if result.exists() else f"exit {proc.exitcode}")
            self.log(f"  {tag} {step} try {attempt}: {why}")
        return None

    def _plan(self, folder: Path, points: tuple[str, ...]) -> None:
        plan: dict[str, Any] = {}
        if self.rng.random() < self.crash_rate:
            for point in self.rng.sample(points, k=self.rng.choice((1, 1, 2, 3))):
                action = "kill" if self.rng.random() < 0.75 else "raise"
                plan[point] = {"action": action, "times": 1, "store": STORE_ID}
                self.report.crashes_planned += 1
        folder.mkdir(parents=True, exist_ok=True)
        (folder / failpoints.PLAN_FILE).write_text(json.dumps(plan))
        os.environ[failpoints.ENV] = str(folder)

    def _count_fired(self, folder: Path) -> None:
        plan = json.loads((folder / failpoints.PLAN_FILE).read_text())
        for tag, n in failpoints.fired(folder).items():
            action = plan[tag.split("@")[0]]["action"]
            if action == "kill":
                self.report.kills += n
            else:
                self.report.raises += n
            self.report.faults_by_kind[f"{action}:{tag.split('@')[0]}"] = (
                self.report.faults_by_kind.get(f"{action}:{tag.split('@')[0]}", 0) + n)

    # -- the schedule ------------------------------------------------------------------------------
    def _seed_orders(self, hours: int) -> None:
        assert self.shop is not None
        orders = generate_orders(self.orders_per_hour * hours, start=self.day, end=self.day.add(hours=hours),
                                 seed=self.seed, first_id=10_001)
        for order in orders[::15]:  # some bad input: quarantined until an edit fixes it
            order["billing"]["email"] = "no-at-sign.example"
        self.shop.add_orders(orders)
        self.report.orders = len(orders)
        self.ids = [o["id"] for o in orders]

    def _history(self, start: pendulum.DateTime, end: pendulum.DateTime) -> None:
        """Edits, touches and payments stamped inside the coming window [start, end)."""
        assert self.shop is not None
        earlier = [oid for oid in self.ids if (o := self.shop.get_order(oid)) is not None
                   and pendulum.parse(o["date_modified_gmt"] + "Z") < start]
        for oid in self.rng.sample(earlier, k=min(len(earlier), self.rng.randint(0, 4))):
            order = self.shop.get_order(oid)
            assert order is not None
            when = start.add(seconds=self.rng.randrange(max(1, int((end - start).total_seconds()) - 60)))
            kind = self.rng.choice(("edit", "touch", "pay", "fix"))
            if kind == "pay" and order["status"] == "pending":
                order["status"] = "processing"
            elif kind == "fix":
                order["billing"]["email"] = f"fixed{oid}@example.com"
            elif kind == "edit":
                order["shipping"]["address_2"] = f"Door {self.rng.randint(1, 999)}"
            order["date_modified_gmt"] = when.format("YYYY-MM-DD[T]HH:mm:ss")
            order.pop("date_modified", None)
            self.shop.upsert_order(order)

    def _export(self, start: pendulum.DateTime, end: pendulum.DateTime, run_id: str,
                faults: bool = True) -> bool:
        assert self.shop is not None
        folder = self.work / "failpoints" / run_id
        self._plan(folder, EXPORT_POINTS if faults else ())
        if faults and self.rng.random() < self.transport_rate:
            fault = dict(self.rng.choice(TRANSPORT_FAULTS))
            self.shop.inject_faults([{**fault, "path": "/orders"}])
            kind = fault["type"] + ("" if fault.get("retry_after", 1) is not None else " without Retry-After")
            self.report.transport_faults += 1
            self.report.faults_by_kind[f"transport:{kind}"] = self.report.faults_by_kind.get(
                f"transport:{kind}", 0) + 1
        span = {"start": start.to_iso8601_string(), "end": end.to_iso8601_string(), "run_id": run_id}
        extracted = self._try("extract", span, run_id)
        validated = extracted and self._try("validate", {**span, "raw_path": extracted["raw_path"]}, run_id)
        loaded = validated and self._try("load", {**span, "deliverable_path": validated["deliverable_path"]},
                                         run_id)
        summary = loaded and self._try("publish", {"start": span["start"], "end": span["end"],
                                                   "validated": validated, "loaded": loaded}, run_id)
        self.shop.store.faults.clear()  # a fault the run did not reach is not left for the next
        self._count_fired(folder)
        if not summary:
            return False
        self.report.quarantined += summary["quarantined"]
        self.log(f"  {run_id}: delivered={summary['delivered']} quarantined={summary['quarantined']} "
                 f"already={summary['already_delivered']} not_ready={summary['not_ready']}")
        if faults:
            self._answer(summary["files"], run_id)
        return True

    def _answer(self, files: list[str], run_id: str) -> None:
        """The ERP's answer to a delivered file: a status file, sometimes dropped twice."""
        assert self.shop is not None
        lines = [HEADER]
        for name in files:
            for row in csv.DictReader(io.StringIO((self.inbound / name).read_text(encoding="utf-8"))):
                oid = int(row["order_id"])
                if oid in self._answered or self.rng.random() < 0.5:
                    continue
                self._answered.add(oid)
                event = {"on-hold": "accepted", "processing": "shipped"}.get(row["order_status"], "cancelled")
                if event == "shipped" and self.rng.random() < 0.15:
                    event = "cancelled"
                when = f"2026-11-03T{len(lines) % 24:02d}:{self.rng.randrange(60):02d}:00Z"
                tracking = f"DHL,TRK{oid},https://track.example/{oid}" if event == "shipped" else ",,"
                lines.append(f"{oid},{event},{when},{tracking},,,")
        if len(lines) == 1:
            return
        self.outbound.mkdir(parents=True, exist_ok=True)
        names = [f"status_{self.seed}_{self._status_seq:04d}.csv"]
        if self.rng.random() < 0.2:
            names.append(f"status_{self.seed}_{self._status_seq:04d}_again.csv")
        self._status_seq += 1
        folder = self.work / "failpoints" / f"{run_id}_status"
        self._plan(folder, STATUS_POINTS)
        for name in names:
            (self.outbound / f".{name}.part").write_text("\n".join(lines) + "\n")
            (self.outbound / f".{name}.part").rename(self.outbound / name)
            self.report.status_files += 1
            self.report.status_lines += len(lines) - 1
            result = self._try("sync", {}, f"{run_id}_{name}")
            if result is None:
                self.report.problems.append(f"status file {name} failed every try")
            else:
                self.report.status_applied += result["counts"].get("applied", 0)
        self._count_fired(folder)

    def run(self, hours: int) -> ChaosReport:
        """``hours`` hourly runs over one day of orders, then the checks; returns the totals."""
        began = time.monotonic()
        self._seed_orders(hours)
        failed: list[tuple[pendulum.DateTime, pendulum.DateTime, str]] = []
        for h in range(hours):
            start, end = self.day.add(hours=h), self.day.add(hours=h + 1)
            self._history(start, end)
            windows = [(start, end, f"run_{h:03d}")]
            if h and self.rng.random() < 0.2:
                back = self.rng.randrange(h)
                windows.append((self.day.add(hours=back), self.day.add(hours=back + 1), f"rerun_{h:03d}_of_{back:03d}"))
                self.report.reruns_of_old_windows += 1
            for w_start, w_end, run_id in windows:
                self.report.runs += 1
                if not self._export(w_start, w_end, run_id):
                    failed.append((w_start, w_end, run_id))
        for w_start, w_end, run_id in failed:  # an operator clears the failed run
            self.report.failed_runs_recovered += 1
            if not self._export(w_start, w_end, f"{run_id}_cleared", faults=False):
                self.report.problems.append(f"{run_id} failed again without faults")
        self._check(hours)
        self.report.seconds = time.monotonic() - began
        return self.report

    # -- the checks --------------------------------------------------------------------------------
    def _check(self, hours: int) -> None:
        from order_integration.ledger import Ledger, sqlite_engine

        ledger = Ledger(sqlite_engine(self.work / "ledger.db"))
        os.environ[failpoints.ENV] = str(self.work / "failpoints" / "none")
        sweep_id = "sweep"
        span = {"start": self.day.subtract(minutes=10).to_iso8601_string(),
                "end": self.day.add(hours=hours + 1).to_iso8601_string(), "run_id": sweep_id}
        extracted = self._try("extract", span, sweep_id)
        validated = extracted and self._try("validate", {**span, "raw_path": extracted["raw_path"]}, sweep_id)
        loaded = validated and self._try("load", {**span, "deliverable_path": validated["deliverable_path"]},
                                         sweep_id)
        if not loaded:
            self.report.problems.append("the final sweep failed")
        else:
            if loaded["delivered"]:
                self.report.problems.append(f"the sweep delivered {loaded['delivered']} lost version(s)")
            self.report.lost += loaded["delivered"]

        in_files: Counter[tuple[str, str]] = Counter()
        for path in sorted(self.inbound.glob("*")):
            if path.name.startswith("."):
                self.report.problems.append(f"leftover {path.name}")
                continue
            rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
            lines = Counter((r["order_id"], r["order_version"], r["line_number"]) for r in rows)
            twice_in_file = [k for k, n in lines.items() if n > 1]
            self.report.duplicated += len(twice_in_file)
            in_files.update({(r["order_id"], r["order_version"]) for r in rows})
        twice = [k for k, n in in_files.items() if n > 1]
        resent = {(r["order_id"], r["order_version"]) for r in ledger.deliveries.resends(STORE_ID)}
        self.report.duplicated += sum(1 for k in twice if k not in resent)
        recorded = {(d["order_id"], d["order_version"]) for d in ledger.deliveries.delivered(STORE_ID)}
        self.report.lost += len(recorded - set(in_files))
        self.report.duplicated += len(set(in_files) - recorded)  # in a file, unknown to the ledger
        self.report.versions_delivered = len(in_files)
        bad = {(q["order_id"], q["order_version"]) for q in ledger.quarantine.entries(STORE_ID, include_released=True)} & set(in_files)
        if bad:  # still quarantined, yet in a file: bad data reached the backend
            self.report.problems.append(f"quarantined versions in a file: {sorted(bad)[:5]}")
            self.report.duplicated += len(bad)
        if twice:
            self.report.problems.append(f"delivered twice: {twice[:5]}")
        if recorded - set(in_files):
            self.report.problems.append(f"recorded, in no file: {sorted(recorded - set(in_files))[:5]}")

        assert self.shop is not None
        events = ledger.status_events.recorded(STORE_ID)
        applied = Counter(e["event_key"] for e in events if e["outcome"] == "applied")
        self.report.duplicated += sum(n - 1 for n in applied.values() if n > 1)
        per_order = Counter(e["order_id"] for e in events if e["outcome"] == "applied")
        for oid in {int(o) for o in per_order} | self._answered:
            notes = self.shop.notes(oid)
            expected = per_order.get(str(oid), 0)
            if len(notes) != expected:
                self.report.problems.append(f"order {oid}: {len(notes)} notes for {expected} applied event(s)")
                self.report.duplicated += max(0, len(notes) - expected)
                self.report.lost += max(0, expected - len(notes))
        leftover = [p.name for p in self.outbound.glob("*.csv")] if self.outbound.exists() else []
        self.report.lost += len(leftover)
        if leftover:
            self.report.problems.append(f"status files never handled: {leftover}")
        lines_with_outcome = len({(e["source_file"], e["line_number"]) for e in events})
        if lines_with_outcome != self.report.status_lines:
            self.report.problems.append(
                f"{self.report.status_lines} status lines written, {lines_with_outcome} with an outcome")
            self.report.lost += max(0, self.report.status_lines - lines_with_outcome)


def report_dict(report: ChaosReport) -> dict[str, Any]:
    return asdict(report)
