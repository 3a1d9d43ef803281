"""Download slots: how many image bodies are sent at once, in all, per client address and
per network of the rollout policy (its `max_downloads` cap, docs/rollouts.md).

A `Slot` is taken before a body starts and released once, however the body ends
(`image_body.TransportBody`); beyond any limit the answer is 503 (`downloads.Downloads`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class DownloadLimit(Enum):
    ALL = "max_downloads"
    PER_CLIENT = "max_downloads_per_client"
    NETWORK = "network max_downloads"  # a rollout network's (or the external zone's) cap


@dataclass(frozen=True)
class NetworkCaps:
    """What the clients of one rollout network (or the external zone) share: at most
    `max_downloads` bodies at once and `bytes_per_second` (None: no such cap)."""

    group: str  # the network ("10.20.0.0/16") or "external zone"
    max_downloads: int | None = None
    bytes_per_second: int | None = None


class Slot:
    """One download's place; `release` is safe to call more than once."""

    def __init__(self, slots: DownloadSlots, client: str, group: str | None = None) -> None:
        self._slots = slots
        self.client = client
        self.group = group
        self.released = False

    def release(self, sent: int = 0, complete: bool = True) -> None:
        """Give the place back, counting the body's bytes handed to the network and
        whether it was sent whole (the figures /metrics shows)."""
        if self.released:
            return
        self.released = True
        self._slots._give_back(self.client, sent, complete, self.group)


class DownloadSlots:
    """How many bodies are being sent, in all and per client address."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.active = 0
        self.by_client: dict[str, int] = {}
        self.by_group: dict[str, int] = {}  # per capped network
        # Counted for /metrics: bodies ended whole or not, refusals, bytes sent.
        self.complete = 0
        self.interrupted = 0
        self.refused = 0
        self.sent_bytes = 0

    def take(self, client: str, caps: NetworkCaps | None = None) -> Slot | DownloadLimit:
        """A place for a body to `client`, within its network's cap if it has one."""
        if self.active >= self.total:
            self.refused += 1
            return DownloadLimit.ALL
        if self.by_client.get(client, 0) >= self.per_client:
            self.refused += 1
            return DownloadLimit.PER_CLIENT
        group = None
        if caps is not None and caps.max_downloads is not None:
            group, limit = caps.group, caps.max_downloads
            if self.by_group.get(group, 0) >= limit:
                self.refused += 1
                return DownloadLimit.NETWORK
            self.by_group[group] = self.by_group.get(group, 0) + 1
        self.active += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        return Slot(self, client, group)

    def figures(self) -> dict[str, int]:
        """What /metrics reads (ops.metrics.Readings.downloads)."""
        return {
            "active": self.active,
            "bytes": self.sent_bytes,
            "complete": self.complete,
            "interrupted": self.interrupted,
            "refused": self.refused,
        }

    def _give_back(self, client: str, sent: int, complete: bool, group: str | None) -> None:
        self.active -= 1
        if group is not None:
            left = self.by_group[group] - 1
            if left:
                self.by_group[group] = left
            else:
                del self.by_group[group]
        self.sent_bytes += sent
        if complete:
            self.complete += 1
        else:
            self.interrupted += 1
        left = self.by_client[client] - 1
        if left:
            self.by_client[client] = left
        else:
            del self.by_client[client]
