"""A Lync Phone Edition phone simulator: one phone or a fleet, as `ucupdates phone-sim`.

A phone discovers the appliance (DHCPINFORM, DNS) or is given its URL, sends the update
check of docs/protocol.md §5 over HTTP or HTTPS (TLS 1.0, RSA suites, no SNI by default),
answers a 401 outside with Basic or NTLM, downloads and verifies every offered module,
resuming after a cut, "restarts" on the new version and checks again after its idle
period. A fleet runs many of them with a concurrency limit and start-time jitter and
sums up checks, updates, failures by cause, latencies per step and bytes, and what became
of each phone. Seeded shares of a fleet misbehave after an offer (revert, stay stuck, go
silent), so that an appliance's rollout confirmation and automatic pause can be seen work.
"""

from appliance.phonesim.dhcp import DhcpFailure, DhcpInfo, inform
from appliance.phonesim.dns import DnsFailure, discover
from appliance.phonesim.fleet import (
    FATES,
    PhoneRun,
    Schedule,
    Stats,
    percentile,
    run_fleet,
    runs_json,
    summary_text,
)
from appliance.phonesim.http import Credentials, Failure, Net, phone_tls
from appliance.phonesim.identity import (
    DEFAULT_VERSION,
    MODELS,
    Answer,
    BadAnswer,
    FleetSpec,
    PhoneIdentity,
    PhoneState,
    Quirk,
    check_body,
    fleet,
    mac_of,
    parse_answer,
    parse_model,
    serial_of,
)
from appliance.phonesim.ntlm import authenticate, negotiate
from appliance.phonesim.phone import Round, Settings, run_round, system_information

__all__ = [
    "DEFAULT_VERSION",
    "FATES",
    "MODELS",
    "Answer",
    "BadAnswer",
    "Credentials",
    "DhcpFailure",
    "DhcpInfo",
    "DnsFailure",
    "Failure",
    "FleetSpec",
    "Net",
    "PhoneIdentity",
    "PhoneRun",
    "PhoneState",
    "Quirk",
    "Round",
    "Schedule",
    "Settings",
    "Stats",
    "authenticate",
    "check_body",
    "discover",
    "fleet",
    "inform",
    "mac_of",
    "negotiate",
    "parse_answer",
    "parse_model",
    "percentile",
    "phone_tls",
    "run_fleet",
    "run_round",
    "runs_json",
    "serial_of",
    "summary_text",
    "system_information",
]
