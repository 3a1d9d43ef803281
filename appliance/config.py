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


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?"
)


def _domain(text: str) -> str:
    if not _HOSTNAME.fullmatch(text) or "." not in text.strip("."):
        raise ValueError(f"{text!r} is not a DNS domain name")
    return text.strip(".").lower()


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


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("var")
    domains: tuple[str, ...] = field(default=("example.com",), metadata={"check": _domain})
    listeners: Listeners = Listeners()
    imports: ImportSettings = field(default=ImportSettings(), metadata={"key": "import"})
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
        if dataclasses.is_dataclass(hint) and isinstance(hint, type) and hint is not Address:
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
    if hint is Address:
        if not isinstance(value, str):
            raise ValueError('expected a "host:port" string')
        result: Any = Address.parse(value)
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
