"""LDAP and Active Directory: a simple bind as the user, and the groups that list the user.

Below the phones (whose Basic logins it checks, `auth.backend = "ldap"`) and the Control
Panel (whose directory logins it checks, with the groups deciding the role), which may
not import each other.
"""

from appliance.directory.ldap import (
    DirectoryUnavailable,
    GroupSearch,
    LdapDirectory,
    MemberGroup,
    loggable_name,
)

__all__ = [
    "DirectoryUnavailable",
    "GroupSearch",
    "LdapDirectory",
    "MemberGroup",
    "loggable_name",
]
