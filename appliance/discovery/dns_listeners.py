"""The DNS responder's listeners: UDP datagrams and TCP streams to and from DnsResponder.

Over UDP each datagram is one query, answered with the socket's own sendto. Over TCP
queries are framed by a 2-byte length and may be pipelined; connections are limited in
number (`dns.max_tcp_connections`, and `dns.max_tcp_per_client` from one address),
closed when idle (`dns.tcp_idle_timeout` after the last complete query or answer: a byte
trickling in every few seconds does not keep a connection open) and in any case after
`dns.tcp_max_lifetime`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import udp
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import (
    DatagramProtocol,
    Protocol,
    ServerFactory,
    connectionDone,
)
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from appliance.config import DnsSettings
from appliance.discovery.dns_forward import FRAME
from appliance.discovery.dns_responder import DnsResponder

log = Logger(namespace="ucupdates.dns")


def listen_udp(reactor: Any, port: int, protocol: DnsDatagramProtocol, interface: str) -> Any:
    """`reactor.listenUDP`, with DnsUdpPort on the real (posix) reactors."""
    if not isinstance(reactor, PosixReactorBase):
        return reactor.listenUDP(port, protocol, interface=interface)
    listening = DnsUdpPort(port, protocol, interface, reactor=reactor)  # type: ignore[no-untyped-call]
    listening.startListening()  # type: ignore[no-untyped-call]
    return listening


class DnsUdpPort(udp.Port):
    """Twisted's UDP port, whose read loop answers each datagram itself: what its own loop
    and DnsDatagramProtocol.datagramReceived do, with less on the way, since most DNS
    queries cost less than the calls around them. It reads until the socket is empty, or
    after a batch lets the reactor see to the other sockets."""

    BATCH = 256

    def doRead(self) -> None:
        protocol: DnsDatagramProtocol = self.protocol
        answer, write = protocol.responder.datagram, protocol.write_later
        counters = protocol.responder.counters
        receive, send, size = self.socket.recvfrom, self.socket.sendto, self.maxPacketSize
        six = self.addressFamily == socket.AF_INET6
        for _ in range(self.BATCH):
            try:
                data, addr = receive(size)
            except OSError:  # empty (EAGAIN), or an ICMP error for an earlier answer
                return
            if six:
                addr = addr[:2]  # no flow and scope IDs, as udp.Port gives them
            try:
                reply = answer(data, addr, write)
            except Exception:
                log.failure("dns: answering a datagram from {addr}", addr=addr)
                continue
            if reply is not None:
                try:
                    send(reply, addr)
                except OSError:  # the socket's buffer is full: like a datagram lost
                    counters["send_errors"] += 1


class DnsDatagramProtocol(DatagramProtocol):
    transport: Any
    noisy = False

    def __init__(self, responder: DnsResponder) -> None:
        self.responder = responder
        self._datagram = responder.datagram
        self._sendto: Callable[[bytes, Any], int] = lambda data, addr: 0

    def startProtocol(self) -> None:
        # The socket's own sendto: Twisted's write() checks the address text on every
        # datagram, which costs a tenth of the time of a cached answer.
        self._sendto = self.transport.socket.sendto

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        reply = self._datagram(datagram, addr, self.write_later)
        if reply is not None:
            try:
                self._sendto(reply, addr)
            except OSError:  # the socket's buffer is full: like a datagram lost on the way
                self.responder.counters["send_errors"] += 1

    def write_later(self, reply: bytes, addr: Any) -> None:
        """A reply that comes later (an upstream's answer)."""
        try:
            self._sendto(reply, addr)
        except OSError:
            self.responder.counters["send_errors"] += 1


class DnsStreamProtocol(Protocol, TimeoutMixin):
    """Queries framed by a 2-byte length, pipelined; answers in the order they are ready.

    It is the (streaming) producer of its own answers: when the client does not read them
    and the transport's buffer fills, reading its queries pauses until the buffer drains.
    """

    transport: Any

    def __init__(self, factory: DnsStreamFactory) -> None:
        self.owner, self.buffer = factory, b""
        self.admitted = self.closing = False
        self.host = ""  # the peer's address, once admitted
        self.lifetime: Any = None  # the call that ends the connection at tcp_max_lifetime

    def connectionMade(self) -> None:
        self.admitted = self.owner.admit(self)
        if not self.admitted:
            self.closing = True
            self.transport.loseConnection()
            return
        self.transport.registerProducer(self, True)
        self.setTimeout(self.owner.idle_timeout)  # type: ignore[no-untyped-call]
        self.lifetime = self.owner.reactor.callLater(self.owner.max_lifetime, self._expired)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()  # stop reading queries

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        buffer, start = self.buffer + data, 0
        host = self.host
        while len(buffer) - start >= 2:  # each turn takes one frame
            end = start + 2 + FRAME.unpack_from(buffer, start)[0]
            if len(buffer) < end:
                break
            self.owner.responder.handle(buffer[start + 2 : end], host, True, self._write)
            start = end
        if start:  # a complete query came in: not idle (a trickle of bytes is)
            self.resetTimeout()  # type: ignore[no-untyped-call]
        self.buffer = buffer[start:]

    def _write(self, reply: bytes) -> None:
        if not self.closing and self.transport.connected:
            self.resetTimeout()  # type: ignore[no-untyped-call]  # e.g. a forwarded answer
            self.transport.write(FRAME.pack(len(reply)) + reply)

    def timeoutConnection(self) -> None:
        """Idle: close; if the peer does not let us (unread answers), cut it off next time."""
        self._close("tcp_idle_closed")

    def _expired(self) -> None:
        self.lifetime = None
        self._close("tcp_lifetime_closed")

    def _close(self, counter: str) -> None:
        if self.closing:
            self.transport.abortConnection()
            return
        self.closing = True
        self.owner.responder.counters[counter] += 1
        self.transport.loseConnection()
        self.setTimeout(self.owner.idle_timeout)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        if self.lifetime is not None and self.lifetime.active():
            self.lifetime.cancel()
        self.lifetime = None
        if self.admitted:
            self.admitted = False
            self.owner.release(self)


class DnsStreamFactory(ServerFactory):
    noisy = False

    def __init__(self, responder: DnsResponder, settings: DnsSettings, reactor: Any) -> None:
        self.responder, self.reactor = responder, reactor
        self.idle_timeout = settings.tcp_idle_timeout
        self.max_lifetime = settings.tcp_max_lifetime
        self.max_connections = settings.max_tcp_connections
        self.max_per_client = settings.max_tcp_per_client
        self.connections: set[DnsStreamProtocol] = set()
        self.per_client: dict[str, int] = {}  # open connections by peer address

    def buildProtocol(self, addr: Any) -> DnsStreamProtocol:
        protocol = DnsStreamProtocol(self)
        protocol.callLater = self.reactor.callLater  # type: ignore[method-assign]
        return protocol

    def admit(self, protocol: DnsStreamProtocol) -> bool:
        host = protocol.transport.getPeer().host
        if len(self.connections) >= self.max_connections:
            self.responder.counters["tcp_refused"] += 1
            return False
        if self.per_client.get(host, 0) >= self.max_per_client:
            self.responder.counters["tcp_refused_per_client"] += 1
            return False
        self.responder.counters["tcp_connections"] += 1
        self.connections.add(protocol)
        self.per_client[host] = self.per_client.get(host, 0) + 1
        protocol.host = host
        return True

    def release(self, protocol: DnsStreamProtocol) -> None:
        self.connections.discard(protocol)
        left = self.per_client.pop(protocol.host, 0) - 1
        if left > 0:
            self.per_client[protocol.host] = left

    def close_all(self) -> None:
        for protocol in list(self.connections):
            if protocol.transport is not None:
                protocol.transport.abortConnection()
