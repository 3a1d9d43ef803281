"""The store: schema, rules, updates and files, test devices, inventory, event log."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

import psycopg
import pytest

from appliance.model import Device, IdentifierKind, RuleKey, RuleState
from appliance.store import DuplicateError, RuleFilter, SchemaError, Store, StoreError
from appliance.store.connection import INTEGRITY_ERRORS
from appliance.testing import (
    CU7,
    CU8,
    CX600,
    REPO,
    FixedClock,
    add_update,
    seen_device,
)

CX600_DEU = RuleKey("UCPhone", "Polycom", "CX600", "A", "DEU", "CPE")
CX700 = RuleKey("UCPhone", "Polycom", "CX700", "B", "ENU", "CPE")
AASTRA = RuleKey("UCPhone", "Aastra", "6725ip", "A", "ENU", "CPE")
START = datetime(2013, 4, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def db(clock: FixedClock, open_test_store: Callable[[FixedClock], Store]) -> Store:
    """A new store on each backend (tests/conftest.py: SQLite, then PostgreSQL)."""
    return open_test_store(clock)


def device(identity: str, version: str, first: str, last: str) -> Device:
    return seen_device(
        identity,
        version,
        serial="64167F1234",
        address="10.0.0.20",
        user_id="sip:alice@example.com",
        first_seen=first,
        last_seen=last,
    )


# -- schema -----------------------------------------------------------------------------


LATEST = max(
    int(p.name[:3])
    for p in (Path(__file__).parent.parent / "appliance" / "store" / "schema").glob("*.sql")
)


def test_memory_store_has_the_schema_applied(db: Store) -> None:
    assert db.schema_version == LATEST
    listing = (
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        if db.backend == "postgresql"
        else "SELECT name FROM sqlite_master WHERE type = 'table'"
    )
    tables = {r[0] for r in db._conn.execute(listing)}
    assert {"packages", "rules", "updates", "files", "test_devices", "devices", "events"} <= tables
    assert db.integrity_errors() == []


def test_file_store_is_in_wal_mode(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "ucupdates.sqlite3")
    try:
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        store.close()


def test_reopening_a_file_keeps_data_and_does_not_reapply_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "ucupdates.sqlite3"
    first = Store.open(path, clock=FixedClock(START))
    first.insert_rule(CX600, CU8)
    first.close()

    second = Store.open(path, clock=FixedClock(START + timedelta(days=1)))
    try:
        assert second.schema_version == LATEST
        applied = second._conn.execute("SELECT version, applied_at FROM schema_version")
        assert applied.fetchall() == [(v, "2013-04-02T09:30:00Z") for v in range(1, LATEST + 1)]
        assert [r.pending_version for r in second.rules()] == [CU8]
    finally:
        second.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ucupdates.sqlite3"
    store = Store.open(path)
    newer = LATEST + 1
    store._conn.execute(f"INSERT INTO schema_version VALUES ({newer}, '2030-01-01T00:00:00Z')")
    store.close()
    with pytest.raises(SchemaError, match=f"schema version {newer} is newer.*upgrade ucupdates"):
        Store.open(path)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "ucupdates.sqlite3"
    path.write_bytes(b"this is not an SQLite database, just some text" * 100)
    with pytest.raises(StoreError, match="cannot open the database") as excinfo:
        Store.open(path)
    assert str(path) in str(excinfo.value)


def test_fresh_file_database_has_no_integrity_errors(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "ucupdates.sqlite3")
    try:
        assert store.integrity_errors() == []
    finally:
        store.close()


# -- rules ------------------------------------------------------------------------------


def test_insert_rule_makes_a_pending_rule(db: Store) -> None:
    rule = db.insert_rule(CX600, CU8)
    assert rule.key == CX600
    assert rule.pending_version == CU8
    assert rule.approved_version is None
    assert rule.restore_version is None
    assert rule.state is RuleState.PENDING
    assert rule.updated_at == "2013-04-02T09:30:00Z"
    assert db.rule(rule.id) == rule
    assert db.rules() == [rule]


def test_rule_by_key_ignores_case(db: Store) -> None:
    rule = db.insert_rule(CX600, CU8)
    shouted = RuleKey("UCPHONE", "POLYCOM", "cx600", "a", "enu", "cpe")
    assert db.rule_by_key(shouted) == rule
    assert db.rule_by_key(CX700) is None


def test_rule_key_is_unique_ignoring_case(db: Store) -> None:
    first = db.insert_rule(CX600, CU8)
    with pytest.raises(INTEGRITY_ERRORS, match="rules_key"):
        db.insert_rule(RuleKey("ucphone", "polycom", "cx600", "a", "enu", "cpe"), CU7)
    assert db.rules() == [first]
    assert db.rule_by_key(CX600) == first


def test_missing_rule_is_none(db: Store) -> None:
    assert db.rule(404) is None


def test_save_rule_writes_versions_state_and_time(db: Store, clock: FixedClock) -> None:
    rule = db.insert_rule(CX600, CU8)
    clock.advance(hours=2)
    changed = dataclasses.replace(
        rule,
        approved_version=CU8,
        pending_version=None,
        restore_version=CU7,
        state=RuleState.APPROVED,
    )
    saved = db.save_rule(changed)
    assert (saved.approved_version, saved.pending_version, saved.restore_version) == (
        CU8,
        None,
        CU7,
    )
    assert saved.state is RuleState.APPROVED
    assert saved.updated_at == "2013-04-02T11:30:00Z"
    assert db.rule(rule.id) == saved


def test_save_rule_of_a_deleted_rule_is_an_error(db: Store) -> None:
    rule = db.insert_rule(CX600, CU8)
    db.delete_rule(rule.id)
    with pytest.raises(StoreError, match=f"rule {rule.id} does not exist"):
        db.save_rule(rule)


def test_delete_rule(db: Store) -> None:
    doomed = db.insert_rule(CX600, CU8)
    kept = db.insert_rule(CX700, CU8)
    db.delete_rule(doomed.id)
    assert db.rules() == [kept]
    assert db.rule(doomed.id) is None
    assert db.rule_by_key(CX600) is None


@pytest.fixture
def four_rules(db: Store) -> dict[str, int]:
    """CX600 pending, CX600-DEU approved, CX700 approved+pending, Aastra reset."""
    ids = {}
    ids["cx600"] = db.insert_rule(CX600, CU8).id
    deu = db.insert_rule(CX600_DEU, CU8)
    db.save_rule(
        dataclasses.replace(
            deu, approved_version=CU8, pending_version=None, state=RuleState.APPROVED
        )
    )
    ids["cx600-deu"] = deu.id
    cx700 = db.insert_rule(CX700, CU8)
    db.save_rule(dataclasses.replace(cx700, approved_version=CU7))
    ids["cx700"] = cx700.id
    aastra = db.insert_rule(AASTRA, CU8)
    db.save_rule(dataclasses.replace(aastra, pending_version=None, state=RuleState.RESET))
    ids["aastra"] = aastra.id
    return ids


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        pytest.param(RuleFilter(), {"cx600", "cx600-deu", "cx700", "aastra"}, id="no-filter"),
        pytest.param(
            RuleFilter(brand="polycom"), {"cx600", "cx600-deu", "cx700"}, id="brand-lower"
        ),
        pytest.param(RuleFilter(brand="AASTRA"), {"aastra"}, id="brand-upper"),
        pytest.param(RuleFilter(model="cx600"), {"cx600", "cx600-deu"}, id="model"),
        pytest.param(RuleFilter(locale="enu"), {"cx600", "cx700", "aastra"}, id="locale"),
        pytest.param(RuleFilter(locale="Deu"), {"cx600-deu"}, id="locale-mixed-case"),
        pytest.param(RuleFilter(revision="b"), {"cx700"}, id="revision"),
        pytest.param(
            RuleFilter(device_type="ucphone", update_type="cpe"),
            {"cx600", "cx600-deu", "cx700", "aastra"},
            id="device-and-update-type",
        ),
        pytest.param(
            RuleFilter(brand="polycom", locale="ENU"), {"cx600", "cx700"}, id="brand-and-locale"
        ),
        pytest.param(RuleFilter(model="CX800"), set(), id="no-match"),
        pytest.param(RuleFilter(state=RuleState.APPROVED), {"cx600-deu"}, id="state-approved"),
        pytest.param(RuleFilter(state=RuleState.PENDING), {"cx600", "cx700"}, id="state-pending"),
        pytest.param(RuleFilter(state=RuleState.RESET), {"aastra"}, id="state-reset"),
        pytest.param(RuleFilter(state=RuleState.RESTORED), set(), id="state-restored"),
        pytest.param(RuleFilter(pending_only=True), {"cx600", "cx700"}, id="pending-only"),
        pytest.param(
            RuleFilter(pending_only=True, model="cx700"), {"cx700"}, id="pending-only-and-model"
        ),
    ],
)
def test_rule_filters(
    db: Store, four_rules: dict[str, int], flt: RuleFilter, expected: set[str]
) -> None:
    names = {v: k for k, v in four_rules.items()}
    assert {names[r.id] for r in db.rules(flt)} == expected


def test_rule_filter_by_ids(db: Store, four_rules: dict[str, int]) -> None:
    wanted = (four_rules["cx600"], four_rules["aastra"])
    assert {r.id for r in db.rules(RuleFilter(ids=wanted))} == set(wanted)
    assert db.rules(RuleFilter(ids=(999,))) == []
    both = RuleFilter(ids=wanted, brand="polycom")
    assert [r.id for r in db.rules(both)] == [four_rules["cx600"]]


def test_only_the_default_filter_is_empty() -> None:
    assert RuleFilter().is_empty()
    assert not RuleFilter(everything=True).is_empty()
    assert not RuleFilter(brand="Polycom").is_empty()
    assert not RuleFilter(pending_only=True).is_empty()


# -- transactions -----------------------------------------------------------------------


def test_transaction_rolls_back_everything_on_an_exception(db: Store) -> None:
    with pytest.raises(RuntimeError, match="disk on fire"), db.transaction():
        db.insert_rule(CX600, CU8)
        add_update(db, CX600, CU8)
        db.add_test_device("lab", IdentifierKind.MAC, "00-04-F2-A1-B2-C3")
        db.append_event("admin", "import", "UCUpdates.cab")
        raise RuntimeError("disk on fire")
    assert db.rules() == []
    assert db.stored_files() == []
    assert not db.has_package("c" * 64)
    assert db.test_devices() == []
    assert db.events() == []


def test_transaction_commits_for_other_connections(tmp_path: Path) -> None:
    path = tmp_path / "ucupdates.sqlite3"
    writer = Store.open(path)
    reader = Store.open(path)
    try:
        with writer.transaction():
            writer.insert_rule(CX600, CU8)
            writer.append_event("admin", "import", "UCUpdates.cab")
        assert [r.key for r in reader.rules()] == [CX600]
        assert len(reader.events()) == 1
    finally:
        writer.close()
        reader.close()


def test_nested_transaction_is_refused_and_the_outer_one_rolls_back(db: Store) -> None:
    with pytest.raises(StoreError, match="nested"), db.transaction():
        db.insert_rule(CX600, CU8)
        with db.transaction():
            db.insert_rule(CX700, CU8)
    assert db.rules() == []
    # The store is usable again afterwards.
    with db.transaction():
        db.insert_rule(CX700, CU8)
    assert [r.key for r in db.rules()] == [CX700]


# -- updates and files ------------------------------------------------------------------


def test_add_update_stores_its_files(db: Store) -> None:
    add_update(db, CX600, CU8, "CPE.nbt", "Boot.nbt")
    files = db.update_files(CX600, CU8)
    assert [(f.role, f.file_name, f.signature_name) for f in files] == [
        ("signature", "Boot.cat", None),
        ("image", "Boot.nbt", "Boot.cat"),
        ("signature", "CPE.cat", None),
        ("image", "CPE.nbt", "CPE.cat"),
    ]
    nbt = files[3]
    assert nbt.key == CX600
    assert nbt.version == CU8
    assert nbt.path == PurePosixPath("UCPhone/Polycom/CX600/A/ENU/4.0.7577.4387/CPE/CPE.nbt")
    assert (nbt.size, nbt.sha256) == (1024, "a" * 64)
    assert db.stored_files() == files
    assert db.updates() == [(CX600, CU8)]


def test_update_lookups_ignore_the_case_of_the_key(db: Store) -> None:
    add_update(db, CX600, CU8)
    lower = RuleKey("ucphone", "polycom", "cx600", "a", "enu", "cpe")
    assert db.has_update(lower, CU8)
    assert len(db.update_files(lower, CU8)) == 2
    assert not db.has_update(CX600, CU7)
    assert not db.has_update(CX700, CU8)
    assert db.update_files(CX600, CU7) == []


def test_same_update_twice_is_refused(db: Store) -> None:
    add_update(db, CX600, CU8)
    package = db.add_package("again.cab", "d" * 64, 1, "admin")
    with pytest.raises(INTEGRITY_ERRORS):
        db.add_update(CX600, CU8, None, package, [])
    assert len(db.updates()) == 1


def test_delete_update_removes_its_files(db: Store) -> None:
    add_update(db, CX600, CU8)
    add_update(db, CX600, CU7)
    db.delete_update(RuleKey("UCPHONE", "polycom", "CX600", "a", "ENU", "cpe"), CU8)
    assert not db.has_update(CX600, CU8)
    assert db.update_files(CX600, CU8) == []
    assert {f.version for f in db.stored_files()} == {CU7}
    assert len(db.stored_files()) == 2
    rows = db._conn.execute("SELECT count(*) FROM files").fetchone()[0]
    assert rows == 2


def test_has_package_by_sha256(db: Store) -> None:
    assert not db.has_package("c" * 64)
    package = db.add_package("UCUpdates.cab", "c" * 64, 4096, "admin")
    assert package > 0
    assert db.has_package("c" * 64)
    assert not db.has_package("d" * 64)


# -- what the decision reads ------------------------------------------------------------


def test_catalog_holds_rules_image_files_and_test_devices(db: Store) -> None:
    rule = db.insert_rule(CX600, CU8)
    add_update(db, CX600, CU8, "CPE.nbt", "Boot.nbt")
    db.add_test_device("lab phone", IdentifierKind.MAC, "00-04-F2-A1-B2-C3")
    db.add_test_device("desk phone", IdentifierKind.SERIAL, "64167F1234")

    catalog = db.catalog()
    assert catalog.rules == (rule,)
    assert sorted(f.file_name for f in catalog.files) == ["Boot.nbt", "CPE.nbt"]
    modules = catalog.files_for(CX600, CU8)
    assert [(m.file_name, m.signature_file_name) for m in modules] == [
        ("Boot.nbt", "Boot.cat"),
        ("CPE.nbt", "CPE.cat"),
    ]
    cpe = modules[1]
    assert cpe.timestamp == "2013-04-02T00:00:00Z"
    assert cpe.path == PurePosixPath("UCPhone/Polycom/CX600/A/ENU/4.0.7577.4387/CPE/CPE.nbt")
    assert (cpe.size, cpe.sha256) == (1024, "a" * 64)
    assert catalog.test_macs == frozenset({"00-04-F2-A1-B2-C3"})
    assert catalog.test_serials == frozenset({"64167F1234"})


def test_catalog_of_an_empty_store_is_empty(db: Store) -> None:
    catalog = db.catalog()
    assert catalog.rules == ()
    assert catalog.files == ()
    assert catalog.test_macs == frozenset()
    assert catalog.test_serials == frozenset()


# -- test devices -----------------------------------------------------------------------


def test_add_and_list_test_devices(db: Store) -> None:
    mac = db.add_test_device("lab phone", IdentifierKind.MAC, "00-04-F2-A1-B2-C3")
    serial = db.add_test_device("desk phone", IdentifierKind.SERIAL, "64167F1234", "site:Oslo")
    assert mac.kind is IdentifierKind.MAC
    assert mac.identifier == "00-04-F2-A1-B2-C3"
    assert mac.scope == "global"
    assert mac.created_at == "2013-04-02T09:30:00Z"
    assert serial.scope == "site:Oslo"
    assert db.test_devices() == [serial, mac]  # by name
    assert db.test_device(mac.id) == mac


def test_duplicate_test_device_is_refused(db: Store) -> None:
    first = db.add_test_device("lab phone", IdentifierKind.MAC, "00-04-F2-A1-B2-C3")
    with pytest.raises(DuplicateError, match="mac 00-04-F2-A1-B2-C3 exists already"):
        db.add_test_device("other name", IdentifierKind.MAC, "00-04-F2-A1-B2-C3")
    assert db.test_devices() == [first]


def test_same_identifier_in_another_scope_is_another_test_device(db: Store) -> None:
    db.add_test_device("lab phone", IdentifierKind.MAC, "00-04-F2-A1-B2-C3")
    db.add_test_device("lab phone", IdentifierKind.MAC, "00-04-F2-A1-B2-C3", "site:Oslo")
    assert len(db.test_devices()) == 2


def test_remove_test_device(db: Store) -> None:
    gone = db.add_test_device("lab phone", IdentifierKind.MAC, "00-04-F2-A1-B2-C3")
    kept = db.add_test_device("desk phone", IdentifierKind.SERIAL, "64167F1234")
    db.remove_test_device(gone.id)
    assert db.test_devices() == [kept]
    assert db.test_device(gone.id) is None
    assert db.catalog().test_macs == frozenset()
    # It can be added again.
    db.add_test_device("lab phone", IdentifierKind.MAC, "00-04-F2-A1-B2-C3")


# -- device inventory -------------------------------------------------------------------


def test_record_device_keeps_first_seen_and_refreshes_the_rest(db: Store) -> None:
    mac = "00-04-F2-A1-B2-C3"
    db.record_device(device(mac, CU7, "2013-04-01T08:00:00Z", "2013-04-01T08:00:00Z"))
    later = device(mac, CU8, "2013-04-02T08:00:00Z", "2013-04-02T08:00:00Z")
    db.record_device(later)
    (seen,) = db.devices()
    assert seen.first_seen == "2013-04-01T08:00:00Z"
    assert seen.last_seen == "2013-04-02T08:00:00Z"
    assert seen.version == CU8


def test_devices_are_listed_by_identity(db: Store) -> None:
    db.record_device(device("00-04-F2-00-00-02", CU8, "t1", "t1"))
    db.record_device(device("00-04-F2-00-00-01", CU8, "t2", "t2"))
    assert [d.identity for d in db.devices()] == ["00-04-F2-00-00-01", "00-04-F2-00-00-02"]


# -- event log --------------------------------------------------------------------------


def test_events_come_newest_first_with_their_json(db: Store, clock: FixedClock) -> None:
    db.append_event("admin", "import", "UCUpdates.cab", after={"updates": 3})
    clock.advance(minutes=5)
    before = {"approved": None, "pending": CU8, "restore": None, "state": "pending"}
    after = {"approved": CU8, "pending": None, "restore": None, "state": "approved"}
    db.append_event("alice", "approve", str(CX600), before, after)

    newest, oldest = db.events()
    assert (newest.actor, newest.action, newest.target) == (
        "alice",
        "approve",
        "UCPhone/Polycom/CX600/A/ENU/CPE",
    )
    assert newest.at == "2013-04-02T09:35:00Z"
    assert newest.before == before
    assert newest.after == after
    assert (oldest.action, oldest.at) == ("import", "2013-04-02T09:30:00Z")
    assert oldest.before is None
    assert oldest.after == {"updates": 3}
    assert newest.id > oldest.id


def test_events_limit(db: Store) -> None:
    for n in range(5):
        db.append_event("admin", "add-test-device", f"device {n}")
    assert [e.target for e in db.events(limit=2)] == ["device 4", "device 3"]


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("UPDATE events SET actor = 'mallory'", id="update"),
        pytest.param("DELETE FROM events", id="delete"),
    ],
)
def test_event_log_is_append_only(db: Store, sql: str) -> None:
    db.append_event("admin", "approve", "rule 1", {"pending": CU8}, {"approved": CU8})
    with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
        db._conn.execute(sql)
    (event,) = db.events()
    assert event.actor == "admin"


def test_times_are_utc_with_z() -> None:
    oslo = timezone(timedelta(hours=2))
    store = Store.open(":memory:", clock=lambda: datetime(2013, 4, 2, 11, 30, tzinfo=oslo))
    try:
        assert store.now() == "2013-04-02T09:30:00Z"
        assert store.insert_rule(CX600, CU8).updated_at == "2013-04-02T09:30:00Z"
    finally:
        store.close()


def test_opening_the_database_again_keeps_the_locks_of_open_connections(tmp_path: Path) -> None:
    """A second Store.open in the same process must not drop the first connection's locks:
    closing any descriptor of a file drops every POSIX lock the process holds on it, and
    then another process, as the database's last user, deletes the WAL under our writes."""
    path = tmp_path / "ucupdates.sqlite3"

    def in_another_process(code: str) -> str:
        script = f"from appliance.store import Store; s = Store.open({str(path)!r}); {code}"
        done = subprocess.run(
            [sys.executable, "-c", script],
            check=True,
            cwd=REPO,
            timeout=60,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    first = Store.open(path)
    try:
        first.append_event("test", "first", "before")
        Store.open(path).close()
        in_another_process("s.events(1); s.close()")
        for i in range(20):
            first.append_event("test", "write", f"after {i}")
        assert in_another_process("print(len(s.events(100)))") == "21"
    finally:
        first.close()
