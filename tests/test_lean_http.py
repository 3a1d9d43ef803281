"""The lean HTTP server of the phone listeners (`appliance.web.lean`), with routes of its
own: parsing, limits, timers, keep-alive, pipelining and refusals, over a memory transport.

The phone routes on top of it are tested through it in test_phones_web.py, test_ntlm.py,
test_bad_input.py and the rest; here the server alone, with routes that answer at once or
when the test says.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from appliance.web import Limits, Rejection
from appliance.web.lean import LeanFactory
from appliance.web.request import LeanRequest
from appliance.web.responses import Dates, Rendered, render

PEER = IPv4Address("TCP", "192.0.2.7", 40000)
LIMITS = Limits(max_header_bytes=1024, request_timeout=30.0, idle_timeout=15.0, max_connections=2)


@dataclass
class EchoRoutes:
    """Answers `/now` at once with the body it got; holds `/later` until `release()`;
    refuses a declared body over 100 bytes, and `/refused` from its headers."""

    held: list[LeanRequest] = field(default_factory=list)
    admitted: list[bytes] = field(default_factory=list)

    def admit(self, request: LeanRequest, length: int | None) -> Rejection | None:
        self.admitted.append(request.target)
        if request.target == b"/refused":
            return Rejection(401, "no", [(b"WWW-Authenticate", b"Basic")])
        if length is not None and length > 100:
            return Rejection(413, "too big")
        request.max_body = 100
        return None

    def handle(self, request: LeanRequest) -> None:
        if request.target.startswith(b"/later"):
            self.held.append(request)
            return
        body = request.target + b":" + request.body
        request.channel.complete(request, request.channel.render(request, 200, [], body))

    def release(self) -> None:
        request = self.held.pop(0)
        request.channel.complete(request, request.channel.render(request, 200, [], b"late"))


class Transport(StringTransport):
    """A memory transport that lets reading be paused after loseConnection, as TCP does."""

    def pauseProducing(self) -> None:
        self.producerState = "paused"

    def resumeProducing(self) -> None:
        self.producerState = "producing"


@dataclass
class Conn:
    factory: LeanFactory
    channel: object
    transport: Transport

    def send(self, data: bytes) -> bytes:
        self.channel.dataReceived(data)  # type: ignore[attr-defined]
        out = self.transport.value()
        self.transport.clear()
        return out

    def lose(self) -> None:
        self.channel.connectionLost(Failure(ConnectionError("closed")))  # type: ignore[attr-defined]


@pytest.fixture
def routes() -> EchoRoutes:
    return EchoRoutes()


@pytest.fixture
def factory(routes: EchoRoutes) -> LeanFactory:
    return LeanFactory(routes, LIMITS, MemoryReactorClock())


def connect(factory: LeanFactory) -> Conn:
    channel = factory.buildProtocol(PEER)
    transport = Transport(peerAddress=PEER)
    channel.makeConnection(transport)
    return Conn(factory, channel, transport)


def get(path: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"GET %s HTTP/%s\r\nHost: x\r\n%s\r\n" % (path, version, extra)


def post(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)


def statuses(out: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.[01] (\d{3}) ", out)]


def bodies(out: bytes) -> list[bytes]:
    return re.findall(rb"\r\n\r\n([^H]*)", out)


# -- answers --------------------------------------------------------------------------------


def test_an_answer_names_no_software_and_carries_a_date(factory: LeanFactory) -> None:
    out = connect(factory).send(post(b"/now", b"hello"))
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"/now:hello"
    assert b"\r\nServer: ucupdates\r\n" in head and b"\r\nContent-Length: 10" in head
    assert re.search(rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", head)
    assert b"Connection: close" not in head


def test_keep_alive_http_1_0_and_connection_close(factory: LeanFactory) -> None:
    conn = connect(factory)
    assert statuses(conn.send(get(b"/now"))) == [200] and not conn.transport.disconnecting
    out = conn.send(get(b"/now", version=b"1.0"))
    assert out.startswith(b"HTTP/1.0 200 OK\r\n") and conn.transport.disconnecting
    closing = connect(factory)
    out = closing.send(get(b"/now", b"Connection: close\r\n") + get(b"/after"))
    assert statuses(out) == [200] and b"Connection: close\r\n" in out  # nothing after it
    assert closing.transport.disconnecting


def test_head_gets_the_length_without_the_body(factory: LeanFactory) -> None:
    out = connect(factory).send(b"HEAD /now HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.endswith(b"\r\n\r\n") and b"Content-Length: 5\r\n" in out


def test_an_admitted_request_expecting_100_continue_gets_it_before_its_body(
    factory: LeanFactory,
) -> None:
    conn = connect(factory)
    head = b"POST /now HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    assert conn.send(head) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert bodies(conn.send(b"ok")) == [b"/now:ok"]
    refused = connect(factory).send(head.replace(b"2\r\n", b"200\r\n"))
    assert statuses(refused) == [413] and b"100 Continue" not in refused


def test_options_star_is_an_empty_204_and_other_star_requests_400(factory: LeanFactory) -> None:
    conn = connect(factory)
    out = conn.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(out) == [204] and b"Content-Length" not in out
    assert statuses(conn.send(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n")) == [400]


def test_a_whole_response_is_remembered_for_its_second() -> None:
    reactor = MemoryReactorClock()
    rendered = Rendered(Dates(reactor.seconds))
    first = rendered.cached(200, (b"X: y",), b"answer", False, False)
    assert rendered.cached(200, (b"X: y",), b"answer", False, False) is first
    assert rendered.cached(200, (b"X: y",), b"answer", True, False) != first  # close
    reactor.advance(1)
    again = rendered.cached(200, (b"X: y",), b"answer", False, False)
    assert again is not first and again.replace(b"01 GMT", b"00 GMT") == first
    date = Dates(reactor.seconds).line()
    assert render(304, [], b"", date) == b"HTTP/1.1 304 Not Modified\r\n" + (
        b"Server: ucupdates\r\n" + date + b"\r\n"
    )


# -- pipelining -----------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(factory: LeanFactory) -> None:
    conn = connect(factory)
    out = conn.send(post(b"/now", b"1") + get(b"/now") + post(b"/now", b"3"))
    assert statuses(out) == [200, 200, 200]
    assert [b for b in bodies(out)] == [b"/now:1", b"/now:", b"/now:3"]


def test_a_request_behind_a_slow_one_waits_and_reading_stops(
    factory: LeanFactory, routes: EchoRoutes
) -> None:
    conn = connect(factory)
    assert conn.send(get(b"/later") + get(b"/now")) == b""
    assert conn.transport.producerState == "paused"  # nothing more read meanwhile
    routes.release()
    out = conn.transport.value()
    assert statuses(out) == [200, 200] and bodies(out) == [b"late", b"/now:"]
    assert conn.transport.producerState == "producing"


def test_a_refusal_behind_a_slow_request_comes_in_its_turn(
    factory: LeanFactory, routes: EchoRoutes
) -> None:
    conn = connect(factory)
    assert conn.send(get(b"/later") + post(b"/now", b"x" * 500)) == b""
    routes.release()
    assert statuses(conn.transport.value()) == [200, 413]
    assert conn.transport.disconnecting


def test_a_pipelined_request_s_clock_starts_at_its_turn(
    factory: LeanFactory, routes: EchoRoutes
) -> None:
    conn = connect(factory)
    reactor = factory.reactor
    conn.send(get(b"/later") + b"GET /now HTTP/1.1\r\n")  # the second one half sent
    reactor.advance(LIMITS.request_timeout + 5)  # the first takes its time
    assert conn.transport.value() == b"" and not conn.transport.disconnecting
    routes.release()
    reactor.advance(LIMITS.request_timeout - 1)
    assert statuses(conn.transport.value()) == [200] and not conn.transport.disconnecting
    reactor.advance(1)
    assert statuses(conn.transport.value()) == [200, 408] and conn.transport.disconnecting


def test_nothing_is_answered_while_the_client_takes_nothing(factory: LeanFactory) -> None:
    conn = connect(factory)
    channel: object = conn.channel
    channel.pauseProducing()  # type: ignore[attr-defined]  # the write buffer is full
    assert conn.send(get(b"/now") + get(b"/now")) == b""
    channel.resumeProducing()  # type: ignore[attr-defined]
    assert statuses(conn.transport.value()) == [200, 200]


def test_a_client_taking_answers_slowly_is_not_idle(factory: LeanFactory) -> None:
    conn = connect(factory)
    channel: Any = conn.channel
    full = conn.transport.write

    def write_and_fill(data: bytes) -> None:  # every answer fills the write buffer
        full(data)
        channel.pauseProducing()

    conn.transport.write = write_and_fill  # type: ignore[method-assign]
    channel.pauseProducing()
    conn.send(get(b"/now") * 3)
    for answered in range(1, 4):  # one answer every 10 s: 30 s in all, idle_timeout 15 s
        factory.reactor.advance(10)
        assert not conn.transport.disconnecting
        channel.resumeProducing()  # the client took what was written
        assert statuses(conn.transport.value()) == [200] * answered


def test_a_long_head_after_a_pipelined_request_is_not_miscounted(factory: LeanFactory) -> None:
    conn = connect(factory)
    first = post(b"/now", b"b" * 100)
    second = get(b"/now", b"X-Pad: " + b"p" * 600 + b"\r\n")  # under 1024 bytes
    data = first * 4 + second
    cut = len(data) - 200  # the second head arrives in two pieces
    assert conn.send(data[:cut]).count(b"HTTP/1.1 200") == 4
    assert statuses(conn.send(data[cut:])) == [200]


# -- limits and timers ----------------------------------------------------------------------


def test_refusals_from_the_headers_are_answered_and_reading_stops(
    factory: LeanFactory, routes: EchoRoutes
) -> None:
    conn = connect(factory)
    out = conn.send(b"POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
    assert statuses(out) == [401] and b"WWW-Authenticate: Basic\r\n" in out
    assert b"Connection: close\r\n" in out and conn.transport.disconnecting
    assert conn.transport.producerState == "paused"
    assert conn.send(get(b"/now")) == b"" and routes.admitted == [b"/refused"]
    assert not conn.transport.disconnected
    factory.reactor.advance(1)  # LINGER_SECONDS: cut
    assert conn.transport.disconnected


def test_a_chunked_body_is_refused_when_it_passes_the_limit(factory: LeanFactory) -> None:
    conn = connect(factory)
    head = b"POST /now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert conn.send(head + b"40\r\n" + b"a" * 64 + b"\r\n") == b""
    assert statuses(conn.send(b"40\r\n" + b"a" * 64 + b"\r\n")) == [413]


@pytest.mark.parametrize(
    "pieces",
    [
        [b"GET /now HTTP/1.1\r\nX-Long: " + b"a" * 2000],  # one line, no end yet
        [b"GET /now HTTP/1.1\r\nX-Long: " + b"a" * 600, b"a" * 600],  # over two pieces
        [b"GET /now HTTP/1.1\r\n" + b"X-Many: aaaaaaaaaa\r\n" * 60],  # many lines
        [b"GET /" + b"u" * 2000 + b" HTTP/1.1\r\n\r\n"],  # the request line
    ],
    ids=["long-line", "two-pieces", "many-lines", "request-line"],
)
def test_heads_over_the_limit_get_431_at_once(factory: LeanFactory, pieces: list[bytes]) -> None:
    conn = connect(factory)
    out = b"".join(conn.send(piece) for piece in pieces)
    assert statuses(out) == [431] and conn.transport.disconnecting


def test_malformed_requests_get_400(factory: LeanFactory) -> None:
    conn = connect(factory)
    out = conn.send(b"GET /now HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
    assert statuses(out) == [400] and conn.transport.disconnecting


def test_a_request_must_arrive_within_the_request_timeout(factory: LeanFactory) -> None:
    conn = connect(factory)
    conn.send(b"GET /now HTTP/1.1\r\n")
    for _ in range(5):  # trickling bytes does not move the clock
        factory.reactor.advance(LIMITS.request_timeout / 6)
        conn.send(b"X: y\r\n")
    assert not conn.transport.disconnecting
    factory.reactor.advance(LIMITS.request_timeout / 6)
    assert statuses(conn.transport.value()) == [408] and conn.transport.disconnecting


def test_an_idle_keep_alive_connection_closes(factory: LeanFactory) -> None:
    conn = connect(factory)
    conn.send(get(b"/now"))
    factory.reactor.advance(LIMITS.idle_timeout - 1)
    assert not conn.transport.disconnecting
    factory.reactor.advance(1)
    assert conn.transport.disconnecting and conn.transport.value() == b""
    factory.reactor.advance(1)
    assert conn.transport.disconnected  # cut, if the client held it open


def test_connections_over_the_limit_are_aborted_and_slots_come_back(
    factory: LeanFactory,
) -> None:
    first, second = connect(factory), connect(factory)
    third = connect(factory)
    assert third.transport.disconnected and factory.open_connections == 2
    first.lose()
    first.lose()  # counted once
    assert factory.open_connections == 1
    assert not connect(factory).transport.disconnected
    second.lose()


def test_a_connection_lost_while_answering_tells_the_answer(
    factory: LeanFactory, routes: EchoRoutes
) -> None:
    conn = connect(factory)
    conn.send(get(b"/later"))
    lost: list[bool] = []
    routes.held[0].on_lost = lambda: lost.append(True)
    conn.lose()
    routes.release()  # answering a gone connection writes nothing
    assert lost == [True] and conn.transport.value() == b""


def test_a_failing_route_is_a_500_and_the_connection_goes_on(
    factory: LeanFactory, routes: EchoRoutes, monkeypatch: pytest.MonkeyPatch
) -> None:
    original: Callable[[LeanRequest], None] = routes.handle

    def handle(request: LeanRequest) -> None:
        if request.target == b"/boom":
            raise RuntimeError("a defect")
        original(request)

    monkeypatch.setattr(routes, "handle", handle)
    conn = connect(factory)
    assert statuses(conn.send(get(b"/boom") + get(b"/now"))) == [500, 200]
