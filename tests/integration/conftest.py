"""Integration fixtures: a real Airflow home, real OpenSSH sshd, the sandbox storefront."""

from __future__ import annotations

import itertools

import pytest

from sandbox.storefront import SandboxStorefront
from tests.support.airflow_run import ExportHarness, migrate_airflow_db
from tests.support.sshd import start_sshd

_ids = itertools.count(1)
KEY, SECRET = "ck_integration_test", "cs_integration_test"


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
    and one sshd, like stores of one deployment."""
    started: list[SandboxStorefront] = []

    def make(orders, *, clock=None, **store_overrides):
        shop = SandboxStorefront(orders, consumer_key=KEY, consumer_secret=SECRET, clock=clock).start()
        started.append(shop)
        store_id = f"it_{next(_ids)}"
        harness = ExportHarness(
            store_id=store_id, airflow_home=airflow_home, work_dir=tmp_path / store_id,
            storefront_url=shop.base_url, storefront_key=KEY, storefront_secret=SECRET, sftp_connection=sshd.airflow_connection(),
            sftp_root=sshd.root, store_overrides=store_overrides,
        )
        return harness, shop

    yield make
    for shop in started:
        shop.stop()
