"""The store: one open database, its schema and its upgrades.

Every SQL statement of the appliance lives in this package, one module per table group
(`catalogue`, `devices`, `admin`); `Store` composes them. SQLite in WAL mode by default;
PostgreSQL through `Store.open_postgresql` runs the same SQL through the adapter of
`store.pgsql` and the schema through `store.dialect`. The schema is package data
(`schema/NNN_name.sql`) applied in order and recorded in `schema_version`. Callers get
typed records, never cursors.

The database holds password hashes (argon2id, and NT hashes that are password-equivalent):
it is created 0600 whatever the process umask, and SQLite gives its `-wal` and `-shm`
files the database's mode. An existing database (and its `-wal`/`-shm`) loses any
permission for others when opened.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from importlib import resources
from pathlib import Path

from appliance.store.admin import AdminTables
from appliance.store.blobs import BlobTables
from appliance.store.branch_state import PoolState
from appliance.store.catalogue import CatalogueTables
from appliance.store.connection import Clock, count_catalogue_change, utc_now
from appliance.store.devices import DeviceTables
from appliance.store.dialect import to_postgresql
from appliance.store.errors import SchemaError, StoreError
from appliance.store.offers import OfferTables
from appliance.store.pool import PoolTables
from appliance.store.rollouts import SALT, RolloutTables, new_salt

# What a schema version sets besides its script, in the same transaction: values portable
# SQL cannot make (a random salt).
_AFTER: dict[int, Callable[[], str]] = {
    7: lambda: f"INSERT INTO rollout_settings VALUES ('{SALT}', '{new_salt()}');\n",
}


def _schema_scripts() -> list[tuple[int, str]]:
    scripts = []
    for entry in resources.files("appliance.store").joinpath("schema").iterdir():
        m = re.match(r"(\d{3})_\w+\.sql$", entry.name)
        if m:
            scripts.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(scripts)


def newest_schema_version() -> int:
    """The newest schema this version knows (the numbered scripts in `schema/`)."""
    return _schema_scripts()[-1][0]


DATABASE_MODE = 0o600
BACKUPS = "backups"  # beside the database: the copies taken before a schema upgrade


def _private_files(path: Path) -> None:
    """Create the database file 0600 if missing (SQLite would make it 0644 under umask
    022); take every permission for others off an existing one and its -wal and -shm.

    An existing file is never opened here: closing any descriptor of a file drops every
    POSIX lock this process holds on it, SQLite's included, so another connection of the
    same process (the import thread's, say) would lose its locks ("disk I/O error").
    """
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DATABASE_MODE))
    except FileExistsError:
        pass
    except OSError as e:
        raise StoreError(f"{path}: cannot open the database: {e.strerror}") from e
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = name.stat().st_mode & 0o777
            if mode & 0o007:
                os.chmod(name, mode & ~0o007)
        except OSError:
            continue  # not there (or not ours to change): SQLite reports what matters


class Store(
    CatalogueTables,
    DeviceTables,
    AdminTables,
    RolloutTables,
    OfferTables,
    BlobTables,
    PoolTables,
):
    """One open database. Use `Store.open(path)`; `":memory:"` works for tests."""

    @classmethod
    def open(cls, path: Path | str, clock: Clock = utc_now, upgrade: bool = True) -> Store:
        """Open (creating) the database and bring its schema to the newest, after a backup.
        `upgrade=False` (monitoring, which must not change what a running older service
        reads) refuses an older schema with SchemaError instead of upgrading it."""
        if str(path) != ":memory:":
            _private_files(Path(path))
        try:
            conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
            conn.execute("PRAGMA foreign_keys = ON")
            if str(path) != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: cannot open the database: {e}") from e
        store = cls(conn, clock)
        try:
            store._migrate(None if str(path) == ":memory:" else Path(path), upgrade)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"{path}: cannot open the database: {e}") from e
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def open_postgresql(
        cls, dsn: str, pool_size: int = 4, clock: Clock = utc_now, upgrade: bool = True
    ) -> Store:
        """Connect to the PostgreSQL database `dsn` and bring its schema to the newest
        (under an advisory lock: two nodes never upgrade at once). The connection string
        is never part of a message. No backup is taken before an upgrade: PostgreSQL's
        own tools back it up (docs/pool.md)."""
        from appliance.store.pgsql import PgConnection  # psycopg only when it is used

        conn = PgConnection.open(dsn, pool_size)
        store = cls(conn, clock)
        store.backend = "postgresql"
        try:
            store._migrate(None, upgrade)
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def open_copy(cls, path: Path) -> Store:
        """A copy of a database made by `backup_to`, read only as it is: never upgraded,
        nothing written beside it."""
        try:
            conn = sqlite3.connect(_read_only_uri(path), uri=True, isolation_level=None)
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: cannot open the database: {e}") from e
        return cls(conn)

    def close(self) -> None:
        self._conn.close()

    upgrade_backup: Path | None = None  # the copy taken before this open upgraded the schema

    def backup_to(self, target: Path) -> None:
        """A consistent copy of the whole database in a new file `target` (0600, fsynced),
        through SQLite's online backup API: other connections and processes go on reading
        and writing meanwhile. Raises OSError (the file) or sqlite3.Error (the copy)."""
        copy_database(self._sqlite(), target)

    def _sqlite(self) -> sqlite3.Connection:
        """The SQLite connection, for what only SQLite has (a backup copy, a script)."""
        if not isinstance(self._conn, sqlite3.Connection):
            raise StoreError("not on the PostgreSQL store: back it up with pg_dump")
        return self._conn

    # -- schema -------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        if self.backend == "postgresql":
            row = self._conn.execute("SELECT to_regclass('schema_version')").fetchone()
            row = None if row is None or row[0] is None else row
        else:
            row = self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
        if row is None:
            return 0
        found = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(found[0] or 0)

    def _migrate(self, path: Path | None, upgrade: bool = True) -> None:
        if self.backend != "postgresql":
            self._upgrade(path, upgrade)
            return
        from appliance.store import pgchanges
        from appliance.store.pgsql import SCHEMA_LOCK, PgConnection

        assert isinstance(self._conn, PgConnection)
        with self._conn.pinned():  # the session lock and its unlock on one connection
            self._conn.execute("SELECT pg_advisory_lock(?)", (SCHEMA_LOCK,))
            try:
                self._upgrade(None, upgrade)
                pgchanges.install(self._conn)  # the catalogue version's row and triggers
            finally:
                self._conn.execute("SELECT pg_advisory_unlock(?)", (SCHEMA_LOCK,))

    def _upgrade(self, path: Path | None, upgrade: bool) -> None:
        scripts = _schema_scripts()
        newest = scripts[-1][0]
        current = self.schema_version
        if current > newest:
            raise SchemaError(
                f"database schema version {current} is newer than this ucupdates knows "
                f"({newest}); upgrade ucupdates"
            )
        if not upgrade and 0 < current < newest:
            raise SchemaError(
                f"database schema version {current} is older than this ucupdates's "
                f"({newest}): the installed version has not run yet; restarting the "
                "service upgrades it, after a backup"
            )
        if path is not None and 0 < current < newest:
            self.upgrade_backup = self._backup_before_upgrade(path, current, newest)
        for version, sql in scripts:
            if version <= current:
                continue
            body = (
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);\n"
                f"{sql}\n"
                f"INSERT INTO schema_version VALUES ({version}, '{self.now()}');\n"
                f"{_AFTER[version]() if version in _AFTER else ''}"
            )
            if self.backend == "postgresql":
                from appliance.store.pgsql import PgConnection

                assert isinstance(self._conn, PgConnection)
                self._conn.script(f"BEGIN;\n{to_postgresql(body)}\nCOMMIT;")
            else:
                self._sqlite().executescript(f"BEGIN IMMEDIATE;\n{body}COMMIT;")

    def _backup_before_upgrade(self, path: Path, current: int, newest: int) -> Path:
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        folder = path.parent / BACKUPS
        target = folder / f"pre-upgrade-{current}-to-{newest}-{stamp}.db"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            copy_database(self._sqlite(), target)
        except (OSError, sqlite3.Error) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise SchemaError(
                f"{path}: the schema needs upgrading from version {current} to {newest}, "
                f"and the database is backed up first, but {target} cannot be written "
                f"({reason}); nothing was upgraded: make room or fix the folder, then "
                "start again"
            ) from e
        return target

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE): everything inside lands or nothing does."""
        if self._in_transaction:
            raise StoreError("nested transactions are not supported")
        self._conn.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")
            if self._catalogue_written:
                count_catalogue_change()
        finally:
            self._in_transaction = False
            self._catalogue_written = False

    def data_version(self) -> int:
        """Changes when another connection commits (SQLite's `PRAGMA data_version`); on
        PostgreSQL when any node commits a catalogue change (the counter row every
        catalogue write moves)."""
        if self.backend == "postgresql":
            return int(self._conn.execute("SELECT version FROM catalogue_version").fetchone()[0])
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def pool_state(self) -> PoolState | None:
        """A branch node's pool: its primary reachable, what waits in its spool, its
        replica's lag (store.split; a query of the replica: off the reactor). None for
        any other store."""
        if self.backend != "postgresql":
            return None
        from appliance.store.split import pool_state

        return pool_state(self)

    def integrity_errors(self) -> list[str]:
        """What SQLite's integrity check finds wrong (empty: nothing). PostgreSQL has no
        such check of a whole database: its pages are checksummed by the server, and the
        constraints hold on every write, so the list is empty there."""
        if self.backend == "postgresql":
            return []
        rows = self._conn.execute("PRAGMA integrity_check").fetchall()
        return [r[0] for r in rows if r[0] != "ok"]


def copy_database(conn: sqlite3.Connection, target: Path) -> None:
    """Copy the database of `conn` into a new file `target`: created 0600 (it holds password
    hashes), written in one step of the backup API (a consistent snapshot, which does not
    block writers in WAL mode), fsynced. A failure removes `target`."""
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DATABASE_MODE)
    os.close(fd)  # a new file of our own: no other connection holds a lock on it
    try:
        copy = sqlite3.connect(str(target), isolation_level=None)
        try:
            conn.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")  # one file, no -wal beside it
        finally:
            copy.close()
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        for name in (target, Path(f"{target}-journal"), Path(f"{target}-wal")):
            name.unlink(missing_ok=True)
        raise


def _read_only_uri(path: Path) -> str:
    """A private file nobody writes: read without locks, and no -wal or -shm made."""
    return f"{path.resolve().as_uri()}?mode=ro&immutable=1"


def inspect_database(path: Path) -> tuple[int, list[str]]:
    """The schema version of the database file `path` and what SQLite's quick check
    finds wrong in it (empty: nothing), read without changing the file."""
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreError(f"{path}: cannot open the database: {e}") from e
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall() if r[0] != "ok"]
        row = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        version = 0
        if row is not None:
            found = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            version = int(found[0] or 0)
        return version, problems
    except sqlite3.Error as e:
        raise StoreError(f"{path}: not a database this version can read: {e}") from e
    finally:
        conn.close()
