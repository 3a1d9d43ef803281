"""Directory logins in process: the admin listener's real site with a directory of groups
in memory (`MemoryGroups`, what `LdapDirectory.member_groups` answers). test_ldap.py
logs in against a real slapd."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq

from appliance.admin import add_account, make_admin_site
from appliance.admin.directory_logins import AdminDirectory, role_of
from appliance.config import AdminLdapSettings, AdminSettings, LdapSettings, load_config
from appliance.directory import MemberGroup
from appliance.model import Role
from appliance.passwords import AuthError
from appliance.store import Store
from appliance.testing import InlineReactor, MemoryGroups, memory_client, settle

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
BASE = "https://ucupdates.test:9443"
OPS = "cn=ucupdates-admins,ou=groups,dc=example,dc=com"
HELPDESK = "cn=helpdesk,ou=groups,dc=example,dc=com"
LDAP = AdminLdapSettings(
    enabled=True, base_dn="dc=example,dc=com", admin_groups=(OPS,), viewer_groups=("Helpdesk",)
)


@dataclass
class Site:
    store: Store
    stub: StubTreq
    groups: MemoryGroups

    def login(self, name: str, password: str) -> tuple[int, Any]:
        headers = {"Content-Type": ["application/json"], "Origin": [BASE]}
        body = json.dumps({"name": name, "password": password}).encode()
        response = settle(
            self.stub, self.stub.request("POST", BASE + "/api/login", data=body, headers=headers)
        )
        return response.code, json.loads(settle(self.stub, response.content()))


def make_site(tmp_path: Path, **admin: Any) -> Iterator[Site]:
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    store = Store.open(config.db_path, clock=lambda: NOW)
    add_account(store, "breakglass", "admin", "local password", "test")
    groups = MemoryGroups(
        alice=("alice pw", (OPS, HELPDESK)),
        hal=("hal pw", (HELPDESK,)),
        mallory=("mallory pw", ("cn=staff,ou=groups,dc=example,dc=com",)),
        breakglass=("directory pw", (OPS,)),
    )
    settings = AdminSettings(ldap=LDAP, max_failures=3, **admin)
    directory = AdminDirectory(settings.ldap, groups)
    stub = memory_client(
        lambda _: make_admin_site(
            config, store, lambda: NOW, InlineReactor(), settings=settings, directory=directory
        )
    )
    yield Site(store, stub, groups)
    store.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from make_site(tmp_path)


def test_the_highest_mapped_group_gives_the_role(site: Site) -> None:
    status, body = site.login("alice", "alice pw")
    assert (status, body["name"], body["role"]) == (200, "ldap:alice", "admin")
    status, body = site.login("hal", "hal pw")  # by the group's name, without case
    assert (status, body["role"]) == (200, "viewer")
    account = site.store.admin_account("ldap:hal")
    assert account is not None and account.role is Role.VIEWER
    assert [(e.actor, e.action) for e in site.store.events(limit=2)] == [
        ("ldap:hal", "admin.add"),
        ("ldap:alice", "admin.add"),
    ]


def test_a_user_in_no_mapped_group_cannot_log_in(site: Site) -> None:
    status, body = site.login("mallory", "mallory pw")
    assert status == 403 and "no group" in body["error"]
    assert site.store.admin_account("ldap:mallory") is None


def test_a_wrong_directory_password_counts_toward_the_lockout(site: Site) -> None:
    assert site.login("alice", "alice pw")[0] == 200  # the account row exists from now on
    for _ in range(3):
        assert site.login("alice", "wrong")[0] == 401
    account = site.store.admin_account("ldap:alice")
    assert account is not None and account.locked_until is not None  # as a local one
    status, body = site.login("alice", "alice pw")
    assert status == 429 and "too many wrong passwords" in body["error"]
    assert site.groups.calls.count("alice") == 4  # the locked login never reached it


def test_a_local_account_wins_its_name_and_stays_when_the_directory_is_down(site: Site) -> None:
    assert site.login("breakglass", "directory pw")[0] == 401  # the local account's name
    site.groups.down = True
    status, body = site.login("alice", "alice pw")
    assert status == 503
    assert "cannot be asked" in body["error"] and "local accounts still work" in body["error"]
    assert site.login("breakglass", "local password")[0] == 200


def test_with_local_accounts_off_only_the_directory_logs_in(tmp_path: Path) -> None:
    site = next(make_site(tmp_path, local_accounts=False))
    assert site.login("breakglass", "local password")[0] == 401
    status, body = site.login("breakglass", "directory pw")
    assert (status, body["name"]) == (200, "ldap:breakglass")


def test_role_mapping_is_by_dn_or_name() -> None:
    groups = (MemberGroup("CN=Ops, OU=Groups,DC=example,DC=com", "Ops"),)
    assert role_of(groups, ("cn=ops,ou=groups,dc=example,dc=com",), ()) is Role.ADMIN
    assert role_of(groups, (), ("ops",)) is Role.VIEWER
    assert role_of(groups, ("ops",), ("ops",)) is Role.ADMIN
    assert role_of(groups, ("cn=ops",), ("other",)) is None
    assert role_of((), ("ops",), ("ops",)) is None


@pytest.mark.parametrize(
    ("settings", "phones", "message"),
    [
        (dataclasses.replace(LDAP, base_dn=""), LdapSettings(url="ldap://dc1"), "base_dn"),
        (
            dataclasses.replace(LDAP, admin_groups=(), viewer_groups=()),
            LdapSettings(url="ldap://dc1"),
            "name a group",
        ),
        (LDAP, LdapSettings(), "needs admin.ldap.url"),
        (dataclasses.replace(LDAP, url="ldap://dc1/x"), LdapSettings(), "admin.ldap.url"),
    ],
)
def test_unusable_directory_settings(
    settings: AdminLdapSettings, phones: LdapSettings, message: str
) -> None:
    with pytest.raises(AuthError, match=message):
        AdminDirectory.of(settings, phones)
    assert AdminDirectory.of(dataclasses.replace(settings, enabled=False), phones) is None
