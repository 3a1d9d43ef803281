"""The DHCPINFORM responder, like the Lync Registrar's: off by default, never leases.

Lync Phone Edition phones that already have an address send DHCPINFORM with vendor class
(option 60) `MS-UC-Client` asking (option 55) for options 43 and 120, and a second one with
vendor class `CPE-OCPHONE` for the voice VLAN. This module answers exactly those with a
DHCPACK and ignores every other message: it never offers or leases an address.

Three layers, as with DNS: `parse_packet` / `DhcpPacket.pack` (dhcp_codec, the RFC
2131/2132 codec), `decide` (dhcp_answer, the pure decision: packet bytes in, reply bytes
and destination out, with its reason), and here `InformProtocol` / `make_dhcp_service`
(a few lines of Twisted around them).

Server identifier (option 54): the listen address when it is a specific one; with
0.0.0.0, the local address the kernel would use to reach the reply's destination (a
connect() on a UDP socket, which sends nothing). A socket bound to 0.0.0.0 does not tell
Twisted which address a datagram came in on (that would need IP_PKTINFO); on a host with
one address towards its phones, the route gives the same answer.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from twisted.application import service
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from appliance.config import Config, ConfigError, Network
from appliance.discovery.dhcp_answer import (
    DEFAULT_PORTS,
    InformAnswers,
    Outcome,
    ReplyPorts,
    ServerIp,
    decide,
)
from appliance.discovery.dhcp_codec import ANY, CLIENT_PORT, SERVER_PORT

log = Logger(namespace="ucupdates.dhcp")


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


RELAY_LOG_SECONDS = 60.0  # dhcp.untrusted_relay is logged at most this often


class InformProtocol(DatagramProtocol):
    """Decides each datagram with `decide` and sends what it says; counts outcomes.

    Relayed messages (giaddr set) are answered only when they come from one of `relays`;
    others are logged as `dhcp.untrusted_relay` (a warning at most once a minute, with
    how many were not logged)."""

    def __init__(
        self,
        answers: InformAnswers,
        server_ip: ServerIp,
        ports: ReplyPorts = DEFAULT_PORTS,
        relays: tuple[Network, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.answers = answers
        self.server_ip = server_ip
        self.ports = ports
        self.relays = relays
        self.counts: Counter[Outcome] = Counter()
        self._clock = clock
        self._relay_logged: float | None = None
        self._relay_quiet = 0

    def startProtocol(self) -> None:
        transport: Any = self.transport  # zope interfaces do not type-check as protocols
        transport.setBroadcastAllowed(True)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        d = decide(datagram, self.answers, self.server_ip, addr[0], self.ports, self.relays)
        self.counts[d.outcome] += 1
        count = self.counts[d.outcome]
        if d.outcome is Outcome.UNTRUSTED_RELAY:
            self._untrusted_relay(addr[0], d.relay, d.mac, count)
            return
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

    def _untrusted_relay(
        self, sender: str, giaddr: str | None, mac: str | None, count: int
    ) -> None:
        now = self._clock()
        if self._relay_logged is not None and now - self._relay_logged < RELAY_LOG_SECONDS:
            self._relay_quiet += 1
            return
        log.warn(
            "relayed DHCP message from {sender} (giaddr {giaddr}) ignored: not one of "
            "dhcp.relays; {unlogged} more since the last report, {count} in all",
            sender=sender,
            giaddr=giaddr,
            mac=mac,
            unlogged=self._relay_quiet,
            count=count,
            event="dhcp.untrusted_relay",
        )
        self._relay_logged, self._relay_quiet = now, 0


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
    protocol = InformProtocol(
        answers, server_ip, ReplyPorts(relay_port, client_port), config.dhcp.relays, reactor.seconds
    )
    return DhcpService(protocol, str(host), listen.port, reactor)
