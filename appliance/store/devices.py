"""The phones' tables: the device inventory, the event log and the phone users."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from appliance.model import Device, Event, User, Zone
from appliance.store.connection import INTEGRITY_ERRORS, Connection
from appliance.store.errors import DuplicateError, StoreError


class DeviceTables(Connection):
    """Devices seen, the event log, and the local phone users."""

    # -- the device inventory -----------------------------------------------------------

    def record_device(self, device: Device) -> None:
        """Insert or refresh a device; first_seen is kept from the first sighting."""
        self.record_devices([device])

    def record_devices(self, devices: Iterable[Device]) -> None:
        """`record_device` for each, in one batch (on PostgreSQL about one round trip:
        a branch node's flush crosses the WAN)."""
        self._conn.executemany(
            "INSERT INTO devices (identity, mac, serial, device_type, brand, model, revision,"
            " locale, version, zone, address, user_id, first_seen, last_seen)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (identity) DO UPDATE SET mac = excluded.mac, serial = excluded.serial,"
            " device_type = excluded.device_type, brand = excluded.brand,"
            " model = excluded.model, revision = excluded.revision, locale = excluded.locale,"
            " version = excluded.version, zone = excluded.zone, address = excluded.address,"
            " user_id = excluded.user_id, last_seen = excluded.last_seen",
            [
                (
                    d.identity,
                    d.mac,
                    d.serial,
                    d.device_type,
                    d.brand,
                    d.model,
                    d.revision,
                    d.locale,
                    d.version,
                    d.zone,
                    d.address,
                    d.user_id,
                    d.first_seen,
                    d.last_seen,
                )
                for d in devices
            ],
        )

    def devices(self) -> list[Device]:
        rows = self._conn.execute(
            "SELECT identity, mac, serial, device_type, brand, model, revision, locale, version,"
            " zone, address, user_id, first_seen, last_seen FROM devices ORDER BY identity"
        )
        return [_device(r) for r in rows]

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

    def add_user(self, name: str, password_hash: str, nt_hash: str | None = None) -> User:
        now = self.now()
        try:
            cur = self._conn.execute(
                "INSERT INTO users (name, password_hash, nt_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, password_hash, nt_hash, now, now),
            )
        except INTEGRITY_ERRORS:
            raise DuplicateError(f"user {name!r} exists already") from None
        row = self._conn.execute(
            "SELECT id, name, password_hash, created_at, updated_at, disabled, nt_hash FROM users"
            " WHERE id = ?",
            (cur.lastrowid,),
        ).fetchone()
        return self._user_of(row)

    def set_user_password(self, name: str, password_hash: str, nt_hash: str | None = None) -> None:
        """A new password: its hash, and its NT hash (None forgets the old one)."""
        cur = self._conn.execute(
            "UPDATE users SET password_hash = ?, nt_hash = ?, updated_at = ?"
            " WHERE lower(name) = lower(?)",
            (password_hash, nt_hash, self.now(), name),
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
            "SELECT id, name, password_hash, created_at, updated_at, disabled, nt_hash FROM users"
            " ORDER BY lower(name)"
        )
        return [self._user_of(r) for r in rows]

    def user(self, name: str) -> User | None:
        row = self._conn.execute(
            "SELECT id, name, password_hash, created_at, updated_at, disabled, nt_hash FROM users"
            " WHERE lower(name) = lower(?)",
            (name,),
        ).fetchone()
        return self._user_of(row) if row else None

    @staticmethod
    def _user_of(row: Sequence[Any]) -> User:
        return User(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6])


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _unjson(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _device(row: Sequence[Any]) -> Device:
    fields = list(row)
    fields[9] = Zone(fields[9]) if fields[9] else None  # zone
    return Device(*fields)
