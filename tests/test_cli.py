"""The admin's command line, end to end as real processes: lifecycle, test devices, output."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.catalogue.sample import SAMPLE_DEVICES, make_sample_package
from appliance.testing import REPO, run_cli
from appliance.testing import file_tree as tree

V1, V2, V3 = "4.0.7577.4366", "4.0.7577.4387", "4.0.7577.4400"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data folder with V1 imported and approved, then V2 imported (pending)."""
    data = tmp_path / "data"
    for version in (V1, V2):
        package = tmp_path / f"{version}.cab"
        make_sample_package(package, version=version, image_size=2048)
        assert run_cli(data, "import", str(package)).returncode == 0
        if version == V1:
            assert run_cli(data, "approve", "--all-pending").returncode == 0
    return data


def rules(data: Path, *filters: str) -> list[dict[str, object]]:
    result = run_cli(data, "rules", "--json", *filters)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def one(data: Path, model: str, locale: str = "ENU") -> dict[str, object]:
    (rule,) = rules(data, "--model", model, "--locale", locale)
    return rule


def test_make_run_flow_prints_the_pending_rules(tmp_path: Path) -> None:
    data = tmp_path / "var"
    made = run_cli(data, "make-sample-package", str(data / "sample" / "UCUpdates.cab"))
    assert made.returncode == 0
    assert "8 device updates" in made.stdout

    imported = run_cli(data, "import", str(data / "sample" / "UCUpdates.cab"))
    assert imported.returncode == 0, imported.stderr
    assert "UCPhone/Aastra/6725ip/A/FRA/CPE" in imported.stdout
    assert imported.stdout.count("new rule") == len(SAMPLE_DEVICES)

    listing = run_cli(data, "rules")
    lines = listing.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "DEVICE",
        "BRAND",
        "MODEL",
        "REV",
        "LOCALE",
        "TYPE",
        "APPROVED",
        "PENDING",
        "RESTORE",
        "STATE",
    ]
    assert len(lines) == 1 + len(SAMPLE_DEVICES)
    assert all(line.split()[-1] == "pending" for line in lines[1:])

    again = run_cli(data, "import", str(data / "sample" / "UCUpdates.cab"))
    assert again.returncode == 0
    assert "nothing changed" in again.stdout


def test_approve_one_rule_by_id_moves_the_versions(data: Path) -> None:
    rule = one(data, "CX600")
    result = run_cli(data, "approve", str(rule["id"]))
    assert result.returncode == 0, result.stderr
    assert f"approved {V1} -> {V2}" in result.stdout
    after = one(data, "CX600")
    assert (
        after["approved_version"],
        after["pending_version"],
        after["restore_version"],
        after["state"],
    ) == (V2, None, V1, "approved")
    # only that rule changed
    assert one(data, "CX500")["pending_version"] == V2


def test_reset_rejects_pending_and_skips_rules_without_one(data: Path) -> None:
    result = run_cli(data, "reset", "--brand", "aastra")  # filters ignore case
    assert result.returncode == 0
    assert result.stdout.count(": reset:") == 2
    for model in ("6721ip", "6725ip"):
        locale = "FRA" if model == "6725ip" else "ENU"
        r = one(data, model, locale)
        assert (r["approved_version"], r["pending_version"], r["state"]) == (V1, None, "reset")

    again = run_cli(data, "reset", "--brand", "Aastra")
    assert again.returncode == 1
    assert again.stdout.count("skipped, has no pending version to reset") == 2


def test_restore_rolls_back_and_then_has_nothing_more(data: Path) -> None:
    rule_id = str(one(data, "4120")["id"])
    assert run_cli(data, "approve", rule_id).returncode == 0
    first = run_cli(data, "restore", rule_id)
    assert first.returncode == 0
    r = one(data, "4120")
    assert (r["approved_version"], r["restore_version"], r["state"]) == (V1, None, "restored")
    # No restore version left: a restore would approve nothing, so it is refused and
    # says what phones would get, unless forced (then the event log says it was).
    second = run_cli(data, "restore", rule_id)
    assert second.returncode == 1
    assert f"skipped, has no restore version: restoring would withdraw {V1}" in second.stdout
    assert "phones would be offered no update" in second.stdout
    assert "give --force" in second.stderr
    assert one(data, "4120")["approved_version"] == V1
    forced = run_cli(data, "restore", rule_id, "--force")
    assert forced.returncode == 0 and ": restored (forced): approved" in forced.stdout
    assert one(data, "4120")["approved_version"] is None
    newest = json.loads(run_cli(data, "events", "--json", "--limit", "1").stdout)[0]
    assert (newest["action"], newest["after"]["forced"]) == ("restore", True)
    third = run_cli(data, "restore", rule_id, "--force")
    assert third.returncode == 1
    assert "skipped, has no approved or restore version to roll back" in third.stdout


def test_remove_then_clean_files_deletes_only_unreferenced_files(data: Path) -> None:
    store_dir = data / "DeviceUpdateStore"
    before = tree(store_dir)
    assert len(before) == 2 * 2 * len(SAMPLE_DEVICES)  # two versions, image + signature

    assert run_cli(data, "remove", "--model", "CX3000").returncode == 0
    assert rules(data, "--model", "CX3000") == []
    assert tree(store_dir) == before  # files stay until clean-files

    cleaned = run_cli(data, "clean-files")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "deleted 4 file(s)" in cleaned.stdout
    after = tree(store_dir)
    assert not any("/CX3000/" in p for p in after)
    assert len(after) == len(before) - 4
    assert not (store_dir / "UCPhone" / "Polycom" / "CX3000").exists()

    # approve everything twice over: V1 is still the restore version, so it stays
    assert run_cli(data, "approve", "--all-pending").returncode == 0
    assert "deleted 0 file(s)" in run_cli(data, "clean-files").stdout


def test_filters_select_rules_and_unknown_ids_are_errors(data: Path) -> None:
    assert len(rules(data, "--brand", "polycom")) == 5
    assert len(rules(data, "--locale", "deu")) == 1
    assert rules(data, "--state", "approved") == []

    nothing = run_cli(data, "approve")
    assert nothing.returncode == 1
    assert "name a rule id or a filter" in nothing.stderr
    missing = run_cli(data, "approve", "999")
    assert missing.returncode == 1
    assert "no rule with id 999" in missing.stderr
    assert one(data, "CX600")["pending_version"] == V2  # nothing changed
    no_match = run_cli(data, "approve", "--model", "CX9999")
    assert no_match.returncode == 1
    assert "no rule matches" in no_match.stderr


def test_every_change_is_in_the_event_log_with_who_and_before_after(data: Path) -> None:
    rule_id = str(one(data, "CX500")["id"])
    assert run_cli(data, "--actor", "bob", "approve", rule_id).returncode == 0
    events = json.loads(run_cli(data, "events", "--json").stdout)
    newest = events[0]
    assert (newest["actor"], newest["action"]) == ("bob", "approve")
    assert newest["before"]["pending"] == V2
    assert newest["after"] == {"approved": V2, "pending": None, "restore": V1, "state": "approved"}
    actions = [e["action"] for e in events]
    assert actions.count("import") == 2
    assert actions.count("rule.create") == len(SAMPLE_DEVICES)
    assert actions.count("rule.pending") == len(SAMPLE_DEVICES)
    assert "bob approve rule" in run_cli(data, "events").stdout


def test_test_devices_get_the_pending_version_first(data: Path) -> None:
    ordinary = run_cli(
        data,
        "explain",
        "--brand",
        "Polycom",
        "--model",
        "CX600",
        "--mac",
        "00:04:f2:00:00:01",
        "--reported-version",
        V1,
    )
    assert ordinary.stdout.startswith("up-to-date")

    added = run_cli(data, "test-device", "add", "lab phone", "--mac", "0004f2000001")
    assert added.returncode == 0, added.stderr
    assert "mac 00-04-F2-00-00-01" in added.stdout
    tester = run_cli(
        data,
        "explain",
        "--brand",
        "Polycom",
        "--model",
        "CX600",
        "--mac",
        "00-04-F2-00-00-01",
        "--reported-version",
        V1,
    )
    assert tester.stdout.startswith("pending-test-device")
    assert f"UCPhone/Polycom/CX600/A/ENU/{V2}/CPE/CPE.nbt" in tester.stdout

    by_serial = run_cli(data, "test-device", "add", "desk 2", "--serial", "64167f1234")
    assert "serial 64167F1234" in by_serial.stdout
    listing = json.loads(run_cli(data, "test-device", "list", "--json").stdout)
    assert {(d["name"], d["identifier"]) for d in listing} == {
        ("lab phone", "00-04-F2-00-00-01"),
        ("desk 2", "64167F1234"),
    }

    removed = run_cli(data, "test-device", "remove", "00:04:F2:00:00:01")
    assert removed.returncode == 0
    assert "lab phone" in removed.stdout
    assert len(json.loads(run_cli(data, "test-device", "list", "--json").stdout)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mac", "00-04-F2-00-00"], "invalid MAC address"),
        (["--mac", "00-04:F2-00-00-01"], "invalid MAC address"),
        (["--mac", "zz-04-F2-00-00-01"], "invalid MAC address"),
        (["--serial", "64167F 1234"], "invalid serial number"),
        (["--serial", "../x"], "invalid serial number"),
    ],
)
def test_invalid_test_device_identifiers_are_refused(
    data: Path, args: list[str], message: str
) -> None:
    result = run_cli(data, "test-device", "add", "bad", *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert json.loads(run_cli(data, "test-device", "list", "--json").stdout) == []


def test_a_duplicate_test_device_is_refused(data: Path) -> None:
    assert run_cli(data, "test-device", "add", "a", "--mac", "00-04-F2-00-00-01").returncode == 0
    dup = run_cli(data, "test-device", "add", "b", "--mac", "00:04:f2:00:00:01")
    assert dup.returncode == 1
    assert "exists already" in dup.stderr


def test_a_bad_config_exits_78_with_one_line_naming_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[listeners]\ninternal_https = "127.0.0.1"\n')
    result = run_cli(tmp_path / "data", "--config", str(cfg), "rules")
    assert result.returncode == 78
    assert result.stderr.strip() == (
        f"ucupdates: {cfg}: key 'listeners.internal_https': "
        "expected host:port or [v6]:port, got '127.0.0.1'"
    )
    missing = run_cli(tmp_path / "data", "--config", str(tmp_path / "nope.toml"), "rules")
    assert missing.returncode == 78
    assert "config file not found" in missing.stderr


def test_the_console_script_is_installed() -> None:
    script = shutil.which("ucupdates", path=str(REPO / ".venv" / "bin"))
    if script is None:
        pytest.skip("not run from the project's virtual environment")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    for command in (
        "import",
        "rules",
        "approve",
        "reset",
        "restore",
        "remove",
        "clean-files",
        "test-device",
        "make-sample-package",
    ):
        assert command in result.stdout


def test_a_staged_approval_as_a_process(data: Path) -> None:
    """The rollout commands as the installed command runs them (in process: elsewhere)."""
    rule = one(data, "CX600")
    staged = run_cli(data, "approve", str(rule["id"]), "--stages", "5,25,100")
    assert staged.returncode == 0, staged.stderr
    assert f"approved {V1} -> {V2}, staged 5/25/100 %: stage 0 (5 %)" in staged.stdout
    (rollout,) = json.loads(run_cli(data, "rollout", "list", "--json").stdout)
    assert (rollout["rule_id"], rollout["version"], rollout["share"]) == (rule["id"], V2, 5)
    paused = run_cli(data, "rollout", "pause", str(rule["id"]), "--reason", "desk phones")
    assert paused.returncode == 0 and "desk phones" in paused.stdout
    refused = run_cli(data, "rollout", "advance", str(rule["id"]))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "resume it first" in refused.stderr
