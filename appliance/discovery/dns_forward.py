"""The upstream forwarder of the DNS responder: every name it does not answer itself.

`Forwarder` sends a query to `dns.upstreams` over UDP (random IDs and source ports,
timeouts, a bounded table of outstanding queries; TCP when an answer comes back truncated)
and calls `done(answer)`, or `done(None)` when no upstream answers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.protocol import ClientFactory, DatagramProtocol, Protocol, connectionDone
from twisted.python.failure import Failure

from appliance.config import Address
from appliance.discovery.dns_answer import TC, same_question

UPSTREAM_TIMEOUT = 1.5  # seconds for one try of one upstream
MAX_OUTSTANDING = 4096  # forwarded queries waiting for an upstream
UPSTREAM_SOCKETS = 4  # per address family: the source port is one of them, at random
FRAME = struct.Struct("!H")


@dataclass
class _Pending:
    query: bytes  # with our ID
    end: int  # the question's end
    done: Callable[[bytes | None], None]
    attempt: int = 0
    timer: Any = None
    socket: int = -1  # which of our sockets it went out on
    connector: Any = None  # the TCP retry of a truncated answer, once under way


class Forwarder:
    """Asks the upstreams in turn; calls `done(answer)` or `done(None)` exactly once."""

    def __init__(
        self,
        reactor: Any,
        upstreams: tuple[Address, ...],
        timeout: float = UPSTREAM_TIMEOUT,
        max_outstanding: int = MAX_OUTSTANDING,
        on_timeout: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.reactor, self.upstreams, self.timeout = reactor, upstreams, timeout
        self.max_outstanding, self.on_timeout = max_outstanding, on_timeout
        self.attempts = min(3, len(upstreams) + 1)
        self._random = random.SystemRandom()
        self._pending: dict[int, _Pending] = {}
        self._sockets: dict[int, list[Any]] = {4: [], 6: []}

    def start(self) -> None:
        versions = {ipaddress.ip_address(u.host).version for u in self.upstreams}
        for version in sorted(versions):
            interface = "0.0.0.0" if version == 4 else "::"  # noqa: S104 - source sockets
            for index in range(UPSTREAM_SOCKETS):
                protocol = _UpstreamSocket(self, version * 100 + index)
                port = self.reactor.listenUDP(0, protocol, interface=interface)
                self._sockets[version].append(port)

    def stop(self) -> None:
        for pending in list(self._pending.values()):
            self._drop(pending)
        self._pending.clear()
        for ports in self._sockets.values():
            for port in ports:
                port.stopListening()
            ports.clear()

    def forward(self, query: bytes, end: int, done: Callable[[bytes | None], None]) -> bool:
        if len(self._pending) >= self.max_outstanding:
            return False
        for _ in range(16):
            ident = self._random.getrandbits(16)
            if ident not in self._pending:
                break
        else:
            return False
        pending = _Pending(FRAME.pack(ident) + query[2:], end, done)
        self._pending[ident] = pending
        self._send(ident, pending)
        return True

    def _upstream(self, pending: _Pending) -> Address:
        return self.upstreams[pending.attempt % len(self.upstreams)]

    def _send(self, ident: int, pending: _Pending) -> None:
        upstream = self._upstream(pending)
        version = ipaddress.ip_address(upstream.host).version
        index = self._random.randrange(len(self._sockets[version]))
        pending.socket = version * 100 + index
        pending.timer = self.reactor.callLater(self.timeout, self._timed_out, ident)
        with contextlib.suppress(OSError):  # as if lost: the timer tries the next upstream
            self._sockets[version][index].write(pending.query, (upstream.host, upstream.port))

    def _timed_out(self, ident: int) -> None:
        pending = self._pending.get(ident)
        if pending is None:
            return
        pending.timer = None
        pending.attempt += 1
        if pending.attempt < self.attempts and pending.connector is None:
            self._send(ident, pending)
            return
        self._finish(ident, None)
        self.on_timeout(_name_of(pending.query, pending.end))

    def datagram(self, data: bytes, addr: tuple[str, int], socket: int) -> None:
        """An upstream's answer on one of our sockets: checked, then finished or retried."""
        if len(data) < 12:
            return
        ident = FRAME.unpack_from(data)[0]
        pending = self._pending.get(ident)
        if pending is None or pending.socket != socket or pending.connector is not None:
            return
        upstream = self._upstream(pending)
        if (ipaddress.ip_address(addr[0]), addr[1]) != (
            ipaddress.ip_address(upstream.host),
            upstream.port,
        ) or not same_question(pending.query, data, pending.end):
            return  # not the answer we wait for: a stray or a spoof
        if FRAME.unpack_from(data, 2)[0] & TC:
            self._retry_over_tcp(ident, pending, upstream)
            return
        self._finish(ident, data)

    def _retry_over_tcp(self, ident: int, pending: _Pending, upstream: Address) -> None:
        pending.timer.cancel()
        pending.timer = self.reactor.callLater(self.timeout, self._timed_out, ident)
        factory = _StreamFactory(self, ident)
        pending.connector = self.reactor.connectTCP(
            upstream.host, upstream.port, factory, timeout=self.timeout
        )

    def stream_answer(self, ident: int, data: bytes | None) -> None:
        """The TCP retry's answer, or None when it failed: finishes either way."""
        pending = self._pending.get(ident)
        if pending is None or pending.connector is None:
            return
        if data is not None and data[:2] == pending.query[:2]:
            self._finish(ident, data if same_question(pending.query, data, pending.end) else None)
        else:
            self._finish(ident, None)

    def stream_query(self, ident: int) -> bytes | None:
        pending = self._pending.get(ident)
        return None if pending is None else pending.query

    def _finish(self, ident: int, answer: bytes | None) -> None:
        pending = self._pending.pop(ident)
        self._drop(pending)
        pending.done(answer)

    def _drop(self, pending: _Pending) -> None:
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        pending.timer = None
        if pending.connector is not None:
            connector, pending.connector = pending.connector, None
            connector.disconnect()


def _name_of(query: bytes, end: int) -> str:
    labels, offset = [], 12
    for _ in range(128):
        length = query[offset] if offset < end else 0
        if not length or length & 0xC0:
            break
        labels.append(query[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    return ".".join(labels) + "."


class _UpstreamSocket(DatagramProtocol):
    transport: Any
    noisy = False

    def __init__(self, forwarder: Forwarder, socket: int) -> None:
        self.forwarder, self.socket = forwarder, socket

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.forwarder.datagram(datagram, addr, self.socket)


class _StreamClient(Protocol):
    """One query over TCP to an upstream, one answer back."""

    transport: Any

    def __init__(self, forwarder: Forwarder, ident: int) -> None:
        self.forwarder, self.ident, self.buffer, self.answered = forwarder, ident, b"", False

    def connectionMade(self) -> None:
        query = self.forwarder.stream_query(self.ident)
        if query is None:
            self.transport.abortConnection()
            return
        self.transport.write(FRAME.pack(len(query)) + query)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= 2 and len(self.buffer) >= 2 + FRAME.unpack_from(self.buffer)[0]:
            self.answered = True
            frame = self.buffer[2 : 2 + FRAME.unpack_from(self.buffer)[0]]
            self.transport.loseConnection()
            self.forwarder.stream_answer(self.ident, frame)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.answered:
            self.answered = True
            self.forwarder.stream_answer(self.ident, None)


class _StreamFactory(ClientFactory):
    noisy = False

    def __init__(self, forwarder: Forwarder, ident: int) -> None:
        self.forwarder, self.ident = forwarder, ident

    def buildProtocol(self, addr: Any) -> Protocol:
        return _StreamClient(self.forwarder, self.ident)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.forwarder.stream_answer(self.ident, None)
