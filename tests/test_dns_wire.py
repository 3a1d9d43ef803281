"""The DNS responder's cheap paths give the bytes of the full path through dnslib.

A corpus of queries (our names and others, in mixed letter case, odd flags and opcodes,
EDNS with and without DO, options, bad versions, several questions or OPT records,
compression pointers, non-ASCII and over-long names, cut and padded packets) goes
through `respond` with and without its dnslib-free path, through the reply cache under
another ID and spelling, and through the responder's UDP entry (`datagram`) beside
`handle`; every reply must be the same bytes.
"""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RR, A, DNSRecord, EDNSOption
from twisted.logger import capturedLogs

from appliance.config import DnsSettings, Network, ZoneSettings
from appliance.discovery.dns_answer import Addresses, AnswerTable, respond
from appliance.discovery.dns_limits import ReplyCache
from appliance.discovery.dns_listeners import DnsDatagramProtocol, DnsUdpPort
from appliance.discovery.dns_responder import DnsResponder
from appliance.discovery.dns_wire import read_question

NAME = "ucupdates-r2.example.com"
TABLES = {
    "forwarding": AnswerTable.build(
        ("example.com", "contoso.com"),
        Addresses("10.0.0.5", "fd00::5"),
        Addresses("203.0.113.5"),
        serial=42,
        forwarding=True,
    ),
    "v4-only": AnswerTable.build(("example.com",), Addresses("10.0.0.5"), Addresses()),
    "v6-only": AnswerTable.build(("example.com",), Addresses(None, "fd00::5"), Addresses()),
}


def query(
    name: str = NAME,
    qtype: str | int = "A",
    *,
    ident: int = 0x1234,
    flags: int = 0x0100,
    edns: int | None = None,
    do: bool = False,
    version: int = 0,
    qclass: int = 1,
) -> bytes:
    """Packed by hand, so that names dnslib would not pack (over 253 characters) can be."""
    labels = [label.encode() for label in name.split(".") if label]
    wire = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    number = qtype if isinstance(qtype, int) else getattr(QTYPE, qtype)
    packet = struct.pack("!6H", ident, flags, 1, 0, 0, int(edns is not None)) + wire
    packet += struct.pack("!HH", number, qclass)
    if edns is not None:
        ttl = version << 16 | (0x8000 if do else 0)
        packet += b"\x00" + struct.pack("!HHIH", 41, edns, ttl, 0)
    return packet


def spelled(name: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


def _raw(name_wire: bytes, tail: bytes = b"\x00\x01\x00\x01", counts: bytes = b"") -> bytes:
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    return (header[:4] + counts + header[4 + len(counts) :]) + name_wire + tail


def corpus() -> list[bytes]:
    rng = random.Random(14)
    names = [
        NAME,
        "UCUPDATES-R2.EXAMPLE.COM",
        spelled(NAME, rng),
        "ucupdates.contoso.com",
        "UcUpdates.Contoso.Com",
        "x.ucupdates-r2.example.com",
        "A.b.UcUpDaTeS-r2.ExAmPlE.cOm",
        "ucupdates-r2.example.com.ucupdates-r2.example.com",
        "www.example.org",
        "WWW.Example.ORG",
        "example.com",
        "xucupdates-r2.example.com",
        "_sipinternaltls._tcp.example.com",
        ".",
        "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61,  # 253 characters
        "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62,  # 254: FORMERR
        "x" * 50 + "." + "y" * 50 + "." + "z" * 50 + "." + NAME,  # a long NXDOMAIN
    ]
    qtypes: list[str | int] = ["A", "AAAA", "ANY", "SOA", "NS", "MX", "TXT", "AXFR", "IXFR"]
    qtypes += [0, 65, 0x4142, 65535]  # 65 and 0x4142 are capital letters as bytes
    packets = [query(name, qtype) for name in names for qtype in qtypes]
    for name in (NAME, spelled(NAME, rng), "www.example.org", "x." + NAME):
        for flags in (0x0000, 0x0100, 0x0110, 0x0130, 0x0500, 0x0300, 0x01C0, 0x0140):
            packets.append(query(name, flags=flags))  # RD, CD, AD, AA, TC, RA, Z
        for opcode in (1, 2, 4, 5, 15):
            packets.append(query(name, flags=0x0100 | opcode << 11))
        for qclass in (1, 3, 4, 254, 255, 0x4141):
            packets.append(query(name, qclass=qclass))
        for size in (0, 100, 512, 1232, 4096, 65535):
            for do in (False, True):
                packets.append(query(name, "AAAA", edns=size, do=do))
        packets.append(query(name, edns=1232, version=1))  # BADVERS
        packets.append(query(name, edns=1232, version=1, flags=0x2100))  # and an opcode
        packets.append(query(name, flags=0x8100))  # a response: dropped
        with_cookie = DNSRecord.parse(query(name, edns=1232))
        with_cookie.ar[0].rdata.append(EDNSOption(10, b"\x01" * 8))
        packets.append(bytes(with_cookie.pack()))
        two_opts = DNSRecord.parse(query(name, edns=1232))
        two_opts.add_ar(EDNS0(udp_len=512))
        packets.append(bytes(two_opts.pack()))
        other_ar = DNSRecord.parse(query(name))
        other_ar.add_ar(RR("x.example", QTYPE.A, rdata=A("192.0.2.1")))
        packets.append(bytes(other_ar.pack()))
        named_opt = DNSRecord.parse(query(name))
        named_opt.add_ar(RR("x.example", QTYPE.OPT, rclass=1232, rdata=[]))
        packets.append(bytes(named_opt.pack()))
        two_questions = DNSRecord.parse(query(name))
        two_questions.add_question(DNSRecord.question("www.example.org").q)
        packets.append(bytes(two_questions.pack()))
        base = query(name, edns=1232)
        packets += [base[:cut] for cut in range(0, len(base), 3)]  # cut anywhere
        packets += [base + b"\x00", query(name) + b"junk", query(name)[:-4] + b"\x00\x01"]
    wire = b"\x0cucupdates-r2\x07example\x03com\x00"
    packets += [
        _raw(b"\xc0\x0c"),  # a pointer to itself
        _raw(b"\xc0\x02"),  # into the header
        _raw(b"\x01x\xc0\x0c"),  # a label, then a pointer back
        _raw(b"\x01x\xc0\x20"),  # a pointer forwards
        _raw(b"\x41" + b"a" * 65 + b"\x00"),  # a label type 0b01
        _raw(b"\x81" + b"a" * 10 + b"\x00"),  # a label type 0b10
        _raw(b"\x03\xc3\xa9x" + wire),  # UTF-8 below our name
        _raw(b"\x02\xff\xfe" + wire),  # not UTF-8: dnslib drops it
        _raw(b"\x03a\x00b" + wire),  # a zero byte inside a label
        _raw(b"\x03a.b" + wire),  # a dot inside a label
        _raw(b"\x03A.b" + b"\x03www\x07example\x03org\x00"),
        _raw(wire, counts=b"\x00\x00"),  # no question
        _raw(wire, counts=b"\x00\x01\x00\x01"),  # an answer record in a query
        _raw(wire, counts=b"\x00\x01\x00\x00\x00\x01"),  # an authority record
        _raw(wire, counts=b"\x00\x01\x00\x00\x00\x00\x00\x05"),  # five additional
    ]
    return packets


CORPUS = corpus()


def test_the_corpus_reaches_every_kind_of_reply() -> None:
    kinds = {respond(p, True, False, TABLES["forwarding"]).kind for p in CORPUS}
    assert kinds >= {
        "answer",
        "nodata",
        "nxdomain",
        "refused",
        "formerr",
        "notimp",
        "badvers",
        "forward",
        "malformed",
    }
    assert sum(read_question(p) is not None for p in CORPUS) > len(CORPUS) // 3


@pytest.mark.parametrize("table", sorted(TABLES))
@pytest.mark.parametrize(
    ("internal", "tcp", "recurse"),
    [(True, False, True), (False, True, False), (True, False, False), (False, False, True)],
)
def test_the_cheap_path_gives_the_full_paths_bytes(
    table: str, internal: bool, tcp: bool, recurse: bool
) -> None:
    for packet in CORPUS:
        full = respond(packet, internal, tcp, TABLES[table], recurse, cheap=False)
        cheap = respond(packet, internal, tcp, TABLES[table], recurse)
        assert cheap == full, packet.hex()


def _variants(packet: bytes, rng: random.Random) -> list[bytes]:
    """The packet under another ID, and with its name's letters in other cases."""
    found = [b"\xab\xcd" + packet[2:]]
    end = 12
    while end < len(packet) and 0 < packet[end] < 64:  # the plain labels of the name
        end += 1 + packet[end]
    name = packet[12:end]
    for _ in range(3):
        flipped = bytes(
            b ^ 0x20 if chr(b).isascii() and chr(b).isalpha() and rng.random() < 0.5 else b
            for b in name
        )
        found.append(b"\x77\x77" + packet[2:12] + flipped + packet[end:])
    found.append(b"\x55\x55" + packet[2:12] + name.lower() + packet[end:])
    return found


@pytest.mark.parametrize("table", sorted(TABLES))
@pytest.mark.parametrize("tcp", [False, True])
def test_a_cached_reply_is_the_full_paths_reply_but_the_id(table: str, tcp: bool) -> None:
    """Each cacheable reply, filed under one spelling and ID, answers every other spelling
    and ID of the same question with exactly what the full path gives it."""
    rng = random.Random(7)
    for packet in CORPUS:
        full = respond(packet, True, tcp, TABLES[table], cheap=False)
        if not full.cacheable:
            continue
        for other in _variants(packet, rng):
            cache = ReplyCache(100)
            cache.put(packet, 3, tcp, full.reply)
            hit = cache.get(other, 3, tcp)
            expected = respond(other, True, tcp, TABLES[table], cheap=False)
            if hit is not None:
                assert expected.cacheable and hit == expected.reply, (packet.hex(), other.hex())
            assert cache.get(other, 1, tcp) is None  # another view
        assert ReplyCache(1).get(packet, 3, tcp) is None


def test_any_spelling_of_a_question_is_a_hit_after_the_first() -> None:
    cache, rng = ReplyCache(100), random.Random(3)
    first = query(spelled(NAME, rng), "AAAA", edns=1232)
    cache.put(first, 1, False, respond(first, True, False, TABLES["forwarding"]).reply)
    for ident in range(20):
        other = query(spelled(NAME, rng), "AAAA", edns=1232, ident=ident)
        assert cache.get(other, 1, False) == respond(other, True, False, TABLES["forwarding"]).reply
    assert cache.get(query(NAME, "A", edns=1232), 1, False) is None  # another type
    assert cache.get(query(NAME, "AAAA"), 1, False) is None  # without EDNS
    assert len(cache) == 2  # the spelling asked, and the lower-case one


def test_the_cache_stays_bounded_and_forgets_the_oldest_first() -> None:
    cache = ReplyCache(50)
    table = TABLES["forwarding"]
    names = [f"h{n}.Example.org" for n in range(200)]
    for name in names:
        packet = query(name)
        cache.put(packet, 0, False, respond(packet, False, False, table, False).reply)
        assert len(cache) <= 50
    assert cache.get(query(names[-1]), 0, False) is not None
    assert cache.get(query(names[0]), 0, False) is None


def _responder(**dns: Any) -> DnsResponder:
    settings = DnsSettings(internal_address="10.0.0.5", external_address="203.0.113.5", **dns)
    zones = ZoneSettings(internal_networks=(Network.parse("127.0.0.0/8"),))
    return DnsResponder(settings, ("example.com",), zones, Addresses("10.0.0.5"), lambda: 50.0)


@pytest.mark.parametrize("host", ["127.0.0.1", "198.51.100.7"])
def test_the_udp_entry_answers_as_handle_does(host: str, tmp_path: Path) -> None:
    """`datagram` (the listener's way in) and `handle`, twice over the corpus (the second
    time from the cache): the same replies, the same counters."""
    by_datagram, by_handle = _responder(), _responder()
    for _ in range(2):
        for packet in CORPUS:
            later: list[bytes] = []
            now = by_datagram.datagram(packet, (host, 5353), lambda r, a, x=later: x.append(r))
            sent: list[bytes] = []
            by_handle.handle(packet, host, False, sent.append)
            assert ([now] if now is not None else later) == sent, packet.hex()
    assert by_datagram.counters == by_handle.counters
    assert by_datagram.counters["cache_hits"] > len(CORPUS) // 3


def test_the_udp_entry_keeps_the_rate_limit() -> None:
    r = _responder(rrl_responses_per_second=4, rrl_slip=2)
    packet, addr = query(), ("198.51.100.7", 5353)
    with capturedLogs() as events:
        sent = [reply for reply in (_ask(r, packet, addr) for _ in range(10)) if reply]
    dropped = 10 - len(sent)
    [rrl] = [e for e in events if e.get("event") == "dns.rrl"]
    assert rrl["prefix"] == "198.51.100.0/24" and rrl["rate"] == 4
    full = [p for p in sent if not p[2] & 0x02]
    slipped = [p for p in sent if p[2] & 0x02]
    assert len(full) == 4 and len(slipped) == 3 and dropped == 3
    assert all(DNSRecord.parse(p).rr == [] for p in slipped)
    assert r.counters["rrl_dropped"] == 3 and r.counters["rrl_slipped"] == 3


def _ask(r: DnsResponder, packet: bytes, addr: tuple[str, int]) -> bytes | None:
    sent: list[bytes] = []
    now = r.datagram(packet, addr, lambda reply, a: sent.append(reply))
    return now if now is not None else (sent[0] if sent else None)


def test_reload_empties_what_the_udp_entry_remembers(tmp_path: Path) -> None:
    dhcp = tmp_path / "dhcpd.conf"
    dhcp.write_text('option domain-name "one.example.net";\n')
    r, addr = _responder(domains_from=dhcp), ("127.0.0.1", 53)
    packet = query("ucupdates-r2.one.example.net")
    for _ in range(2):
        first = _ask(r, packet, addr)
        assert first is not None and DNSRecord.parse(first).rr
    dhcp.write_text('option domain-name "two.example.net";\n')
    r.reload()
    again = _ask(r, packet, addr)
    assert again is not None and DNSRecord.parse(again).header.rcode == 5  # REFUSED now


class FakeSocket:
    """Datagrams to read, then EAGAIN; what is sent lands in `sent` (or fails when full)."""

    def __init__(self, datagrams: list[tuple[bytes, tuple[Any, ...]]], full: bool = False):
        self.datagrams, self.full = list(datagrams), full
        self.sent: list[tuple[bytes, tuple[Any, ...]]] = []

    def recvfrom(self, size: int) -> tuple[bytes, tuple[Any, ...]]:
        if not self.datagrams:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return self.datagrams.pop(0)

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> int:
        if self.full:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        self.sent.append((data, addr))
        return len(data)


def _port(responder: DnsResponder, sock: FakeSocket, family: int) -> DnsUdpPort:
    port = DnsUdpPort(0, DnsDatagramProtocol(responder), "::1" if family == 10 else "")
    port.socket, port.addressFamily = sock, family
    port.protocol.makeConnection(port)  # as startListening does, past the socket
    return port


@pytest.mark.parametrize(
    ("family", "addr", "seen"),
    [
        (socket.AF_INET, ("127.0.0.1", 4000), ("127.0.0.1", 4000)),
        (socket.AF_INET6, ("::1", 4000, 0, 0), ("::1", 4000)),
    ],
)
def test_the_udp_port_answers_each_datagram_in_its_read_loop(
    family: int, addr: tuple[Any, ...], seen: tuple[Any, ...]
) -> None:
    r = _responder()
    packets = [query(ident=n) for n in range(5)] + [b"junk", query("www.example.org")]
    sock = FakeSocket([(p, addr) for p in packets])
    _port(r, sock, family).doRead()
    assert [a for _, a in sock.sent] == [seen] * 6  # the junk gets no answer
    assert [struct.unpack_from("!H", d)[0] for d, _ in sock.sent[:5]] == list(range(5))
    assert r.counters["udp_queries"] == 7 and r.counters["malformed"] == 1
    assert r.counters["cache_hits"] == 4


def test_the_udp_port_reads_a_batch_then_lets_the_reactor_go_round() -> None:
    r = _responder(rrl_responses_per_second=1000)
    sock = FakeSocket([(query(ident=n % 65536), ("127.0.0.1", 4000)) for n in range(300)])
    port = _port(r, sock, socket.AF_INET)
    port.doRead()
    assert len(sock.sent) == DnsUdpPort.BATCH and len(sock.datagrams) == 300 - DnsUdpPort.BATCH
    port.doRead()
    assert len(sock.sent) == 300


def test_the_udp_port_counts_answers_the_kernel_would_not_take() -> None:
    r = _responder()
    sock = FakeSocket([(query(ident=n), ("127.0.0.1", 4000)) for n in range(3)], full=True)
    _port(r, sock, socket.AF_INET).doRead()
    assert r.counters["send_errors"] == 3 and sock.datagrams == []
