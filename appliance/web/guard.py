"""Limits on everything an HTTP client controls, enforced as the bytes arrive.

Twisted reads a whole request body before any resource runs (no built-in cap), so the checks
that must come first happen here, when the headers are in: a site-supplied `admit`
function sees method, path, declared length and headers and may refuse at once (413 for
a body over the limit, 401 for an external request without credentials, 429 for a
locked-out client); the body is then counted as it streams (chunked bodies too). Each
request must arrive whole within `request_timeout` (slowloris); idle keep-alive
connections close after `idle_timeout`; at most `max_connections` are open at once.

A header line, or all the headers, over `max_header_bytes` get a 431 at once. Every
refusal (`reject`, and Twisted's own 400s) answers, stops reading what the client sends,
and closes; the connection is cut after `LINGER_SECONDS` at the latest (a TLS client that
never sends its close_notify, while it streams an endless body, would otherwise be read
until the idle timeout: 6 GB in 30 s on loopback). No answer names the software: the
Server header says `ucupdates`, and `OPTIONS *` gets an empty 204.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web import http, server

from appliance.config import ServiceSettings

log = Logger()

# A refused client has this long to read the answer before its connection is cut (and a
# connection closed for idleness this long to send its TLS close_notify).
LINGER_SECONDS = 1.0
_PHRASES = {431: b"Request Header Fields Too Large"}  # not in Twisted's table
SERVER = b"ucupdates"  # the Server header: never Twisted's name and version


@dataclass(frozen=True)
class Rejection:
    status: int
    reason: str
    headers: Sequence[tuple[bytes, bytes]] = ()


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    request_timeout: float
    idle_timeout: float
    max_connections: int

    @classmethod
    def of(cls, service: ServiceSettings, max_connections: int | None = None) -> Limits:
        """The `[service]` table's limits; a listener may have its own connection cap."""
        return cls(
            max_header_bytes=service.max_header_bytes,
            request_timeout=service.request_timeout,
            idle_timeout=service.idle_timeout,
            max_connections=service.max_connections if max_connections is None else max_connections,
        )


# admit(request, method, path, declared body length or None when chunked)
Admit = Callable[["GuardedRequest", bytes, bytes, int | None], Rejection | None]


class GuardedRequest(server.Request):
    """A request whose body may not exceed `max_body` bytes (set when it is admitted)."""

    max_body: int = 0
    admission: Any = None  # whatever `admit` attached (zone, client, credentials)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._body_bytes = 0

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        if name in (b"Server", "Server") and value == server.version:
            value = SERVER  # Twisted's default, set before any resource runs
        super().setHeader(name, value)

    def process(self) -> None:
        if self.path != b"*":
            super().process()
            return
        # `OPTIONS *` asks about the server, not a resource: an empty answer (Twisted's own
        # names itself). `*` goes with OPTIONS only (RFC 9112 3.2.4).
        channel: Any = self.channel
        self.site = channel.site
        self.setHeader(b"server", SERVER)
        if self.method == b"OPTIONS":
            self.setResponseCode(204)
        else:
            self.setResponseCode(400)
            self.setHeader(b"content-length", b"0")
        self.finish()

    def handleContentChunk(self, data: bytes) -> None:
        self._body_bytes += len(data)
        if self._body_bytes > self.max_body:
            channel = self.channel
            if isinstance(channel, GuardedChannel):
                channel.reject(Rejection(413, f"request body over {self.max_body} bytes"))
            return
        super().handleContentChunk(data)


class GuardedChannel(http.HTTPChannel):
    site: GuardedSite
    abortTimeout = 1  # s (Twisted: 15) from an idle timeout's close to the cut

    def __init__(self) -> None:
        super().__init__()
        self._deadline: Any = None  # an IDelayedCall while a request is arriving
        self._linger: Any = None  # an IDelayedCall once a refusal is sent
        self._rejected = False
        self.auth_state: Any = None  # what `admit` keeps per connection (NTLM's handshake)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.totalHeadersSize = self.site.limits.max_header_bytes
        # One line may not be longer than all the headers together (Twisted: 16 KiB, and
        # then a silent close that TLS delays until the idle timeout).
        self.MAX_LENGTH = self.site.limits.max_header_bytes
        self.setTimeout(self.site.limits.idle_timeout)

    def dataReceived(self, data: bytes) -> None:
        # The clock starts with a request's first byte, not its first whole line: a client
        # that trickles a request line without its CRLF is a slowloris too. Bytes of a
        # pipelined request that arrive while one is being answered are only buffered;
        # Twisted feeds them here again when that request is done, and the clock starts then.
        if self._deadline is None and not self._rejected and not self._handlingRequest:
            self._deadline = self.callLater(self.site.limits.request_timeout, self._too_slow)
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._headers_too_large()
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._headers_too_large()

    def _headers_too_large(self) -> None:
        limit = self.site.limits.max_header_bytes
        self.reject(Rejection(431, f"request line or headers over {limit} bytes"))

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's own refusals (a malformed request line, header or chunk): a bare 400
        # and a close that a TLS client could hold open while it sends on.
        self.reject(Rejection(400, "malformed request"))

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        assert isinstance(request, GuardedRequest)
        path: Any = self._path  # bytes (Twisted annotates it loosely)
        rejection = self.site.admit(request, self._command, path, self.length)
        if rejection is not None:
            self.reject(rejection)
            return
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        if not self._rejected:
            super().allContentReceived()

    def _too_slow(self) -> None:
        self._deadline = None
        log.info(
            "request not received within {seconds} s from {peer}: closed",
            seconds=self.site.limits.request_timeout,
            peer=_peer(self.transport),
        )
        self.reject(Rejection(408, "request not received in time"))

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def rejection_body(self, rejection: Rejection) -> tuple[bytes, bytes, list[bytes]]:
        """Content type, body and extra header lines of a refusal (subclasses change it)."""
        return b"text/plain; charset=utf-8", rejection.reason.encode("utf-8", "replace") + b"\n", []

    def reject(self, rejection: Rejection) -> None:
        """Answer now, read nothing more from the client, and close (cut after
        `LINGER_SECONDS` if the client has not closed its side by then)."""
        if self._rejected:
            return
        self._rejected = True
        self._cancel_deadline()
        content_type, body, extra = self.rejection_body(rejection)
        phrase = _PHRASES.get(rejection.status) or http.RESPONSES.get(rejection.status, b"Error")
        head = [
            b"HTTP/1.1 %d %s" % (rejection.status, phrase),
            b"Content-Type: " + content_type,
            b"Content-Length: %d" % len(body),
            *extra,
            b"Connection: close",
        ]
        head += [name + b": " + value for name, value in rejection.headers]
        transport: Any = self.transport
        transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        noop: Callable[..., None] = lambda *args: None  # noqa: E731
        self.dataReceived = self.lineReceived = self.rawDataReceived = noop  # type: ignore[method-assign]
        # Read no more: over TLS the close waits for the client's close_notify, and a
        # client streaming a body would be read (and decrypted) until then.
        pause = getattr(transport, "pauseProducing", None)
        if pause is not None:
            pause()
        self.loseConnection()  # (unregisters the channel: nothing resumes the reads)
        self._linger = self.callLater(LINGER_SECONDS, self._cut)

    def _cut(self) -> None:
        self._linger = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self._cancel_deadline()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        self.site.open_connections -= 1
        super().connectionLost(reason)


class GuardedSite(server.Site):
    protocol = GuardedChannel  # type: ignore[assignment]
    requestFactory = GuardedRequest

    def __init__(self, resource: Any, admit: Admit, limits: Limits, **kwargs: Any) -> None:
        # Bodies are read by the resources (JSON, packages); Twisted need not parse POSTed
        # forms into `args`, which costs a Content-Type parse through the email package
        # on every POST. (Twisted copies the Site's setting onto each request: setting it
        # on the request class does nothing.)
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, **kwargs)
        self.admit = admit
        self.limits = limits
        self.open_connections = 0
        self.displayTracebacks = False
        self.noisy = False

    def buildProtocol(self, addr: IAddress | None) -> Any:
        if self.open_connections >= self.limits.max_connections:
            log.warn(
                "connection from {peer} refused: {count} open",
                peer=addr,
                count=self.open_connections,
            )
            return _Refused()
        channel = super().buildProtocol(addr)
        self.open_connections += 1
        return channel

    def log(self, request: http.Request) -> None:
        pass  # every request is recorded by the resources, as a structured event


class _Refused(Protocol):
    """A connection over the limit: closed at once. (Returning None from buildProtocol
    would do for plain TCP, but the TLS wrapper then fails with an unhandled error and
    completes the handshake anyway.)"""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()


def _peer(transport: Any) -> str:
    try:
        return str(transport.getPeer().host)
    except AttributeError:
        return "?"
