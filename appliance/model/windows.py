"""Download windows: when a network's phones may be offered an update, in local time.

A window is given in the wall-clock time of a named time zone ("22:00-05:00
Europe/Berlin"), because that is how a branch thinks of its quiet hours, and stays put in
local time across daylight-saving changes: at 22:00 local it opens, whether that is 20:00
or 21:00 UTC. The consequences, pinned by tests/test_rollout_windows.py:

- A window is open from its start (included) to its end (excluded). An end earlier than
  the start runs across midnight (22:00-05:00). A start equal to the end is open all day.
- On the day the clocks go forward, local times in the skipped hour do not exist: a
  window 02:00-03:00 in Europe/Berlin is not open at all that day, and 01:00-04:00 is
  open two real hours. On the day they go back, the repeated hour counts twice: 02:00-03:00
  is open two real hours.
- A set of windows is open when any of them is; a set with no windows is always open
  ("no window" means "no restriction", never "never").

The time zone is resolved once, when the record is built (zoneinfo reads the system's tz
database then); `is_open` itself reads no files and no clock: `now` is a parameter and
must carry its UTC offset.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime, time, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


class WindowError(ValueError):
    """A window, zone or network that is not of its documented form; str() says which."""


@dataclass(frozen=True)
class TimeWindow:
    """Open from `start` (included) to `end` (excluded), local time; across midnight when
    `end` is earlier than `start`; all day when they are equal."""

    start: time
    end: time

    def __post_init__(self) -> None:
        for t in (self.start, self.end):
            if t.tzinfo is not None or t.second or t.microsecond:
                raise WindowError(f"window times are local hours and minutes, not {t!r}")

    @classmethod
    def parse(cls, text: str) -> TimeWindow:
        """`HH:MM-HH:MM` (24-hour clock), e.g. `22:00-05:00`."""
        parts = text.strip().split("-")
        if len(parts) != 2:
            raise WindowError(f"invalid window {text!r}: expected HH:MM-HH:MM, e.g. 22:00-05:00")
        start, end = (_clock(p, text) for p in parts)
        return cls(start, end)

    def contains(self, local: time) -> bool:
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True)
class DownloadWindows:
    """The windows of one network (or of the external zone) in one named time zone."""

    zone: str  # an IANA time zone name: "UTC", "Europe/Berlin"
    windows: tuple[TimeWindow, ...] = ()  # none: always open
    _tz: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            tz = ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise WindowError(f"unknown time zone {self.zone!r}") from e
        object.__setattr__(self, "_tz", tz)

    def is_open(self, now: datetime) -> bool:
        """Whether a download may start at `now` (an aware datetime)."""
        if not self.windows:
            return True
        if now.utcoffset() is None:
            raise WindowError("now must carry its UTC offset (an aware datetime)")
        local = now.astimezone(self._tz).time()
        return any(w.contains(local) for w in self.windows)

    def __str__(self) -> str:
        if not self.windows:
            return f"always ({self.zone})"
        return ", ".join(str(w) for w in self.windows) + f" {self.zone}"


def parse_network(text: str) -> Network:
    """A network in CIDR form (`10.1.0.0/16`, `2001:db8::/32`); host bits must be zero."""
    try:
        return ipaddress.ip_network(text.strip())
    except ValueError as e:
        raise WindowError(f"invalid network {text!r}: {e}") from e


def parse_address(
    text: str | None,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client address as the service records it; None when absent or not an address.
    An IPv4-mapped IPv6 address counts as its IPv4 address."""
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _clock(part: str, whole: str) -> time:
    m = _CLOCK.match(part.strip())
    if not m:
        raise WindowError(f"invalid window {whole!r}: expected HH:MM-HH:MM, e.g. 22:00-05:00")
    return time(int(m.group(1)), int(m.group(2)))
