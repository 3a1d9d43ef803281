"""`ucupdates dhcp-options`: DHCP options 43 and 120 for the phones, and server snippets.

The DHCPUtil equivalent; `--decode HEX` explains a captured option instead. The
discovery area loads only when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.exits import EX_USAGE, Failure
from appliance.config import Config


def add_dhcp_options_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dhcp-options",
        help="DHCP options 43 and 120 for the phones, with snippets for DHCP servers",
    )
    p.add_argument(
        "--sip-server",
        action="append",
        default=[],
        metavar="FQDN",
        help="the SIP server (pool) FQDN; repeatable",
    )
    p.add_argument("--web-fqdn", help="the web services FQDN (default: the first SIP server)")
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--vlan", type=int, help="voice VLAN for CPE-OCPHONE")
    p.add_argument("--decode", metavar="HEX", help="explain a captured option 43 or 120")


def run_dhcp_options(args: argparse.Namespace, config: Config) -> int:
    from appliance.discovery import DhcpOptionError, dhcp_options_command

    if not args.decode and not args.sip_server:
        raise Failure("give --sip-server FQDN (repeatable), or --decode HEX", EX_USAGE)
    try:
        print(
            dhcp_options_command(args.sip_server, args.web_fqdn, args.port, args.vlan, args.decode),
            end="",
        )
    except DhcpOptionError as e:
        raise Failure(str(e)) from e
    return 0
