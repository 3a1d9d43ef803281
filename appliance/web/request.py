"""A request as the lean server parsed it, what a listener's routes are, and a text answer.

`LeanRequest` carries what the routes read (method, target, headers in a dict by
lower-case name with their last value as Twisted's `getHeader` gives it, the raw list
for the rest, the body) and its connection, where the answer goes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from typing import Protocol as Interface

from appliance.web.guard import Rejection

if TYPE_CHECKING:
    from appliance.web.lean import LeanChannel


class LeanRequest:
    """One request as parsed: what the routes read, and where they answer."""

    __slots__ = (
        "admission",
        "body_parts",
        "body_size",
        "channel",
        "headers",
        "http10",
        "keep_alive",
        "max_body",
        "method",
        "on_lost",
        "raw_headers",
        "repeated",
        "started",
        "target",
    )

    def __init__(self, channel: LeanChannel) -> None:
        self.channel = channel
        self.method = b""
        self.target = b""
        self.http10 = False
        self.keep_alive = False
        self.headers: dict[bytes, bytes] = {}  # lower-case name: its last value
        self.raw_headers: list[tuple[bytes, bytes]] = []  # as sent, in order
        self.repeated = False  # some header name came more than once
        self.max_body = 0
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.admission: Any = None  # what `Routes.admit` attached
        self.started = False  # a head is written: a failure can only cut the connection
        self.on_lost: Callable[[], None] | None = None  # called if the connection goes

    @property
    def path(self) -> bytes:
        """The target without its query."""
        return self.target.split(b"?", 1)[0]

    @property
    def body(self) -> bytes:
        parts = self.body_parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def first(self, name: bytes) -> bytes | None:
        """The first value of the lower-case header `name`."""
        if not self.repeated:
            return self.headers.get(name)
        return next((v for n, v in self.raw_headers if n.lower() == name), None)

    def values(self, name: bytes) -> list[bytes]:
        """Every value of the lower-case header `name`, in order."""
        if not self.repeated:
            value = self.headers.get(name)
            return [] if value is None else [value]
        return [v for n, v in self.raw_headers if n.lower() == name]


class Routes(Interface):
    """What one listener serves: its admission and its answers."""

    def admit(self, request: LeanRequest, length: int | None) -> Rejection | None:
        """When the headers are in (`length`: declared, None when chunked): refuse, or
        set `request.max_body` (and attach what the answer needs) and return None."""

    def handle(self, request: LeanRequest) -> None:
        """Answer a whole request (at its turn): `LeanChannel.complete` or a body."""


def text_answer(
    request: LeanRequest, status: int, text: str, headers: tuple[bytes, ...] | list[bytes] = ()
) -> bytes:
    """Answer `request` with `text` as text/plain (plus header lines); returns the body."""
    body = text.encode() + b"\n"
    channel = request.channel
    lines = [b"Content-Type: text/plain; charset=utf-8", *headers]
    channel.complete(request, channel.render(request, status, lines, body))
    return body
