"""Test-wide environment (set before anything imports Airflow) and the shared server fixtures:
a real Airflow home, real OpenSSH sshd, the sandbox storefront."""

import os
from pathlib import Path

import pytest

from tests.support.platforms import PLATFORMS

ROOT = Path(__file__).resolve().parent.parent

# `make test` exports these too; setdefault keeps a plain `pytest` run equally isolated.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["GX_ANALYTICS_ENABLED"] = "False"
# `make test` runs the tests in parallel workers (pytest-xdist): each worker gets an Airflow home of
# its own, so no two processes write one airflow.cfg or SQLite database at once.
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["AIRFLOW_HOME"] = str(Path(os.environ["AIRFLOW_HOME"]) / f"pytest-{worker}")

# Airflow's first import configures logging and replaces the root logger's handlers. Imported here,
# before any test starts, so that a test which is the first to touch Airflow keeps the handler
# pytest's `caplog` put on the root logger (run alone, such a test saw no log records).
import airflow.sdk  # noqa: E402, F401

# The units that take minutes, longest first: started first, they overlap each other and the
# many short modules fill the gaps. Modules with a deployment of their own (module- or
# package-scoped) are one unit each; the ones in SPLIT_MODULES build everything per test
# (`export_harness`), so each of their tests is a unit of its own and they spread over workers.
LONG_MODULES = (
    "tests/distributed/test_celery.py",
    "tests/integration/test_realtime.py",
    "tests/integration/test_scheduler.py",
    "tests/faults/test_crash_recovery.py",
    "tests/integration/test_after_demo.py",
    "tests/ui",
    "tests/integration/test_export_dag.py",
    "tests/integration/test_two_way.py",
    "tests/integration/test_payments.py",
    "tests/integration/test_on_demand.py",
    "tests/faults/test_randomized_faults.py",
    "tests/integration/test_realtime_polling.py",
)
SPLIT_MODULES = frozenset({
    "tests/integration/test_export_dag.py",
    "tests/integration/test_two_way.py",
    "tests/integration/test_payments.py",
    "tests/integration/test_on_demand.py",
    "tests/integration/test_alerts_dag.py",
    "tests/integration/test_inventory_sync.py",
})


def _module(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "tests/ui" if path.startswith("tests/ui/") else path


def _scope(nodeid: str) -> str:
    """The unit a worker takes whole: the test in SPLIT_MODULES, else the module, or
    ``tests/ui`` (its stack and browser are package-scoped)."""
    module = _module(nodeid)
    return nodeid if module in SPLIT_MODULES else module


def pytest_collection_modifyitems(config, items):
    rank = {scope: i for i, scope in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(_module(item.nodeid), len(rank)))  # stable: order kept within


@pytest.hookimpl(optionalhook=True)  # an xdist hook: `-p no:xdist` must still run the suite
def pytest_xdist_make_scheduler(config, log):
    """Whole scopes (``_scope``) go to one worker, so a module's deployment starts once, in the
    collection order above rather than xdist's most-tests-first."""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False

    class ScopeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return ScopeScheduling(config, log)


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    from tests.support.airflow_run import migrate_airflow_db

    migrate_airflow_db(home)
    return home


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    from tests.support.sshd import start_sshd

    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=sorted(PLATFORMS))
def platform(request):
    """The storefront platform a test runs against (``tests.support.platforms.PlatformKit``):
    a test taking this fixture runs once per platform the package supports."""
    return PLATFORMS[request.param]


@pytest.fixture
def export_harness(airflow_home, sshd, tmp_path):
    """Factory: ``export_harness(orders, **store_overrides) -> (harness, storefront)``.

    Each call gets its own store id, storefront and SFTP folder; all share one Airflow home
    and one sshd, like stores of one deployment (``airflow_run.sandbox_stores``)."""
    from tests.support.airflow_run import sandbox_stores

    with sandbox_stores(airflow_home, sshd, tmp_path) as make:
        yield make


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A throw-away PostgreSQL cluster on loopback (the distributed tier's :class:`Postgres`),
    one per session; tests create their own databases in it (``postgres.create_database``)."""
    from tests.support.infra import Postgres

    with Postgres(tmp_path_factory.mktemp("postgres")).start() as server:
        yield server


# -- CPU per test (docs/testing.md) ---------------------------------------------------------------
# The suite is CPU-bound on 2 cores, so wall-clock durations alone do not say what to cut. Each
# phase's CPU is this process's plus that of the child processes it reaped meanwhile (a
# deployment's components at the teardown that stops them) plus that of the `airflow dags test`
# runs it had the warm runner make (the runner's children, not this process's), recorded in the
# item's user properties (xdist carries them to the controller) and summed per test.
CPU_REPORTED = 30
_cpu_by_test: dict[str, float] = {}


def _cpu_seconds() -> float:
    import resource

    from sandbox import warm_airflow

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + warm_airflow.runs_cpu


def _phase_cpu(phase: str):
    @pytest.hookimpl(wrapper=True)
    def hook(item):
        start = _cpu_seconds()
        try:
            return (yield)
        finally:
            item.user_properties.append((f"cpu_{phase}", round(_cpu_seconds() - start, 3)))
    return hook


pytest_runtest_setup = _phase_cpu("setup")
pytest_runtest_call = _phase_cpu("call")
pytest_runtest_teardown = _phase_cpu("teardown")


def pytest_runtest_logreport(report):
    if report.when == "teardown":
        cpu = sum(v for k, v in report.user_properties if str(k).startswith("cpu_"))
        _cpu_by_test[report.nodeid] = _cpu_by_test.get(report.nodeid, 0.0) + cpu


def pytest_terminal_summary(terminalreporter):
    if not _cpu_by_test:
        return
    total = sum(_cpu_by_test.values())
    terminalreporter.write_sep("=", f"most CPU {CPU_REPORTED} (this process + reaped children; "
                                    f"{total:.0f} s over {len(_cpu_by_test)} tests)")
    for nodeid, cpu in sorted(_cpu_by_test.items(), key=lambda kv: -kv[1])[:CPU_REPORTED]:
        terminalreporter.write_line(f"{cpu:8.2f}s  {nodeid}")
