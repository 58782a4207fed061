"""``order_integration.preload`` (imported once by the processes tasks fork from) and the Celery
settings that name it: the preload really loads GX and pandas, quietly; the settings module
itself stays light (the scheduler imports it and must not pay for GX)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_the_preload_imports_gx_and_pandas_without_gx_import_chatter():
    # airflow.sdk first: its logging set-up is what made GX's INFO bookkeeping visible
    proc = _run("import gc, sys, airflow.sdk, order_integration.preload as p\n"
                "missing = [m for m in p.MODULES if m not in sys.modules]\n"
                "print('missing', missing)\n"
                "print('frozen', gc.get_freeze_count() > 100_000)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "missing []" in proc.stdout
    assert "frozen True" in proc.stdout, "what the preload imported is out of the collector's reach"
    output = proc.stdout + proc.stderr
    assert "Skipping registering" not in output and "[info" not in output, output[-2000:]


def test_the_celery_settings_name_the_preload_and_import_nothing_heavy():
    proc = _run("import sys\n"
                "from order_integration.celery_config import CELERY_CONFIG\n"
                "from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG\n"
                "print('imports', list(CELERY_CONFIG['imports']))\n"
                "print('rest same', {k: v for k, v in CELERY_CONFIG.items() if k != 'imports'} == DEFAULT_CELERY_CONFIG)\n"
                "print('heavy', [m for m in ('great_expectations', 'pandas') if m in sys.modules])")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "imports ['order_integration.preload']" in proc.stdout
    assert "rest same True" in proc.stdout
    assert "heavy []" in proc.stdout


def test_the_compose_deployment_and_the_local_harness_select_the_preload():
    from sandbox.airflow_services import AirflowServices
    from tests.support.infra import load_compose

    env = load_compose()["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == "order_integration.celery_config.CELERY_CONFIG"
    defaults = AirflowServices("/tmp/unused-airflow-home")._defaults()
    assert defaults["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    assert defaults["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"] == "order_integration.preload"
