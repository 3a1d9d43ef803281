"""The Control Panel's site in process: login, sessions, CSRF, roles and rule actions.

The admin listener's real Site (`make_admin_site`) receives real HTTP over treq's
in-memory transport: no process, no port, milliseconds a test. test_admin_api.py keeps
the same API end to end against a serving process over TLS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq

from appliance.admin import add_account, make_admin_site
from appliance.catalogue import import_package, make_sample_package
from appliance.config import load_config
from appliance.model import RuleState
from appliance.store import Store
from appliance.testing import InlineReactor, memory_client, settle

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
COOKIE = "__Host-ucupdates-session"
PASSWORD = "correct horse battery"
BASE = "https://ucupdates.test:9443"


@dataclass
class Reply:
    code: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Browser:
    """One client of the in-memory site, keeping its session cookie and CSRF token."""

    stub: StubTreq
    cookie: str | None = None
    csrf: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        csrf: bool = True,
        raw: bytes | None = None,
    ) -> Reply:
        headers = {"Accept": ["application/json"], "Origin": [BASE]}
        if self.cookie:
            headers["Cookie"] = [f"{COOKIE}={self.cookie}"]
        if csrf and self.csrf and method in ("POST", "DELETE"):
            headers["X-CSRF-Token"] = [self.csrf]
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = ["application/json"]
        response = settle(
            self.stub, self.stub.request(method, BASE + path, data=data, headers=headers)
        )
        reply = Reply(response.code, response.headers, settle(self.stub, response.content()))
        for value in response.headers.getRawHeaders("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            if name == COOKIE:
                self.cookie = rest.split(";", 1)[0] or None
        return reply

    def login(self, name: str, password: str) -> Reply:
        reply = self.request("POST", "/api/login", {"name": name, "password": password})
        if reply.code == 200:
            self.csrf = reply.json()["csrf_token"]
        return reply


@dataclass
class Panel:
    store: Store
    stub: StubTreq
    tmp: Path

    def browser(self) -> Browser:
        return Browser(self.stub)


@pytest.fixture
def panel(tmp_path: Path) -> Iterator[Panel]:
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    store = Store.open(config.db_path, clock=lambda: NOW)
    package = tmp_path / "UCUpdates.cab"
    make_sample_package(package, image_size=3000)
    import_package(store, config, package, "test")
    add_account(store, "alice", "admin", PASSWORD, "test")
    add_account(store, "victor", "viewer", PASSWORD, "test")
    # the site's thread-pool work (password checks) runs inline
    stub = memory_client(lambda _: make_admin_site(config, store, lambda: NOW, InlineReactor()))
    yield Panel(store, stub, tmp_path)
    store.close()


def test_a_wrong_password_gets_401_and_no_session(panel: Panel) -> None:
    browser = panel.browser()
    reply = browser.login("alice", "not the password")
    assert reply.code == 401
    assert browser.cookie is None
    assert browser.request("GET", "/api/rules").code == 401


def test_an_admin_logs_in_lists_and_approves_a_rule(panel: Panel) -> None:
    browser = panel.browser()
    assert browser.login("alice", PASSWORD).code == 200
    rules = browser.request("GET", "/api/rules").json()["rules"]
    assert len(rules) == len(panel.store.rules()) > 0
    first = rules[0]["id"]
    reply = browser.request("POST", "/api/rules/approve", {"ids": [first]})
    assert reply.code == 200, reply.body
    assert panel.store.rule(first).state is RuleState.APPROVED  # type: ignore[union-attr]


def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(panel: Panel) -> None:
    browser = panel.browser()
    browser.login("alice", PASSWORD)
    before = panel.store.rules()
    reply = browser.request("POST", "/api/rules/approve", {"ids": [before[0].id]}, csrf=False)
    assert reply.code == 403
    assert panel.store.rules() == before


def test_a_viewer_reads_but_cannot_change(panel: Panel) -> None:
    browser = panel.browser()
    assert browser.login("victor", PASSWORD).code == 200
    assert browser.request("GET", "/api/rules").code == 200
    before = panel.store.rules()
    reply = browser.request("POST", "/api/rules/approve", {"ids": [before[0].id]})
    assert reply.code == 403
    assert panel.store.rules() == before


def test_an_unknown_rule_is_404(panel: Panel) -> None:
    browser = panel.browser()
    browser.login("alice", PASSWORD)
    assert browser.request("POST", "/api/rules/approve", {"ids": [99_999]}).code == 404


def test_logout_ends_the_session(panel: Panel) -> None:
    browser = panel.browser()
    browser.login("alice", PASSWORD)
    cookie = browser.cookie
    assert browser.request("POST", "/api/logout").code in (200, 204)
    browser.cookie = cookie  # a stolen cookie is no use once its session ended
    assert browser.request("GET", "/api/rules").code == 401


def test_an_uploaded_package_is_imported_and_its_new_version_is_pending(panel: Panel) -> None:
    browser = panel.browser()
    browser.login("alice", PASSWORD)
    newer = panel.tmp / "newer.cab"
    make_sample_package(newer, version="4.0.7577.4400", image_size=3000)
    job = "0123456789abcdef0123456789abcdef"  # the page picks one, to follow the import
    assert browser.request("GET", f"/api/packages/progress/{job}").code == 404  # not yet
    reply = browser.request(
        "POST", f"/api/packages?name=newer.cab&job={job}", raw=newer.read_bytes()
    )
    assert reply.code == 200, reply.body
    pending = {r.pending_version for r in panel.store.rules()}
    assert pending == {"4.0.7577.4400"}
    progress = browser.request("GET", f"/api/packages/progress/{job}").json()
    assert progress["phase"] == "done"
    assert progress["updates"] == progress["updates_done"] == len(panel.store.rules())
    assert progress["bytes"] == progress["bytes_done"] > 0
    bad_job = browser.request("POST", "/api/packages?name=x.cab&job=NOT-HEX", raw=b"MSCF")
    assert bad_job.code == 400


def test_a_corrupt_upload_is_refused_and_changes_nothing(panel: Panel) -> None:
    browser = panel.browser()
    browser.login("alice", PASSWORD)
    before = panel.store.rules()
    reply = browser.request("POST", "/api/packages?name=bad.cab", raw=b"MSCF" + b"\0" * 200)
    assert reply.code == 400
    assert "error" in reply.json()
    assert panel.store.rules() == before


def test_test_devices_are_added_listed_and_removed(panel: Panel) -> None:
    browser = panel.browser()
    browser.login("alice", PASSWORD)
    added = browser.request(
        "POST", "/api/test-devices", {"name": "lab", "mac": "00:04:f2:00:00:01"}
    )
    assert added.code == 201, added.body
    listed = browser.request("GET", "/api/test-devices").json()["test_devices"]
    assert [(d["name"], d["identifier"]) for d in listed] == [("lab", "00-04-F2-00-00-01")]
    gone = browser.request("DELETE", f"/api/test-devices/{listed[0]['id']}")
    assert gone.code in (200, 204)
    assert panel.store.test_devices() == []


def test_a_bad_mac_is_refused_with_the_reason(panel: Panel) -> None:
    browser = panel.browser()
    browser.login("alice", PASSWORD)
    reply = browser.request("POST", "/api/test-devices", {"name": "lab", "mac": "not a mac"})
    assert reply.code == 400
    assert panel.store.test_devices() == []


def test_the_event_log_shows_the_actions_newest_first(panel: Panel) -> None:
    browser = panel.browser()
    browser.login("alice", PASSWORD)
    rule = panel.store.rules()[0].id
    browser.request("POST", "/api/rules/approve", {"ids": [rule]})
    events = browser.request("GET", "/api/events").json()["events"]
    assert events[0]["action"] == "approve"
    assert events[0]["actor"] == "web:alice"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/nothing", 404),
        ("DELETE", "/api/rules", 405),
        ("GET", "/api/openapi.json", 200),
    ],
)
def test_routing(panel: Panel, method: str, path: str, status: int) -> None:
    browser = panel.browser()
    browser.login("alice", PASSWORD)
    assert browser.request(method, path).code == status


def test_without_a_session_the_pages_are_the_login_page(panel: Panel) -> None:
    browser = panel.browser()
    login_page = browser.request("GET", "/")
    assert login_page.code == 200
    assert b"<title>Log in" in login_page.body
    browser.login("alice", PASSWORD)
    page = browser.request("GET", "/")
    assert page.code == 200
    assert page.headers.getRawHeaders("Content-Type") == ["text/html; charset=utf-8"]
    assert b"<title>Log in" not in page.body
    assert browser.request("GET", "/nothing").code == 404


def test_the_rules_carry_the_guid_a_package_names(panel: Panel) -> None:
    config = load_config(None, panel.tmp / "data")
    package = panel.tmp / "guids.cab"
    make_sample_package(package, image_size=3000, guids=True)
    import_package(panel.store, config, package, "test")
    browser = panel.browser()
    browser.login("victor", PASSWORD)
    rules = browser.request("GET", "/api/rules").json()["rules"]
    assert rules and all(len(r["guid"]) == 36 for r in rules)
    assert {r["guid"] for r in rules} == {r.guid for r in panel.store.rules()}


def test_the_pages_show_the_installed_version_to_those_signed_in_only(panel: Panel) -> None:
    footer = f'<footer class="about">ucupdates {metadata.version("ucupdates")}</footer>'.encode()
    browser = panel.browser()
    assert footer not in browser.request("GET", "/login").body
    browser.login("victor", PASSWORD)
    assert footer in browser.request("GET", "/updates").body
