"""The DHCPINFORM responder's decision: packet bytes in, reply bytes and destination out.

`decide` answers a DHCPINFORM from a Lync phone with a DHCPACK carrying options 43 and
120 (vendor class `MS-UC-Client`) or the voice VLAN (`CPE-OCPHONE`), and says why it
ignores every other message. Pure: no sockets, no Twisted; the one question that needs
the routing table (our address towards the destination, for option 54) is a function
passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, ip_address

from appliance.config import Config, ConfigError, Network
from appliance.discovery.dhcp_codec import (
    ANY,
    BOOTREPLY,
    BOOTREQUEST,
    CLIENT_PORT,
    DHCPACK,
    DHCPINFORM,
    HEADER,
    MAGIC_COOKIE,
    MESSAGE_TYPES,
    OPT_CLIENT_ID,
    OPT_MAX_MESSAGE,
    OPT_MESSAGE_TYPE,
    OPT_PARAMETER_LIST,
    OPT_RELAY_AGENT,
    OPT_SERVER_ID,
    OPT_SIP_SERVERS,
    OPT_VENDOR_CLASS,
    OPT_VENDOR_SPECIFIC,
    SERVER_PORT,
    DhcpPacket,
    MalformedPacket,
    encode_options,
    parse_packet,
)
from appliance.discovery.dhcp_options import (
    CPE_OCPHONE,
    MS_UC_CLIENT,
    DhcpOptionError,
    option43,
    option120,
    vlan_option43,
)

MIN_REPLY_BYTES = 300  # the BOOTP minimum (RFC 1542 §2.1), which ISC dhcpd pads to too
MIN_MAX_MESSAGE = 576  # RFC 2131 §2: every client accepts a 576-byte IP datagram
IP_UDP_HEADERS = 28
LIMITED_BROADCAST = IPv4Address("255.255.255.255")


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


DEFAULT_PORTS = ReplyPorts()


class Outcome(StrEnum):
    ANSWERED = "answered"
    IGNORED = "ignored"
    MALFORMED = "malformed"
    UNTRUSTED_RELAY = "untrusted_relay"  # relayed (giaddr set), not by one of dhcp.relays


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
    relays: tuple[Network, ...] = (),
) -> InformDecision:
    """Answer a DHCPINFORM from a Lync phone, or say why not.

    `server_ip` is our address for option 54, or a function from the reply's destination
    address to it. `sender` is the datagram's source address: a client not behind a relay
    is answered at `ciaddr` only when that is where the message came from, and a relayed
    message (giaddr set) only when it came from one of `relays` (dhcp.relays), so that a
    forged `ciaddr` or `giaddr` cannot aim replies at another host."""
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

    if packet.giaddr != ANY and not _is_relay(sender, relays):
        return InformDecision(
            Outcome.UNTRUSTED_RELAY,
            f"relayed for giaddr {packet.giaddr} by {sender}, not one of dhcp.relays",
            mac=packet.mac,
            vendor_class=vendor,
            relay=str(packet.giaddr),
        )
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


def _is_relay(sender: str | None, relays: tuple[Network, ...]) -> bool:
    try:
        address = ip_address(sender or "")
    except ValueError:
        return False
    return any(address in network for network in relays)


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
    relays: tuple[Network, ...] = (),
) -> tuple[bytes, tuple[str, int]] | None:
    """The reply and where it goes, or None: `decide` without its reason."""
    decision = decide(packet, settings, server_ip, sender, ports, relays)
    if decision.reply is None or decision.destination is None:
        return None
    return decision.reply, decision.destination
