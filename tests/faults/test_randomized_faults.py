"""A seeded randomized schedule of crashes and transport faults (``tests/support/chaos.py``):
a day of hourly exports and status syncs, every task killed or failed at random points and
retried in a new process, storefront faults queued at random. Nothing may be lost or doubled.

The large run (hundreds of runs, several seeds) is ``bench/chaos_bench.py``."""

from __future__ import annotations

import pytest

from tests.support.chaos import Chaos

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(600)]

SEED = 20261130
HOURS = 16


def test_a_day_of_random_faults_loses_and_doubles_nothing(sshd, tmp_path, capsys):
    lines: list[str] = []
    with Chaos(tmp_path / "chaos", sshd.airflow_connection(), sshd.root, seed=SEED, log=lines.append) as chaos:
        report = chaos.run(HOURS)
    with capsys.disabled():
        print(f"\n{report.line()}")
    assert report.runs >= HOURS
    # The schedule really injected faults of every family (else the zeros below prove nothing).
    assert report.kills >= 5 and report.raises >= 1 and report.transport_faults >= 3, report
    assert report.status_lines > 0 and report.status_applied > 0, report
    assert report.versions_delivered > HOURS, report
    assert report.problems == [], "\n".join(report.problems + lines[-40:])
    assert (report.lost, report.duplicated) == (0, 0), report
