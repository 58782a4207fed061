"""Failpoints: off without the variable, fire as planned, once across processes, per store."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal

import pytest

from order_integration import failpoints
from order_integration.failpoints import ENV, PLAN_FILE, InjectedFault, failpoint, fired

pytestmark = pytest.mark.unit


@pytest.fixture
def plan(tmp_path, monkeypatch):
    def write(spec):
        (tmp_path / PLAN_FILE).write_text(json.dumps(spec))
        monkeypatch.setenv(ENV, str(tmp_path))
        return tmp_path

    return write


def test_without_the_variable_nothing_happens(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    for name in failpoints.POINTS:
        failpoint(name, store="any")


def test_a_raise_point_fires_its_times_then_lets_through(plan):
    folder = plan({"load.after_upload": {"action": "raise", "times": 2}})
    for n in (1, 2):
        with pytest.raises(InjectedFault, match=rf"load.after_upload@s1 \(firing {n}\)"):
            failpoint("load.after_upload", store="s1")
    failpoint("load.after_upload", store="s1")  # the third try goes through
    failpoint("load.after_claim", store="s1")  # not planned
    assert fired(folder) == {"load.after_upload@s1": 2}


def test_a_point_planned_for_one_store_spares_the_others(plan):
    folder = plan({"extract.after_staging": {"action": "raise", "store": "a"}})
    failpoint("extract.after_staging", store="b")
    with pytest.raises(InjectedFault):
        failpoint("extract.after_staging", store="a")
    assert fired(folder) == {"extract.after_staging@a": 1}


def test_unknown_points_and_actions_are_refused(plan):
    plan({"load.after_nothing": {"action": "kill"}})
    with pytest.raises(ValueError, match="unknown failpoint"):
        failpoint("load.after_upload")
    plan({"load.after_upload": {"action": "explode"}})
    with pytest.raises(ValueError, match="action must be one of"):
        failpoint("load.after_upload")
    with pytest.raises(ValueError, match="unknown failpoint 'typo'"):
        failpoint("typo")


def _reach(name: str) -> None:
    failpoint(name, store="s")


def test_kill_is_a_sigkill_and_fires_once_across_processes(plan):
    folder = plan({"load.after_render": {"action": "kill", "times": 1}})
    ctx = multiprocessing.get_context("fork")
    first = ctx.Process(target=_reach, args=("load.after_render",))
    first.start()
    first.join(30)
    assert first.exitcode == -signal.SIGKILL
    second = ctx.Process(target=_reach, args=("load.after_render",))  # the retry
    second.start()
    second.join(30)
    assert second.exitcode == 0
    markers = list(folder.glob("*.fired"))
    assert [m.name for m in markers] == ["load.after_render@s.0.fired"]
    assert markers[0].read_text() == f"pid={first.pid}\n"
    assert os.getpid() != first.pid
