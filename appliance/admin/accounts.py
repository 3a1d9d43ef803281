"""Control Panel accounts: roles, names, passwords, and the lockout after wrong passwords.

Accounts live in the store (schema 003), separate from the phone users. Passwords are
argon2id hashes (`appliance.passwords`). Changes go to the event log like every admin action.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import Type, extract_parameters
from argon2.exceptions import InvalidHashError

from appliance.config import AdminSettings
from appliance.model import AdminAccount, Role
from appliance.passwords import AuthError, hash_password, validate_password, verify_password
from appliance.store import DuplicateError, Store, StoreError

MIN_PASSWORD = 8
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


# Verified when the name is unknown, so that an unknown name takes as long as a wrong password.
@functools.cache
def _dummy_hash() -> str:
    """A hash to spend the same time on for unknown accounts (made on first use)."""
    return hash_password("not a real password, only for timing")


def iso(t: datetime) -> str:
    """The store's time format: UTC, seconds, "Z" (so that times compare as text)."""
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class AccountError(Exception):
    """An account change that cannot be made; str() is the line to show."""


def is_local_name(name: str) -> bool:
    """Whether `name` can be a local account's (directory accounts' names hold a ':')."""
    return bool(_NAME.fullmatch(name))


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise AccountError(
            "an admin account name has 1 to 64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_admin_password(password: str) -> str:
    try:
        validate_password(password)
    except AuthError as e:
        raise AccountError(str(e)) from e
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"an admin password has at least {MIN_PASSWORD} characters")
    return password


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise AccountError(f"unknown role {text!r}: expected admin or viewer") from None


def add_account(store: Store, name: str, role: str, password: str, actor: str) -> AdminAccount:
    name = validate_name(name)
    checked_role = parse_role(role)
    password_hash = hash_password(validate_admin_password(password))
    try:
        with store.transaction():
            account = store.add_admin_account(name, checked_role, password_hash)
            store.append_event(
                actor,
                "admin.add",
                f"admin {name}",
                None,
                {"name": name, "role": checked_role.value},
            )
    except DuplicateError as e:
        raise AccountError(str(e)) from e
    return account


def validate_hash(password_hash: str) -> str:
    """An argon2id PHC string made elsewhere (`ucupdates admin hash`, Ansible's vault)."""
    try:
        parameters = extract_parameters(password_hash)
    except (InvalidHashError, ValueError):
        raise AccountError("not an argon2id password hash ($argon2id$v=19$...)") from None
    if parameters.type is not Type.ID:
        raise AccountError("the password hash must be argon2id")
    return password_hash


def ensure_account(
    store: Store,
    name: str,
    role: str,
    actor: str,
    *,
    password: str | None = None,
    password_hash: str | None = None,
) -> str:
    """An account as asked (for Ansible, run again and again): added when missing, else
    its role and password brought in line; the password is compared with the stored hash
    first, so a run that finds it right changes nothing. Returns what it did: "added",
    "changed role", "changed password", "changed role and password" or "unchanged"."""
    checked = parse_role(role)
    if password_hash is not None:
        wanted_hash = validate_hash(password_hash)
    else:
        assert password is not None
        validate_admin_password(password)
        wanted_hash = ""
    account = store.admin_account(name)
    if account is None:
        if password_hash is not None:
            with store.transaction():
                store.add_admin_account(validate_name(name), checked, wanted_hash)
                store.append_event(
                    actor, "admin.add", f"admin {name}", None, {"name": name, "role": role}
                )
        else:
            assert password is not None
            add_account(store, name, role, password, actor)
        return "added"
    if not is_local_name(account.name):
        raise AccountError(f"{account.name} is a directory account")
    changed = []
    if account.role is not checked:
        set_role(store, account.name, checked.value, actor)
        changed.append("role")
    if password_hash is not None:
        same = account.password_hash == wanted_hash
    else:
        assert password is not None
        same = verify_password(account.password_hash, password)
    if not same:
        with store.transaction():
            store.set_admin_password(account.name, wanted_hash or hash_password(password or ""))
            store.remove_admin_sessions_of(account.id)
            store.append_event(actor, "admin.passwd", f"admin {account.name}", None, None)
        changed.append("password")
    return "changed " + " and ".join(changed) if changed else "unchanged"


def set_password(store: Store, name: str, password: str, actor: str) -> None:
    """A new password; every open session of the account ends, and a lockout is lifted."""
    password_hash = hash_password(validate_admin_password(password))
    account = _existing(store, name)
    if not is_local_name(account.name):
        raise AccountError(f"{account.name} logs in with its directory password")
    with store.transaction():
        store.set_admin_password(account.name, password_hash)
        store.remove_admin_sessions_of(account.id)
        store.append_event(actor, "admin.passwd", f"admin {account.name}", None, None)


def set_role(store: Store, name: str, role: str, actor: str) -> None:
    checked = parse_role(role)
    account = _existing(store, name)
    with store.transaction():
        store.set_admin_role(account.name, checked)
        store.append_event(
            actor,
            "admin.role",
            f"admin {account.name}",
            {"role": account.role},
            {"role": checked.value},
        )


def remove_account(store: Store, name: str, actor: str) -> None:
    account = _existing(store, name)
    with store.transaction():
        store.remove_admin_account(account.name)  # its sessions go with it (cascade)
        store.append_event(
            actor, "admin.remove", f"admin {account.name}", {"role": account.role}, None
        )


def unlock(store: Store, name: str, actor: str) -> None:
    account = _existing(store, name)
    with store.transaction():
        store.set_admin_failures(account.id, 0, None, None)
        store.append_event(actor, "admin.unlock", f"admin {account.name}", None, None)


def _existing(store: Store, name: str) -> AdminAccount:
    account = store.admin_account(name)
    if account is None:
        raise AccountError(f"no admin account {name!r}")
    return account


# -- checking a password, with lockout ------------------------------------------------------


def password_matches(account: AdminAccount | None, password: str) -> bool:
    """The slow part of a login (argon2id): run it off the reactor thread."""
    if account is None:
        verify_password(_dummy_hash(), password)
        return False
    return verify_password(account.password_hash, password)


def locked_until(account: AdminAccount, now: datetime, longest: float | None = None) -> str | None:
    """When the account's lockout ends, if it is locked at `now`. An end further than
    `longest` seconds (the lockout's length) away means the clock went back since: the
    lockout is over rather than held until the clock catches up."""
    if account.locked_until is None or account.locked_until <= iso(now):
        return None
    if longest is not None and account.locked_until > iso(now + timedelta(seconds=longest)):
        return None
    return account.locked_until


def recent_failures(account: AdminAccount, now: datetime, settings: AdminSettings) -> int:
    """The account's wrong passwords within the failure window."""
    window_start = iso(now - timedelta(seconds=settings.failure_window_seconds))
    first = account.first_failure_at
    if first is None or first < window_start or first > iso(now):  # (or the clock went back)
        return 0
    return account.failures


def record_failure(
    store: Store, account: AdminAccount, now: datetime, settings: AdminSettings
) -> str | None:
    """Count a wrong password; returns the end of the lockout it caused, if any."""
    window_start = iso(now - timedelta(seconds=settings.failure_window_seconds))
    first = account.first_failure_at
    failures = account.failures
    if first is None or first < window_start or first > iso(now):  # (or the clock went back)
        first, failures = iso(now), 0
    failures += 1
    until = None
    if failures >= settings.max_failures:
        until = iso(now + timedelta(seconds=settings.lockout_seconds))
    try:
        with store.transaction():
            store.set_admin_failures(account.id, failures, first, until)
    except StoreError:
        return None
    return until


ADDRESS_SCOPE = "admin.address"  # the address lockouts' scope in the store's lockouts table


@dataclass
class AddressFailures:
    """Wrong passwords per client address (in memory: a restart forgets them). Given a
    `shared` store (PostgreSQL, a pool), a lockout this node starts is written to the
    store's lockouts table and one another node started holds here too; the failures
    that lead to one are counted per node. Safe to call from several threads."""

    settings: AdminSettings
    max_addresses: int = 10_000
    shared: Store | None = None
    node: str = ""

    def __post_init__(self) -> None:
        self._failures: dict[str, list[float]] = {}
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def locked(self, address: str, now: float) -> float | None:
        """Seconds left of the address's lockout, or None."""
        with self._lock:
            until = self._locked.get(address)
        if until is None and self.shared is not None:
            until = self.shared.lockout_until(ADDRESS_SCOPE, address, now)
        if until is None:
            return None
        if until <= now or until - now > self.settings.lockout_seconds:  # over, or the
            with self._lock:  # clock went back: not held until it catches up
                self._locked.pop(address, None)
            return None
        return until - now

    def recent(self, address: str, now: float) -> int:
        """The address's wrong passwords within the failure window."""
        window = self.settings.failure_window_seconds
        with self._lock:
            times = list(self._failures.get(address, []))
        return sum(1 for t in times if 0 <= now - t < window)

    def fail(self, address: str, now: float) -> float | None:
        """Count a wrong password; returns the end of the lockout it started, if any."""
        window = self.settings.failure_window_seconds
        until = None
        with self._lock:
            recent = [t for t in self._failures.get(address, []) if 0 <= now - t < window]
            recent.append(now)
            if len(self._failures) >= self.max_addresses and address not in self._failures:
                self._failures.clear()  # a flood of addresses: forget rather than grow
            self._failures[address] = recent
            if len(recent) >= self.settings.max_failures:
                until = self._locked[address] = now + self.settings.lockout_seconds
                self._failures.pop(address, None)
        if until is not None and self.shared is not None:
            # (held on this node still when the write fails; the others count their own)
            with contextlib.suppress(StoreError):
                self.shared.put_lockout(ADDRESS_SCOPE, address, until, self.node)
        return until

    def clear(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
