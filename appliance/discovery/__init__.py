"""How phones find the appliance: the DNS responder (ucupdates-r2, ucupdates) and DHCPINFORM."""

from appliance.discovery.dhcp import make_dhcp_service
from appliance.discovery.dhcp_options import DhcpOptionError
from appliance.discovery.dhcp_snippets import dhcp_options_command
from appliance.discovery.dns import DnsService, make_dns_service

__all__ = [
    "DhcpOptionError",
    "DnsService",
    "dhcp_options_command",
    "make_dhcp_service",
    "make_dns_service",
]
