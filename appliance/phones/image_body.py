"""The body of an image download: pushed while the connection takes it, cut when it stalls.

`downloads.Downloads` decides status, headers and slot, then hands the open file, the
parts to send and the slot to a `Body`. The body is a push producer: Twisted pauses it
when the connection's write buffer is full and resumes it when that drains. Paused for
`service.download_stall_seconds` in a row means the client stopped reading: the
connection is aborted (`download.stalled`). However the body ends (finished, connection
lost, aborted), the file is closed and the slot released once, and nothing more is
written; the `image.download` line says how it ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from appliance.config import ServiceSettings
from appliance.model import StoredFile, Zone
from appliance.phones.ranges import ByteRange
from appliance.phones.slots import Slot

log = Logger(namespace="ucupdates.phone")

CHUNK = 64 * 1024  # bytes read and written at a time
BATCH = 16  # chunks written in one reactor turn while the transport keeps taking them


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


class Body:
    """A response body read from an open file: an IPushProducer, registered as streaming.

    Twisted pauses it when the connection's write buffer is full and resumes it when that
    drains; paused for `download_stall_seconds` in a row means the client stopped reading,
    and the connection is aborted. The file is closed and the slot released once, however
    the body ends.
    """

    def __init__(
        self,
        request: server.Request,
        image: IO[bytes],
        parts: list[Part],
        trailer: bytes,
        slot: Slot,
        settings: ServiceSettings,
        download: Download,
    ) -> None:
        self._request = request
        self._image = image
        self._chunks = _chunks(image, parts, trailer)
        self._slot = slot
        self._download = download
        self._stall_seconds = settings.download_stall_seconds
        site: Any = request.site
        self._clock: Any = site.reactor  # IReactorTime: the one make_service gave the site
        self._paused = False
        self._writing = False
        self._ended = False
        self._stall: Any = None  # IDelayedCall while paused
        self._next: Any = None  # IDelayedCall of the next batch
        self.sent = 0

    def start(self) -> None:
        self._request.notifyFinish().addBoth(self._finished)
        self._request.registerProducer(self, True)
        # A connection whose buffer is already full (an earlier response on it not taken
        # yet) does not pause a producer that arrives later: start paused, then.
        if getattr(self._request.channel, "_waitingForTransport", False):
            self.pauseProducing()
        else:
            self._write()

    # -- IPushProducer: called by the connection ------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        if self._stall is None and not self._ended:
            self._stall = self._clock.callLater(self._stall_seconds, self._stalled)

    def resumeProducing(self) -> None:
        self._paused = False
        self._cancel_stall()
        self._write()

    def stopProducing(self) -> None:
        self._end()  # the connection is going; `_finished` follows with its failure

    # -- writing ---------------------------------------------------------------------------

    def _write(self) -> None:
        self._next = None
        if self._writing or self._ended:
            return  # a write below paused and resumed us at once; the loop goes on
        self._writing = True
        try:
            for _ in range(BATCH):
                if self._paused or self._ended:
                    return
                try:
                    chunk = next(self._chunks, None)
                except OSError as e:
                    self._abort(f"cannot read the image: {e}")
                    return
                if chunk is None:
                    self._complete()
                    return
                self.sent += len(chunk)
                self._request.write(chunk)
            if not self._paused and not self._ended:
                self._next = self._clock.callLater(0, self._write)
        finally:
            self._writing = False

    def _complete(self) -> None:
        request = self._request
        self._end()
        if not request._disconnected and not request.finished:
            request.unregisterProducer()
            request.finish()

    def _stalled(self) -> None:
        self._stall = None
        if self._ended:
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

    def _abort(self, why: str) -> None:
        if why != "stalled":
            log.error(
                "image download {path} to {client} aborted: {why}",
                path=self._download.stored.path.as_posix(),
                client=self._download.client,
                why=why,
            )
        channel: Any = self._request.channel
        self._end()
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._cancel_stall()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self._image.close()

    def _cancel_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None

    def _finished(self, outcome: object) -> None:
        """The request is done: finished, or its connection lost (and then we stop)."""
        self._end()
        self._slot.release()
        request = self._request
        stored = self._download.stored
        log.info(
            "image download {path} to {client} ({zone}): {status}{partial}",
            path=stored.path.as_posix(),
            client=self._download.client,
            zone=self._download.zone.value,
            status=request.code,
            partial="" if not isinstance(outcome, Failure) else " (interrupted)",
            event="image.download",
        )


def _chunks(image: IO[bytes], parts: list[Part], trailer: bytes) -> Iterator[bytes]:
    for part in parts:
        if part.head:
            yield part.head
        image.seek(part.span.offset)
        left = part.span.size
        while left > 0:
            data = image.read(min(CHUNK, left))
            if not data:  # the file shrank under us: the length sent cannot be kept
                raise OSError(f"image ended {left} bytes early")
            left -= len(data)
            yield data
    if trailer:
        yield trailer
