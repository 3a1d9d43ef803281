"""Control Panel accounts and sessions without a reactor: a store, a fake clock.

Expiry (idle and absolute), the lockout window, password changes ending sessions, the
cookie's attributes, and the `ucupdates admin` command wired as cli.py will wire it.
"""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from appliance.admin import accounts, sessions
from appliance.admin.accounts import AccountError
from appliance.cli.admin import add_admin_parser, run_admin
from appliance.cli.main import build_parser
from appliance.config import AdminSettings, Config
from appliance.passwords import verify_password
from appliance.store.database import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SETTINGS = AdminSettings(
    session_idle_seconds=600,
    session_max_seconds=3600,
    max_failures=3,
    failure_window_seconds=300,
    lockout_seconds=900,
)


@pytest.fixture
def alice(store: Store) -> accounts.AdminAccount:
    return accounts.add_account(store, "alice", "admin", "long enough", "test")


def test_accounts_are_argon2id_and_evented(store: Store, alice: accounts.AdminAccount) -> None:
    assert alice.password_hash.startswith("$argon2id$")
    assert verify_password(alice.password_hash, "long enough")
    assert store.events(1)[0].action == "admin.add"
    assert "long enough" not in json.dumps([e.after for e in store.events(10)])


@pytest.mark.parametrize(
    ("name", "role", "password", "words"),
    [
        ("bob", "root", "long enough", "unknown role"),
        ("", "admin", "long enough", "account name"),
        ("bob smith", "admin", "long enough", "account name"),
        ("bob", "admin", "short", "at least 8"),
        ("ALICE", "viewer", "long enough", "exists already"),
    ],
)
def test_bad_accounts_are_refused(
    store: Store, alice: accounts.AdminAccount, name: str, role: str, password: str, words: str
) -> None:
    with pytest.raises(AccountError, match=words):
        accounts.add_account(store, name, role, password, "test")
    assert [a.name for a in store.admin_accounts()] == ["alice"]


def test_a_session_ends_when_idle(store: Store, alice: accounts.AdminAccount) -> None:
    login = sessions.open_session(store, alice, "127.0.0.1", T0, SETTINGS)
    assert sessions.find_session(store, login.token, T0 + timedelta(seconds=500), SETTINGS)
    # each request moves the idle deadline (written at most once a minute)
    assert sessions.find_session(store, login.token, T0 + timedelta(seconds=1000), SETTINGS)
    assert sessions.find_session(store, login.token, T0 + timedelta(seconds=1650), SETTINGS) is None
    assert store.admin_session(sessions.token_hash(login.token)) is None  # and is deleted


def test_a_session_ends_at_its_absolute_expiry(store: Store, alice: accounts.AdminAccount) -> None:
    login = sessions.open_session(store, alice, "127.0.0.1", T0, SETTINGS)
    at = T0
    while at < T0 + timedelta(seconds=3500):
        at += timedelta(seconds=300)
        found = sessions.find_session(store, login.token, at, SETTINGS)
        assert (found is not None) == (at < T0 + timedelta(seconds=3600)), at


def test_the_store_keeps_only_a_hash_of_the_token(
    store: Store, alice: accounts.AdminAccount
) -> None:
    login = sessions.open_session(store, alice, "127.0.0.1", T0, SETTINGS)
    dump = "\n".join(store._conn.iterdump())
    assert login.token not in dump
    other = ("y" if login.token[0] == "x" else "x") + login.token[1:]  # one character off
    assert sessions.find_session(store, other, T0, SETTINGS) is None


def test_a_new_password_ends_every_session(store: Store, alice: accounts.AdminAccount) -> None:
    login = sessions.open_session(store, alice, "127.0.0.1", T0, SETTINGS)
    accounts.set_password(store, "alice", "another long one", "test")
    assert sessions.find_session(store, login.token, T0, SETTINGS) is None


def test_lockout_counts_failures_within_the_window(
    store: Store, alice: accounts.AdminAccount
) -> None:
    def fail(at: datetime) -> str | None:
        account = store.admin_account("alice")
        assert account is not None
        return accounts.record_failure(store, account, at, SETTINGS)

    assert fail(T0) is None
    assert fail(T0 + timedelta(seconds=400)) is None  # the first failure is out of the window
    assert fail(T0 + timedelta(seconds=450)) is None
    until = fail(T0 + timedelta(seconds=500))
    assert until == "2026-03-01T12:23:20Z"
    account = store.admin_account("alice")
    assert account is not None
    assert accounts.locked_until(account, T0 + timedelta(seconds=600)) == until
    assert accounts.locked_until(account, T0 + timedelta(seconds=1500)) is None
    sessions.open_session(store, account, "127.0.0.1", T0 + timedelta(seconds=1500), SETTINGS)
    account = store.admin_account("alice")
    assert account is not None and account.failures == 0 and account.locked_until is None


def test_address_failures() -> None:
    failures = accounts.AddressFailures(SETTINGS)
    for t in (0.0, 10.0):
        failures.fail("192.0.2.1", t)
    assert failures.locked("192.0.2.1", 11.0) is None
    failures.fail("192.0.2.1", 20.0)
    assert failures.locked("192.0.2.1", 21.0) == pytest.approx(899.0)
    assert failures.locked("192.0.2.2", 21.0) is None
    assert failures.locked("192.0.2.1", 920.0) is None


def test_the_cookie_and_its_parsing() -> None:
    cookie = sessions.session_cookie("tok", SETTINGS)
    assert cookie == (
        b"__Host-ucupdates-session=tok; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600"
    )
    header = [b"theme=dark; __Host-ucupdates-session=abc; other=1"]
    assert sessions.cookie_token(header) == "abc"
    assert sessions.cookie_token([b"ucupdates-session=abc"]) is None
    assert sessions.cookie_token(None) is None


# -- `ucupdates admin`, wired as cli.py wires it -------------------------------------------


def wired_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "admin" not in sub.choices:
        add_admin_parser(sub)
    return parser


def admin_command(config: Config, store: Store, *argv: str, stdin: str = "") -> tuple[int, str]:
    args = wired_parser().parse_args(["admin", *argv])
    out = io.StringIO()
    status = run_admin(args, config, store, "root", stdin=io.StringIO(stdin), out=out)
    return status, out.getvalue()


def test_admin_command(config: Config, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = admin_command(
        config, store, "add", "alice", "--role", "admin", "--password-stdin", stdin="s3cret pass\n"
    )
    assert status == 0 and out == "admin account alice added (admin)\n"
    status, _ = admin_command(
        config, store, "add", "vic", "--role", "viewer", "--password-stdin", stdin="s3cret pass\n"
    )
    status, out = admin_command(config, store, "list", "--json")
    listed = json.loads(out)
    assert [(a["name"], a["role"]) for a in listed] == [("alice", "admin"), ("vic", "viewer")]
    assert admin_command(config, store, "role", "vic", "admin")[0] == 0
    assert store.admin_account("vic").role == "admin"  # type: ignore[union-attr]
    status, _ = admin_command(
        config, store, "add", "bob", "--role", "admin", "--password-stdin", stdin="short\n"
    )
    assert status == 1 and "at least 8" in capsys.readouterr().err
    status, _ = admin_command(config, store, "add", "bob", "--role", "admin", stdin="")
    assert status == 2 and "--password-stdin" in capsys.readouterr().err
    assert admin_command(config, store, "unlock", "alice")[0] == 0
    assert admin_command(config, store, "remove", "vic")[0] == 0
    assert admin_command(config, store, "remove", "vic")[0] == 1
    assert [e.action for e in store.events(10)][:3] == [
        "admin.remove",
        "admin.unlock",
        "admin.role",
    ]
    with pytest.raises(SystemExit):
        wired_parser().parse_args(["admin", "add", "x", "--role", "root"])
