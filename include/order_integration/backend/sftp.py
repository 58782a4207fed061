"""Atomic file transfer to the backend's SFTP server, through Airflow's ``SFTPHook``.

All work of one :meth:`SftpBackend.session` goes over ONE SSH connection
(``SFTPHook.get_managed_conn()``): every other hook method opens its own connection.

Uploads are atomic for the backend's readers: the bytes go to ``remote_dir/.NAME.part``
and are then renamed with ``posix-rename@openssh.com`` onto ``remote_dir/NAME``, which
replaces an existing file in one step. A reader polling ``remote_dir`` for ``*.csv`` never
sees a half-written file.

Safety: the connection must pin the server's host key (``host_key`` extra, with its type,
e.g. ``"ssh-ed25519 AAAA…"``) and must not disable host key checking. This is checked
before any network traffic.

Retries: ``SSHHook.get_conn`` retries *every* failure with tenacity (3–5 s sleeps), a
refused host key or login included, since its ``Retrying`` has no retry predicate. So the
first attempt is made with ``conn_retry_attempts=1``; a host key or login failure there is
raised at once as :class:`BackendAuthError`. Only a transient failure (refused, timeout,
reset) waits 3–5 s and hands the remaining attempts to the hook's own tenacity loop (which,
in the rare case that the server comes back with a wrong key, may retry that too: bounded
by ``conn_retry_attempts``).
"""

from __future__ import annotations

import binascii
import logging
import os
import posixpath
import random
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from order_integration.exceptions import BackendAuthError, BackendError, ConfigError, OrderIntegrationError

if TYPE_CHECKING:
    from airflow.providers.sftp.hooks.sftp import SFTPHook
    from paramiko import SFTPClient

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Used when neither the caller nor the connection's ``conn_timeout`` extra sets one:
#: paramiko's default is to wait for the TCP connect forever.
DEFAULT_CONN_TIMEOUT = 30
#: Socket timeout of the SFTP channel, so a stalled server fails the task instead of hanging it.
DEFAULT_IO_TIMEOUT = 120.0
#: Pause after a transient failure of the first (single) attempt, as the hook's tenacity waits.
FIRST_RETRY_WAIT = 3.0
#: Bytes per SFTP write request (paramiko's and OpenSSH's usual size) and requests in flight.
WRITE_CHUNK = 32768
WRITE_WINDOW = 64
#: Largest backend file (a status or stock file) :meth:`SftpSession.read_bytes` loads into
#: memory: 64 MiB is about a million status lines, far above any real drop, and well inside a
#: worker's memory. A bigger file is refused unread (:class:`FileTooLarge`) and goes to
#: ``error/`` with the reason; it never exhausts a worker.
MAX_READ_BYTES = 64 * 1024 * 1024
_READ_CHUNK = 1024 * 1024

_TRUE = {"true", "1", "yes", "on"}
_HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)


class FileTooLarge(OrderIntegrationError):
    """A backend file is larger than the read limit: it is not loaded (see :data:`MAX_READ_BYTES`).

    Not a transport failure: the caller moves the file to ``error/`` with :attr:`reason`."""

    def __init__(self, path: str, size: int, limit: int, *, growing: bool = False) -> None:
        self.path, self.size, self.limit = path, size, limit
        self.reason = (
            f"{posixpath.basename(path)}: the file is {'at least ' if growing else ''}{size:,} bytes, "
            f"more than the {limit:,}-byte limit for a backend file; it was not read (split it into "
            "smaller files)"
        )
        super().__init__(self.reason)


def _is_true(value: Any) -> bool:
    return str(value).strip().lower() in _TRUE


def validate_connection_extra(conn_id: str, extra: dict[str, Any]) -> None:
    """Refuse a connection that would not verify the server's identity.

    :raises ConfigError: naming ``conn_id`` and the offending extra key.
    """
    for flag in ("no_host_key_check", "ignore_hostkey_verification", "allow_host_key_change"):
        if _is_true(extra.get(flag, False)):
            raise ConfigError(
                f"backend connection {conn_id!r}: extra {flag!r} is true; host key verification must "
                "stay on (remove it and pin the server key in 'host_key')"
            )
    host_key = extra.get("host_key")
    if not host_key or not str(host_key).strip():
        raise ConfigError(
            f"backend connection {conn_id!r}: extra 'host_key' is missing; pin the server's public host "
            'key, e.g. "ssh-ed25519 AAAA…" (ssh-keyscan -t ed25519 HOST)'
        )
    parts = str(host_key).split()
    # A bare base64 key is silently parsed as RSA by the hook and then never matches.
    if len(parts) < 2 or parts[0] not in _HOST_KEY_TYPES:
        raise ConfigError(
            f"backend connection {conn_id!r}: extra 'host_key' must be '<type> <base64>' with type one of "
            f"{', '.join(_HOST_KEY_TYPES)}; got {str(host_key)[:40]!r}"
        )
    try:
        binascii.a2b_base64(parts[1], strict_mode=True)
    except binascii.Error as exc:
        raise ConfigError(f"backend connection {conn_id!r}: extra 'host_key' is not valid base64") from exc
    key_file = extra.get("key_file")
    if key_file and not os.access(str(key_file), os.R_OK):
        raise ConfigError(
            f"backend connection {conn_id!r}: extra 'key_file' {key_file!r} does not exist or is not readable"
        )


class _WriteReplies:
    """Owner of pipelined SFTP write requests: paramiko hands it each reply (``_async_response``)."""

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.error: OSError | None = None

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        from paramiko.sftp import CMD_STATUS, SFTP_OK

        self.pending.discard(num)
        if self.error is not None:
            return
        if t != CMD_STATUS:
            self.error = OSError(f"unexpected SFTP reply type {t} to a write")
            return
        code = msg.get_int()
        if code != SFTP_OK:
            self.error = OSError(f"the server refused a write: {msg.get_text()} (SFTP status {code})")

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


class _ClosingQuietly:
    """Enter ``cm`` (the hook's managed SFTP channel); an error while closing it — the connection
    is already gone — is logged, not raised: it would replace the error that broke the session
    (a raw ``EOFError`` instead of the :class:`BackendError` naming the file), or fail work that
    is done."""

    def __init__(self, cm: Any, conn_id: str) -> None:
        self._cm = cm
        self._conn_id = conn_id

    def __enter__(self) -> Any:
        return self._cm.__enter__()

    def __exit__(self, *exc_info: Any) -> bool:
        try:
            return bool(self._cm.__exit__(*exc_info))
        except Exception as close_error:
            if close_error is exc_info[1]:
                raise  # the session's own error, passed through the context manager
            log.warning("backend %s: closing the SFTP channel failed: %r (the connection is gone)",
                        self._conn_id, close_error)
            return False


class SftpSession:
    """File operations over one open SFTP channel; obtained from :meth:`SftpBackend.session`.

    Paths are as the server sees them: relative paths start in the login's start directory.
    Transport failures raise :class:`BackendError`; a missing path raises ``FileNotFoundError``
    where documented.
    """

    def __init__(self, sftp: SFTPClient, conn_id: str, *, max_read_bytes: int | None = None) -> None:
        self._sftp = sftp
        self._conn_id = conn_id
        #: ``None``: :data:`MAX_READ_BYTES` as it is at read time.
        self.max_read_bytes = max_read_bytes

    @property
    def client(self) -> SFTPClient:
        """The underlying paramiko ``SFTPClient`` (escape hatch; prefer the methods below)."""
        return self._sftp

    def _call(self, what: str, func: Callable[[], T]) -> T:
        """Run one SFTP operation, mapping transport failures to :class:`BackendError`."""
        import paramiko

        try:
            return func()
        except FileNotFoundError:
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # OSError covers socket errors/timeouts and SFTP status errors (permission denied,
            # failure); none of them is a programming error of the caller.
            raise BackendError(f"backend {self._conn_id}: {what} failed: {exc!r}") from exc

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists (file or directory)."""

        def _stat() -> bool:
            try:
                self._sftp.stat(path)
            except FileNotFoundError:
                return False
            return True

        return self._call(f"stat {path}", _stat)

    def listdir(self, remote_dir: str) -> list[str]:
        """Names in ``remote_dir``, sorted (``.part`` files of running uploads included).

        :raises FileNotFoundError: if ``remote_dir`` does not exist.
        """
        return sorted(self._call(f"listdir {remote_dir}", lambda: self._sftp.listdir(remote_dir)))

    def read_bytes(self, path: str) -> bytes:
        """Whole content of ``path``, at most :attr:`max_read_bytes` (default :data:`MAX_READ_BYTES`).

        The size is checked before reading (``stat``) and again while reading (a file still
        growing), so memory never holds more than the limit plus one chunk.

        :raises FileNotFoundError: if ``path`` does not exist.
        :raises FileTooLarge: if the file is larger than the limit (nothing kept in memory).
        """
        limit = MAX_READ_BYTES if self.max_read_bytes is None else self.max_read_bytes

        def _read() -> bytes:
            size = self._sftp.stat(path).st_size or 0
            if size > limit:
                raise FileTooLarge(path, size, limit)
            chunks: list[bytes] = []
            total = 0
            with self._sftp.open(path, "rb") as fh:
                fh.prefetch(size)  # pipelined reads instead of one round trip per 32 KB
                while True:
                    chunk = fh.read(min(_READ_CHUNK, limit + 1 - total))
                    if not chunk:
                        return b"".join(chunks)
                    chunks.append(chunk)
                    total += len(chunk)
                    if total > limit:  # it grew after the stat
                        raise FileTooLarge(path, total, limit, growing=True)

        return self._call(f"read {path}", _read)

    def makedirs(self, path: str) -> None:
        """``mkdir -p path``; a concurrent creator of the same directory is not an error."""
        if path in ("", ".", "/"):
            return
        current = "/" if path.startswith("/") else ""
        for part in [p for p in path.split("/") if p and p != "."]:
            current = posixpath.join(current, part) if current else part
            if not self.exists(current):
                self._call(f"mkdir {current}", lambda d=current: self._mkdir_tolerant(d))

    def _mkdir_tolerant(self, path: str) -> None:
        try:
            self._sftp.mkdir(path)
        except OSError:
            # Someone else may have created it between our stat and mkdir.
            try:
                self._sftp.stat(path)
            except OSError:
                pass
            else:
                return
            raise

    def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` atomically, replacing ``dst`` (posix-rename@openssh.com).

        :raises FileNotFoundError: if ``src`` does not exist.
        """
        self._call(f"rename {src} -> {dst}", lambda: self._sftp.posix_rename(src, dst))

    def upload_atomic(
        self, fileobj: BinaryIO, remote_dir: str, name: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> str:
        """Write ``fileobj`` to ``remote_dir/name`` so readers see all of it or nothing.

        Creates ``remote_dir`` if needed, writes ``remote_dir/.name.part`` (size confirmed by a
        stat), then renames it onto ``remote_dir/name``, replacing an older file of that name.
        On failure the ``.part`` file is removed when the connection still allows it.
        ``progress(bytes_sent, size)`` is called after each chunk written (paramiko's callback).

        :returns: the final remote path.
        """
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"upload name must be a plain file name, got {name!r}")
        final = posixpath.join(remote_dir, name) if remote_dir else name
        part = posixpath.join(remote_dir, f".{name}.part") if remote_dir else f".{name}.part"
        self.makedirs(remote_dir)
        try:
            attrs = self._call(f"upload {part}", lambda: self._put_checked(fileobj, part, progress))
            self._call(f"rename {part} -> {final}", lambda: self._sftp.posix_rename(part, final))
        except BaseException:
            self._remove_quietly(part)
            raise
        log.info("backend %s: uploaded %s (%s bytes)", self._conn_id, final, attrs.st_size)
        return final

    def _put_checked(
        self, fileobj: BinaryIO, path: str, progress: Callable[[int, int], None] | None
    ) -> Any:
        """``putfo(fileobj, path, confirm=True)`` that also checks every write's reply.

        paramiko's ``putfo`` pipelines its writes but registers them without an owner, so their
        status replies are dropped: a server refusing a write (disk full, quota) went unnoticed
        but for the final size check, and a refusal in the middle could leave a hole. Here the
        writes stay pipelined (at most :data:`WRITE_WINDOW` in flight) and the first refusal
        fails the upload with the server's message."""
        from paramiko.sftp import CMD_WRITE, int64

        replies = _WriteReplies()
        size = 0
        with self._sftp.open(path, "wb") as fh:
            while chunk := fileobj.read(WRITE_CHUNK):
                replies.pending.add(
                    self._sftp._async_request(replies, CMD_WRITE, fh.handle, int64(size), chunk)
                )
                size += len(chunk)
                while len(replies.pending) > WRITE_WINDOW and replies.error is None:
                    self._sftp._read_response()  # dispatches one reply to its owner
                replies.raise_error()
                if progress is not None:
                    progress(size, 0)
            while replies.pending and replies.error is None:
                self._sftp._read_response()
            replies.raise_error()
        attrs = self._sftp.stat(path)
        if attrs.st_size != size:
            raise OSError(f"size mismatch after upload: the server has {attrs.st_size} bytes of {size} sent")
        return attrs

    def _remove_quietly(self, path: str) -> None:
        try:
            self._sftp.remove(path)
        except Exception:  # best effort: the connection may be the reason we are here
            log.warning("backend %s: could not remove leftover %s", self._conn_id, path, exc_info=True)


class SftpBackend:
    """The backend's SFTP server, reached through the Airflow connection ``conn_id``.

    :param conn_id: Airflow connection (conn_type ``sftp``) with ``host_key`` pinned in extra.
    :param conn_retry_attempts: total connect attempts (default: the hook's default, 3).
        Host key and login failures are never retried on the first attempt.
    :param conn_timeout: TCP/handshake timeout in seconds; default is the connection's
        ``conn_timeout`` extra, else :data:`DEFAULT_CONN_TIMEOUT`.
    :param io_timeout: socket timeout of SFTP operations in seconds (``None``: wait forever).
    :param max_read_bytes: largest file :meth:`SftpSession.read_bytes` loads (default
        :data:`MAX_READ_BYTES`).
    """

    def __init__(
        self,
        conn_id: str,
        *,
        conn_retry_attempts: int | None = None,
        conn_timeout: int | None = None,
        io_timeout: float | None = DEFAULT_IO_TIMEOUT,
        max_read_bytes: int | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.conn_retry_attempts = conn_retry_attempts
        self.conn_timeout = conn_timeout
        self.io_timeout = io_timeout
        self.max_read_bytes = max_read_bytes

    def _make_hook(self) -> SFTPHook:
        """Look the connection up, validate it and build the hook (no network traffic yet)."""
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        try:
            conn = SFTPHook.get_connection(self.conn_id)
        except Exception as exc:
            if type(exc).__name__ == "AirflowNotFoundException":
                raise ConfigError(f"backend connection {self.conn_id!r} is not defined") from exc
            raise
        if not conn.host:
            raise ConfigError(f"backend connection {self.conn_id!r}: 'host' is empty")
        validate_connection_extra(self.conn_id, conn.extra_dejson)
        kwargs: dict[str, Any] = {"ssh_conn_id": self.conn_id}
        if self.conn_retry_attempts is not None:
            kwargs["conn_retry_attempts"] = self.conn_retry_attempts
        if self.conn_timeout is not None:
            kwargs["conn_timeout"] = self.conn_timeout
        import paramiko

        try:
            hook = SFTPHook(**kwargs)
        except (ValueError, paramiko.SSHException) as exc:  # host_key data the hook cannot parse
            raise ConfigError(f"backend connection {self.conn_id!r}: {exc} (check extra 'host_key')") from exc
        if hook.conn_timeout is None:
            hook.conn_timeout = DEFAULT_CONN_TIMEOUT
        return hook

    def _describe(self, hook: SFTPHook) -> str:
        return f"{hook.remote_host}:{hook.port}"

    def _map_connect_error(self, hook: SFTPHook, exc: Exception) -> Exception:
        """Translate a connect failure into the package's errors (permanent vs retryable)."""
        import paramiko

        where = self._describe(hook)
        if isinstance(exc, paramiko.BadHostKeyException) or (
            isinstance(exc, paramiko.SSHException)
            and ("not found in known_hosts" in str(exc) or "no acceptable host key" in str(exc))
        ):
            return BackendAuthError(
                f"backend {self.conn_id}: host key of {where} does not match the pinned host_key "
                "(server key changed, or a man in the middle); if the change is expected, update extra "
                "'host_key' of the connection"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return BackendAuthError(
                f"backend {self.conn_id}: {where} refused the login {hook.username!r} "
                f"(key_file/private_key not authorized): {exc}"
            )
        if isinstance(exc, paramiko.SSHException | EOFError | OSError):
            return BackendError(f"backend {self.conn_id}: cannot connect to {where}: {exc!r}")
        return exc

    def _connect_checked(self, hook: SFTPHook, attempts: int) -> None:
        """Open the hook's SSH client with ``attempts`` tries (hook's tenacity), mapping errors."""
        hook.conn_retry_attempts = attempts
        from airflow.providers.ssh.hooks.ssh import SSHHook

        try:
            # SSHHook.get_conn (not SFTPHook's, which also opens an SFTP channel) caches the
            # connected client on the hook; get_managed_conn() then reuses it.
            SSHHook.get_conn(hook)
        except Exception as exc:
            mapped = self._map_connect_error(hook, exc)
            if mapped is exc:
                raise
            raise mapped from exc

    @contextmanager
    def session(self) -> Iterator[SftpSession]:
        """One SSH connection for a batch of operations; closed on exit.

        :raises ConfigError: connection missing or not pinning the host key (before any traffic).
        :raises BackendAuthError: host key mismatch or login refused (not retried).
        :raises BackendError: server unreachable or the connection broke (retryable).
        """
        hook = self._make_hook()
        total = hook.conn_retry_attempts
        try:
            self._connect_checked(hook, 1)
        except BackendAuthError:
            raise
        except BackendError:
            if total <= 1:
                raise
            # Same spacing as the hook's own tenacity loop (3 s + up to 2 s jitter), which then
            # takes over with the remaining attempts.
            wait = FIRST_RETRY_WAIT + random.uniform(0, 2)
            log.info(
                "backend %s: connect failed, %d more attempt(s), next in %.1f s",
                self.conn_id,
                total - 1,
                wait,
            )
            time.sleep(wait)
            self._connect_checked(hook, total - 1)

        with ExitStack() as stack:
            # Registered first so it runs last: get_managed_conn() closes the client it used,
            # but not when opening the SFTP channel itself failed.
            stack.callback(self._close_client, hook)
            try:
                sftp = stack.enter_context(_ClosingQuietly(hook.get_managed_conn(), self.conn_id))
                if self.io_timeout is not None:
                    sftp.get_channel().settimeout(self.io_timeout)
            except Exception as exc:
                mapped = self._map_connect_error(hook, exc)
                if mapped is exc:
                    raise
                raise mapped from exc
            yield SftpSession(sftp, self.conn_id, max_read_bytes=self.max_read_bytes)

    @staticmethod
    def _close_client(hook: SFTPHook) -> None:
        if hook.client is not None:
            hook.client.close()
            hook.client = None
