"""The one typed configuration object, read once from TOML.

Every key is checked: an unknown key, a value of the wrong type, a bad address or a
missing file is a ConfigError whose one line names the key and the file. The command
line turns it into exit status 78 (EX_CONFIG). With no file, the embedded defaults apply:
data under ./var, domain example.com, listeners on 127.0.0.1 at unprivileged ports.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Union


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


def _domain(text: str) -> str:
    if not _HOSTNAME.fullmatch(text) or "." not in text.strip("."):
        raise ValueError(f"{text!r} is not a DNS domain name")
    return text.strip(".").lower()


def _fqdn(text: str) -> str:
    if not _HOSTNAME.fullmatch(text) or re.fullmatch(r"[\d.]+", text):
        raise ValueError(f"{text!r} is not a host name")
    return text.strip(".").lower()


def _extension(text: str) -> str:
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,16}", text):
        raise ValueError(f"{text!r} is not a file extension like '.clg'")
    return text.lower()


def _within(low: int, high: int) -> Any:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, got {value}")
        return value

    return check


def _positive(value: int | float) -> int | float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


@dataclass(frozen=True)
class Listeners:
    """Where the appliance listens. An empty string turns an optional listener off."""

    dns: Address = Address("127.0.0.1", 5353)
    internal_https: Address = Address("127.0.0.1", 8443)
    internal_http: Address | None = None
    external_https: Address = Address("127.0.0.1", 8444)
    admin: Address = Address("127.0.0.1", 9443)


@dataclass(frozen=True)
class ImportSettings:
    """Limits a package must keep, checked from its header tables before decompressing."""

    max_entries: int = field(default=10_000, metadata={"check": _positive})
    max_total_bytes: int = field(default=8 * 1024**3, metadata={"check": _positive})
    max_ratio: float = field(default=200.0, metadata={"check": _positive})
    max_xml_bytes: int = field(default=1024 * 1024, metadata={"check": _positive})
    # Room kept free on the data folder's file system beyond what an import writes.
    min_free_bytes: int = field(default=64 * 1024 * 1024, metadata={"check": _positive})


class TlsProfile(StrEnum):
    MODERN = "modern"  # TLS 1.2 and 1.3, Mozilla intermediate ciphers
    LPE_LEGACY = "lpe-legacy"  # also TLS 1.0/1.1 with the CBC-SHA suites the phones need


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


@dataclass(frozen=True)
class ServiceSettings:
    """The phone-facing service: what it announces, and the limits on what clients send."""

    # Host and port in BaseURL / ExternalBaseURL; defaults: ucupdates-r2.<first domain> and
    # the internal listener's port; external: the internal FQDN and the external port.
    internal_fqdn: str | None = field(default=None, metadata={"check": _fqdn})
    internal_port: int | None = field(default=None, metadata={"check": _positive})
    external_fqdn: str | None = field(default=None, metadata={"check": _fqdn})
    external_port: int | None = field(default=None, metadata={"check": _positive})
    server_name: str | None = None  # in audit file names; default: the host name
    max_header_bytes: int = field(default=16 * 1024, metadata={"check": _positive})
    max_check_bytes: int = field(default=64 * 1024, metadata={"check": _positive})
    request_timeout: float = field(default=30.0, metadata={"check": _positive})
    idle_timeout: float = field(default=15.0, metadata={"check": _positive})
    max_connections: int = field(default=4096, metadata={"check": _positive})
    max_downloads: int = field(default=256, metadata={"check": _positive})
    retry_after: int = field(default=120, metadata={"check": _positive})
    capture: bool = False  # keep raw unknown or unparsable checks in <data_dir>/capture
    capture_max_files: int = field(default=200, metadata={"check": _positive})


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
    timeout: float = field(default=5.0, metadata={"check": _positive})


class AuthBackend(StrEnum):
    LOCAL = "local"
    LDAP = "ldap"


@dataclass(frozen=True)
class AuthSettings:
    """HTTP Basic for external phones: who may, and how hard guessing is."""

    backend: AuthBackend = AuthBackend.LOCAL
    realm: str = "ucupdates"
    cache_seconds: float = field(default=300.0, metadata={"check": _positive})
    max_failures: int = field(default=5, metadata={"check": _positive})
    failure_window: float = field(default=300.0, metadata={"check": _positive})
    lockout_seconds: float = field(default=900.0, metadata={"check": _positive})
    ldap: LdapSettings = LdapSettings()


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
        metadata={"check": _extension},
    )
    max_file_bytes: int = field(default=1_024_000, metadata={"check": _positive})
    retention_days: float = field(default=10.0, metadata={"check": _positive})


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


@dataclass(frozen=True)
class DnsSettings:
    """The ucupdates-r2 responder (on listeners.dns, UDP and TCP).

    It answers A/AAAA for `ucupdates-r2.<domain>` in every domain of `domains` (and of
    `domains_from`, an ISC dhcpd.conf or Kea JSON file read at start and on reload), with
    the internal address for internal clients and the external one (or REFUSED) for
    others. Every other name goes to `upstreams`, or is REFUSED when there are none.
    """

    internal_address: str | None = field(default=None, metadata={"check": _ip})
    internal_address6: str | None = field(default=None, metadata={"check": _ip})
    external_address: str | None = field(default=None, metadata={"check": _ip})
    external_address6: str | None = field(default=None, metadata={"check": _ip})
    domains_from: Path | None = None
    upstreams: tuple[Address, ...] = ()
    ttl: int = field(default=300, metadata={"check": _positive})
    rrl_responses_per_second: int = field(default=50, metadata={"check": _positive})
    # every Nth dropped answer goes out truncated (TC), 0: never
    rrl_slip: int = field(default=2, metadata={"check": _within(0, 100)})
    max_tcp_connections: int = field(default=256, metadata={"check": _positive})
    tcp_idle_timeout: float = field(default=10.0, metadata={"check": _positive})
    cache_entries: int = field(default=10_000, metadata={"check": _positive})


@dataclass(frozen=True)
class DhcpSettings:
    """The DHCPINFORM responder (like the Lync Registrar's); off by default. It never
    offers or leases addresses: it answers DHCPINFORM from `MS-UC-Client` with options 43
    and 120, and from `CPE-OCPHONE` with the voice VLAN."""

    enabled: bool = False
    listen: Address = Address("0.0.0.0", 67)  # noqa: S104 - DHCP listens on all addresses
    sip_servers: tuple[str, ...] = field(default=(), metadata={"check": _fqdn})
    web_fqdn: str | None = field(default=None, metadata={"check": _fqdn})  # default: internal
    web_port: int = field(default=443, metadata={"check": _positive})
    cert_prov_path: str = "/CertProv/CertProvisioningService.svc"
    voice_vlan: int | None = field(default=None, metadata={"check": _within(1, 4094)})


def _syslog_target(text: str) -> str:
    if text == "local" or re.fullmatch(r"(udp|tcp)://[^/\s]+:\d{1,5}", text):
        return text
    raise ValueError(f'expected "local", "udp://host:port" or "tcp://host:port", got {text!r}')


@dataclass(frozen=True)
class SyslogSettings:
    """Events as RFC 5424 messages with structured data, besides standard error."""

    enabled: bool = False
    target: str = field(default="local", metadata={"check": _syslog_target})  # /dev/log
    app_name: str = "ucupdates"
    facility: int = field(default=16, metadata={"check": _within(0, 23)})  # 16: local0
    hostname: str | None = None  # default: the host name
    cert_warn_days: int = field(default=30, metadata={"check": _positive})


@dataclass(frozen=True)
class AdminSettings:
    """The Control Panel (listeners.admin): sessions, lockout and request limits."""

    # A session ends after this long without a request, and in any case this long after login.
    session_idle_seconds: float = field(default=30 * 60, metadata={"check": _positive})
    session_max_seconds: float = field(default=12 * 3600, metadata={"check": _positive})
    # A session's last-seen time is written at most this often (one write, not one a request).
    session_touch_seconds: float = field(default=60, metadata={"check": _positive})
    # This many wrong passwords within the window lock the account (and, counted
    # separately, the client address) for lockout_seconds.
    max_failures: int = field(default=5, metadata={"check": _positive})
    failure_window_seconds: float = field(default=15 * 60, metadata={"check": _positive})
    lockout_seconds: float = field(default=15 * 60, metadata={"check": _positive})
    # Request bodies: JSON requests, and package uploads (streamed to disk).
    max_json_bytes: int = field(default=64 * 1024, metadata={"check": _positive})
    max_upload_bytes: int = field(default=1024 * 1024 * 1024, metadata={"check": _positive})
    # An upload may take this long to arrive (other requests: service.request_timeout).
    upload_timeout_seconds: float = field(default=3600, metadata={"check": _positive})
    max_connections: int = field(default=256, metadata={"check": _positive})


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("var")
    domains: tuple[str, ...] = field(default=("example.com",), metadata={"check": _domain})
    listeners: Listeners = Listeners()
    imports: ImportSettings = field(default=ImportSettings(), metadata={"key": "import"})
    service: ServiceSettings = ServiceSettings()
    tls: TlsSettings = TlsSettings()
    zones: ZoneSettings = ZoneSettings()
    auth: AuthSettings = AuthSettings()
    device_logs: DeviceLogSettings = DeviceLogSettings()
    dns: DnsSettings = DnsSettings()
    dhcp: DhcpSettings = DhcpSettings()
    syslog: SyslogSettings = SyslogSettings()
    admin: AdminSettings = AdminSettings()
    source: Path | None = field(default=None, metadata={"internal": True})

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ucupdates.sqlite3"

    @property
    def store_dir(self) -> Path:
        """The DeviceUpdateStore: `<DeviceType>/<Brand>/.../<UpdateType>/<file>`."""
        return self.data_dir / "DeviceUpdateStore"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "import.lock"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def logs_dir(self) -> Path:
        """Device logs (`Client/<type>/`) and the daily audit files (`Audit/`)."""
        return self.data_dir / "Logs"

    @property
    def capture_dir(self) -> Path:
        return self.data_dir / "capture"

    @property
    def internal_fqdn(self) -> str:
        return self.service.internal_fqdn or f"ucupdates-r2.{self.domains[0]}"

    @property
    def external_fqdn(self) -> str:
        return self.service.external_fqdn or self.internal_fqdn

    @property
    def internal_port(self) -> int:
        return self.service.internal_port or self.listeners.internal_https.port

    @property
    def external_port(self) -> int:
        return self.service.external_port or self.listeners.external_https.port

    def server_names(self) -> tuple[str, ...]:
        """Every name the phone-facing certificate must carry."""
        names = [f"ucupdates-r2.{d}" for d in self.domains]
        names += [self.internal_fqdn, self.external_fqdn]
        return tuple(dict.fromkeys(names))


def load_config(path: Path | None, data_dir: Path | None = None) -> Config:
    """Read `path` (or the embedded defaults when None); `data_dir` overrides the file's."""
    if path is None:
        config = Config()
    else:
        try:
            with path.open("rb") as f:
                table = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        config = _build(Config, table, path, "")
        relative = (
            config.data_dir if config.data_dir.is_absolute() else path.parent / config.data_dir
        )
        config = dataclasses.replace(config, data_dir=relative, source=path)
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=data_dir)
    return config


def _key_of(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key", f.name))


def _build(cls: type[Any], table: dict[str, Any], path: Path, prefix: str) -> Any:
    fields = {_key_of(f): f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in table:
        if key not in fields:
            raise ConfigError(f"{path}: unknown key '{prefix}{key}'")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, f in fields.items():
        if key in table:
            name = f"{prefix}{key}"
            values[f.name] = _convert(hints[f.name], table[key], f, path, name)
    return cls(**values)


def _convert(hint: Any, value: Any, f: dataclasses.Field[Any], path: Path, name: str) -> Any:
    check = f.metadata.get("check")
    origin = typing.get_origin(hint)
    try:
        if (
            dataclasses.is_dataclass(hint)
            and isinstance(hint, type)
            and hint not in (Address, Network)
        ):
            if not isinstance(value, dict):
                raise ValueError("expected a table")
            return _build(hint, value, path, f"{name}.")
        if origin in (Union, types.UnionType):
            inner = next(a for a in typing.get_args(hint) if a is not type(None))
            if value == "":
                return None
            return _convert(inner, value, f, path, name)
        if origin is tuple:
            if not isinstance(value, list):
                raise ValueError("expected a list")
            item = typing.get_args(hint)[0]
            return tuple(_scalar(item, v, check) for v in value)
        return _scalar(hint, value, check)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: key '{name}': {e}") from None


def _scalar(hint: Any, value: Any, check: Any) -> Any:
    if hint in (Address, Network):
        if not isinstance(value, str):
            form = '"host:port"' if hint is Address else "CIDR network"
            raise ValueError(f"expected a {form} string, got {value!r}")
        result: Any = hint.parse(value)
    elif isinstance(hint, type) and issubclass(hint, Enum):
        choices = ", ".join(repr(m.value) for m in hint)
        if value not in {m.value for m in hint}:
            raise ValueError(f"expected one of {choices}, got {value!r}")
        result = hint(value)
    elif hint is Path:
        if not isinstance(value, str) or not value:
            raise ValueError("expected a path string")
        result = Path(value)
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        result = float(value)
    elif hint in (int, str, bool):
        if type(value) is not hint:
            raise ValueError(f"expected {hint.__name__}, got {value!r}")
        result = value
    else:  # pragma: no cover - a programming error in this module
        raise TypeError(f"unsupported config type {hint!r}")
    return check(result) if check else result
