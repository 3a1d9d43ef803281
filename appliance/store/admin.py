"""The Control Panel's tables: admin accounts and their sessions (schema 003), API tokens
(schema 006).

They are separate from the phone users. Names are unique without regard to case. Times
are ISO strings (UTC, "Z"), compared as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from appliance.model import AdminAccount, AdminSession, ApiToken, Role
from appliance.store.connection import INTEGRITY_ERRORS, Connection
from appliance.store.errors import DuplicateError, StoreError

_ADMIN_COLUMNS = (
    "id, name, role, password_hash, created_at, updated_at, failures, first_failure_at,"
    " locked_until, last_login_at"
)
_SESSION_COLUMNS = (
    "token_hash, account_id, csrf_token, created_at, last_seen_at, expires_at, address"
)

_API_TOKEN_COLUMNS = "id, name, role, token_hash, created_at, expires_at, last_used_at"  # noqa: S105


class AdminTables(Connection):
    """Admin accounts and sessions, API tokens."""

    def add_admin_account(self, name: str, role: Role, password_hash: str) -> AdminAccount:
        now = self.now()
        try:
            cur = self._conn.execute(
                "INSERT INTO admin_accounts (name, role, password_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, role.value, password_hash, now, now),
            )
        except INTEGRITY_ERRORS:
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

    # -- API tokens ------------------------------------------------------------------------

    def add_api_token(
        self, name: str, role: Role, token_hash: str, expires_at: str | None
    ) -> ApiToken:
        try:
            cur = self._conn.execute(
                "INSERT INTO api_tokens (name, role, token_hash, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, role.value, token_hash, self.now(), expires_at),
            )
        except INTEGRITY_ERRORS:
            raise DuplicateError(f"an API token named {name!r} exists already") from None
        row = self._conn.execute(
            f"SELECT {_API_TOKEN_COLUMNS} FROM api_tokens WHERE id = ?", (cur.lastrowid,)
        ).fetchone()
        return _api_token(row)

    def api_token(self, name: str) -> ApiToken | None:
        row = self._conn.execute(
            f"SELECT {_API_TOKEN_COLUMNS} FROM api_tokens WHERE lower(name) = lower(?)", (name,)
        ).fetchone()
        return _api_token(row) if row else None

    def api_token_by_hash(self, token_hash: str) -> ApiToken | None:
        row = self._conn.execute(
            f"SELECT {_API_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?", (token_hash,)
        ).fetchone()
        return _api_token(row) if row else None

    def api_tokens(self) -> list[ApiToken]:
        rows = self._conn.execute(
            f"SELECT {_API_TOKEN_COLUMNS} FROM api_tokens ORDER BY lower(name)"
        )
        return [_api_token(r) for r in rows]

    def update_api_token(
        self, name: str, role: Role, token_hash: str, expires_at: str | None
    ) -> None:
        """A new role, secret and expiry for a token (its name and creation time stay)."""
        try:
            cur = self._conn.execute(
                "UPDATE api_tokens SET role = ?, token_hash = ?, expires_at = ?"
                " WHERE lower(name) = lower(?)",
                (role.value, token_hash, expires_at, name),
            )
        except INTEGRITY_ERRORS:
            raise DuplicateError("another API token has this secret") from None
        if cur.rowcount == 0:
            raise StoreError(f"no API token {name!r}")

    def touch_api_token(self, token_id: int, at: str) -> None:
        self._conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (at, token_id))

    def remove_api_token(self, name: str) -> None:
        cur = self._conn.execute("DELETE FROM api_tokens WHERE lower(name) = lower(?)", (name,))
        if cur.rowcount == 0:
            raise StoreError(f"no API token {name!r}")


def _api_token(row: Sequence[Any]) -> ApiToken:
    return ApiToken(row[0], row[1], Role(row[2]), *row[3:])


def _admin_account(row: Sequence[Any]) -> AdminAccount:
    return AdminAccount(row[0], row[1], Role(row[2]), *row[3:])
