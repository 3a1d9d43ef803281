"""A branch node on a real PostgreSQL primary and its streaming hot standby.

The branch store reads the replica and writes the primary; with the primary stopped, reads
go on, a write is refused at once with PrimaryUnavailable, and the inventory flush's
batches and event rows wait in the spool; when the primary is back they land there, each
once, and the pool state (the store's, `check`'s and `/health`'s) says what happened.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest

from appliance.config import Config, RolloutSettings, StoreBackend, StoreSettings
from appliance.model import IdentifierKind
from appliance.ops import HealthResource
from appliance.ops.checks import process_checks
from appliance.phones.records import Sighting, write_sightings
from appliance.phones.spooled import BranchWriter
from appliance.store import PrimaryUnavailable, Store, branch_spool, open_configured
from appliance.testing import CU7, CU8, Postgres, device_request, throwaway_postgres

AT = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
SHIP_TRIES = 60  # the primary is asked again after a back-off of up to 15 s
POLL = 0.5
_databases = itertools.count()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Postgres, Postgres]]:
    """One primary and its hot standby for the module (a database per test)."""
    with throwaway_postgres() as primary:
        yield primary, primary.replica()


@dataclass
class Branch:
    store: Store
    primary_dsn: str
    settings: StoreSettings  # what opened the store: another process opens it so too


@pytest.fixture
def branch(servers: tuple[Postgres, Postgres], tmp_path: Path) -> Iterator[Branch]:
    """A branch node's store, opened as the configuration opens it, on a fresh database.
    The primary runs again after the test."""
    primary, replica = servers
    name = f"branch_{next(_databases)}"
    primary_dsn = primary.create_database(name)
    primary.caught_up(replica)
    settings = StoreSettings(
        StoreBackend.POSTGRESQL,
        dsn=replica.conninfo_of(name),
        primary_dsn=primary_dsn,
        spool=tmp_path / "spool.db",
    )
    store = open_configured(settings, tmp_path / "ucupdates.sqlite3")
    try:
        yield Branch(store, primary_dsn, settings)
    finally:
        store.close()
        if primary.group is None:
            primary.start()


def sighting(n: int, at: datetime = AT, version: str = CU7) -> dict[str, Sighting]:
    """One phone's check as the flush buffers it, by its identity."""
    mac = f"00-04-F2-00-00-{n:02X}"
    request = device_request(mac=mac, serial=None, version=version)
    return {mac: Sighting(request, "127.0.0.1", version, at)}


def flush_writer(store: Store) -> BranchWriter:
    """The flush's write step as serve wires it on a branch node."""
    spool = branch_spool(store)
    assert spool is not None

    def write(target: Store, pending: Any) -> list[Any]:
        return write_sightings(target, pending, RolloutSettings())

    return BranchWriter(store, spool, write, Sighting)


def on_primary(dsn: str, query: str) -> list[Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def test_reads_go_to_the_replica_and_writes_to_the_primary(branch: Branch) -> None:
    store, primary_dsn = branch.store, branch.primary_dsn
    conn: Any = store._conn
    assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    with store.transaction():
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        store.add_test_device("lab", IdentifierKind.MAC, "00-04-F2-00-00-09")
    flush_writer(store)(sighting(1))
    assert on_primary(primary_dsn, "SELECT identity FROM devices") == [("00-04-F2-00-00-01",)]
    # read right after the writes, though the replica may not have them yet
    assert [d.identity for d in store.devices()] == ["00-04-F2-00-00-01"]
    assert [t.identifier for t in store.test_devices()] == ["00-04-F2-00-00-09"]
    state = store.pool_state()
    assert state is not None and state.primary_reachable and state.buffered == 0


def test_the_primary_away_reads_go_on_writes_wait_in_the_spool_and_land_once(
    servers: tuple[Postgres, Postgres], branch: Branch, tmp_path: Path
) -> None:
    primary, _ = servers
    store, primary_dsn = branch.store, branch.primary_dsn
    writer = flush_writer(store)
    writer(sighting(1))
    primary.stop()

    with pytest.raises(PrimaryUnavailable, match="unreachable"):
        store.add_test_device("lab", IdentifierKind.MAC, "00-04-F2-00-00-09")
    assert [d.identity for d in store.devices()] == ["00-04-F2-00-00-01"]  # the replica's
    assert writer(sighting(2)) == []
    assert writer({**sighting(3), **sighting(2, AT.replace(hour=11), CU8)}) == []
    store.append_event("ucupdates", "rollout.drift.summary", "pool")  # kept, not refused
    state = store.pool_state()
    assert state is not None and not state.primary_reachable
    assert state.unreachable_since is not None and state.buffered == 4
    assert "unreachable" in state.summary() and "4 records buffered" in state.summary()
    # another process (ucupdates check) opens the branch meanwhile: the same state
    other = open_configured(branch.settings, tmp_path / "ucupdates.sqlite3", upgrade=False)
    try:
        pool = {r.name: r for r in process_checks(Config(data_dir=tmp_path), other, AT)}["pool"]
    finally:
        other.close()
    # and /health, for a Control Panel session, says it too
    health = HealthResource(Config(data_dir=tmp_path), store, lambda: AT, authorised=lambda _: True)
    said = json.loads(health.answer(cast(Any, None))[1])
    (shown,) = [c for c in said["checks"] if c["name"] == "pool"]
    assert shown["ok"] and shown["warning"] and "4 records buffered" in shown["detail"]
    assert pool.ok and pool.warning and "4 records buffered" in pool.detail
    assert f"since {state.unreachable_since:%Y-%m-%d %H:%M:%S} UTC" in pool.detail
    assert "pool_buffered=4;;;0" in [p.text() for p in pool.perfdata]

    primary.start()
    for _ in range(SHIP_TRIES):
        writer.ship()
        if state_buffered(store) == 0:
            break
        time.sleep(POLL)
    rows = on_primary(primary_dsn, "SELECT identity, version, last_seen FROM devices ORDER BY 1")
    assert rows == [
        ("00-04-F2-00-00-01", CU7, "2026-12-06T10:00:00Z"),
        ("00-04-F2-00-00-02", CU8, "2026-12-06T11:00:00Z"),  # the later batch last
        ("00-04-F2-00-00-03", CU7, "2026-12-06T10:00:00Z"),
    ]
    assert on_primary(primary_dsn, "SELECT action FROM events") == [("rollout.drift.summary",)]
    assert writer.ship() == 0  # nothing lands twice
    assert on_primary(primary_dsn, "SELECT count(*) FROM events") == [(1,)]
    state = store.pool_state()
    assert state is not None and state.primary_reachable and state.unreachable_since is None
    pool = {r.name: r for r in process_checks(Config(data_dir=tmp_path), store, AT)}["pool"]
    assert pool.ok and not pool.warning


def test_the_primary_killed_inside_a_transaction_rolls_it_back_and_the_batch_waits(
    servers: tuple[Postgres, Postgres], branch: Branch
) -> None:
    primary, _ = servers
    store, primary_dsn = branch.store, branch.primary_dsn
    with pytest.raises(PrimaryUnavailable), store.transaction():
        store.add_test_device("lab", IdentifierKind.MAC, "00-04-F2-00-00-09")
        primary.kill()
        store.add_test_device("lab", IdentifierKind.MAC, "00-04-F2-00-00-0A")
    writer = flush_writer(store)
    assert writer(sighting(1)) == []  # kept: the primary is away
    assert store.test_devices() == []  # the replica answers; nothing was committed
    primary.start()
    for _ in range(SHIP_TRIES):
        writer.ship()
        if state_buffered(store) == 0:
            break
        time.sleep(POLL)
    assert on_primary(primary_dsn, "SELECT identity FROM devices") == [("00-04-F2-00-00-01",)]
    assert on_primary(primary_dsn, "SELECT count(*) FROM test_devices") == [(0,)]
    store.add_test_device("lab", IdentifierKind.MAC, "00-04-F2-00-00-0B")  # writes again


def state_buffered(store: Store) -> int:
    state = store.pool_state()
    assert state is not None
    return state.buffered


def test_writers_in_several_threads_ride_out_a_primary_restart(
    servers: tuple[Postgres, Postgres], branch: Branch
) -> None:
    """Four threads write in transactions while the primary stops and starts again: each
    write lands or raises PrimaryUnavailable (nothing else, nothing hangs), and after the
    restart every thread writes again (no transaction left holding the writer lock)."""
    primary, _ = servers
    store = branch.store
    stop, back = threading.Event(), threading.Event()
    seen: dict[str, int] = {}
    again: set[int] = set()  # threads that wrote after the restart
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            try:
                with store.transaction():
                    store.append_event("test", f"thread.{n}", str(i))
                outcome = "written"
            except PrimaryUnavailable:
                outcome = "refused"
                time.sleep(0.05)
            with lock:
                seen[outcome] = seen.get(outcome, 0) + 1
                if outcome == "written" and back.is_set():
                    again.add(n)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        primary.stop()
        time.sleep(1)
        primary.start()
        back.set()
        cast(Any, store._conn).primary.retry()  # no back-off wait: the test knows it is up
        for _ in range(SHIP_TRIES):  # until every thread has written again
            if len(again) == len(threads):
                break
            time.sleep(POLL)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert seen.get("refused", 0) > 0 and again == {0, 1, 2, 3}
    with store.transaction():  # the writer lock is free
        store.append_event("test", "after", "restart")
    assert store.events(1)[0].action == "after"
