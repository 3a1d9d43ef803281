"""An LDAP server (OpenLDAP, Active Directory) asked as the user: a simple bind, then, for
the Control Panel, the groups that list the user.

The phones' Basic logins ask only whether the bind succeeds (`verify`: any error is
logged and answers False). A Control Panel login also needs the user's groups
(`member_groups`), and must tell a wrong password from a directory that cannot be asked:
the first is None, the second raises DirectoryUnavailable, so that the login can say so
and local accounts still work. Both are blocking (a network round trip): run them off
the reactor thread.
"""

from __future__ import annotations

import contextlib
import math
import re
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.logger import Logger

from appliance.config import LdapSettings
from appliance.passwords import MAX_USER_NAME, AuthError

log = Logger()

T = TypeVar("T")
MAX_GROUPS = 1000  # groups read for one user (the search's size limit)


def loggable_name(text: str) -> str:
    """A user-supplied name made safe for a log line."""
    text = text[:MAX_USER_NAME]
    return text if text.isprintable() else repr(text)


class DirectoryUnavailable(Exception):
    """The directory could not be asked (network, TLS, timeout, a failed search); str() is
    the line to show, without the password."""


@dataclass(frozen=True)
class GroupSearch:
    """Where and how a user's groups are found (`admin.ldap`). `user_filter` ({user}: the
    name as typed) finds the user's entry when the bind name is not a DN;
    `group_filter` ({dn}: the user's DN, {user}) the groups that list the user."""

    base_dn: str
    user_filter: str
    group_filter: str


@dataclass(frozen=True)
class MemberGroup:
    """A group that lists the user: its DN and its name (cn; empty without one)."""

    dn: str
    name: str


class LdapDirectory:
    """A simple bind as the user: `bind_template` with `{user}` replaced.

    When the template is a DN (`uid={user},ou=people,...`) the name is escaped as an RDN
    value (RFC 4514), so a name cannot add DN components; otherwise (`{user}@contoso.com`,
    `{user}` for DOMAIN\\user) it is used as given. Empty passwords never reach the server
    (a simple bind with one is an anonymous bind, which many servers accept). `key` names
    the settings' table in error messages (`auth.ldap`, `admin.ldap`).
    """

    def __init__(self, settings: LdapSettings, key: str = "auth.ldap") -> None:
        url = urllib.parse.urlsplit(settings.url)
        if url.scheme not in ("ldap", "ldaps") or not url.hostname:
            raise AuthError(f"{key}.url {settings.url!r} is not ldap://host or ldaps://host")
        if url.path not in ("", "/") or url.query or url.fragment or url.username:
            raise AuthError(f"{key}.url {settings.url!r}: give only scheme, host and port")
        try:
            port = url.port
        except ValueError as e:
            raise AuthError(f"{key}.url {settings.url!r}: {e}") from None
        if settings.start_tls and url.scheme == "ldaps":
            raise AuthError(f"{key}.start_tls is for ldap:// URLs; ldaps:// is TLS already")
        if settings.bind_template.count("{user}") != 1:
            raise AuthError(f"{key}.bind_template must contain {{user}} exactly once")
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
                raise AuthError(f"{key}.ca_file {str(ca_file)!r} is not a file")
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

    @property
    def where(self) -> str:
        return f"{'ldaps' if self._use_ssl else 'ldap'}://{self._host}:{self._port}"

    def bind_name(self, username: str) -> str:
        from ldap3.utils.dn import escape_rdn

        return self._template.replace("{user}", escape_rdn(username) if self._dn else username)

    def verify(self, username: str, password: str) -> bool:
        """Whether the directory accepts the name and password. Any LDAP or network error
        is logged and answers False."""
        if not username or not password:
            return False
        try:
            return self._bound(username, password, lambda conn: True) is True
        except Exception as e:
            self._log_error(username, e)
            return False

    def member_groups(
        self, username: str, password: str, search: GroupSearch
    ) -> tuple[MemberGroup, ...] | None:
        """The groups that list the user, bound as the user; None when the directory
        refuses the name or password. Raises DirectoryUnavailable when it cannot be asked."""
        if not username or not password:
            return None
        try:
            return self._bound(
                username, password, lambda conn: self._groups(conn, username, search)
            )
        except Exception as e:
            self._log_error(username, e)
            raise DirectoryUnavailable(
                f"the directory at {self.where} cannot be asked ({_short(e)})"
            ) from e

    def _log_error(self, username: str, e: Exception) -> None:
        log.warn(
            "LDAP error for {user} at {host}:{port}: {error}",
            user=loggable_name(username),
            host=self._host,
            port=self._port,
            error=f"{type(e).__name__}: {e}",
        )

    def _bound(self, username: str, password: str, then: Callable[[Any], T]) -> T | None:
        """`then(connection)` while bound as the user; None when the bind is refused."""
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
            auto_referrals=False,
            # ldap3 packs this into SO_RCVTIMEO as whole seconds: a float raises.
            receive_timeout=max(1, math.ceil(self._timeout)),
            raise_exceptions=False,
        )
        try:
            conn.open()
            if self._start_tls and not conn.start_tls(read_server_info=False):
                raise ConnectionError(f"StartTLS refused: {conn.result}")
            if conn.bind():
                return then(conn)
            result = conn.result or {}
            log.info(
                "LDAP bind refused for {user}: {description}",
                user=loggable_name(username),
                description=result.get("description"),
            )
            return None
        finally:
            # After a failed TLS handshake the socket is gone and unbind() raises: that
            # error must not hide the one that matters.
            with contextlib.suppress(Exception):
                conn.unbind()

    def _groups(self, conn: Any, username: str, search: GroupSearch) -> tuple[MemberGroup, ...]:
        from ldap3 import SUBTREE
        from ldap3.utils.conv import escape_filter_chars

        user = escape_filter_chars(username)
        dn = self.bind_name(username) if self._dn else None
        if dn is None:
            entries = _search(conn, search.base_dn, search.user_filter.replace("{user}", user), [])
            dns = [e["dn"] for e in entries]
            dn = dns[0] if len(dns) == 1 else self.bind_name(username)
        wanted = search.group_filter.replace("{dn}", escape_filter_chars(dn))
        wanted = wanted.replace("{user}", user)
        found = _search(conn, search.base_dn, wanted, ["cn"], scope=SUBTREE)
        groups = []
        for entry in found:
            cn = entry.get("attributes", {}).get("cn") or []
            name = cn[0] if isinstance(cn, list) and cn else (cn if isinstance(cn, str) else "")
            groups.append(MemberGroup(str(entry["dn"]), str(name)))
        return tuple(groups)


def _search(
    conn: Any, base: str, query: str, attributes: list[str], scope: Any = None
) -> list[dict[str, Any]]:
    from ldap3 import SUBTREE

    conn.search(
        base,
        query,
        search_scope=scope or SUBTREE,
        attributes=attributes,
        size_limit=MAX_GROUPS,
    )
    result = conn.result or {}
    # 0 success, 4 sizeLimitExceeded (what was found still counts)
    if result.get("result") not in (0, 4):
        raise LookupError(
            f"search under {base!r} failed: {result.get('description')} {result.get('message')}"
        )
    return [e for e in conn.response or [] if e.get("type") == "searchResEntry"]


def _short(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
