"""`[store]`: which database the appliance keeps its catalogue in (docs/pool.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from appliance.config.values import ConfigError, within


class StoreBackend(StrEnum):
    SQLITE = "sqlite"  # the embedded default: <data_dir>/ucupdates.sqlite3
    POSTGRESQL = "postgresql"  # pool mode (docs/pool.md)


@dataclass(frozen=True)
class StoreSettings:
    """The store's backend. For PostgreSQL the connection string (libpq's `key=value` or
    `postgresql://` form) comes from exactly one of `dsn`, `dsn_file` (a file holding it,
    readable by the service only) or `dsn_env` (the name of an environment variable
    holding it), so its password need not be in this file; it is never logged or shown.
    `pool_size`: at most this many connections to the server per process. With a
    `primary_dsn*` the node is a branch node (docs/pool.md): it reads the hot standby
    `dsn` names and writes to the primary, buffering in `spool` what the primary cannot
    take while it is unreachable."""

    backend: StoreBackend = StoreBackend.SQLITE
    dsn: str = field(default="", repr=False)
    dsn_file: Path | None = None
    dsn_env: str = ""
    pool_size: int = field(default=4, metadata={"check": within(1, 100)})
    # A branch node (docs/pool.md): `dsn` names its local hot standby, and its writes go to
    # the primary named by exactly one of these (as secret as `dsn`).
    primary_dsn: str = field(default="", repr=False)
    primary_dsn_file: Path | None = None
    primary_dsn_env: str = ""
    # A branch node's buffer of what the primary could not take (<data_dir>/spool.db when
    # not set), and at most this many records in it.
    spool: Path | None = None
    spool_limit: int = field(default=200_000, metadata={"check": within(100, 10_000_000)})

    def __post_init__(self) -> None:
        given = self._primary_keys()
        if given and self.backend != StoreBackend.POSTGRESQL:
            raise ValueError(
                f"store.{given[0]} makes this node a branch node of a PostgreSQL pool: it "
                'needs store.backend = "postgresql" (with store.dsn naming the local replica)'
            )
        if len(given) > 1:
            raise ValueError(
                "a branch node needs exactly one of store.primary_dsn, store.primary_dsn_file "
                f"and store.primary_dsn_env (set: {', '.join(given)})"
            )

    def _primary_keys(self) -> list[str]:
        keys = ("primary_dsn", "primary_dsn_file", "primary_dsn_env")
        return [k for k in keys if getattr(self, k)]

    @property
    def branch(self) -> bool:
        """Whether this node is a branch node: it reads a replica, writes to a primary."""
        return bool(self._primary_keys())

    def spool_path(self, data_dir: Path) -> Path:
        """Where a branch node buffers what the primary could not take."""
        return self.spool if self.spool is not None else data_dir / "spool.db"

    def connection_string(self, environ: Mapping[str, str]) -> str:
        """The PostgreSQL connection string from where the settings say; ConfigError
        (which never quotes it) when none or several are set, or it cannot be read."""
        return _connection_string(self, "", environ)

    def primary_connection_string(self, environ: Mapping[str, str]) -> str | None:
        """A branch node's connection string to the primary (None: not a branch node),
        read as `connection_string` is."""
        return _connection_string(self, "primary_", environ) if self.branch else None


def _connection_string(settings: StoreSettings, prefix: str, environ: Mapping[str, str]) -> str:
    keys = (f"{prefix}dsn", f"{prefix}dsn_file", f"{prefix}dsn_env")
    given = [k for k in keys if getattr(settings, k)]
    if len(given) != 1:
        raise ConfigError(
            'store.backend "postgresql" needs exactly one of '
            f"store.{keys[0]}, store.{keys[1]} and store.{keys[2]} "
            f"(set: {', '.join(given) or 'none'})"
        )
    value = getattr(settings, given[0])
    if isinstance(value, Path):
        try:
            text = value.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"store.{given[0]} {value}: {e.strerror}") from None
    elif given[0].endswith("_env"):
        text = environ.get(value, "").strip()
    else:
        text = value.strip()
    if not text:
        raise ConfigError(f"store.{given[0]}: the connection string is empty")
    return text
