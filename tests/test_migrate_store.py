"""`ucupdates migrate-store`: an SQLite appliance moved into a real PostgreSQL store, as a
process, and checked from both sides (docs/pool.md, "Moving an appliance into a pool").

One server for the module's tests (the session's `store_postgres`), a new empty database
per test; the appliance is built in process (the sample package, a newer version staged
5/25/100 % on one rule, a pin, a test device, a phone user, an admin account, a device).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from appliance.catalogue import (
    add_test_device,
    approve_staged,
    hold_serve_lock,
    import_package,
    make_sample_package,
    pin_device,
)
from appliance.config import Config, load_config
from appliance.model import (
    Device,
    IdentifierKind,
    Pin,
    PinAction,
    Role,
    StageSchedule,
    Zone,
)
from appliance.store import Store
from appliance.testing import Postgres
from appliance.testing.processes import REPO, run_cli
from appliance.testing.stores import approved_sample, catalogue_state
from tests.older_schema import older_database

NEWER = "4.0.7577.4400"
PINNED = "00-04-F2-00-00-01"
TESTER = "00-04-F2-A1-B2-C3"
pytestmark = pytest.mark.slow  # the CLI as a process, a real PostgreSQL

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
_databases = itertools.count()


def build_appliance(data: Path) -> None:
    """An SQLite appliance as an admin leaves it after a while, in `data`."""
    config = load_config(None, data)
    store = approved_sample(config)
    try:
        newer = data.parent / "newer.cab"
        make_sample_package(newer, version=NEWER)
        import_package(store, config, newer, "alice")
        staged = store.rules()[0]
        approve_staged(store, staged.id, (5, 25, 100), StageSchedule(), "alice")
        pin = Pin(IdentifierKind.MAC, PINNED, PinAction.HOLD, "lab phone", "4.0.7577.4387")
        pin_device(store, pin, "alice")
        add_test_device(store, "desk", IdentifierKind.MAC, TESTER, "alice")
        store.add_user("bob", HASH, "0" * 32)
        store.add_admin_account("root", Role.ADMIN, HASH)
        now = store.now()
        store.record_device(
            Device(
                PINNED, PINNED, None, "UCPhone", "Polycom", "CX600", "A", "ENU",
                "4.0.7577.4366", Zone.INTERNAL, "10.0.0.7", None, now, now,
            )
        )  # fmt: skip
    finally:
        store.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The appliance's data folder, built once for the module (each test gets a copy)."""
    data = tmp_path_factory.mktemp("appliance") / "data"
    build_appliance(data)
    return data


@pytest.fixture
def appliance(built: Path, tmp_path: Path) -> Config:
    """A copy of the built appliance's data folder for this test."""
    shutil.copytree(built, tmp_path / "data")
    return load_config(None, tmp_path / "data")


def target(server: Postgres, tmp_path: Path) -> tuple[str, Path]:
    """A new empty database: its connection string, and a 0600 file holding it."""
    dsn = server.create_database(f"migrate_{next(_databases)}")
    path = tmp_path / "target.dsn"
    path.write_text(dsn)
    path.chmod(0o600)
    return dsn, path


def pool_config(tmp_path: Path, dsn_file: Path) -> Path:
    """A configuration whose store is the PostgreSQL one (a data folder of its own)."""
    path = tmp_path / "pool.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "pool-data"}"\n\n'
        f'[store]\nbackend = "postgresql"\ndsn_file = "{dsn_file}"\n'
    )
    return path


def snapshot(store: Store) -> tuple[object, ...]:
    """What the decision and the admin read, in an order that does not hang on the engine."""
    catalog = store.catalog()
    return (
        sorted(catalog.rules, key=lambda r: r.id),
        sorted(catalog.files, key=lambda f: str(f.path)),
        catalog.test_macs,
        catalog.test_serials,
        sorted(store.test_devices(), key=lambda d: d.id),
        sorted(store.users(), key=lambda u: u.id),
        store.rollout_policy(),
        sorted(store.stored_files(), key=lambda s: str(s.path)),
    )


def test_an_appliance_moves_into_postgresql_and_answers_the_same(
    appliance: Config, store_postgres: Postgres, tmp_path: Path
) -> None:
    dsn, dsn_file = target(store_postgres, tmp_path)
    before = catalogue_state(appliance)
    done = run_cli(appliance.data_dir, "migrate-store", "--dsn-file", str(dsn_file), "--json")
    assert done.returncode == 0, done.stderr
    assert catalogue_state(appliance) == before  # the SQLite appliance is only read
    summary = json.loads(done.stdout)
    assert summary["migrated"] and summary["verified"]
    assert summary["tables"]["rules"] == 8 and summary["tables"]["staged_approvals"] == 1
    assert summary["files"] == 32 and summary["blobs"] == summary["files"]
    assert "copied rules: 8 row(s)" in done.stderr
    assert dsn not in done.stdout + done.stderr  # the password is never shown

    source, pool = Store.open(appliance.db_path), Store.open_postgresql(dsn)
    try:
        assert snapshot(pool) == snapshot(source)
        assert pool.rollout_salt() == source.rollout_salt()  # every device keeps its bucket
        assert pool.blob_hashes() == {s.sha256 for s in source.stored_files()}
        # the identity sequences run past the copied ids: a new row gets a new id
        device = pool.add_test_device("later", IdentifierKind.SERIAL, "LATER1")
        assert device.id > max(d.id for d in source.test_devices())
        pool.remove_test_device(device.id)
    finally:
        source.close()
        pool.close()

    # the same answers through the command line, on either store
    pool_toml = pool_config(tmp_path, dsn_file)
    for command in (
        ["rules"],
        ["explain", "--brand", "Polycom", "--model", "CX600", "--mac", PINNED],
        ["explain", "--brand", "Polycom", "--model", "CX600", "--mac", TESTER],
        ["rollout", "list"],
    ):
        on_sqlite = run_cli(appliance.data_dir, *command)
        on_pool = run_cli(tmp_path / "pool-data", "--config", str(pool_toml), *command)
        assert on_sqlite.returncode == on_pool.returncode == 0, on_pool.stderr
        assert on_pool.stdout == on_sqlite.stdout, command

    again = run_cli(
        appliance.data_dir, "migrate-store", "--dsn-file", str(dsn_file), "--verify-only"
    )
    assert again.returncode == 0, again.stderr
    assert "hold the same rules, file hashes, blobs and rows" in again.stdout


def test_verify_only_finds_a_row_and_a_blob_changed_afterwards(
    appliance: Config, store_postgres: Postgres, tmp_path: Path
) -> None:
    dsn, dsn_file = target(store_postgres, tmp_path)
    assert run_cli(appliance.data_dir, "migrate-store", "--dsn-file", str(dsn_file)).returncode == 0
    pool = Store.open_postgresql(dsn)
    try:
        rule = pool.rules()[1]
        pool._conn.execute("UPDATE rules SET restore_version = ? WHERE id = ?", ("9.9", rule.id))
        blob = sorted(pool.blob_hashes())[0]
        pool._conn.execute(
            "UPDATE blob_chunks SET data = ? WHERE sha256 = ? AND seq = 0", (b"xyz", blob)
        )
    finally:
        pool.close()
    checked = run_cli(
        appliance.data_dir, "migrate-store", "--dsn-file", str(dsn_file), "--verify-only", "--json"
    )
    assert checked.returncode == 1
    found = json.loads(checked.stdout)["differences"]
    assert (
        f"rule {rule.id} {rule.key}: restore_version is None in the source, '9.9' in the target"
        in found
    )
    assert (
        f"rules id {rule.id}: restore_version is None in the source, '9.9' in the target" in found
    )
    assert any(line.startswith(f"blob {blob}: its chunks hash to") for line in found)
    assert len(found) == 3
    assert "differs from" in checked.stderr


def test_a_target_that_holds_rows_is_refused_and_left_alone(
    appliance: Config, store_postgres: Postgres, tmp_path: Path
) -> None:
    dsn, dsn_file = target(store_postgres, tmp_path)
    pool = Store.open_postgresql(dsn)
    try:
        pool.add_user("carol", HASH)
        before = pool.data_version()
    finally:
        pool.close()
    refused = run_cli(appliance.data_dir, "migrate-store", "--dsn-file", str(dsn_file))
    assert refused.returncode == 1
    assert "the target store is not empty: it holds rows in users (1)" in refused.stderr
    assert "nothing was written" in refused.stderr
    pool = Store.open_postgresql(dsn)
    try:
        assert [u.name for u in pool.users()] == ["carol"]
        assert pool.rules() == [] and pool.blob_hashes() == set()
        assert pool.data_version() == before
    finally:
        pool.close()


def test_a_tampered_stored_file_fails_the_migration_with_nothing_committed(
    appliance: Config, store_postgres: Postgres, tmp_path: Path
) -> None:
    dsn, dsn_file = target(store_postgres, tmp_path)
    source = Store.open(appliance.db_path)
    stored = source.stored_files()[3]
    source.close()
    path = appliance.store_dir / stored.path
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # same size, another hash
    path.write_bytes(bytes(data))
    before = catalogue_state(appliance)
    failed = run_cli(appliance.data_dir, "migrate-store", "--dsn-file", str(dsn_file))
    assert failed.returncode == 1
    assert catalogue_state(appliance) == before
    assert f"stored file DeviceUpdateStore/{stored.path}: SHA-256 " in failed.stderr
    assert "1 stored file(s) do not match the catalogue; nothing was written" in failed.stderr
    pool = Store.open_postgresql(dsn)
    try:
        assert pool.rules() == [] and pool.events() == [] and pool.blob_hashes() == set()
    finally:
        pool.close()


def test_refused_while_serve_runs_and_without_a_target(
    appliance: Config, store_postgres: Postgres, tmp_path: Path
) -> None:
    dsn, dsn_file = target(store_postgres, tmp_path)
    nowhere = run_cli(appliance.data_dir, "migrate-store")
    assert nowhere.returncode == 2
    assert "--dsn-file FILE, --dsn-env NAME" in nowhere.stderr
    held = hold_serve_lock(appliance.data_dir)  # what every serve process holds
    try:
        refused = run_cli(appliance.data_dir, "migrate-store", "--dsn-file", str(dsn_file))
    finally:
        os.close(held)
    assert refused.returncode == 1
    assert "ucupdates serve is running" in refused.stderr and "migrate" in refused.stderr
    pool = Store.open_postgresql(dsn)
    try:
        assert pool.rules() == []
    finally:
        pool.close()


def test_an_older_sqlite_schema_is_upgraded_first_and_says_so(
    store_postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    older = older_database(data / "ucupdates.sqlite3")
    dsn, _ = target(store_postgres, tmp_path)
    monkeypatch.setenv("MIGRATE_DSN", dsn)
    done = run_cli(data, "migrate-store", "--dsn-env", "MIGRATE_DSN")
    assert done.returncode == 0, done.stderr
    assert f"upgraded the SQLite database's schema to version {older + 1}" in done.stderr
    assert list((data / "backups").glob(f"pre-upgrade-{older}-to-{older + 1}-*.db"))
    pool = Store.open_postgresql(dsn)
    try:
        assert pool.schema_version == older + 1
        assert pool.has_package("ab")
    finally:
        pool.close()


def test_a_migration_killed_mid_way_commits_nothing(
    appliance: Config, store_postgres: Postgres, tmp_path: Path
) -> None:
    """kill -9 once every row is in the migration's transaction, while its first blob
    waits on a lock the test holds: nothing is committed, and a new run goes through."""
    dsn, dsn_file = target(store_postgres, tmp_path)
    Store.open_postgresql(dsn).close()  # the schema, so that the test can lock `blobs`
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as watcher:
        holder.execute("LOCK TABLE blobs IN ACCESS EXCLUSIVE MODE")
        migrating = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--data-dir", str(appliance.data_dir)]
            + ["migrate-store", "--dsn-file", str(dsn_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            assert migrating.stderr is not None
            copied = ""
            for _ in range(200):  # the progress lines, up to the last table's
                copied = migrating.stderr.readline()
                if copied.startswith("copied files") or not copied:
                    break
            assert copied.startswith("copied files: 32 row(s)"), copied
            for _ in range(600):  # bounded: its put_blob waits on the lock
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
                if waiting is not None and waiting[0] >= 1:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the migration never waited on the blobs' lock")
        finally:
            migrating.kill()
            migrating.wait(timeout=30)
        holder.rollback()
    pool = Store.open_postgresql(dsn)
    try:
        assert pool.rules() == [] and pool.events() == [] and pool.blob_hashes() == set()
    finally:
        pool.close()
    again = run_cli(appliance.data_dir, "migrate-store", "--dsn-file", str(dsn_file))
    assert again.returncode == 0, again.stderr
