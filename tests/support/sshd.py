"""A throw-away OpenSSH server (``/usr/sbin/sshd``) for integration tests.

Everything lives in ``base_dir``: host key, client key, authorized_keys, sshd_config, pid
file, the log (``sshd.log``) and the served directory (``root/``). The server listens on a
free 127.0.0.1 port, accepts only the generated client key for the current user and only
runs ``internal-sftp``, starting in ``root`` so relative paths land there.

``ChrootDirectory`` is not used on purpose: it needs a root-owned path chain outside /tmp,
which pytest's tmp dirs are not; ``internal-sftp -d`` gives the same relative-path layout.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from sandbox.airflow_services import descendants as _descendants
from sandbox.airflow_services import free_port
from sandbox.sftp_server import sftp_connection

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
INSTALL_HINT = "OpenSSH server missing: apt-get install -y openssh-server"


def _keygen(path: Path, comment: str) -> str:
    """Generate an ed25519 key pair at ``path``; return the public ``"ssh-ed25519 AAAA…"``."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    key_type, key_b64 = path.with_name(path.name + ".pub").read_text().split()[:2]
    return f"{key_type} {key_b64}"


class Sshd:
    """A running ``sshd -D -e``; use :func:`start_sshd` or ``Sshd(base_dir).start()``."""

    host = "127.0.0.1"

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.root = self.base_dir / "root"
        self.username = getpass.getuser()
        self.host_key_file = self.base_dir / "ssh_host_ed25519_key"
        self.client_key_file = self.base_dir / "client_ed25519_key"
        self.authorized_keys_file = self.base_dir / "authorized_keys"
        self.config_file = self.base_dir / "sshd_config"
        self.pid_file = self.base_dir / "sshd.pid"
        self.log_file = self.base_dir / "sshd.log"
        self.port = 0
        self.host_key = ""
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> Sshd:
        """Generate keys and config, start sshd and return once it has sent its SSH banner."""
        if not SSHD.exists():
            raise RuntimeError(f"{SSHD} not found. {INSTALL_HINT}")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        # sshd refuses to start without its privilege-separation directory.
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)

        self.host_key = _keygen(self.host_key_file, "test-sshd-host")
        client_pub = _keygen(self.client_key_file, "test-sshd-client")
        self.authorized_keys_file.write_text(client_pub + "\n")

        # The port is picked before sshd binds it, so another process may grab it meanwhile:
        # retry with a fresh port when sshd dies early.
        last_error: RuntimeError | None = None
        for _ in range(3):
            self.port = free_port()
            self._write_config()
            try:
                self._spawn_and_wait(timeout)
                return self
            except RuntimeError as exc:
                last_error = exc
                self.stop()
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Kill sshd's process group (listener and any session children) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # Per-connection children call setsid(), so they are outside the group: end them first,
        # while the listener is still there to reap them (else they linger as zombies of PID 1).
        children = _descendants(proc.pid)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while children and time.monotonic() < deadline:
            children = [pid for pid in children if Path(f"/proc/{pid}").exists()]
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> Sshd:
        return self if self._proc is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- Airflow connection ------------------------------------------------------------------------

    def airflow_connection(self, **overrides: Any) -> dict[str, Any]:
        """Connection JSON for this server. ``overrides`` replace top-level keys; ``extra=`` merges.

        An ``extra`` override value of ``None`` removes that key (e.g. ``extra={"host_key": None}``).
        """
        conn = sftp_connection(self.host, self.port, self.username, self.client_key_file, self.host_key)
        extra_overrides = overrides.pop("extra", None) or {}
        conn.update(overrides)
        for key, value in extra_overrides.items():
            if value is None:
                conn["extra"].pop(key, None)
            else:
                conn["extra"][key] = value
        return conn

    def airflow_conn_env(self, conn_id: str, **overrides: Any) -> tuple[str, str]:
        """``("AIRFLOW_CONN_<ID>", json)`` ready for ``monkeypatch.setenv``."""
        return f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(self.airflow_connection(**overrides))

    # -- internals ------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        # sshd_config and internal-sftp's own argument splitting do not agree on quoting.
        if any(ch.isspace() for ch in str(self.base_dir)):
            raise RuntimeError(f"sshd base_dir must not contain whitespace: {self.base_dir}")
        lines = [
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.host_key_file}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys_file}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            f"AllowUsers {self.username}",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            *self._sftp_lines(),
        ]
        self.config_file.write_text("\n".join(lines) + "\n")

    def _sftp_lines(self) -> list[str]:
        """How a session is confined: here only its start directory (see the module docstring)."""
        return [f"ForceCommand internal-sftp -d {self.root}"]

    def _spawn_and_wait(self, timeout: float) -> None:
        # Validate the config first: a clear message instead of a dead process.
        check = subprocess.run([str(SSHD), "-t", "-f", str(self.config_file)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t rejected {self.config_file}: {check.stderr.strip()}")
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(SSHD), "-f", str(self.config_file), "-D", "-e"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # own process group: stop() kills session children too
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"sshd exited with {self._proc.returncode}; log {self.log_file}:\n{self._log_tail()}"
                )
            if self._banner_ok():
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not answer on port {self.port} in {timeout}s:\n{self._log_tail()}")

    def _banner_ok(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                return sock.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_sshd(base_dir: Path) -> Sshd:
    """Start an sshd for tests; the result is also a context manager that stops it."""
    return Sshd(base_dir).start()


class LeastPrivilegeSshd(Sshd):
    """An sshd set up as a backend should be: the SFTP account is an unprivileged user
    (``nobody`` by default) locked into a ``ChrootDirectory`` that is owned by root and not
    writable by it; only the folders handed out with :meth:`provision` are its own.

    Needs root (``ChrootDirectory`` and switching users do), and a chroot path owned by root and
    writable by nobody else on every component, which pytest's tmp dirs under ``/tmp`` are not:
    the chroot and the authorized keys (read as that user) live in a fresh directory under
    ``chroot_parent`` (default ``/run``), removed by :meth:`stop`. Keys, config and log stay in
    ``base_dir``."""

    def __init__(self, base_dir: Path, *, user: str = "nobody", chroot_parent: Path = Path("/run")) -> None:
        import pwd
        import tempfile

        super().__init__(base_dir)
        account = pwd.getpwnam(user)
        self.username, self.uid, self.gid = user, account.pw_uid, account.pw_gid
        self.jail = Path(tempfile.mkdtemp(prefix="order-integration-sftp-", dir=chroot_parent))
        self.root = self.jail / "root"
        self.authorized_keys_file = self.jail / "authorized_keys"

    @staticmethod
    def available() -> str | None:
        """Why this server cannot run here (``None`` when it can)."""
        if os.geteuid() != 0:
            return "ChrootDirectory and a separate SFTP user need sshd to run as root"
        return None

    def start(self, timeout: float = 15.0) -> LeastPrivilegeSshd:
        self.jail.chmod(0o755)
        self.root.mkdir(mode=0o755, exist_ok=True)
        super().start(timeout)
        self.authorized_keys_file.chmod(0o644)
        return self

    def stop(self) -> None:
        import shutil

        super().stop()
        shutil.rmtree(self.jail, ignore_errors=True)

    def provision(self, *folders: str, uid: int | None = None) -> list[Path]:
        """Create ``folders`` (relative to the chroot) owned by the SFTP user (or by ``uid``,
        e.g. another store's account), mode 0755: the only places that user may write."""
        made = []
        for folder in folders:
            path = self.root / folder
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, self.uid if uid is None else uid, self.gid if uid is None else uid)
            path.chmod(0o755)
            made.append(path)
        return made

    def _sftp_lines(self) -> list[str]:
        return [f"ChrootDirectory {self.root}", "ForceCommand internal-sftp -d /"]
