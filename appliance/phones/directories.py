"""Where phone users' passwords are checked: local argon2id users, or an LDAP server
(`appliance.directory`, shared with the Control Panel's directory logins); and NTLM
responses: against the local users' NT hashes (winbind's are in `winbind`).

A directory answers one question, whether a user name and password are good, and may be
slow doing it (argon2id on purpose, a network round trip for LDAP): the authenticator
(`appliance.phones.auth`) runs every check off the reactor thread.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from twisted.logger import Logger

from appliance.config import AuthSettings, NtlmBackend
from appliance.passwords import hash_password, verify_password
from appliance.phones.ntlm import NtlmResponse, check_response
from appliance.phones.winbind import WinbindVerifier
from appliance.store import Store

log = Logger()


class Directory(Protocol):
    def verify(self, username: str, password: str) -> bool:
        """Whether the credentials are good. Blocking, maybe slow: run it off the reactor."""
        ...


class NtlmVerifier(Protocol):
    def verify_ntlm(self, response: NtlmResponse) -> bool:
        """Whether an NTLM response is good. Blocking: run it off the reactor."""
        ...


def ntlm_verifier(
    settings: AuthSettings, db_path: Path, shared: Store | None = None
) -> NtlmVerifier | None:
    """What checks NTLM responses (`auth.ntlm_backend`), or None when `auth.ntlm` is off;
    local users from the store at `db_path`, or `shared` (`LocalDirectory.at`).
    Allowing NTLMv1 is logged as a warning (it is called once per worker at start)."""
    if not settings.ntlm:
        return None
    if settings.ntlm_allow_v1:
        log.warn(
            "auth.ntlm_allow_v1 is on: NTLMv1 and LM responses are accepted; their hashes"
            " can be cracked from a captured handshake",
            event="auth.ntlm_v1_allowed",
        )
    if settings.ntlm_backend is NtlmBackend.WINBIND:
        return WinbindVerifier(settings.ntlm_helper, settings.ntlm_helper_timeout)
    return LocalDirectory.at(db_path, shared)


class LocalDirectory:
    """Phone users from the store's `users` table, checked against their argon2id hashes.

    verify() runs on pool threads, and an SQLite connection may only be used by the thread
    that opened it: each thread gets its own Store from `open_store`, opened on first use
    (`LocalDirectory.at(config.db_path)`). A PostgreSQL store may be used by every thread
    (each borrows a pooled connection): the service's own is shared (`at(path, store)`).
    Tests that verify inline may hand in one Store.
    """

    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open_store = open_store
        self._local = threading.local()
        self._dummy: str | None = None

    @classmethod
    def at(cls, path: Path, shared: Store | None = None) -> LocalDirectory:
        """The users of the configured store: `shared` when it may be used from any thread
        (PostgreSQL's), else an SQLite store opened at `path` by each thread."""
        if shared is not None and shared.backend == "postgresql":
            return cls(lambda: shared)
        return cls(lambda: Store.open(path))

    def _store(self) -> Store:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = self._open_store()
        return store

    def verify(self, username: str, password: str) -> bool:
        user = self._store().user(username)
        if user is None:
            # Spend the same time as for a real user, so timing does not tell who exists.
            if self._dummy is None:
                self._dummy = hash_password(secrets.token_urlsafe(24))
            verify_password(self._dummy, password)
            return False
        matches = verify_password(user.password_hash, password)
        return matches and not user.disabled

    def verify_ntlm(self, response: NtlmResponse) -> bool:
        """Against the user's NT hash. The name is looked up as sent (`user`, or a UPN
        `user@domain`), then as `DOMAIN\\user`; the domain is otherwise ignored."""
        store = self._store()
        user = store.user(response.user) if response.user else None
        if user is None and response.domain and response.user:
            user = store.user(f"{response.domain}\\{response.user}")
        if user is None or user.nt_hash is None or user.disabled:
            return False
        return check_response(response, bytes.fromhex(user.nt_hash))
