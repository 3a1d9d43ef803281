"""The phone's DHCPINFORM (docs/protocol.md §4): vendor class `MS-UC-Client`, asking for
options 43 and 120, and what the answer says: the provisioning URL of option 43's
sub-options, the SIP server of option 120, and the DNS domain of option 15 (or, without
it, the SIP server's domain, which the phones also use for discovery, §3).

A phone that already has an address sends DHCPINFORM with it as `ciaddr` and gets the
DHCPACK at that address, on the client port (68; a test binds its own).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Address

MAGIC_COOKIE = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # RFC 2131 figure 1
INFORM, ACK = 8, 5
VENDOR_CLASS = b"MS-UC-Client"
ASKED = (1, 15, 43, 120)  # subnet mask, domain name, vendor options, SIP servers
CLIENT_PORT = 68


# The DHCPACK comes to ciaddr:68, so phones sharing an address must take turns: one
# socket bound there at a time (a fleet runs on threads).
_turns: dict[tuple[str, int], threading.Lock] = {}
_turns_lock = threading.Lock()


def _turn(source: str, port: int) -> threading.Lock:
    with _turns_lock:
        return _turns.setdefault((source, port), threading.Lock())


def local_address_towards(server: tuple[str, int]) -> str:
    """The local IPv4 address the system would send to `server` from (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(server)
        return str(probe.getsockname()[0])


class DhcpFailure(Exception):
    """No usable DHCPACK."""


@dataclass(frozen=True)
class DhcpInfo:
    """What the DHCPACK told the phone."""

    domain: str | None  # option 15, else the SIP server's domain
    sip_servers: tuple[str, ...]  # option 120
    suboptions: dict[int, str]  # option 43: UCIdentifier, URLScheme, FQDN, port, path
    provisioning_url: str | None  # URLScheme://WebServerFQDN:WebServerPort CertProvRelPath


def inform_packet(mac: str, ciaddr: str, xid: int) -> bytes:
    """A DHCPINFORM from `mac` at `ciaddr` (option 61 the MAC, option 55 `ASKED`)."""
    hw = bytes.fromhex(mac.replace("-", "").replace(":", ""))
    header = HEADER.pack(
        1, 1, 6, 0, xid, 0, 0, IPv4Address(ciaddr).packed, bytes(4), bytes(4), bytes(4),
        hw.ljust(16, b"\x00"), bytes(64), bytes(128),
    )  # fmt: skip
    options = [(53, bytes((INFORM,))), (61, b"\x01" + hw), (60, VENDOR_CLASS), (55, bytes(ASKED))]
    body = b"".join(bytes((code, len(value))) + value for code, value in options)
    return header + MAGIC_COOKIE + body + b"\xff"


def read_options(packet: bytes) -> tuple[int, dict[int, bytes]]:
    """The xid and options (concatenated when repeated) of a BOOTREPLY; DhcpFailure else."""
    if len(packet) < HEADER.size + 4 or packet[HEADER.size : HEADER.size + 4] != MAGIC_COOKIE:
        raise DhcpFailure("the answer is not a DHCP message")
    if packet[0] != 2:
        raise DhcpFailure("the answer is not a BOOTREPLY")
    xid: int = struct.unpack_from("!I", packet, 4)[0]
    options: dict[int, bytes] = {}
    data, i = packet[HEADER.size + 4 :], 0
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        if i + 1 >= len(data) or i + 2 + data[i + 1] > len(data):
            raise DhcpFailure("an option of the answer runs past its end")
        options[data[i]] = options.get(data[i], b"") + data[i + 2 : i + 2 + data[i + 1]]
        i += 2 + data[i + 1]
    return xid, options


def suboptions(option43: bytes) -> dict[int, str]:
    """Option 43's code, length, ASCII value sub-options (§4)."""
    found: dict[int, str] = {}
    i = 0
    while i + 2 <= len(option43):
        code, length = option43[i], option43[i + 1]
        found[code] = option43[i + 2 : i + 2 + length].decode("ascii", "replace")
        i += 2 + length
    return found


def sip_servers(option120: bytes) -> tuple[str, ...]:
    """RFC 3361: encoding 0 then DNS names in label form, or encoding 1 then addresses."""
    if not option120:
        return ()
    if option120[0] == 1:
        return tuple(
            socket.inet_ntoa(option120[i : i + 4]) for i in range(1, len(option120) - 3, 4)
        )
    names: list[str] = []
    labels: list[str] = []
    i = 1
    while i < len(option120):
        length = option120[i]
        if length == 0:
            if labels:
                names.append(".".join(labels))
            labels = []
        else:
            labels.append(option120[i + 1 : i + 1 + length].decode("ascii", "replace"))
        i += 1 + length
    if labels:
        names.append(".".join(labels))
    return tuple(names)


def read_info(options: dict[int, bytes]) -> DhcpInfo:
    subs = suboptions(options.get(43, b""))
    servers = sip_servers(options.get(120, b""))
    domain = options.get(15, b"").rstrip(b"\x00").decode("ascii", "replace") or None
    if domain is None and servers and "." in servers[0]:
        domain = servers[0].split(".", 1)[1]
    url = None
    if 3 in subs:
        scheme, port = subs.get(2, "https"), subs.get(4)
        url = f"{scheme}://{subs[3]}" + (f":{port}" if port else "") + subs.get(5, "")
    return DhcpInfo(domain, servers, subs, url)


def inform(
    server: tuple[str, int],
    mac: str,
    source: str | None = None,
    client_port: int = CLIENT_PORT,
    timeout: float = 5.0,
) -> DhcpInfo:
    """Send one DHCPINFORM from `source` (default: the address towards `server`) and
    `client_port` to `server`; the DHCPACK's info. Waits at most `timeout` seconds for
    the ACK with our xid (and for its turn at the address); DhcpFailure otherwise."""
    source = source or local_address_towards(server)
    turn = _turn(source, client_port)
    if not turn.acquire(timeout=timeout):
        raise DhcpFailure(f"{source}:{client_port} stayed busy with other phones' DHCP")
    try:
        return _inform(server, mac, source, client_port, timeout)
    finally:
        turn.release()


def _inform(
    server: tuple[str, int], mac: str, source: str, client_port: int, timeout: float
) -> DhcpInfo:
    xid = int.from_bytes(os.urandom(4), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((source, client_port))
        except OSError as e:
            raise DhcpFailure(f"cannot bind {source}:{client_port}: {e.strerror}") from e
        sock.sendto(inform_packet(mac, source, xid), server)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            got, _ = sock.recvfrom(4096)
            try:
                their_xid, options = read_options(got)
            except DhcpFailure:
                continue
            if their_xid == xid and options.get(53) == bytes((ACK,)):
                return read_info(options)
    raise DhcpFailure(f"no DHCPACK from {server[0]}:{server[1]} within {timeout:g} s")
