"""The DHCPINFORM responder, like the Lync Registrar's: off by default, never leases.

Lync Phone Edition phones that already have an address send DHCPINFORM with vendor class
(option 60) `MS-UC-Client` asking (option 55) for options 43 and 120, and a second one with
vendor class `CPE-OCPHONE` for the voice VLAN. This module answers exactly those with a
DHCPACK and ignores every other message: it never offers or leases an address.

Three layers, as with DNS: `parse_packet` / `DhcpPacket.pack` (the RFC 2131/2132 codec),
`decide` (the pure decision: packet bytes in, reply bytes and destination out, with its
reason), and `InformProtocol` / `make_dhcp_service` (a few lines of Twisted around them).

Server identifier (option 54): the listen address when it is a specific one; with
0.0.0.0, the local address the kernel would use to reach the reply's destination (a
connect() on a UDP socket, which sends nothing). A socket bound to 0.0.0.0 does not tell
Twisted which address a datagram came in on (that would need IP_PKTINFO); on a host with
one address towards its phones, the route gives the same answer.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address
from typing import Any

from twisted.application import service
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from appliance.config import Config, ConfigError
from appliance.discovery.dhcp_options import (
    CPE_OCPHONE,
    MS_UC_CLIENT,
    DhcpOptionError,
    option43,
    option120,
    vlan_option43,
)

log = Logger(namespace="ucupdates.dhcp")

SERVER_PORT, CLIENT_PORT = 67, 68
BOOTREQUEST, BOOTREPLY = 1, 2
MAGIC_COOKIE = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # RFC 2131 figure 1: 236 bytes
BROADCAST_FLAG = 0x8000
MIN_REPLY_BYTES = 300  # the BOOTP minimum (RFC 1542 §2.1), which ISC dhcpd pads to too
MIN_MAX_MESSAGE = 576  # RFC 2131 §2: every client accepts a 576-byte IP datagram
IP_UDP_HEADERS = 28

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
LIMITED_BROADCAST = IPv4Address("255.255.255.255")


class MalformedPacket(ValueError):
    """A datagram that is not a well-formed BOOTP/DHCP message."""


# -- the codec --------------------------------------------------------------------------


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


# -- the decision -----------------------------------------------------------------------


@dataclass(frozen=True)
class InformAnswers:
    """What the responder gives: option payloads per vendor class."""

    option43: bytes
    option120: bytes
    vlan43: bytes | None = None

    @classmethod
    def from_config(cls, config: Config) -> InformAnswers:
        """From `[dhcp]`; the web server defaults to the appliance's internal FQDN.
        A configuration these options cannot be built from is a ConfigError."""
        dhcp = config.dhcp
        source = config.source or "config"
        if not dhcp.sip_servers:
            raise ConfigError(f"{source}: key 'dhcp.sip_servers': empty (option 120 needs one)")
        try:
            return cls(
                option43(
                    dhcp.web_fqdn or config.internal_fqdn,
                    dhcp.web_port,
                    "https",
                    dhcp.cert_prov_path,
                ),
                option120(dhcp.sip_servers),
                None if dhcp.voice_vlan is None else vlan_option43(dhcp.voice_vlan),
            )
        except DhcpOptionError as e:
            raise ConfigError(f"{source}: [dhcp]: {e}") from None

    def for_vendor_class(self, vendor_class: bytes) -> dict[int, bytes] | None:
        """The options this vendor class can have, or None for a class we do not serve.
        `MS-UC-Client` is matched exactly (Lync's docs: case-sensitive); `CPE-OCPHONE`
        without regard to case (the OCS 2007 phones wrote it `CPE-OCPhone`)."""
        if vendor_class == MS_UC_CLIENT.encode():
            return {OPT_VENDOR_SPECIFIC: self.option43, OPT_SIP_SERVERS: self.option120}
        if vendor_class.upper() == CPE_OCPHONE.encode():
            return {} if self.vlan43 is None else {OPT_VENDOR_SPECIFIC: self.vlan43}
        return None


@dataclass(frozen=True)
class ReplyPorts:
    """Where replies go: a relay agent's server port, a client's port (RFC 2131 §4.1).
    Only tests change them."""

    relay: int = SERVER_PORT
    client: int = CLIENT_PORT


class Outcome(StrEnum):
    ANSWERED = "answered"
    IGNORED = "ignored"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class InformDecision:
    outcome: Outcome
    reason: str
    reply: bytes | None = None
    destination: tuple[str, int] | None = None
    mac: str | None = None
    vendor_class: str | None = None
    relay: str | None = None
    answered: tuple[int, ...] = ()  # the option codes in the reply, besides 53 and 54


ServerIp = str | Callable[[str], str | None]


def _ignored(
    reason: str, packet: DhcpPacket | None = None, vendor: str | None = None
) -> InformDecision:
    mac = packet.mac if packet is not None else None
    return InformDecision(Outcome.IGNORED, reason, mac=mac, vendor_class=vendor)


def _text(value: bytes, limit: int = 64) -> str:
    return value[:limit].decode("ascii", "backslashreplace")


def decide(
    datagram: bytes,
    answers: InformAnswers,
    server_ip: ServerIp,
    sender: str | None = None,
    ports: ReplyPorts = ReplyPorts(),
) -> InformDecision:
    """Answer a DHCPINFORM from a Lync phone, or say why not.

    `server_ip` is our address for option 54, or a function from the reply's destination
    address to it. `sender` is the datagram's source address: a client not behind a relay
    is answered at `ciaddr` only when that is where the message came from, so that a
    forged `ciaddr` cannot aim replies at another host."""
    try:
        packet = parse_packet(datagram)
        kind = packet.message_type
    except MalformedPacket as e:
        return InformDecision(Outcome.MALFORMED, str(e))
    if packet.op != BOOTREQUEST:
        return _ignored(f"op {packet.op} is not BOOTREQUEST", packet)
    if kind is None:
        return _ignored("BOOTP request (no DHCP message type)", packet)
    if kind != DHCPINFORM:
        name = MESSAGE_TYPES.get(kind, f"message type {kind}")
        return _ignored(f"{name}: this server only answers DHCPINFORM", packet)
    raw_vendor = packet.option(OPT_VENDOR_CLASS)
    if raw_vendor is None:
        return _ignored("DHCPINFORM without vendor class", packet)
    vendor = _text(raw_vendor)
    offered = answers.for_vendor_class(raw_vendor)
    if offered is None:
        return _ignored(f"vendor class {vendor!r} is not served", packet, vendor)
    requested = packet.option(OPT_PARAMETER_LIST) or b""
    wanted = [code for code in dict.fromkeys(requested) if code in offered]
    if not wanted:
        why = "no voice VLAN configured" if not offered else "asks for none of our options"
        return _ignored(why, packet, vendor)

    route = _route(packet, sender, ports)
    if isinstance(route, str):
        return _ignored(route, packet, vendor)
    host, port = route
    ours = server_ip if isinstance(server_ip, str) else server_ip(str(host))
    if ours is None:
        return _ignored(f"no local address towards {host}", packet, vendor)
    options = _reply_options(packet, {code: offered[code] for code in wanted}, ours)
    if isinstance(options, str):
        return _ignored(options, packet, vendor)
    reply = DhcpPacket(
        BOOTREPLY,
        packet.htype,
        packet.hlen,
        0,
        packet.xid,
        0,
        packet.flags,
        packet.ciaddr,
        ANY,
        ANY,
        packet.giaddr,
        packet.chaddr,
        options=options,
    ).pack()
    reply += bytes(max(0, MIN_REPLY_BYTES - len(reply)))
    relayed = packet.giaddr != ANY
    return InformDecision(
        Outcome.ANSWERED,
        "DHCPINFORM answered",
        reply,
        (str(host), port),
        packet.mac,
        vendor,
        str(packet.giaddr) if relayed else None,
        tuple(code for code, _ in options if code in offered),
    )


def _route(
    packet: DhcpPacket, sender: str | None, ports: ReplyPorts
) -> tuple[IPv4Address, int] | str:
    """Where the reply goes (RFC 2131 §4.1), or why it goes nowhere: the relay, else the
    client's ciaddr (when it sent from there), else the limited broadcast."""
    if packet.giaddr != ANY:
        host, port = packet.giaddr, ports.relay
    elif packet.ciaddr != ANY:
        if sender is not None and sender != str(packet.ciaddr):
            return f"sent from {sender}, not from ciaddr {packet.ciaddr}"
        host, port = packet.ciaddr, ports.client
    else:
        return LIMITED_BROADCAST, ports.client
    if host.is_multicast or host.is_reserved or host.packed[0] == 0:
        return f"will not reply to {host}"
    return host, port


def _reply_options(
    packet: DhcpPacket, wanted: dict[int, bytes], server_ip: str
) -> tuple[tuple[int, bytes], ...] | str:
    """Message type ACK, server identifier, the client identifier echoed (RFC 6842), the
    wanted options in the client's order while they fit the message size it accepts,
    and relay agent information echoed last (RFC 3046 §2.2). Or why none fit."""
    head: list[tuple[int, bytes]] = [
        (OPT_MESSAGE_TYPE, bytes((DHCPACK,))),
        (OPT_SERVER_ID, IPv4Address(server_ip).packed),
    ]
    client_id = packet.option(OPT_CLIENT_ID)
    if client_id is not None:
        head.append((OPT_CLIENT_ID, client_id))
    tail: list[tuple[int, bytes]] = []
    relay_info = packet.option(OPT_RELAY_AGENT)
    if packet.giaddr != ANY and relay_info is not None:
        tail.append((OPT_RELAY_AGENT, relay_info))
    limit = _max_message(packet) - IP_UDP_HEADERS
    room = limit - (HEADER.size + len(MAGIC_COOKIE) + len(encode_options(head + tail)) + 1)
    body: list[tuple[int, bytes]] = []
    for code, value in wanted.items():
        size = len(encode_options([(code, value)]))
        if size <= room:
            body.append((code, value))
            room -= size
    if not body:
        return f"the options do not fit in {limit} bytes"
    return tuple(head + body + tail)


def _max_message(packet: DhcpPacket) -> int:
    """The largest IP datagram the client takes: option 57 when sane, else 576."""
    value = packet.option(OPT_MAX_MESSAGE)
    if value is None or len(value) != 2:
        return MIN_MAX_MESSAGE
    return min(max(int.from_bytes(value, "big"), MIN_MAX_MESSAGE), 1500)


def answer_inform(
    packet: bytes,
    settings: InformAnswers,
    server_ip: ServerIp,
    sender: str | None = None,
    ports: ReplyPorts = ReplyPorts(),
) -> tuple[bytes, tuple[str, int]] | None:
    """The reply and where it goes, or None: `decide` without its reason."""
    decision = decide(packet, settings, server_ip, sender, ports)
    if decision.reply is None or decision.destination is None:
        return None
    return decision.reply, decision.destination


# -- Twisted ----------------------------------------------------------------------------


def local_address_towards(host: str) -> str | None:
    """The source address the kernel picks to reach `host`: connect() on a UDP socket
    consults the routing table and sends nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            probe.connect((host, SERVER_PORT))
            address: str = probe.getsockname()[0]
        except OSError:
            return None
    return None if address == "0.0.0.0" else address  # noqa: S104


class InformProtocol(DatagramProtocol):
    """Decides each datagram with `decide` and sends what it says; counts outcomes."""

    def __init__(
        self, answers: InformAnswers, server_ip: ServerIp, ports: ReplyPorts = ReplyPorts()
    ) -> None:
        self.answers = answers
        self.server_ip = server_ip
        self.ports = ports
        self.counts: Counter[Outcome] = Counter()

    def startProtocol(self) -> None:
        transport: Any = self.transport  # zope interfaces do not type-check as protocols
        transport.setBroadcastAllowed(True)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        d = decide(datagram, self.answers, self.server_ip, addr[0], self.ports)
        self.counts[d.outcome] += 1
        count = self.counts[d.outcome]
        if d.outcome is Outcome.MALFORMED:
            log.debug(
                "malformed DHCP packet from {sender} ({reason}); {count} so far",
                sender=addr[0],
                reason=d.reason,
                count=count,
                event="dhcp.malformed",
            )
            return
        if d.reply is None or d.destination is None:
            log.debug(
                "DHCP message from {sender} ignored: {reason}; {count} so far",
                sender=addr[0],
                reason=d.reason,
                mac=d.mac,
                vendor_class=d.vendor_class,
                count=count,
                event="dhcp.ignored",
            )
            return
        try:
            transport: Any = self.transport
            transport.write(d.reply, d.destination)
        except OSError as e:
            log.warn(
                "DHCPACK to {destination} not sent: {error}",
                destination=f"{d.destination[0]}:{d.destination[1]}",
                error=str(e),
                mac=d.mac,
                event="dhcp.send_failed",
            )
            return
        log.info(
            "DHCPINFORM answered for {mac} ({vendor_class}) via {relay}: options {options}",
            mac=d.mac,
            vendor_class=d.vendor_class,
            relay=d.relay or "direct",
            options=list(d.answered),
            destination=f"{d.destination[0]}:{d.destination[1]}",
            event="dhcp.inform.answered",
        )


class DhcpService(service.Service):
    """The UDP listener; with no protocol (DHCP disabled) it does nothing."""

    name = "dhcp"

    def __init__(self, protocol: InformProtocol | None, host: str, port: int, reactor: Any):
        self.protocol = protocol
        self.host = host
        self.requested_port = port
        self._reactor = reactor
        self._udp: Any = None

    @property
    def port(self) -> int | None:
        """The bound UDP port (the real one when the config says 0), while listening."""
        return None if self._udp is None else int(self._udp.getHost().port)

    def startService(self) -> None:
        if self.protocol is not None:
            try:
                self._udp = self._reactor.listenUDP(
                    self.requested_port, self.protocol, interface=self.host
                )
            except CannotListenError as e:
                raise OSError(
                    f"cannot listen on {self.host}:{self.requested_port} (dhcp): {e.socketError}"
                ) from e
            log.info(
                "DHCPINFORM responder on {host}:{port}",
                host=self.host,
                port=self.port,
                event="listener.start",
            )
        super().startService()  # type: ignore[no-untyped-call]  # Twisted: unannotated

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        udp, self._udp = self._udp, None
        if udp is not None:
            return udp.stopListening()
        return None


def make_dhcp_service(
    config: Config,
    reactor: Any,
    *,
    relay_port: int = SERVER_PORT,
    client_port: int = CLIENT_PORT,
) -> DhcpService:
    """The DHCPINFORM responder on `dhcp.listen`, or a service doing nothing when
    `dhcp.enabled` is false. Raises ConfigError for settings it cannot serve."""
    listen = config.dhcp.listen
    if not config.dhcp.enabled:
        return DhcpService(None, listen.host, listen.port, reactor)
    try:
        host = ipaddress.ip_address(listen.host)
    except ValueError:
        host = None
    if not isinstance(host, IPv4Address):
        raise ConfigError(
            f"{config.source or 'config'}: key 'dhcp.listen': DHCP needs an IPv4 address, "
            f"got {listen.host!r}"
        )
    answers = InformAnswers.from_config(config)
    server_ip: ServerIp = local_address_towards if host == ANY else str(host)
    protocol = InformProtocol(answers, server_ip, ReplyPorts(relay_port, client_port))
    return DhcpService(protocol, str(host), listen.port, reactor)
