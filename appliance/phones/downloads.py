"""Image downloads: the Range answer, the slots, and a body that cannot be held forever.

`Downloads.serve` answers a GET or HEAD of a stored image once `resource.py` has found it
in the catalogue and checked its path: `ETag` (the file's SHA-256) with If-None-Match and
`Last-Modified` with If-Modified-Since (304, as Twisted's `Request.setETag` and
`setLastModified` decide it), then the head, written at once, and the body. Unlike
Twisted's `static.File`, which honoured any Range header, overlapping ones included, and
streamed through a pull producer that nothing watched:

- which bytes: `ranges.plan_ranges` (one range, or up to `service.max_ranges` in order and
  not overlapping; otherwise the whole file, or 416);
- slots: at most `service.max_downloads` bodies at once, at most
  `service.max_downloads_per_client` per client address (after trusted proxies), and at
  most a rollout network's `max_downloads` to its phones (docs/rollouts.md); beyond any,
  503 with Retry-After (`download.refused`). HEAD and 304 take no slot;
- bytes a second: the bodies of a rollout network with `max_bytes_per_second` share one
  `throttle.Throttle`;
- stalls: the body (`image_body.TransportBody`) is the transport's push producer; while
  nothing moves for `service.download_stall_seconds`, the connection is aborted
  (`download.stalled`). The slot is released exactly once: when the body is finished, or
  when the connection is lost (the client went, or the stall abort).

`slots.py` counts the slots and `image_body.py` sends the body. A check to run on the file
before it is served (a hash, say) belongs in `Downloads.serve`, before a slot is taken.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from twisted.logger import Logger
from twisted.web.http import datetimeToString, stringToDatetime

from appliance.config import ServiceSettings
from appliance.phones.image_body import Download, Part, TransportBody
from appliance.phones.ranges import (
    ByteRange,
    RangeAnswer,
    RangePlan,
    content_range,
    if_range_holds,
    plan_ranges,
)
from appliance.phones.slots import DownloadLimit, DownloadSlots, NetworkCaps
from appliance.phones.throttle import Throttle
from appliance.web import LeanRequest, render
from appliance.web import text_answer as plain

log = Logger(namespace="ucupdates.phone")

OCTETS = b"application/octet-stream"
OCTETS_LINE = b"Content-Type: " + OCTETS


class Downloads:
    """The image downloads of every phone listener. Use from the reactor thread."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.slots = DownloadSlots(settings.max_downloads, settings.max_downloads_per_client)
        self.throttles: dict[str, Throttle] = {}  # per network with a bytes-a-second cap

    def serve(
        self, request: LeanRequest, path: Path, download: Download, caps: NetworkCaps | None = None
    ) -> None:
        """Answer GET or HEAD of the image at `path` (found, and inside the store); `caps`:
        the client's network's caps (concurrent downloads, bytes a second), if any."""
        stored = download.stored
        etag = f'"{stored.sha256}"'.encode()
        headers = [b"ETag: " + etag]
        tags = request.headers.get(b"if-none-match")
        if tags and (etag in tags.split() or b"*" in tags.split()):
            _answer(request, 304, headers)
            return
        try:
            image: IO[bytes] = path.open("rb")
        except OSError as e:
            log.error("cannot open image {path}: {error}", path=str(path), error=e.strerror)
            plain(request, 404, "not found", headers)
            return
        try:
            self._answer(request, image, etag, download, headers, caps)
        except BaseException:
            image.close()
            raise

    def _answer(
        self,
        request: LeanRequest,
        image: IO[bytes],
        etag: bytes,
        download: Download,
        headers: list[bytes],
        caps: NetworkCaps | None,
    ) -> None:
        stat = os.fstat(image.fileno())
        size = stat.st_size
        modified = datetime.fromtimestamp(int(stat.st_mtime), UTC)
        headers.append(b"Accept-Ranges: bytes")
        headers.append(b"X-Content-SHA256: " + download.stored.sha256.encode())
        headers.append(b"Last-Modified: " + datetimeToString(int(modified.timestamp())))
        if _unmodified_since(request, int(modified.timestamp())):
            image.close()
            _answer(request, 304, headers)
            return
        if request.method == b"HEAD":
            image.close()
            _answer(request, 200, [*headers, OCTETS_LINE], length=size)
            return
        plan = RangePlan(RangeAnswer.WHOLE)
        if if_range_holds(request.headers.get(b"if-range"), etag, modified):
            plan = plan_ranges(request.headers.get(b"range"), size, self.settings.max_ranges)
        if plan.ignored:
            log.info(
                "range header from {client} ignored ({why}): whole file sent",
                client=download.client,
                why=plan.ignored,
                event="download.ranges_ignored",
            )
        if plan.answer is RangeAnswer.UNSATISFIABLE:
            image.close()
            headers.append(b"Content-Range: bytes */%d" % size)
            plain(request, 416, "range not satisfiable", headers)
            return
        slot = self.slots.take(download.client, caps)
        if isinstance(slot, DownloadLimit):
            image.close()
            self._refuse(request, slot, download, headers)
            return
        try:
            status, length, parts, trailer = self._head(plan, size, headers)
            channel = request.channel
            head = render(
                status,
                headers,
                b"",
                channel.dates.line(),
                close=not request.keep_alive,
                http10=request.http10,
                length=length,
            )
            body = TransportBody(
                channel.clock,
                channel.transport,
                image,
                parts,
                trailer,
                slot,
                self.settings,
                download,
                status,
                lambda sent: channel.finish(request, sent),
                self._throttle(caps, channel.clock),
            )
        except BaseException:
            slot.release(0, complete=False)
            raise
        request.on_lost = body.connection_lost
        channel.write(request, head)
        channel.lend_transport()
        body.start()

    def _throttle(self, caps: NetworkCaps | None, reactor: Any) -> Throttle | None:
        """The network's shared bucket of bytes a second (made at its first download; its
        rate follows the policy)."""
        if caps is None or caps.bytes_per_second is None:
            return None
        throttle = self.throttles.get(caps.group)
        if throttle is None:
            throttle = Throttle(caps.bytes_per_second, reactor.seconds())
            self.throttles[caps.group] = throttle
        throttle.rate = caps.bytes_per_second
        return throttle

    def _refuse(
        self, request: LeanRequest, limit: DownloadLimit, download: Download, headers: list[bytes]
    ) -> None:
        log.info(
            "image download to {client} refused: {limit} reached ({active} active)",
            client=download.client,
            limit=limit.value,
            active=self.slots.active,
            event="download.refused",
        )
        headers.append(b"Retry-After: " + str(self.settings.retry_after).encode())
        plain(request, 503, "too many downloads at once; retry later", headers)

    @staticmethod
    def _head(
        plan: RangePlan, size: int, headers: list[bytes]
    ) -> tuple[int, int, list[Part], bytes]:
        """Status, Content-Length and the header lines (added to `headers`); the parts
        of the body and what ends it."""
        if plan.answer is RangeAnswer.WHOLE:
            headers.append(OCTETS_LINE)
            return 200, size, ([Part(b"", ByteRange(0, size))] if size else []), b""
        if len(plan.ranges) == 1:
            (only,) = plan.ranges
            headers.append(OCTETS_LINE)
            headers.append(b"Content-Range: " + content_range(only, size))
            return 206, only.size, [Part(b"", only)], b""
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
        headers.append(b"Content-Type: multipart/byteranges; boundary=" + boundary)
        return 206, length, parts, trailer


def _unmodified_since(request: LeanRequest, modified: int) -> bool:
    """If-Modified-Since at or after the file's time (a date that does not parse: no)."""
    since = request.headers.get(b"if-modified-since")
    if not since:
        return False
    try:
        when = stringToDatetime(since.split(b";", 1)[0])
    except (ValueError, IndexError, OverflowError):
        return False
    return bool(when >= modified)


def _answer(request: LeanRequest, status: int, headers: list[bytes], length: int = 0) -> None:
    """A 304, or the head of a HEAD."""
    channel = request.channel
    date = channel.dates.line()
    close = not request.keep_alive
    out = render(status, headers, b"", date, close=close, http10=request.http10, length=length)
    channel.complete(request, out)
