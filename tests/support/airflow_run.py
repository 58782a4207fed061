"""Run the real export DAG with ``airflow dags test`` against sandbox servers, for tests."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from order_integration.ledger import Ledger, sqlite_engine

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"order export (?P<store>\S+) \[(?P<start>\S+), (?P<end>\S+)\): extracted=(?P<extracted>\d+) = "
    r"delivered=(?P<delivered>\d+) \+ quarantined=(?P<quarantined>\d+) \+ "
    r"already_delivered=(?P<already_delivered>\d+) \+ not_ready=(?P<not_ready>\d+); files=(?P<files>\S+)"
)


def migrate_airflow_db(airflow_home: Path) -> None:
    """A fresh Airflow metadata database (SQLite) in ``airflow_home``."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home)}
    proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env,
                          capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


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

    def __post_init__(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.work_dir / "stores.yaml"
        store = {
            "id": self.store_id,
            "platform": "woocommerce",
            "storefront_conn_id": f"storefront_{self.store_id}",
            "backend_conn_id": f"backend_{self.store_id}",
            "schedule": "@hourly",
            "lookback_minutes": 10,
            "backend": {"inbound_dir": f"inbound_{self.store_id}",
                        "outbound_dir": f"outbound_{self.store_id}", "format": "csv"},
            **self.store_overrides,
        }
        self.config_path.write_text(yaml.safe_dump({"stores": [store]}))
        self.inbound_dir = self.sftp_root / store["backend"]["inbound_dir"]
        self.outbound_dir = self.sftp_root / store["backend"]["outbound_dir"]

    @property
    def dag_id(self) -> str:
        return f"order_export__{self.store_id}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "GX_ANALYTICS_ENABLED": "False",
            "ORDER_INTEGRATION_CONFIG": str(self.config_path),
            "ORDER_INTEGRATION_STAGING": f"file://{self.work_dir / 'staging'}",
            f"AIRFLOW_CONN_STOREFRONT_{self.store_id.upper()}": json.dumps({
                "conn_type": "http", "host": self.storefront_url,
                "login": self.storefront_key, "password": self.storefront_secret}),
            f"AIRFLOW_CONN_BACKEND_{self.store_id.upper()}": json.dumps(self.sftp_connection),
        }

    @property
    def backend_conn_id(self) -> str:
        return f"backend_{self.store_id}"

    def _dags_test(self, dag_id: str, logical_date: str, timeout: float) -> tuple[int, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", dag_id, logical_date],
            env=self.env(), capture_output=True, text=True, check=False, timeout=timeout,
        )
        return proc.returncode, proc.stdout + proc.stderr

    def run_status_sync(self, logical_date: str, timeout: float = 600) -> RunResult:
        """``airflow dags test order_status_sync__<store> <logical_date>``."""
        code, output = self._dags_test(f"order_status_sync__{self.store_id}", logical_date, timeout)
        found = re.findall(rf"status sync {self.store_id}: files=(\d+) (.*?); files with errors=(\S+)", output)
        summary = None
        if found:
            files, counts, errors = found[-1]
            summary = {"files": int(files), **{k: int(v) for k, v in (c.split("=") for c in counts.split())},
                       "error_files": [] if errors == "-" else errors.split(",")}
        return RunResult(code, output, summary)

    def run(self, logical_date: str, timeout: float = 600) -> RunResult:
        """``airflow dags test order_export__<store> <logical_date>``."""
        code, output = self._dags_test(self.dag_id, logical_date, timeout)
        matches = list(SUMMARY.finditer(output))
        summary = None
        if matches:
            m = matches[-1].groupdict()
            summary = {k: (v if k in {"store", "start", "end", "files"} else int(v)) for k, v in m.items()}
            summary["files"] = [] if m["files"] == "-" else m["files"].split(",")
        return RunResult(code, output, summary)

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
