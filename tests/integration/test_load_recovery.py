"""Crash at any point of a load, then retry: nothing lost, nothing doubled.

Drives :func:`order_integration.export.load` with the real SFTP hook against the embedded
SFTP server and a real SQLite ledger; the crash is an exception injected at one step."""

from __future__ import annotations

import json

import pytest

from order_integration import export
from order_integration.backend.sftp import SftpBackend
from order_integration.config import parse_config
from order_integration.ledger import Deliveries, Ledger, sqlite_engine
from order_integration.model import order_record
from order_integration.windows import Window
from sandbox.sftp_server import EmbeddedSftpServer
from tests.support.orders import make_order

pytestmark = pytest.mark.integration

WINDOW = Window.parse("2026-11-02T10:00:00Z", "2026-11-02T11:00:00Z")


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("embedded_sftp")
    with EmbeddedSftpServer(base / "root", base / "keys") as server:
        yield server


@pytest.fixture
def env(sftp_server, tmp_path, monkeypatch):
    from airflow.sdk import ObjectStoragePath

    store_id = f"crash_{tmp_path.name[-8:].lower()}".replace("-", "_")
    store = parse_config({"stores": [{
        "id": store_id[:32], "storefront_conn_id": "unused", "backend_conn_id": "backend_crash",
        "backend": {"inbound_dir": f"in_{store_id}"}}]}).stores[0]
    monkeypatch.setenv("AIRFLOW_CONN_BACKEND_CRASH", json.dumps(sftp_server.airflow_connection()))
    staging = ObjectStoragePath(f"file://{tmp_path / 'staging'}")
    ledger = Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)

    def stage(orders, run_id):
        run = export.run_dir(staging, store.id, WINDOW, run_id)
        path = run / export.DELIVERABLE_FILE
        path.write_text("".join(json.dumps(order_record(o)) + "\n" for o in orders))
        return run, path

    inbound = sftp_server.root / store.backend.inbound_dir
    return store, ledger, stage, inbound


def _load(store, ledger, run, path, run_id):
    return export.load(store, WINDOW, run_id, run, path, ledger.deliveries, SftpBackend(store.backend_conn_id))


@pytest.mark.parametrize("crash_at", ["set_batch_file", "upload", "complete_batch"])
def test_a_retry_after_a_crash_delivers_each_order_exactly_once(env, monkeypatch, crash_at):
    store, ledger, stage, inbound = env
    orders = [make_order(str(i)) for i in range(1, 6)]
    run, path = stage(orders, "run_a")

    from order_integration.backend import sftp as sftp_module

    targets = {
        "set_batch_file": (Deliveries, "set_batch_file"),
        "complete_batch": (Deliveries, "complete_batch"),
        "upload": (sftp_module.SftpSession, "upload_atomic"),
    }
    owner, name = targets[crash_at]
    original = getattr(owner, name)

    def crash_after(*args, **kwargs):
        original(*args, **kwargs)  # the step itself happened, then the worker died
        raise Crash(name)

    monkeypatch.setattr(owner, name, crash_after)
    with pytest.raises(Crash):
        _load(store, ledger, run, path, "run_a")
    monkeypatch.setattr(owner, name, original)

    result = _load(store, ledger, run, path, "run_a")  # Airflow's retry of the same run
    files = sorted(p.name for p in inbound.iterdir())
    assert len(files) == 1 and not files[0].startswith("."), files
    assert result["delivered"] == 5 and result["already_delivered"] == 0
    assert result["files"] == files
    deliveries = ledger.deliveries.delivered(store.id)
    assert sorted(d["order_id"] for d in deliveries) == ["1", "2", "3", "4", "5"]
    assert {d["file_name"] for d in deliveries} == set(files)
    assert ledger.deliveries.pending_batches(store.id) == []

    again = _load(store, ledger, run, path, "run_a")
    assert again == result
    assert sorted(p.name for p in inbound.iterdir()) == files


def test_another_run_finishes_a_batch_left_behind(env, monkeypatch):
    """Run A crashed for good after claiming; run B (next hour, overlapping) finishes A's file."""
    store, ledger, stage, inbound = env
    run_a, path_a = stage([make_order(str(i)) for i in range(1, 4)], "run_a")
    with monkeypatch.context() as m, pytest.raises(Crash):
        m.setattr(Deliveries, "set_batch_file", lambda *a, **k: (_ for _ in ()).throw(Crash()))
        _load(store, ledger, run_a, path_a, "run_a")

    run_b, path_b = stage([make_order(str(i)) for i in range(3, 6)], "run_b")  # 3 overlaps
    result = _load(store, ledger, run_b, path_b, "run_b")
    assert result["delivered"] == 2 and result["already_delivered"] == 1
    assert len(result["files"]) == 1  # B's own file; A's was finished on A's behalf
    assert len(list(inbound.iterdir())) == 2
    assert {b["run_id"] for b in _batches(ledger, store.id)} == {"run_a", "run_b"}
    delivered = sorted(d["order_id"] for d in ledger.deliveries.delivered(store.id))
    assert delivered == ["1", "2", "3", "4", "5"]
    rows = [line for p in inbound.iterdir() for line in p.read_text().splitlines()[1:]]
    order_ids = [r.split(",")[1] for r in rows]
    assert sorted(set(order_ids)) == ["1", "2", "3", "4", "5"]
    assert len(order_ids) == 10  # 5 orders x 2 lines, none twice


def _batches(ledger, store_id):
    from sqlalchemy import select

    from order_integration.ledger.schema import delivery_batches

    with ledger.engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(delivery_batches).where(delivery_batches.c.store_id == store_id)).mappings()]


def test_nothing_to_deliver_writes_no_file(env):
    store, ledger, stage, inbound = env
    run, path = stage([], "run_empty")
    assert _load(store, ledger, run, path, "run_empty") == {
        "delivered": 0, "resent": 0, "already_delivered": 0, "files": []}
    assert not inbound.exists() or list(inbound.iterdir()) == []


def test_a_dry_run_renders_the_very_file_a_real_load_uploads_and_records_nothing(env):
    store, ledger, stage, inbound = env
    run, path = stage([make_order(str(i)) for i in range(1, 4)], "run_dry")
    sftp = SftpBackend(store.backend_conn_id)
    dry = export.load(store, WINDOW, "run_dry", run, path, ledger.deliveries, sftp, dry_run=True)
    assert (dry["delivered"], dry["would_deliver"], dry["files"]) == (0, 3, []), dry
    assert not inbound.exists() or list(inbound.iterdir()) == []
    assert ledger.deliveries.delivered(store.id) == [] and _batches(ledger, store.id) == []
    rendered = type(run)(dry["dry_run_file"])
    assert [p.name for p in (run / "dry_run").iterdir()] == [rendered.name]  # no working file left

    real = _load(store, ledger, run, path, "run_dry")
    assert real["files"] == [rendered.name] and real["delivered"] == 3
    assert (inbound / rendered.name).read_bytes() == rendered.read_bytes()

    empty_run, empty = stage([], "run_dry_empty")
    nothing = export.load(store, WINDOW, "run_dry_empty", empty_run, empty, ledger.deliveries, sftp, dry_run=True)
    assert nothing["dry_run_file"] is None and list((empty_run / "dry_run").iterdir()) == []
