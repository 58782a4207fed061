"""An embedded SFTP server whose disk fills up: writes beyond ``capacity`` bytes are refused.

The refusal is what a real server sends on ``ENOSPC``: an SFTP failure status with the
message ``No space left on device``. ``capacity`` counts the bytes written over all sessions;
set it to ``None`` (space freed) and later writes succeed again.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sandbox.sftp_server import EmbeddedSftpServer

NO_SPACE = "No space left on device"


class DiskFullSftpServer(EmbeddedSftpServer):
    """:class:`EmbeddedSftpServer` with a write quota (see the module docstring)."""

    def __init__(self, root: Path, keys_dir: Path, *, capacity: int | None, **kwargs: Any) -> None:
        super().__init__(root, keys_dir, **kwargs)
        self.capacity = capacity
        self.written = 0
        self.refused = 0
        self._quota_lock = threading.Lock()

    def _take(self, size: int) -> bool:
        with self._quota_lock:
            if self.capacity is not None and self.written + size > self.capacity:
                self.refused += 1
                return False
            self.written += size
            return True

    def sftp_server(self, chan: Any, chroot: str) -> Any:
        import asyncssh

        owner = self

        class _QuotaSftpServer(asyncssh.SFTPServer):
            def write(self, file_obj: object, offset: int, data: bytes) -> Any:
                if not owner._take(len(data)):
                    raise asyncssh.SFTPFailure(NO_SPACE)
                return super().write(file_obj, offset, data)

        return _QuotaSftpServer(chan, chroot=chroot)
