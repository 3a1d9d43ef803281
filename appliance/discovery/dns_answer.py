"""The DNS responder's decisions (docs/protocol.md §3): bytes in, bytes out, no I/O.

`respond(query, internal, tcp, table)` parses a query with dnslib, decides and packs the
reply, the shape of dnslib's `DNSHandler.get_reply`; plain queries for names not ours or
below ours are packed by hand (dns_wire), byte for byte the same. The appliance is
authoritative for the discovery names only, `<name>.<domain>` for each of the table's
names (by default `ucupdates-r2` and Lync 2010's `ucupdates`) in each domain, each a zone
apex with a synthetic SOA and NS:

- A/AAAA at the apex: the view's address (internal or external client), else NODATA;
  ANY gets one address record only (RFC 8482); SOA and NS are answered; other types are NODATA;
- a name below an apex: NXDOMAIN; both negative answers carry the SOA in authority;
- a view with no address at all (e.g. no `external_address`): REFUSED;
- every other name: forwarded (Outcome.action FORWARD) for a client that may recurse
  (`dns.forward_networks`), else REFUSED, as it is when there are no upstreams.

Replies that are not answers (FORMERR, REFUSED, NOTIMP, BADVERS) echo at most the question
and an OPT record, so they are never larger than the query plus a few bytes. Queries that
cannot be parsed, and responses sent to us, are dropped (action DROP).

Beside it: `truncate` (UDP size limits) and `relay` (an upstream's answer for the
client). The reply cache, rate limiter and client classification are in dns_limits.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from dnslib import (
    AAAA,
    EDNS0,
    NS,
    RR,
    SOA,
    A,
    DNSError,
    DNSHeader,
    DNSLabel,
    DNSLabelError,
    DNSRecord,
)

from appliance.discovery.dns_wire import (
    OUR_UDP_SIZE,
    SOA_TIMES,
    Question,
    apex_at,
    nxdomain,
    read_question,
    refusal,
)

PLAIN_UDP_SIZE = 512  # the limit for a query without EDNS
HEADER = struct.Struct("!HHHHHH")
QR, AA, TC, RD_BIT, RA, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0010
OPCODE_MASK = 0x7800
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16  # an extended RCODE: 0 in the header, 1 in the OPT record
CLASS_IN, CLASS_ANY = 1, 255
T_A, T_NS, T_SOA, T_AAAA, T_OPT = 1, 2, 6, 28, 41
T_IXFR, T_AXFR, T_ANY = 251, 252, 255
MAX_ADDITIONAL = 4  # OPT, TSIG, and a little room: more in a query is FORMERR
HOSTMASTER = b"hostmaster"
DISCOVERY_NAMES = ("ucupdates-r2", "ucupdates")  # docs/protocol.md §3


class Action(Enum):
    REPLY = "reply"  # send Outcome.reply
    FORWARD = "forward"  # ask an upstream; on failure send Outcome.reply (a SERVFAIL)
    DROP = "drop"  # malformed, or not a query: no reply


class Outcome(NamedTuple):  # a tuple: made for every query the cache does not answer
    action: Action
    reply: bytes = b""  # with the query's ID
    kind: str = "malformed"  # answer, nodata, nxdomain, refused, formerr, ... for counters
    cacheable: bool = False  # the same query bytes always get this reply (until reload)
    limit: int = PLAIN_UDP_SIZE  # the client's UDP size: relayed answers are cut to it
    question_end: int = 12  # offset just past the question in query and reply
    edns: bool = False  # the query had an OPT record


DROPPED = Outcome(Action.DROP)


@dataclass(frozen=True)
class Addresses:
    """What one view (internal or external clients) is told; none: REFUSED."""

    v4: str | None = None
    v6: str | None = None

    @property
    def served(self) -> bool:
        return self.v4 is not None or self.v6 is not None


@dataclass(frozen=True)
class AnswerTable:
    """Everything `respond` needs besides the query; rebuilt and swapped on reload."""

    domains: tuple[str, ...]
    internal: Addresses
    external: Addresses
    ttl: int = 300
    serial: int = 1
    forwarding: bool = False  # upstreams exist: RA is set and other names are forwarded
    apexes: frozenset[tuple[bytes, ...]] = frozenset()
    names: tuple[str, ...] = DISCOVERY_NAMES
    # the apexes in wire form, lower case: a name that ends with none of them is not ours
    wire_apexes: tuple[bytes, ...] = ()

    @classmethod
    def build(
        cls,
        domains: tuple[str, ...],
        internal: Addresses,
        external: Addresses,
        ttl: int = 300,
        serial: int = 1,
        forwarding: bool = False,
        names: tuple[str, ...] = DISCOVERY_NAMES,
    ) -> AnswerTable:
        apexes = frozenset(
            tuple(label.encode("ascii").lower() for label in f"{name}.{d}".split("."))
            for d in domains
            for name in names
        )
        wire = tuple(b"".join(bytes([len(x)]) + x for x in apex) + b"\x00" for apex in apexes)
        return cls(domains, internal, external, ttl, serial, forwarding, apexes, names, wire)

    def apex_of(self, labels: tuple[bytes, ...]) -> int | None:
        """Where the apex starts in `labels` (0: the name is the apex), or None."""
        lowered = tuple(label.lower() for label in labels)
        for start in range(len(lowered)):  # longest suffix first: the most specific apex
            if lowered[start:] in self.apexes:
                return start
        return None


# -- the decision -------------------------------------------------------------------------


def respond(
    query: bytes,
    internal: bool,
    tcp: bool,
    table: AnswerTable,
    recurse: bool = True,
    cheap: bool = True,
) -> Outcome:
    """The reply to one query from an internal or external client, over UDP or TCP.

    Names other than ours are forwarded only when `recurse` (the client is in
    `dns.forward_networks`); otherwise they are REFUSED, without RA: no open resolver.
    Plain queries for names not ours skip dnslib (dns_wire), unless `cheap` is False:
    the same bytes either way, which the tests compare."""
    if len(query) < HEADER.size:
        return DROPPED
    _, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(query)
    if flags & QR:
        return DROPPED  # a response: never answer one (no loops, no reflection)
    if qdcount != 1 or ancount or nscount or arcount > MAX_ADDITIONAL:
        return _header_only(query, FORMERR, "formerr")
    plain = read_question(query) if cheap else None
    if plain is not None and not plain.flags & OPCODE_MASK and not plain.opt_ttl & 0xFF0000:
        name = query[HEADER.size : plain.name_end].lower()
        if plain.qclass not in (CLASS_IN, CLASS_ANY) or not name.endswith(table.wire_apexes):
            return _not_ours(query, plain, table, recurse)
        below = _below_ours(query, plain, internal, tcp, table, recurse)
        if below is not None:
            return below
    try:
        record = DNSRecord.parse(query)
    except Exception:  # dnslib raises DNSError, and on some input others (RecursionError)
        return DROPPED
    try:
        return _decide(record, query, internal, tcp, table, recurse)
    except (DNSError, DNSLabelError):  # parsed, but not packable: a name over 253 bytes...
        return _header_only(query, FORMERR, "formerr")


def _not_ours(query: bytes, q: Question, table: AnswerTable, recurse: bool) -> Outcome:
    """A plain query for a name that is not ours (or of another class), without dnslib:
    REFUSED, or forwarded when there are upstreams and the client may recurse (with the
    SERVFAIL for when none answers). The same bytes as `_decide` and `_reply` make."""
    limit = min(max(PLAIN_UDP_SIZE, q.udp_size), OUR_UDP_SIZE) if q.edns else PLAIN_UDP_SIZE
    flags = QR | (q.flags & (RD_BIT | CD)) | (RA if table.forwarding and recurse else 0)
    if q.qclass in (CLASS_IN, CLASS_ANY) and table.forwarding and recurse:
        servfail = refusal(query, q, SERVFAIL, flags)
        return Outcome(Action.FORWARD, servfail, "forward", False, limit, q.end, q.edns)
    return Outcome(
        Action.REPLY, refusal(query, q, REFUSED, flags), "refused", True, limit, q.end, q.edns
    )


def _below_ours(
    query: bytes, q: Question, internal: bool, tcp: bool, table: AnswerTable, recurse: bool
) -> Outcome | None:
    """NXDOMAIN (or REFUSED) for a plain query of a name below one of ours, without
    dnslib: a flood of made-up names must not cost a parse each. None: not that case."""
    start = apex_at(query, q, table.wire_apexes)
    if start <= HEADER.size or not 0 <= table.serial <= 0xFFFFFFFF or table.ttl > 0xFFFFFFFF:
        return None  # the apex itself (its answers are few, and cached), or no apex
    view = table.internal if internal else table.external
    limit = min(max(PLAIN_UDP_SIZE, q.udp_size), OUR_UDP_SIZE) if q.edns else PLAIN_UDP_SIZE
    flags = QR | (q.flags & (RD_BIT | CD)) | (RA if table.forwarding and recurse else 0)
    if not view.served or q.qtype in (T_AXFR, T_IXFR):
        reply = refusal(query, q, REFUSED, flags)
        return Outcome(Action.REPLY, reply, "refused", True, limit, q.end, q.edns)
    reply = nxdomain(query, q, start, flags | AA, table.ttl, table.serial)
    if not tcp and len(reply) > limit:
        reply = truncate(reply, q.end, q.edns)
    return Outcome(Action.REPLY, reply, "nxdomain", True, limit, q.end, q.edns)


def _header_only(query: bytes, rcode: int, kind: str) -> Outcome:
    """A bare header: cheap to make, so not cached (junk would crowd real answers out)."""
    flags = HEADER.unpack_from(query)[1]
    reply = HEADER.pack(0, QR | (flags & (OPCODE_MASK | RD_BIT | CD)) | rcode, 0, 0, 0, 0)
    return Outcome(Action.REPLY, query[:2] + reply[2:], kind)


@dataclass(frozen=True)
class _Query:
    record: DNSRecord
    flags: int
    edns: bool
    do: bool
    limit: int
    question_end: int
    recurse: bool = True


def _decide(
    record: DNSRecord, query: bytes, internal: bool, tcp: bool, table: AnswerTable, recurse: bool
) -> Outcome:
    opts = [rr for rr in record.ar if rr.rtype == T_OPT]
    if len(opts) > 1 or (opts and opts[0].rname.label != ()):
        return _header_only(query, FORMERR, "formerr")
    flags = HEADER.unpack_from(query)[1]
    opt = opts[0] if opts else None
    q = _Query(
        record,
        flags,
        edns=opt is not None,
        do=bool(opt is not None and opt.ttl & 0x8000),
        limit=min(max(PLAIN_UDP_SIZE, opt.rclass), OUR_UDP_SIZE) if opt else PLAIN_UDP_SIZE,
        question_end=question_end(query),
        recurse=recurse,
    )
    if opt is not None and (opt.ttl >> 16) & 0xFF:
        return _reply(q, table, BADVERS, "badvers", tcp)
    if flags & OPCODE_MASK:
        return _reply(q, table, NOTIMP, "notimp", tcp)
    question = record.q
    if question.qclass not in (CLASS_IN, CLASS_ANY):
        return _reply(q, table, REFUSED, "refused", tcp)
    start = table.apex_of(question.qname.label)
    if start is None:
        if not (table.forwarding and recurse):
            return _reply(q, table, REFUSED, "refused", tcp)
        servfail = _reply(q, table, SERVFAIL, "servfail", tcp)
        return Outcome(
            Action.FORWARD, servfail.reply, "forward", False, q.limit, q.question_end, q.edns
        )
    view = table.internal if internal else table.external
    if not view.served or question.qtype in (T_AXFR, T_IXFR):
        return _reply(q, table, REFUSED, "refused", tcp)
    return _authoritative(q, table, view, start, tcp)


def _authoritative(
    q: _Query, table: AnswerTable, view: Addresses, start: int, tcp: bool
) -> Outcome:
    qname = q.record.q.qname
    apex = DNSLabel(qname.label[start:])  # the question's spelling: its case is kept
    if start > 0:
        return _reply(q, table, NXDOMAIN, "nxdomain", tcp, authority=[_soa(apex, table)])
    answers = _apex_records(q.record.q.qtype, apex, view, table)
    if not answers:
        return _reply(q, table, NOERROR, "nodata", tcp, authority=[_soa(apex, table)])
    additional = _addresses(apex, view, table.ttl) if answers[0].rtype == T_NS else []
    return _reply(q, table, NOERROR, "answer", tcp, answers, additional=additional)


def _apex_records(qtype: int, apex: DNSLabel, view: Addresses, table: AnswerTable) -> list[RR]:
    addresses = _addresses(apex, view, table.ttl)
    if qtype == T_A:
        return [rr for rr in addresses if rr.rtype == T_A]
    if qtype == T_AAAA:
        return [rr for rr in addresses if rr.rtype == T_AAAA]
    if qtype == T_ANY:  # RFC 8482: one record (a served view has at least one address)
        return addresses[:1]
    if qtype == T_SOA:
        return [_soa(apex, table)]
    if qtype == T_NS:
        return [RR(apex, T_NS, ttl=table.ttl, rdata=NS(apex))]
    return []


def _addresses(apex: DNSLabel, view: Addresses, ttl: int) -> list[RR]:
    found = []
    if view.v4 is not None:
        found.append(RR(apex, T_A, ttl=ttl, rdata=A(view.v4)))
    if view.v6 is not None:
        found.append(RR(apex, T_AAAA, ttl=ttl, rdata=AAAA(view.v6)))
    return found


def _soa(apex: DNSLabel, table: AnswerTable) -> RR:
    rname = DNSLabel((HOSTMASTER, *apex.label))
    times = (*SOA_TIMES, table.ttl)  # refresh, retry, expire, negative-answer TTL
    return RR(apex, T_SOA, ttl=table.ttl, rdata=SOA(apex, rname, (table.serial, *times)))


def _reply(
    q: _Query,
    table: AnswerTable,
    rcode: int,
    kind: str,
    tcp: bool,
    answers: list[RR] | None = None,
    authority: list[RR] | None = None,
    additional: list[RR] | None = None,
) -> Outcome:
    ours = kind in ("answer", "nodata", "nxdomain")
    flags = QR | (q.flags & (OPCODE_MASK | RD_BIT | CD)) | (rcode & 0xF)
    flags |= (AA if ours else 0) | (RA if table.forwarding and q.recurse else 0)
    header = DNSHeader(id=q.record.header.id, bitmap=flags)
    reply = DNSRecord(header, [q.record.q], answers or [], auth=authority or [])
    for rr in additional or []:
        reply.add_ar(rr)
    if q.edns:
        reply.add_ar(EDNS0(udp_len=OUR_UDP_SIZE, ext_rcode=rcode >> 4, flags="do" if q.do else ""))
    packed = bytes(reply.pack())
    if not tcp and len(packed) > q.limit:
        packed = truncate(packed, q.question_end, q.edns)
    return Outcome(Action.REPLY, packed, kind, True, q.limit, q.question_end, q.edns)


# -- sizes ----------------------------------------------------------------------------------


def question_end(packet: bytes) -> int:
    """The offset just past the first question (12 when there is none or it is cut)."""
    if len(packet) < HEADER.size or not HEADER.unpack_from(packet)[2]:
        return HEADER.size
    offset = HEADER.size
    for _ in range(128):  # at most 127 labels in a name
        if offset >= len(packet):
            return HEADER.size
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            offset += 2
            break
        offset += 1 + length
        if length == 0:
            break
    else:
        return HEADER.size
    return offset + 4 if offset + 4 <= len(packet) else HEADER.size


_OPT_RECORD = b"\x00" + struct.pack("!HHIH", T_OPT, OUR_UDP_SIZE, 0, 0)


def truncate(reply: bytes, end: int, edns: bool) -> bytes:
    """`reply` cut to its header and question with TC set (and our OPT when `edns`)."""
    _, flags, qdcount, *_ = HEADER.unpack_from(reply)
    header = HEADER.pack(0, flags | TC, 1 if qdcount and end > HEADER.size else 0, 0, 0, int(edns))
    return reply[:2] + header[2:] + reply[HEADER.size : end] + (_OPT_RECORD if edns else b"")


def relay(answer: bytes, query: bytes, outcome: Outcome, tcp: bool) -> bytes:
    """An upstream's answer as the client gets it: its ID, and cut to its UDP size."""
    patched = query[:2] + answer[2:]
    if tcp or len(patched) <= outcome.limit:
        return patched
    return truncate(patched, outcome.question_end, outcome.edns)


def same_question(query: bytes, answer: bytes, end: int) -> bool:
    """Whether `answer` repeats the question of `query` (letter case aside)."""
    return (
        len(answer) >= end and answer[HEADER.size : end].lower() == query[HEADER.size : end].lower()
    )
