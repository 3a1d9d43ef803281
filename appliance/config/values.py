"""The configuration's values: its error, addresses, networks and the checks on keys.

A check takes the parsed value and returns it (perhaps normalised) or raises ValueError,
whose text the loader puts after the key's name in the one-line ConfigError.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any


class ConfigError(Exception):
    """A configuration that cannot be used; str() is the one line to show."""


@dataclass(frozen=True)
class Address:
    """A listening address, written `host:port` or `[v6]:port` in the file."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text.strip())
        if not m:
            raise ValueError(f"expected host:port or [v6]:port, got {text!r}")
        host = m.group(1) or m.group(3)
        port = int(m.group(2) or m.group(4))
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is out of range 0-65535")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if re.fullmatch(r"[\d.]+", host) or not _HOSTNAME.fullmatch(host):
                raise ValueError(f"{host!r} is neither an IP address nor a host name") from None
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Network:
    """An IP network in CIDR form (`10.0.0.0/8`, `fc00::/7`); a bare address is a /32 or /128."""

    value: ipaddress.IPv4Network | ipaddress.IPv6Network

    @classmethod
    def parse(cls, text: str) -> Network:
        try:
            return cls(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP network in CIDR form") from None

    def __contains__(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return address.version == self.value.version and address in self.value

    def __str__(self) -> str:
        return str(self.value)


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?"
)


def domain(text: str) -> str:
    if not _HOSTNAME.fullmatch(text) or "." not in text.strip("."):
        raise ValueError(f"{text!r} is not a DNS domain name")
    return text.strip(".").lower()


def fqdn(text: str) -> str:
    if not _HOSTNAME.fullmatch(text) or re.fullmatch(r"[\d.]+", text):
        raise ValueError(f"{text!r} is not a host name")
    return text.strip(".").lower()


def extension(text: str) -> str:
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,16}", text):
        raise ValueError(f"{text!r} is not a file extension like '.clg'")
    return text.lower()


def within(low: int, high: int) -> Any:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, got {value}")
        return value

    return check


def positive(value: int | float) -> int | float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def syslog_target(text: str) -> str:
    if text == "local" or re.fullmatch(r"(udp|tcp)://[^/\s]+:\d{1,5}", text):
        return text
    raise ValueError(f'expected "local", "udp://host:port" or "tcp://host:port", got {text!r}')


def time_of_day(text: str) -> str:
    """`HH:MM` (24-hour clock), or "" (off)."""
    if text == "":
        return text
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if m is None:
        raise ValueError(f'expected a time of day "HH:MM" (24-hour) or "", got {text!r}')
    return f"{int(m.group(1)):02d}:{m.group(2)}"


def time_zone(text: str) -> str:
    """An IANA time zone name (`Europe/Berlin`, `UTC`)."""
    import zoneinfo  # here: the tz database is read only for a config that names a zone

    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{text!r} is not a time zone name like Europe/Berlin") from None
    return text
