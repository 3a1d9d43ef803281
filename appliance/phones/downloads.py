"""Image downloads: the Range answer, the slots, and a body that cannot be held forever.

`Downloads.serve` answers a GET or HEAD of a stored image once `resource.py` has found it
in the catalogue and checked its path. It replaces Twisted's `static.File`, which honoured
any Range header, overlapping ones included, and streamed through a pull producer that
nothing watched:

- which bytes: `ranges.plan_ranges` (one range, or up to `service.max_ranges` in order and
  not overlapping; otherwise the whole file, or 416);
- slots: at most `service.max_downloads` bodies at once, and at most
  `service.max_downloads_per_client` per client address (after trusted proxies); beyond
  either, 503 with Retry-After (`download.refused`). HEAD and 304 take no slot;
- stalls: the body is a push producer; while the connection's write buffer does not drain
  (Twisted pauses the producer) for `service.download_stall_seconds`, the connection is
  aborted (`download.stalled`). The slot is released exactly once: when the body is
  finished, or when the connection is lost (the client went, or the stall abort).

`slots.py` counts the slots and `image_body.py` sends the body. A check to run on the file
before it is served (a hash, say) belongs in `Downloads.serve`, before a slot is taken.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from twisted.logger import Logger
from twisted.web import http, server

from appliance.config import ServiceSettings
from appliance.phones.image_body import Body, Download, Part
from appliance.phones.ranges import (
    ByteRange,
    RangeAnswer,
    RangePlan,
    content_range,
    if_range_holds,
    plan_ranges,
)
from appliance.phones.slots import DownloadLimit, DownloadSlots

log = Logger(namespace="ucupdates.phone")

OCTETS = b"application/octet-stream"


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


def _plain(request: server.Request, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode() + b"\n"
