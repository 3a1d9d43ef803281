"""Who is inside the firewall (docs/protocol.md §2): a pure decision.

A request is external when it arrives on the external listener or on an `*Ext` path, or
when its client address is outside the internal networks. The client address is the
peer's, or, when the peer is a trusted reverse proxy, the right-most address in
`X-Forwarded-For` that is not itself a trusted proxy. Nobody else's X-Forwarded-For is
believed; an entry that is not an address makes the client unknown, hence external.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from appliance.config import Network, ZoneSettings
from appliance.model import Zone

EXTERNAL_PREFIXES = (b"/requesthandlerext/", b"/deviceupdatefiles_ext/")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port" as some proxies write it
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _within(address: IPAddress, networks: Sequence[Network]) -> bool:
    return any(address in n for n in networks)


def client_address(peer: str, forwarded_for: Sequence[bytes], settings: ZoneSettings) -> str:
    """The address the request comes from, believing only trusted proxies."""
    current = _address(peer)
    if current is None:
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.decode("latin-1").split(",")]
    while _within(current, settings.trusted_proxies) and hops:
        hop = hops.pop()
        previous = _address(hop)
        if previous is None:
            # A trusted proxy that could not name the client ("unknown", garbage): the
            # client is nobody we know, so it counts as external.
            return hop or "unknown"
        current = previous
    return str(current)


def is_external_path(path: bytes) -> bool:
    return path.lower().startswith(EXTERNAL_PREFIXES)


def zone_of(client: str, external_listener: bool, path: bytes, settings: ZoneSettings) -> Zone:
    if external_listener or is_external_path(path):
        return Zone.EXTERNAL
    address = _address(client)
    if address is not None and _within(address, settings.internal_networks):
        return Zone.INTERNAL
    return Zone.EXTERNAL
