"""store/copy.py: a whole store copied row for row into another, and the two compared.

SQLite to SQLite here (the fast tier); tests/test_migrate_store.py copies into a real
PostgreSQL through `ucupdates migrate-store`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.catalogue import MigrationError, migrate_store, verify_store
from appliance.config import Config
from appliance.model import IdentifierKind, Role
from appliance.store import Store, StoreError, copy, copy_rows, occupied_tables, row_differences
from appliance.store.copy import source_tables
from appliance.testing.stores import approved_sample


@pytest.fixture
def source(config: Config) -> Iterator[Store]:
    store = approved_sample(config)
    store.add_test_device("desk", IdentifierKind.MAC, "00-04-F2-A1-B2-C3")
    store.add_user("alice", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "0" * 32)
    store.add_admin_account("root", Role.ADMIN, "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
    yield store
    store.close()


def test_tables_come_after_the_tables_they_reference(source: Store) -> None:
    names = [t.name for t in source_tables(source)]
    assert names.index("packages") < names.index("updates") < names.index("files")
    assert names.index("rules") < names.index("staged_approvals")
    assert names.index("admin_accounts") < names.index("admin_sessions")
    assert "schema_version" not in names
    assert not [n for n in names if n.startswith("blob")]  # filled from the stored files


def test_every_row_is_copied_with_its_id_and_the_salt_replaced(source: Store) -> None:
    target = Store.open(":memory:")
    assert target.rollout_salt() != source.rollout_salt()  # each database draws its own
    assert occupied_tables(source, target) == []  # the salt row does not count
    lines: list[str] = []
    with target.transaction():
        copied = copy_rows(source, target, lines.append)
    assert copied["rules"] == len(source.rules()) == 8
    assert copied["files"] == 16
    assert "copied rules: 8 row(s)" in lines
    assert target.rules() == source.rules()
    assert target.stored_files() == source.stored_files()
    assert target.test_devices() == source.test_devices()
    assert target.users() == source.users()
    assert target.rollout_salt() == source.rollout_salt()  # the devices keep their buckets
    assert target.events(100) == source.events(100)
    assert row_differences(source, target) == []


def test_a_target_with_rows_is_refused_and_copying_needs_a_transaction(source: Store) -> None:
    target = Store.open(":memory:")
    with pytest.raises(StoreError, match="transaction"):
        copy_rows(source, target)
    target.add_test_device("other", IdentifierKind.SERIAL, "ABC")
    assert occupied_tables(source, target) == [("test_devices", 1)]
    with pytest.raises(StoreError, match="not empty: test_devices"), target.transaction():
        copy_rows(source, target)
    assert target.rules() == []


def test_differences_name_the_row_and_column_and_hide_secrets(source: Store) -> None:
    target = Store.open(":memory:")
    with target.transaction():
        copy_rows(source, target)
    target._conn.execute("UPDATE rules SET state = 'reset' WHERE id = 3")
    target._conn.execute("UPDATE users SET password_hash = 'other' WHERE name = 'alice'")
    target._conn.execute("DELETE FROM test_devices")
    found = row_differences(source, target)
    assert "rules id 3: state is 'approved' in the source, 'reset' in the target" in found
    assert "users id 1: password_hash is (hidden) in the source, (hidden) in the target" in found
    assert any(line.startswith("test_devices id 1: missing in the target") for line in found)
    assert not [line for line in found if "other" in line or "argon2" in line]


def test_migrating_into_an_sqlite_store_is_refused(source: Store, config: Config) -> None:
    target = Store.open(":memory:")
    with pytest.raises(MigrationError, match="PostgreSQL"):
        migrate_store(source, target, config.store_dir, config.lock_path)
    with pytest.raises(MigrationError, match="PostgreSQL"):
        verify_store(source, target)
    assert target.rules() == []


def test_rows_by_id_are_compared_a_page_at_a_time_and_the_list_is_capped(
    source: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(copy, "BATCH", 3)  # 17 events: pages of 3 on both sides
    target = Store.open(":memory:")
    with target.transaction():
        copy_rows(source, target)
    assert row_differences(source, target) == []
    target._conn.execute("DROP TRIGGER events_no_delete")
    target._conn.execute("DROP TRIGGER events_no_update")
    target._conn.execute("DELETE FROM events WHERE id = 5")
    target._conn.execute("UPDATE events SET actor = 'mallory' WHERE id = 9")
    target._conn.execute(
        "INSERT INTO events (id, at, actor, action, target) VALUES (40, 'now', 'x', 'y', 'z')"
    )
    assert row_differences(source, target) == [
        "events id 5: missing in the target",
        "events id 9: actor is 'test' in the source, 'mallory' in the target",
        "events id 40: only in the target",
    ]
    target._conn.execute("UPDATE events SET actor = 'mallory'")
    monkeypatch.setattr(copy, "SHOWN", 5)
    found = row_differences(source, target)
    assert len(found) == copy.SHOWN + 1
    assert found[-1] == f"events: {18 - copy.SHOWN} more difference(s)"


def test_the_running_nodes_state_neither_blocks_nor_moves(source: Store) -> None:
    """A node started on the empty pool first leaves its heartbeat and lockouts there."""
    target = Store.open(":memory:")
    target.put_lockout("admin-address", "192.0.2.7", 2_000_000_000.0, "node-2")
    target._conn.execute(
        "INSERT INTO pool_nodes VALUES ('node-2', 'b', 'primary', '1', 7, 'then', 'now')"
    )
    assert occupied_tables(source, target) == []
    with target.transaction():
        copied = copy_rows(source, target)
    assert "pool_nodes" not in copied and "lockouts" not in copied
    assert row_differences(source, target) == []
    assert target.lockout_until("admin-address", "192.0.2.7", 0.0) == 2_000_000_000.0


def test_a_row_the_target_refuses_fails_the_copy_naming_the_table(source: Store) -> None:
    target = Store.open(":memory:")
    target._conn.execute(
        "CREATE TRIGGER no_rules BEFORE INSERT ON rules BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    with pytest.raises(StoreError, match="copying table rules failed: no"), target.transaction():
        copy_rows(source, target)
    assert target.events(100) == [] and target.rollout_salt() != source.rollout_salt()
