"""The store: every SQL statement of the appliance lives in this module.

SQLite in WAL mode by default (a PostgreSQL backend will follow, so the SQL stays
portable). The schema is package data (`schema/NNN_name.sql`) applied in order and
recorded in `schema_version`. Callers get typed records, never cursors.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from appliance.model import (
    RULE_KEY_FIELDS,
    AdminAccount,
    AdminSession,
    Catalog,
    Device,
    Event,
    IdentifierKind,
    NewFile,
    Role,
    Rule,
    RuleKey,
    RuleState,
    StoredFile,
    TestDevice,
    UpdateFile,
    User,
)


class StoreError(Exception):
    """The store cannot do what was asked; str() is the line to show."""


class DuplicateError(StoreError):
    """A record with the same identity exists already."""


class SchemaError(StoreError):
    """The database file is not one this version can use."""


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(t: datetime) -> str:
    """The stored form of a time: `2013-04-02T09:30:00Z`."""
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RuleFilter:
    """Which rules a command acts on; every given field must match (case-insensitive)."""

    ids: tuple[int, ...] = ()
    device_type: str | None = None
    brand: str | None = None
    model: str | None = None
    revision: str | None = None
    locale: str | None = None
    update_type: str | None = None
    state: RuleState | None = None
    pending_only: bool = False
    everything: bool = False  # an explicit "all rules", so that no filter is never all

    def is_empty(self) -> bool:
        return self == RuleFilter()


_KEY_COLUMNS = ", ".join(RULE_KEY_FIELDS)
_KEY_MATCH = " AND ".join(f"lower({c}) = lower(?)" for c in RULE_KEY_FIELDS)
_RULE_COLUMNS = (
    f"id, {_KEY_COLUMNS}, approved_version, pending_version, restore_version, state, updated_at"
)
_FILE_COLUMNS = (
    "u.device_type, u.brand, u.model, u.revision, u.locale, u.update_type, u.version, "
    "f.role, f.file_name, f.signature_name, f.path, f.size, f.sha256, u.timestamp"
)


def _key(row: Sequence[Any], start: int = 0) -> RuleKey:
    return RuleKey(*row[start : start + len(RULE_KEY_FIELDS)])


def _rule(row: Sequence[Any]) -> Rule:
    return Rule(
        id=row[0],
        key=_key(row, 1),
        approved_version=row[7],
        pending_version=row[8],
        restore_version=row[9],
        state=RuleState(row[10]),
        updated_at=row[11],
    )


def _stored_file(row: Sequence[Any]) -> StoredFile:
    return StoredFile(
        key=_key(row),
        version=row[6],
        role=row[7],
        file_name=row[8],
        signature_name=row[9],
        path=PurePosixPath(row[10]),
        size=row[11],
        sha256=row[12],
    )


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


class Store:
    """One open database. Use `Store.open(path)`; `":memory:"` works for tests."""

    def __init__(self, conn: sqlite3.Connection, clock: Clock = utc_now) -> None:
        self._conn = conn
        self._clock = clock
        self._in_transaction = False

    @classmethod
    def open(cls, path: Path | str, clock: Clock = utc_now) -> Store:
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
            store._migrate()
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"{path}: cannot open the database: {e}") from e
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self._conn.close()

    def now(self) -> str:
        return iso_utc(self._clock())

    # -- schema -------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        row = self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if row is None:
            return 0
        found = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(found[0] or 0)

    def _migrate(self) -> None:
        scripts = _schema_scripts()
        newest = scripts[-1][0]
        current = self.schema_version
        if current > newest:
            raise SchemaError(
                f"database schema version {current} is newer than this ucupdates knows "
                f"({newest}); upgrade ucupdates"
            )
        for version, sql in scripts:
            if version <= current:
                continue
            self._conn.executescript(
                "BEGIN IMMEDIATE;\n"
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);\n"
                f"{sql}\n"
                f"INSERT INTO schema_version VALUES ({version}, '{self.now()}');\n"
                "COMMIT;"
            )

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
        finally:
            self._in_transaction = False

    def data_version(self) -> int:
        """Changes when another connection commits (SQLite's `PRAGMA data_version`)."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def integrity_errors(self) -> list[str]:
        rows = self._conn.execute("PRAGMA integrity_check").fetchall()
        return [r[0] for r in rows if r[0] != "ok"]

    # -- rules --------------------------------------------------------------------------

    def rules(self, flt: RuleFilter = RuleFilter()) -> list[Rule]:
        where: list[str] = []
        args: list[Any] = []
        if flt.ids:
            where.append(f"id IN ({', '.join('?' * len(flt.ids))})")
            args.extend(flt.ids)
        for column in RULE_KEY_FIELDS:
            value = getattr(flt, column)
            if value is not None:
                where.append(f"lower({column}) = lower(?)")
                args.append(value)
        if flt.state is not None:
            where.append("state = ?")
            args.append(flt.state.value)
        if flt.pending_only:
            where.append("pending_version IS NOT NULL")
        sql = f"SELECT {_RULE_COLUMNS} FROM rules"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {_KEY_COLUMNS}"
        return [_rule(r) for r in self._conn.execute(sql, args)]

    def rule(self, rule_id: int) -> Rule | None:
        row = self._conn.execute(f"SELECT {_RULE_COLUMNS} FROM rules WHERE id = ?", (rule_id,))
        found = row.fetchone()
        return _rule(found) if found else None

    def rule_by_key(self, key: RuleKey) -> Rule | None:
        row = self._conn.execute(
            f"SELECT {_RULE_COLUMNS} FROM rules WHERE {_KEY_MATCH}", astuple_key(key)
        ).fetchone()
        return _rule(row) if row else None

    def insert_rule(self, key: RuleKey, pending_version: str) -> Rule:
        now = self.now()
        cur = self._conn.execute(
            f"INSERT INTO rules ({_KEY_COLUMNS}, pending_version, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*astuple_key(key), pending_version, RuleState.PENDING.value, now, now),
        )
        rule = self.rule(int(cur.lastrowid or 0))
        assert rule is not None
        return rule

    def save_rule(self, rule: Rule) -> Rule:
        """Write a rule's versions and state (its key never changes)."""
        self._conn.execute(
            "UPDATE rules SET approved_version = ?, pending_version = ?, restore_version = ?,"
            " state = ?, updated_at = ? WHERE id = ?",
            (
                rule.approved_version,
                rule.pending_version,
                rule.restore_version,
                rule.state.value,
                self.now(),
                rule.id,
            ),
        )
        saved = self.rule(rule.id)
        if saved is None:
            raise StoreError(f"rule {rule.id} does not exist")
        return saved

    def delete_rule(self, rule_id: int) -> None:
        self._conn.execute("DELETE FROM rules WHERE id = ?", (rule_id,))

    # -- updates and their files --------------------------------------------------------

    def update_files(self, key: RuleKey, version: str) -> list[StoredFile]:
        match = " AND ".join(f"lower(u.{c}) = lower(?)" for c in RULE_KEY_FIELDS)
        rows = self._conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM files f JOIN updates u ON u.id = f.update_id"
            f" WHERE {match} AND u.version = ? ORDER BY f.path",
            (*astuple_key(key), version),
        )
        return [_stored_file(r) for r in rows]

    def has_update(self, key: RuleKey, version: str) -> bool:
        row = self._conn.execute(
            f"SELECT 1 FROM updates WHERE {_KEY_MATCH} AND version = ?",
            (*astuple_key(key), version),
        ).fetchone()
        return row is not None

    def add_update(
        self,
        key: RuleKey,
        version: str,
        timestamp: str | None,
        package_id: int,
        files: Sequence[NewFile],
    ) -> None:
        cur = self._conn.execute(
            f"INSERT INTO updates ({_KEY_COLUMNS}, version, timestamp, package_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*astuple_key(key), version, timestamp, package_id, self.now()),
        )
        update_id = cur.lastrowid
        self._conn.executemany(
            "INSERT INTO files (update_id, role, file_name, signature_name, path, size, sha256)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    update_id,
                    f.role,
                    f.file_name,
                    f.signature_name,
                    f.path.as_posix(),
                    f.size,
                    f.sha256,
                )
                for f in files
            ],
        )

    def delete_update(self, key: RuleKey, version: str) -> None:
        self._conn.execute(
            f"DELETE FROM updates WHERE {_KEY_MATCH} AND version = ?", (*astuple_key(key), version)
        )

    def stored_files(self) -> list[StoredFile]:
        rows = self._conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM files f JOIN updates u ON u.id = f.update_id"
            " ORDER BY f.path"
        )
        return [_stored_file(r) for r in rows]

    def updates(self) -> list[tuple[RuleKey, str]]:
        rows = self._conn.execute(f"SELECT {_KEY_COLUMNS}, version FROM updates")
        return [(_key(r), r[6]) for r in rows]

    # -- packages -----------------------------------------------------------------------

    def add_package(self, name: str, sha256: str, size: int, actor: str) -> int:
        cur = self._conn.execute(
            "INSERT INTO packages (name, sha256, size, imported_at, imported_by)"
            " VALUES (?, ?, ?, ?, ?)",
            (name, sha256, size, self.now(), actor),
        )
        return int(cur.lastrowid or 0)

    def has_package(self, sha256: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM packages WHERE sha256 = ?", (sha256,))
        return row.fetchone() is not None

    # -- test devices -------------------------------------------------------------------

    def add_test_device(
        self, name: str, kind: IdentifierKind, identifier: str, scope: str = "global"
    ) -> TestDevice:
        try:
            cur = self._conn.execute(
                "INSERT INTO test_devices (name, kind, identifier, scope, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, kind.value, identifier, scope, self.now()),
            )
        except sqlite3.IntegrityError:
            raise DuplicateError(
                f"a test device with {kind.value} {identifier} exists already"
            ) from None
        found = self.test_device(int(cur.lastrowid or 0))
        assert found is not None
        return found

    def test_devices(self) -> list[TestDevice]:
        rows = self._conn.execute(
            "SELECT id, name, kind, identifier, scope, created_at FROM test_devices"
            " ORDER BY name, identifier"
        )
        return [_test_device(r) for r in rows]

    def test_device(self, device_id: int) -> TestDevice | None:
        row = self._conn.execute(
            "SELECT id, name, kind, identifier, scope, created_at FROM test_devices WHERE id = ?",
            (device_id,),
        ).fetchone()
        return _test_device(row) if row else None

    def remove_test_device(self, device_id: int) -> None:
        self._conn.execute("DELETE FROM test_devices WHERE id = ?", (device_id,))

    # -- the device inventory -----------------------------------------------------------

    def record_device(self, device: Device) -> None:
        """Insert or refresh a device; first_seen is kept from the first sighting."""
        self._conn.execute(
            "INSERT INTO devices (identity, mac, serial, device_type, brand, model, revision,"
            " locale, version, zone, address, user_id, first_seen, last_seen)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (identity) DO UPDATE SET mac = excluded.mac, serial = excluded.serial,"
            " device_type = excluded.device_type, brand = excluded.brand,"
            " model = excluded.model, revision = excluded.revision, locale = excluded.locale,"
            " version = excluded.version, zone = excluded.zone, address = excluded.address,"
            " user_id = excluded.user_id, last_seen = excluded.last_seen",
            (
                device.identity,
                device.mac,
                device.serial,
                device.device_type,
                device.brand,
                device.model,
                device.revision,
                device.locale,
                device.version,
                device.zone,
                device.address,
                device.user_id,
                device.first_seen,
                device.last_seen,
            ),
        )

    def devices(self) -> list[Device]:
        rows = self._conn.execute(
            "SELECT identity, mac, serial, device_type, brand, model, revision, locale, version,"
            " zone, address, user_id, first_seen, last_seen FROM devices ORDER BY identity"
        )
        return [Device(*r) for r in rows]

    # -- the event log ------------------------------------------------------------------

    def append_event(
        self, actor: str, action: str, target: str, before: Any = None, after: Any = None
    ) -> None:
        self._conn.execute(
            "INSERT INTO events (at, actor, action, target, before, after)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (self.now(), actor, action, target, _json(before), _json(after)),
        )

    def events(self, limit: int = 100) -> list[Event]:
        rows = self._conn.execute(
            "SELECT id, at, actor, action, target, before, after FROM events"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [Event(r[0], r[1], r[2], r[3], r[4], _unjson(r[5]), _unjson(r[6])) for r in rows]

    # -- phone users --------------------------------------------------------------------
    # Names are unique and matched without regard to case (SQL lower(): ASCII letters only).

    def add_user(self, name: str, password_hash: str) -> User:
        now = self.now()
        try:
            cur = self._conn.execute(
                "INSERT INTO users (name, password_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, ?)",
                (name, password_hash, now, now),
            )
        except sqlite3.IntegrityError:
            raise DuplicateError(f"user {name!r} exists already") from None
        row = self._conn.execute(
            "SELECT id, name, password_hash, created_at, updated_at, disabled FROM users"
            " WHERE id = ?",
            (cur.lastrowid,),
        ).fetchone()
        return self._user_of(row)

    def set_user_password(self, name: str, password_hash: str) -> None:
        cur = self._conn.execute(
            "UPDATE users SET password_hash = ?, updated_at = ? WHERE lower(name) = lower(?)",
            (password_hash, self.now(), name),
        )
        if cur.rowcount == 0:
            raise StoreError(f"no user {name!r}")

    def set_user_disabled(self, name: str, disabled: bool) -> None:
        cur = self._conn.execute(
            "UPDATE users SET disabled = ?, updated_at = ? WHERE lower(name) = lower(?)",
            (int(disabled), self.now(), name),
        )
        if cur.rowcount == 0:
            raise StoreError(f"no user {name!r}")

    def remove_user(self, name: str) -> None:
        cur = self._conn.execute("DELETE FROM users WHERE lower(name) = lower(?)", (name,))
        if cur.rowcount == 0:
            raise StoreError(f"no user {name!r}")

    def users(self) -> list[User]:
        rows = self._conn.execute(
            "SELECT id, name, password_hash, created_at, updated_at, disabled FROM users"
            " ORDER BY lower(name)"
        )
        return [self._user_of(r) for r in rows]

    def user(self, name: str) -> User | None:
        row = self._conn.execute(
            "SELECT id, name, password_hash, created_at, updated_at, disabled FROM users"
            " WHERE lower(name) = lower(?)",
            (name,),
        ).fetchone()
        return self._user_of(row) if row else None

    @staticmethod
    def _user_of(row: Sequence[Any]) -> User:
        return User(row[0], row[1], row[2], row[3], row[4], bool(row[5]))

    # -- end of phone users -------------------------------------------------------------

    # -- what the decision reads --------------------------------------------------------

    def catalog(self) -> Catalog:
        images = [
            UpdateFile(
                key=_key(r),
                version=r[6],
                file_name=r[8],
                signature_file_name=r[9],
                size=r[11],
                sha256=r[12],
                timestamp=r[13],
                path=PurePosixPath(r[10]),
            )
            for r in self._conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files f JOIN updates u ON u.id = f.update_id"
                " WHERE f.role = 'image'"
            )
        ]
        macs: set[str] = set()
        serials: set[str] = set()
        for kind, identifier in self._conn.execute("SELECT kind, identifier FROM test_devices"):
            (macs if kind == IdentifierKind.MAC.value else serials).add(identifier)
        return Catalog(
            rules=tuple(self.rules()),
            files=tuple(images),
            test_macs=frozenset(macs),
            test_serials=frozenset(serials),
        )

    # -- admin accounts and sessions ----------------------------------------------------
    # The Control Panel's accounts (schema 003), separate from the phone users. Names are
    # unique without regard to case. Times are ISO strings (UTC, "Z"), compared as text.

    _ADMIN_COLUMNS = (
        "id, name, role, password_hash, created_at, updated_at, failures, first_failure_at,"
        " locked_until, last_login_at"
    )
    _SESSION_COLUMNS = (
        "token_hash, account_id, csrf_token, created_at, last_seen_at, expires_at, address"
    )

    def add_admin_account(self, name: str, role: Role, password_hash: str) -> AdminAccount:
        now = self.now()
        try:
            cur = self._conn.execute(
                "INSERT INTO admin_accounts (name, role, password_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, role, password_hash, now, now),
            )
        except sqlite3.IntegrityError:
            raise DuplicateError(f"admin account {name!r} exists already") from None
        found = self.admin_account_by_id(int(cur.lastrowid or 0))
        assert found is not None
        return found

    def admin_account(self, name: str) -> AdminAccount | None:
        row = self._conn.execute(
            f"SELECT {self._ADMIN_COLUMNS} FROM admin_accounts WHERE lower(name) = lower(?)",
            (name,),
        ).fetchone()
        return _admin_account(row) if row else None

    def admin_account_by_id(self, account_id: int) -> AdminAccount | None:
        row = self._conn.execute(
            f"SELECT {self._ADMIN_COLUMNS} FROM admin_accounts WHERE id = ?", (account_id,)
        ).fetchone()
        return _admin_account(row) if row else None

    def admin_accounts(self) -> list[AdminAccount]:
        rows = self._conn.execute(
            f"SELECT {self._ADMIN_COLUMNS} FROM admin_accounts ORDER BY lower(name)"
        )
        return [_admin_account(r) for r in rows]

    def set_admin_password(self, name: str, password_hash: str) -> None:
        """A new password; it also clears the failure count and any lockout."""
        cur = self._conn.execute(
            "UPDATE admin_accounts SET password_hash = ?, updated_at = ?, failures = 0,"
            " first_failure_at = NULL, locked_until = NULL WHERE lower(name) = lower(?)",
            (password_hash, self.now(), name),
        )
        if cur.rowcount == 0:
            raise StoreError(f"no admin account {name!r}")

    def set_admin_role(self, name: str, role: Role) -> None:
        cur = self._conn.execute(
            "UPDATE admin_accounts SET role = ?, updated_at = ? WHERE lower(name) = lower(?)",
            (role, self.now(), name),
        )
        if cur.rowcount == 0:
            raise StoreError(f"no admin account {name!r}")

    def remove_admin_account(self, name: str) -> None:
        cur = self._conn.execute("DELETE FROM admin_accounts WHERE lower(name) = lower(?)", (name,))
        if cur.rowcount == 0:
            raise StoreError(f"no admin account {name!r}")

    def set_admin_failures(
        self, account_id: int, failures: int, first_failure_at: str | None, locked_until: str | None
    ) -> None:
        self._conn.execute(
            "UPDATE admin_accounts SET failures = ?, first_failure_at = ?, locked_until = ?"
            " WHERE id = ?",
            (failures, first_failure_at, locked_until, account_id),
        )

    def record_admin_login(self, account_id: int, at: str) -> None:
        """A successful login: clears the failure count and any lockout."""
        self._conn.execute(
            "UPDATE admin_accounts SET failures = 0, first_failure_at = NULL,"
            " locked_until = NULL, last_login_at = ? WHERE id = ?",
            (at, account_id),
        )

    def add_admin_session(self, session: AdminSession) -> None:
        self._conn.execute(
            f"INSERT INTO admin_sessions ({self._SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                session.token_hash,
                session.account_id,
                session.csrf_token,
                session.created_at,
                session.last_seen_at,
                session.expires_at,
                session.address,
            ),
        )

    def admin_session(self, token_hash: str) -> AdminSession | None:
        row = self._conn.execute(
            f"SELECT {self._SESSION_COLUMNS} FROM admin_sessions WHERE token_hash = ?",
            (token_hash,),
        ).fetchone()
        return AdminSession(*row) if row else None

    def touch_admin_session(self, token_hash: str, at: str) -> None:
        self._conn.execute(
            "UPDATE admin_sessions SET last_seen_at = ? WHERE token_hash = ?", (at, token_hash)
        )

    def remove_admin_session(self, token_hash: str) -> None:
        self._conn.execute("DELETE FROM admin_sessions WHERE token_hash = ?", (token_hash,))

    def remove_admin_sessions_of(self, account_id: int) -> int:
        cur = self._conn.execute("DELETE FROM admin_sessions WHERE account_id = ?", (account_id,))
        return cur.rowcount

    def remove_expired_admin_sessions(self, now: str, idle_before: str) -> int:
        """Delete sessions past their absolute expiry or last seen before `idle_before`."""
        cur = self._conn.execute(
            "DELETE FROM admin_sessions WHERE expires_at <= ? OR last_seen_at < ?",
            (now, idle_before),
        )
        return cur.rowcount

    # -- end of admin accounts and sessions ----------------------------------------------


def astuple_key(key: RuleKey) -> tuple[str, ...]:
    return tuple(getattr(key, c) for c in RULE_KEY_FIELDS)


def _admin_account(row: Sequence[Any]) -> AdminAccount:
    return AdminAccount(row[0], row[1], Role(row[2]), *row[3:])


def _test_device(row: Sequence[Any]) -> TestDevice:
    return TestDevice(row[0], row[1], IdentifierKind(row[2]), row[3], row[4], row[5])


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _unjson(text: str | None) -> Any:
    return None if text is None else json.loads(text)
