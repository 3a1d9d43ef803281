"""The store the configuration names: SQLite in the data folder, or PostgreSQL (pool mode).

Every command, `serve` and each opener on a thread of its own (the phone users' directory,
NTLM, the monitoring plugin) opens the store through `open_configured`, so none of them
knows which backend it talks to (docs/pool.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from appliance.config import StoreBackend, StoreSettings
from appliance.store.connection import Clock, utc_now
from appliance.store.database import Store


def open_configured(
    settings: StoreSettings,
    db_path: Path,
    clock: Clock = utc_now,
    upgrade: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Store:
    """The configured store: SQLite at `db_path` (the default), or the PostgreSQL database
    of `settings`' connection string (from `dsn`, `dsn_file`, read at each open, or the
    environment variable `dsn_env`), with at most `pool_size` connections. `upgrade=False`
    refuses an older schema (SchemaError) instead of upgrading it. Raises StoreError (one
    line, never the connection string) and ConfigError (the connection string's settings).
    On PostgreSQL the store may be used from any thread (not from a guarded one:
    `store.guard`), so a process needs only one."""
    if settings.backend is StoreBackend.POSTGRESQL:
        env = os.environ if environ is None else environ
        dsn = settings.connection_string(env)
        primary = settings.primary_connection_string(env)
        if primary is not None:  # a branch node: `dsn` is its replica (store.split)
            from appliance.store.split import open_branch  # psycopg only when it is used

            spool = settings.spool_path(db_path.parent)
            return open_branch(
                dsn, primary, settings.pool_size, spool, settings.spool_limit, clock, upgrade
            )
        return Store.open_postgresql(dsn, settings.pool_size, clock=clock, upgrade=upgrade)
    return Store.open(db_path, clock=clock, upgrade=upgrade)
