"""The rollout commands in process: `approve --stages`, `rollout`, `path`, `network`,
`external-policy`, `pin`, `offers` and `explain`, run by the real `ucupdates` entry point
on a data folder. Errors are one line on stderr with exit status 1 (2 for usage).

The API's side of the same operations is tests/test_api_rollouts.py; through `--server`,
tests/test_admin_remote.py; as a process, tests/test_cli.py.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from appliance.catalogue import add_test_device
from appliance.cli.main import main
from appliance.config import load_config
from appliance.model import IdentifierKind, OfferRecord, Outcome
from appliance.store import Store
from appliance.testing.records import CU6, CU7, CU8, CX600, rule_key
from appliance.testing.stores import add_rule

Run = tuple[int, str, str]


class Cli:
    def __init__(self, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data = data
        self.capsys = capsys

    def __call__(self, *argv: str) -> Run:
        self.capsys.readouterr()
        try:
            status = main(["--data-dir", str(self.data), "--actor", "ops", *argv])
        except SystemExit as e:  # argparse's usage error
            status = int(e.code or 0)
        captured = self.capsys.readouterr()
        return status, captured.out, captured.err

    def json(self, *argv: str) -> Any:
        status, out, err = self(*argv, "--json")
        assert status == 0, err
        return json.loads(out)

    def store(self) -> contextlib.closing[Store]:
        return contextlib.closing(Store.open(load_config(None, self.data).db_path))


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Rule 1: CX600 with CU7 approved and CU8 pending; rule 2: CX500 with CU8 approved
    and CU7 pending (approving it is a downgrade); rule 3: CX700 with CU8 approved."""
    data = tmp_path / "data"
    data.mkdir()
    store = Store.open(load_config(None, data).db_path)
    add_rule(store, CX600, approved=CU7, pending=CU8)
    add_rule(store, rule_key(model="CX500"), approved=CU8, pending=CU7)
    add_rule(store, rule_key(model="CX700"), approved=CU8, restore=CU6)
    store.close()
    return Cli(data, capsys)


def one_line_error(run: Run, status: int = 1) -> str:
    code, _, err = run
    assert code == status, err
    assert err.count("\n") == 1 and err.startswith("ucupdates: "), err
    return err


def test_a_staged_approval_from_approve_to_remove(cli: Cli) -> None:
    status, out, err = cli("approve", "1", "--stages", "5,25,100", "--soak-hours", "24")
    assert status == 0, err
    assert out == (
        f"rule 1 UCPhone/Polycom/CX600/A/ENU/CPE: approved {CU7} -> {CU8},"
        " staged 5/25/100 %: stage 0 (5 %)\n"
    )
    (listed,) = cli.json("rollout", "list")
    assert (listed["stage"], listed["soak_seconds"], listed["health"]["offered"]) == (0, 86400, 0)
    status, out, _ = cli("rollout", "list")
    assert out.splitlines()[1].split()[:5] == ["1", str(CX600), CU8, "0", "(5"]

    assert cli("rollout", "pause", "1", "--reason", "desk phones")[0] == 0
    err = one_line_error(cli("rollout", "advance", "1"))
    assert "paused: resume it first" in err
    status, out, _ = cli("rollout", "show", "1")
    assert "paused at" in out and "desk phones" in out and "waiting: none" in out
    assert "  in the stage: 0 of 0 known devices\n" in out  # no phone has checked yet
    assert cli("rollout", "resume", "1")[0] == 0
    status, out, _ = cli("rollout", "advance", "1")
    assert status == 0 and "stage 1 (25 %)" in out
    assert cli("rollout", "remove", "1")[1] == f"rule 1 {CX600}: staging of {CU8} removed\n"
    assert "no staged approval" in one_line_error(cli("rollout", "show", "1"))
    assert "no rule with id 9" in one_line_error(cli("rollout", "show", "9"))
    assert cli("rollout", "list")[1] == "no staged approvals\n"

    with cli.store() as store:
        actions = [e.action for e in store.events()]
    assert actions[:3] == ["rollout.stage.remove", "rollout.stage.advance", "rollout.stage.resume"]


def test_stage_the_approved_version_as_it_is(cli: Cli) -> None:
    staged = cli.json("rollout", "stage", "3", "--stages", "10,100", "--no-auto-pause")
    assert (staged["version"], staged["share"], staged["pause_percent"]) == (CU8, 10, None)
    assert "must rise" in one_line_error(cli("rollout", "stage", "3", "--stages", "50,10"))
    assert "5,25,100" in one_line_error(cli("rollout", "stage", "3", "--stages", "half"))


def test_the_downgrade_guard_names_both_versions(cli: Cli) -> None:
    status, out, err = cli("approve", "2")
    assert status == 1 and f"would move approved {CU8} back to {CU7}" in out
    assert "--allow-downgrade" in err
    err = one_line_error(cli("approve", "2", "--stages", "5,100"))
    assert f"would move approved {CU8} back to {CU7}" in err
    status, out, err = cli("approve", "2", "--allow-downgrade")
    assert status == 0 and f"approved {CU8} -> {CU7}" in out


def test_the_soak_gate_and_its_override(cli: Cli) -> None:
    with cli.store() as store:
        add_test_device(store, "lab", IdentifierKind.MAC, "00-04-F2-00-00-01", "test")
    err = one_line_error(cli("approve", "1", "--soak-gate", "1:24"))
    assert "CX600: 0 of 1 test devices have run it for 24 hours" in err
    assert "N:HOURS" in one_line_error(cli("approve", "1", "--soak-gate", "two"))
    assert "give both" in one_line_error(cli("approve", "1", "--override-soak", "why"))
    status, out, err = cli("approve", "1", "--soak-gate", "1:24", "--override-soak", "hotfix")
    assert status == 0, err
    assert "soak gate overridden: CX600: 0 of 1" in out
    with cli.store() as store:
        approve = next(e for e in store.events() if e.action == "approve")
    assert approve.actor == "ops" and approve.after["soak_override"] == "hotfix"


def test_upgrade_paths_and_explain(cli: Cli) -> None:
    step = ("--brand", "Polycom", "--model", "CX700", "--below", "4.0")
    status, out, err = cli("path", "add", *step, "--offer", CU6)
    assert status == 0, err
    assert out == f"added: UCPhone/Polycom/CX700: below 4.0 first offered {CU6}\n"
    assert [p["offer"] for p in cli.json("path", "list")] == [CU6]
    assert "below its threshold" in one_line_error(
        cli("path", "add", *step, "--offer", "3.5.6907.37")
    )
    device = ("--brand", "Polycom", "--model", "CX700", "--mac", "00-04-F2-00-00-43")
    status, out, _ = cli("explain", *device, "--reported-version", "3.5.6907.37")
    lines = out.splitlines()
    assert lines[0].startswith("upgrade-path: ")
    assert f"rule 3 {rule_key(model='CX700')}: upgrade-path; path {CU6} -> {CU8}" in lines
    explained = cli.json("explain", *device, "--reported-version", "3.5.6907.37")
    assert explained["rules"][0]["path"] == [CU6, CU8]
    assert cli("path", "remove", *step)[0] == 0
    assert "no upgrade path" in one_line_error(cli("path", "remove", *step))
    assert cli("path", "list")[1] == "no upgrade paths\n"


def test_networks_windows_and_the_external_zone(cli: Cli) -> None:
    net = ("10.20.0.0/16", "--zone", "Europe/Berlin", "--window", "22:00-05:00")
    status, out, err = cli("network", "add", *net, "--max-downloads", "20")
    assert status == 0, err
    assert out == "added: 10.20.0.0/16: 22:00-05:00 Europe/Berlin; at most 20 downloads\n"
    assert "unknown time zone" in one_line_error(
        cli("network", "add", "10.30.0.0/16", "--zone", "Mars/Base", "--window", "22:00-05:00")
    )
    assert "HH:MM-HH:MM" in one_line_error(cli("network", "add", "10.30.0.0/16", "--window", "9-5"))
    device = ("--brand", "Polycom", "--model", "CX600", "--reported-version", CU6)
    night = cli.json("explain", *device, "--address", "10.20.1.2", "--at", "2026-01-10T21:00:00Z")
    day = cli.json("explain", *device, "--address", "10.20.1.2", "--at", "2026-01-10T20:30:00Z")
    assert (night["reason"], night["window"]["open"]) == ("approved", True)
    assert (day["reason"], day["window"]["open"]) == ("outside-window", False)
    assert [n["network"] for n in cli.json("network", "list")] == ["10.20.0.0/16"]
    assert cli("network", "remove", "10.20.0.0/16")[1].startswith("removed: 10.20.0.0/16")
    assert "no rollout policy" in one_line_error(cli("network", "remove", "10.20.0.0/16"))

    assert cli("external-policy", "show")[1].startswith("external zone: no policy")
    status, out, _ = cli("external-policy", "set", "--zone", "UTC", "--window", "01:00-04:00")
    assert out == "external zone: 01:00-04:00 UTC; no caps\n"
    assert cli.json("external-policy", "show")["windows"] == ["01:00-04:00"]
    external = cli.json("explain", *device, "--external", "--at", "2026-01-10T12:00:00Z")
    assert external["reason"] == "outside-window"
    assert cli("external-policy", "clear")[0] == 0
    assert "no rollout policy" in one_line_error(cli("external-policy", "clear"))


def test_pins_hold_and_exclude(cli: Cli) -> None:
    status, out, err = cli(
        "pin", "add", "--mac", "00:04:f2:00:00:42", "--hold", CU7, "--reason", "reception"
    )
    assert status == 0, err
    assert out == f"pinned: mac 00-04-F2-00-00-42 held on {CU7}: reception\n"
    cli("pin", "add", "--serial", "64167f0666", "--exclude", "--reason", "loan phone")
    assert {(p["identifier"], p["action"]) for p in cli.json("pin", "list")} == {
        ("00-04-F2-00-00-42", "hold"),
        ("64167F0666", "exclude"),
    }
    assert cli("pin", "add", "--mac", "00-04-F2-00-00-42", "--reason", "x")[0] == 2  # usage
    assert "needs a reason" in one_line_error(
        cli("pin", "add", "--mac", "00-04-F2-00-00-43", "--exclude", "--reason", " ")
    )
    explained = cli.json(
        "explain", "--brand", "Polycom", "--model", "CX600", "--serial", "64167F0666"
    )
    assert explained["reason"] == "excluded" and explained["pins"][0]["reason"] == "loan phone"
    assert cli("pin", "remove", "--serial", "64167F0666")[1].startswith("removed: serial")
    assert "no pin" in one_line_error(cli("pin", "remove", "--serial", "64167F0666"))


def test_offers_list_what_each_device_was_offered(cli: Cli) -> None:
    stamp = "2026-11-27T11:00:00Z"
    with cli.store() as store:
        store.save_offers(
            [
                OfferRecord(
                    "00-04-F2-00-10-00", 1, CU8, CU7, stamp, stamp, 3, Outcome.STUCK, stamp, stamp
                ),
                OfferRecord(
                    "00-04-F2-00-10-01", 1, CU8, CU7, stamp, stamp, 1, Outcome.UPDATED, stamp, stamp
                ),
            ]
        )
    (stuck,) = cli.json("offers", "--outcome", "stuck")
    assert (stuck["identity"], stuck["rule_id"], stuck["offers"]) == ("00-04-F2-00-10-00", 1, 3)
    assert len(cli.json("offers", "--rule", "1")) == 2
    assert len(cli.json("offers", "--device", "00:04:f2:00:10:01")) == 1
    status, out, _ = cli("offers")
    assert out.splitlines()[0].split()[:3] == ["DEVICE", "RULE", "OFFERED"]
    assert cli("offers", "--outcome", "lost")[0] == 2
    assert cli("offers", "--rule", "7")[1] == "no offers\n"
