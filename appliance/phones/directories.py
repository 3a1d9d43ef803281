"""Where phone users' passwords are checked: local argon2id users, or an LDAP server;
and NTLM responses: against the local users' NT hashes (winbind's are in `winbind`).

A directory answers one question, whether a user name and password are good, and may be
slow doing it (argon2id on purpose, a network round trip for LDAP): the authenticator
(`appliance.phones.auth`) runs every check off the reactor thread.
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from twisted.logger import Logger

from appliance.config import AuthSettings, LdapSettings, NtlmBackend
from appliance.passwords import MAX_USER_NAME, AuthError, hash_password, verify_password
from appliance.phones.ntlm import NtlmResponse, check_response
from appliance.phones.winbind import WinbindVerifier
from appliance.store import Store

log = Logger()


def loggable_name(text: str) -> str:
    """A user-supplied name made safe for a log line."""
    text = text[:MAX_USER_NAME]
    return text if text.isprintable() else repr(text)


class Directory(Protocol):
    def verify(self, username: str, password: str) -> bool:
        """Whether the credentials are good. Blocking, maybe slow: run it off the reactor."""
        ...


class NtlmVerifier(Protocol):
    def verify_ntlm(self, response: NtlmResponse) -> bool:
        """Whether an NTLM response is good. Blocking: run it off the reactor."""
        ...


def ntlm_verifier(settings: AuthSettings, db_path: Path) -> NtlmVerifier | None:
    """What checks NTLM responses (`auth.ntlm_backend`), or None when `auth.ntlm` is off.
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
    return LocalDirectory.at(db_path)


class LocalDirectory:
    """Phone users from the store's `users` table, checked against their argon2id hashes.

    verify() runs on pool threads, and an SQLite connection may only be used by the thread
    that opened it: each thread gets its own Store from `open_store`, opened on first use
    (`LocalDirectory.at(config.db_path)`). Tests that verify inline may hand in one Store.
    """

    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open_store = open_store
        self._local = threading.local()
        self._dummy: str | None = None

    @classmethod
    def at(cls, path: Path) -> LocalDirectory:
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


class LdapDirectory:
    """A simple bind as the user: `bind_template` with `{user}` replaced.

    When the template is a DN (`uid={user},ou=people,...`) the name is escaped as an RDN
    value (RFC 4514), so a name cannot add DN components; otherwise (`{user}@contoso.com`,
    `{user}` for DOMAIN\\user) it is used as given. Empty passwords never reach the server
    (a simple bind with one is an anonymous bind, which many servers accept). Any LDAP or
    network error is logged and answers False.
    """

    def __init__(self, settings: LdapSettings) -> None:
        url = urllib.parse.urlsplit(settings.url)
        if url.scheme not in ("ldap", "ldaps") or not url.hostname:
            raise AuthError(f"auth.ldap.url {settings.url!r} is not ldap://host or ldaps://host")
        if url.path not in ("", "/") or url.query or url.fragment or url.username:
            raise AuthError(f"auth.ldap.url {settings.url!r}: give only scheme, host and port")
        try:
            port = url.port
        except ValueError as e:
            raise AuthError(f"auth.ldap.url {settings.url!r}: {e}") from None
        if settings.start_tls and url.scheme == "ldaps":
            raise AuthError("auth.ldap.start_tls is for ldap:// URLs; ldaps:// is TLS already")
        if settings.bind_template.count("{user}") != 1:
            raise AuthError("auth.ldap.bind_template must contain {user} exactly once")
        self._host = url.hostname
        self._use_ssl = url.scheme == "ldaps"
        self._port = port or (636 if self._use_ssl else 389)
        self._template = settings.bind_template
        self._dn = bool(re.search(r"=\s*\{user\}", settings.bind_template))
        self._start_tls = settings.start_tls
        self._timeout = settings.timeout
        self._tls: Any = None
        if self._use_ssl or self._start_tls:
            ca_file = settings.ca_file
            if ca_file is not None and not ca_file.is_file():
                raise AuthError(f"auth.ldap.ca_file {str(ca_file)!r} is not a file")
            from ldap3 import Tls  # ldap3 loads only where LDAP is configured

            self._tls = Tls(
                validate=ssl.CERT_REQUIRED,
                ca_certs_file=str(ca_file) if ca_file else None,
                sni=self._host,
            )
        else:
            log.warn(
                "LDAP at {url} without TLS: passwords cross the network in clear",
                url=settings.url,
            )

    def bind_name(self, username: str) -> str:
        from ldap3.utils.dn import escape_rdn

        return self._template.replace("{user}", escape_rdn(username) if self._dn else username)

    def verify(self, username: str, password: str) -> bool:
        if not username or not password:
            return False
        try:
            return self._bind(username, password)
        except Exception as e:
            log.warn(
                "LDAP error for {user} at {host}:{port}: {error}",
                user=loggable_name(username),
                host=self._host,
                port=self._port,
                error=f"{type(e).__name__}: {e}",
            )
            return False

    def _bind(self, username: str, password: str) -> bool:
        from ldap3 import NONE, SIMPLE, Connection, Server

        server = Server(
            self._host,
            port=self._port,
            use_ssl=self._use_ssl,
            tls=self._tls,
            get_info=NONE,
            connect_timeout=self._timeout,
        )
        conn = Connection(
            server,
            user=self.bind_name(username),
            password=password,
            authentication=SIMPLE,
            read_only=True,
            # ldap3 packs this into SO_RCVTIMEO as whole seconds: a float raises.
            receive_timeout=max(1, math.ceil(self._timeout)),
            raise_exceptions=False,
        )
        try:
            conn.open()
            if self._start_tls and not conn.start_tls(read_server_info=False):
                raise ConnectionError(f"StartTLS refused: {conn.result}")
            if conn.bind():
                return True
            result = conn.result or {}
            log.info(
                "LDAP bind refused for {user}: {description}",
                user=loggable_name(username),
                description=result.get("description"),
            )
            return False
        finally:
            # After a failed TLS handshake the socket is gone and unbind() raises: that
            # error must not hide the one that matters.
            with contextlib.suppress(Exception):
                conn.unbind()
