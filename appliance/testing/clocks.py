"""Clocks that move only when told: UTC datetimes and float seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # where a FixedClock starts unless told


class FixedClock:
    """A UTC clock that moves only when told: `clock()` is `clock.now`."""

    def __init__(self, start: datetime = NOW) -> None:
        if start.utcoffset() is None:
            raise ValueError(f"a FixedClock keeps UTC times, not {start!r}")
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when

    def advance(self, **delta: float) -> datetime:
        """Move on by `timedelta(**delta)` (`advance(hours=1)`); returns the new time."""
        self.now += timedelta(**delta)
        return self.now


class SecondsClock:
    """A clock in float seconds (the authenticator's, rate limits', retries') moved by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
