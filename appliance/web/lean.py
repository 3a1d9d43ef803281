"""A lean HTTP/1.1 server protocol: httptools parses, the limits hold as the bytes arrive.

The phone listeners' own server (the admin listener keeps twisted.web and `guard.py`). It
keeps the guard's rules (see `guard.py`'s docstring for why each exists):

- when a request's headers are in, before any body, the listener's `Routes.admit` decides
  (zone, credentials, the body limit) and may refuse; the body is counted as it streams
  (chunked too) and refused with 413 past `LeanRequest.max_body`;
- a request line and headers over `max_header_bytes` get 431 at once (one line or all);
  `MAX_HEADERS` header lines at most; a request the parser rejects gets 400;
- each request must arrive whole within `request_timeout` from its first byte (408); a
  keep-alive connection with no request under way closes after `idle_timeout`; at most
  `max_connections` connections per listener (beyond: aborted at once);
- every refusal is answered (`Connection: close`), then nothing more is read and the
  connection is cut `LINGER_SECONDS` later at the latest; `OPTIONS *` gets an empty 204.

Requests are answered in order (keep-alive, HTTP/1.0, pipelining). Requests that arrive
while one is being answered are parsed and queued, reading stops until the queue is
empty, and a queued incomplete request's clock starts when its turn comes. The channel is
the transport's push producer: while the client does not take the answers, it reads
nothing more and answers nothing more. `Routes.handle` answers with `LeanChannel.complete`
(a whole response), or writes a head and hands the transport to a body
(`LeanChannel.lend_transport`, then `LeanChannel.finish`).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import httptools
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from appliance.web.connection import Connection, Refused
from appliance.web.guard import LINGER_SECONDS, Limits, Rejection
from appliance.web.request import LeanRequest, Routes
from appliance.web.responses import Dates, Rendered, render

log = Logger()

MAX_HEADERS = 500  # header lines in one request, as twisted.web allowed (beyond: 400)
REQUEST_LINE_SLACK = 10  # bytes of a request line besides method and target (" HTTP/1.1")


class _Stop(Exception):
    """Raised from a parser callback: parse nothing more on this connection."""


class LeanChannel(Connection):
    """One connection: parse, admit, queue, answer in order, time out, refuse."""

    factory: LeanFactory

    def __init__(self, factory: LeanFactory, peer: Any) -> None:
        super().__init__(factory.limits, factory.reactor, factory.dates, peer)
        self.factory = factory
        self.routes = factory.routes
        self.rendered = factory.rendered
        self.auth_state: Any = None  # what the routes keep per connection (NTLM's handshake)
        self._parser = httptools.HttpRequestParser(self)
        self._request: LeanRequest | None = None  # the one arriving
        self._queue: deque[LeanRequest | Rejection] = deque()
        self._busy: LeanRequest | None = None  # the one being answered
        self._head = 0  # bytes of the arriving request's line and headers, as parsed
        self._raw = 0  # bytes received of its head while incomplete
        self._began: float | None = None  # when its clock started
        self._idle_since = 0.0
        self._write_paused = False  # the client is not taking what is written
        self._dispatching = False
        self._began_in_feed = False
        self._completed_in_feed = False

    # -- the connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.peer = transport.getPeer()
        self._idle_since = self.clock.seconds()
        self._arm(self._idle_since + self.limits.idle_timeout)
        self._produce(True)

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        self._began_in_feed = self._completed_in_feed = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            if not isinstance(e.__context__, _Stop):
                log.failure("HTTP parsing failed unexpectedly")  # a defect here, not input
                self._abort()
            return
        except (httptools.HttpParserUpgrade, httptools.HttpParserError):
            self._refuse(Rejection(400, "malformed request"))
            return
        request = self._request
        if request is not None and not request.method and not self._stopped:
            # The head is incomplete: count its bytes so far (an endless header line).
            if not self._began_in_feed:
                self._raw += len(data)
            else:  # began in this piece, after another request or at its start
                self._raw = self._head if self._completed_in_feed else len(data)
            if max(self._raw, self._head) > self.limits.max_header_bytes:
                self._headers_too_large()

    def connectionLost(self, reason: Any = None) -> None:
        if self._gone:
            return
        super().connectionLost(reason)
        self.factory.open_connections -= 1
        busy, self._busy = self._busy, None
        self._queue.clear()
        if busy is not None and busy.on_lost is not None:
            busy.on_lost()

    # -- IPushProducer: the transport pauses us while its write buffer is full ----------

    def pauseProducing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._write_paused = False
        if not self._gone:
            self._next()
            self._update_reading()

    def stopProducing(self) -> None:
        pass  # the connection is going: connectionLost follows

    # -- parser callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._request = LeanRequest(self)
        self._head = REQUEST_LINE_SLACK
        self._raw = 0
        self._began_in_feed = True
        if self._busy is None and not self._queue:
            self._began = self.clock.seconds()
            self._arm(self._began + self.limits.request_timeout)
        else:
            self._began = None  # its clock starts when its turn comes

    def on_url(self, piece: bytes) -> None:
        request = self._request
        assert request is not None
        request.target += piece
        self._count(len(piece))

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._request
        assert request is not None
        lower = name.lower()
        headers = request.headers
        if lower in headers:
            request.repeated = True
        headers[lower] = value
        raw = request.raw_headers
        raw.append((name, value))
        self._head += len(name) + len(value) + 2
        if self._head > self.limits.max_header_bytes or len(raw) > MAX_HEADERS:
            if len(raw) > MAX_HEADERS:
                self._refuse(Rejection(400, "malformed request"))
            else:
                self._headers_too_large()
            raise _Stop

    def on_headers_complete(self) -> None:
        request = self._request
        assert request is not None
        parser = self._parser
        request.method = method = parser.get_method()
        self._count(len(method))
        if parser.should_upgrade():  # CONNECT, or Upgrade: not served here
            self._refuse(Rejection(400, "malformed request"))
            raise _Stop
        version = parser.get_http_version()
        request.http10 = version == "1.0"
        request.keep_alive = version == "1.1" and parser.should_keep_alive()
        headers = request.headers
        if b"transfer-encoding" in headers:
            length: int | None = None
        else:
            length = int(headers.get(b"content-length", b"0"))  # digits: the parser checked
        rejection = self.routes.admit(request, length)
        if rejection is not None:
            self._refuse(rejection)
            raise _Stop
        expect = headers.get(b"expect", b"").lower() == b"100-continue"
        if expect and not request.http10 and self._busy is None and not self._queue:
            transport: Any = self.transport  # admitted: the client may send its body
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, data: bytes) -> None:
        request = self._request
        assert request is not None
        request.body_size += len(data)
        if request.body_size > request.max_body:
            self._refuse(Rejection(413, f"request body over {request.max_body} bytes"))
            raise _Stop
        request.body_parts.append(data)

    def on_message_complete(self) -> None:
        request = self._request
        assert request is not None
        self._request = None
        self._began = None
        self._completed_in_feed = True
        if not request.keep_alive:
            self._stopped = self._closing = True  # the last request: nothing after it
        self._queue.append(request)
        self._next()
        if self._stopped:
            raise _Stop

    def _count(self, size: int) -> None:
        self._head += size
        if self._head > self.limits.max_header_bytes:
            self._headers_too_large()
            raise _Stop

    def _headers_too_large(self) -> None:
        limit = self.limits.max_header_bytes
        self._refuse(Rejection(431, f"request line or headers over {limit} bytes"))

    # -- answering in order -----------------------------------------------------------

    def _next(self) -> None:
        """Answer what is queued, in order, while nothing is under way."""
        if self._dispatching:
            return  # a synchronous answer inside the loop below: the loop goes on
        self._dispatching = True
        try:
            while self._queue and self._busy is None and not self._write_paused:
                item = self._queue.popleft()
                if isinstance(item, Rejection):
                    self._queue.clear()
                    self._write_refusal(item)
                    return
                self._busy = item
                self._handle(item)
        finally:
            self._dispatching = False
        if self._busy is None and not self._queue and not self._gone:
            self._now_idle()
        self._update_reading()

    def _handle(self, request: LeanRequest) -> None:
        try:
            if request.target == b"*":  # OPTIONS * asks about the server: say nothing
                status = 204 if request.method == b"OPTIONS" else 400
                self.complete(request, self.render(request, status, (), b""))
            else:
                self.routes.handle(request)
        except Exception:
            log.failure("answering {method} failed", method=request.method)
            if request is not self._busy:
                return
            if request.started:
                self._abort()
            else:
                self.complete(request, self.render(request, 500, (), b"internal error\n"))

    def render(
        self,
        request: LeanRequest,
        status: int,
        headers: tuple[bytes, ...] | list[bytes],
        body: bytes,
    ) -> bytes:
        """A whole answer to `request` (HEAD: without its body)."""
        return render(
            status,
            headers,
            body,
            self.dates.line(),
            close=not request.keep_alive,
            http10=request.http10,
            head_only=request.method == b"HEAD",
        )

    def complete(self, request: LeanRequest, response: bytes) -> None:
        """Send the whole answer to `request` and go on with the next."""
        if request is not self._busy:
            return  # the connection went while it was being decided
        transport: Any = self.transport
        transport.write(response)
        self.finish(request)

    def write(self, request: LeanRequest, data: bytes) -> None:
        """Part of the answer to `request` (its head, before a body)."""
        if request is self._busy:
            request.started = True
            transport: Any = self.transport
            transport.write(data)

    def lend_transport(self) -> None:
        """Before a body registers itself as the transport's producer."""
        self._produce(False)

    def finish(self, request: LeanRequest, sent: bool = True) -> None:
        """The answer to `request` is handed to the transport (`sent`), or the body cut
        the connection (not `sent`)."""
        if request is not self._busy:
            return
        self._busy = None
        if not sent:
            self._stopped = self._closing = True
            return
        if not request.keep_alive:
            self._close()
            return
        self._produce(True)
        if self._queue:  # an answer sent is progress: the keep-alive clock starts again
            self._idle_since = self.clock.seconds()
        if not self._dispatching:
            self._next()

    def _now_idle(self) -> None:
        """Nothing is being answered: the keep-alive clock, or a queued request's own."""
        if self._closing:
            return
        now = self.clock.seconds()
        if self._request is not None:
            if self._began is None:
                self._began = now
            self._arm(self._began + self.limits.request_timeout)
        else:
            self._idle_since = now
            self._arm(now + self.limits.idle_timeout)

    def _update_reading(self) -> None:
        """Read while nothing is under way and the client takes what is written."""
        self._read(self._busy is not None or bool(self._queue) or self._write_paused)

    def _timer(self) -> None:
        if self._busy is not None:
            return  # re-armed when the answer is done
        now = self.clock.seconds()
        if self._request is not None and self._began is not None:
            due = self._began + self.limits.request_timeout
            if now >= due:
                log.info(
                    "request not received within {seconds} s from {peer}: closed",
                    seconds=self.limits.request_timeout,
                    peer=getattr(self.peer, "host", "?"),
                )
                self._refuse(Rejection(408, "request not received in time"))
                return
        else:
            due = self._idle_since + self.limits.idle_timeout
            if now >= due:
                self._close(LINGER_SECONDS)  # (then its TLS close_notify has a second)
                return
        self._arm(due)

    # -- refusing and closing ---------------------------------------------------------

    def _refuse(self, rejection: Rejection) -> None:
        """Answer `rejection` at its turn, read nothing more, and close."""
        self._stopped = self._closing = True
        self._request = None
        if self._busy is None and not self._queue:
            self._write_refusal(rejection)
        else:
            self._queue.append(rejection)
            self._update_reading()


class LeanFactory(Factory):
    """One listener: its routes, limits and reactor, and the connections it holds."""

    noisy = False

    def __init__(self, routes: Routes, limits: Limits, reactor: Any) -> None:
        self.routes = routes
        self.limits = limits
        self.reactor = reactor
        self.dates = Dates(reactor.seconds)
        self.rendered = Rendered(self.dates)
        self.open_connections = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        if self.open_connections >= self.limits.max_connections:
            log.warn(
                "connection from {peer} refused: {count} open",
                peer=addr,
                count=self.open_connections,
            )
            return Refused()
        self.open_connections += 1
        return LeanChannel(self, addr)
