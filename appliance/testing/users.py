"""Phone users for the authenticator: directories in memory or counting, Basic headers."""

from __future__ import annotations

import base64
from typing import TypeVar

from twisted.internet.defer import Deferred

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
