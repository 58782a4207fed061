"""Issue 13, defect 6: a huge file in ``outbound_dir`` or ``stock_dir`` must not exhaust a worker.

``SftpSession.read_bytes`` checks the size before reading (``stat``) and while reading (a file
still growing), and the status and stock syncs send a file over the limit to ``error/`` with the
reason in its ``errors.json``, the same route as a file that is not UTF-8; the other files of the
folder are handled as usual. Real SFTP servers: the embedded asyncssh one and OpenSSH's sshd.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from order_integration.backend import sftp as sftp_module
from order_integration.backend.sftp import FileTooLarge, SftpBackend
from order_integration.config import parse_config
from order_integration.inventory import sync_stock_dir
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.status_sync import ERRORS_SUFFIX, sync_outbound
from order_integration.storefronts.woocommerce_products import WooCommerceStock
from order_integration.storefronts.woocommerce_writes import WooCommerceWriter
from sandbox.sftp_server import EmbeddedSftpServer
from tests.support.sshd import SSHD, Sshd

pytestmark = pytest.mark.faults

CONN = "backend_oversize"
LIMIT = 64 * 1024  # set by the tests: the files stay small on disk and in memory
FIVE_GB = 5 * 1024**3
STATUS_HEADER = b"order_id,event,occurred_at,carrier,tracking_number,tracking_url,sku,quantity,note\n"
STOCK_HEADER = b"sku,quantity,as_of\n"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedSftpServer]:
    with EmbeddedSftpServer(tmp_path / "root", tmp_path / "keys") as srv:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(srv.airflow_connection()))
        yield srv


def _store():
    return parse_config({"stores": [{
        "id": "oversize", "storefront_conn_id": "unused_shop", "backend_conn_id": CONN,
        "backend": {"inbound_dir": "inbound", "outbound_dir": "outbound", "stock_dir": "stock"}}]}).stores[0]


def _sparse(path: Path, size: int) -> None:
    """A file of ``size`` bytes that takes no disk space (a hole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size)


def _over_limit(header: bytes, line: bytes) -> bytes:
    """A well-formed CSV file one line longer than ``LIMIT`` bytes: parseable, only too big."""
    return header + line * (LIMIT // len(line) + 1)


def _report(folder: Path, name: str) -> dict:
    return json.loads((folder / "error" / (name + ERRORS_SUFFIX)).read_text(encoding="utf-8"))


def test_status_files_over_the_limit_go_to_error_with_the_reason_and_the_others_are_handled(
    server: EmbeddedSftpServer, tmp_path: Path
) -> None:
    outbound = server.root / "outbound"
    outbound.mkdir(parents=True)
    (outbound / "a_over.csv").write_bytes(_over_limit(STATUS_HEADER, b"1001,accepted,2026-11-02T10:00:00Z,,,,,,\n"))
    _sparse(outbound / "b_five_gb.csv", FIVE_GB)
    (outbound / "c_ok.csv").write_bytes(STATUS_HEADER)  # no lines: valid, archived
    ledger = Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)
    with SftpBackend(CONN, conn_retry_attempts=1, max_read_bytes=LIMIT).session() as session, \
            WooCommerceWriter("unused_shop") as writer:
        tracemalloc.start()  # the connection is open (its imports done): what the sync itself holds
        try:
            result = sync_outbound(_store(), session, writer, ledger.status_events)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert [(f.name, f.moved_to) for f in result.files] == [
        ("a_over.csv", "outbound/error/a_over.csv"), ("b_five_gb.csv", "outbound/error/b_five_gb.csv"),
        ("c_ok.csv", "outbound/archive/c_ok.csv")]
    assert sorted(p.name for p in outbound.iterdir() if p.is_file()) == []
    for name, size in (("a_over.csv", (outbound / "error" / "a_over.csv").stat().st_size), ("b_five_gb.csv", FIVE_GB)):
        errors = _report(outbound, name)["errors"]
        assert len(errors) == 1 and errors[0]["line_number"] == 1, errors
        assert f"{size:,} bytes" in errors[0]["reason"] and f"{LIMIT:,}-byte limit" in errors[0]["reason"], errors
        assert [line.reason for line in next(f for f in result.files if f.name == name).invalid_lines] == [
            errors[0]["reason"]]
    assert peak < 16 * 1024 * 1024, f"peak {peak:,} bytes traced while handling a 5 GB file"


def test_stock_files_over_the_limit_go_to_error_with_the_reason(server: EmbeddedSftpServer, tmp_path: Path) -> None:
    stock = server.root / "stock"
    stock.mkdir(parents=True)
    (stock / "a_over.csv").write_bytes(_over_limit(STOCK_HEADER, b"SKU-1,5,2026-11-02T10:00:00Z\n"))
    _sparse(stock / "b_five_gb.csv", FIVE_GB)
    ledger = Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)
    with SftpBackend(CONN, conn_retry_attempts=1, max_read_bytes=LIMIT).session() as session, \
            WooCommerceStock("unused_shop") as client:
        result = sync_stock_dir(_store(), session, client, ledger.stock_levels)

    assert [(f.name, f.moved_to) for f in result.files] == [
        ("a_over.csv", "stock/error/a_over.csv"), ("b_five_gb.csv", "stock/error/b_five_gb.csv")]
    for name in ("a_over.csv", "b_five_gb.csv"):
        errors = _report(stock, name)["errors"]
        assert len(errors) == 1 and "-byte limit for a backend file" in errors[0]["reason"], errors
    assert result.counts.get("applied", 0) == 0


def test_the_default_limit_is_64_mib_and_a_file_at_the_limit_is_read(
    server: EmbeddedSftpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sftp_module.MAX_READ_BYTES == 64 * 1024 * 1024
    monkeypatch.setattr(sftp_module, "MAX_READ_BYTES", LIMIT)  # the default, as read at call time
    (server.root / "at_limit.csv").write_bytes(b"x" * LIMIT)
    (server.root / "over.csv").write_bytes(b"x" * (LIMIT + 1))
    with SftpBackend(CONN, conn_retry_attempts=1).session() as session:
        assert session.read_bytes("at_limit.csv") == b"x" * LIMIT
        with pytest.raises(FileTooLarge, match=f"{LIMIT + 1:,} bytes"):
            session.read_bytes("over.csv")


def test_a_file_growing_after_the_size_check_is_cut_off_while_reading(server: EmbeddedSftpServer) -> None:
    """The stat said small (the backend was still writing); the read stops one byte past the limit."""
    (server.root / "growing.csv").write_bytes(b"y" * (LIMIT * 8))
    with SftpBackend(CONN, conn_retry_attempts=1, max_read_bytes=LIMIT).session() as session:
        client = session.client
        real_stat, real_open = client.stat, client.open
        reads: list[int] = []

        def stale_stat(path: str):
            attrs = real_stat(path)
            attrs.st_size = 10
            return attrs

        def counting_open(path: str, mode: str = "r", *args, **kwargs):
            fh = real_open(path, mode, *args, **kwargs)
            real_read = fh.read

            def read(size: int | None = None) -> bytes:
                data = real_read(size)
                reads.append(len(data))
                return data

            fh.read = read
            return fh

        client.stat, client.open = stale_stat, counting_open
        with pytest.raises(FileTooLarge, match="at least"):
            session.read_bytes("growing.csv")
    assert sum(reads) == LIMIT + 1


@pytest.mark.skipif(not SSHD.exists(), reason="OpenSSH sshd not installed (make system-deps)")
def test_openssh_five_gb_sparse_file_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Sshd(tmp_path / "sshd").start() as sshd:
        monkeypatch.setenv(*sshd.airflow_conn_env(CONN))
        _sparse(sshd.root / "outbound" / "huge.csv", FIVE_GB)
        (sshd.root / "outbound" / "small.csv").write_bytes(STATUS_HEADER)
        with SftpBackend(CONN, conn_retry_attempts=1).session() as session:  # the default limit
            with pytest.raises(FileTooLarge) as err:
                session.read_bytes("outbound/huge.csv")
            assert session.read_bytes("outbound/small.csv") == STATUS_HEADER
    assert f"{FIVE_GB:,} bytes" in err.value.reason and f"{64 * 1024 * 1024:,}-byte limit" in err.value.reason
    assert os.stat(sshd.root / "outbound" / "huge.csv").st_size == FIVE_GB
