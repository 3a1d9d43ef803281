"""Writing a file straight to a TCP connection's socket, beside Twisted.

A response body read from a file need not pass through Python at all on a plain TCP
connection: `os.sendfile` moves it from the page cache to the socket (`SocketWriter`). Over
TLS (`TlsWriter`), a piece is read into a buffer kept for the purpose, encrypted by the
connection's own TLS state in one call, and the records sent to the socket from a second
such buffer: no bytes objects, no 16 KiB slices, no copies into Twisted's write buffer,
except for what the socket does not take at once.

Twisted's transport offers no hook for a writer of its own, so a `SocketWriter` holds a
duplicate of the socket's descriptor and registers that with the reactor as a write
descriptor while it waits for room (the reactor keys its registrations by descriptor
number, so the transport's own registrations are not disturbed). The writer sends only
once what was written through the transport has gone (`ready`), and the caller writes
nothing through the transport until the writer is closed.

The duplicate keeps the socket open: it is closed before the transport closes the
connection (`close`), or the client would see no close until it is.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any, TypeGuard

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL
from twisted.internet import tcp
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

PIECE = 64 * 1024  # plaintext encrypted and sent at once over TLS: at most this is left
# in Twisted's buffer when the socket is full (a slow client holds no more)
_binding = Binding()
_plain = bytearray(PIECE)  # one reactor thread: one pair of buffers for every connection
_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}
_records = _binding.ffi.new("char[]", PIECE + 8 * 1024)  # PIECE's records and their framing


def socket_writer(
    reactor: Any,  # IReactorFDSet
    transport: object,
    writable: Callable[[], None],
    lost: Callable[[Failure], None],
) -> SocketWriter | None:
    """A writer for `transport` if it is plain TCP (sendfile) or TLS over plain TCP;
    None for anything else (memory transports), when out of descriptors, or when the
    Twisted or pyOpenSSL internals read here are not there (a writer that could not see
    what waits in the transport could send out of order; without one, the body's bytes
    go through the transport)."""
    try:
        if _plain_tcp(transport) and hasattr(os, "sendfile"):
            return SocketWriter(reactor, transport, writable, lost)
        if (
            isinstance(transport, TLSMemoryBIOProtocol)
            and _plain_tcp(transport.transport)
            and isinstance(getattr(transport, "_appSendBuffer", None), list)
            and _INTERNALS_TLS.issubset(dir(getattr(transport, "_aggregator", _NoAggregator)))
            and getattr(transport.getHandle(), "_from_ssl", None) is not None
        ):
            return TlsWriter(reactor, transport.transport, writable, lost, transport)
    except OSError:
        pass
    return None


_INTERNALS_TCP = {"dataBuffer", "offset", "_tempDataLen"}  # abstract.FileDescriptor's
_INTERNALS_TLS = {"_buffer"}  # tls._AggregateSmallWrites'


class _NoAggregator:
    _buffer: list[bytes] = []


def _plain_tcp(transport: object) -> TypeGuard[tcp.Server]:
    return type(transport) is tcp.Server and _INTERNALS_TCP.issubset(dir(transport))


def transport_pending(transport: tcp.Server) -> int:
    """Bytes written through the transport and not yet handed to the kernel."""
    connection: Any = transport  # abstract.FileDescriptor's two write buffers
    pending: int = len(connection.dataBuffer) - connection.offset + connection._tempDataLen
    return pending


class SocketWriter:
    """Sends a file to a plain TCP transport's socket through a duplicate descriptor (an
    IWriteDescriptor to the reactor, which asks no more than its four methods).

    `wait()` asks the reactor to call `writable` once the socket has room (level
    triggered: again and again while it has, until `rest()`); `lost(reason)` is called
    if the reactor finds the socket broken while it waits. `close()` is safe to call
    more than once and ends both. The sends raise OSError when the socket is broken.
    """

    def __init__(
        self,
        reactor: Any,
        transport: tcp.Server,
        writable: Callable[[], None],
        lost: Callable[[Failure], None],
    ) -> None:
        self._reactor = reactor
        self._tcp = transport
        self._fd = os.dup(transport.fileno())
        self._writable = writable
        self._lost = lost
        self._waiting = False
        self._copying = False  # os.sendfile refused the file: pieces read and written

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

    def wait(self) -> None:
        if not self._waiting and self._fd >= 0:
            self._waiting = True
            self._reactor.addWriter(self)

    def rest(self) -> None:
        if self._waiting:
            self._waiting = False
            self._reactor.removeWriter(self)

    def ready(self) -> bool:
        """Nothing written through the transport is still waiting to go first."""
        return not transport_pending(self._tcp)

    def send(self, data: memoryview) -> tuple[int, bool]:
        """(bytes of `data` the socket took, whether it is full now)."""
        taken = self._write(data)
        return taken, taken < len(data)

    def send_file(self, source: int, offset: int, count: int) -> tuple[int, bool]:
        """(bytes of `source` at `offset` the socket took, up to `count`; whether it is
        full now). (0, False) when `source` ends before `offset`."""
        if not self._copying:
            try:
                return os.sendfile(self._fd, source, offset, count), False
            except BlockingIOError:
                return 0, True
            except OSError as e:
                if e.errno not in _NO_SENDFILE:
                    raise
                self._copying = True  # a file system without sendfile: read and write
        view = memoryview(_plain)[: min(count, PIECE)]
        got = os.preadv(source, [view], offset)
        return self.send(view[:got]) if got else (0, False)

    def close(self) -> None:
        """Stop waiting and let go of the duplicate descriptor (removed from the reactor
        first: epoll would go on reporting a closed duplicate of an open socket)."""
        self.rest()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _write(self, data: memoryview) -> int:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0


class TlsWriter(SocketWriter):
    """Sends a file over TLS (`TLSMemoryBIOProtocol` over plain TCP), piece by piece.

    Encrypts with the connection's `OpenSSL.SSL.Connection`, reads the records out of its
    memory BIO (pyOpenSSL's `_from_ssl`: no public accessor; through cryptography's
    binding, as `tls.contexts` does for the context) and sends them to the socket. What
    the socket does not take goes to the TCP transport's buffer, in order, and the socket
    counts as full; nothing is sent beside that buffer, the TLS layer's pending writes or
    its small-write aggregator while they hold anything (`ready`).
    """

    def __init__(
        self,
        reactor: Any,
        transport: tcp.Server,
        writable: Callable[[], None],
        lost: Callable[[Failure], None],
        tls: Any,
    ) -> None:
        super().__init__(reactor, transport, writable, lost)
        self._tls = tls
        self._connection: SSL.Connection = tls.getHandle()
        self._bio = self._connection._from_ssl
        self._full = False  # the socket refused some of this piece's records

    def ready(self) -> bool:
        aggregator = getattr(self._tls, "_aggregator", None)
        waiting = getattr(aggregator, "_buffer", None) or self._tls._appSendBuffer
        return not waiting and super().ready()

    def send_file(self, source: int, offset: int, count: int) -> tuple[int, bool]:
        view = memoryview(_plain)[: min(count, PIECE)]
        got = os.preadv(source, [view], offset)
        return self.send(view[:got]) if got else (0, False)

    def send(self, data: memoryview) -> tuple[int, bool]:
        # pyOpenSSL sets SSL_MODE_ENABLE_PARTIAL_WRITE: a call encrypts one record (16 KiB),
        # which is moved out of the BIO at once (a memory BIO keeps the largest size it
        # ever held, per connection), and the records go to the socket in one write.
        self._full, done, filled, rest = False, 0, 0, None
        try:
            while done < len(data):
                done += self._connection.send(data[done:])
                filled = self._drain(filled)
        except SSL.WantReadError:  # the TLS layer must read first: Twisted queues the rest
            rest = bytes(data[done:])
        except SSL.Error as e:
            raise ConnectionError(f"TLS: {e}") from e
        self._out(self._drain(filled))
        if rest is not None:
            self._full = True
            self._tls.write(rest)  # after the records before it
        return len(data), self._full

    def _drain(self, filled: int) -> int:
        """Move what the BIO holds into the record buffer after `filled` bytes (sending the
        buffer when it is full); how much it holds now."""
        while True:
            if filled == len(_records):
                self._out(filled)
                filled = 0
            size = _binding.lib.BIO_read(self._bio, _records + filled, len(_records) - filled)
            if size <= 0:
                return filled
            filled += size

    def _out(self, filled: int) -> None:
        """Send the record buffer's first `filled` bytes; what the socket does not take
        (and everything once it has refused some) to the TCP transport's buffer."""
        if not filled:
            return
        records = _binding.ffi.buffer(_records, filled)
        sent = 0 if self._full else self._write(memoryview(records))
        if sent < filled:
            self._full = True
            self._tcp.write(records[sent:])
