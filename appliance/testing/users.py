"""Phone users for the authenticator: directories in memory or counting, Basic headers;
a directory of groups in memory for the Control Panel's directory logins."""

from __future__ import annotations

import base64
from typing import TypeVar

from twisted.internet.defer import Deferred

from appliance.directory import DirectoryUnavailable, GroupSearch, MemberGroup
from appliance.phones import Directory

T = TypeVar("T")


class MemoryDirectory:
    """Phone users and passwords in a dict; `calls` holds every check it was asked."""

    def __init__(self, **users: str) -> None:
        self.users = users
        self.calls: list[tuple[str, str]] = []

    def verify(self, username: str, password: str) -> bool:
        self.calls.append((username, password))
        return self.users.get(username) == password


class CountingDirectory:
    """Another directory (`LdapDirectory`, `LocalDirectory`), counting what it is asked."""

    def __init__(self, inner: Directory) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def verify(self, username: str, password: str) -> bool:
        self.calls.append((username, password))
        return self.inner.verify(username, password)


class MemoryGroups:
    """Users, their passwords and groups in memory, as `LdapDirectory.member_groups`
    answers; `down` makes every call raise DirectoryUnavailable, as an outage would."""

    def __init__(self, **users: tuple[str, tuple[str, ...]]) -> None:
        self.users = users  # name -> (password, group DNs)
        self.down = False
        self.calls: list[str] = []

    def member_groups(
        self, username: str, password: str, search: GroupSearch
    ) -> tuple[MemberGroup, ...] | None:
        self.calls.append(username)
        if self.down:
            raise DirectoryUnavailable("the directory at ldap://192.0.2.1:389 cannot be asked")
        found = self.users.get(username)
        if found is None or found[0] != password:
            return None
        return tuple(MemberGroup(dn, dn.split(",")[0].partition("=")[2]) for dn in found[1])


def basic_credentials(user: str, password: str, encoding: str = "utf-8") -> bytes:
    """An `Authorization` header value for HTTP Basic."""
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode(encoding))


def fired(d: Deferred[T]) -> T:
    """The result of a Deferred that has fired already."""
    got: list[T] = []
    d.addCallback(got.append)
    if not got:
        raise AssertionError("the Deferred has not fired")
    return got[0]
