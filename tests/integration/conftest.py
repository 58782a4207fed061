"""Integration fixtures: a real Airflow home, real OpenSSH sshd, the sandbox storefront."""

from __future__ import annotations

import pytest

from tests.support.airflow_run import migrate_airflow_db, sandbox_stores
from tests.support.sshd import start_sshd


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    migrate_airflow_db(home)
    return home


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def export_harness(airflow_home, sshd, tmp_path):
    """Factory: ``export_harness(orders, **store_overrides) -> (harness, storefront)``.

    Each call gets its own store id, storefront and SFTP folder; all share one Airflow home
    and one sshd, like stores of one deployment (``airflow_run.sandbox_stores``)."""
    with sandbox_stores(airflow_home, sshd, tmp_path) as make:
        yield make
