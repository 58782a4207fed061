"""Test-wide environment: set before anything imports Airflow."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# `make test` exports these too; setdefault keeps a plain `pytest` run equally isolated.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["GX_ANALYTICS_ENABLED"] = "False"
