"""The Config object and load_config: the TOML file read once, every key checked.

Every key is checked: an unknown key, a value of the wrong type, a bad address or a
missing file is a ConfigError whose one line names the key and the file. The command
line turns it into exit status 78 (EX_CONFIG). With no file, the embedded defaults apply:
data under ./var, domain example.com, listeners on 127.0.0.1 at unprivileged ports.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Union

from appliance.config.store import StoreSettings
from appliance.config.tables import (
    AdminSettings,
    AuthSettings,
    CheckSettings,
    DeviceLogSettings,
    DhcpSettings,
    DnsSettings,
    ImportSettings,
    Listeners,
    MetricsSettings,
    RolloutSettings,
    ServiceSettings,
    SyslogSettings,
    TlsSettings,
    UrlScheme,
    ZoneSettings,
)
from appliance.config.values import Address, ConfigError, Network, domain


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("var")
    domains: tuple[str, ...] = field(default=("example.com",), metadata={"check": domain})
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
    metrics: MetricsSettings = MetricsSettings()
    check: CheckSettings = CheckSettings()
    rollouts: RolloutSettings = RolloutSettings()
    store: StoreSettings = StoreSettings()
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
        first = self.dns.names[0] if self.dns.names else "ucupdates-r2"
        return self.service.internal_fqdn or f"{first}.{self.domains[0]}"

    @property
    def external_fqdn(self) -> str:
        return self.service.external_fqdn or self.internal_fqdn

    @property
    def internal_scheme(self) -> UrlScheme:
        """BaseURL's scheme: as configured, else http while the plain listener is on."""
        if self.service.internal_scheme is not None:
            return self.service.internal_scheme
        plain = self.listeners.internal_http is not None
        return UrlScheme.HTTP if plain else UrlScheme.HTTPS

    @property
    def internal_port(self) -> int:
        """BaseURL's port: as configured, else that of the internal listener of its scheme
        (80 for http with the plain listener off: a proxy in front serves it)."""
        if self.service.internal_port:
            return self.service.internal_port
        if self.internal_scheme is UrlScheme.HTTPS:
            return self.listeners.internal_https.port
        return self.listeners.internal_http.port if self.listeners.internal_http else 80

    @property
    def external_port(self) -> int:
        return self.service.external_port or self.listeners.external_https.port

    def server_names(self) -> tuple[str, ...]:
        """Every name the phone-facing certificate must carry: each discovery name
        (`dns.names`) in each domain, then the internal and external FQDNs."""
        names = [f"{n}.{d}" for d in self.domains for n in self.dns.names]
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
