"""Run the real export DAG with ``airflow dags test`` against sandbox servers, for tests (each run
its own process, forked from a warm runner: ``sandbox.warm_airflow``)."""

from __future__ import annotations

import atexit
import contextlib
import csv
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from order_integration.ledger import Ledger, migrate, sqlite_engine
from sandbox.warm_airflow import run_airflow
from tests.support.platforms import PLATFORMS

ROOT = Path(__file__).resolve().parents[2]
# A summary line holds no quotes: stopping at one keeps the XCom repr of a run's note (which
# repeats the line, then "'}") out of the parsed values.
ERRORS = r"[^\s'\"]+"
SUMMARY = re.compile(
    r"order export (?P<store>\S+) \[(?P<start>\S+), (?P<end>\S+)\): extracted=(?P<extracted>\d+) = "
    r"delivered=(?P<delivered>\d+) \+ quarantined=(?P<quarantined>\d+) \+ "
    r"already_delivered=(?P<already_delivered>\d+) \+ not_ready=(?P<not_ready>\d+); files=(?P<files>[^;\s'\"]+)"
)


_migrated_template: Path | None = None


def migrate_airflow_db(airflow_home: Path) -> None:
    """A fresh Airflow metadata database (SQLite) in ``airflow_home``, and the ledger's schema in
    its default SQLite file, as ``make airflow-db`` makes them.

    ``airflow db migrate`` runs once per process (about 15 s), into a template folder; every
    home gets a copy of that file (the same schema and rows a migration of its own would give)."""
    global _migrated_template
    airflow_home.mkdir(parents=True, exist_ok=True)
    if _migrated_template is None:
        template = Path(tempfile.mkdtemp(prefix="airflow_db_template_"))
        atexit.register(shutil.rmtree, template, True)
        env = {**os.environ, "AIRFLOW_HOME": str(template)}
        proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env,
                              capture_output=True, text=True, check=False, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        _migrated_template = template / "airflow.db"
    shutil.copyfile(_migrated_template, airflow_home / "airflow.db")
    migrate_ledger_db(airflow_home)


def migrate_ledger_db(airflow_home: Path) -> None:
    """The ledger's schema in its default SQLite file in ``airflow_home`` (``make airflow-db``'s
    ledger half; a deployment whose metadata database is elsewhere needs only this)."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    migrate(sqlite_engine(airflow_home / "order_ledger.db"))


def _summary(output: str) -> dict[str, Any] | None:
    """The last export summary line of a run's output, parsed (None when there is none)."""
    matches = list(SUMMARY.finditer(output))
    if not matches:
        return None
    m = matches[-1].groupdict()
    summary: dict[str, Any] = {k: (v if k in {"store", "start", "end", "files"} else int(v)) for k, v in m.items()}
    summary["files"] = [] if m["files"] == "-" else m["files"].split(",")
    return summary


@dataclass
class RunResult:
    returncode: int
    output: str
    summary: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.summary is not None


@dataclass
class ExportHarness:
    """One store wired to a sandbox storefront and an SFTP server, in a shared Airflow home."""

    store_id: str
    airflow_home: Path
    work_dir: Path
    storefront_url: str
    storefront_key: str
    storefront_secret: str
    sftp_connection: dict[str, Any]
    sftp_root: Path
    store_overrides: dict[str, Any] = field(default_factory=dict)
    #: the storefront platform (``platforms.PLATFORMS``); for Shopify ``storefront_secret`` is
    #: the Admin API access token and ``storefront_key`` is unused
    platform: str = "woocommerce"

    def __post_init__(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.work_dir / "stores.yaml"
        store = {
            "id": self.store_id,
            "platform": self.platform,
            "storefront_conn_id": f"storefront_{self.store_id}",
            "backend_conn_id": f"backend_{self.store_id}",
            "schedule": "@hourly",
            "lookback_minutes": 10,
            "backend": {"inbound_dir": f"inbound_{self.store_id}",
                        "outbound_dir": f"outbound_{self.store_id}", "stock_dir": f"stock_{self.store_id}",
                        "format": "csv"},
            **self.store_overrides,
        }
        self.config_path.write_text(yaml.safe_dump({"stores": [store]}))
        self.inbound_dir = self.sftp_root / store["backend"]["inbound_dir"]
        self.outbound_dir = self.sftp_root / store["backend"]["outbound_dir"]
        self.stock_dir = self.sftp_root / store["backend"].get("stock_dir", "stock")

    @property
    def dag_id(self) -> str:
        return f"order_export__{self.store_id}"

    def env(self) -> dict[str, str]:
        return {
            **airflow_env(self.airflow_home),
            "ORDER_INTEGRATION_CONFIG": str(self.config_path),
            "ORDER_INTEGRATION_STAGING": f"file://{self.work_dir / 'staging'}",
            f"AIRFLOW_CONN_STOREFRONT_{self.store_id.upper()}": json.dumps(self.storefront_connection()),
            f"AIRFLOW_CONN_BACKEND_{self.store_id.upper()}": json.dumps(self.sftp_connection),
        }

    def storefront_connection(self) -> dict[str, Any]:
        """The storefront's Airflow connection, as the platform's contract has it."""
        if self.platform == "woocommerce":
            return {"conn_type": "http", "host": self.storefront_url, "login": self.storefront_key,
                    "password": self.storefront_secret}
        return {"conn_type": "http", "host": self.storefront_url, "password": self.storefront_secret}

    @property
    def backend_conn_id(self) -> str:
        return f"backend_{self.store_id}"

    def _dags_test(self, dag_id: str, logical_date: str | None, timeout: float,
                   conf: dict[str, Any] | None = None) -> tuple[int, str]:
        """``airflow dags test DAG_ID [DATE] [--conf CONF]`` in a process of its own, started by the
        warm runner (``warm_airflow``: a fork of a process that imported Airflow, pandas and GX)."""
        args = ["dags", "test", dag_id]
        if logical_date is not None:
            args.append(logical_date)
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        return run_airflow(args, self.env(), timeout)

    def run_on_demand(self, conf: dict[str, Any], timeout: float = 600) -> RunResult:
        """``airflow dags test order_export_on_demand__<store> --conf CONF`` (the Params form)."""
        code, output = self._dags_test(f"order_export_on_demand__{self.store_id}", None, timeout, conf)
        return RunResult(code, output, _summary(output))

    def run_status_sync(self, logical_date: str, timeout: float = 600) -> RunResult:
        """``airflow dags test order_status_sync__<store> <logical_date>``."""
        code, output = self._dags_test(f"order_status_sync__{self.store_id}", logical_date, timeout)
        found = re.findall(rf"status sync {self.store_id}: files=(\d+) (.*?); files with errors=({ERRORS})", output)
        summary = None
        if found:
            files, counts, errors = found[-1]
            summary = {"files": int(files), **{k: int(v) for k, v in (c.split("=") for c in counts.split())},
                       "error_files": [] if errors == "-" else errors.split(",")}
        return RunResult(code, output, summary)

    def run_inventory_sync(self, logical_date: str, timeout: float = 600) -> RunResult:
        """``airflow dags test inventory_sync__<store> <logical_date>``; the summary holds
        ``files``, ``rows``, one count per outcome, ``requests`` and ``error_files``."""
        code, output = self._dags_test(f"inventory_sync__{self.store_id}", logical_date, timeout)
        found = re.findall(rf"inventory sync {self.store_id}: files=(\d+) rows=(\d+) = (.*?); "
                           rf"storefront requests=(\d+); files with errors=({ERRORS})", output)
        summary = None
        if found:
            files, rows, counts, requests, errors = found[-1]
            summary = {"files": int(files), "rows": int(rows), "requests": int(requests),
                       **{k: int(v) for k, v in (c.split("=") for c in counts.split(" + "))},
                       "error_files": [] if errors == "-" else errors.split(",")}
        return RunResult(code, output, summary)

    def run(self, logical_date: str, timeout: float = 600) -> RunResult:
        """``airflow dags test order_export__<store> <logical_date>``."""
        code, output = self._dags_test(self.dag_id, logical_date, timeout)
        return RunResult(code, output, _summary(output))

    def ledger(self) -> Ledger:
        return Ledger(sqlite_engine(self.airflow_home / "order_ledger.db"))

    def inbound_files(self) -> list[Path]:
        if not self.inbound_dir.exists():
            return []
        return sorted(self.inbound_dir.iterdir())

    def delivered_rows(self, files: list[Path] | None = None) -> list[dict[str, str]]:
        """Every CSV row of ``files`` (default: every file in the inbound folder)."""
        rows: list[dict[str, str]] = []
        for path in self.inbound_files() if files is None else files:
            rows.extend(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
        return rows

    def delivered_versions(self) -> list[tuple[str, str]]:
        """(order_id, order_version) per delivered order, duplicates kept (they would be bugs)."""
        seen: list[tuple[str, str]] = []
        for path in self.inbound_files():
            rows = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
            seen.extend({(r["order_id"], r["order_version"]) for r in rows})
        return seen


def airflow_env(airflow_home: Path) -> dict[str, str]:
    """The environment of every ``airflow dags test`` on ``airflow_home``, without a store's
    config and connections (which the warm runner's server is not keyed by): runs with it share
    one warm server."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "GX_ANALYTICS_ENABLED": "False",
    }


#: Store ids ``it_<n>`` are unique per test session, so stores sharing an Airflow home, a ledger
#: or an sshd never collide. Sandbox credentials are the platform kits' (``platforms``).
_store_ids = itertools.count(1)


@contextlib.contextmanager
def sandbox_stores(airflow_home: Path, sshd: Any, work_dir: Path
                   ) -> Iterator[Callable[..., tuple[ExportHarness, Any]]]:
    """Factory ``make(orders, *, clock=None, platform="woocommerce", **store_overrides) ->
    (harness, storefront)``.

    Each call gets its own store id, sandbox storefront of ``platform`` (a
    ``SandboxStorefront`` or a ``SandboxShopify`` holding the same generated orders) and SFTP
    folder under ``sshd``; the storefronts stop when the ``with`` ends. Used by the
    ``export_harness`` fixture and by module-scoped fixtures (the scheduler test) that need
    stores outside a function scope."""
    started: list[Any] = []

    def make(orders: list[dict[str, Any]], *, clock: Callable[[], Any] | None = None,
             platform: str = "woocommerce", **store_overrides: Any) -> tuple[ExportHarness, Any]:
        kit = PLATFORMS[platform]
        shop = kit.start(orders, clock)
        started.append(shop)
        store_id = f"it_{next(_store_ids)}"
        conn = kit.connection(shop)
        harness = ExportHarness(
            store_id=store_id, airflow_home=airflow_home, work_dir=work_dir / store_id,
            storefront_url=conn["host"], storefront_key=conn.get("login", ""), storefront_secret=conn["password"],
            sftp_connection=sshd.airflow_connection(), sftp_root=sshd.root, store_overrides=store_overrides,
            platform=platform,
        )
        return harness, shop

    try:
        yield make
    finally:
        for shop in started:
            shop.stop()
