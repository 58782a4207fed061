"""Closing an SFTP channel whose connection is gone must not replace the error that matters."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from order_integration.backend.sftp import _ClosingQuietly
from order_integration.exceptions import BackendError

pytestmark = pytest.mark.unit


@contextmanager
def _channel_that_fails_to_close(log: list[str]):
    try:
        yield "channel"
    finally:
        log.append("closing")
        raise EOFError  # what paramiko raises closing a channel over a dropped connection


def test_the_sessions_error_survives_a_failing_close() -> None:
    log: list[str] = []
    with pytest.raises(BackendError, match=r"upload \.part failed"), \
            _ClosingQuietly(_channel_that_fails_to_close(log), "backend_x"):
        raise BackendError("backend backend_x: upload .part failed: EOFError()")
    assert log == ["closing"]


def test_a_failing_close_after_finished_work_is_only_logged(caplog) -> None:
    log: list[str] = []
    with _ClosingQuietly(_channel_that_fails_to_close(log), "backend_x") as channel:
        assert channel == "channel"
    assert log == ["closing"]
    assert "closing the SFTP channel failed" in caplog.text


def test_an_error_of_the_session_itself_is_not_swallowed() -> None:
    @contextmanager
    def fine():
        yield "channel"

    with pytest.raises(KeyError), _ClosingQuietly(fine(), "backend_x"):
        raise KeyError("x")
