"""The DNS responder's guards (docs/security.md), without sockets: no open resolver,
and TCP connections that trickle bytes are closed.

Forwarding: a DnsResponder with a real Forwarder on a fake reactor, whose `sent` list
counts every datagram that would reach an upstream. TCP: the real DnsStreamFactory and
protocol on a StringTransport, with twisted's Clock as the reactor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dnslib import RCODE, DNSRecord
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from appliance.config import Address, DnsSettings, Network, ZoneSettings, load_config
from appliance.discovery.dns_answer import Action, Addresses, AnswerTable, respond
from appliance.discovery.dns_forward import FRAME, Forwarder
from appliance.discovery.dns_limits import classify
from appliance.discovery.dns_listeners import DnsStreamFactory, DnsStreamProtocol
from appliance.discovery.dns_responder import DnsResponder

INTERNAL_V4, EXTERNAL_V4 = "10.0.0.5", "203.0.113.5"
OURS = "ucupdates-r2.example.com"
INSIDE, OUTSIDE = "127.0.0.1", "127.0.0.2"  # internal networks: 127.0.0.1/32 only
ZONES = ZoneSettings(internal_networks=(Network.parse("127.0.0.1/32"),))
UPSTREAM = Address("127.0.0.53", 5353)
TABLE = AnswerTable.build(
    ("example.com",), Addresses(INTERNAL_V4), Addresses(EXTERNAL_V4), forwarding=True
)


def query(name: str, qtype: str = "A", ident: int = 0x1234) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = ident
    return bytes(q.pack())


class FakePort:
    def __init__(self, sent: list[tuple[bytes, tuple[str, int]]]) -> None:
        self.sent = sent

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def stopListening(self) -> None:
        pass


class FakeReactor(Clock):
    """Clock, and UDP ports whose datagrams to the upstream land in `sent`."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "") -> FakePort:
        protocol.transport = FakePort(self.sent)
        return protocol.transport  # type: ignore[no-any-return]


def forwarding_responder(
    reactor: FakeReactor, zones: ZoneSettings = ZONES, **dns: Any
) -> DnsResponder:
    settings = DnsSettings(
        internal_address=INTERNAL_V4, external_address=EXTERNAL_V4, upstreams=(UPSTREAM,), **dns
    )
    forwarder = Forwarder(reactor, settings.upstreams)
    forwarder.start()
    internal = Addresses(INTERNAL_V4)
    return DnsResponder(settings, ("example.com",), zones, internal, reactor.seconds, forwarder)


def ask(r: DnsResponder, packet: bytes, host: str) -> list[DNSRecord]:
    replies: list[bytes] = []
    r.handle(packet, host, False, replies.append)
    return [DNSRecord.parse(reply) for reply in replies]


# -- no open resolver -----------------------------------------------------------------------


def test_an_outside_client_is_refused_other_names_and_nothing_reaches_the_upstream() -> None:
    """No open resolver: every client's other names used to go to the upstreams."""
    reactor = FakeReactor()
    r = forwarding_responder(reactor)
    [reply] = ask(r, query("example.org"), OUTSIDE)
    assert RCODE[reply.header.rcode] == "REFUSED" and reply.header.ra == 0
    assert reactor.sent == [] and r.counters["forwarded"] == 0
    [reply] = ask(r, query("example.org", "MX", ident=2), OUTSIDE)  # any type, any name
    assert RCODE[reply.header.rcode] == "REFUSED" and reactor.sent == []
    # its own names are still answered for everyone, with the external view
    [own] = ask(r, query(OURS), OUTSIDE)
    assert RCODE[own.header.rcode] == "NOERROR" and str(own.rr[0].rdata) == EXTERNAL_V4
    # an inside client's other names are forwarded
    assert ask(r, query("example.org", ident=3), INSIDE) == []  # waiting for the upstream
    assert [addr for _, addr in reactor.sent] == [("127.0.0.53", 5353)]
    assert r.counters["forwarded"] == 1


def test_a_cached_refusal_is_not_served_to_a_client_that_may_recurse() -> None:
    """REFUSED for an outside client, cached, must not answer an inside client's query."""
    reactor = FakeReactor()
    r = forwarding_responder(reactor)
    for ident in (1, 2):
        [reply] = ask(r, query("example.org", ident=ident), OUTSIDE)
        assert RCODE[reply.header.rcode] == "REFUSED"
    assert r.counters["cache_hits"] == 1
    assert ask(r, query("example.org", ident=3), INSIDE) == [] and len(reactor.sent) == 1


def test_forward_networks_narrow_who_recurses() -> None:
    """dns.forward_networks: an internal client outside them gets REFUSED for other names
    but the internal view for ours."""
    reactor = FakeReactor()
    zones = ZoneSettings(internal_networks=(Network.parse("127.0.0.0/8"),))
    r = forwarding_responder(reactor, zones, forward_networks=(Network.parse("127.0.0.1/32"),))
    [reply] = ask(r, query("example.org"), OUTSIDE)
    assert RCODE[reply.header.rcode] == "REFUSED" and reactor.sent == []
    [own] = ask(r, query(OURS), OUTSIDE)
    assert str(own.rr[0].rdata) == INTERNAL_V4  # still an internal client
    assert ask(r, query("example.org", ident=2), INSIDE) == [] and len(reactor.sent) == 1


@pytest.mark.parametrize(
    ("host", "forward", "internal", "recurse"),
    [
        ("10.1.2.3", None, True, True),  # default: the internal networks recurse
        ("203.0.113.9", None, False, False),
        ("::ffff:10.1.2.3", None, True, True),
        ("10.1.2.3", ("10.9.0.0/16",), True, False),
        ("203.0.113.9", ("203.0.113.0/24",), False, True),  # an admin's choice
        ("fd00::1", (), True, False),  # []: nobody recurses
    ],
)
def test_clients_that_may_recurse(
    host: str, forward: tuple[str, ...] | None, internal: bool, recurse: bool
) -> None:
    networks = None if forward is None else tuple(Network.parse(n) for n in forward)
    client = classify(host, load_config(None).zones, networks)
    assert (client.internal, client.recurse) == (internal, recurse)


def test_respond_refuses_other_names_without_recursion() -> None:
    outcome = respond(query("www.example.org"), False, False, TABLE, recurse=False)
    reply = DNSRecord.parse(outcome.reply)
    assert outcome.action is Action.REPLY and RCODE[reply.header.rcode] == "REFUSED"
    assert reply.header.ra == 0 and reply.header.aa == 0
    assert respond(query("www.example.org"), False, False, TABLE).action is Action.FORWARD
    own = DNSRecord.parse(respond(query(OURS, "AAAA"), False, False, TABLE, False).reply)
    assert RCODE[own.header.rcode] == "NOERROR" and own.header.aa == 1  # ours: NODATA


def test_forward_networks_come_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "ucupdates.toml"
    path.write_text('data_dir = "d"\n[dns]\nforward_networks = ["10.1.0.0/16", "fd00::/8"]\n')
    assert [str(n) for n in load_config(path).dns.forward_networks or ()] == [
        "10.1.0.0/16",
        "fd00::/8",
    ]
    assert load_config(None).dns.forward_networks is None  # default: zones.internal_networks


# -- TCP: trickling clients and old connections -------------------------------------------------


def stream(reactor: Clock, **dns: Any) -> tuple[DnsStreamProtocol, StringTransport, DnsResponder]:
    settings = DnsSettings(internal_address=INTERNAL_V4, **dns)
    r = DnsResponder(settings, ("example.com",), ZONES, Addresses(INTERNAL_V4), reactor.seconds)
    factory = DnsStreamFactory(r, settings, reactor)
    protocol = factory.buildProtocol(IPv4Address("TCP", INSIDE, 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", INSIDE, 40000))
    protocol.makeConnection(transport)
    return protocol, transport, r


def framed(packet: bytes) -> bytes:
    return FRAME.pack(len(packet)) + packet


def test_a_client_trickling_one_byte_at_a_time_is_closed_after_the_idle_timeout() -> None:
    """Slowloris over TCP: one byte every 8 s kept a connection open past the 10 s timeout."""
    reactor = Clock()
    protocol, transport, r = stream(reactor, tcp_idle_timeout=10.0)
    partial = framed(query(OURS))[:-1]  # never completed
    sent = 0
    for byte in partial[:4]:  # at most 4 bytes: 32 s of trickling
        if transport.disconnecting:
            break
        protocol.dataReceived(bytes([byte]))
        sent += 1
        reactor.advance(8.0)
    assert transport.disconnecting and sent == 2  # closed at 10 s, before the third byte
    assert r.counters["tcp_idle_closed"] == 1 and r.counters["tcp_queries"] == 0


def test_complete_queries_keep_a_connection_until_its_lifetime() -> None:
    reactor = Clock()
    protocol, transport, r = stream(reactor, tcp_idle_timeout=10.0, tcp_max_lifetime=60.0)
    protocol.dataReceived(framed(query(OURS)))
    assert DNSRecord.parse(transport.value()[2:]).rr  # answered
    for step in range(1, 20):  # a complete query every 8 s: never idle
        reactor.advance(8.0)
        if transport.disconnecting:
            break
        protocol.dataReceived(framed(query(OURS, ident=step)))
    assert transport.disconnecting and reactor.seconds() == 64.0  # the first step past 60 s
    assert r.counters["tcp_lifetime_closed"] == 1 and r.counters["tcp_idle_closed"] == 0
    assert not transport.disconnected
    reactor.advance(10.0)  # the peer does not let go: cut off
    assert transport.disconnected  # StringTransport's mark of abortConnection


def test_a_forwarded_answer_counts_as_activity() -> None:
    """The idle clock starts again when an answer goes out, not only when a query comes in."""
    reactor = Clock()
    protocol, transport, _ = stream(reactor, tcp_idle_timeout=10.0)
    protocol.dataReceived(framed(query(OURS)))
    reactor.advance(9.0)
    protocol._write(b"\x00" * 12)  # an upstream's late answer
    reactor.advance(9.0)
    assert not transport.disconnecting
    reactor.advance(1.5)
    assert transport.disconnecting


def test_one_address_cannot_take_every_tcp_connection() -> None:
    """dns.max_tcp_per_client: a slowloris from one address is refused past its share;
    another address still gets in; a closed connection frees its share."""
    reactor = Clock()
    settings = DnsSettings(internal_address=INTERNAL_V4, max_tcp_per_client=3)
    r = DnsResponder(settings, ("example.com",), ZONES, Addresses(INTERNAL_V4), reactor.seconds)
    factory = DnsStreamFactory(r, settings, reactor)

    def connect(host: str) -> tuple[DnsStreamProtocol, StringTransport]:
        peer = IPv4Address("TCP", host, 40000)
        protocol, transport = factory.buildProtocol(peer), StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    held = [connect(OUTSIDE) for _ in range(5)]
    assert [t.disconnecting for _, t in held] == [False] * 3 + [True] * 2
    assert r.counters["tcp_refused_per_client"] == 2
    _, other = connect(INSIDE)
    assert not other.disconnecting
    held[0][0].connectionLost()
    _, again = connect(OUTSIDE)
    assert not again.disconnecting and factory.per_client == {OUTSIDE: 3, INSIDE: 1}
