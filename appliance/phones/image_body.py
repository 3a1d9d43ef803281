"""The body of an image download: sent while the connection takes it, cut when it stalls.

`downloads.Downloads` decides status, headers and slot, then hands the open file, the
parts to send and the slot to a body, after the response head has been written. A
`TransportBody` writes to a raw transport and is its push producer:

- on a plain TCP connection it sends with `os.sendfile` from the page cache to the
  socket, the multipart heads between the spans, once the head written through the
  transport has gone; over TLS on TCP it encrypts 64 KiB pieces and sends the records
  to the socket itself (`web.socket_writer`), whatever the socket does not take going to
  the transport's buffer;
- on anything else (memory transports in tests) it reads pieces and writes them, a
  bounded batch a reactor turn, and stops at the transport's first pause.

Either way a slow client holds about one transport buffer of memory, not more.

A body of a network with a cap on bytes a second (docs/rollouts.md) sends no more than its
`throttle.Throttle` allows and waits for it on a timer meanwhile, which is not a stall.

No progress for `service.download_stall_seconds` in a row (paused, or the socket full)
means the client stopped reading: the connection is aborted (`download.stalled`).
However the body ends (sent, connection lost, aborted), the file is closed and the slot
released once, the producer unregistered, and the `image.download` line says how it
ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from appliance.config import ServiceSettings
from appliance.model import StoredFile, Zone
from appliance.phones.ranges import ByteRange
from appliance.phones.slots import Slot
from appliance.phones.throttle import Throttle
from appliance.web import SocketWriter, socket_writer

log = Logger(namespace="ucupdates.phone")

CHUNK = 64 * 1024  # bytes read and written at a time where Python carries them
BATCH = 16  # pieces written in one reactor turn while the transport keeps taking them
SEND_MAX = 8 * 1024 * 1024  # bytes asked of one os.sendfile (TLS: web.sendfile.PIECE)
SOCKET_BATCH = 16  # sends in one writable event, before other connections get a turn


@dataclass(frozen=True)
class Part:
    head: bytes  # written before the bytes (a multipart boundary and headers), or b""
    span: ByteRange


@dataclass(frozen=True)
class Download:
    """Who asked for what, for the log lines."""

    stored: StoredFile
    client: str
    zone: Zone


class TransportBody:
    """A response body read from an open file and written to `transport`.

    `reactor` provides IReactorTime and IReactorFDSet. The caller has written the head;
    `start()` registers the body as the transport's streaming producer and sends.
    `done(True)` follows once every byte is handed to the transport (the producer is
    unregistered by then), `done(False)` when the body aborted the connection itself.
    The protocol calls `connection_lost()` from its connectionLost; after it, `done` is
    not called. Calling `pauseProducing()` before `start()` starts it paused.
    """

    def __init__(
        self,
        reactor: Any,
        transport: Any,
        image: IO[bytes],
        parts: list[Part],
        trailer: bytes,
        slot: Slot,
        settings: ServiceSettings,
        download: Download,
        status: int,
        done: Callable[[bool], None],
        throttle: Throttle | None = None,
    ) -> None:
        self._reactor = reactor
        self._throttle = throttle  # the network's bytes a second, if it has a cap
        self._held: Any = None  # IDelayedCall: the throttle lets the body go on
        self._transport = transport
        self._image = image
        self._items: list[bytes | ByteRange] = []
        for part in parts:
            if part.head:
                self._items.append(part.head)
            if part.span.size:
                self._items.append(part.span)
        if trailer:
            self._items.append(trailer)
        self._index = 0  # the item being sent
        self._at = 0  # bytes of it sent
        self._slot = slot
        self._download = download
        self._status = status
        self._done = done
        self._stall_seconds = settings.download_stall_seconds
        self._paused = False
        self._writing = False
        self._ended = False
        self._lost = False
        self._blocked_since: float | None = None  # when progress stopped
        self._stall: Any = None  # IDelayedCall that checks for a stall
        self._next: Any = None  # IDelayedCall of the next batch
        self._socket: SocketWriter | None = None
        self.sent = 0

    def start(self) -> None:
        self._transport.registerProducer(self, True)
        if self._ended:  # the connection had gone: stopProducing came at once
            return
        if not self._items:
            self._complete()
            return
        self._socket = socket_writer(self._reactor, self._transport, self._send, self._broken)
        if self._socket is not None:
            self._block()  # until the socket takes a first byte
            self._socket.wait()
        elif self._paused:
            self._block()
        else:
            self._write()

    def connection_lost(self) -> None:
        """The connection is gone (the client left, or the abort took effect)."""
        self._lost = True
        self._finish(interrupted=True, unregister=False)

    # -- IPushProducer: called by the transport -------------------------------------------

    def pauseProducing(self) -> None:
        if self._ended:
            return
        self._paused = True
        self._block()

    def resumeProducing(self) -> None:
        if self._ended:
            return
        self._paused = False
        self._blocked_since = None  # what we gave the transport has gone
        if self._socket is None:
            self._write()  # a socket body goes on when the socket has room

    def stopProducing(self) -> None:
        self.connection_lost()  # the transport is losing the connection

    # -- writing where Python carries the bytes --------------------------------------------

    def _write(self) -> None:
        self._next = None
        if self._writing or self._ended:
            return  # a write below paused and resumed us at once; the loop goes on
        self._writing = True
        try:
            for _ in range(BATCH):
                if self._paused or self._ended:
                    return
                limit = self._budget(CHUNK)
                if not limit:
                    self._hold()
                    return
                try:
                    piece = self._read(limit)
                except OSError as e:
                    self._abort(f"cannot read the image: {e}")
                    return
                if self._throttle is not None:
                    self._throttle.spend(len(piece))
                self.sent += len(piece)
                self._transport.write(piece)
                if self._index == len(self._items):
                    if not self._ended:
                        self._complete()
                    return
            if not self._paused and not self._ended:
                self._next = self._reactor.callLater(0, self._write)
        finally:
            self._writing = False

    def _read(self, limit: int) -> bytes:
        """The next bytes of the body, at most `limit` of the file at once."""
        item = self._items[self._index]
        if isinstance(item, bytes):
            self._index += 1
            return item
        left = item.size - self._at
        self._image.seek(item.offset + self._at)
        data = self._image.read(min(limit, left))
        if not data:  # the file shrank under us: the length sent cannot be kept
            raise OSError(f"image ended {left} bytes early")
        self._advance(len(data), item.size)
        return data

    def _advance(self, count: int, size: int) -> None:
        self._at += count
        if self._at == size:
            self._index += 1
            self._at = 0

    # -- writing straight to a plain TCP socket --------------------------------------------

    def _send(self) -> None:
        """The socket has room (the reactor says so, through the writer)."""
        sock = self._socket
        if self._ended or sock is None or not sock.ready():
            return  # what went through the transport (the head) goes first
        moved = held = False
        try:
            for _ in range(SOCKET_BATCH):
                if self._index == len(self._items):
                    break
                limit = self._budget(SEND_MAX)
                if not limit:
                    held = True
                    break
                item = self._items[self._index]
                if isinstance(item, bytes):
                    taken, full = sock.send(memoryview(item)[self._at :][:limit])
                    size = len(item)
                else:
                    left, size = item.size - self._at, item.size
                    where = item.offset + self._at
                    taken, full = sock.send_file(self._image.fileno(), where, min(left, limit))
                    if not taken and not full:
                        raise OSError(f"image ended {left} bytes early")
                if taken:
                    moved = True
                    self.sent += taken
                    if self._throttle is not None:
                        self._throttle.spend(taken)
                    self._advance(taken, size)
                if full:
                    break
        except ConnectionError:
            self._broken()
            return
        except OSError as e:
            self._abort(f"cannot read the image: {e}")
            return
        if moved:
            self._blocked_since = None
        if self._index == len(self._items):
            self._complete()
        elif held:
            self._hold()
        else:  # the socket may take no more (the kernel need not say so with EAGAIN)
            self._block()

    # -- the network's bytes a second --------------------------------------------------------

    def _budget(self, most: int) -> int:
        """Bytes to send next, at most `most`; 0: wait for the throttle."""
        if self._throttle is None:
            return most
        return min(most, self._throttle.budget(self._reactor.seconds()))

    def _hold(self) -> None:
        """Wait for the throttle: no socket events, no stall counted meanwhile."""
        if self._held is not None or self._throttle is None:
            return
        self._blocked_since = None
        if self._socket is not None:
            self._socket.rest()
        delay = self._throttle.wait(self._reactor.seconds())
        self._held = self._reactor.callLater(delay, self._go_on)

    def _go_on(self) -> None:
        self._held = None
        if self._ended:
            return
        if self._socket is not None:
            self._socket.wait()  # sends again when the socket has room
        elif not self._paused:
            self._write()

    def _broken(self, reason: Failure | None = None) -> None:
        """The socket failed under us (the client reset it): the connection is lost."""
        self._finish(interrupted=True, unregister=True)
        self._transport.abortConnection()  # so the protocol hears of it
        if not self._lost:
            self._done(False)

    # -- stalls ------------------------------------------------------------------------------

    def _block(self) -> None:
        """No progress from now on until `_blocked_since` is cleared; checked after the
        stall time (one timer, moved on when progress came in between)."""
        if self._blocked_since is None:
            self._blocked_since = self._reactor.seconds()
        if self._stall is None:
            self._stall = self._reactor.callLater(self._stall_seconds, self._check_stall)

    def _check_stall(self) -> None:
        self._stall = None
        since = self._blocked_since
        if self._ended or since is None:
            return
        waited = self._reactor.seconds() - since
        if waited < self._stall_seconds:
            self._stall = self._reactor.callLater(self._stall_seconds - waited, self._check_stall)
            return
        log.info(
            "image download {path} to {client} stalled: nothing taken for {seconds} s"
            " after {sent} bytes; connection aborted",
            path=self._download.stored.path.as_posix(),
            client=self._download.client,
            seconds=self._stall_seconds,
            sent=self.sent,
            event="download.stalled",
        )
        self._abort("stalled")

    # -- the end ------------------------------------------------------------------------------

    def _complete(self) -> None:
        self._finish(interrupted=False, unregister=True)
        if not self._lost:
            self._done(True)

    def _abort(self, why: str) -> None:
        if why != "stalled":
            log.error(
                "image download {path} to {client} aborted: {why}",
                path=self._download.stored.path.as_posix(),
                client=self._download.client,
                why=why,
            )
        self._finish(interrupted=True, unregister=True)
        self._transport.abortConnection()
        if not self._lost:
            self._done(False)

    def _finish(self, interrupted: bool, unregister: bool) -> None:
        """Once, however the body ends: stop, let go of everything, say how it ended."""
        if self._ended:
            return
        self._ended = True
        for call in (self._stall, self._next, self._held):
            if call is not None and call.active():
                call.cancel()
        self._stall = self._next = self._held = None
        if self._socket is not None:
            self._socket.close()  # before the transport closes: the duplicate holds it open
        if unregister:
            self._transport.unregisterProducer()
        self._image.close()
        self._slot.release(self.sent, not interrupted)
        stored = self._download.stored
        log.info(
            "image download {path} to {client} ({zone}): {status}{partial}",
            path=stored.path.as_posix(),
            client=self._download.client,
            zone=self._download.zone.value,
            status=self._status,
            partial=" (interrupted)" if interrupted else "",
            event="image.download",
        )
