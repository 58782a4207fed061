"""SftpBackend against a real OpenSSH server (and the sandbox's embedded asyncssh server)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from order_integration.backend.sftp import SftpBackend
from order_integration.exceptions import BackendAuthError, BackendError, ConfigError, PermanentError
from tests.support.sshd import Sshd, free_port, start_sshd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def use_conn(sshd: Sshd, monkeypatch: pytest.MonkeyPatch):
    """Define connection ``conn_id`` (sshd's, with ``overrides``) for this test; return the id."""

    def _use(conn_id: str = "backend_test", **overrides) -> str:
        name, value = sshd.airflow_conn_env(conn_id, **overrides)
        monkeypatch.setenv(name, value)
        return conn_id

    return _use


@pytest.fixture
def connect_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Records every paramiko SSHClient.connect attempt (host, port), still connecting for real."""
    import paramiko

    calls: list[tuple] = []
    original = paramiko.SSHClient.connect

    def counting_connect(self, hostname, *args, **kwargs):
        calls.append((hostname, kwargs.get("port")))
        return original(self, hostname, *args, **kwargs)

    monkeypatch.setattr(paramiko.SSHClient, "connect", counting_connect)
    return calls


def _new_ed25519(path: Path) -> str:
    """A fresh key pair at ``path``; returns the public ``"ssh-ed25519 AAAA…"``."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def _unique_dir() -> str:
    return f"outbox/{uuid.uuid4().hex[:12]}"


class _GeneratedStream(io.RawIOBase):
    """Non-seekable, deterministic byte stream of ``size`` bytes (no len(), no seek())."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._counter = 0
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while len(self._buffer) < len(buf) and self._left > len(self._buffer):
            self._buffer += hashlib.sha256(self._counter.to_bytes(8, "big")).digest() * 64
            self._counter += 1
        n = min(len(buf), self._left, len(self._buffer))
        buf[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        self._left -= n
        return n


def test_upload_atomic_lands_exact_bytes_and_no_part(sshd: Sshd, use_conn) -> None:
    remote_dir = _unique_dir() + "/nested"
    payload = b"id;total\n1001;12.50\n" + bytes(range(256))
    with SftpBackend(use_conn(), conn_retry_attempts=1).session() as session:
        final = session.upload_atomic(io.BytesIO(payload), remote_dir, "orders.csv")
        assert final == f"{remote_dir}/orders.csv"
        assert session.listdir(remote_dir) == ["orders.csv"]
        assert session.exists(final)
        assert not session.exists(f"{remote_dir}/.orders.csv.part")
        assert session.read_bytes(final) == payload
    # Relative paths land in the served root (internal-sftp -d), checked on disk.
    assert (sshd.root / remote_dir / "orders.csv").read_bytes() == payload


def test_upload_atomic_replaces_existing_file(sshd: Sshd, use_conn) -> None:
    remote_dir = _unique_dir()
    with SftpBackend(use_conn(), conn_retry_attempts=1).session() as session:
        session.upload_atomic(io.BytesIO(b"old content, longer\n"), remote_dir, "orders.csv")
        session.upload_atomic(io.BytesIO(b"new\n"), remote_dir, "orders.csv")
        assert session.listdir(remote_dir) == ["orders.csv"]
    assert (sshd.root / remote_dir / "orders.csv").read_bytes() == b"new\n"


def test_upload_of_20mb_stream(sshd: Sshd, use_conn) -> None:
    size = 20 * 1024 * 1024
    expected = hashlib.sha256()
    reference = _GeneratedStream(size)
    while chunk := reference.read(1 << 20):
        expected.update(chunk)

    remote_dir = _unique_dir()
    stream = io.BufferedReader(_GeneratedStream(size))
    with SftpBackend(use_conn(), conn_retry_attempts=1).session() as session:
        final = session.upload_atomic(stream, remote_dir, "big.jsonl")
        assert session.listdir(remote_dir) == ["big.jsonl"]
        assert session.client.stat(final).st_size == size
    local = sshd.root / remote_dir / "big.jsonl"
    assert hashlib.sha256(local.read_bytes()).hexdigest() == expected.hexdigest()


def test_failed_upload_leaves_neither_part_nor_file(sshd: Sshd, use_conn) -> None:
    class Boom(Exception):
        pass

    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buf) -> int:
            if self.sent >= 100_000:
                raise Boom("source broke mid-upload")
            buf[: len(buf)] = b"x" * len(buf)
            self.sent += len(buf)
            return len(buf)

    remote_dir = _unique_dir()
    with SftpBackend(use_conn(), conn_retry_attempts=1).session() as session:
        with pytest.raises(Boom):
            session.upload_atomic(io.BufferedReader(Failing()), remote_dir, "orders.csv")
        assert session.listdir(remote_dir) == []


def test_move_and_makedirs(sshd: Sshd, use_conn) -> None:
    base = _unique_dir()
    with SftpBackend(use_conn(), conn_retry_attempts=1).session() as session:
        session.upload_atomic(io.BytesIO(b"a"), f"{base}/in", "a.csv")
        session.makedirs(f"{base}/archive/2026")
        session.makedirs(f"{base}/archive/2026")  # idempotent
        session.move(f"{base}/in/a.csv", f"{base}/archive/2026/a.csv")
        assert session.listdir(f"{base}/in") == []
        assert session.read_bytes(f"{base}/archive/2026/a.csv") == b"a"
        with pytest.raises(FileNotFoundError):
            session.read_bytes(f"{base}/in/a.csv")


def test_changed_host_key_is_refused_without_retry(
    sshd: Sshd, use_conn, connect_calls: list, tmp_path: Path
) -> None:
    other_host_key = _new_ed25519(tmp_path / "other_host_key")
    conn_id = use_conn("backend_changed_key", extra={"host_key": other_host_key})
    # Default retry budget (the hook's 3 attempts): a host key failure must still stop at once.
    with pytest.raises(BackendAuthError) as err, SftpBackend(conn_id).session():
        pass
    assert len(connect_calls) == 1
    message = str(err.value)
    assert conn_id in message
    assert f"{sshd.host}:{sshd.port}" in message
    assert "host_key" in message
    assert isinstance(err.value, PermanentError)


def test_connection_without_host_key_is_a_config_error(use_conn, connect_calls: list) -> None:
    conn_id = use_conn("backend_no_host_key", extra={"host_key": None})
    with pytest.raises(ConfigError, match="host_key") as err, SftpBackend(conn_id).session():
        pass
    assert conn_id in str(err.value)
    assert connect_calls == []  # refused before any network traffic


@pytest.mark.parametrize("keep_host_key", [True, False])
def test_no_host_key_check_is_a_config_error(use_conn, connect_calls: list, keep_host_key: bool) -> None:
    extra = {"no_host_key_check": "true"}
    if not keep_host_key:
        extra["host_key"] = None
    conn_id = use_conn("backend_no_check", extra=extra)
    with pytest.raises(ConfigError, match="no_host_key_check") as err, SftpBackend(conn_id).session():
        pass
    assert conn_id in str(err.value)
    assert connect_calls == []


def test_bare_base64_host_key_is_a_config_error(sshd: Sshd, use_conn) -> None:
    conn_id = use_conn("backend_bare_key", extra={"host_key": sshd.host_key.split()[1]})
    with pytest.raises(ConfigError, match="host_key"), SftpBackend(conn_id).session():
        pass


def test_wrong_client_key_is_an_auth_error(sshd: Sshd, use_conn, connect_calls: list, tmp_path: Path) -> None:
    intruder = tmp_path / "intruder_key"
    _new_ed25519(intruder)
    conn_id = use_conn("backend_wrong_client", extra={"key_file": str(intruder)})
    with pytest.raises(BackendAuthError, match="refused the login") as err, SftpBackend(conn_id).session():
        pass
    assert repr(sshd.username) in str(err.value)
    assert len(connect_calls) == 1


def test_nothing_listening_is_a_retryable_backend_error(use_conn, connect_calls: list) -> None:
    conn_id = use_conn("backend_closed_port", port=free_port())
    with pytest.raises(BackendError) as err, SftpBackend(conn_id, conn_retry_attempts=2).session():
        pass
    assert not isinstance(err.value, PermanentError)
    # Transient failures do go through the retry budget (first attempt + the hook's tenacity).
    assert len(connect_calls) == 2


def test_backend_upload_against_embedded_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from sandbox.sftp_server import EmbeddedSftpServer

    payload = b'{"order": 1}\n' * 1000
    with EmbeddedSftpServer(tmp_path / "root", tmp_path / "keys") as server:
        monkeypatch.setenv("AIRFLOW_CONN_EMBEDDED_BACKEND", json.dumps(server.airflow_connection()))
        with SftpBackend("embedded_backend", conn_retry_attempts=1).session() as session:
            final = session.upload_atomic(io.BytesIO(payload), "outbox/store-1", "orders.jsonl")
            assert session.listdir("outbox/store-1") == ["orders.jsonl"]
            session.makedirs("archive")
            session.move(final, "archive/orders.jsonl")
        assert (server.root / "archive" / "orders.jsonl").read_bytes() == payload
        assert list((server.root / "outbox" / "store-1").iterdir()) == []
