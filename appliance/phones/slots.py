"""Download slots: how many image bodies are sent at once, in all and per client address.

A `Slot` is taken before a body starts and released once, however the body ends
(`image_body.TransportBody`); beyond either limit the answer is 503 (`downloads.Downloads`).
"""

from __future__ import annotations

from enum import Enum


class DownloadLimit(Enum):
    ALL = "max_downloads"
    PER_CLIENT = "max_downloads_per_client"


class Slot:
    """One download's place; `release` is safe to call more than once."""

    def __init__(self, slots: DownloadSlots, client: str) -> None:
        self._slots = slots
        self.client = client
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self._slots._give_back(self.client)


class DownloadSlots:
    """How many bodies are being sent, in all and per client address."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.active = 0
        self.by_client: dict[str, int] = {}

    def take(self, client: str) -> Slot | DownloadLimit:
        if self.active >= self.total:
            return DownloadLimit.ALL
        if self.by_client.get(client, 0) >= self.per_client:
            return DownloadLimit.PER_CLIENT
        self.active += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        return Slot(self, client)

    def _give_back(self, client: str) -> None:
        self.active -= 1
        left = self.by_client[client] - 1
        if left:
            self.by_client[client] = left
        else:
            del self.by_client[client]
