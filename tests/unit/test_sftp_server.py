"""The sandbox's embedded asyncssh SFTP server, driven by Airflow's real SFTPHook."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.sftp_server import EmbeddedSftpServer

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path):
    with EmbeddedSftpServer(tmp_path / "root", tmp_path / "keys") as srv:
        yield srv


def _hook(monkeypatch: pytest.MonkeyPatch, conn_id: str, conn: dict):
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return SFTPHook(ssh_conn_id=conn_id, conn_retry_attempts=1)


def _other_ed25519_key(path: Path) -> tuple[Path, str]:
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    path.write_bytes(key.export_private_key("openssh"))
    path.chmod(0o600)
    key_type, b64 = key.export_public_key("openssh").decode().split()[:2]
    return path, f"{key_type} {b64}"


def test_start_listens_and_describes_connection(server: EmbeddedSftpServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        assert sock.recv(64).startswith(b"SSH-2.0-")

    conn = server.airflow_connection()
    assert conn["conn_type"] == "sftp"
    assert (conn["host"], conn["port"], conn["login"]) == ("127.0.0.1", server.port, "backend")
    assert conn["extra"]["key_file"] == str(server.client_key_file)
    assert conn["extra"]["host_key"] == server.host_key
    assert server.host_key.startswith("ssh-ed25519 AAAA")
    assert len(server.host_key.split()) == 2  # no comment: the hook's host_key parser wants type + data
    for key_file in server.keys_dir.iterdir():
        if not key_file.name.endswith(".pub"):
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, key_file


def test_keys_persist_across_restarts(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    with EmbeddedSftpServer(tmp_path / "root", keys) as first:
        host_key = first.host_key
        client_key = first.client_key_file.read_bytes()
    with EmbeddedSftpServer(tmp_path / "root", keys) as second:
        assert second.host_key == host_key
        assert second.client_key_file.read_bytes() == client_key
    # A fresh keys dir really generates a new key (the equality above is not a constant).
    with EmbeddedSftpServer(tmp_path / "root", tmp_path / "other-keys") as third:
        assert third.host_key != host_key


def test_sftp_hook_put_list_rename(server: EmbeddedSftpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = _hook(monkeypatch, "embedded_sftp", server.airflow_connection())
    with hook.get_managed_conn() as sftp:
        sftp.mkdir("inbox")
        sftp.putfo(io.BytesIO(b"order;1\n"), "inbox/.orders.csv.part")
        assert sftp.listdir("inbox") == [".orders.csv.part"]
        sftp.posix_rename("inbox/.orders.csv.part", "inbox/orders.csv")
        # posix-rename replaces an existing target (what atomic re-uploads rely on).
        sftp.putfo(io.BytesIO(b"order;2\n"), "inbox/.orders.csv.part")
        sftp.posix_rename("inbox/.orders.csv.part", "inbox/orders.csv")
        assert sftp.listdir("inbox") == ["orders.csv"]
        assert sftp.stat("inbox/orders.csv").st_size == 8
        assert sftp.listdir("/") == ["inbox"]
        # The chroot holds: climbing out of "/" stays inside root.
        sftp.putfo(io.BytesIO(b"x"), "/../../escape.txt")
    assert (server.root / "inbox" / "orders.csv").read_bytes() == b"order;2\n"
    assert (server.root / "escape.txt").exists()
    assert not (server.root.parent / "escape.txt").exists()


def test_wrong_client_key_is_refused(
    server: EmbeddedSftpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import paramiko

    other_key, _ = _other_ed25519_key(tmp_path / "intruder_key")
    conn = server.airflow_connection()
    conn["extra"]["key_file"] = str(other_key)
    hook = _hook(monkeypatch, "embedded_wrong_key", conn)
    with pytest.raises(paramiko.AuthenticationException), hook.get_managed_conn():
        pass


def test_right_key_for_another_user_is_refused(
    server: EmbeddedSftpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import paramiko

    conn = server.airflow_connection()
    conn["login"] = "someone-else"
    hook = _hook(monkeypatch, "embedded_wrong_user", conn)
    with pytest.raises(paramiko.AuthenticationException), hook.get_managed_conn():
        pass


def test_pinned_host_key_is_checked(
    server: EmbeddedSftpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import paramiko

    _, other_public = _other_ed25519_key(tmp_path / "other_host_key")
    conn = server.airflow_connection()
    conn["extra"]["host_key"] = other_public
    hook = _hook(monkeypatch, "embedded_bad_host_key", conn)
    with pytest.raises(paramiko.BadHostKeyException), hook.get_managed_conn():
        pass


def test_cli_writes_connection_and_stops_on_sigterm(tmp_path: Path) -> None:
    conn_file = tmp_path / "conn" / "backend.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.sftp_server",
            "--root",
            str(tmp_path / "root"),
            "--keys",
            str(tmp_path / "keys"),
            "--port",
            "0",
            "--conn-file",
            str(conn_file),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("embedded sftp listening on 127.0.0.1:"), proc.stderr.read()
        port = int(line.rsplit(":", 1)[1])
        conn = json.loads(conn_file.read_text())
        assert conn["port"] == port
        assert conn["extra"]["host_key"].startswith("ssh-ed25519 ")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            assert sock.recv(64).startswith(b"SSH-2.0-")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
