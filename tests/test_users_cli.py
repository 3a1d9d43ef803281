"""`ucupdates user add|passwd|remove|list` as real processes, as an admin runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.catalogue.actions import add_user
from appliance.config import load_config
from appliance.model import User
from appliance.passwords import verify_password
from appliance.store.database import Store
from appliance.testing import run_cli

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "Tr0ub4dor&3 with spaces"


def stored(data: Path, name: str) -> User | None:
    store = Store.open(load_config(None, data).db_path)
    try:
        return store.user(name)
    finally:
        store.close()


def password_hash(data: Path, name: str) -> str:
    user = stored(data, name)
    assert user is not None, f"no user {name} in the store"
    return user.password_hash


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data folder with the user alice (added in process: the CLI's add is tested below)."""
    data = tmp_path / "data"
    data.mkdir()
    store = Store.open(load_config(None, data).db_path)
    try:
        add_user(store, "alice", PASSWORD, "setup")
    finally:
        store.close()
    return data


def test_add_then_list_shows_the_user_with_an_argon2id_hash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = run_cli(data, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "user alice added"
    assert PASSWORD not in added.stdout + added.stderr

    listing = run_cli(data, "user", "list")
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["NAME", "ADDED", "CHANGED", "DISABLED", "NTLM"]
    assert [r.split()[0] for r in rows] == ["alice"]
    assert rows[0].split()[-2:] == ["no", "yes"]  # not disabled; can sign in with NTLM

    as_json = run_cli(data, "user", "list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    (user,) = json.loads(as_json.stdout)
    assert (user["name"], user["disabled"], user["ntlm"]) == ("alice", False, True)
    assert user["created_at"] and user["updated_at"]
    assert "password_hash" not in user and "nt_hash" not in user

    hashed = password_hash(data, "alice")
    assert hashed.startswith("$argon2id$")
    assert PASSWORD not in hashed
    assert verify_password(hashed, PASSWORD)
    assert not verify_password(hashed, PASSWORD + "x")


def test_a_password_line_ending_in_crlf_is_the_password_without_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = run_cli(data, "user", "add", "bob", "--password-stdin", stdin=PASSWORD + "\r\n")
    assert added.returncode == 0, added.stderr
    assert verify_password(password_hash(data, "bob"), PASSWORD)


@pytest.mark.parametrize(
    "name", [pytest.param("alice", id="same"), pytest.param("ALICE", id="case")]
)
def test_a_duplicate_user_is_refused(data: Path, name: str) -> None:
    before = password_hash(data, "alice")
    result = run_cli(data, "user", "add", name, "--password-stdin", stdin="other\n")
    assert result.returncode == 1
    assert result.stderr.strip() == f"ucupdates: user {name!r} exists already"
    assert password_hash(data, "alice") == before  # the first alice keeps her password


def test_a_name_with_a_colon_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_cli(data, "user", "add", "bob:x", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.returncode == 1
    assert "':'" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert stored(data, "bob:x") is None


@pytest.mark.parametrize(
    "stdin", [pytest.param("\n", id="empty-line"), pytest.param("", id="nothing")]
)
def test_an_empty_password_is_refused(tmp_path: Path, stdin: str) -> None:
    data = tmp_path / "data"
    result = run_cli(data, "user", "add", "bob", "--password-stdin", stdin=stdin)
    assert result.returncode == 1
    assert "password" in result.stderr
    assert stored(data, "bob") is None


@pytest.mark.parametrize("verb", ["add", "passwd"])
def test_without_password_stdin_and_no_terminal_says_what_to_do(data: Path, verb: str) -> None:
    before = password_hash(data, "alice")
    result = run_cli(data, "user", verb, "alice", stdin=NEW_PASSWORD + "\n")  # a pipe, no tty
    assert result.returncode == 2
    assert "--password-stdin" in result.stderr
    assert password_hash(data, "alice") == before


def test_passwd_changes_the_password(data: Path) -> None:
    before = password_hash(data, "alice")
    result = run_cli(data, "user", "passwd", "alice", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    assert "alice" in result.stdout
    after = password_hash(data, "alice")
    assert after != before
    assert after.startswith("$argon2id$")
    assert verify_password(after, NEW_PASSWORD)
    assert not verify_password(after, PASSWORD)


def test_passwd_of_an_unknown_user_fails(data: Path) -> None:
    result = run_cli(data, "user", "passwd", "bob", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert result.returncode == 1
    assert "no user 'bob'" in result.stderr
    assert stored(data, "bob") is None


def test_remove_deletes_the_user_and_a_second_remove_fails(data: Path) -> None:
    removed = run_cli(data, "user", "remove", "alice")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "user alice removed"
    assert stored(data, "alice") is None

    listing = run_cli(data, "user", "list")
    assert listing.stdout.strip() == "no users"

    again = run_cli(data, "user", "remove", "alice")
    assert again.returncode == 1
    assert "no user 'alice'" in again.stderr


def test_the_event_log_records_user_changes_without_passwords(tmp_path: Path) -> None:
    data = tmp_path / "data"
    steps = [
        (("user", "add", "alice", "--password-stdin"), PASSWORD + "\n"),
        (("user", "passwd", "alice", "--password-stdin"), NEW_PASSWORD + "\n"),
        (("user", "remove", "alice"), None),
    ]
    for args, stdin in steps:
        result = run_cli(data, "--actor", "carol", *args, stdin=stdin)
        assert result.returncode == 0, result.stderr

    as_json = run_cli(data, "events", "--json")
    assert as_json.returncode == 0, as_json.stderr
    events = json.loads(as_json.stdout)
    assert [(e["action"], e["target"], e["actor"]) for e in events] == [
        ("user.remove", "user alice", "carol"),
        ("user.passwd", "user alice", "carol"),
        ("user.add", "user alice", "carol"),
    ]
    text = run_cli(data, "events")
    assert text.returncode == 0, text.stderr
    for output in (as_json.stdout, text.stdout):
        assert PASSWORD not in output
        assert NEW_PASSWORD not in output
        assert "$argon2" not in output


@pytest.mark.parametrize(
    ("stop", "status", "says"),
    [(KeyboardInterrupt, 130, "interrupted"), (EOFError, 2, "input ended")],
    ids=["ctrl-c", "ctrl-d"],
)
@pytest.mark.parametrize(
    "argv", [["user", "add", "bob"], ["admin", "add", "bob", "--role", "admin"]]
)
def test_a_password_prompt_left_with_ctrl_c_or_ctrl_d_ends_in_one_line(
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stop: type[BaseException],
    status: int,
    says: str,
) -> None:
    import getpass
    import sys

    from appliance.cli.main import main

    def prompt(_: str = "") -> str:
        raise stop()

    monkeypatch.setattr(getpass, "getpass", prompt)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    assert main(["--data-dir", str(data), *argv]) == status
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(f"ucupdates: {says}"), lines
    assert lines[0].endswith("nothing changed")
    assert stored(data, "bob") is None
