"""Package import: the catalogue after good, repeated, newer and conflicting packages."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.catalogue.actions import data_lock
from appliance.catalogue.importer import Outcome, PackageError, import_package
from appliance.catalogue.progress import ImportProgress
from appliance.catalogue.sample import SAMPLE_DEVICES, make_sample_package
from appliance.cli.main import main as cli_main
from appliance.config import Config, load_config
from appliance.model import RuleState
from appliance.store.database import Store
from appliance.testing import catalogue_state, file_tree, run_cli

VERSION = "4.0.7577.4387"


def test_import_creates_one_pending_rule_per_device_update(
    config: Config, store: Store, sample_cab: Path, tmp_path: Path
) -> None:
    result = import_package(store, config, sample_cab, "alice")

    assert result.changed
    assert [u.outcome for u in result.updates] == [Outcome.NEW_RULE] * len(SAMPLE_DEVICES)
    rules = store.rules()
    assert len(rules) == len(SAMPLE_DEVICES)
    assert {(r.pending_version, r.approved_version, r.state) for r in rules} == {
        (VERSION, None, RuleState.PENDING)
    }
    # Every file is where the protocol says, with the bytes cabextract finds in the package.
    out = tmp_path / "cabextract"
    subprocess.run(["cabextract", "-q", "-d", str(out), str(sample_cab)], check=True)
    expected = file_tree(out)
    stored = file_tree(config.store_dir)
    assert (
        stored["UCPhone/Polycom/CX600/A/ENU/4.0.7577.4387/CPE/CPE.nbt"]
        == (expected["UCPhone/Polycom/CX600/A/ENU/CPE/CPE.nbt"])
    )
    assert len(stored) == 2 * len(SAMPLE_DEVICES)  # image and signature per device
    for f in store.stored_files():
        assert stored[f.path.as_posix()] == f.sha256
    catalog = store.catalog()
    assert {f.file_name for f in catalog.files} == {"CPE.nbt"}
    assert {f.signature_file_name for f in catalog.files} == {"CPE.cat"}
    assert not any(config.staging_dir.iterdir())
    actions = [e.action for e in store.events()]
    assert actions.count("rule.create") == len(SAMPLE_DEVICES)
    assert actions[0] == "import"


def test_importing_the_same_package_again_changes_nothing(
    config: Config, store: Store, sample_cab: Path
) -> None:
    import_package(store, config, sample_cab, "alice")
    before = catalogue_state(config)

    again = import_package(store, config, sample_cab, "alice")

    assert not again.changed
    assert {u.outcome for u in again.updates} == {Outcome.UNCHANGED}
    assert catalogue_state(config) == before


def test_a_newer_package_refreshes_pending_and_keeps_approved(
    config: Config, store: Store, sample_cab: Path, tmp_path: Path
) -> None:
    import_package(store, config, sample_cab, "alice")
    run_cli(config.data_dir, "approve", "--all-pending").check_returncode()
    newer = tmp_path / "newer.cab"
    make_sample_package(newer, version="4.0.7577.4400", image_size=4096)

    result = import_package(store, config, newer, "alice")

    assert {u.outcome for u in result.updates} == {Outcome.PENDING}
    for rule in store.rules():
        assert (rule.approved_version, rule.pending_version) == (VERSION, "4.0.7577.4400")
        assert rule.state is RuleState.PENDING
    # both versions are on disk: the approved one is still served
    assert len(file_tree(config.store_dir)) == 4 * len(SAMPLE_DEVICES)


def test_same_version_with_different_bytes_is_refused(
    config: Config, store: Store, sample_cab: Path, tmp_path: Path
) -> None:
    import_package(store, config, sample_cab, "alice")
    before = catalogue_state(config)
    forged = tmp_path / "forged.cab"
    make_sample_package(forged, version=VERSION, image_size=1000)

    with pytest.raises(PackageError, match=r"forged\.cab: .*differs from the copy already"):
        import_package(store, config, forged, "alice")
    assert catalogue_state(config) == before


def test_a_removed_rule_comes_back_on_reimport_without_rewriting_files(
    config: Config, store: Store, sample_cab: Path
) -> None:
    import_package(store, config, sample_cab, "alice")
    files_before = file_tree(config.store_dir)
    run_cli(config.data_dir, "remove", "--model", "CX600").check_returncode()
    assert len(store.rules()) == len(SAMPLE_DEVICES) - 2

    result = import_package(store, config, sample_cab, "alice")

    assert sorted(u.outcome.value for u in result.updates if u.outcome is Outcome.NEW_RULE) == [
        "new rule",
        "new rule",
    ]
    assert len(store.rules()) == len(SAMPLE_DEVICES)
    assert file_tree(config.store_dir) == files_before


def test_an_exe_that_embeds_the_cab_imports_like_the_cab(
    config: Config, store: Store, sample_cab: Path, tmp_path: Path
) -> None:
    exe = tmp_path / "UCUpdates.exe"
    stub = b"MZ\x90\x00" + b"\x00" * 60 + b"This program cannot be run in DOS mode. MSCF?" * 50
    exe.write_bytes(stub + sample_cab.read_bytes() + b"\x00TRAILER" * 100)

    result = import_package(store, config, exe, "alice")

    assert len(result.updates) == len(SAMPLE_DEVICES)
    assert result.package == "UCUpdates.exe"
    assert len(store.rules()) == len(SAMPLE_DEVICES)


def test_a_package_built_by_gcab_imports(config: Config, store: Store, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    folder = layout / "UCPhone" / "Polycom" / "CX600" / "A" / "ENU" / "CPE"
    folder.mkdir(parents=True)
    (folder / "CPE.nbt").write_bytes(b"B000FF\n" + bytes(range(256)) * 4000)
    (folder / "CPE.cat").write_bytes(b"0\x82signature")
    # An updateInfo.xml in the vendor's child-element style, with no file list.
    (layout / "updateInfo.xml").write_text(
        "<Updates><Updates><Update><Version>4.0.7577.4366</Version>"
        "<DeviceType>UCPhone</DeviceType><Vendor>Polycom</Vendor><Model>CX600</Model>"
        "<Revision>A</Revision><Locale>ENU</Locale><UpdateType>CPE</UpdateType>"
        "</Update></Updates></Updates>"
    )
    package = tmp_path / "gcab.cab"
    members = [
        "updateInfo.xml",
        "UCPhone/Polycom/CX600/A/ENU/CPE/CPE.nbt",
        "UCPhone/Polycom/CX600/A/ENU/CPE/CPE.cat",
    ]
    subprocess.run(["gcab", "-c", "-z", str(package), *members], cwd=layout, check=True)

    result = import_package(store, config, package, "alice")

    assert [(str(u.key), u.version) for u in result.updates] == [
        ("UCPhone/Polycom/CX600/A/ENU/CPE", "4.0.7577.4366")
    ]
    stored = file_tree(config.store_dir)
    assert (
        stored["UCPhone/Polycom/CX600/A/ENU/4.0.7577.4366/CPE/CPE.nbt"]
        == file_tree(layout)["UCPhone/Polycom/CX600/A/ENU/CPE/CPE.nbt"]
    )


def test_a_second_import_waits_for_none_and_says_why(config: Config, sample_cab: Path) -> None:
    config.data_dir.mkdir(parents=True)
    with data_lock(config.lock_path, "test"):
        result = run_cli(config.data_dir, "import", str(sample_cab))
    assert result.returncode == 1
    assert "another import or clean-up is running" in result.stderr
    assert run_cli(config.data_dir, "import", str(sample_cab)).returncode == 0


def test_not_enough_free_space_is_refused_before_writing(tmp_path: Path, sample_cab: Path) -> None:
    cfg = tmp_path / "ucupdates.toml"
    cfg.write_text(f'data_dir = "data"\n[import]\nmin_free_bytes = {2**62}\n')
    result = run_cli(tmp_path / "data", "--config", str(cfg), "import", str(sample_cab))
    assert result.returncode == 65
    assert "not enough free space" in result.stderr
    assert file_tree(tmp_path / "data" / "DeviceUpdateStore") == {}


needs_root = pytest.mark.skipif(
    shutil.which("mount") is None or __import__("os").geteuid() != 0,
    reason="mounting a small tmpfs needs root",
)


@needs_root
def test_a_disk_that_fills_during_the_import_fails_cleanly(
    tmp_path: Path, sample_cab: Path
) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        data = small / "data"
        cfg = tmp_path / "ucupdates.toml"
        cfg.write_text(f'data_dir = "{data}"\n[import]\nmin_free_bytes = 1\n')
        tiny = tmp_path / "tiny.cab"
        make_sample_package(tiny, version="4.0.7577.4300", image_size=1024)
        assert run_cli(data, "--config", str(cfg), "import", str(tiny)).returncode == 0
        before = file_tree(data / "DeviceUpdateStore")
        config = load_config(cfg)
        filler = small / "filler"

        def another_process_fills_the_disk(phase: str) -> None:
            if phase == "staged":
                with filler.open("wb") as f, contextlib.suppress(OSError):
                    for _ in range(4096):
                        f.write(b"\0" * 4096)
                        f.flush()

        store = Store.open(config.db_path)
        with pytest.raises(PackageError, match=r"UCUpdates\.cab: No space left on device"):
            import_package(store, config, sample_cab, "alice", another_process_fills_the_disk)
        store.close()
        filler.unlink()

        assert file_tree(data / "DeviceUpdateStore") == before
        assert not any((data / "staging").iterdir())
        rules = run_cli(data, "--config", str(cfg), "rules", "--json")
        assert rules.returncode == 0
        assert json.loads(rules.stdout)[0]["pending_version"] == "4.0.7577.4300"
        assert len(json.loads(rules.stdout)) == len(SAMPLE_DEVICES)
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_an_imported_rule_keeps_the_guid_of_updateinfo(
    config: Config, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, with_guids = tmp_path / "plain.cab", tmp_path / "guids.cab"
    make_sample_package(plain, image_size=1024)
    written = make_sample_package(with_guids, image_size=1024, guids=True)
    expected = {str(u.key): u.guid for u in written}
    assert all(expected.values())

    import_package(store, config, plain, "alice")
    assert {r.guid for r in store.rules()} == {None}

    # The same version again, now with GUIDs: they are filled in, nothing else changes.
    states = {r.id: (r.pending_version, r.state) for r in store.rules()}
    again = import_package(store, config, with_guids, "alice")
    assert not again.changed
    assert {str(r.key): r.guid for r in store.rules()} == expected
    assert {r.id: (r.pending_version, r.state) for r in store.rules()} == states
    assert [e.action for e in store.events()].count("rule.guid") == len(expected)

    # A third import of the same package changes nothing at all.
    events = len(store.events())
    import_package(store, config, with_guids, "alice")
    assert len(store.events()) == events

    # `rules --json` and the table show it (the command in process).
    capsys.readouterr()
    assert cli_main(["--data-dir", str(config.data_dir), "rules", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    fields = ("device_type", "brand", "model", "revision", "locale", "update_type")
    assert {"/".join(r[f] for f in fields): r["guid"] for r in listed} == expected
    assert cli_main(["--data-dir", str(config.data_dir), "rules"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[-1] == "GUID"
    assert all(g in table for g in expected.values())


def test_a_new_rule_takes_its_guid_at_creation(
    config: Config, store: Store, tmp_path: Path
) -> None:
    package = tmp_path / "guids.cab"
    written = make_sample_package(package, image_size=1024, guids=True)
    result = import_package(store, config, package, "alice")
    assert {u.guid for u in result.updates} == {u.guid for u in written}
    assert {r.guid for r in store.rules()} == {u.guid for u in written}
    assert "rule.guid" not in [e.action for e in store.events()]


# -- a package imported again, after its stored files were changed -----------------------

CX600_IMAGE = f"UCPhone/Polycom/CX600/A/ENU/{VERSION}/CPE/CPE.nbt"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _edit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[5000] ^= 0xFF  # one byte, the size unchanged
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        pytest.param(_truncate, "truncated: 1000 of 262144 bytes", id="truncated"),
        pytest.param(_edit, "its SHA-256 differs from the recorded one", id="edited"),
        pytest.param(Path.unlink, "missing", id="deleted"),
    ],
)
def test_importing_the_package_again_repairs_its_damaged_stored_files(
    config: Config, store: Store, sample_cab: Path, damage: object, problem: str
) -> None:
    import_package(store, config, sample_cab, "alice")
    good = file_tree(config.store_dir)
    assert callable(damage)
    damage(config.store_dir / CX600_IMAGE)
    assert file_tree(config.store_dir) != good

    again = import_package(store, config, sample_cab, "bob")

    assert again.repaired == ((CX600_IMAGE, problem),)
    assert not again.changed  # the rules are as they were
    assert file_tree(config.store_dir) == good  # the recorded bytes, back from the package
    event = store.events(1)[0]
    assert (event.actor, event.action, event.target) == ("bob", "file.repair", CX600_IMAGE)
    assert event.before == {"problem": problem}
    assert not any(config.staging_dir.iterdir())


def test_the_import_command_says_which_files_it_repaired(config: Config, sample_cab: Path) -> None:
    run_cli(config.data_dir, "import", str(sample_cab)).check_returncode()
    assert "its stored files verified" in run_cli(config.data_dir, "import", str(sample_cab)).stdout
    _truncate(config.store_dir / CX600_IMAGE)
    result = run_cli(config.data_dir, "import", str(sample_cab))
    assert result.returncode == 0, result.stderr
    assert f"repaired {CX600_IMAGE} from the package: it was damaged (truncated" in result.stdout
    assert "repaired 1 stored file(s); nothing else changed" in result.stdout


def test_a_damaged_file_is_not_replaced_by_different_bytes(
    config: Config, store: Store, sample_cab: Path, tmp_path: Path
) -> None:
    import_package(store, config, sample_cab, "alice")
    _truncate(config.store_dir / CX600_IMAGE)
    before = catalogue_state(config)
    forged = tmp_path / "forged.cab"
    make_sample_package(forged, version=VERSION, image_size=1000)

    with pytest.raises(PackageError) as refused:
        import_package(store, config, forged, "alice")
    assert "differs from the copy already in the store" in str(refused.value)
    assert f"damaged in the store as well: {CX600_IMAGE} (truncated" in str(refused.value)
    assert catalogue_state(config) == before  # nothing written, the damage left as found


def test_a_damaged_file_whose_copy_in_the_package_differs_is_named_with_the_fix(
    config: Config, store: Store, sample_cab: Path, tmp_path: Path
) -> None:
    import_package(store, config, sample_cab, "alice")
    stored = config.store_dir / CX600_IMAGE
    layout = tmp_path / "layout"
    folder = layout / "UCPhone" / "Polycom" / "CX600" / "A" / "ENU" / "CPE"
    folder.mkdir(parents=True)
    (folder / "CPE.nbt").write_bytes(b"B000FF\n" + bytes(range(256)) * 1000)  # not the same
    shutil.copy(stored.with_name("CPE.cat"), folder / "CPE.cat")  # the same signature
    (layout / "updateInfo.xml").write_text(
        f"<Updates><Updates><Update><Version>{VERSION}</Version>"
        "<DeviceType>UCPhone</DeviceType><Vendor>Polycom</Vendor><Model>CX600</Model>"
        "<Revision>A</Revision><Locale>ENU</Locale><UpdateType>CPE</UpdateType>"
        "</Update></Updates></Updates>"
    )
    package = tmp_path / "other.cab"
    members = ["updateInfo.xml", "UCPhone/Polycom/CX600/A/ENU/CPE/CPE.nbt"]
    members.append("UCPhone/Polycom/CX600/A/ENU/CPE/CPE.cat")
    subprocess.run(["gcab", "-c", "-z", str(package), *members], cwd=layout, check=True)
    stored.unlink()
    before = catalogue_state(config)

    with pytest.raises(PackageError) as refused:
        import_package(store, config, package, "alice")
    message = str(refused.value)
    assert f"stored files are damaged: {CX600_IMAGE} (missing)" in message
    assert "differs from the recorded SHA-256 as well, so nothing was written" in message
    assert "import the package these versions came from" in message
    assert catalogue_state(config) == before


def test_the_progress_of_an_import_follows_its_phases(
    config: Config, store: Store, sample_cab: Path
) -> None:
    progress = ImportProgress()
    assert progress.snapshot()["phase"] == "waiting"
    seen: dict[str, dict[str, object]] = {}

    def checkpoint(phase: str) -> None:
        seen[phase] = progress.snapshot()

    import_package(store, config, sample_cab, "alice", checkpoint, progress)

    total = len(SAMPLE_DEVICES)
    size = sum(f.size for f in store.stored_files())
    # before the extraction: nothing of the 8 updates on disk yet; after it, all of them
    assert seen["staged"] == {
        "phase": "extracting", "updates": total, "updates_done": 0, "bytes": size,
        "bytes_done": 0,
    }  # fmt: skip
    assert seen["extracted"] == {**seen["staged"], "updates_done": total, "bytes_done": size}
    assert seen["committing"]["phase"] == "committing"
    assert progress.snapshot() == {**seen["extracted"], "phase": "done"}
    # a package refused leaves its progress failed
    refused = ImportProgress()
    with pytest.raises(PackageError):
        import_package(store, config, Path("/nonexistent.cab"), "alice", progress=refused)
    assert refused.snapshot()["phase"] == "failed"
