"""HTTP plumbing the Control Panel's resources share: replies, JSON errors, headers.

Every response carries the same security headers (a strict Content-Security-Policy: only
this origin's own scripts and styles, no inline script, no framing). Errors are JSON
`{"error": "..."}` with a status that says what kind of error it is; clients never see a
traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from twisted.web import server

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000"),
    (b"server", b"ucupdates"),
)
JSON_TYPE = b"application/json"


class ApiError(Exception):
    """Ends a request with `status` and `{"error": message, **extra}`."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra
        self.headers: list[tuple[bytes, bytes]] = []


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or bytes with content_type
    content_type: bytes = JSON_TYPE
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    cache: bytes = b"no-store"


def error_reply(e: ApiError) -> Reply:
    return Reply(e.status, {"error": e.message, **e.extra}, headers=list(e.headers))


def primary_away(e: Exception) -> Reply:
    """A branch node's write while the pool's primary does not answer: 503, its line."""
    return Reply(503, {"error": str(e)}, headers=[(b"retry-after", b"30")])


def send(request: server.Request, reply: Reply) -> bytes:
    """Set the status and headers of `reply` on `request`; returns the body to write."""
    http_request: Any = request
    http_request.setResponseCode(reply.status)
    for name, value in SECURITY_HEADERS:
        http_request.setHeader(name, value)
    http_request.setHeader(b"cache-control", reply.cache)
    for name, value in reply.headers:
        if name.lower() == b"set-cookie":
            http_request.responseHeaders.addRawHeader(name, value)
        else:
            http_request.setHeader(name, value)
    if isinstance(reply.body, bytes):
        http_request.setHeader(b"content-type", reply.content_type)
        body = reply.body
    elif reply.body is None and reply.status in (204, 303):
        body = b""
    else:
        http_request.setHeader(b"content-type", JSON_TYPE)
        body = json.dumps(reply.body, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"
    http_request.setHeader(b"content-length", str(len(body)).encode())
    if request.method == b"HEAD":
        return b""
    return body


def finish(request: server.Request, reply: Reply) -> None:
    """Answer a request that was left open (server.NOT_DONE_YET)."""
    http_request: Any = request
    if http_request.finished or http_request._disconnected:
        return
    body = send(request, reply)
    http_request.write(body)
    http_request.finish()
