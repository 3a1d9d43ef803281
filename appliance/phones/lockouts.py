"""Failures and lockouts per key (a user name, or a client address), for the authenticator."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Record:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class Failures:
    """Recent failures and lockouts per key, the oldest-touched key dropped beyond a bound."""

    def __init__(self, limit: int, window: float, lockout: float, max_keys: int) -> None:
        self._limit = limit
        self._window = window
        self._lockout = lockout
        self._max_keys = max_keys
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def locked_until(self, key: str, now: float) -> float | None:
        record = self._records.get(key)
        if record is None or record.locked_until <= now:
            return None
        return record.locked_until

    def recent(self, key: str, now: float) -> int:
        record = self._records.get(key)
        if record is None:
            return 0
        return sum(1 for t in record.times if now - t < self._window)

    def fail(self, key: str, now: float) -> float | None:
        """Count a failure; returns the end of the lockout when this one starts it."""
        record = self._records.pop(key, None) or _Record()
        self._records[key] = record
        while len(self._records) > self._max_keys:
            self._records.popitem(last=False)
        record.times = [t for t in record.times if now - t < self._window][-self._limit :]
        record.times.append(now)
        if len(record.times) > self._limit:
            record.times = []
            record.locked_until = now + self._lockout
            return record.locked_until
        return None

    def clear(self, key: str) -> None:
        self._records.pop(key, None)
