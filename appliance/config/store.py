"""`[store]`: which database the appliance keeps its catalogue in (docs/pool.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from appliance.config.values import ConfigError, within


class StoreBackend(StrEnum):
    SQLITE = "sqlite"  # the embedded default: <data_dir>/ucupdates.sqlite3
    POSTGRESQL = "postgresql"  # pool mode (docs/pool.md): not usable by serve yet


@dataclass(frozen=True)
class StoreSettings:
    """The store's backend. For PostgreSQL the connection string (libpq's `key=value` or
    `postgresql://` form) comes from exactly one of `dsn`, `dsn_file` (a file holding it,
    readable by the service only) or `dsn_env` (the name of an environment variable
    holding it), so its password need not be in this file; it is never logged or shown.
    `pool_size`: at most this many connections to the server per process."""

    backend: StoreBackend = StoreBackend.SQLITE
    dsn: str = field(default="", repr=False)
    dsn_file: Path | None = None
    dsn_env: str = ""
    pool_size: int = field(default=4, metadata={"check": within(1, 100)})

    def connection_string(self, environ: Mapping[str, str]) -> str:
        """The PostgreSQL connection string from where the settings say; ConfigError
        (which never quotes it) when none or several are set, or it cannot be read."""
        given = [k for k in ("dsn", "dsn_file", "dsn_env") if getattr(self, k)]
        if len(given) != 1:
            raise ConfigError(
                'store.backend "postgresql" needs exactly one of store.dsn, '
                f"store.dsn_file and store.dsn_env (set: {', '.join(given) or 'none'})"
            )
        if self.dsn_file is not None:
            try:
                text = self.dsn_file.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ConfigError(f"store.dsn_file {self.dsn_file}: {e.strerror}") from None
        elif self.dsn_env:
            text = environ.get(self.dsn_env, "").strip()
        else:
            text = self.dsn.strip()
        if not text:
            raise ConfigError(f"store.{given[0]}: the connection string is empty")
        return text
