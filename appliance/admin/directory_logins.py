"""Control Panel logins against LDAP or Active Directory (`[admin.ldap]`).

The directory checks the password (a simple bind as the user, the phones' own LDAP code
in `appliance.directory`) and lists the groups that name the user; the groups decide the
role: a user in an admin group is an admin, else one in a viewer group a viewer, else the
login is refused. Membership is read at each login only: a session outlives a removal
from a group until it ends (idle or at its absolute limit, `[admin]`).

A directory user who logs in gets an account row named `ldap:<name>` (so its sessions,
lockout and events work as a local account's do; no local name can contain ':'), whose
role each login sets again. It has no local password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from appliance.config import AdminLdapSettings, LdapSettings
from appliance.directory import GroupSearch, LdapDirectory, MemberGroup
from appliance.model import AdminAccount, Role
from appliance.passwords import AuthError
from appliance.store import Store

PREFIX = "ldap:"
NO_PASSWORD = "!directory"  # noqa: S105 - a password hash that matches no password
_NAME = re.compile(r"[\w.@\\-][\w .@\\-]{0,62}[\w.@\\-]|[\w.@\\-]")


class GroupSource(Protocol):
    def member_groups(
        self, username: str, password: str, search: GroupSearch
    ) -> tuple[MemberGroup, ...] | None:
        """The groups that list the user; None: the directory refused the password.
        Raises DirectoryUnavailable. Blocking: run it off the reactor."""
        ...


def is_directory_name(name: str) -> bool:
    """A name a directory login may use: 1 to 64 letters, digits, ' ', '.', '_', '@', '\\'
    or '-' (DOMAIN\\user and user@domain included), no ':'."""
    return bool(_NAME.fullmatch(name))


def account_name(name: str) -> str:
    return PREFIX + name


def is_directory_account(name: str) -> bool:
    return name.startswith(PREFIX)


def _normal_dn(dn: str) -> str:
    return ",".join(part.strip() for part in dn.lower().split(","))


def role_of(
    groups: tuple[MemberGroup, ...], admin_groups: tuple[str, ...], viewer_groups: tuple[str, ...]
) -> Role | None:
    """The highest role a mapped group gives (pure). A configured group with '=' is a DN
    (compared without case or spaces around commas), otherwise a group name (cn)."""

    def listed(wanted: tuple[str, ...]) -> bool:
        dns = {_normal_dn(w) for w in wanted if "=" in w}
        names = {w.lower() for w in wanted if "=" not in w}
        return any(_normal_dn(g.dn) in dns or (g.name and g.name.lower() in names) for g in groups)

    if listed(admin_groups):
        return Role.ADMIN
    if listed(viewer_groups):
        return Role.VIEWER
    return None


@dataclass(frozen=True)
class DirectoryAnswer:
    """What the directory said of a login: refused (wrong name or password), or accepted
    with the role its groups give (None: in no mapped group)."""

    accepted: bool
    role: Role | None = None
    groups: tuple[str, ...] = ()


class AdminDirectory:
    """The directory of `[admin.ldap]`, and its group-to-role mapping."""

    def __init__(self, settings: AdminLdapSettings, source: GroupSource) -> None:
        if not settings.base_dn:
            raise AuthError("admin.ldap.base_dn is needed: where the groups are searched")
        if not settings.admin_groups and not settings.viewer_groups:
            raise AuthError("admin.ldap: name a group in admin_groups or viewer_groups")
        if "{dn}" not in settings.group_filter and "{user}" not in settings.group_filter:
            raise AuthError("admin.ldap.group_filter must contain {dn} or {user}")
        self.settings = settings
        self.source = source
        self.search = GroupSearch(settings.base_dn, settings.user_filter, settings.group_filter)

    @classmethod
    def of(cls, settings: AdminLdapSettings, phones: LdapSettings) -> AdminDirectory | None:
        """The configured directory, or None when directory logins are off. With no url of
        its own it uses the phones' directory's connection ([auth.ldap])."""
        if not settings.enabled:
            return None
        if settings.url:
            connection = LdapSettings(
                settings.url,
                settings.bind_template,
                settings.start_tls,
                settings.ca_file,
                settings.timeout,
            )
            return cls(settings, LdapDirectory(connection, key="admin.ldap"))
        if not phones.url:
            raise AuthError("admin.ldap.enabled needs admin.ldap.url (or auth.ldap.url)")
        return cls(settings, LdapDirectory(phones, key="auth.ldap"))

    def check(self, username: str, password: str) -> DirectoryAnswer:
        """Blocking: run it off the reactor. Raises DirectoryUnavailable."""
        groups = self.source.member_groups(username, password, self.search)
        if groups is None:
            return DirectoryAnswer(False)
        role = role_of(groups, self.settings.admin_groups, self.settings.viewer_groups)
        return DirectoryAnswer(True, role, tuple(g.name or g.dn for g in groups))


def directory_account(store: Store, row: str, role: Role) -> AdminAccount:
    """The account row of a directory user who just logged in: made at the first login,
    its role set again at each (both in the event log, by the user)."""
    account = store.admin_account(row)
    with store.transaction():
        if account is None:
            account = store.add_admin_account(row, role, NO_PASSWORD)
            store.append_event(
                row, "admin.add", f"admin {row}", None, {"name": row, "role": role.value}
            )
        elif account.role is not role:
            store.set_admin_role(row, role)
            store.append_event(
                row, "admin.role", f"admin {row}", {"role": account.role}, {"role": role.value}
            )
            account = store.admin_account(row)
    assert account is not None
    return account
