"""The Control Panel against a hostile client, in process.

The admin listener's real site receives raw HTTP on in-memory connections, each from the
client address a test chooses. The password checks wait in a queued thread pool until
the test runs them, so that many logins are truly in flight at once, as they are when
forty arrive in parallel on a real appliance.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher

from appliance.admin import add_account, make_admin_site
from appliance.admin.redirects import safe_next
from appliance.config import AdminSettings, load_config
from appliance.store import Store
from appliance.testing import QueuedReactor

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
PASSWORD = "correct horse battery"
MAX_FAILURES = 5
COOKIE = "__Host-ucupdates-session"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


@dataclass
class Panel:
    store: Store
    site: Any
    reactor: QueuedReactor
    events: list[LogEvent]

    def send(self, raw: bytes, peer: str = "192.0.2.10") -> StringTransport:
        """Open a connection from `peer`, send `raw`; the answer collects in the transport."""
        address = IPv4Address("TCP", peer, 40000)
        channel = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        return transport

    def request(self, method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: ucupdates.test:9443"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def call(self, method: str, path: str, body: bytes = b"", **headers: str) -> Answer:
        transport = self.send(self.request(method, path, body, **headers))
        self.reactor.pool.run()
        return parse(transport.value())

    def login_request(self, name: str, password: str) -> bytes:
        body = json.dumps({"name": name, "password": password}).encode()
        return self.request("POST", "/api/login", body, Content_Type="application/json")

    def session(self) -> str:
        answer = parse(self._login_now(self.login_request("alice", PASSWORD)))
        assert answer.status == 200, answer
        return answer.headers["set-cookie"].split(";", 1)[0]

    def _login_now(self, raw: bytes, peer: str = "192.0.2.99") -> bytes:
        transport = self.send(raw, peer)
        self.reactor.pool.run()
        return transport.value()

    def logged(self, event: str) -> int:
        return sum(1 for e in self.events if e.get("event") == event)


def make_panel(tmp_path: Path, **admin: Any) -> Iterator[Panel]:
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    store = Store.open(config.db_path, clock=lambda: NOW)
    add_account(store, "alice", "admin", PASSWORD, "test")
    settings: AdminSettings = replace(config.admin, max_failures=MAX_FAILURES, **admin)
    reactor = QueuedReactor()
    site = make_admin_site(config, store, lambda: NOW, reactor, settings=settings)
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield Panel(store, site, reactor, events)
    finally:
        globalLogPublisher.removeObserver(events.append)
        store.close()


@pytest.fixture
def panel(tmp_path: Path) -> Iterator[Panel]:
    yield from make_panel(tmp_path)


# -- defect 4: the lockout could be outrun by parallel logins ------------------------------------


def test_forty_parallel_wrong_logins_run_at_most_max_failures_checks(panel: Panel) -> None:
    # Before: all 40 checked (failures counted only as each check ended), none refused.
    transports = [panel.send(panel.login_request("alice", f"guess {i}")) for i in range(40)]
    assert panel.reactor.pool.submitted == MAX_FAILURES  # the checks in flight
    early = [parse(t.value()) for t in transports if t.value()]
    assert len(early) == 40 - MAX_FAILURES
    assert {a.status for a in early} == {429}
    assert all(int(a.headers["retry-after"]) >= 1 for a in early)
    assert panel.reactor.pool.run() == MAX_FAILURES
    late = [parse(t.value()) for t in transports[:MAX_FAILURES]]
    assert [a.status for a in late] == [401] * MAX_FAILURES
    assert panel.logged("admin.login.failed") == MAX_FAILURES
    account = panel.store.admin_account("alice")
    assert account is not None and account.locked_until is not None
    # locked: even the right password is refused now, without a check
    answer = parse(panel._login_now(panel.login_request("alice", PASSWORD), "192.0.2.77"))
    assert answer.status == 429
    assert panel.reactor.pool.submitted == MAX_FAILURES


def test_checks_in_flight_count_against_what_is_left_of_the_allowance(panel: Panel) -> None:
    for i in range(3):  # three failures from one address, one at a time
        assert parse(panel._login_now(panel.login_request("alice", f"x{i}"))).status == 401
    # then ten at once, each from its own address: only two checks are left for the account
    transports = [
        panel.send(panel.login_request("ALICE", f"guess {i}"), f"198.51.100.{i + 1}")
        for i in range(10)
    ]
    assert panel.reactor.pool.submitted == 3 + 2
    panel.reactor.pool.run()
    statuses = sorted(parse(t.value()).status for t in transports)
    assert statuses == [401, 401] + [429] * 8
    account = panel.store.admin_account("alice")
    assert account is not None and account.locked_until is not None


def test_parallel_logins_from_one_address_for_many_names_are_bounded(panel: Panel) -> None:
    transports = [panel.send(panel.login_request(f"user{i}", "guess")) for i in range(20)]
    assert panel.reactor.pool.submitted == MAX_FAILURES  # the address's allowance
    panel.reactor.pool.run()
    assert sorted(parse(t.value()).status for t in transports) == [401] * 5 + [429] * 15


def test_a_right_password_still_works_once_the_checks_are_done(panel: Panel) -> None:
    transports = [panel.send(panel.login_request("alice", PASSWORD)) for _ in range(3)]
    panel.reactor.pool.run()
    assert [parse(t.value()).status for t in transports] == [200] * 3
    assert panel.reactor.pool.submitted == 3
    assert panel.site.resource.panel.api.sessions.checking_accounts == {}


# -- defect 6: open redirect after login ---------------------------------------------------------

PAGES = ("/", "/updates", "/devices", "/upload")


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("/devices", "/devices"),
        ("/updates", "/updates"),
        ("/./devices", "/devices"),
        ("/updates/../devices", "/devices"),
        ("/devices?sort=model#top", "/devices"),
        (None, "/"),
        ("", "/"),
        ("/\\evil.example", "/"),  # the reported one: browsers read \ as /
        ("\\\\evil.example", "/"),
        ("/\\/evil.example", "/"),
        ("//evil.example", "/"),
        ("///evil.example", "/"),
        ("https://evil.example/updates", "/"),
        ("http:evil.example", "/"),
        ("//evil.example/updates", "/"),
        ("%2F%2Fevil.example", "/"),
        ("/%2F/evil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/\t/evil.example", "/"),  # browsers drop tabs and newlines: //evil.example
        ("/\n/evil.example", "/"),
        ("/\r\n/evil.example", "/"),
        (" //evil.example", "/"),
        ("\x00//evil.example", "/"),
        ("/\x7f/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("JaVaScRiPt:alert(1)", "/"),
        ("data:text/html,<script>alert(1)</script>", "/"),
        ("evil.example", "/"),
        ("updates", "/"),
        ("/login", "/"),
        ("/api/rules", "/"),
        ("/nothing", "/"),
        ("/" + "a" * 5000, "/"),
        ("/updates/../../../evil", "/"),
        ("/\u2215evil.example", "/"),  # division slash
        ("/\uff0fevil.example", "/"),  # fullwidth solidus
    ],
)
def test_only_the_control_panel_s_own_pages_are_next(value: str | None, target: str) -> None:
    assert safe_next(value, PAGES) == target


@pytest.mark.parametrize(
    ("query", "target"),
    [
        ("next=%2Fdevices", "/devices"),
        ("next=/%5Cevil.example", "/"),
        ("next=%2F%5C%2Fevil.example", "/"),
        ("next=%2F%2Fevil.example", "/"),
        ("next=https%3A%2F%2Fevil.example", "/"),
        ("next=%2F%09%2Fevil.example", "/"),
        ("next=%FF%FE", "/"),
        ("", "/"),
    ],
)
def test_the_login_page_carries_the_checked_target(panel: Panel, query: str, target: str) -> None:
    # Before: the page's script went to any `next` starting with one "/" (/\evil.example).
    page = panel.call("GET", "/login?" + query)
    assert page.status == 200
    assert f'data-next="{target}"'.encode() in page.body
    assert b"evil" not in page.body
    # once logged in, /login sends the admin straight there
    cookie = panel.session()
    again = panel.call("GET", "/login?" + query, Cookie=cookie)
    assert again.status == 303
    assert again.headers["location"] == target


def test_the_script_no_longer_reads_next_from_the_address_bar() -> None:
    script = (Path(__file__).parent.parent / "appliance/admin/static/app.js").read_text()
    assert 'get("next")' not in script
    assert "form.dataset.next" in script


# -- defect 7: nested JSON on the unauthenticated login ------------------------------------------


@pytest.mark.parametrize("depth", [33, 3000])
def test_deeply_nested_json_gets_one_400_and_no_traceback(panel: Panel, depth: int) -> None:
    # Before: 3,000 levels (within the default body limit) raised RecursionError: a 500
    # and a traceback in the log.
    body = b"[" * depth + b"]" * depth
    answer = panel.call("POST", "/api/login", body, Content_Type="application/json")
    assert answer.status == 400
    assert answer.json() == {"error": "the request body nests deeper than 32 levels"}
    assert not [e for e in panel.events if "log_failure" in e]


def test_a_hundred_thousand_nested_brackets_get_a_400(tmp_path: Path) -> None:
    for panel in make_panel(tmp_path, max_json_bytes=2**20):  # the body limit let it in
        for body in (b"[" * 100_000, b'{"name":' * 100_000, b"[" * 100_000 + b"]" * 100_000):
            answer = panel.call("POST", "/api/login", body, Content_Type="application/json")
            assert answer.status == 400, answer
            assert set(answer.json()) == {"error"}
            assert b"Traceback" not in answer.body
        assert not [e for e in panel.events if "log_failure" in e]
        assert panel.reactor.pool.submitted == 0  # no password was checked


def test_a_flat_login_body_still_works(panel: Panel) -> None:
    body = json.dumps({"name": "alice", "password": PASSWORD, "extra": [[1, [2]], {}]})
    answer = panel.call("POST", "/api/login", body.encode(), Content_Type="application/json")
    assert answer.status == 200


# -- defect 7: /health and OPTIONS * told strangers too much -------------------------------------


def test_health_without_a_session_says_only_the_status(panel: Panel) -> None:
    # Before: every check's detail (data folder, certificate path, listeners) and
    # `Server: TwistedWeb/<version>`.
    answer = panel.call("GET", "/health")
    assert answer.status in (200, 503)
    assert answer.json() == {"status": "fail"}  # no certificate in this data folder yet
    assert answer.headers["server"] == "ucupdates"
    assert b"/" not in answer.body and b"Twisted" not in answer.body


def test_health_with_a_session_keeps_the_detail(panel: Panel) -> None:
    answer = panel.call("GET", "/health", Cookie=panel.session())
    body = answer.json()
    assert body["status"] == "fail"
    names = [c["name"] for c in body["checks"]]
    assert names == ["config", "certificate", "store", "files", "serving"]
    assert any("/data" in c["detail"] for c in body["checks"])
    assert answer.headers["server"] == "ucupdates"


@pytest.mark.parametrize(
    ("method", "status"), [("OPTIONS", 204), ("GET", 400), ("POST", 400), ("DELETE", 400)]
)
def test_a_star_request_gets_an_empty_answer(panel: Panel, method: str, status: int) -> None:
    # Before: 200 with `Server: TwistedWeb/<version>`.
    answer = panel.call(method, "*")
    assert answer.status == status
    assert answer.headers["server"] == "ucupdates"
    assert answer.body == b""
    assert "twisted" not in json.dumps(answer.headers).lower()


@pytest.mark.parametrize("path", ["/", "/login", "/api/session", "/nothing", "/static/app.js"])
def test_no_answer_names_twisted(panel: Panel, path: str) -> None:
    answer = panel.call("GET", path)
    assert answer.headers["server"] == "ucupdates"
