"""The DNS responder's cheap path on the wire, without dnslib: bytes in, bytes out, no I/O.

Most queries are plain: one question whose name has no compression pointer, and at most
one OPT record without options. For those, `read_question` takes the header and question
apart by hand, `folded_key` gives the reply cache a key that ignores the name's letter
case (a resolver's 0x20 mixed case would otherwise miss every time), `refusal` packs
the replies for names that are not ours (REFUSED, or the SERVFAIL kept for when a
forwarded query gets no answer) and `nxdomain` those for names below ours (found by
`apex_at`), byte for byte as dnslib would. Anything unusual returns None, and dns_answer
takes the full path through dnslib.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

HEADER = struct.Struct("!HHHHHH")
_TAIL = struct.Struct("!HH")  # type, class
_OPT = struct.Struct("!HHIH")  # type, UDP size, extended RCODE/version/flags, data length
_RR = struct.Struct("!HHIH")  # type, class, TTL, data length (after the owner name)
_POINTER = struct.Struct("!H")
_SOA_TIMES = struct.Struct("!IIIII")
T_SOA, T_OPT = 6, 41
NXDOMAIN = 3
SOA_TIMES = (3600, 600, 86400)  # refresh, retry, expire; then the negative-answer TTL
HOSTMASTER = b"\x0ahostmaster"  # the SOA's mailbox, before the apex
OUR_UDP_SIZE = 1232  # what we advertise in OPT, and the most we send over UDP
MAX_NAME_TEXT = 253  # dnslib refuses to pack longer names (their text form, without the dot)


class Question(NamedTuple):
    flags: int
    name_end: int  # offset just past the name's terminating zero
    end: int  # offset just past the question (type and class)
    qtype: int
    qclass: int
    edns: bool
    udp_size: int  # the OPT record's class (0 without one)
    opt_ttl: int  # extended RCODE, version and flags (DO) of the OPT record


def name_end(packet: bytes) -> int:
    """The offset past the question's name when it is plain (no pointer, labels of 1-63
    bytes, whole); else 0."""
    offset, size = HEADER.size, len(packet)
    for _ in range(128):
        if offset >= size:
            return 0
        length = packet[offset]
        if length == 0:
            return offset + 1
        if length > 63:  # a pointer, or a label type nobody uses
            return 0
        offset += 1 + length
    return 0


def read_question(query: bytes) -> Question | None:
    """A plain query's header and question; None for anything dnslib should look at.

    Plain: one question, no answer or authority records, at most one additional record,
    which must be an OPT at the root without options; an ASCII name of at most 253
    characters without pointers; nothing after the last record."""
    if len(query) < HEADER.size:
        return None
    _, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(query)
    if qdcount != 1 or ancount or nscount or arcount > 1:
        return None
    offset, size = HEADER.size, len(query)
    try:
        while length := query[offset]:
            if length > 63 or offset > 255 + HEADER.size:  # a pointer, or too long a name
                return None
            offset += 1 + length
    except IndexError:
        return None
    end = offset + 1
    if end + 4 > size or end - HEADER.size - 2 > MAX_NAME_TEXT:
        return None  # dnslib will not pack names over 253 characters
    if not query[HEADER.size : end].isascii():
        return None  # dnslib drops names that are not UTF-8
    qtype, qclass = _TAIL.unpack_from(query, end)
    udp_size = opt_ttl = 0
    if arcount:
        at = end + 4
        if len(query) != at + 1 + _OPT.size or query[at] != 0:
            return None
        rtype, udp_size, opt_ttl, rdlength = _OPT.unpack_from(query, at + 1)
        if rtype != T_OPT or rdlength:
            return None
    elif len(query) != end + 4:
        return None
    return Question(flags, end, end + 4, qtype, qclass, bool(arcount), udp_size, opt_ttl)


def folded_key(query: bytes) -> tuple[bytes, int] | None:
    """The reply cache's key for `query` with the name in lower case, and the question's
    end; None when the name is already lower case (the exact key is the same) or not plain.

    Every name in our replies is the question's name or a suffix of it, written as a
    pointer to the question, so a reply cached for one spelling serves every other once
    the question is copied over from the query (`with_question`)."""
    rest = query[HEADER.size :]
    if rest.lower() == rest:  # no capital letter anywhere after the header: the usual case
        return None
    end = name_end(query)
    if not end or end + 4 > len(query):
        return None
    name = query[HEADER.size : end]
    lowered = name.lower()
    if lowered == name:
        return None
    return query[2 : HEADER.size] + lowered + query[end:], end + 4


def with_question(query: bytes, tail: bytes, end: int) -> bytes:
    """A cached reply without its ID (`tail`) with the query's ID and question."""
    return query[:2] + tail[: HEADER.size - 2] + query[HEADER.size : end] + tail[end - 2 :]


def apex_at(query: bytes, q: Question, wire_apexes: tuple[bytes, ...]) -> int:
    """Where in `query` the longest of `wire_apexes` (lower case) that ends the name
    starts, on a label boundary; 0 when none does."""
    offset, name = HEADER.size, query[HEADER.size : q.name_end].lower()
    while offset < q.name_end - 1:
        if name[offset - HEADER.size :] in wire_apexes:
            return offset
        offset += 1 + query[offset]
    return 0


def nxdomain(query: bytes, q: Question, apex: int, flags: int, ttl: int, serial: int) -> bytes:
    """NXDOMAIN for a name below the apex at offset `apex`, with the apex's SOA in
    authority, as dns_answer packs it with dnslib: every name a pointer to the question."""
    pointer = _POINTER.pack(0xC000 | apex)
    rdata = pointer + HOSTMASTER + pointer + _SOA_TIMES.pack(serial, *SOA_TIMES, ttl)
    soa = pointer + _RR.pack(T_SOA, 1, ttl, len(rdata)) + rdata
    header = HEADER.pack(0, flags | NXDOMAIN, 1, 0, 1, int(q.edns))
    return query[:2] + header[2:] + query[HEADER.size : q.end] + soa + _our_opt(q, NXDOMAIN)


def refusal(query: bytes, q: Question, rcode: int, flags: int) -> bytes:
    """REFUSED (or SERVFAIL) for `q`: the header with `flags`, the question as asked, and
    our OPT record when the query had one, as dns_answer packs it with dnslib. It is never
    over 512 bytes (a name of at most 253 characters), so never truncated."""
    header = HEADER.pack(0, flags | rcode, 1, 0, 0, int(q.edns))
    return query[:2] + header[2:] + query[HEADER.size : q.end] + _our_opt(q, rcode)


def _our_opt(q: Question, rcode: int) -> bytes:
    """Our OPT record when the query had one (version 0, its DO bit echoed), else none."""
    if not q.edns:
        return b""
    ttl = (rcode >> 4) << 24 | (q.opt_ttl & 0x8000)
    return b"\x00" + _OPT.pack(T_OPT, OUR_UDP_SIZE, ttl, 0)
