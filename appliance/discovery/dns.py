"""The DNS responder in the serve process: UDP and TCP listeners around dns_answer.

`make_dns_service(config, reactor)` returns a DnsService (a MultiService) that, once
started, listens on `listeners.dns` over UDP and TCP on the same port (port 0: a free
one, in `.ports`), and holds the DnsResponder (`.responder`) for reload and counters.

The responder answers for `ucupdates-r2.<domain>` itself (dns_answer decides and packs),
reuses packed replies for repeated questions with only the ID patched, limits responses
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
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import (
    DatagramProtocol,
    Protocol,
    ServerFactory,
    connectionDone,
)
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from appliance.config import Address, Config, ConfigError, DnsSettings, ZoneSettings
from appliance.discovery.dhcp_domains import DhcpDomainsError, read_domains
from appliance.discovery.dns_answer import (
    Action,
    Addresses,
    AnswerTable,
    Client,
    Outcome,
    RateLimiter,
    ReplyCache,
    Verdict,
    classify,
    question_end,
    relay,
    respond,
    truncate,
)
from appliance.discovery.dns_forward import FRAME
from appliance.discovery.dns_forward import Forwarder as Forwarder

log = Logger(namespace="ucupdates.dns")

Send = Callable[[bytes], None]
MAX_CLIENTS = 65_536  # remembered client classifications

COUNTERS = (
    "udp_queries",  # datagrams received
    "tcp_queries",  # framed queries received
    "malformed",  # dropped: unparsable, or not a query
    "cache_hits",  # answered from a packed reply
    "local_replies",  # decided and packed (not from the cache)
    "forwarded",  # sent to an upstream
    "upstream_answers",  # relayed from an upstream
    "upstream_timeouts",  # every upstream tried, none answered: SERVFAIL
    "upstream_errors",  # TCP fallback failed, or the table was full: SERVFAIL
    "rrl_dropped",  # limited and not sent
    "rrl_slipped",  # limited and sent as an empty TC answer
    "send_errors",  # the kernel would not take a datagram
    "tcp_connections",  # accepted
    "tcp_refused",  # over max_tcp_connections: closed at once
    "tcp_idle_closed",  # closed after tcp_idle_timeout without a query
)


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
    """What the config module cannot check alone: upstreams are addresses, and not us."""
    listener = config.listeners.dns
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


# -- the responder -------------------------------------------------------------------------


class DnsResponder:
    """Decides, caches, limits and forwards; the listeners only move bytes to and from it."""

    def __init__(
        self,
        settings: DnsSettings,
        base_domains: tuple[str, ...],
        zones: ZoneSettings,
        internal: Addresses,
        clock: Callable[[], float],
        forwarder: Forwarder | None = None,
    ) -> None:
        self.settings, self.zones = settings, zones
        self.base_domains = base_domains
        self.internal = internal
        self.external = Addresses(settings.external_address, settings.external_address6)
        self.clock = clock
        self.forwarder = forwarder
        self.counters: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self.last_reload_error: str | None = None
        self.limiter = RateLimiter(settings.rrl_responses_per_second, settings.rrl_slip)
        self._clients: dict[str, Client] = {}
        self._serial = 0
        self._rrl_logged = -1.0
        self._timeouts_logged, self._timeouts_quiet = -1.0, 0
        self._install(self._read_domains())

    @property
    def domains(self) -> tuple[str, ...]:
        return self._table.domains

    @property
    def table(self) -> AnswerTable:
        return self._table

    def _read_domains(self) -> tuple[str, ...]:
        found = read_domains(self.settings.domains_from) if self.settings.domains_from else ()
        return tuple(dict.fromkeys(self.base_domains + found))

    def _install(self, domains: tuple[str, ...]) -> None:
        self._serial = max(self._serial + 1, int(self.clock()) & 0xFFFFFFFF)
        table = AnswerTable.build(
            domains,
            self.internal,
            self.external,
            self.settings.ttl,
            self._serial,
            forwarding=self.forwarder is not None,
        )
        self._table, self._cache = table, ReplyCache(self.settings.cache_entries)

    def reload(self) -> tuple[str, ...]:
        """Read the domains again and swap the answer table; on error keep the old one."""
        try:
            domains = self._read_domains()
        except DhcpDomainsError as e:
            self.last_reload_error = str(e)
            log.error(
                "dns reload failed, still serving {domains}: {error}",
                domains=self.domains,
                error=str(e),
                event="dns.reload_failed",
            )
            return self.domains
        self.last_reload_error = None
        self._install(domains)
        log.info("dns reloaded: serving {domains}", domains=domains, event="dns.reload")
        return domains

    def handle(self, data: bytes, host: str, tcp: bool, send: Send) -> None:
        """One query from `host`; `send` is called with the reply, now or later, or never."""
        self.counters["tcp_queries" if tcp else "udp_queries"] += 1
        client = self._clients.get(host) or self._classify(host)
        cached = self._cache.get(data, client.internal, tcp)
        if cached is not None:
            self.counters["cache_hits"] += 1
            self._send(cached, client, tcp, send)
            return
        outcome = respond(data, client.internal, tcp, self._table)
        if outcome.action is Action.DROP:
            self.counters["malformed"] += 1
        elif outcome.action is Action.FORWARD:
            self._forward(data, outcome, client, tcp, send)
        else:
            self.counters["local_replies"] += 1
            if outcome.cacheable:
                self._cache.put(data, client.internal, tcp, outcome.reply)
            self._send(outcome.reply, client, tcp, send)

    def _classify(self, host: str) -> Client:
        if len(self._clients) >= MAX_CLIENTS:
            self._clients.clear()
        client = self._clients[host] = classify(host, self.zones)
        return client

    def _send(self, reply: bytes, client: Client, tcp: bool, send: Send) -> None:
        if not tcp:
            verdict = self.limiter.check(client.prefix, self.clock())
            if verdict:  # SEND is 0
                self._limited(verdict, reply, send)
                return
        send(reply)

    def _limited(self, verdict: Verdict, reply: bytes, send: Send) -> None:
        if verdict is Verdict.SLIP:
            self.counters["rrl_slipped"] += 1
            send(truncate(reply, question_end(reply), False))
        else:
            self.counters["rrl_dropped"] += 1
        now = self.clock()
        if self.limiter.engaged and now - self._rrl_logged >= 1.0:  # at most 32 lines a second
            self._rrl_logged = now
            for prefix, _ in self.limiter.engaged:
                log.warn(
                    "dns rate limit engaged for {prefix}: over {rate} responses/s",
                    prefix=prefix,
                    rate=self.settings.rrl_responses_per_second,
                    event="dns.rrl",
                )
            self.limiter.engaged.clear()

    def _forward(
        self, data: bytes, outcome: Outcome, client: Client, tcp: bool, send: Send
    ) -> None:
        def done(answer: bytes | None) -> None:
            if answer is None:
                self._send(outcome.reply, client, tcp, send)  # SERVFAIL
            else:
                self.counters["upstream_answers"] += 1
                self._send(relay(answer, data, outcome, tcp), client, tcp, send)

        assert self.forwarder is not None  # respond() forwards only when there is one
        self.counters["forwarded"] += 1
        if not self.forwarder.forward(data, outcome.question_end, done):
            self.counters["upstream_errors"] += 1
            done(None)

    def upstream_timed_out(self, name: str) -> None:
        """Count and log (at most once in 5 s, with how many were not logged)."""
        self.counters["upstream_timeouts"] += 1
        now = self.clock()
        if now - self._timeouts_logged < 5.0:
            self._timeouts_quiet += 1
            return
        log.warn(
            "dns upstreams did not answer for {name} ({unlogged} more since the last report)",
            name=name,
            unlogged=self._timeouts_quiet,
            upstreams=[str(u) for u in self.settings.upstreams],
            event="dns.upstream_timeout",
        )
        self._timeouts_logged, self._timeouts_quiet = now, 0


# -- listeners ------------------------------------------------------------------------------


class DnsDatagramProtocol(DatagramProtocol):
    transport: Any
    noisy = False

    def __init__(self, responder: DnsResponder) -> None:
        self.responder = responder
        self._sendto: Callable[[bytes, Any], int] = lambda data, addr: 0

    def startProtocol(self) -> None:
        # The socket's own sendto: Twisted's write() checks the address text on every
        # datagram, which costs a tenth of the time of a cached answer.
        self._sendto = self.transport.socket.sendto

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.responder.handle(datagram, addr[0], False, partial(self._write, addr=addr))

    def _write(self, reply: bytes, addr: Any) -> None:
        try:
            self._sendto(reply, addr)
        except OSError:  # the socket's buffer is full: like a datagram lost on the way
            self.responder.counters["send_errors"] += 1


class DnsStreamProtocol(Protocol, TimeoutMixin):
    """Queries framed by a 2-byte length, pipelined; answers in the order they are ready.

    It is the (streaming) producer of its own answers: when the client does not read them
    and the transport's buffer fills, reading its queries pauses until the buffer drains.
    """

    transport: Any

    def __init__(self, factory: DnsStreamFactory) -> None:
        self.owner, self.buffer = factory, b""
        self.admitted = self.closing = False

    def connectionMade(self) -> None:
        self.admitted = self.owner.admit(self)
        if not self.admitted:
            self.closing = True
            self.transport.loseConnection()
            return
        self.transport.registerProducer(self, True)
        self.setTimeout(self.owner.idle_timeout)  # type: ignore[no-untyped-call]

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()  # stop reading queries

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self.resetTimeout()  # type: ignore[no-untyped-call]
        buffer, start = self.buffer + data, 0
        host = self.transport.getPeer().host
        while len(buffer) - start >= 2:  # each turn takes one frame
            end = start + 2 + FRAME.unpack_from(buffer, start)[0]
            if len(buffer) < end:
                break
            self.owner.responder.handle(buffer[start + 2 : end], host, True, self._write)
            start = end
        self.buffer = buffer[start:]

    def _write(self, reply: bytes) -> None:
        if not self.closing and self.transport.connected:
            self.transport.write(FRAME.pack(len(reply)) + reply)

    def timeoutConnection(self) -> None:
        """Idle: close; if the peer does not let us (unread answers), cut it off next time."""
        if self.closing:
            self.transport.abortConnection()
            return
        self.closing = True
        self.owner.responder.counters["tcp_idle_closed"] += 1
        self.transport.loseConnection()
        self.setTimeout(self.owner.idle_timeout)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        if self.admitted:
            self.admitted = False
            self.owner.release(self)


class DnsStreamFactory(ServerFactory):
    noisy = False

    def __init__(self, responder: DnsResponder, settings: DnsSettings, reactor: Any) -> None:
        self.responder, self.reactor = responder, reactor
        self.idle_timeout = settings.tcp_idle_timeout
        self.max_connections = settings.max_tcp_connections
        self.connections: set[DnsStreamProtocol] = set()

    def buildProtocol(self, addr: Any) -> DnsStreamProtocol:
        protocol = DnsStreamProtocol(self)
        protocol.callLater = self.reactor.callLater  # type: ignore[method-assign]
        return protocol

    def admit(self, protocol: DnsStreamProtocol) -> bool:
        if len(self.connections) >= self.max_connections:
            self.responder.counters["tcp_refused"] += 1
            return False
        self.responder.counters["tcp_connections"] += 1
        self.connections.add(protocol)
        return True

    def release(self, protocol: DnsStreamProtocol) -> None:
        self.connections.discard(protocol)

    def close_all(self) -> None:
        for protocol in list(self.connections):
            if protocol.transport is not None:
                protocol.transport.abortConnection()


# -- the service -----------------------------------------------------------------------------


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
            udp = self._listen(self.reactor.listenUDP, wanted, DnsDatagramProtocol(self.responder))
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

    def _listen(self, method: Callable[..., Any], port: int, protocol: Any) -> Any:
        try:
            return method(port, protocol, interface=self.address.host)
        except CannotListenError as e:
            raise OSError(f"cannot listen on {self.address} (dns, udp): {e.socketError}") from e

    def _log_start(self) -> None:
        responder, (host, port) = self.responder, self.ports["dns-udp"]
        log.info(
            "dns responder on {address} (udp, tcp) serving {domains}",
            address=str(Address(host, port)),
            port=port,
            domains=responder.domains,
            internal=responder.internal.v4 or responder.internal.v6,
            external=responder.external.v4 or responder.external.v6,
            upstreams=[str(u) for u in responder.settings.upstreams],
            event="dns.start",
        )
        if not responder.internal.served:
            log.warn(
                "dns: no internal address (set dns.internal_address): internal clients "
                "are REFUSED for ucupdates-r2 names",
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
