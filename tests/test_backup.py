"""Backups and restores in process: what a backup holds, what restore refuses, and that a
restore stopped at any point leaves the old data or the new, never a mix.

The backup under load (a serving appliance, phones checking, an import running) and a
disk that fills during a backup are in tests/test_backup_serve.py.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import sqlite3
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.catalogue import (
    Action,
    BackupError,
    RestoreError,
    apply_action,
    clean_files,
    create_backup,
    finish_restore,
    hold_serve_lock,
    prune,
    restore_backup,
)
from appliance.config import Config, load_config
from appliance.store import RuleFilter, Store, inspect_database, newest_schema_version
from appliance.store.database import _schema_scripts
from appliance.testing import approved_sample, file_tree

IMAGE_SIZE = 3000


class Stop(Exception):
    """Stands for the process being killed at a checkpoint."""


@pytest.fixture
def sample(config: Config) -> Iterator[Store]:
    store = approved_sample(config, image_size=IMAGE_SIZE)
    tls = config.tls_dir
    tls.mkdir(mode=0o700)
    (tls / "ca.pem").write_text("the test CA phones trust\n")
    (tls / "ca.key").write_text("its private key\n")
    yield store
    store.close()


def data_state(config: Config) -> dict[str, object]:
    """The data folder as phones and admins see it: rules, files, TLS files, the store."""
    store = Store.open(config.db_path)
    try:
        return {
            "rules": store.rules(),
            "files": store.stored_files(),
            "store": file_tree(config.store_dir),
            "tls": file_tree(config.tls_dir),
        }
    finally:
        store.close()


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def write_archive(path: Path, files: dict[str, bytes], **manifest: object) -> None:
    """A backup as a newer (or hostile) ucupdates might write one: `files` after a
    manifest that lists them with their hashes, `manifest` overriding its fields."""
    listed = {
        "format": 1,
        "appliance_version": "9.9.9",
        "schema_version": newest_schema_version(),
        "created_at": "2026-12-06T02:00:00Z",
        "members": [
            {"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
            for n, b in files.items()
        ],
    }
    listed.update(manifest)
    with tarfile.open(path, "w") as tar:
        for name, data in {"ucupdates-backup.json": json.dumps(listed).encode(), **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# -- backup -------------------------------------------------------------------------------


def test_a_backup_holds_the_database_every_stored_file_and_the_tls_files(
    sample: Store, config: Config, tmp_path: Path
) -> None:
    target = tmp_path / "backup.tar"
    result = create_backup(sample, config, target)

    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # password hashes, private keys
    found = members(target)
    names = list(found)
    assert names[0] == "ucupdates-backup.json"  # first: restore reads it before the rest
    manifest = json.loads(found["ucupdates-backup.json"])
    assert manifest["format"] == 1
    assert manifest["schema_version"] == newest_schema_version() == result.manifest.schema_version
    assert manifest["appliance_version"] == result.manifest.appliance_version
    listed = {m["name"]: m for m in manifest["members"]}
    assert set(listed) == set(names[1:])
    for name, data in found.items():
        if name != "ucupdates-backup.json":
            assert listed[name]["size"] == len(data)
            assert listed[name]["sha256"] == hashlib.sha256(data).hexdigest()
    store_files = {f"DeviceUpdateStore/{p}": h for p, h in file_tree(config.store_dir).items()}
    assert {n: listed[n]["sha256"] for n in listed if n.startswith("DeviceUpdateStore/")} == (
        store_files
    )
    assert found["tls/ca.key"] == b"its private key\n"
    snapshot = tmp_path / "snapshot.db"
    snapshot.write_bytes(found["ucupdates.sqlite3"])
    assert inspect_database(snapshot) == (newest_schema_version(), [])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_damaged_stored_file_fails_the_backup_naming_it_and_writes_nothing(
    sample: Store, config: Config, tmp_path: Path
) -> None:
    victim = next(p for p in sorted(config.store_dir.rglob("*.nbt")))
    damaged = bytearray(victim.read_bytes())
    damaged[100] ^= 0xFF  # same size: only the hash can tell
    victim.write_bytes(bytes(damaged))
    name = victim.relative_to(config.data_dir).as_posix()

    target = tmp_path / "backup.tar"
    with pytest.raises(BackupError, match=rf"stored file {name} is damaged \(SHA-256 "):
        create_backup(sample, config, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["UCUpdates.cab", "data"]

    victim.write_bytes(victim.read_bytes()[:-1])
    with pytest.raises(BackupError, match=rf"{name} is damaged \({IMAGE_SIZE - 1} bytes"):
        create_backup(sample, config, target)
    assert not target.exists()


def test_a_missing_stored_file_fails_the_backup_naming_it(
    sample: Store, config: Config, tmp_path: Path
) -> None:
    lost = sorted(config.store_dir.rglob("*.nbt"))[0]
    lost.unlink()
    name = lost.relative_to(config.data_dir).as_posix()
    with pytest.raises(BackupError, match=rf"stored file {name} is missing"):
        create_backup(sample, config, tmp_path / "backup.tar")
    assert not (tmp_path / "backup.tar").exists()


def test_files_a_clean_up_deletes_during_the_backup_are_left_out_by_a_new_snapshot(
    sample: Store, config: Config, tmp_path: Path
) -> None:
    rule = sample.rules()[0]
    gone = {f.path for f in sample.update_files(rule.key, rule.approved_version or "")}
    assert gone

    def a_clean_up_commits_meanwhile(phase: str) -> None:
        if phase == "snapshot" and sample.rule(rule.id) is not None:
            apply_action(sample, Action.REMOVE, RuleFilter(ids=(rule.id,)), "bob")
            clean_files(sample, config.store_dir, config.lock_path, "bob")

    result = create_backup(sample, config, tmp_path / "backup.tar", a_clean_up_commits_meanwhile)
    names = {m.name for m in result.manifest.members}
    assert not {f"DeviceUpdateStore/{p}" for p in gone} & names
    assert set(members(tmp_path / "backup.tar")) - {"ucupdates-backup.json"} == names


def test_scheduled_backups_keep_the_newest_and_sweep_what_a_killed_backup_left(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    for day in range(1, 6):
        (folder / f"ucupdates-backup-202612{day:02}T020000Z.tar").write_text("backup\n")
    killed = folder / ".ucupdates-backup-20261206T020000Z.tar.1-ab.tmp"
    killed.write_text("half a backup\n")
    (folder / ".ucupdates-backup-20261206T020000Z.tar.1-ab.db").write_text("its snapshot\n")
    running = folder / ".ucupdates-backup-20261206T020000Z.tar.2-cd.tmp"
    running.write_text("a backup being written\n")
    (folder / ".ucupdates-backup-20261206T020000Z.tar.2-cd.db").write_text("its snapshot\n")
    other = folder / "notes.txt"
    other.write_text("not ours\n")

    with running.open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as the running backup holds it
        prune(folder, 2)
    assert sorted(p.name for p in folder.iterdir()) == [
        ".ucupdates-backup-20261206T020000Z.tar.2-cd.db",
        ".ucupdates-backup-20261206T020000Z.tar.2-cd.tmp",
        "notes.txt",
        "ucupdates-backup-20261204T020000Z.tar",
        "ucupdates-backup-20261205T020000Z.tar",
    ]


# -- restore ------------------------------------------------------------------------------


def test_a_restore_brings_back_the_data_the_backup_was_taken_from(
    sample: Store, config: Config, tmp_path: Path
) -> None:
    archive = tmp_path / "backup.tar"
    create_backup(sample, config, archive)
    sample.close()
    before = data_state(config)
    for path in sorted(config.store_dir.rglob("*.nbt"))[:2]:
        path.unlink()  # lost files
    (config.tls_dir / "ca.key").write_text("a new key\n")
    config.db_path.unlink()  # and the database

    result = restore_backup(archive, config, "alice")

    assert data_state(config) == before
    assert result.previous is not None and result.previous.parent == config.data_dir
    assert (result.previous / "tls" / "ca.key").read_text() == "a new key\n"  # kept aside
    store = Store.open(config.db_path)
    event = store.events(1)[0]
    store.close()
    assert (event.actor, event.action, event.target) == ("alice", "backup.restore", "backup.tar")
    assert not [p for p in config.data_dir.iterdir() if p.name.startswith(".restore-")]


def test_a_gzipped_backup_restores_from_a_stream(
    sample: Store, config: Config, tmp_path: Path
) -> None:
    archive = tmp_path / "backup.tar"
    create_backup(sample, config, archive)
    sample.close()
    before = data_state(config)
    zipped = tmp_path / "backup.tar.gz"
    zipped.write_bytes(gzip.compress(archive.read_bytes()))
    config.db_path.unlink()

    with zipped.open("rb") as stream:  # as `restore-backup -` reads standard input
        restore_backup(Path("standard input"), config, "alice", stream=stream)
    assert data_state(config) == before


def test_a_tampered_member_is_refused_and_the_current_data_is_untouched(
    sample: Store, config: Config, tmp_path: Path
) -> None:
    archive = tmp_path / "backup.tar"
    create_backup(sample, config, archive)
    sample.close()
    raw = bytearray(archive.read_bytes())
    at = raw.index(b"tls/ca.key")  # the header of a member near the end; its data follows
    body = raw.index(b"its private key", at)
    raw[body] ^= 0x20
    archive.write_bytes(bytes(raw))
    before = data_state(config)
    tree = sorted(p.name for p in config.data_dir.iterdir())

    with pytest.raises(RestoreError, match=r"member tls/ca.key does not match its SHA-256"):
        restore_backup(archive, config, "alice")
    assert data_state(config) == before
    after = sorted(p.name for p in config.data_dir.iterdir() if p.name != "serve.lock")
    assert after == tree  # no folder left beside the data


def test_a_backup_of_a_newer_schema_or_format_is_refused_naming_both_versions(
    config: Config, tmp_path: Path
) -> None:
    newest = newest_schema_version()
    newer = tmp_path / "newer-schema.tar"
    write_archive(newer, {"ucupdates.sqlite3": b"x"}, schema_version=newest + 1)
    with pytest.raises(
        RestoreError,
        match=rf"schema version {newest + 1} \(made by ucupdates 9.9.9\); this ucupdates "
        rf"knows schema versions up to {newest}: upgrade ucupdates first",
    ):
        restore_backup(newer, config, "alice")

    newer_format = tmp_path / "newer-format.tar"
    write_archive(newer_format, {"ucupdates.sqlite3": b"x"}, format=2)
    with pytest.raises(RestoreError, match=r"backup format 2, newer than this ucupdates reads \(1"):
        restore_backup(newer_format, config, "alice")
    assert not config.db_path.exists()


def test_members_a_backup_never_holds_are_refused(config: Config, tmp_path: Path) -> None:
    for name in ("../escape", "/etc/passwd", "DeviceUpdateStore/../../x", "Logs/a.log"):
        archive = tmp_path / "hostile.tar"
        write_archive(archive, {"ucupdates.sqlite3": b"x", name: b"y"})
        with pytest.raises(RestoreError, match=r"is not one a backup holds"):
            restore_backup(archive, config, "alice")
    assert not (tmp_path / "escape").exists()


def test_a_restore_while_serve_runs_is_refused(
    sample: Store, config: Config, tmp_path: Path
) -> None:
    archive = tmp_path / "backup.tar"
    create_backup(sample, config, archive)
    (config.data_dir / "ucupdates.pid").write_text("4242\n")
    fd = hold_serve_lock(config.data_dir)  # as serve holds it while it runs
    try:
        with pytest.raises(RestoreError, match=r"serve is running on .* \(process 4242\): stop"):
            restore_backup(archive, config, "alice")
    finally:
        os.close(fd)


def test_an_older_schema_is_upgraded_after_a_backup_of_it(config: Config, tmp_path: Path) -> None:
    older = newest_schema_version() - 1
    db = tmp_path / "older.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for version, sql in _schema_scripts()[:older]:
        conn.executescript(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
            f"applied_at TEXT NOT NULL);\n{sql}\n"
            f"INSERT INTO schema_version VALUES ({version}, '2013-04-02T09:30:00Z');"
        )
    conn.close()
    archive = tmp_path / "older.tar"
    write_archive(archive, {"ucupdates.sqlite3": db.read_bytes()}, schema_version=older)

    result = restore_backup(archive, config, "alice")

    assert result.upgrade_backup is not None
    assert result.upgrade_backup.name.startswith(f"pre-upgrade-{older}-to-{older + 1}-")
    assert inspect_database(result.upgrade_backup)[0] == older
    assert inspect_database(config.db_path)[0] == older + 1


@pytest.mark.parametrize("phase", ["moved DeviceUpdateStore", "moved tls", "ready"])
def test_a_restore_stopped_after_its_commit_point_is_finished_by_the_next_command(
    sample: Store, config: Config, tmp_path: Path, phase: str
) -> None:
    archive = tmp_path / "backup.tar"
    create_backup(sample, config, archive)
    sample.close()
    restored = data_state(config)
    _change_everything(config)

    def killed(at: str) -> None:
        if at == phase:
            raise Stop(at)

    with pytest.raises(Stop):
        restore_backup(archive, config, "alice", checkpoint=killed)
    assert finish_restore(load_config(None, config.data_dir))  # as open_store does
    assert data_state(config) == restored


def test_a_restore_stopped_before_its_commit_point_leaves_the_old_data(
    sample: Store, config: Config, tmp_path: Path
) -> None:
    archive = tmp_path / "backup.tar"
    create_backup(sample, config, archive)
    sample.close()
    _change_everything(config)
    old = data_state(config)

    def killed(at: str) -> None:
        if at == "unpacked":
            raise Stop(at)

    with pytest.raises(Stop):
        restore_backup(archive, config, "alice", checkpoint=killed)
    assert data_state(config) == old
    # A kill -9 there leaves the half-built folder: the next command deletes it.
    half = config.data_dir / ".restore-20261206T020000000000Z.partial"
    (half / "DeviceUpdateStore").mkdir(parents=True)
    (half / "ucupdates.sqlite3").write_bytes(b"half a database")
    assert finish_restore(config) == [half]
    assert not half.exists()
    assert data_state(config) == old


def _change_everything(config: Config) -> None:
    """After the backup: a rule removed, a file lost, the TLS key replaced."""
    store = Store.open(config.db_path)
    store.delete_rule(store.rules()[0].id)
    store.close()
    next(iter(sorted(config.store_dir.rglob("*.nbt")))).unlink()
    (config.tls_dir / "ca.key").write_text("a new key\n")
