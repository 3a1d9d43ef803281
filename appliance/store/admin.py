"""The Control Panel's tables: admin accounts and their sessions (schema 003).

They are separate from the phone users. Names are unique without regard to case. Times
are ISO strings (UTC, "Z"), compared as text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from appliance.model import AdminAccount, AdminSession, Role
from appliance.store.connection import Connection
from appliance.store.errors import DuplicateError, StoreError

_ADMIN_COLUMNS = (
    "id, name, role, password_hash, created_at, updated_at, failures, first_failure_at,"
    " locked_until, last_login_at"
)
_SESSION_COLUMNS = (
    "token_hash, account_id, csrf_token, created_at, last_seen_at, expires_at, address"
)


class AdminTables(Connection):
    """Admin accounts and sessions."""

    def add_admin_account(self, name: str, role: Role, password_hash: str) -> AdminAccount:
        now = self.now()
        try:
            cur = self._conn.execute(
                "INSERT INTO admin_accounts (name, role, password_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, role.value, password_hash, now, now),
            )
        except sqlite3.IntegrityError:
            raise DuplicateError(f"admin account {name!r} exists already") from None
        found = self.admin_account_by_id(int(cur.lastrowid or 0))
        assert found is not None
        return found

    def admin_account(self, name: str) -> AdminAccount | None:
        row = self._conn.execute(
            f"SELECT {_ADMIN_COLUMNS} FROM admin_accounts WHERE lower(name) = lower(?)",
            (name,),
        ).fetchone()
        return _admin_account(row) if row else None

    def admin_account_by_id(self, account_id: int) -> AdminAccount | None:
        row = self._conn.execute(
            f"SELECT {_ADMIN_COLUMNS} FROM admin_accounts WHERE id = ?", (account_id,)
        ).fetchone()
        return _admin_account(row) if row else None

    def admin_accounts(self) -> list[AdminAccount]:
        rows = self._conn.execute(
            f"SELECT {_ADMIN_COLUMNS} FROM admin_accounts ORDER BY lower(name)"
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
            (role.value, self.now(), name),
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
            f"INSERT INTO admin_sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            f"SELECT {_SESSION_COLUMNS} FROM admin_sessions WHERE token_hash = ?",
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


def _admin_account(row: Sequence[Any]) -> AdminAccount:
    return AdminAccount(row[0], row[1], Role(row[2]), *row[3:])
