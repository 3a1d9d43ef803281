"""The configuration's tables: one frozen dataclass (or enum) per TOML table, with defaults.

A field's `check` metadata is the value check `appliance.config.loader` applies to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from appliance.config.values import (
    Address,
    Network,
    extension,
    fqdn,
    ip,
    positive,
    syslog_target,
    time_of_day,
    time_zone,
    within,
)


@dataclass(frozen=True)
class Listeners:
    """Where the appliance listens. An empty string turns an optional listener off."""

    dns: Address = Address("127.0.0.1", 5353)
    internal_https: Address = Address("127.0.0.1", 8443)
    internal_http: Address | None = Address("127.0.0.1", 8080)  # plain HTTP, internal only
    external_https: Address = Address("127.0.0.1", 8444)
    admin: Address = Address("127.0.0.1", 9443)


@dataclass(frozen=True)
class ImportSettings:
    """Limits a package must keep, checked from its header tables before decompressing."""

    max_entries: int = field(default=10_000, metadata={"check": positive})
    max_total_bytes: int = field(default=8 * 1024**3, metadata={"check": positive})
    max_ratio: float = field(default=200.0, metadata={"check": positive})
    max_xml_bytes: int = field(default=1024 * 1024, metadata={"check": positive})
    # Room kept free on the data folder's file system beyond what an import writes.
    min_free_bytes: int = field(default=64 * 1024 * 1024, metadata={"check": positive})


class TlsProfile(StrEnum):
    MODERN = "modern"  # TLS 1.2 and 1.3, Mozilla intermediate ciphers
    LPE_LEGACY = "lpe-legacy"  # also TLS 1.0/1.1 with the CBC-SHA suites the phones need


class CertSignature(StrEnum):
    """The hash the generated test CA signs with (docs/protocol.md §3)."""

    SHA256 = "sha256"
    SHA1 = "sha1"  # Tanjay-family phones (CX700, LG-Nortel 8540) on old firmware


@dataclass(frozen=True)
class TlsSettings:
    """The server certificate and the protocol set of each listener.

    Without cert_file/key_file, a test CA and a server certificate carrying every
    configured name are generated into `<data_dir>/tls/` at first start.
    """

    cert_file: Path | None = None  # PEM: the certificate, then its chain
    key_file: Path | None = None
    internal_profile: TlsProfile = TlsProfile.LPE_LEGACY
    external_profile: TlsProfile = TlsProfile.LPE_LEGACY
    # The generated CA and server certificate's signature; changing it needs a new test
    # CA (remove ca.pem and ca.key): phones pin the chain they saw first.
    generated_signature: CertSignature = CertSignature.SHA256


class UrlScheme(StrEnum):
    HTTP = "http"
    HTTPS = "https"


@dataclass(frozen=True)
class ServiceSettings:
    """The phone-facing service: what it announces, and the limits on what clients send."""

    # Scheme, host and port in BaseURL / ExternalBaseURL. Defaults: internal http when the
    # plain-HTTP listener is on (as Lync, docs/protocol.md §1), else https;
    # ucupdates-r2.<first domain>; the port of the internal listener of that scheme;
    # external: https, the internal FQDN and the external port.
    internal_scheme: UrlScheme | None = None
    external_scheme: UrlScheme = UrlScheme.HTTPS
    # With nothing to offer, also send empty <BaseURL/> and <ExternalBaseURL/> (the Lync
    # trace calls them "blank" then).
    empty_base_urls: bool = False
    internal_fqdn: str | None = field(default=None, metadata={"check": fqdn})
    internal_port: int | None = field(default=None, metadata={"check": positive})
    external_fqdn: str | None = field(default=None, metadata={"check": fqdn})
    external_port: int | None = field(default=None, metadata={"check": positive})
    server_name: str | None = None  # in audit file names; default: the host name
    max_header_bytes: int = field(default=16 * 1024, metadata={"check": positive})
    max_check_bytes: int = field(default=64 * 1024, metadata={"check": positive})
    request_timeout: float = field(default=30.0, metadata={"check": positive})
    idle_timeout: float = field(default=15.0, metadata={"check": positive})
    max_connections: int = field(default=4096, metadata={"check": positive})
    max_downloads: int = field(default=256, metadata={"check": positive})
    # Image downloads (docs/phones.md): at most this many at once from one client address
    # (after trusted proxies); a body the client stops taking for download_stall_seconds
    # is aborted; a Range header of more than max_ranges ranges is ignored (whole file).
    max_downloads_per_client: int = field(default=8, metadata={"check": positive})
    download_stall_seconds: float = field(default=60.0, metadata={"check": positive})
    max_ranges: int = field(default=4, metadata={"check": positive})
    retry_after: int = field(default=120, metadata={"check": positive})
    # Capture mode (docs/phones.md): keep the first capture_per_model checks of each phone
    # model and every unparsable check, with TLS details and the answer, in
    # <data_dir>/capture (the oldest go past capture_max_files or capture_max_bytes).
    capture: bool = True
    capture_per_model: int = field(default=5, metadata={"check": within(0, 10_000)})
    capture_max_files: int = field(default=200, metadata={"check": positive})
    capture_max_bytes: int = field(default=20 * 1024 * 1024, metadata={"check": positive})


_PRIVATE = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


@dataclass(frozen=True)
class ZoneSettings:
    """Who is inside the firewall. Requests on the external listener or an `*Ext` path are
    always external; otherwise the client address decides (after trusted proxies)."""

    internal_networks: tuple[Network, ...] = tuple(Network.parse(n) for n in _PRIVATE)
    trusted_proxies: tuple[Network, ...] = ()


@dataclass(frozen=True)
class LdapSettings:
    """Active Directory (or any LDAP) simple bind; used when auth.backend = "ldap"."""

    url: str = ""  # ldap://dc1.contoso.com or ldaps://dc1.contoso.com:636
    bind_template: str = "{user}"  # e.g. "{user}@contoso.com" or "uid={user},ou=people,..."
    start_tls: bool = False
    ca_file: Path | None = None
    timeout: float = field(default=5.0, metadata={"check": positive})


class AuthBackend(StrEnum):
    LOCAL = "local"
    LDAP = "ldap"


class NtlmBackend(StrEnum):
    LOCAL = "local"  # the NT hashes of the local users
    WINBIND = "winbind"  # Samba's ntlm_auth helper, the appliance joined to the domain


@dataclass(frozen=True)
class AuthSettings:
    """HTTP Basic and NTLM for external phones: who may, and how hard guessing is."""

    backend: AuthBackend = AuthBackend.LOCAL
    realm: str = "ucupdates"
    cache_seconds: float = field(default=300.0, metadata={"check": positive})
    max_failures: int = field(default=5, metadata={"check": positive})
    failure_window: float = field(default=300.0, metadata={"check": positive})
    lockout_seconds: float = field(default=900.0, metadata={"check": positive})
    # A lockout is a guard, not a wall (docs/security.md, Phone lockouts): the remembered
    # right password still passes; other passwords get one check per lockout_check_seconds.
    lockout_check_seconds: float = field(default=60.0, metadata={"check": positive})
    max_address_failures: int = field(default=50, metadata={"check": positive})  # a NAT's
    known_good_seconds: float = field(default=7 * 86400.0, metadata={"check": positive})
    ldap: LdapSettings = LdapSettings()
    # NTLM beside Basic (docs/protocol.md §2): Lync's external handler challenged with NTLM.
    ntlm: bool = True
    ntlm_backend: NtlmBackend = NtlmBackend.LOCAL
    ntlm_allow_v1: bool = False  # NTLMv1 and LM responses (weak; a warning at start)
    ntlm_domain: str = "UCUPDATES"  # the NetBIOS domain the challenge announces
    ntlm_helper: tuple[str, ...] = ("ntlm_auth",)  # the winbind helper and its options
    ntlm_helper_timeout: float = field(default=5.0, metadata={"check": positive})


@dataclass(frozen=True)
class DeviceLogSettings:
    """Device log uploads (Lync's CsDeviceUpdateConfiguration defaults)."""

    valid_types: tuple[str, ...] = ("Watson", "Config", "Diaglog", "CELog")
    valid_extensions: tuple[str, ...] = field(
        default=(
            ".dmp",
            ".clg",
            ".clg2",
            ".bak",
            ".kdmp",
            ".dat",
            ".bin",
            ".cat",
            ".xml",
            ".txt",
            ".hex",
        ),
        metadata={"check": extension},
    )
    max_file_bytes: int = field(default=1_024_000, metadata={"check": positive})
    retention_days: float = field(default=10.0, metadata={"check": positive})


class DiscoveryName(StrEnum):
    """The names phones look up in each domain (docs/protocol.md §3)."""

    R2 = "ucupdates-r2"  # OCS 2007 R2 and later phones
    LYNC2010 = "ucupdates"  # what Lync 2010 Device Update deployments created


@dataclass(frozen=True)
class DnsSettings:
    """The discovery responder (on listeners.dns, UDP and TCP).

    It answers A/AAAA for `<name>.<domain>`, each name of `names` (default
    `ucupdates-r2` and `ucupdates`) in every domain of `domains` (and of
    `domains_from`, an ISC dhcpd.conf or Kea JSON file read at start and on reload), with
    the internal address for internal clients and the external one (or REFUSED) for
    others. Every other name goes to `upstreams` for clients in `forward_networks`, and
    is REFUSED for other clients or when there are no upstreams.
    """

    internal_address: str | None = field(default=None, metadata={"check": ip})
    internal_address6: str | None = field(default=None, metadata={"check": ip})
    external_address: str | None = field(default=None, metadata={"check": ip})
    external_address6: str | None = field(default=None, metadata={"check": ip})
    # The names answered (and that the server certificate must carry) in every domain.
    names: tuple[DiscoveryName, ...] = (DiscoveryName.R2, DiscoveryName.LYNC2010)
    domains_from: Path | None = None
    upstreams: tuple[Address, ...] = ()
    # Clients whose other names go to the upstreams; the rest get REFUSED for them
    # (no open resolver). Unset: zones.internal_networks.
    forward_networks: tuple[Network, ...] | None = None
    ttl: int = field(default=300, metadata={"check": positive})
    rrl_responses_per_second: int = field(default=50, metadata={"check": positive})
    # every Nth dropped answer goes out truncated (TC), 0: never
    rrl_slip: int = field(default=2, metadata={"check": within(0, 100)})
    max_tcp_connections: int = field(default=256, metadata={"check": positive})
    max_tcp_per_client: int = field(default=16, metadata={"check": positive})  # per address
    # A TCP connection is closed this long after its last complete query or answer (bytes
    # trickling in do not count), and in any case this long after it opened.
    tcp_idle_timeout: float = field(default=10.0, metadata={"check": positive})
    tcp_max_lifetime: float = field(default=120.0, metadata={"check": positive})
    cache_entries: int = field(default=10_000, metadata={"check": positive})


@dataclass(frozen=True)
class DhcpSettings:
    """The DHCPINFORM responder (like the Lync Registrar's); off by default. It never
    offers or leases addresses: it answers DHCPINFORM from `MS-UC-Client` with options 43
    and 120, and from `CPE-OCPHONE` with the voice VLAN."""

    enabled: bool = False
    listen: Address = Address("0.0.0.0", 67)  # noqa: S104 - DHCP listens on all addresses
    sip_servers: tuple[str, ...] = field(default=(), metadata={"check": fqdn})
    web_fqdn: str | None = field(default=None, metadata={"check": fqdn})  # default: internal
    web_port: int = field(default=443, metadata={"check": positive})
    cert_prov_path: str = "/CertProv/CertProvisioningService.svc"
    voice_vlan: int | None = field(default=None, metadata={"check": within(1, 4094)})
    # Relay agents (their source addresses) whose relayed DHCPINFORMs (giaddr set) are
    # answered, at giaddr; none: relayed packets are ignored (no reflection to a forged giaddr).
    relays: tuple[Network, ...] = ()


@dataclass(frozen=True)
class SyslogSettings:
    """Events as RFC 5424 messages with structured data, besides standard error."""

    enabled: bool = False
    target: str = field(default="local", metadata={"check": syslog_target})  # /dev/log
    app_name: str = "ucupdates"
    facility: int = field(default=16, metadata={"check": within(0, 23)})  # 16: local0
    hostname: str | None = None  # default: the host name
    cert_warn_days: int = field(default=30, metadata={"check": positive})
    # The private enterprise number in the structured data's ID (`ucupdates@<number>`,
    # RFC 5424 §7.2.2); 32473 is the one RFC 5612 reserves for documentation.
    enterprise_number: int = field(default=32473, metadata={"check": positive})


@dataclass(frozen=True)
class AdminLdapSettings:
    """Control Panel login against LDAP or Active Directory (docs/operations.md, Directory
    login): a simple bind as the user, then the groups that name the user as a member
    decide the role (in an admin group: admin; else in a viewer group: viewer; else no
    login). With `url` empty the connection is the phones' directory's ([auth.ldap]: its
    url, bind_template, start_tls, ca_file and timeout); with it set, the keys below."""

    enabled: bool = False
    url: str = ""
    bind_template: str = "{user}"
    start_tls: bool = False
    ca_file: Path | None = None
    timeout: float = field(default=5.0, metadata={"check": positive})
    base_dn: str = ""  # searched (subtree) for the user's entry and the groups
    # Finds the user's entry when bind_template is not a DN ({user}: the name as typed).
    user_filter: str = "(|(uid={user})(sAMAccountName={user}))"
    # The groups that list the user ({dn}: the user's DN). For AD's nested groups:
    # "(member:1.2.840.113556.1.4.1941:={dn})".
    group_filter: str = "(|(member={dn})(uniqueMember={dn})(memberUid={user}))"
    admin_groups: tuple[str, ...] = ()  # group DNs or names (cn)
    viewer_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdminSettings:
    """The Control Panel (listeners.admin): sessions, lockout and request limits."""

    # A session ends after this long without a request, and in any case this long after login.
    session_idle_seconds: float = field(default=30 * 60, metadata={"check": positive})
    session_max_seconds: float = field(default=12 * 3600, metadata={"check": positive})
    # A session's last-seen time is written at most this often (one write, not one a request).
    session_touch_seconds: float = field(default=60, metadata={"check": positive})
    # This many wrong passwords within the window lock the account (and, counted
    # separately, the client address) for lockout_seconds.
    max_failures: int = field(default=5, metadata={"check": positive})
    failure_window_seconds: float = field(default=15 * 60, metadata={"check": positive})
    lockout_seconds: float = field(default=15 * 60, metadata={"check": positive})
    # Request bodies: JSON requests, and package uploads (streamed to disk).
    max_json_bytes: int = field(default=64 * 1024, metadata={"check": positive})
    max_upload_bytes: int = field(default=1024 * 1024 * 1024, metadata={"check": positive})
    # An upload may take this long to arrive (other requests: service.request_timeout).
    upload_timeout_seconds: float = field(default=3600, metadata={"check": positive})
    max_connections: int = field(default=256, metadata={"check": positive})
    # Local accounts (`ucupdates admin add`) may log in; keep them for break-glass when
    # logins come from the directory.
    local_accounts: bool = True
    ldap: AdminLdapSettings = AdminLdapSettings()


_LOOPBACK = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus `/metrics` endpoint (docs/operations.md, Monitoring): on the admin
    listener (HTTPS), or on a plain-HTTP listener of its own at `listen`. Only clients
    in `allowed_networks` (the TCP peer's address; no proxy header counts) may scrape it;
    others get 403. It holds no secrets, user names, MACs or serial numbers."""

    enabled: bool = True
    listen: Address | None = None  # "host:port": its own plain-HTTP listener; "": admin's
    allowed_networks: tuple[Network, ...] = tuple(Network.parse(n) for n in _LOOPBACK)


@dataclass(frozen=True)
class CheckSettings:
    """What `ucupdates check` (a monitoring plugin) reports as WARNING or CRITICAL before
    anything is broken. The certificate warns within `syslog.cert_warn_days`."""

    cert_critical_days: int = field(default=7, metadata={"check": positive})
    # The data folder's file system: WARNING (CRITICAL) when less than this share, or
    # fewer than this many bytes, are free to the service; 0 turns that limit off.
    disk_warning_percent: int = field(default=10, metadata={"check": within(0, 100)})
    disk_critical_percent: int = field(default=5, metadata={"check": within(0, 100)})
    disk_warning_bytes: int = field(default=1024**3, metadata={"check": within(0, 1 << 60)})
    disk_critical_bytes: int = field(default=256 * 1024**2, metadata={"check": within(0, 1 << 60)})
    # WARNING when no phone has checked for updates for this long, once any phone has.
    quiet_warning_hours: float = field(default=24.0, metadata={"check": positive})


@dataclass(frozen=True)
class RolloutSettings:
    """How the next check confirms an offer (docs/rollouts.md): a device still on the old
    version after `stuck_offers` offers or `stuck_hours` is stuck; one offered a version
    that has not checked in for `silent_hours` (its check interval, a day, and some
    slack) is silent. `timer_seconds`: how often staged approvals are looked at (advance,
    pause) and silent devices found."""

    stuck_offers: int = field(default=3, metadata={"check": positive})
    stuck_hours: float = field(default=48.0, metadata={"check": positive})
    silent_hours: float = field(default=26.0, metadata={"check": positive})
    timer_seconds: float = field(default=60.0, metadata={"check": positive})
    # The drift report (docs/rollouts.md): a device with no check for this many days is
    # unseen; the daily summary event at this local time ("" for none) of this zone.
    drift_unseen_days: int = field(default=14, metadata={"check": within(1, 3650)})
    drift_summary_at: str = field(default="06:00", metadata={"check": time_of_day})
    drift_summary_zone: str = field(default="UTC", metadata={"check": time_zone})
