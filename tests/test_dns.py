"""The DNS responder without sockets: dnslib-built queries in, parsed replies out.

`respond` (the pure decision) with parameter tables; then the responder around it with a
fake clock (cache, RRL, reload, counters), and the forwarder with a fake reactor whose
datagrams the tests deliver by hand.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, TXT, A, DNSRecord
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from appliance.config import Address, Config, ConfigError, DnsSettings, Listeners, load_config
from appliance.discovery.dns import internal_addresses, make_responder
from appliance.discovery.dns_answer import (
    OUR_UDP_SIZE,
    Action,
    Addresses,
    AnswerTable,
    Outcome,
    question_end,
    relay,
    respond,
    truncate,
)
from appliance.discovery.dns_forward import Forwarder
from appliance.discovery.dns_limits import RateLimiter, ReplyCache, Verdict, classify
from appliance.discovery.dns_responder import DnsResponder
from appliance.testing import SecondsClock, config_from

INTERNAL_V4, INTERNAL_V6, EXTERNAL_V4 = "10.0.0.5", "fd00::5", "203.0.113.5"
FULL = AnswerTable.build(
    ("example.com", "contoso.com"),
    Addresses(INTERNAL_V4, INTERNAL_V6),
    Addresses(EXTERNAL_V4),
    ttl=300,
    serial=42,
    forwarding=True,
)
NO_EXTERNAL = AnswerTable.build(("example.com",), Addresses(INTERNAL_V4), Addresses())
ONLY_V6 = AnswerTable.build(("example.com",), Addresses(None, INTERNAL_V6), Addresses())
NAME = "ucupdates-r2.example.com"


def query(
    name: str = NAME,
    qtype: str = "A",
    *,
    edns: int | None = None,
    rd: bool = True,
    do: bool = False,
    version: int = 0,
    ident: int = 0x1234,
) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id, q.header.rd = ident, int(rd)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns, version=version, flags="do" if do else ""))
    return bytes(q.pack())


def ask(
    packet: bytes, table: AnswerTable = FULL, internal: bool = True, tcp: bool = False
) -> tuple[Outcome, DNSRecord]:
    outcome = respond(packet, internal, tcp, table)
    assert outcome.action is not Action.DROP
    return outcome, DNSRecord.parse(outcome.reply)


def answers(reply: DNSRecord) -> list[tuple[str, str]]:
    return [(QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr]


# -- authoritative answers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "qtype", "internal", "table", "rcode", "expected"),
    [
        (NAME, "A", True, FULL, "NOERROR", [("A", INTERNAL_V4)]),
        (NAME, "A", False, FULL, "NOERROR", [("A", EXTERNAL_V4)]),
        (NAME, "AAAA", True, FULL, "NOERROR", [("AAAA", INTERNAL_V6)]),
        ("ucupdates-r2.contoso.com", "A", True, FULL, "NOERROR", [("A", INTERNAL_V4)]),
        (NAME, "ANY", True, FULL, "NOERROR", [("A", INTERNAL_V4)]),  # RFC 8482: one record
        (NAME, "ANY", True, ONLY_V6, "NOERROR", [("AAAA", INTERNAL_V6)]),
        (NAME, "NS", True, FULL, "NOERROR", [("NS", NAME + ".")]),
        (NAME, "A", False, NO_EXTERNAL, "REFUSED", []),  # no external address
        (NAME, "MX", False, NO_EXTERNAL, "REFUSED", []),
        ("x." + NAME, "A", False, NO_EXTERNAL, "REFUSED", []),
        (NAME, "AXFR", True, FULL, "REFUSED", []),
    ],
    ids=[
        "internal",
        "external",
        "internal-v6",
        "second-domain",
        "any-minimal",
        "any-v6-only",
        "ns",
        "external-refused",
        "external-refused-mx",
        "external-refused-below",
        "no-zone-transfer",
    ],
)
def test_answers_for_our_names(
    name: str,
    qtype: str,
    internal: bool,
    table: AnswerTable,
    rcode: str,
    expected: list[tuple[str, str]],
) -> None:
    outcome, reply = ask(query(name, qtype), table, internal)
    assert RCODE[reply.header.rcode] == rcode
    assert answers(reply) == expected
    assert reply.header.aa == (rcode == "NOERROR")
    assert reply.header.id == 0x1234 and reply.header.qr == 1
    assert str(reply.q.qname) == name + "." and QTYPE[reply.q.qtype] == qtype
    assert outcome.cacheable


@pytest.mark.parametrize("qtype", ["A", "AAAA", "SOA", "NS"])
def test_lync_2010_name_is_answered_beside_the_r2_name(qtype: str) -> None:
    """docs/protocol.md §3: Lync 2010 created ucupdates.<domain>, OCS R2 phones look up
    ucupdates-r2.<domain>: both are apexes of their own, in every domain."""
    for domain in ("example.com", "contoso.com"):
        _, r2 = ask(query(f"ucupdates-r2.{domain}", qtype))
        _, lync = ask(query(f"ucupdates.{domain}", qtype))
        assert RCODE[lync.header.rcode] == "NOERROR" and lync.header.aa == 1
        assert answers(lync) == [
            (t, v.replace("ucupdates-r2.", "ucupdates.")) for t, v in answers(r2)
        ]
        assert len(answers(lync)) == 1
    _, below = ask(query("x.ucupdates.example.com"))
    assert RCODE[below.header.rcode] == "NXDOMAIN"
    assert str(below.auth[0].rname) == "ucupdates.example.com."


@pytest.mark.parametrize(
    ("names", "answered", "forwarded"),
    [
        (("ucupdates-r2",), "ucupdates-r2.example.com", "ucupdates.example.com"),
        (("ucupdates",), "ucupdates.example.com", "ucupdates-r2.example.com"),
    ],
)
def test_names_switch_answers_only_the_chosen_name(
    names: tuple[str, ...], answered: str, forwarded: str
) -> None:
    table = AnswerTable.build(
        ("example.com",), Addresses(INTERNAL_V4), Addresses(), forwarding=True, names=names
    )
    _, reply = ask(query(answered), table)
    assert answers(reply) == [("A", INTERNAL_V4)]
    outcome = respond(query(forwarded), True, False, table)
    assert outcome.action is Action.FORWARD  # to the upstreams, as any other name


def test_dns_names_come_from_the_config(tmp_path: Path) -> None:
    config = config_from(tmp_path, '[dns]\ninternal_address = "10.0.0.5"\nnames = ["ucupdates"]\n')
    r, sent = make_responder(config, Clock()), Sent()
    assert r.table.names == ("ucupdates",)
    for name in ("ucupdates.example.com", "ucupdates-r2.example.com"):
        r.handle(query(name), "10.9.9.9", False, sent.append)
    assert [RCODE[rec.header.rcode] for rec in sent.records()] == ["NOERROR", "REFUSED"]
    assert config.server_names()[0] == "ucupdates.example.com" == config.internal_fqdn


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('["ucupdates-r3"]', "dns.names.*expected one of 'ucupdates-r2', 'ucupdates'"),
        ('"ucupdates"', "dns.names.*expected a list"),
    ],
)
def test_dns_names_are_checked(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from(tmp_path, f"[dns]\nnames = {value}\n")


def test_no_dns_names_is_a_config_error(tmp_path: Path) -> None:
    config = config_from(tmp_path, "[dns]\nnames = []\n")
    with pytest.raises(ConfigError, match="dns.names.*at least one"):
        make_responder(config, Clock())


def test_ns_answer_carries_glue() -> None:
    _, reply = ask(query(NAME, "NS"))
    assert [(QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.ar] == [
        ("A", INTERNAL_V4),
        ("AAAA", INTERNAL_V6),
    ]


@pytest.mark.parametrize(
    ("name", "qtype", "table", "internal", "rcode"),
    [
        (NAME, "MX", FULL, True, "NOERROR"),  # NODATA: the name exists, the type does not
        (NAME, "AAAA", FULL, False, "NOERROR"),  # no external_address6
        (NAME, "AAAA", NO_EXTERNAL, True, "NOERROR"),  # no internal_address6
        ("x." + NAME, "A", FULL, True, "NXDOMAIN"),
        ("a.b." + NAME, "AAAA", FULL, False, "NXDOMAIN"),
    ],
    ids=["nodata-mx", "nodata-external-v6", "nodata-no-v6", "nxdomain", "nxdomain-deeper"],
)
def test_negative_answers_carry_the_soa(
    name: str, qtype: str, table: AnswerTable, internal: bool, rcode: str
) -> None:
    _, reply = ask(query(name, qtype), table, internal)
    assert RCODE[reply.header.rcode] == rcode
    assert reply.rr == [] and reply.header.aa == 1
    [soa] = reply.auth
    assert QTYPE[soa.rtype] == "SOA" and str(soa.rname) == NAME + "."
    assert str(soa.rdata.mname) == NAME + "." and str(soa.rdata.rname) == f"hostmaster.{NAME}."
    assert soa.rdata.times[-1] == table.ttl  # the negative-caching TTL


def test_soa_query_and_serial() -> None:
    _, reply = ask(query(NAME, "SOA"))
    assert answers(reply)[0][0] == "SOA" and reply.rr[0].rdata.times[0] == 42


def test_case_of_the_question_is_kept() -> None:
    name = "UcUpDaTeS-R2.ExAmPlE.CoM"
    _, reply = ask(query(name))
    assert reply.q.qname.label == (b"UcUpDaTeS-R2", b"ExAmPlE", b"CoM")
    assert reply.rr[0].rname.label == reply.q.qname.label
    assert answers(reply) == [("A", INTERNAL_V4)]
    _, negative = ask(query("X." + name))
    assert negative.auth[0].rname.label == reply.q.qname.label  # the apex, as asked


# -- flags, EDNS, errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "rd", "ra"), [(FULL, True, 1), (FULL, False, 1), (NO_EXTERNAL, True, 0)]
)
def test_rd_is_copied_and_ra_means_forwarding(table: AnswerTable, rd: bool, ra: int) -> None:
    _, reply = ask(query(rd=rd), table)
    assert reply.header.rd == int(rd) and reply.header.ra == ra


@pytest.mark.parametrize("do", [False, True])
def test_edns_is_echoed_with_our_size(do: bool) -> None:
    _, reply = ask(query(edns=4096, do=do))
    [opt] = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    assert opt.rclass == OUR_UDP_SIZE
    assert (opt.ttl >> 16) & 0xFF == 0  # version 0
    assert bool(opt.ttl & 0x8000) == do
    _, plain = ask(query())
    assert plain.ar == []  # no OPT without one in the query


def test_badvers_for_edns_version_1() -> None:
    packet = query(edns=1232, version=1)
    outcome, reply = ask(packet)
    [opt] = reply.ar
    assert reply.header.rcode == 0 and opt.ttl >> 24 == 1  # extended RCODE 16: BADVERS
    assert reply.rr == [] and reply.header.aa == 0
    assert outcome.kind == "badvers" and len(outcome.reply) <= len(packet)


def _with_counts(packet: bytes, qd: int, an: int = 0, ns: int = 0, ar: int | None = None) -> bytes:
    ar = struct.unpack_from("!H", packet, 10)[0] if ar is None else ar
    return packet[:4] + struct.pack("!HHHH", qd, an, ns, ar) + packet[12:]


def _two_opts() -> bytes:
    q = DNSRecord.question(NAME)
    q.add_ar(EDNS0(udp_len=1232))
    q.add_ar(EDNS0(udp_len=1232))
    return bytes(q.pack())


def _long_name() -> bytes:
    """A query whose name is longer than 253 bytes: dnslib reads it but cannot write it."""
    labels = b"".join(bytes([63]) + b"a" * 63 for _ in range(5))
    return struct.pack("!6H", 7, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


def _opcode(packet: bytes, opcode: int) -> bytes:
    flags = struct.unpack_from("!H", packet, 2)[0] | opcode << 11
    return packet[:2] + struct.pack("!H", flags) + packet[4:]


@pytest.mark.parametrize(
    ("packet", "rcode", "with_question"),
    [
        (_with_counts(query(), 0), "FORMERR", False),
        (_with_counts(query() + query()[12:], 2), "FORMERR", False),
        (_with_counts(query(), 1, an=1), "FORMERR", False),
        (_two_opts(), "FORMERR", False),
        (_long_name(), "FORMERR", False),
        (_opcode(query(), 2), "NOTIMP", True),  # STATUS
        (
            query("version.bind", "TXT").replace(b"\x00\x10\x00\x01", b"\x00\x10\x00\x03"),
            "REFUSED",
            True,
        ),
        (query("www.example.org"), "REFUSED", True),  # not ours, and no upstreams
    ],
    ids=["qdcount-0", "qdcount-2", "ancount", "two-opt", "long-name", "notimp", "chaos", "other"],
)
def test_error_replies_are_small(packet: bytes, rcode: str, with_question: bool) -> None:
    outcome, reply = ask(packet, NO_EXTERNAL)
    assert RCODE[reply.header.rcode] == rcode and reply.header.qr == 1
    assert reply.header.id == struct.unpack_from("!H", packet)[0]
    assert len(reply.questions) == int(with_question) and reply.rr == [] and reply.auth == []
    assert len(outcome.reply) <= len(packet)


@pytest.mark.parametrize(
    "packet",
    [b"", b"\x12", query()[:11], query()[:20], query()[:-1], b"\xff" * 40],
    ids=["empty", "one-byte", "short-header", "cut-name", "cut-class", "junk"],
)
def test_unparsable_packets_are_dropped(packet: bytes) -> None:
    assert respond(packet, True, False, FULL).action is Action.DROP


def test_responses_are_never_answered() -> None:
    _, reply = ask(query())
    assert respond(bytes(reply.pack()), True, False, FULL).action is Action.DROP


def test_fuzzed_queries_get_small_replies_or_none() -> None:
    """The issue's fuzz criterion, here without sockets: 3,000 seeded mutations."""
    rng = random.Random(20261127)
    bases = [query(), query(edns=1232), query("x." + NAME, "MX"), query("a.invalid", "TXT")]
    kinds: set[str] = set()
    for n in range(3000):
        base = bytearray(rng.choice(bases))
        if n % 3 == 0:
            packet = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        elif n % 3 == 1:
            packet = bytes(base[: rng.randrange(len(base))])
        else:
            for _ in range(rng.randrange(1, 5)):
                base[rng.randrange(len(base))] ^= 1 << rng.randrange(8)
            packet = bytes(base)
        outcome = respond(packet, bool(n % 2), bool(n % 5 == 0), FULL)
        kinds.add(outcome.kind)
        assert len(outcome.reply) <= len(packet) + 100, packet.hex()
    assert {"malformed", "formerr", "answer", "forward"} <= kinds


# -- forwarding and sizes -----------------------------------------------------------------------


def test_other_names_are_forwarded_with_a_servfail_ready() -> None:
    packet = query("www.example.org", edns=4096)
    outcome = respond(packet, True, False, FULL)
    assert outcome.action is Action.FORWARD and not outcome.cacheable
    assert outcome.limit == OUR_UDP_SIZE and outcome.edns
    assert outcome.question_end == question_end(packet) == len(packet) - 11
    servfail = DNSRecord.parse(outcome.reply)
    assert RCODE[servfail.header.rcode] == "SERVFAIL" and servfail.header.ra == 1
    assert respond(query("www.example.org"), True, False, FULL).limit == 512


def _big_answer(packet: bytes, strings: int = 4) -> bytes:
    reply = DNSRecord.parse(packet).reply()
    reply.add_answer(RR("big.example.org", QTYPE.TXT, rdata=TXT(["x" * 200] * strings)))
    reply.header.id = 0xBEEF  # the upstream's own ID
    return bytes(reply.pack())


@pytest.mark.parametrize("edns", [None, 512, 1232])
def test_relayed_answers_are_cut_to_the_clients_udp_size(edns: int | None) -> None:
    packet = query("big.example.org", "TXT", edns=edns)
    outcome = respond(packet, True, False, FULL)
    answer = _big_answer(packet)
    assert len(answer) > 512
    over_udp = DNSRecord.parse(relay(answer, packet, outcome, tcp=False))
    assert over_udp.header.id == 0x1234
    assert over_udp.header.tc == int(edns != 1232)
    assert len(over_udp.rr) == int(edns == 1232)
    assert str(over_udp.q.qname) == "big.example.org."
    over_tcp = relay(answer, packet, outcome, tcp=True)
    assert over_tcp == packet[:2] + answer[2:]  # whole, with the client's ID


@pytest.mark.parametrize("edns", [False, True])
def test_truncate_keeps_header_question_and_opt(edns: bool) -> None:
    packet = query("big.example.org", "TXT", edns=1232 if edns else None)
    answer = _big_answer(packet, strings=8)
    cut = truncate(answer, question_end(packet), edns)
    reply = DNSRecord.parse(cut)
    assert reply.header.tc == 1 and reply.header.id == 0xBEEF
    assert reply.rr == [] and reply.auth == [] and len(reply.questions) == 1
    assert [rr.rclass for rr in reply.ar] == ([OUR_UDP_SIZE] if edns else [])
    assert len(cut) <= len(packet)


def test_local_replies_over_the_limit_are_truncated() -> None:
    """Our own answers never exceed 512 bytes, so the cut is checked on the size rule."""
    packet = query("x." * 100 + NAME, "A")  # a 230-byte name: NXDOMAIN + SOA stays under
    outcome, reply = ask(packet)
    assert len(outcome.reply) <= 512 and reply.header.tc == 0 and reply.auth


# -- caches, limits, clients ---------------------------------------------------------------------


def test_reply_cache_patches_the_id_and_is_bounded() -> None:
    cache = ReplyCache(2)
    first, second, third = query(ident=1), query(qtype="AAAA", ident=2), query("x." + NAME)
    for packet in (first, second):
        cache.put(packet, True, False, respond(packet, True, False, FULL).reply)
    hit = cache.get(query(ident=0xABCD), True, False)
    assert hit is not None and hit[:2] == b"\xab\xcd"
    assert hit[2:] == respond(first, True, False, FULL).reply[2:]
    assert cache.get(first, False, False) is None  # another view
    assert cache.get(first, True, True) is None  # another transport
    cache.put(third, True, False, respond(third, True, False, FULL).reply)
    assert len(cache) == 2 and cache.get(first, True, False) is None  # the oldest went


def test_rate_limiter_budget_and_slip() -> None:
    limiter = RateLimiter(rate=5, slip=2)
    verdicts = [limiter.check("192.0.2.0/24", 100.0) for _ in range(11)]
    assert verdicts == [Verdict.SEND] * 5 + [Verdict.DROP, Verdict.SLIP] * 3
    assert limiter.check("198.51.100.0/24", 100.0) is Verdict.SEND  # another prefix
    assert [limiter.check("192.0.2.0/24", 100.5) for _ in range(3)] == [
        Verdict.SEND,
        Verdict.SEND,
        Verdict.DROP,  # half a second refilled 2.5
    ]
    assert limiter.check("192.0.2.0/24", 102.0) is Verdict.SEND
    assert limiter.engaged == [("192.0.2.0/24", 100.0)]  # logged once per 10 s


def test_rate_limiter_without_slip_and_bounded() -> None:
    limiter = RateLimiter(rate=1, slip=0, max_prefixes=4)
    assert [limiter.check("a", 0.0) for _ in range(4)] == [Verdict.SEND] + [Verdict.DROP] * 3
    for n in range(100):
        limiter.check(f"p{n}", 5.0 + n)
    assert len(limiter._buckets) <= 4


@pytest.mark.parametrize(
    ("host", "internal", "prefix"),
    [
        ("10.1.2.3", True, "10.1.2.0/24"),
        ("10.1.2.200", True, "10.1.2.0/24"),
        ("203.0.113.9", False, "203.0.113.0/24"),
        ("2001:db8:1:2ff::1", False, "2001:db8:1:200::/56"),
        ("fd00::7", True, "fd00::/56"),
        ("::ffff:192.0.2.1", False, "192.0.2.0/24"),
    ],
)
def test_clients_are_classified_by_zone_and_prefix(host: str, internal: bool, prefix: str) -> None:
    client = classify(host, load_config(None).zones)
    assert (client.internal, client.prefix) == (internal, prefix)


# -- the responder, with a fake clock ----------------------------------------------------------


class Sent(list[bytes]):
    def records(self) -> list[DNSRecord]:
        return [DNSRecord.parse(p) for p in self]


def responder(
    tmp_path: Path, clock: Callable[[], float] = lambda: 1000.0, **dns: Any
) -> DnsResponder:
    settings = DnsSettings(internal_address=INTERNAL_V4, **dns)
    config = load_config(None, tmp_path)
    return DnsResponder(settings, ("example.com",), config.zones, Addresses(INTERNAL_V4), clock)


def test_repeated_questions_come_from_the_cache(tmp_path: Path) -> None:
    r, sent = responder(tmp_path), Sent()
    for ident in (1, 2, 3):
        r.handle(query(ident=ident), "10.9.9.9", False, sent.append)
    assert [rec.header.id for rec in sent.records()] == [1, 2, 3]
    assert len(set(p[2:] for p in sent)) == 1
    assert r.counters["cache_hits"] == 2 and r.counters["local_replies"] == 1
    r.handle(query(ident=4), "203.0.113.1", False, sent.append)  # the external view
    assert RCODE[sent.records()[-1].header.rcode] == "REFUSED"
    assert r.counters["cache_hits"] == 2


def test_rrl_holds_a_prefix_to_its_budget_udp_only(tmp_path: Path) -> None:
    clock = SecondsClock(1000.0)
    r, sent = responder(tmp_path, clock, rrl_responses_per_second=3, rrl_slip=2), Sent()
    for ident in range(10):
        r.handle(query(ident=ident), f"10.0.0.{ident}", False, sent.append)  # one /24
    full = [rec for rec in sent.records() if rec.rr]
    slipped = [rec for rec in sent.records() if rec.header.tc]
    assert len(full) == 3 and len(slipped) == 3 and len(sent) == 6
    assert all(rec.rr == [] and len(rec.questions) == 1 for rec in slipped)
    assert r.counters["rrl_dropped"] == 4 and r.counters["rrl_slipped"] == 3
    tcp = Sent()
    for ident in range(10):
        r.handle(query(ident=ident), "10.0.0.1", True, tcp.append)
    assert len(tcp) == 10  # TCP proves the address: not limited
    r.handle(query(), "10.0.1.1", False, sent.append)  # the next /24 has its own budget
    assert sent.records()[-1].rr
    clock.advance(1.0)
    r.handle(query(), "10.0.0.1", False, sent.append)
    assert sent.records()[-1].rr


def test_rrl_engaging_is_logged_once_per_prefix(tmp_path: Path) -> None:
    clock = SecondsClock(1000.0)
    r = responder(tmp_path, clock, rrl_responses_per_second=2)
    with capturedLogs() as events:
        for step in range(400):  # 4 s of 100 queries/s from two prefixes
            clock.now = 1000.0 + step / 100
            for host in ("10.0.0.1", "10.0.9.1"):
                r.handle(query(ident=step), host, False, lambda reply: None)
    rrl = [e for e in events if e.get("event") == "dns.rrl"]
    assert sorted(e["prefix"] for e in rrl) == ["10.0.0.0/24", "10.0.9.0/24"]
    assert all(e["log_level"] is LogLevel.warn and e["rate"] == 2 for e in rrl)


def test_malformed_packets_are_counted_and_dropped(tmp_path: Path) -> None:
    r, sent = responder(tmp_path), Sent()
    for packet in (b"", b"\x00" * 5, query()[:-3], b"\xff" * 64):
        r.handle(packet, "10.0.0.1", False, sent.append)
    assert sent == [] and r.counters["malformed"] == 4


def test_reload_swaps_domains_and_empties_the_cache(tmp_path: Path) -> None:
    dhcp = tmp_path / "dhcpd.conf"
    dhcp.write_text('option domain-name "one.example.net";\n')
    r, sent = responder(tmp_path, domains_from=dhcp), Sent()
    assert r.domains == ("example.com", "one.example.net")
    r.handle(query("ucupdates-r2.one.example.net"), "10.0.0.1", False, sent.append)
    dhcp.write_text('option domain-name "two.example.net";\n')
    assert r.reload() == ("example.com", "two.example.net")
    for name in ("ucupdates-r2.one.example.net", "ucupdates-r2.two.example.net"):
        r.handle(query(name), "10.0.0.1", False, sent.append)
    assert [RCODE[rec.header.rcode] for rec in sent.records()] == ["NOERROR", "REFUSED"] + [
        "NOERROR"
    ]
    assert r.table.serial > 1000


def test_a_bad_file_on_reload_keeps_the_domains(tmp_path: Path) -> None:
    dhcp = tmp_path / "dhcpd.conf"
    dhcp.write_text('option domain-name "one.example.net";\n')
    r = responder(tmp_path, domains_from=dhcp)
    dhcp.write_text('option domain-name "unterminated;\n')
    assert r.reload() == ("example.com", "one.example.net")
    assert r.last_reload_error is not None and "unterminated string" in r.last_reload_error
    dhcp.write_text('option domain-name "two.example.net";\n')
    r.reload()
    assert r.last_reload_error is None


def test_a_bad_file_at_start_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "dhcpd.conf").write_text("option domain-name nope;\n")
    config = config_from(tmp_path, '[dns]\ndomains_from = "dhcpd.conf"\n')
    with pytest.raises(ConfigError, match="dns.domains_from.*dhcpd.conf: line 1: option domain"):
        make_responder(config, Clock())


@pytest.mark.parametrize(
    ("upstream", "listener", "message"),
    [
        ("dns.example.net:53", "127.0.0.1:53", "must be an IP address"),
        ("127.0.0.1:53", "0.0.0.0:53", "is this responder itself"),
        ("10.0.0.1:5353", "10.0.0.1:5353", "is this responder itself"),
    ],
)
def test_upstreams_are_addresses_and_not_us(
    tmp_path: Path, upstream: str, listener: str, message: str
) -> None:
    config = config_from(
        tmp_path, f'[listeners]\ndns = "{listener}"\n[dns]\nupstreams = ["{upstream}"]\n'
    )
    with pytest.raises(ConfigError, match=message):
        make_responder(config, Clock())


@pytest.mark.parametrize(
    ("https", "dns", "expected"),
    [
        ("10.1.1.1:443", {}, Addresses("10.1.1.1")),
        ("[2001:db8::443]:443", {}, Addresses(None, "2001:db8::443")),
        ("0.0.0.0:443", {}, Addresses()),  # a wildcard says nothing
        ("127.0.0.1:8443", {}, Addresses("127.0.0.1")),  # the embedded defaults: a lab
        ("10.1.1.1:443", {"internal_address6": "fd00::1"}, Addresses(None, "fd00::1")),
        ("0.0.0.0:443", {"internal_address": "10.2.2.2"}, Addresses("10.2.2.2")),
    ],
)
def test_internal_address_falls_back_to_the_https_listener(
    https: str, dns: dict[str, Any], expected: Addresses
) -> None:
    config = dataclasses.replace(
        Config(),
        listeners=Listeners(internal_https=Address.parse(https)),
        dns=DnsSettings(**dns),
    )
    assert internal_addresses(config) == expected


# -- the forwarder, with a fake reactor ------------------------------------------------------


class FakePort:
    def __init__(self, index: int, sent: list[tuple[int, bytes, tuple[str, int]]]) -> None:
        self.index, self.sent = index, sent

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((self.index, data, addr))

    def stopListening(self) -> None:
        pass


class FakeReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.ports: list[FakePort] = []
        self.sent: list[tuple[int, bytes, tuple[str, int]]] = []  # (socket, data, upstream)
        self.connected: list[tuple[str, int]] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "") -> FakePort:
        self.ports.append(FakePort(len(self.ports), self.sent))
        protocol.transport = self.ports[-1]
        return self.ports[-1]

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float) -> Any:
        self.connected.append((host, port))
        return FakeConnector()


class FakeConnector:
    disconnected = False

    def disconnect(self) -> None:
        self.disconnected = True


UP1, UP2 = Address("127.0.0.1", 5301), Address("127.0.0.2", 5302)


def forwarder(reactor: FakeReactor, upstreams: tuple[Address, ...] = (UP1, UP2)) -> Forwarder:
    f = Forwarder(reactor, upstreams, timeout=1.0, max_outstanding=3)
    f.start()
    return f


def upstream_answer(sent: bytes, address: str = "192.0.2.7") -> bytes:
    reply = DNSRecord.parse(sent).reply()
    reply.add_answer(RR(reply.q.qname, QTYPE.A, rdata=A(address)))
    return bytes(reply.pack())


def test_forwarder_relays_the_matching_answer_only() -> None:
    reactor, results = FakeReactor(), list[bytes | None]()
    f = forwarder(reactor)
    packet = query("www.example.org")
    assert f.forward(packet, question_end(packet), results.append)
    [(n, sent, addr)] = reactor.sent
    assert addr == ("127.0.0.1", 5301) and sent[2:] == packet[2:]
    socket = 400 + n
    good = upstream_answer(sent)
    f.datagram(good, ("127.0.0.2", 5302), socket)  # from the wrong upstream
    f.datagram(good, ("127.0.0.1", 5301), socket + 1)  # on the wrong socket
    other = upstream_answer(bytes(sent[:2]) + query("www.example.net")[2:])
    f.datagram(other, ("127.0.0.1", 5301), socket)  # another question
    f.datagram(b"\x00" * 5, ("127.0.0.1", 5301), socket)
    assert results == []
    f.datagram(good, ("127.0.0.1", 5301), socket)
    assert results == [good]
    f.datagram(good, ("127.0.0.1", 5301), socket)  # a duplicate: nobody waits for it
    assert results == [good]


def test_forwarder_tries_the_next_upstream_then_gives_up() -> None:
    reactor, results, timeouts = FakeReactor(), list[bytes | None](), list[str]()
    f = forwarder(reactor)
    f.on_timeout = timeouts.append
    packet = query("www.example.org")
    f.forward(packet, question_end(packet), results.append)
    reactor.advance(1.0)
    assert [a for _, _, a in reactor.sent] == [("127.0.0.1", 5301), ("127.0.0.2", 5302)]
    reactor.advance(1.0)
    assert len(reactor.sent) == 3 and results == []
    reactor.advance(1.0)
    assert results == [None] and timeouts == ["www.example.org."]
    assert reactor.getDelayedCalls() == []


def test_forwarder_table_is_bounded_and_truncated_answers_go_tcp() -> None:
    reactor, results = FakeReactor(), list[bytes | None]()
    f = forwarder(reactor, (UP1,))
    packets = [query(f"n{n}.example.org") for n in range(4)]
    accepted = [f.forward(p, question_end(p), results.append) for p in packets]
    assert accepted == [True, True, True, False]
    n, sent, _ = reactor.sent[0]
    f.datagram(_tc(upstream_answer(sent)), ("127.0.0.1", 5301), 400 + n)
    assert reactor.connected == [("127.0.0.1", 5301)] and results == []
    f.datagram(upstream_answer(sent), ("127.0.0.1", 5301), 400 + n)  # UDP no longer counts
    assert results == []
    ident = struct.unpack_from("!H", sent)[0]
    whole = upstream_answer(sent, "192.0.2.8")
    f.stream_answer(ident, whole)  # what the TCP retry read
    assert results == [whole]
    _, second, _ = reactor.sent[1]
    f.datagram(_tc(upstream_answer(second)), ("127.0.0.1", 5301), reactor.sent[1][0] + 400)
    f.stream_answer(struct.unpack_from("!H", second)[0], b"\x00\x01" + whole[2:])  # wrong ID
    assert results == [whole, None]
    assert f.forward(packets[3], question_end(packets[3]), results.append)  # room again


def _tc(answer: bytes) -> bytes:
    return answer[:2] + bytes([answer[2] | 0x02]) + answer[3:]
