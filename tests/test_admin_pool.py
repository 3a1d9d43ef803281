"""Two Control Panels on one PostgreSQL store: what a pool's nodes share.

Two admin server processes (`tests/browser/server.py --dsn-file`, the wiring `serve` uses)
on one throwaway PostgreSQL, each with the reactor guard set to raise: a PostgreSQL store
call on the reactor thread fails its request (a 500) and is logged. A session made on one
node is valid on the other and a logout on either ends it; a lockout started on one holds
on the other (an account's, a client address's); an import and an approval made on one
are in the other's event log. Every documented operation is called on a node, and no
answer is a 500. The phones' authenticator shares its lockouts the same way (in process,
two authenticators on the one store).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser.panel import OPENAPI, Client, Panel
from test_admin_api import _raw_tls, _read_reply, _upload_head
from twisted.internet import defer

from appliance.admin import pages_rollouts
from appliance.admin.accounts import add_account
from appliance.admin.pages import NAV
from appliance.catalogue.sample import make_sample_package
from appliance.config import AuthSettings
from appliance.phones import Authenticator, SharedLockouts
from appliance.phones.credentials import AuthReason, AuthResult
from appliance.store import Store
from appliance.testing import (
    MemoryDirectory,
    PoolNode,
    Postgres,
    basic_credentials,
    fired,
    pool_ca,
    pool_nodes,
    throwaway_postgres,
)
from appliance.testing.pool import FQDN

ADMIN, PASSWORD = "alice", "correct horse battery"
MAX_FAILURES = 3
MAX_UPLOAD = 400_000


@dataclass
class Pool:
    server: Postgres
    a: Panel
    b: Panel


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    folder = tmp_path_factory.mktemp("admin-pool")
    with throwaway_postgres() as server:
        store = Store.open_postgresql(server.conninfo)
        for name in (ADMIN, "locky"):
            add_account(store, name, "admin", PASSWORD, "test")
        store.close()
        dsn = folder / "dsn"
        dsn.touch(mode=0o600)
        dsn.write_text(server.conninfo + "\n")
        before = os.environ.get("UCUPDATES_REACTOR_GUARD")
        os.environ["UCUPDATES_REACTOR_GUARD"] = "raise"  # the panels inherit it
        panels: list[Panel] = []
        try:
            for name in ("a", "b"):
                options = ["--dsn-file", str(dsn), "--max-failures", str(MAX_FAILURES)]
                options += ["--max-upload", str(MAX_UPLOAD)]
                panels.append(Panel(folder / name, *options))
        finally:
            if before is None:
                os.environ.pop("UCUPDATES_REACTOR_GUARD", None)
            else:
                os.environ["UCUPDATES_REACTOR_GUARD"] = before
        try:
            yield Pool(server, *panels)
        finally:
            for panel in panels:
                panel.stop()
        for panel in panels:
            log = panel.log_text()
            assert "ReactorBlockingError" not in log and "reactor thread" not in log, log
            assert "Traceback" not in log, log


def _as(panel: Panel, client: Client, source: str = "127.0.0.1") -> Client:
    """`client`'s session (cookie and CSRF token) on another node."""
    other = panel.client(source)
    other.cookie, other.csrf = client.cookie, client.csrf
    return other


def test_a_session_made_on_one_node_is_valid_on_the_other(pool: Pool) -> None:
    on_a = pool.a.client()
    assert on_a.login(ADMIN, PASSWORD).status == 200
    on_b = _as(pool.b, on_a)
    assert on_b.request("GET", "/api/session").json()["name"] == ADMIN
    assert on_b.request("GET", "/updates").status == 200  # a page, its session looked up
    assert on_b.request("POST", "/api/logout").status == 200
    assert on_a.request("GET", "/api/session").status == 401  # ended everywhere


def test_an_account_locked_on_one_node_is_locked_on_the_other(pool: Pool) -> None:
    on_a = pool.a.client("127.0.0.21")
    for _ in range(MAX_FAILURES):
        assert on_a.login("locky", "wrong password!").status == 401
    assert on_a.login("locky", PASSWORD).status == 429
    reply = pool.b.client("127.0.0.22").login("locky", PASSWORD)
    assert reply.status == 429 and "for this account" in reply.error


def test_an_address_locked_on_one_node_is_locked_on_the_other(pool: Pool) -> None:
    on_a = pool.a.client("127.0.0.23")
    for n in range(MAX_FAILURES):
        assert on_a.login(f"nobody{n}", "wrong password!").status == 401
    reply = pool.b.client("127.0.0.23").login(ADMIN, PASSWORD)
    assert reply.status == 429 and "from this address" in reply.error
    assert pool.b.client("127.0.0.24").login(ADMIN, PASSWORD).status == 200  # others go on


def test_an_import_and_an_approval_on_one_node_are_in_the_other_s_event_log(
    pool: Pool, tmp_path: Path
) -> None:
    cab = tmp_path / "UCUpdates.cab"
    make_sample_package(cab, image_size=3000)
    on_a = pool.a.client()
    assert on_a.login(ADMIN, PASSWORD).status == 200
    reply = on_a.request("POST", "/api/packages?name=UCUpdates.cab", raw=cab.read_bytes())
    assert reply.status == 200, reply.body  # its session looked up before the body is read
    rules = on_a.request("GET", "/api/rules").json()["rules"]
    reply = on_a.request("POST", "/api/rules/approve", {"ids": [rules[0]["id"]]})
    assert reply.status == 200, reply.body
    on_b = pool.b.client()
    assert on_b.login(ADMIN, PASSWORD).status == 200
    actions = [e["action"] for e in on_b.request("GET", "/api/events").json()["events"]]
    assert "approve" in actions and "import" in actions
    assert len(on_b.request("GET", "/api/rules").json()["rules"]) == len(rules)


def test_an_upload_without_a_session_is_refused_before_its_body(pool: Pool) -> None:
    stranger = pool.a.client()
    stranger.cookie, stranger.csrf = "made-up", "made-up"
    reply = stranger.request("POST", "/api/packages?name=x.cab", raw=b"MSCF" + bytes(5000))
    assert reply.status == 401


def test_uploads_refused_by_their_headers_or_their_size(pool: Pool) -> None:
    """While the caller is looked up the connection reads nothing; then the upload goes on
    as on SQLite: over the limit by its Content-Length (413, before its body), by its
    chunks (413, cut off), or empty (400, its empty body arrived with the headers)."""
    admin = pool.a.client()
    assert admin.login(ADMIN, PASSWORD).status == 200
    with _raw_tls(pool.a) as sock:
        sock.sendall(_upload_head(admin, "Content-Length: 50000000\r\n"))
        status, _, body = _read_reply(sock)
    assert status == 413 and b"over the upload limit" in body
    piece = b"\0" * (MAX_UPLOAD + 1000)
    with _raw_tls(pool.a) as sock:
        sock.sendall(_upload_head(admin, "Transfer-Encoding: chunked\r\n"))
        sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        status, _, body = _read_reply(sock)
    assert status == 413 and b"request body over" in body
    reply = admin.request("POST", "/api/packages?name=x.cab", raw=b"")  # Content-Length: 0
    assert reply.status == 400 and reply.error == "the upload is empty"
    assert not list((pool.a.data_dir / "uploads").glob("*")), "nothing left behind"


def test_every_documented_operation_answers_without_a_500(pool: Pool) -> None:
    """The API and the pages with the reactor guard raising: a store call on the reactor
    thread would be a 500 (and a line in the log, which the fixture checks)."""
    admin = pool.b.client()
    assert admin.login(ADMIN, PASSWORD).status == 200
    for template, item in OPENAPI["paths"].items():
        for method in item:
            if template in ("/api/logout", "/api/login"):
                continue
            path = template.replace("{action}", "approve").replace("{id}", "999")
            path = path.replace("{job}", "0" * 16)
            reply = admin.request(method.upper(), path, check=False)
            assert reply.status < 500, (method, path, reply.body)
    for page in ("/", "/login", *[href for href, _ in NAV], *pages_rollouts.TITLES):
        assert admin.request("GET", page).status in (200, 303), page
    assert admin.request("GET", "/health").status in (200, 503)


def test_a_phone_lockout_on_one_node_holds_on_the_other(pool: Pool) -> None:
    """Two authenticators on one store: the second learns of the first's lockout at its
    next failed check, and answers 429 where it would have answered 401."""
    settings = AuthSettings(max_failures=2, lockout_seconds=600)
    stores = [Store.open_postgresql(pool.server.conninfo) for _ in range(2)]
    try:
        nodes = [
            Authenticator(
                MemoryDirectory(alice="right password"),
                settings,
                lambda: 1000.0,
                run_blocking=defer.maybeDeferred,
                shared=SharedLockouts(store, name),
            )
            for store, name in zip(stores, ("a", "b"), strict=True)
        ]
        results = [_basic(nodes[0], "alice", f"guess {n}", "10.0.0.1") for n in range(3)]
        assert results[-1].reason is AuthReason.LOCKED_OUT
        assert stores[1].lockouts("phone.", 0.0)  # written for the pool
        # the other node, from another address: the user name's lockout holds there too
        assert _basic(nodes[1], "alice", "guess 9", "10.0.0.2").status == 429
    finally:
        for store in stores:
            store.close()


def _basic(auth: Authenticator, user: str, password: str, source: str) -> AuthResult:
    return fired(auth.authenticate(basic_credentials(user, password), source))


def test_two_serve_processes_list_each_other_on_the_pool_page(pool: Pool, tmp_path: Path) -> None:
    """`ucupdates serve` itself (the wiring of service.py), reactor guard raising: each node
    writes its heartbeat, and the Control Panel of either lists both as live primaries."""
    dsn = pool.server.create_database("serve_pool")
    ca = pool_ca(tmp_path / "ca")
    nodes = [PoolNode(name, tmp_path / name, dsn, ca) for name in ("a", "b")]
    added = nodes[0].cli(
        "admin", "add", ADMIN, "--role", "admin", "--password-stdin", stdin=PASSWORD
    )
    assert added.returncode == 0, added.stderr
    os.environ["UCUPDATES_REACTOR_GUARD"] = "raise"  # the serve processes inherit it
    try:
        with pool_nodes(*nodes):
            names = {f"{socket.gethostname()}:{node.ports['admin']}" for node in nodes}
            admin = Client(nodes[1].ports["admin"], ca, FQDN)
            assert admin.login(ADMIN, PASSWORD).status == 200
            view: Any = {}
            for _ in range(100):  # the first heartbeats are written as each node starts
                view = admin.request("GET", "/api/pool").json()
                if {n["name"] for n in view["nodes"]} == names:
                    break
                time.sleep(0.1)
            assert {n["name"] for n in view["nodes"]} == names
            assert all(n["live"] and n["role"] == "primary" for n in view["nodes"])
            assert view["node"] == f"{socket.gethostname()}:{nodes[1].ports['admin']}"
            assert view["backend"] == "postgresql" and view["branch"] is None
            assert admin.request("GET", "/pool").status == 200
    finally:
        del os.environ["UCUPDATES_REACTOR_GUARD"]
