"""Writing straight to a plain TCP connection's socket, beside Twisted: `os.sendfile`.

A response body read from a file need not pass through Python at all on a plain TCP
connection: `os.sendfile` moves it from the page cache to the socket. Twisted's transport
offers no hook for a writer of its own, so a `SocketWriter` holds a duplicate of the
socket's descriptor and registers that with the reactor as a write descriptor while it
waits for room (the reactor keys its registrations by descriptor number, so the
transport's own registrations are not disturbed). Bytes must not be written through the
transport and through the writer at the same time: the writer sends only once the
transport's own buffer is empty (`transport_pending`), and the caller writes nothing
through the transport until the writer is closed.

The duplicate keeps the socket open: it is closed before the transport closes the
connection (`close`), or the client would see no close until it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.python.failure import Failure


def sendfile_transport(transport: object) -> tcp.Server | None:
    """The transport, if it is a plain TCP server connection `os.sendfile` can write to."""
    if type(transport) is tcp.Server and hasattr(os, "sendfile"):
        return transport
    return None


def transport_pending(transport: tcp.Server) -> int:
    """Bytes written through the transport and not yet handed to the kernel."""
    connection: Any = transport  # abstract.FileDescriptor's two write buffers
    pending: int = len(connection.dataBuffer) - connection.offset + connection._tempDataLen
    return pending


class SocketWriter:
    """Sends to a TCP transport's socket through a duplicate descriptor (an
    IWriteDescriptor to the reactor, which asks no more than its four methods).

    `wait()` asks the reactor to call `writable` once the socket has room (level
    triggered: again and again while it has, until `rest()`); `lost(reason)` is called
    if the reactor finds the socket broken while it waits. `close()` is safe to call
    more than once and ends both.
    """

    def __init__(
        self,
        reactor: Any,  # IReactorFDSet
        transport: tcp.Server,
        writable: Callable[[], None],
        lost: Callable[[Failure], None],
    ) -> None:
        self._reactor = reactor
        self._fd = os.dup(transport.fileno())
        self._writable = writable
        self._lost = lost
        self._waiting = False

    # -- IWriteDescriptor: called by the reactor while we wait ----------------------------

    def fileno(self) -> int:
        return self._fd

    def doWrite(self) -> None:
        self._writable()

    def logPrefix(self) -> str:
        return "SocketWriter"

    def connectionLost(self, reason: Failure) -> None:
        self._waiting = False  # the reactor has removed us already
        self._lost(reason)

    # -- for the caller -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def wait(self) -> None:
        if not self._waiting and self._fd >= 0:
            self._waiting = True
            self._reactor.addWriter(self)

    def rest(self) -> None:
        if self._waiting:
            self._waiting = False
            self._reactor.removeWriter(self)

    def send(self, data: memoryview) -> int:
        """Bytes of `data` the socket took; 0 when it is full. OSError when broken."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0

    def sendfile(self, source: int, offset: int, count: int) -> int | None:
        """Bytes of `source` at `offset` the socket took (up to `count`); None when it is
        full; 0 when `source` ends before `offset`. OSError when broken."""
        try:
            return os.sendfile(self._fd, source, offset, count)
        except BlockingIOError:
            return None

    def close(self) -> None:
        """Stop waiting and let go of the duplicate descriptor (removed from the reactor
        first: epoll would go on reporting a closed duplicate of an open socket)."""
        self.rest()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
