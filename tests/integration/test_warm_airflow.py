"""``sandbox.warm_airflow.run_airflow`` with a ``log`` (what ``make demo`` uses): the run's stdout
and stderr both land in that one file, and its text is what comes back, forked from the warm
runner or started from scratch (``SANDBOX_COLD_AIRFLOW``)."""

from __future__ import annotations

import os
import re
import stat

import pytest

from sandbox import warm_airflow
from sandbox.warm_airflow import run_airflow
from tests.support.airflow_run import airflow_env

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("way", ["warm", "cold"])
def test_a_runs_stdout_and_stderr_both_reach_its_log(airflow_home, tmp_path, monkeypatch, way):
    if way == "cold":
        monkeypatch.setenv(warm_airflow.COLD_ENV, "1")
    else:
        monkeypatch.delenv(warm_airflow.COLD_ENV, raising=False)
    env = airflow_env(airflow_home)  # the export harness's: a warm server this worker has is used again
    log = tmp_path / "run.log"

    code, text = run_airflow(["version"], env, 300, log=log)
    assert code == 0, text
    assert text == log.read_text()
    assert re.search(r"^3\.\d+\.\d+$", text, re.M), text
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(log.stat().st_mode) == 0o666 & ~umask, "the log is created as open() creates a file"

    # argparse: the usage goes to stdout, the refusal to stderr; the log is the new run's alone
    code, text = run_airflow(["no-such-command"], env, 300, log=log)
    assert code == 2, text
    assert text == log.read_text()
    assert "Usage: airflow" in text
    assert "invalid choice: 'no-such-command'" in text
    assert not re.search(r"^3\.\d+\.\d+$", text, re.M), "the earlier run's output was left in the log"
