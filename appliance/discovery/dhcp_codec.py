"""The BOOTP/DHCP message codec (RFC 2131/2132, RFC 3396): bytes in, records out, and back.

`parse_packet` reads a datagram into a `DhcpPacket`; `DhcpPacket.pack` writes one.
Options are kept in order of first appearance, a code given several times joined into
one (RFC 3396), and a value over 255 bytes is split again when packed. No I/O: the
decision is in dhcp_answer, the Twisted listener in dhcp.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

SERVER_PORT, CLIENT_PORT = 67, 68
BOOTREQUEST, BOOTREPLY = 1, 2
MAGIC_COOKIE = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # RFC 2131 figure 1: 236 bytes
BROADCAST_FLAG = 0x8000

OPT_PAD, OPT_END = 0, 255
OPT_VENDOR_SPECIFIC = 43
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMETER_LIST = 55
OPT_MAX_MESSAGE = 57
OPT_VENDOR_CLASS = 60
OPT_CLIENT_ID = 61
OPT_RELAY_AGENT = 82
OPT_SIP_SERVERS = 120

DHCPACK, DHCPINFORM = 5, 8
MESSAGE_TYPES = {
    1: "DHCPDISCOVER",
    2: "DHCPOFFER",
    3: "DHCPREQUEST",
    4: "DHCPDECLINE",
    5: "DHCPACK",
    6: "DHCPNAK",
    7: "DHCPRELEASE",
    8: "DHCPINFORM",
}

ANY = IPv4Address(0)


class MalformedPacket(ValueError):
    """A datagram that is not a well-formed BOOTP/DHCP message."""


@dataclass(frozen=True)
class DhcpPacket:
    op: int
    htype: int
    hlen: int
    hops: int
    xid: int
    secs: int
    flags: int
    ciaddr: IPv4Address
    yiaddr: IPv4Address
    siaddr: IPv4Address
    giaddr: IPv4Address
    chaddr: bytes  # the whole 16-byte field
    sname: bytes = bytes(64)
    file: bytes = bytes(128)
    # In order of first appearance; a code given several times is one option, its parts
    # concatenated (RFC 3396).
    options: tuple[tuple[int, bytes], ...] = ()

    def option(self, code: int) -> bytes | None:
        return next((value for c, value in self.options if c == code), None)

    @property
    def message_type(self) -> int | None:
        value = self.option(OPT_MESSAGE_TYPE)
        if value is None:
            return None
        if len(value) != 1:
            raise MalformedPacket(f"option 53 (message type) has {len(value)} bytes, not 1")
        return value[0]

    @property
    def mac(self) -> str:
        """The client hardware address, as colon-separated hex (`hlen` bytes of chaddr)."""
        return ":".join(f"{b:02x}" for b in self.chaddr[: self.hlen])

    def pack(self) -> bytes:
        header = HEADER.pack(
            self.op,
            self.htype,
            self.hlen,
            self.hops,
            self.xid,
            self.secs,
            self.flags,
            self.ciaddr.packed,
            self.yiaddr.packed,
            self.siaddr.packed,
            self.giaddr.packed,
            self.chaddr,
            self.sname,
            self.file,
        )
        return header + MAGIC_COOKIE + encode_options(self.options) + bytes((OPT_END,))


def encode_options(options: Sequence[tuple[int, bytes]]) -> bytes:
    """Code, length, value for each option; a value over 255 bytes is split (RFC 3396)."""
    out = bytearray()
    for code, value in options:
        if not 0 < code < 255:
            raise ValueError(f"option code {code} cannot be encoded")
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]
        for chunk in chunks:
            out += bytes((code, len(chunk))) + chunk
    return bytes(out)


def parse_options(data: bytes) -> tuple[tuple[int, bytes], ...]:
    """The options area after the magic cookie: pads skipped, stops at end (255) or at the
    end of the data (a missing end option is tolerated; a truncated option is not)."""
    found: dict[int, bytes] = {}
    i = 0
    while i < len(data):  # each step moves i forward by at least one byte
        code = data[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            break
        if i + 1 >= len(data):
            raise MalformedPacket(f"option {code} at byte {240 + i} has no length")
        end = i + 2 + data[i + 1]
        if end > len(data):
            raise MalformedPacket(f"option {code} at byte {240 + i} runs past the end")
        found[code] = found.get(code, b"") + data[i + 2 : end]
        i = end
    return tuple(found.items())


def parse_packet(data: bytes) -> DhcpPacket:
    """A BOOTP/DHCP message (RFC 2131/2132). Options in sname/file (overload, option 52)
    are not read: nothing this responder needs is ever put there."""
    if len(data) < HEADER.size + len(MAGIC_COOKIE):
        raise MalformedPacket(f"{len(data)} bytes: shorter than a DHCP header")
    fields = HEADER.unpack_from(data)
    if data[HEADER.size : HEADER.size + 4] != MAGIC_COOKIE:
        raise MalformedPacket("no DHCP magic cookie")
    op, htype, hlen, hops, xid, secs, flags = fields[:7]
    if hlen > 16:
        raise MalformedPacket(f"hardware address length {hlen} is over 16")
    ciaddr, yiaddr, siaddr, giaddr = (IPv4Address(a) for a in fields[7:11])
    return DhcpPacket(
        op,
        htype,
        hlen,
        hops,
        xid,
        secs,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        giaddr,
        fields[11],
        fields[12],
        fields[13],
        parse_options(data[HEADER.size + 4 :]),
    )
