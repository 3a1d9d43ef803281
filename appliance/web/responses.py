"""HTTP/1.1 responses as bytes: the status line, the headers every answer carries, and
answers remembered whole.

A response is rendered in one `b"".join`: the status line, `Server: ucupdates` (never a
product name and version), `Date` (formatted at most once a second), `Content-Length`
(none on 204 and 304), the caller's header lines, `Connection: close` when the connection
ends after it, the blank line and the body. `Rendered.cached` remembers whole responses
for the current second by body, headers and connection variant, so a keep-alive update
check costs one dict look-up (bytes keep their hash) rather than a rendering.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.web.http import RESPONSES, datetimeToString

SERVER_LINE = b"Server: ucupdates\r\n"
CLOSE_LINE = b"Connection: close\r\n"
NO_BODY = frozenset({204, 304})  # statuses that carry neither body nor Content-Length
CACHE_SIZE = 1024  # whole responses remembered within one second
_PHRASES = {**RESPONSES, 431: b"Request Header Fields Too Large"}


def _status_lines(version: bytes) -> dict[int, bytes]:
    return {code: b"%s %d %s\r\n" % (version, code, phrase) for code, phrase in _PHRASES.items()}


_STATUS = {False: _status_lines(b"HTTP/1.1"), True: _status_lines(b"HTTP/1.0")}


def status_line(status: int, http10: bool = False) -> bytes:
    line = _STATUS[http10].get(status)
    if line is None:
        line = b"HTTP/1.%d %d Unknown\r\n" % (0 if http10 else 1, status)
    return line


class Dates:
    """The `Date` header line, formatted again only when the second changes."""

    def __init__(self, seconds: Callable[[], float]) -> None:
        self._seconds = seconds
        self.second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(self._seconds())
        if now != self.second:
            self.second = now
            self._line = b"Date: " + datetimeToString(now) + b"\r\n"
        return self._line


def render(
    status: int,
    headers: Sequence[bytes],
    body: bytes,
    date: bytes,
    *,
    close: bool = False,
    http10: bool = False,
    head_only: bool = False,
    length: int | None = None,
) -> bytes:
    """A whole response. `headers` are lines without their CRLF (`b"Name: value"`);
    `length` overrides the Content-Length of `body` (a HEAD, or a body sent afterwards);
    `head_only` leaves the body out."""
    parts = [status_line(status, http10), SERVER_LINE, date]
    if status not in NO_BODY:
        parts.append(b"Content-Length: %d\r\n" % (len(body) if length is None else length))
    for line in headers:
        parts.append(line)
        parts.append(b"\r\n")
    if close:
        parts.append(CLOSE_LINE)
    parts.append(b"\r\n")
    if body and not head_only and status not in NO_BODY:
        parts.append(body)
    return b"".join(parts)


class Rendered:
    """Whole responses remembered for the current second (their Date line is in them)."""

    def __init__(self, dates: Dates) -> None:
        self.dates = dates
        self._second = -1
        self._cache: dict[tuple[int, tuple[bytes, ...], bytes, bool, bool], bytes] = {}

    def cached(
        self, status: int, headers: tuple[bytes, ...], body: bytes, close: bool, http10: bool
    ) -> bytes:
        date = self.dates.line()
        if self.dates.second != self._second or len(self._cache) >= CACHE_SIZE:
            self._second = self.dates.second
            self._cache.clear()
        key = (status, headers, body, close, http10)
        out = self._cache.get(key)
        if out is None:
            out = render(status, headers, body, date, close=close, http10=http10)
            self._cache[key] = out
        return out
