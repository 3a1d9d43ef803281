"""The DNS responder's state between the listeners and dns_answer: one query at a time.

`DnsResponder.handle` takes a query's bytes and the client's address and calls `send`
with the reply, now or later, or never: it classifies the client (internal/external
zone, and whether it may recurse: `dns.forward_networks`), answers from the packed-reply
cache, decides with dns_answer, limits UDP responses per client prefix (RRL, with slip;
these three in dns_limits), and hands other names to the forwarder (dns_forward), for
clients that may recurse only (others are REFUSED: no open resolver).
`DnsResponder.datagram` is the same for one UDP datagram, returning the reply to send
at once, so that a repeated question costs a few look-ups and no call back.
It owns the answer table (swapped whole on reload) and the counters. No sockets: the
listeners (dns_listeners) only move bytes to and from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from appliance.config import DnsSettings, ZoneSettings
from appliance.discovery.dhcp_domains import DhcpDomainsError, read_domains
from appliance.discovery.dns_answer import (
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
from appliance.discovery.dns_limits import Client, RateLimiter, ReplyCache, Verdict, classify

log = Logger(namespace="ucupdates.dns")

Send = Callable[[bytes], None]
Write = Callable[[bytes, Any], None]  # a reply and the client's address
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
    "tcp_refused_per_client",  # over max_tcp_per_client from one address: closed at once
    "tcp_idle_closed",  # closed after tcp_idle_timeout without a complete query
    "tcp_lifetime_closed",  # closed at tcp_max_lifetime
)


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
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)  # a plain dict: quicker
        self.last_reload_error: str | None = None
        self.limiter = RateLimiter(settings.rrl_responses_per_second, settings.rrl_slip)
        self._buckets, self._rate = self.limiter.buckets, self.limiter.rate
        self._clients: dict[str, Client] = {}
        self._udp: dict[str, tuple[dict[bytes, bytes], Client]] = {}  # UDP table, client
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
            names=tuple(str(name) for name in self.settings.names),
        )
        self._table, self._cache = table, ReplyCache(self.settings.cache_entries)
        self._udp = {}  # its entries hold the old cache's tables

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
        cached = self._cache.get(data, client.view, tcp)
        if cached is None:
            self._decide(data, client, tcp, send)
            return
        self.counters["cache_hits"] += 1
        if tcp:
            send(cached)
        else:
            self._send(cached, client, send)

    def datagram(self, data: bytes, addr: Any, write: Write) -> bytes | None:
        """One UDP query from `addr`: the reply to send now, or None when there is none
        yet (`write(reply, addr)` is called later: forwarded), or none at all (limited,
        malformed). What `handle` does, with less on the way for a repeated question."""
        counters = self.counters
        counters["udp_queries"] += 1
        known = self._udp.get(addr[0])
        if known is None:
            known = self._know(addr[0])
        tail = known[0].get(data[2:])
        if tail is not None:
            reply = data[:2] + tail
        else:
            cased = self._cache.get(data, known[1].view, False)  # another letter case?
            if cased is None:
                self._decide(data, known[1], False, lambda later: write(later, addr))
                return None
            reply = cased
        counters["cache_hits"] += 1
        prefix = known[1].prefix
        bucket = self._buckets.get(prefix)
        if bucket is not None:  # RateLimiter.check when it says SEND, written out
            now, rate = self.clock(), self._rate
            tokens = bucket[0] + (now - bucket[1]) * rate
            if tokens >= 1.0:
                bucket[0], bucket[1] = (rate if tokens > rate else tokens) - 1.0, now
                return reply
        verdict = self.limiter.check(prefix, self.clock())  # the bucket is as it was
        return self._limited(verdict, reply) if verdict else reply

    def _know(self, host: str) -> tuple[dict[bytes, bytes], Client]:
        client = self._clients.get(host) or self._classify(host)
        known = self._udp[host] = (self._cache.table(client.view, False), client)
        return known

    def _classify(self, host: str) -> Client:
        if len(self._clients) >= MAX_CLIENTS:
            self._clients.clear()
            self._udp.clear()
        client = self._clients[host] = classify(host, self.zones, self.settings.forward_networks)
        return client

    def _decide(self, data: bytes, client: Client, tcp: bool, send: Send) -> None:
        outcome = respond(data, client.internal, tcp, self._table, client.recurse)
        if outcome.action is Action.DROP:
            self.counters["malformed"] += 1
        elif outcome.action is Action.FORWARD:
            self._forward(data, outcome, client, tcp, send)
        else:
            self.counters["local_replies"] += 1
            if outcome.cacheable:
                self._cache.put(data, client.view, tcp, outcome.reply)
            if tcp:
                send(outcome.reply)
            else:
                self._send(outcome.reply, client, send)

    def _send(self, reply: bytes, client: Client, send: Send) -> None:
        """Over UDP: sent, truncated or not at all, as the rate limit says."""
        verdict = self.limiter.check(client.prefix, self.clock())
        limited = self._limited(verdict, reply) if verdict else reply  # SEND is 0
        if limited is not None:
            send(limited)

    def _limited(self, verdict: Verdict, reply: bytes) -> bytes | None:
        """What goes out instead of `reply` when the rate limit says DROP or SLIP."""
        if verdict is Verdict.SLIP:
            self.counters["rrl_slipped"] += 1
            limited: bytes | None = truncate(reply, question_end(reply), False)
        else:
            self.counters["rrl_dropped"] += 1
            limited = None
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
        return limited

    def _forward(
        self, data: bytes, outcome: Outcome, client: Client, tcp: bool, send: Send
    ) -> None:
        def done(answer: bytes | None) -> None:
            if answer is not None:
                self.counters["upstream_answers"] += 1
            reply = outcome.reply if answer is None else relay(answer, data, outcome, tcp)
            if tcp:  # SERVFAIL when no upstream answered
                send(reply)
            else:
                self._send(reply, client, send)

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
