"""`ucupdates --server URL COMMAND`: the admin commands on a remote appliance, through the
Control Panel's API, parsed by the real `ucupdates` parser with the remote options added
as cli.py adds them."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser.panel import Panel, Reply

from appliance.admin.accounts import add_account
from appliance.admin.tokens import create_token
from appliance.catalogue.sample import make_sample_package
from appliance.cli.main import build_parser
from appliance.cli.remote import (
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    RemoteError,
    credentials,
    run_remote,
    server_token,
)
from appliance.config import load_config
from appliance.store.database import Store
from appliance.testing import run_cli

PASSWORD = "remote password"


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    data_dir = tmp_path_factory.mktemp("remote") / "data"
    data_dir.mkdir()
    store = Store.open(load_config(None, data_dir).db_path)
    add_account(store, "ops", "admin", PASSWORD, "test")
    add_account(store, "eve", "viewer", PASSWORD, "test")
    store.close()
    running = Panel(data_dir, "--fqdn", "localhost")
    yield running
    running.stop()


def remote(panel: Panel, *argv: str, user: str = "ops") -> tuple[int, str]:
    parser = build_parser()
    url = f"https://localhost:{panel.port}"
    args = parser.parse_args(["--server", url, "--server-ca", str(panel.ca_file), *argv])
    out = io.StringIO()
    return run_remote(args, user, PASSWORD, out=out), out.getvalue()


def test_remote_import_approve_and_list(
    panel: Panel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "UCUpdates.cab"
    make_sample_package(package, image_size=2000)
    status, out = remote(panel, "import", str(package))
    assert status == 0, capsys.readouterr().err
    assert "UCUpdates.cab: 8 device update(s)" in out and "new rule" in out
    status, out = remote(panel, "rules", "--model", "CX600", "--locale", "ENU")
    assert status == 0 and "CX600" in out and "pending" in out
    status, out = remote(panel, "approve", "--model", "CX600", "--locale", "ENU")
    assert status == 0 and "state approved" in out
    status, out = remote(panel, "approve", "--model", "CX600", "--locale", "ENU")
    assert status == 1 and "skipped, has no pending version" in out
    status, out = remote(panel, "events", "--limit", "2")
    assert "web:ops approve" in out
    # no restore version: refused, saying what phones would get, unless --force
    status, out = remote(panel, "restore", "--model", "CX600", "--locale", "ENU")
    assert status == 1 and "phones would be offered no update" in out
    status, out = remote(panel, "restore", "--model", "CX600", "--locale", "ENU", "--force")
    assert status == 0 and "approved -, pending -, restore -, state restored" in out


def test_remote_test_devices(panel: Panel, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = remote(panel, "test-device", "add", "lab", "--mac", "00:04:f2:00:00:42")
    assert status == 0 and "00-04-F2-00-00-42" in out
    assert "lab" in remote(panel, "test-device", "list")[1]
    status, _ = remote(panel, "test-device", "add", "bad", "--mac", "00-04")
    assert status == 1 and "invalid MAC address" in capsys.readouterr().err
    status, out = remote(panel, "test-device", "remove", "0004F2000042")
    assert status == 0 and "removed test device" in out
    assert remote(panel, "test-device", "list")[1] == "no test devices\n"


def test_remote_refusals(panel: Panel, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert remote(panel, "remove", "--all", user="eve")[0] == 1
    assert "a viewer cannot change anything" in capsys.readouterr().err
    junk = tmp_path / "junk.cab"
    junk.write_bytes(b"MSCF not really")
    assert remote(panel, "import", str(junk))[0] == 65
    assert remote(panel, "serve")[0] == 2
    parser = build_parser()
    args = parser.parse_args(["--server", f"https://localhost:{panel.port}", "rules"])
    assert run_remote(args, "ops", PASSWORD, out=io.StringIO()) == 1  # the test CA is not trusted
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err


def test_credentials_come_from_the_environment() -> None:
    args = argparse.Namespace(server="https://x", server_user=None)
    assert credentials(args, {PASSWORD_VARIABLE: "pw"}, "root") == ("root", "pw")
    args.server_user = "ops"
    assert credentials(args, {PASSWORD_VARIABLE: "pw"}, "root") == ("ops", "pw")
    with pytest.raises(RemoteError, match=PASSWORD_VARIABLE):
        credentials(args, {}, "root")  # pytest's stdin is no terminal


# -- API tokens: made by the CLI, sent over HTTPS and by --server ---------------------------


def make_token(panel: Panel, name: str, role: str) -> str:
    made = run_cli(panel.data_dir, "admin", "token", "create", name, "--role", role)
    assert made.returncode == 0, made.stderr
    assert "shown only now" in made.stderr
    return made.stdout.strip()


def test_tokens_made_by_the_cli_drive_the_https_api(panel: Panel) -> None:
    admin_token = make_token(panel, "ci", "admin")  # the CLI as a process
    store = Store.open(panel.data_dir / "ucupdates.sqlite3")
    viewer_token = create_token(store, "dash", "viewer", None, "test").secret or ""
    client = panel.client()  # no cookie, no CSRF token: every answer checked against OpenAPI

    def call(method: str, path: str, token: str, body: Any = None) -> Reply:
        return client.request(method, path, body, headers={"Authorization": f"Bearer {token}"})

    assert call("GET", "/api/rules", viewer_token).status == 200
    refused = call("POST", "/api/rules/approve", viewer_token, {"all_pending": True})
    assert (refused.status, refused.error) == (403, "a viewer cannot change anything; ask an admin")
    added = call("POST", "/api/test-devices", admin_token, {"name": "ci", "serial": "TOKEN1"})
    assert added.status == 201, added.body
    assert store.api_token("ci").last_used_at is not None  # type: ignore[union-attr]
    store.close()
    events = call("GET", "/api/events?limit=1", viewer_token).json()["events"]
    assert (events[0]["actor"], events[0]["action"]) == ("token:ci", "test-device.add")
    # revoked, and expired (its expiry moved into the past): 401, invalid_token
    assert run_cli(panel.data_dir, "admin", "token", "revoke", "dash").returncode == 0
    with sqlite3.connect(panel.data_dir / "ucupdates.sqlite3") as db:
        db.execute("UPDATE api_tokens SET expires_at = '2020-01-01T00:00:00Z' WHERE name = 'ci'")
    for token in (viewer_token, admin_token):
        reply = call("GET", "/api/rules", token)
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # only the SHA-256 is kept
    stored = b"".join(p.read_bytes() for p in panel.data_dir.glob("ucupdates.sqlite3*"))
    assert admin_token.encode() not in stored and viewer_token.encode() not in stored
    assert hashlib.sha256(admin_token.encode()).hexdigest().encode() in stored


def test_server_with_a_token_file_instead_of_a_login(panel: Panel, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(make_token(panel, "remote", "admin") + "\n")
    token_file.chmod(0o600)
    url = f"https://localhost:{panel.port}"
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "--server", url, "--server-ca", str(panel.ca_file)]
        + ["--server-token-file", str(token_file), "test-device", "add", "t", "--serial", "TOK2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert "TOK2" in done.stdout and done.stderr == ""
    args = build_parser().parse_args(
        ["--server", url, "--server-ca", str(panel.ca_file), "events", "--limit", "1"]
    )
    out = io.StringIO()
    assert run_remote(args, "", "", out=out, token=token_file.read_text().strip()) == 0
    assert "token:remote test-device.add" in out.getvalue()
    assert run_remote(args, "", "", out=io.StringIO(), token="uct_" + "0" * 43) == 1
    # an upload is authorised when its headers arrive: by the token too
    package = tmp_path / "UCUpdates.cab"
    make_sample_package(package, image_size=2000, version="4.0.7577.4999")
    args = build_parser().parse_args(
        ["--server", url, "--server-ca", str(panel.ca_file), "import", str(package)]
    )
    out = io.StringIO()
    assert run_remote(args, "", "", out=out, token=token_file.read_text().strip()) == 0
    assert "8 device update(s)" in out.getvalue()


def test_the_token_comes_from_a_file_or_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(server="https://x", server_token_file=None)
    assert server_token(args, {}) is None
    assert server_token(args, {TOKEN_VARIABLE: "uct_env"}) == "uct_env"
    args.server_token_file = tmp_path / "token"
    args.server_token_file.write_text("uct_file\n")
    args.server_token_file.chmod(0o644)
    assert server_token(args, {TOKEN_VARIABLE: "uct_env"}) == "uct_file"
    assert "can be read by others" in capsys.readouterr().err
    args.server_token_file = tmp_path / "missing"
    with pytest.raises(RemoteError, match="cannot read the token file"):
        server_token(args, {})


def test_remote_rollout_commands(
    panel: Panel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rollout commands through the API: a staged approval, a path, a window, a pin,
    explain, and a refusal as one line with status 1."""
    package = tmp_path / "UCUpdates.cab"
    make_sample_package(package, image_size=2000)
    assert remote(panel, "import", str(package))[0] == 0  # or already imported
    status, out = remote(panel, "approve", "--model", "CX500", "--stages", "5,100")
    assert status == 0, capsys.readouterr().err
    assert "staged 5/100 %: stage 0 (5 %)" in out
    status, out = remote(panel, "rollout", "list")
    assert status == 0 and "CX500" in out and "running" in out
    status, out = remote(panel, "rollout", "advance", "999")
    assert status == 1 and "no rule with id 999" in capsys.readouterr().err
    step = ("--brand", "Polycom", "--model", "CX700", "--below", "3.5")
    assert remote(panel, "path", "add", *step, "--offer", "3.5.6907.37")[0] == 0
    status, out = remote(panel, "path", "list", "--json")
    assert [p["offer"] for p in json.loads(out)] == ["3.5.6907.37"]
    net = ("10.20.0.0/16", "--zone", "Europe/Berlin", "--window", "22:00-05:00")
    status, out = remote(panel, "network", "add", *net)
    assert status == 0 and out.startswith("added: 10.20.0.0/16")
    assert remote(panel, "network", "remove", "10.20.0.0/16")[0] == 0  # the slash as %2F
    pin = ("--mac", "00-04-F2-00-00-42", "--exclude", "--reason", "loan phone")
    assert remote(panel, "pin", "add", *pin)[0] == 0
    status, out = remote(
        panel, "explain", "--brand", "Polycom", "--model", "CX600", "--mac", "00-04-F2-00-00-42"
    )
    assert status == 0 and out.startswith("excluded: ")
    status, out = remote(panel, "offers", "--json")
    assert status == 0 and json.loads(out) == []
    status, _ = remote(panel, "path", "add", *step, "--offer", "3.5.6907.37", user="eve")
    assert status == 1 and "viewer cannot change" in capsys.readouterr().err
