"""`ucupdates --server URL COMMAND`: the admin commands on a remote appliance, through the
Control Panel's API, parsed by the real `ucupdates` parser with the remote options added
as cli.py adds them."""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser.panel import Panel

from appliance.admin.accounts import add_account
from appliance.catalogue.sample import make_sample_package
from appliance.cli.main import build_parser
from appliance.cli.remote import (
    PASSWORD_VARIABLE,
    RemoteError,
    credentials,
    run_remote,
)
from appliance.config import load_config
from appliance.store.database import Store

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
