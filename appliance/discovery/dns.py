"""The DNS responder in the serve process: UDP and TCP listeners around dns_answer.

`make_dns_service(config, reactor)` returns a DnsService (a MultiService) that, once
started, listens on `listeners.dns` over UDP and TCP on the same port (port 0: a free
one, in `.ports`), and holds the DnsResponder (`.responder`) for reload and counters.

This module builds the service from the config; the DnsResponder (dns_responder) caches,
limits and forwards, and the protocols in dns_listeners move the bytes.

The responder answers for the discovery names itself, `<name>.<domain>` for each of
`dns.names` (default `ucupdates-r2` and `ucupdates`, docs/protocol.md §3) in each domain
(dns_answer decides and packs),
reuses packed replies for repeated questions with only the ID patched (and the question
copied as asked when only its letter case differs), limits responses
per client prefix over UDP (RRL, with slip), and forwards every other name (dns_forward) to
`dns.upstreams` over UDP (random IDs and source ports, timeouts, a bounded table of
outstanding queries; TCP when an answer comes back truncated), relaying the answer with
the client's ID, or SERVFAIL when no upstream answers.

Internal address: `dns.internal_address`/`internal_address6`; when both are unset, the
internal HTTPS listener's host if it is an IP address other than a wildcard (loopback
too: the embedded defaults answer 127.0.0.1, for a lab on one machine); otherwise
internal clients are REFUSED (warned at start). External clients get
`dns.external_address`/`external_address6`, or REFUSED when both are unset.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from appliance.config import Address, Config, ConfigError
from appliance.discovery.dhcp_domains import DhcpDomainsError
from appliance.discovery.dns_answer import Addresses
from appliance.discovery.dns_forward import Forwarder
from appliance.discovery.dns_listeners import DnsDatagramProtocol, DnsStreamFactory, listen_udp
from appliance.discovery.dns_responder import DnsResponder

log = Logger(namespace="ucupdates.dns")


def internal_addresses(config: Config) -> Addresses:
    """The internal view's addresses, falling back to the internal HTTPS listener's host."""
    dns = config.dns
    if dns.internal_address is not None or dns.internal_address6 is not None:
        return Addresses(dns.internal_address, dns.internal_address6)
    try:
        host = ipaddress.ip_address(config.listeners.internal_https.host)
    except ValueError:
        return Addresses()
    if host.is_unspecified:
        return Addresses()
    return Addresses(str(host), None) if host.version == 4 else Addresses(None, str(host))


def check_settings(config: Config) -> None:
    """What the config module cannot check alone: some name to answer, and upstreams
    are addresses, and not us."""
    listener = config.listeners.dns
    if not config.dns.names:
        raise ConfigError(
            f"{_where(config)}key 'dns.names': give at least one of "
            '"ucupdates-r2" and "ucupdates"'
        )
    for upstream in config.dns.upstreams:
        try:
            host = ipaddress.ip_address(upstream.host)
        except ValueError:
            raise ConfigError(
                f"{_where(config)}key 'dns.upstreams': {upstream} must be an IP address"
            ) from None
        wildcard = listener.host in ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
        ours = upstream.host == listener.host or (wildcard and host.is_loopback)
        if ours and upstream.port == listener.port:
            raise ConfigError(
                f"{_where(config)}key 'dns.upstreams': {upstream} is this responder itself"
            )


def _where(config: Config) -> str:
    return f"{config.source}: " if config.source is not None else ""


class DnsService(service.MultiService):
    """UDP and TCP on one port (port 0: the same free port for both), and the forwarder."""

    def __init__(self, responder: DnsResponder, address: Address, reactor: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.responder, self.address, self.reactor = responder, address, reactor
        self.stream_factory = DnsStreamFactory(responder, responder.settings, reactor)
        self.ports: dict[str, tuple[str, int]] = {}
        self._listening: list[Any] = []

    def startService(self) -> None:
        udp, tcp = self._bind()
        self._listening = [udp, tcp]
        if self.responder.forwarder is not None:
            self.responder.forwarder.start()
        for name, port in (("dns-udp", udp), ("dns-tcp", tcp)):
            self.ports[name] = (port.getHost().host, port.getHost().port)
        super().startService()  # type: ignore[no-untyped-call]
        self._log_start()

    def _bind(self) -> tuple[Any, Any]:
        host, wanted = self.address.host, self.address.port
        last = CannotListenError(host, wanted, None)  # type: ignore[no-untyped-call]
        for _ in range(1 if wanted else 20):  # port 0: find one free for both
            udp = self._listen(wanted, DnsDatagramProtocol(self.responder))
            try:
                tcp = self.reactor.listenTCP(
                    udp.getHost().port, self.stream_factory, 1024, interface=host
                )
            except CannotListenError as e:
                udp.stopListening()
                last = e
                continue
            return udp, tcp
        raise OSError(f"cannot listen on {self.address} (dns, tcp): {last.socketError}")

    def _listen(self, port: int, protocol: DnsDatagramProtocol) -> Any:
        try:
            return listen_udp(self.reactor, port, protocol, self.address.host)
        except CannotListenError as e:
            raise OSError(f"cannot listen on {self.address} (dns, udp): {e.socketError}") from e

    def _log_start(self) -> None:
        responder, (host, port) = self.responder, self.ports["dns-udp"]
        log.info(
            "dns responder on {address} (udp, tcp) serving {domains}",
            address=str(Address(host, port)),
            port=port,
            domains=responder.domains,
            names=list(responder.table.names),
            internal=responder.internal.v4 or responder.internal.v6,
            external=responder.external.v4 or responder.external.v6,
            upstreams=[str(u) for u in responder.settings.upstreams],
            event="dns.start",
        )
        if not responder.internal.served:
            log.warn(
                "dns: no internal address (set dns.internal_address): internal clients "
                "are REFUSED for the discovery names",
                event="dns.no_internal_address",
            )
        if not responder.external.served:
            log.info(
                "dns: no dns.external_address: external clients are REFUSED",
                event="dns.no_external_address",
            )

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        stopped = [defer.maybeDeferred(port.stopListening) for port in self._listening]
        self._listening = []
        self.stream_factory.close_all()
        if self.responder.forwarder is not None:
            self.responder.forwarder.stop()
        return defer.DeferredList(stopped)


def make_responder(config: Config, reactor: Any) -> DnsResponder:
    """The responder for `config`; a ConfigError when the settings or the DHCP file are bad.

    A relative `dns.domains_from` is taken from the config file's folder, like data_dir.
    """
    check_settings(config)
    settings = config.dns
    source = config.source
    if settings.domains_from is not None and source is not None:
        settings = dataclasses.replace(settings, domains_from=source.parent / settings.domains_from)
    forwarder = Forwarder(reactor, settings.upstreams) if settings.upstreams else None
    internal = internal_addresses(config)
    try:
        responder = DnsResponder(
            settings, config.domains, config.zones, internal, reactor.seconds, forwarder
        )
    except DhcpDomainsError as e:
        raise ConfigError(f"{_where(config)}key 'dns.domains_from': {e}") from e
    if forwarder is not None:
        forwarder.on_timeout = responder.upstream_timed_out
    return responder


def make_dns_service(config: Config, reactor: Any) -> DnsService:
    """The DNS listeners of `ucupdates serve`; `.responder` reloads, `.ports` after start."""
    return DnsService(make_responder(config, reactor), config.listeners.dns, reactor)
