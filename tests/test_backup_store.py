"""A schema upgrade takes a backup of the database first, and refuses to upgrade without one."""

from __future__ import annotations

import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.store import SchemaError, Store, inspect_database, newest_schema_version
from appliance.testing import FixedClock
from tests.older_schema import older_database

START = datetime(2026, 12, 6, 2, 0, 0, tzinfo=UTC)


def test_opening_an_older_schema_backs_the_database_up_before_upgrading(tmp_path: Path) -> None:
    path = tmp_path / "ucupdates.sqlite3"
    older = older_database(path)
    newest = newest_schema_version()

    store = Store.open(path, clock=FixedClock(START))
    try:
        assert store.schema_version == newest
        assert store.has_package("ab")
        copy = store.upgrade_backup
    finally:
        store.close()

    assert copy == tmp_path / "backups" / f"pre-upgrade-{older}-to-{newest}-20261206T020000Z.db"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600  # it holds password hashes
    assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
    assert inspect_database(copy) == (older, [])  # the database as it was before
    rows = sqlite3.connect(copy).execute("SELECT name, imported_by FROM packages").fetchall()
    assert rows == [("UCUpdates.cab", "alice")]
    assert not Path(f"{copy}-wal").exists()  # one file, whole


def test_an_upgrade_whose_backup_cannot_be_written_is_refused_and_upgrades_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ucupdates.sqlite3"
    older = older_database(path)
    (tmp_path / "backups").write_text("a file where the backups folder should be\n")

    with pytest.raises(
        SchemaError, match=rf"from version {older} to .*backed up first.*nothing was upgraded"
    ):
        Store.open(path)
    assert inspect_database(path) == (older, [])


def test_a_new_or_current_database_takes_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "ucupdates.sqlite3"
    for _ in range(2):  # created, then opened again at the newest schema
        store = Store.open(path)
        assert store.upgrade_backup is None
        store.close()
    assert not (tmp_path / "backups").exists()


def test_opening_without_upgrade_refuses_an_older_schema_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """Monitoring opens the store so: a check must not upgrade the database under a
    service still running the previous version (nor write a pre-upgrade copy)."""
    path = tmp_path / "ucupdates.sqlite3"
    older = older_database(path)
    with pytest.raises(SchemaError, match=f"version {older} is older"):
        Store.open(path, clock=FixedClock(START), upgrade=False)
    assert inspect_database(path) == (older, [])
    assert not (tmp_path / "backups").exists()
