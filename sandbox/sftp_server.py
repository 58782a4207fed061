"""An in-process SFTP server (asyncssh) standing in for the backend's SFTP server in ``make demo``.

It speaks real SSH/SFTP, so the code under test uses the unchanged Airflow ``SFTPHook``
(paramiko) against it: pinned ed25519 host key, key-only login, SFTP confined to one
directory. It is a sandbox helper, never shipped configuration.

Keys are generated on first start into ``keys_dir`` and reused afterwards, so the host key
pinned in the Airflow connection stays valid across restarts.

CLI::

    python -m sandbox.sftp_server --root DIR --keys DIR --port 2222 [--conn-file PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

HOST_KEY_NAME = "ssh_host_ed25519_key"
CLIENT_KEY_NAME = "client_ed25519_key"


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the start (a key is never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed


def _load_or_create_key(path: Path, comment: str) -> Any:
    """Return the ed25519 private key stored at ``path``, generating it (and ``.pub``) first if absent."""
    import asyncssh

    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    _write_private(path, key.export_private_key("openssh"))
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key("openssh"))
    return key


def _public_line(key: Any) -> str:
    """``"ssh-ed25519 AAAA…"`` without the comment: the form Airflow's ``host_key`` extra expects."""
    parts = key.export_public_key("openssh").decode("ascii").split()
    return f"{parts[0]} {parts[1]}"


def sftp_connection(host: str, port: int, login: str, key_file: Path, host_key: str) -> dict[str, Any]:
    """An Airflow ``sftp`` connection (JSON form) with key login and a pinned host key."""
    return {
        "conn_type": "sftp",
        "host": host,
        "port": port,
        "login": login,
        "extra": {
            "key_file": str(key_file),
            "host_key": host_key,
            # Only the key above: no ~/.ssh/id_* guessing, so a wrong key fails the same way
            # on every machine.
            "look_for_keys": "false",
        },
    }


class EmbeddedSftpServer:
    """SFTP server running on its own asyncio loop in a background thread.

    :param root: directory the SFTP session is confined to (created if missing).
    :param keys_dir: where the host and client keys live (created if missing, keys reused).
    :param host: listen address; loopback by default.
    :param port: listen port; 0 picks a free one (read :attr:`port` after :meth:`start`).
    :param username: the only login accepted, with the client key only.
    """

    def __init__(
        self,
        root: Path,
        keys_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "backend",
    ) -> None:
        self.root = Path(root)
        self.keys_dir = Path(keys_dir)
        self.host = host
        self.username = username
        self._requested_port = port
        self._port: int | None = None
        self._host_key_line: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: Any = None
        self._connections: set[Any] = set()

    # -- public properties -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port actually listened on (only known once started)."""
        if self._port is None:
            raise RuntimeError("EmbeddedSftpServer is not started")
        return self._port

    @property
    def host_key(self) -> str:
        """The server's public host key, ``"ssh-ed25519 AAAA…"`` (known once started)."""
        if self._host_key_line is None:
            raise RuntimeError("EmbeddedSftpServer is not started")
        return self._host_key_line

    @property
    def client_key_file(self) -> Path:
        """Private key file the client (the SFTP hook) logs in with."""
        return self.keys_dir / CLIENT_KEY_NAME

    def airflow_connection(self) -> dict[str, Any]:
        """Airflow connection (JSON form, e.g. for ``AIRFLOW_CONN_<ID>``) pointing at this server."""
        return sftp_connection(self.host, self.port, self.username, self.client_key_file, self.host_key)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> EmbeddedSftpServer:
        """Generate/load keys, start the loop thread and return once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("EmbeddedSftpServer already started")
        self.root.mkdir(parents=True, exist_ok=True)
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        host_key = _load_or_create_key(self.keys_dir / HOST_KEY_NAME, "embedded-sftp-host")
        client_key = _load_or_create_key(self.client_key_file, "embedded-sftp-client")
        self._host_key_line = _public_line(host_key)

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="embedded-sftp", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        future = asyncio.run_coroutine_threadsafe(self._listen(host_key, client_key), loop)
        try:
            future.result(timeout=30)
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def stop(self) -> None:
        """Stop listening, drop open sessions and end the loop thread. Safe to call twice."""
        if self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
        try:
            future.result(timeout=10)
        finally:
            self._shutdown_loop()

    def __enter__(self) -> EmbeddedSftpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def sftp_server(self, chan: Any, chroot: str) -> Any:
        """The ``asyncssh.SFTPServer`` of one session; tests override it to inject faults."""
        import asyncssh

        # asyncssh's virtual chroot: "/" and relative paths both map into root.
        return asyncssh.SFTPServer(chan, chroot=chroot)

    # -- internals (run on the loop thread) -------------------------------------------------------

    async def _listen(self, host_key: Any, client_key: Any) -> None:
        import asyncssh

        # asyncssh logs every channel open/close at INFO: noise in demo and test output.
        asyncssh.set_log_level(logging.WARNING)
        asyncssh.set_sftp_log_level(logging.WARNING)

        authorized = asyncssh.import_authorized_keys(_public_line(client_key))
        username = self.username
        connections = self._connections
        chroot = str(self.root.resolve())

        class _Server(asyncssh.SSHServer):
            """Key-only auth for one user; tracks connections so stop() can close them."""

            def __init__(self) -> None:
                self._conn: Any = None

            def connection_made(self, conn: Any) -> None:
                self._conn = conn
                connections.add(conn)

            def connection_lost(self, exc: Exception | None) -> None:
                connections.discard(self._conn)

            def begin_auth(self, user: str) -> bool:
                # Another user gets no authorized keys at all, so every key is refused.
                if user == username:
                    self._conn.set_authorized_keys(authorized)
                return True

            def password_auth_supported(self) -> bool:
                return False

            def kbdint_auth_supported(self) -> bool:
                return False

        def sftp_factory(chan: Any) -> asyncssh.SFTPServer:
            return self.sftp_server(chan, chroot)

        self._acceptor = await asyncssh.listen(
            self.host,
            self._requested_port,
            server_host_keys=[host_key],
            server_factory=_Server,
            sftp_factory=sftp_factory,
            allow_scp=False,
            agent_forwarding=False,
            allow_pty=False,
            x11_forwarding=False,
        )
        self._port = self._acceptor.get_port()

    async def _close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        for conn in list(self._connections):
            conn.close()
        for conn in list(self._connections):
            await conn.wait_closed()
        self._connections.clear()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def _cancel_rest() -> None:
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(_cancel_rest(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = None


def _write_conn_file(path: Path, conn: dict[str, Any]) -> None:
    """Write the connection JSON atomically: whoever polls for the file never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(conn, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description="Embedded SFTP server for the sandbox backend.")
    parser.add_argument("--root", type=Path, required=True, help="directory served (SFTP root)")
    parser.add_argument("--keys", type=Path, required=True, help="directory for host/client keys")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2222, help="0 picks a free port")
    parser.add_argument("--username", default="backend")
    parser.add_argument("--conn-file", type=Path, help="write the Airflow connection JSON here")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    server = EmbeddedSftpServer(args.root, args.keys, host=args.host, port=args.port, username=args.username)
    with server:
        if args.conn_file is not None:
            _write_conn_file(args.conn_file, server.airflow_connection())
        print(f"embedded sftp listening on {server.host}:{server.port}", flush=True)
        # wait() with a timeout keeps the main thread responsive to signals.
        while not stop.wait(timeout=1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
