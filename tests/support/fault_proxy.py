"""A TCP proxy that drops connections on command, for transport fault tests.

``FaultProxy(host, port)`` listens on a free 127.0.0.1 port and forwards every connection
to the real server, byte for byte. :meth:`FaultProxy.cut_after` arms a one-shot cut: once
``nbytes`` more bytes were forwarded in one direction (``"up"``: client → server, ``"down"``:
server → client), on whichever connection carries them, that connection forwards nothing
more and both its sockets are closed (with a TCP reset by default, like a dropped link or a
killed NAT entry). ``cut_after(0, ...)`` cuts at the next read in that direction. Later
connections go through untouched, so a retry can succeed.

Each connection is pumped by one thread (``selectors`` over both sockets); the proxy never
looks at the bytes, so it works for SSH/SFTP as for any TCP protocol.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from types import TracebackType

_CHUNK = 64 * 1024
DIRECTIONS = ("up", "down")


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``; cut connections on command."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        #: bytes forwarded so far, per direction, over all connections
        self.forwarded = {"up": 0, "down": 0}
        #: connections cut so far
        self.cuts = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._rule: dict[str, object] | None = None  # {"direction", "left", "reset"}
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._cut_event = threading.Event()

    # -- control -------------------------------------------------------------------------------

    def cut_after(self, nbytes: int, direction: str = "up", *, reset: bool = True) -> None:
        """Arm a one-shot cut after ``nbytes`` more bytes in ``direction`` (see the module doc)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        with self._lock:
            self._rule = {"direction": direction, "left": nbytes, "reset": reset}
            self._cut_event.clear()

    def disarm(self) -> None:
        with self._lock:
            self._rule = None

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._rule is not None

    def wait_cut(self, timeout: float = 10.0) -> bool:
        """Whether the armed cut happened within ``timeout`` seconds."""
        return self._cut_event.wait(timeout)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(16)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, "fault-proxy-accept")
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            _close(sock, reset=False)
        for thread in self._threads:
            thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client, reset=True)
                continue
            for sock in (client, server):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._open.update((client, server))
            self._spawn(self._pump, f"fault-proxy-{self.connections}", client, server)

    def _allowance(self, direction: str, size: int) -> tuple[int, bool, bool]:
        """How many of ``size`` bytes may pass in ``direction``; whether to cut after, with a reset."""
        with self._lock:
            rule = self._rule
            if rule is None or rule["direction"] != direction:
                self.forwarded[direction] += size
                return size, False, False
            left = int(rule["left"])  # type: ignore[call-overload]
            if size < left:
                rule["left"] = left - size
                self.forwarded[direction] += size
                return size, False, False
            self._rule = None
            self.cuts += 1
            self.forwarded[direction] += left
            return left, True, bool(rule["reset"])

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: (server, "up"), server: (client, "down")}
        selector = selectors.DefaultSelector()
        for sock in peers:
            selector.register(sock, selectors.EVENT_READ)
        reset = False
        try:
            while not self._stopping.is_set():
                for key, _events in selector.select(timeout=0.2):
                    source = key.fileobj
                    target, direction = peers[source]  # type: ignore[index]
                    try:
                        data = source.recv(_CHUNK)  # type: ignore[union-attr]
                    except OSError:
                        return
                    if not data:
                        with contextlib.suppress(OSError):
                            target.shutdown(socket.SHUT_WR)
                        selector.unregister(source)
                        if not selector.get_map():
                            return
                        continue
                    allowed, cut, reset = self._allowance(direction, len(data))
                    try:
                        if allowed:
                            target.sendall(data[:allowed])
                    except OSError:
                        return
                    if cut:
                        self._cut_event.set()
                        return
        finally:
            selector.close()
            for sock in (client, server):
                _close(sock, reset=reset)
            with self._lock:
                self._open.difference_update((client, server))


def _close(sock: socket.socket, *, reset: bool) -> None:
    with contextlib.suppress(OSError):
        if reset:  # linger 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
