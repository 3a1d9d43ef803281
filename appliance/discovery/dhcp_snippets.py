"""DHCP server configuration for Lync Phone Edition: the text of `ucupdates dhcp-options`.

The snippet functions write the bytes of options 43 and 120 (built by dhcp_options) into
the configuration of Kea, ISC dhcpd, dnsmasq and Windows DHCP (`netsh`), one class per
vendor class (`MS-UC-Client`, and `CPE-OCPHONE` for the voice VLAN, matched in both of
its known spellings, `CPE-OCPHONE` and `CPE-OCPhone`: the servers compare case-sensitively).
`dhcp_options_command` prints them all, or explains a captured option.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.discovery.dhcp_options import (
    CPE_OCPHONE,
    CPE_OCPHONE_SPELLINGS,
    DEFAULT_CERT_PROV_PATH,
    MS_UC_CLIENT,
    DhcpOptionError,
    option43,
    option120,
    parse_option43,
    vlan_option43,
)
from appliance.discovery.dhcp_options import decode as decode_option


@dataclass(frozen=True)
class LyncOptions:
    """The bytes every snippet is written from."""

    option43: bytes
    option120: bytes
    vlan43: bytes | None = None

    @classmethod
    def build(
        cls,
        sip_servers: Sequence[str],
        web_fqdn: str,
        port: int = 443,
        vlan: int | None = None,
        cert_prov_path: str = DEFAULT_CERT_PROV_PATH,
    ) -> LyncOptions:
        return cls(
            option43(web_fqdn, port, cert_prov_path=cert_prov_path),
            option120(sip_servers),
            None if vlan is None else vlan_option43(vlan),
        )


def _colons(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def kea_snippet(options: LyncOptions) -> str:
    """Entries for kea-dhcp4's `Dhcp4` map: client classes on option 60, each with its
    own binary option 43 (Kea allows an option 43 definition per class) and option 120."""
    classes: list[dict[str, object]] = [
        {
            "name": MS_UC_CLIENT,
            "test": f"option[60].text == '{MS_UC_CLIENT}'",
            "option-def": [{"name": "vendor-encapsulated-options", "code": 43, "type": "binary"}],
            "option-data": [
                {"code": 43, "csv-format": False, "data": options.option43.hex().upper()},
                {"code": 120, "csv-format": False, "data": options.option120.hex().upper()},
            ],
        }
    ]
    if options.vlan43 is not None:
        classes.append(
            {
                "name": CPE_OCPHONE,
                "test": " or ".join(f"option[60].text == '{v}'" for v in CPE_OCPHONE_SPELLINGS),
                "option-def": [
                    {"name": "vendor-encapsulated-options", "code": 43, "type": "binary"}
                ],
                "option-data": [
                    {"code": 43, "csv-format": False, "data": options.vlan43.hex().upper()}
                ],
            }
        )
    body = json.dumps({"client-classes": classes}, indent=2)
    # the inside of the map, to paste into "Dhcp4": { ... }
    return body[1:-1].strip("\n") + "\n"


def isc_snippet(options: LyncOptions) -> str:
    """Lines for ISC dhcpd.conf (top level): option 120 defined as a string of bytes,
    and one class per vendor class."""
    lines = [
        "# option 120 (RFC 3361) as raw bytes",
        "option lync-sip-server code 120 = string;",
        "",
        f'class "{MS_UC_CLIENT}" {{',
        f'  match if option vendor-class-identifier = "{MS_UC_CLIENT}";',
        f"  option vendor-encapsulated-options {_colons(options.option43)};",
        f"  option lync-sip-server {_colons(options.option120)};",
        "}",
    ]
    if options.vlan43 is not None:
        lines += [
            "",
            f'class "{CPE_OCPHONE}" {{',
            "  match if "
            + " or ".join(f'option vendor-class-identifier = "{v}"' for v in CPE_OCPHONE_SPELLINGS)
            + ";",
            f"  option vendor-encapsulated-options {_colons(options.vlan43)};",
            "}",
        ]
    return "\n".join(lines) + "\n"


def dnsmasq_snippet(options: LyncOptions) -> str:
    """Lines for dnsmasq.conf: a tag per vendor class, options as colon-separated hex."""
    lines = [
        f"dhcp-vendorclass=set:lync,{MS_UC_CLIENT}",
        f"dhcp-option=tag:lync,43,{_colons(options.option43)}",
        f"dhcp-option=tag:lync,120,{_colons(options.option120)}",
    ]
    if options.vlan43 is not None:
        lines += [f"dhcp-vendorclass=set:lync-vlan,{v}" for v in CPE_OCPHONE_SPELLINGS]
        lines.append(f"dhcp-option=tag:lync-vlan,43,{_colons(options.vlan43)}")
    return "\n".join(lines) + "\n"


def netsh_snippet(options: LyncOptions) -> str:
    """Windows DHCP, as Lync's DHCPUtil script does it: a vendor class, one option
    definition per sub-option, and their values (Windows assembles option 43 itself)."""
    vendor = "MSUCClient"
    lines = [
        f'netsh dhcp server add class MSUCClient "UC Vendor Class Id" "{MS_UC_CLIENT}" 1',
    ]
    subs = parse_option43(options.option43)
    for sub in subs:
        lines.append(
            f"netsh dhcp server add optiondef {sub.code} {sub.name} BINARY 0 "
            f'vendor={vendor} comment="{sub.name}"'
        )
    for sub in subs:
        lines.append(
            f"netsh dhcp server set optionvalue {sub.code} BINARY vendor={vendor} "
            f"{sub.value.hex().upper()}"
        )
    lines += [
        'netsh dhcp server add optiondef 120 UCSipServer BINARY 0 comment="SIP servers"',
        f"netsh dhcp server set optionvalue 120 BINARY {options.option120.hex().upper()}",
    ]
    if options.vlan43 is not None:
        (vlan,) = parse_option43(options.vlan43)
        for spelling in CPE_OCPHONE_SPELLINGS:  # a vendor class matches its bytes exactly
            name = spelling.replace("-", "")
            if spelling != CPE_OCPHONE:
                name += "Mixed"  # Windows class names ignore case
            lines += [
                f'netsh dhcp server add class {name} "Lync Phone Edition VLAN" "{spelling}" 1',
                f"netsh dhcp server add optiondef {vlan.code} {vlan.name} BINARY 0 "
                f'vendor={name} comment="{vlan.name}"',
                f"netsh dhcp server set optionvalue {vlan.code} BINARY vendor={name} "
                f"{vlan.value.hex().upper()}",
            ]
    return "\n".join(lines) + "\n"


def dhcp_options_command(
    sip_servers: Sequence[str],
    web_fqdn: str | None,
    port: int,
    vlan: int | None,
    decode: str | None,
) -> str:
    """The text `ucupdates dhcp-options` prints. With `decode`, the explanation of that
    captured option; otherwise both options in hex, then each server's snippet. The web
    server FQDN defaults to the first SIP server (as DHCPUtil's does). Raises
    DhcpOptionError (one line) on bad input."""
    if decode is not None:
        return decode_option(decode) + "\n"
    if web_fqdn is None:
        if not sip_servers:
            raise DhcpOptionError("give at least one SIP server FQDN")
        web_fqdn = sip_servers[0]
    options = LyncOptions.build(sip_servers, web_fqdn, port, vlan)
    url = f"https://{web_fqdn.rstrip('.')}:{port}{DEFAULT_CERT_PROV_PATH}"
    parts = [
        f"SIP servers: {', '.join(s.rstrip('.') for s in sip_servers)}",
        f"certificate provisioning service: {url}",
        "",
        f"option 120: {options.option120.hex()}",
        f"option 43 (vendor class {MS_UC_CLIENT}): {options.option43.hex()}",
    ]
    if options.vlan43 is not None:
        parts.append(f"option 43 (vendor class {CPE_OCPHONE}, VLAN {vlan}): {options.vlan43.hex()}")
    sections = [
        ('Kea (inside "Dhcp4": { ... })', kea_snippet(options)),
        ("ISC dhcpd (dhcpd.conf)", isc_snippet(options)),
        ("dnsmasq (dnsmasq.conf)", dnsmasq_snippet(options)),
        ("Windows DHCP (netsh, run on the DHCP server)", netsh_snippet(options)),
    ]
    for title, body in sections:
        parts += ["", f"== {title} ==", body.rstrip("\n")]
    return "\n".join(parts) + "\n"
