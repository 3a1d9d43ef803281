"""Image downloads: the slots, the Range answer, and a body that cannot be held forever.

`Downloads.serve` answers a GET or HEAD of a stored image once `resource.py` has found it
in the catalogue and checked its path. It replaces Twisted's `static.File`, which honoured
any Range header (pitfalls §9) and streamed through a pull producer that nothing watched:

- which bytes: `ranges.plan_ranges` (one range, or up to `service.max_ranges` in order and
  not overlapping; otherwise the whole file, or 416);
- slots: at most `service.max_downloads` bodies at once, and at most
  `service.max_downloads_per_client` per client address (after trusted proxies); beyond
  either, 503 with Retry-After (`download.refused`). HEAD and 304 take no slot;
- stalls: the body is a push producer; while the connection's write buffer does not drain
  (Twisted pauses the producer) for `service.download_stall_seconds`, the connection is
  aborted (`download.stalled`). The slot is released exactly once: when the body is
  finished, or when the connection is lost (the client went, or the stall abort).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import IO, Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server

from appliance.config import ServiceSettings
from appliance.model import StoredFile, Zone
from appliance.phones.ranges import (
    ByteRange,
    RangeAnswer,
    RangePlan,
    content_range,
    if_range_holds,
    plan_ranges,
)

log = Logger(namespace="ucupdates.phone")

CHUNK = 64 * 1024  # bytes read and written at a time
BATCH = 16  # chunks written in one reactor turn while the transport keeps taking them
OCTETS = b"application/octet-stream"


class DownloadLimit(Enum):
    ALL = "max_downloads"
    PER_CLIENT = "max_downloads_per_client"


class Slot:
    """One download's place; `release` is safe to call more than once."""

    def __init__(self, slots: DownloadSlots, client: str) -> None:
        self._slots = slots
        self.client = client
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self._slots._give_back(self.client)


class DownloadSlots:
    """How many bodies are being sent, in all and per client address."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.active = 0
        self.by_client: dict[str, int] = {}

    def take(self, client: str) -> Slot | DownloadLimit:
        if self.active >= self.total:
            return DownloadLimit.ALL
        if self.by_client.get(client, 0) >= self.per_client:
            return DownloadLimit.PER_CLIENT
        self.active += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        return Slot(self, client)

    def _give_back(self, client: str) -> None:
        self.active -= 1
        left = self.by_client[client] - 1
        if left:
            self.by_client[client] = left
        else:
            del self.by_client[client]


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


class Downloads:
    """The image downloads of every phone listener. Use from the reactor thread."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.slots = DownloadSlots(settings.max_downloads, settings.max_downloads_per_client)

    def serve(self, request: server.Request, path: Path, download: Download) -> bytes | int:
        """Answer GET or HEAD of the image at `path` (found, and inside the store)."""
        stored = download.stored
        etag = f'"{stored.sha256}"'.encode()
        if request.setETag(etag) == http.CACHED:
            return b""
        try:
            image: IO[bytes] = path.open("rb")
        except OSError as e:
            log.error("cannot open image {path}: {error}", path=str(path), error=e.strerror)
            return _plain(request, 404, "not found")
        try:
            return self._answer(request, image, etag, download)
        except BaseException:
            image.close()
            raise

    def _answer(
        self, request: server.Request, image: IO[bytes], etag: bytes, download: Download
    ) -> bytes | int:
        stat = os.fstat(image.fileno())
        size = stat.st_size
        modified = datetime.fromtimestamp(int(stat.st_mtime), UTC)
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"x-content-sha256", download.stored.sha256.encode())
        if request.setLastModified(modified.timestamp()) == http.CACHED:
            image.close()
            return b""
        if request.method == b"HEAD":
            image.close()
            request.setHeader(b"content-type", OCTETS)
            request.setHeader(b"content-length", b"%d" % size)
            return b""
        plan = RangePlan(RangeAnswer.WHOLE)
        if if_range_holds(request.getHeader(b"if-range"), etag, modified):
            plan = plan_ranges(request.getHeader(b"range"), size, self.settings.max_ranges)
        if plan.ignored:
            log.info(
                "range header from {client} ignored ({why}): whole file sent",
                client=download.client,
                why=plan.ignored,
                event="download.ranges_ignored",
            )
        if plan.answer is RangeAnswer.UNSATISFIABLE:
            image.close()
            request.setHeader(b"content-range", b"bytes */%d" % size)
            return _plain(request, 416, "range not satisfiable")
        slot = self.slots.take(download.client)
        if isinstance(slot, DownloadLimit):
            image.close()
            return self._refuse(request, slot, download)
        try:
            parts, trailer = self._head(request, plan, size)
            body = Body(request, image, parts, trailer, slot, self.settings, download)
        except BaseException:
            slot.release()
            raise
        body.start()
        return server.NOT_DONE_YET

    def _refuse(self, request: server.Request, limit: DownloadLimit, download: Download) -> bytes:
        log.info(
            "image download to {client} refused: {limit} reached ({active} active)",
            client=download.client,
            limit=limit.value,
            active=self.slots.active,
            event="download.refused",
        )
        request.setHeader(b"retry-after", str(self.settings.retry_after).encode())
        return _plain(request, 503, "too many downloads at once; retry later")

    @staticmethod
    def _head(request: server.Request, plan: RangePlan, size: int) -> tuple[list[Part], bytes]:
        """Set the status and headers; the parts of the body and what ends it."""
        if plan.answer is RangeAnswer.WHOLE:
            request.setResponseCode(200)
            request.setHeader(b"content-type", OCTETS)
            request.setHeader(b"content-length", b"%d" % size)
            return ([Part(b"", ByteRange(0, size))] if size else []), b""
        request.setResponseCode(206)
        if len(plan.ranges) == 1:
            (only,) = plan.ranges
            request.setHeader(b"content-type", OCTETS)
            request.setHeader(b"content-range", content_range(only, size))
            request.setHeader(b"content-length", b"%d" % only.size)
            return [Part(b"", only)], b""
        boundary = secrets.token_hex(16).encode()
        parts = [
            Part(
                b"\r\n--%s\r\nContent-Type: %s\r\nContent-Range: %s\r\n\r\n"
                % (boundary, OCTETS, content_range(span, size)),
                span,
            )
            for span in plan.ranges
        ]
        trailer = b"\r\n--%s--\r\n" % boundary
        length = sum(len(p.head) + p.span.size for p in parts) + len(trailer)
        request.setHeader(b"content-type", b"multipart/byteranges; boundary=" + boundary)
        request.setHeader(b"content-length", b"%d" % length)
        return parts, trailer


class Body:
    """A response body read from an open file, pushed while the connection takes it.

    An IPushProducer (registered as streaming).

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


def _plain(request: server.Request, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode() + b"\n"
