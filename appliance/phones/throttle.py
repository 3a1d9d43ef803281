"""A rollout network's cap on bytes a second (docs/rollouts.md): a token bucket that every
image body of the network draws from.

The bucket holds at most one second's worth and refills at the rate; a body sends no more
than the bucket holds and, when it holds less than a piece worth sending, waits (a timer,
not a stall: `image_body.TransportBody` does not count the wait against
`service.download_stall_seconds`). Times are the reactor's seconds, passed in.
"""

from __future__ import annotations

MIN_PIECE = 16 * 1024  # the least a body waits for (or the whole rate, when lower)


class Throttle:
    """At most `rate` bytes a second, on average, for the bodies that share it."""

    def __init__(self, rate: int, now: float) -> None:
        self.rate = rate
        self._tokens = float(rate)
        self._at = now

    def _fill(self, now: float) -> None:
        self._tokens = min(float(self.rate), self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now

    @property
    def floor(self) -> int:
        return min(MIN_PIECE, self.rate)

    def budget(self, now: float) -> int:
        """Bytes a body may send now: 0 when less than a piece worth sending is left."""
        self._fill(now)
        tokens = int(self._tokens)
        return tokens if tokens >= self.floor else 0

    def spend(self, count: int) -> None:
        self._tokens -= count

    def wait(self, now: float) -> float:
        """Seconds until `budget` is at least a piece again."""
        self._fill(now)
        return max(0.0, (self.floor - self._tokens) / self.rate)
