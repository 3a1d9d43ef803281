"""API tokens in process: made and revoked as the CLI does, sent as `Authorization: Bearer`
to the admin listener's real site over treq's memory transport. test_admin_remote.py
takes them through a serving process over TLS and through `--server`."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq

from appliance.admin import AccountError, create_token, make_admin_site, parse_expiry, revoke_token
from appliance.admin.tokens import bearer_secret, digest, find_token
from appliance.catalogue import import_package, make_sample_package
from appliance.cli.admin import add_admin_parser, run_admin
from appliance.config import Config, load_config
from appliance.model import RuleState
from appliance.passwords import hash_password
from appliance.store import Store
from appliance.testing import InlineReactor, memory_client, settle

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
BASE = "https://ucupdates.test:9443"


@dataclass
class Site:
    store: Store
    stub: StubTreq
    db: Path
    clock: list[datetime]

    def call(
        self, method: str, path: str, token: str | None, body: Any = None, **extra: str
    ) -> tuple[int, Any, Any]:
        headers = {"Accept": ["application/json"]}
        if token is not None:
            headers["Authorization"] = [f"Bearer {token}"]
        for name, value in extra.items():
            headers[name.replace("_", "-")] = [value]
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = ["application/json"]
        response = settle(
            self.stub, self.stub.request(method, BASE + path, data=data, headers=headers)
        )
        raw = settle(self.stub, response.content())
        return response.code, response.headers, json.loads(raw) if raw else None


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    clock = [NOW]
    store = Store.open(config.db_path, clock=lambda: clock[0])
    package = tmp_path / "UCUpdates.cab"
    make_sample_package(package, image_size=3000)
    import_package(store, config, package, "test")
    stub = memory_client(
        lambda _: make_admin_site(config, store, lambda: clock[0], InlineReactor())
    )
    yield Site(store, stub, config.db_path, clock)
    store.close()


def make(site: Site, name: str, role: str, expires: str | None = None) -> str:
    secret = create_token(site.store, name, role, parse_expiry(expires, NOW), "root").secret
    assert secret is not None
    return secret


def test_an_admin_token_approves_without_cookie_or_csrf_and_the_event_names_it(
    site: Site,
) -> None:
    token = make(site, "ci", "admin")
    rule = site.store.rules()[0].id
    status, _, body = site.call("POST", "/api/rules/approve", token, {"ids": [rule]})
    assert status == 200, body
    assert site.store.rule(rule).state is RuleState.APPROVED  # type: ignore[union-attr]
    assert site.store.events(limit=1)[0].actor == "token:ci"
    listed = site.store.api_token("ci")
    assert listed is not None and listed.last_used_at == "2026-12-06T09:30:00Z"


def test_a_viewer_token_reads_but_cannot_change(site: Site) -> None:
    token = make(site, "dashboard", "viewer")
    status, _, body = site.call("GET", "/api/rules", token)
    assert status == 200 and body["rules"]
    before = site.store.rules()
    status, _, body = site.call("POST", "/api/rules/approve", token, {"ids": [before[0].id]})
    assert (status, body["error"]) == (403, "a viewer cannot change anything; ask an admin")
    assert site.store.rules() == before


def test_revoked_expired_and_unknown_tokens_get_401_invalid_token(site: Site) -> None:
    revoked = make(site, "old", "admin")
    revoke_token(site.store, "old", "root")
    expiring = make(site, "short", "admin", "1")
    assert site.call("GET", "/api/rules", expiring)[0] == 200
    site.clock[0] = NOW + timedelta(days=1, seconds=1)
    for token in (revoked, expiring, "uct_" + "x" * 43, "not a token at all"):
        status, headers, body = site.call("GET", "/api/rules", token)
        assert status == 401, token
        assert headers.getRawHeaders("WWW-Authenticate") == ['Bearer error="invalid_token"']
        assert "unknown, revoked or expired" in body["error"]


def test_a_bearer_header_decides_alone_and_has_no_session(site: Site) -> None:
    token = make(site, "ci", "admin")
    # a cross-site page cannot add this header; the cookie and Origin are not looked at
    status, _, _ = site.call("GET", "/api/rules", token, Origin="https://evil.example")
    assert status == 200
    assert site.call("GET", "/api/session", token)[0] == 403
    assert site.call("POST", "/api/logout", token)[0] == 403


def test_the_token_is_stored_only_as_its_sha256(site: Site) -> None:
    token = make(site, "ci", "admin")
    assert token.startswith("uct_") and len(token) == 4 + 43  # 32 random bytes
    raw = site.db.read_bytes()
    for path in site.db.parent.glob("*.sqlite3-wal"):
        raw += path.read_bytes()
    assert token.encode() not in raw
    with sqlite3.connect(site.db) as conn:
        rows = conn.execute("SELECT token_hash FROM api_tokens").fetchall()
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(),)]


def test_a_given_secret_is_idempotent_with_update() -> None:
    store = Store.open(":memory:", clock=lambda: NOW)
    secret = "0123456789abcdef" * 4
    first = create_token(store, "ansible", "admin", None, "ansible", secret=secret, update=True)
    again = create_token(store, "ansible", "admin", None, "ansible", secret=secret, update=True)
    assert (first.changed, again.changed, first.secret) == (True, False, None)
    events = len(store.events(limit=100))
    viewer = create_token(store, "ansible", "viewer", None, "ansible", secret=secret, update=True)
    assert viewer.changed and viewer.token.role == "viewer"
    assert len(store.events(limit=100)) == events + 1
    with pytest.raises(AccountError, match="exists already"):
        create_token(store, "ansible", "admin", None, "ansible", secret=secret)
    with pytest.raises(AccountError, match="openssl rand"):
        create_token(store, "weak", "admin", None, "ansible", secret="hunter2")
    assert find_token(store, secret, NOW) is not None
    assert store.api_token("ansible").token_hash == digest(secret)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        (b"Basic YWxpY2U6cHc=", None),
        (b"Bearer uct_abc-_.~+/==", "uct_abc-_.~+/=="),
        (b"bearer  tok", "tok"),
        (b"Bearer a b", ""),
        (b"Bearer ", ""),
        (b"Bearer " + b"a" * 300, ""),
    ],
)
def test_bearer_header_parsing(header: bytes | None, expected: str | None) -> None:
    assert bearer_secret(header) == expected


def test_expiry_forms() -> None:
    assert parse_expiry(None, NOW) is None
    assert parse_expiry("never", NOW) is None
    assert parse_expiry("30", NOW) == "2027-01-05T09:30:00Z"
    assert parse_expiry("2027-01-31", NOW) == "2027-02-01T00:00:00Z"  # through that day
    for bad in ("0", "2020-01-01", "tomorrow"):
        with pytest.raises(AccountError):
            parse_expiry(bad, NOW)


# -- the command line, in process -----------------------------------------------------------


def cli(store: Store, *argv: str, stdin: str = "") -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_admin_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["admin", *argv])
    out = io.StringIO()
    status = run_admin(args, Config(), store, "root", stdin=io.StringIO(stdin), out=out)
    return status, out.getvalue()


def test_token_commands(capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(":memory:")
    status, out = cli(store, "token", "create", "ci", "--role", "viewer", "--expires", "7")
    token = out.strip()
    assert status == 0 and token.startswith("uct_") and "\n" not in token  # alone on stdout
    assert "shown only now" in capsys.readouterr().err
    status, out = cli(store, "token", "list", "--json")
    (row,) = json.loads(out)
    assert (row["name"], row["role"], row["last_used_at"]) == ("ci", "viewer", None)
    assert token not in out and digest(token) not in out
    assert cli(store, "token", "create", "ci", "--role", "admin")[0] == 1  # the name is taken
    secret = "A" * 40
    args = ("token", "create", "ops", "--role", "admin", "--secret-stdin", "--update")
    assert cli(store, *args, stdin=secret + "\n") == (
        0,
        "API token ops set (admin, expires never)\n",
    )
    status, out = cli(store, *args, stdin=secret + "\n")
    assert out == "API token ops unchanged (admin, expires never)\n"
    assert cli(store, "token", "revoke", "ci") == (0, "API token ci revoked\n")
    assert cli(store, "token", "revoke", "ci")[0] == 1
    assert cli(store, "token", "revoke", "ci", "--missing-ok")[1].endswith("nothing to remove\n")
    assert [t.name for t in store.api_tokens()] == ["ops"]


def test_admin_add_update_and_hashes(capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(":memory:")
    add = ("add", "ops", "--role", "admin", "--update", "--password-stdin")
    assert cli(store, *add, stdin="first password\n")[1] == "admin account ops added (admin)\n"
    assert cli(store, *add, stdin="first password\n")[1] == "admin account ops unchanged (admin)\n"
    status, out = cli(store, *add, stdin="second password\n")
    assert out == "admin account ops changed password (admin)\n"
    hashed = hash_password("hashed password")
    by_hash = ("add", "noc", "--role", "viewer", "--password-hash-stdin")
    assert cli(store, *by_hash, stdin=hashed + "\n")[0] == 0
    assert store.admin_account("noc").password_hash == hashed  # type: ignore[union-attr]
    assert cli(store, *by_hash, stdin=hashed + "\n")[0] == 1  # exists, and no --update
    assert cli(store, *by_hash, "--update", stdin=hashed + "\n")[1].endswith("unchanged (viewer)\n")
    assert cli(store, "add", "x", "--role", "admin", "--password-hash-stdin", stdin="md5\n")[0] == 1
    assert "argon2id" in capsys.readouterr().err
    assert cli(store, "remove", "nobody", "--missing-ok")[1].endswith("nothing to remove\n")


def test_an_upload_is_judged_by_its_token_before_its_body(site: Site) -> None:
    bad = "uct_" + "y" * 43
    status, reply, body = site.call("POST", "/api/packages?name=x.cab", bad, None)
    assert status == 401 and "API token" in body["error"]
    assert reply.getRawHeaders("WWW-Authenticate") == ['Bearer error="invalid_token"']
    viewer = make(site, "dash", "viewer")
    status, _, body = site.call("POST", "/api/packages?name=x.cab", viewer, None)
    assert (status, body["error"]) == (403, "a viewer cannot change anything; ask an admin")
