"""DHCP options 43 and 120 for Lync Phone Edition, as Lync's DHCPUtil makes them.

Bytes in, bytes out: `option43`, `option120` and `vlan_option43` build option payloads
(without the option's own code and length), and `decode` explains a captured one.
dhcp_snippets writes the same bytes into DHCP servers' configuration.

- Option 43 for vendor class `MS-UC-Client`: sub-options 1 UCIdentifier, 2 URLScheme,
  3 WebServerFQDN, 4 WebServerPort, 5 CertProvRelPath, each 1-byte code, 1-byte length,
  ASCII value (Lync Server 2010 docs, "Obtaining Values of DHCP Options by Using
  DHCPUtil.exe").
- Option 120 (RFC 3361): encoding byte 0, then one or more names in DNS label format.
  DHCPUtil handles one name; RFC 3361 allows a list, which is what this module writes.
- Option 43 for vendor class `CPE-OCPHONE`: the voice VLAN, see `vlan_option43`.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

MS_UC_CLIENT = "MS-UC-Client"
CPE_OCPHONE = "CPE-OCPHONE"
# The spellings of the VLAN request's vendor class seen in sources (docs/protocol.md §4):
# Lync's docs write CPE-OCPHONE, the OCS 2007 phones' release notes CPE-OCPhone. Our
# responder ignores case; a DHCP server's class match does not, so snippets name both.
CPE_OCPHONE_SPELLINGS = (CPE_OCPHONE, "CPE-OCPhone")
DEFAULT_CERT_PROV_PATH = "/CertProv/CertProvisioningService.svc"
MAX_OPTION_BYTES = 255

SUBOPTION_NAMES = {
    1: "UCIdentifier",
    2: "URLScheme",
    3: "WebServerFQDN",
    4: "WebServerPort",
    5: "CertProvRelPath",
    10: "VoiceVLAN",
}
VLAN_SUBOPTION = 10


class DhcpOptionError(ValueError):
    """An option that cannot be built or decoded; str() is the one line to show."""


# -- building ---------------------------------------------------------------------------


def _suboption(code: int, value: str, what: str) -> bytes:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise DhcpOptionError(f"{what} {value!r} is not ASCII") from None
    if not raw:
        raise DhcpOptionError(f"{what} is empty")
    if len(raw) > MAX_OPTION_BYTES:
        raise DhcpOptionError(f"{what} is {len(raw)} bytes; a sub-option holds at most 255")
    return bytes((code, len(raw))) + raw


def _checked(option: bytes, what: str) -> bytes:
    if len(option) > MAX_OPTION_BYTES:
        raise DhcpOptionError(
            f"{what} would be {len(option)} bytes; a DHCP option holds at most 255"
        )
    return option


def option43(
    web_fqdn: str,
    port: int = 443,
    scheme: str = "https",
    cert_prov_path: str = DEFAULT_CERT_PROV_PATH,
) -> bytes:
    """Option 43 for `MS-UC-Client`: where the phone finds the certificate provisioning
    service (`scheme://web_fqdn:port/cert_prov_path`)."""
    if not 1 <= port <= 65535:
        raise DhcpOptionError(f"web server port {port} is out of range 1-65535")
    fqdn = web_fqdn.strip().rstrip(".")
    _dns_labels(fqdn)  # a name a phone can resolve
    return _checked(
        _suboption(1, MS_UC_CLIENT, "UCIdentifier")
        + _suboption(2, scheme, "URL scheme")
        + _suboption(3, fqdn, "web server FQDN")
        + _suboption(4, str(port), "web server port")
        + _suboption(5, cert_prov_path, "certificate provisioning path"),
        "option 43",
    )


def vlan_option43(vlan: int) -> bytes:
    """Option 43 for `CPE-OCPHONE`: the voice VLAN, sub-option 10, ASCII decimal.

    Sources: Microsoft's Office Communicator 2007 Phone Edition release notes (the phone
    sends vendor class `CPE-OCPhone`, asks for option 43, and takes "vendor specific
    option 10" as its VLAN ID) and Lync Server 2010's "Configuring DHCP Options to Enable
    Sign-in for IP Phones" (option 43 for vendor class `CPE-OCPHONE` carries the VLAN ID).
    Neither gives the bytes of the value. AudioCodes' 400HD administrator's manual
    (LTRT-09960, "VLAN Discovery via DHCP Option 43") lists sub-option 010 `VoiceVLAN`
    among the ASCII-valued sub-options 1-5, values 1-4094. So: ASCII digits, like the
    other sub-options (VLAN 100 = `0a03313030`). This is our reconstruction from those
    documents, not a capture from a phone; it lives only here.
    """
    if not 1 <= vlan <= 4094:
        raise DhcpOptionError(f"voice VLAN {vlan} is out of range 1-4094")
    return _suboption(VLAN_SUBOPTION, str(vlan), "voice VLAN")


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")


def _dns_labels(name: str) -> list[bytes]:
    """The labels of a host name, each checked (letters, digits, hyphens; 1-63 bytes)."""
    if not name:
        raise DhcpOptionError("empty server name")
    labels = name.split(".")
    for label in labels:
        if not label:
            raise DhcpOptionError(f"{name!r} has an empty label")
        if len(label) > 63:
            raise DhcpOptionError(
                f"{name!r}: label {label[:20]!r}... is {len(label)} bytes; at most 63"
            )
        if not _LABEL.fullmatch(label):
            raise DhcpOptionError(f"{name!r}: label {label!r} is not a host name label")
    if len(labels) < 2 or all(label.isdigit() for label in labels):
        raise DhcpOptionError(f"{name!r} is not a fully qualified domain name")
    return [label.encode("ascii") for label in labels]


def option120(sip_servers: Sequence[str]) -> bytes:
    """Option 120 (RFC 3361), encoding 0: the SIP servers' FQDNs in DNS label format, in
    order, without compression."""
    if isinstance(sip_servers, str):
        sip_servers = [sip_servers]
    if not sip_servers:
        raise DhcpOptionError("option 120 needs at least one SIP server FQDN")
    out = bytearray(b"\x00")
    for server in sip_servers:
        for label in _dns_labels(server.strip().rstrip(".")):
            out += bytes((len(label),)) + label
        out += b"\x00"
    return _checked(bytes(out), f"option 120 for {len(sip_servers)} SIP server(s)")


# -- decoding ---------------------------------------------------------------------------


def parse_hex(text: str) -> bytes:
    """Hex digits, with or without spaces, colons, dots, dashes or a leading 0x."""
    cleaned = text.strip()
    if cleaned[:2].lower() == "0x":
        cleaned = cleaned[2:]
    cleaned = re.sub(r"[\s:.\-]", "", cleaned)
    if not cleaned:
        raise DhcpOptionError("no hex digits given")
    bad = next((c for c in cleaned if c not in string.hexdigits), None)
    if bad is not None:
        raise DhcpOptionError(f"{bad!r} is not a hex digit")
    if len(cleaned) % 2:
        raise DhcpOptionError(f"odd number of hex digits ({len(cleaned)})")
    return bytes.fromhex(cleaned)


@dataclass(frozen=True)
class SubOption:
    code: int
    value: bytes

    @property
    def name(self) -> str:
        return SUBOPTION_NAMES.get(self.code, f"sub-option {self.code}")


def parse_option43(data: bytes) -> list[SubOption]:
    """Sub-options of an option 43 payload (code, length, value; pad 0 and end 255 allowed)."""
    found: list[SubOption] = []
    i = 0
    while i < len(data):  # each step moves i forward by at least one byte
        code = data[i]
        if code == 0:
            i += 1
            continue
        if code == 255:
            break
        if i + 1 >= len(data):
            raise DhcpOptionError(f"option 43: sub-option {code} at byte {i} has no length")
        length = data[i + 1]
        end = i + 2 + length
        if end > len(data):
            raise DhcpOptionError(
                f"option 43: sub-option {code} at byte {i} claims {length} bytes, "
                f"only {len(data) - i - 2} follow"
            )
        found.append(SubOption(code, data[i + 2 : end]))
        i = end
    if not found:
        raise DhcpOptionError("option 43: no sub-options")
    return found


def parse_option120(data: bytes) -> tuple[int, list[str]]:
    """(encoding, servers) of an option 120 payload: names (0) or IPv4 addresses (1).

    Names may use RFC 1035 compression pointers, which must point backwards within the
    option (so decoding always ends)."""
    if not data:
        raise DhcpOptionError("option 120: empty")
    encoding, body = data[0], data[1:]
    if encoding == 1:
        if not body or len(body) % 4:
            raise DhcpOptionError(
                f"option 120: encoding 1 needs IPv4 addresses (4 bytes each), got {len(body)}"
            )
        return 1, [str(ipaddress.IPv4Address(body[i : i + 4])) for i in range(0, len(body), 4)]
    if encoding != 0:
        raise DhcpOptionError(f"option 120: unknown encoding {encoding} (0 names, 1 addresses)")
    names: list[str] = []
    i = 0
    while i < len(body):  # each name consumes at least one byte
        name, i = _read_name(body, i)
        names.append(name)
    if not names:
        raise DhcpOptionError("option 120: no names after the encoding byte")
    return 0, names


def _read_name(body: bytes, start: int) -> tuple[str, int]:
    labels: list[str] = []
    i, resume = start, -1
    limit = start + 1  # a pointer must go below this: strictly backwards, so this ends
    for _ in range(len(body) + 1):
        if i >= len(body):
            raise DhcpOptionError(f"option 120: name at byte {start + 1} is not terminated")
        length = body[i]
        if length == 0:
            i += 1
            break
        if length & 0xC0 == 0xC0:
            if i + 1 >= len(body):
                raise DhcpOptionError("option 120: truncated compression pointer")
            target = ((length & 0x3F) << 8) | body[i + 1]
            if target >= limit - 1 or target >= i:
                raise DhcpOptionError("option 120: compression pointer does not point back")
            if resume < 0:
                resume = i + 2
            limit = target + 1
            i = target
            continue
        if length > 63:
            raise DhcpOptionError(f"option 120: label length {length} at byte {i + 1}")
        label = body[i + 1 : i + 1 + length]
        if len(label) < length:
            raise DhcpOptionError(f"option 120: label at byte {i + 1} runs past the end")
        labels.append(label.decode("ascii", "backslashreplace"))
        i += 1 + length
    else:
        raise DhcpOptionError("option 120: name does not end")
    if not labels:
        raise DhcpOptionError(f"option 120: empty name at byte {start + 1}")
    return ".".join(labels), resume if resume >= 0 else i


def _show(value: bytes) -> str:
    if value and all(32 <= b < 127 for b in value):
        return value.decode("ascii")
    return "0x" + value.hex()


def describe_option43(data: bytes) -> str:
    lines = [f"option 43 (vendor-specific information), {len(data)} bytes:"]
    for sub in parse_option43(data):
        lines.append(f"  {sub.code:3} {sub.name:16} {_show(sub.value)}")
    return "\n".join(lines)


def describe_option120(data: bytes) -> str:
    encoding, servers = parse_option120(data)
    kind = "domain names" if encoding == 0 else "IPv4 addresses"
    lines = [
        f"option 120 (SIP servers, RFC 3361), {len(data)} bytes, encoding {encoding} ({kind}):"
    ]
    lines += [f"  {server}" for server in servers]
    return "\n".join(lines)


def decode(hex_or_bytes: str | bytes) -> str:
    """Explain a captured option 43 or 120 payload (hex text, or the raw bytes).

    Text may start with `43:` or `120:` to say which; otherwise the bytes decide: a
    leading 0 is option 120 (names); anything that parses as sub-options is option 43;
    a leading 1 followed by whole IPv4 addresses is option 120 (addresses)."""
    which: str | None = None
    if isinstance(hex_or_bytes, str):
        m = re.match(r"\s*(?:option\s*)?(43|120)\s*[:=]\s*", hex_or_bytes, re.IGNORECASE)
        text = hex_or_bytes
        if m:
            which, text = m.group(1), hex_or_bytes[m.end() :]
        data = parse_hex(text)
    else:
        data = bytes(hex_or_bytes)
    if not data:
        raise DhcpOptionError("no bytes to decode")
    if len(data) > MAX_OPTION_BYTES:
        raise DhcpOptionError(f"{len(data)} bytes: one DHCP option holds at most 255")
    if which == "43":
        return describe_option43(data)
    if which == "120":
        return describe_option120(data)
    if data[0] == 0:
        return describe_option120(data)
    errors: list[str] = []
    for describe in (describe_option43, describe_option120):
        try:
            return describe(data)
        except DhcpOptionError as e:
            errors.append(str(e))
    raise DhcpOptionError("neither option 43 nor 120: " + "; ".join(errors))
