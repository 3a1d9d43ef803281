"""What the DNS responder keeps per client and per question: no I/O.

`ReplyCache` (packed replies reused with only the ID patched), `RateLimiter` (response
rate limiting per client prefix, with slip) and `classify` (internal or external client,
whether it may recurse, and its RRL prefix).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from appliance.config import Network, ZoneSettings
from appliance.discovery.dns_wire import HEADER, folded_key, with_question
from appliance.model import Zone
from appliance.zones import zone_of

HEADER_SIZE = HEADER.size


class ReplyCache:
    """Packed replies for repeated questions, at most `size` of them, oldest evicted first.

    One table per view (`Client.view`: internal or not, recursing or not) and transport;
    its key is the query without its ID (flags, question, OPT), its value the reply without
    its ID, so a hit costs a dict look-up and one concatenation. A query whose name has
    capital letters is also filed under its lower-case spelling (dns_wire.folded_key), so
    the same question in any letter case is a hit, with the question copied as asked.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._tables: dict[tuple[int, bool], dict[bytes, bytes]] = {
            (view, tcp): {} for view in range(4) for tcp in (False, True)
        }
        self._order: deque[tuple[dict[bytes, bytes], bytes]] = deque()  # oldest first

    def __len__(self) -> int:
        return len(self._order)

    def table(self, view: int, tcp: bool) -> dict[bytes, bytes]:
        """The replies for one view and transport, by the query without its ID (read-only:
        the responder's fastest path looks up here itself)."""
        return self._tables[view, tcp]

    def get(self, query: bytes, view: int, tcp: bool) -> bytes | None:
        table = self._tables[view, tcp]
        tail = table.get(query[2:])
        if tail is not None:
            return query[:2] + tail
        folded = folded_key(query)
        if folded is None:
            return None
        tail = table.get(folded[0])
        return None if tail is None else with_question(query, tail, folded[1])

    def put(self, query: bytes, view: int, tcp: bool, reply: bytes) -> None:
        table = self._tables[view, tcp]
        self._add(table, query[2:], reply[2:])
        folded = folded_key(query)
        if folded is not None:
            key, end = folded
            if reply[HEADER_SIZE:end] == query[HEADER_SIZE:end]:  # the question as asked
                # filed as the reply to the lower-case spelling, whose exact key `key` is
                lowered = key[HEADER_SIZE - 2 : end - 2]
                self._add(table, key, reply[2:HEADER_SIZE] + lowered + reply[end:])

    def _add(self, table: dict[bytes, bytes], key: bytes, value: bytes) -> None:
        if key not in table:
            if len(self._order) >= self.size:
                oldest, old_key = self._order.popleft()
                del oldest[old_key]
            self._order.append((table, key))
        table[key] = value


class Verdict(IntEnum):
    SEND = 0
    DROP = 1
    SLIP = 2  # send an empty truncated answer instead, so a real client retries over TCP


_SEND = Verdict.SEND  # a global is found faster than an Enum's member


class RateLimiter:
    """Responses per second per client prefix (a token bucket of one second's worth).

    Every `slip`-th limited response slips out truncated (0: none do). `engaged` collects
    prefixes that started to be limited (each at most once per `log_interval`), for a
    rate-limited log; at most 32 wait there.
    """

    def __init__(
        self, rate: int, slip: int, max_prefixes: int = 65_536, log_interval: float = 10.0
    ) -> None:
        self.rate, self.slip = float(rate), slip
        self.max_prefixes, self.log_interval = max_prefixes, log_interval
        # prefix -> [tokens, last update, limited responses, last logged]; always this
        # dict (`buckets`: the responder's fastest path reads it too)
        self._buckets: dict[str, list[float]] = {}
        self.buckets = self._buckets
        self.engaged: list[tuple[str, float]] = []

    def check(self, prefix: str, now: float) -> Verdict:
        bucket = self._buckets.get(prefix)
        if bucket is None:
            if len(self._buckets) >= self.max_prefixes:
                self._prune(now)
            bucket = self._buckets[prefix] = [self.rate, now, 0.0, -self.log_interval]
        rate = self.rate
        tokens = bucket[0] + (now - bucket[1]) * rate  # written out: on every datagram
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = (rate if tokens > rate else tokens) - 1.0
            return _SEND
        bucket[0] = tokens
        bucket[2] += 1
        if now - bucket[3] >= self.log_interval and len(self.engaged) < 32:
            bucket[3] = now
            self.engaged.append((prefix, now))
        if self.slip and bucket[2] % self.slip == 0:
            return Verdict.SLIP
        return Verdict.DROP

    def _prune(self, now: float) -> None:
        """Forget prefixes whose bucket is full again; if too few, forget everyone."""
        idle = [p for p, b in self._buckets.items() if now - b[1] >= 1.0]
        for prefix in idle:
            del self._buckets[prefix]
        if len(self._buckets) > self.max_prefixes * 3 // 4:
            self._buckets.clear()


@dataclass(frozen=True)
class Client:
    internal: bool
    prefix: str  # the /24 (IPv4) or /56 (IPv6) that RRL counts against
    recurse: bool = False  # in dns.forward_networks: other names are forwarded for it

    @property
    def view(self) -> int:
        """What the reply cache keys on besides the query: the view and recursion."""
        return int(self.internal) | int(self.recurse) << 1


def classify(
    host: str, zones: ZoneSettings, forward_networks: tuple[Network, ...] | None = None
) -> Client:
    """Whether `host` is an internal client (zones.zone_of), whether it may recurse (in
    `forward_networks`; None: the internal networks), and its RRL prefix."""
    internal = zone_of(host, False, b"", zones) is Zone.INTERNAL
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return Client(internal, host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    networks = zones.internal_networks if forward_networks is None else forward_networks
    recurse = any(address in network for network in networks)
    bits = 24 if address.version == 4 else 56
    prefix = str(ipaddress.ip_network(f"{address}/{bits}", strict=False))
    return Client(internal, prefix, recurse)
