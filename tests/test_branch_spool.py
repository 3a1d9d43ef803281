"""A branch node's pieces without a server: which statements a replica may run, the spool
(order, bound, each batch landing once), the JSON form of what the flush keeps, and the
pool check's absence elsewhere. The real primary and replica: tests/test_branch_pg.py."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import PoolTimeout
from twisted.logger import LogEvent

from appliance.catalogue import Offer, Reason
from appliance.config import Config
from appliance.model import ReportedModule, Zone
from appliance.ops.checks import process_checks
from appliance.ops.pool_check import check_pool
from appliance.phones.records import Sighting
from appliance.phones.spooled import BranchWriter, from_json, to_json
from appliance.store import (
    DuplicateError,
    PoolState,
    PrimaryUnavailable,
    Spool,
    Store,
    StoreError,
    ship_spool,
)
from appliance.store.primary import across_the_wan, unreachable
from appliance.store.split import is_read
from appliance.testing import CU7, CU8, device_request, make_rule, update_files

AT = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sql", "replica"),
    [
        ("SELECT id, approved_version FROM rules ORDER BY id", True),
        ("  select version from catalogue_version", True),
        ("WITH x AS (SELECT 1) SELECT * FROM x", True),
        ("SELECT updated_at FROM updates WHERE deleted = 0", True),  # not UPDATE/DELETE
        ("SELECT pg_advisory_lock(?)", False),
        ("SELECT pg_try_advisory_xact_lock(1)", False),
        ("SELECT id FROM rules FOR UPDATE", False),
        ("WITH gone AS (DELETE FROM devices RETURNING 1) SELECT count(*) FROM gone", False),
        ("INSERT INTO events (at) VALUES (?)", False),
        ("UPDATE rules SET state = ?", False),
        ("DELETE FROM test_devices WHERE id = ?", False),
        ("BEGIN IMMEDIATE", False),
        ("CREATE TABLE IF NOT EXISTS x (a INTEGER)", False),
    ],
)
def test_only_plain_reads_go_to_the_replica(sql: str, replica: bool) -> None:
    assert is_read(sql) is replica


def test_the_spool_keeps_batches_in_order_bounded_and_private(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    old = os.umask(0o022)
    try:
        spool = Spool(path, limit=5)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert spool.add("a", "1", 2, "t1") and spool.add("b", "2", 3, "t2")
    assert not spool.add("c", "3", 1, "t3")  # 6 > 5: refused, counted
    assert spool.records() == 5 and spool.lost() == 1 and spool.full()
    first = spool.oldest()
    assert first is not None and (first.kind, first.payload, first.records) == ("a", "1", 2)
    spool.remove(first.seq)
    assert not spool.full() and spool.records() == 3
    spool.set_unreachable_since("2026-12-06T10:00:00Z")
    spool.set_unreachable_since("2026-12-06T11:00:00Z")  # the first stays
    node = spool.node
    spool.close()
    again = Spool(path, limit=5)  # another process (ucupdates check) sees the same
    assert again.node == node and again.records() == 3 and again.lost() == 1
    assert again.unreachable_since() == "2026-12-06T10:00:00Z"
    again.set_unreachable_since(None)
    assert again.unreachable_since() is None
    again.close()


class _StopsAfterCommit(Spool):
    """A spool whose node stops between the primary's commit and the local removal."""

    stops = 1

    def remove(self, seq: int) -> None:
        if self.stops:
            self.stops -= 1
            raise OSError("stopped")
        super().remove(seq)


def test_each_batch_ships_oldest_first_once_even_if_the_node_stopped_after_the_commit(
    tmp_path: Path,
) -> None:
    store = Store.open(":memory:")
    spool = _StopsAfterCommit(tmp_path / "spool.db", limit=100)
    event = (
        "INSERT INTO events (at, actor, action, target, before, after) VALUES (?, ?, ?, ?, ?, ?)"
    )
    spool.add(
        "statements", json.dumps([[event, ["t", "ucupdates", "one", "x", None, None]]]), 1, "t"
    )
    spool.add("notes", "two", 1, "t")
    spool.add(
        "statements", json.dumps([[event, ["t", "ucupdates", "three", "x", None, None]]]), 1, "t"
    )
    written: list[str] = []

    def note(target: Store, payload: str) -> None:
        target.append_event("ucupdates", payload, "x")
        written.append(payload)

    with pytest.raises(OSError, match="stopped"):
        ship_spool(store, spool, {"notes": note})
    assert spool.records() == 3  # the first landed, but is still here
    assert ship_spool(store, spool, {"notes": note}) == 2  # the first is not written again
    assert spool.records() == 0 and written == ["two"]
    assert [e.action for e in reversed(store.events())] == ["one", "two", "three"]


def _event_row(action: str) -> str:
    """A `statements` batch as the branch connection keeps an event row."""
    sql = "INSERT INTO events (at, actor, action, target, before, after) VALUES (?, ?, ?, ?, ?, ?)"
    return json.dumps([[sql, ["t", "ucupdates", action, "x", None, None]]])


def test_a_batch_the_primary_refuses_is_set_aside_after_three_tries(
    tmp_path: Path, log_events: list[LogEvent]
) -> None:
    store = Store.open(":memory:")
    spool = Spool(tmp_path / "spool.db", limit=100)
    spool.add("later", "{}", 2, "t")  # a kind this version does not ship
    spool.add("statements", _event_row("after"), 1, "t")
    for _ in range(2):
        with pytest.raises(StoreError, match="unknown kind 'later'"):
            ship_spool(store, spool, {})
    assert spool.records() == 3 and spool.refused() == 0
    assert ship_spool(store, spool, {}) == 1  # the third try sets it aside; the next goes
    assert spool.records() == 0 and spool.refused() == 2
    assert [e.action for e in store.events()] == ["after"]
    refused = [e for e in log_events if e.get("event") == "pool.spool.refused"]
    assert len(refused) == 1 and refused[0]["records"] == 2


def test_what_the_flush_keeps_reads_back_as_it_was() -> None:
    rule = make_rule(CU7, CU8)
    offer = Offer(rule, CU8, tuple(update_files(CU8, "a.nbt")), Reason.APPROVED, CU7, False)
    request = device_request(
        modules=(ReportedModule("a.nbt", CU7, None),), zone=Zone.EXTERNAL, user_id="alice"
    )
    seen = Sighting(request, "127.0.0.1", CU7, AT, (offer,), ((device_request(), (), AT),))
    text = json.dumps({"00-04-F2-00-00-01": to_json(seen)})
    back = {k: from_json(Sighting, v) for k, v in json.loads(text).items()}
    assert back == {"00-04-F2-00-00-01": seen}


def test_the_summary_says_what_a_branch_admin_needs() -> None:
    away = PoolState(False, AT, 12, 0, False, 30.0, "connection refused")
    assert away.summary() == (
        "branch node: the primary is unreachable since 2026-12-06 10:00:00 UTC (connection"
        " refused); phones are served from the replica, admin changes need the primary;"
        " replica 30 s behind; 12 records buffered"
    )
    full = PoolState(True, None, 100, 7, True, 0.0, refused=3)
    assert full.summary() == (
        "branch node: the primary answers; replica 0 s behind; 100 records buffered"
        " (the spool is full: new records are lost); 7 lost; 3 refused by the primary"
        " (set aside in the spool)"
    )


def test_no_pool_check_on_a_node_that_is_not_a_branch(tmp_path: Path) -> None:
    store = Store.open(":memory:")
    assert store.pool_state() is None
    names = [r.name for r in process_checks(Config(data_dir=tmp_path), store, AT)]
    assert "pool" not in names


def test_a_primary_across_the_wan_gets_keepalives_unless_its_string_sets_them() -> None:
    settings = conninfo_to_dict(across_the_wan("host=primary dbname=u keepalives_idle=60"))
    assert settings["keepalives_idle"] == "60" and settings["tcp_user_timeout"] == "20000"
    assert settings["connect_timeout"] == "10" and settings["host"] == "primary"


@pytest.mark.parametrize(
    ("error", "away"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (errors.AdminShutdown("terminating connection due to administrator command"), True),
        (errors.ConnectionFailure("connection failure"), True),
        (PoolTimeout("couldn't get a connection after 10.00 sec"), True),
        (StoreError("no connection to the PostgreSQL store: ..."), True),
        (errors.QueryCanceled("canceling statement due to statement timeout"), False),
        (errors.UniqueViolation("duplicate key"), False),
        (PrimaryUnavailable("away"), False),  # already said
        (DuplicateError("exists"), False),
    ],
)
def test_only_a_server_away_counts_as_the_primary_unreachable(error: Exception, away: bool) -> None:
    assert unreachable(error) is away


class _Primary:
    """A write step whose primary can be taken away; what it wrote, in order."""

    def __init__(self) -> None:
        self.away = False
        self.wrote: list[list[str]] = []

    def write(self, store: Store, pending: Mapping[str, Sighting]) -> list[str]:
        if self.away:
            raise PrimaryUnavailable("the pool's primary database is unreachable")
        self.wrote.append(sorted(pending))
        for identity, seen in pending.items():
            store.record_device(seen.device(identity))
        return [f"changed {identity}" for identity in sorted(pending)]


def _seen(mac: str) -> dict[str, Sighting]:
    return {mac: Sighting(device_request(mac=mac), "127.0.0.1", CU7, AT)}


def test_the_flush_keeps_batches_while_the_primary_is_away_and_writes_them_first(
    tmp_path: Path,
) -> None:
    store = Store.open(":memory:")
    primary, logged = _Primary(), []
    spool = Spool(tmp_path / "spool.db", limit=100)
    writer = BranchWriter(store, spool, primary.write, Sighting, logged.extend)
    assert writer(_seen("00-04-F2-00-00-01")) == ["changed 00-04-F2-00-00-01"]
    primary.away = True
    assert writer(_seen("00-04-F2-00-00-02")) == []  # kept, not raised
    assert writer(_seen("00-04-F2-00-00-03")) == []
    assert writer.ship() == 0 and spool.records() == 2
    primary.away = False
    # the next flush writes the kept batches first, oldest first, then its own
    assert writer(_seen("00-04-F2-00-00-04")) == ["changed 00-04-F2-00-00-04"]
    assert [w[0][-2:] for w in primary.wrote] == ["01", "02", "03", "04"]
    assert logged == ["changed 00-04-F2-00-00-02", "changed 00-04-F2-00-00-03"]
    assert spool.records() == 0 and len(store.devices()) == 4


def test_a_full_spool_loses_the_batch_and_says_so(
    tmp_path: Path, log_events: list[LogEvent]
) -> None:
    store = Store.open(":memory:")
    primary = _Primary()
    primary.away = True
    spool = Spool(tmp_path / "spool.db", limit=100)
    writer = BranchWriter(store, spool, primary.write, Sighting)
    big = {k: v for n in range(101) for k, v in _seen(f"00-04-F2-00-01-{n:02X}").items()}
    assert writer(big) == []
    assert spool.records() == 0 and spool.lost() == 101 and spool.full()
    assert [e["event"] for e in log_events if e.get("event") == "pool.spool.full"]


class _Reports:
    """A store that reports a given pool state (check_pool asks nothing else)."""

    def __init__(self, state: PoolState) -> None:
        self.state = state

    def pool_state(self) -> PoolState:
        return self.state


@pytest.mark.parametrize(
    ("state", "ok", "warning", "figures"),
    [
        (
            PoolState(True, None, 0, 0, False, 0.0),
            True,
            False,
            ["pool_buffered=0;;;0", "replica_lag=0s;~:300;;0", "primary_unreachable=0s;;;0"],
        ),
        (
            PoolState(False, AT.replace(minute=0) - timedelta(seconds=90), 12, 0, False, 95.0),
            True,
            True,
            ["pool_buffered=12;;;0", "replica_lag=95s;~:300;;0", "primary_unreachable=90s;;;0"],
        ),
        (PoolState(True, None, 0, 0, False, 400.0), True, True, None),  # not streaming
        (PoolState(True, None, 5, 0, False, 0.0), True, True, None),  # shipping
        (PoolState(False, AT, 100, 3, True, None), False, True, None),  # full: records lost
    ],
)
def test_the_pool_check(
    state: PoolState, ok: bool, warning: bool, figures: list[str] | None
) -> None:
    result = check_pool(cast(Store, _Reports(state)), AT)
    assert result is not None and (result.ok, result.warning) == (ok, warning)
    assert result.detail.startswith(state.summary())
    if state.replica_lag == 400.0:
        assert "is the replica streaming" in result.detail
    if figures is not None:
        assert [p.text() for p in result.perfdata] == figures


def test_only_what_landed_is_logged_as_changed(tmp_path: Path) -> None:
    store = Store.open(":memory:")
    primary, logged = _Primary(), []
    spool = Spool(tmp_path / "spool.db", limit=100)
    writer = BranchWriter(store, spool, primary.write, Sighting, logged.extend)
    primary.away = True
    writer(_seen("00-04-F2-00-00-01"))
    writer(_seen("00-04-F2-00-00-02"))
    primary.away = False
    write = primary.write

    def refuses_the_first(target: Store, pending: Mapping[str, Sighting]) -> list[str]:
        changed = write(target, pending)
        if "00-04-F2-00-00-01" in pending:
            raise ValueError("a row the primary will not take")  # after its changes were made
        return changed

    writer._write = refuses_the_first
    for _ in range(3):  # the third try sets it aside
        writer.ship()
    assert logged == ["changed 00-04-F2-00-00-02"]
    assert spool.records() == 0 and spool.refused() == 1
    assert [d.identity for d in store.devices()] == ["00-04-F2-00-00-02"]  # rolled back
