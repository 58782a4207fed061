"""``make demo`` refuses, with one sentence, while a ``make up`` stack runs on the same Airflow
home (the demo resets the ledger and the demo store's runs under that stack's scheduler)."""

from __future__ import annotations

import json
import os

import pytest

from sandbox import demo, stack

pytestmark = pytest.mark.unit


def _pid_file(state_dir, pid: int) -> None:
    record = {"pid": pid, "started": stack._start_time(pid), "url": "http://127.0.0.1:8080",
              "since": "2026-12-06T08:00:00+00:00", "groups": {}}
    (state_dir / stack.PID_FILE_NAME).write_text(json.dumps(record))


def test_the_demo_refuses_while_a_stack_is_up(tmp_path):
    _pid_file(tmp_path, os.getpid())  # this process plays the running stack
    refused = demo.stack_in_the_way(tmp_path)
    assert refused is not None
    assert f"pid {os.getpid()}" in refused and "make down" in refused and "\n" not in refused


def test_the_demo_runs_when_no_stack_is_up_or_it_is_gone(tmp_path):
    assert demo.stack_in_the_way(tmp_path) is None  # no pid file
    _pid_file(tmp_path, os.getpid())
    record = json.loads((tmp_path / stack.PID_FILE_NAME).read_text())
    record["started"] = "another process"  # the pid now belongs to someone else
    (tmp_path / stack.PID_FILE_NAME).write_text(json.dumps(record))
    assert demo.stack_in_the_way(tmp_path) is None


def test_make_demo_prints_the_sentence_and_exits_1(tmp_path, monkeypatch, capsys):
    _pid_file(tmp_path, os.getpid())
    monkeypatch.setattr(stack, "STATE", tmp_path)
    assert demo.main() == 1
    err = capsys.readouterr().err
    assert err.startswith("make demo: a `make up` stack is running") and "Traceback" not in err
