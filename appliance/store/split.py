"""A branch node's store: reads from the local hot standby, writes to the primary.

A branch appliance (docs/pool.md) keeps a streaming replica of the pool's database beside
it, so its phones are answered from the branch. `BranchConnection` has the shape of the
PostgreSQL adapter (`store.pgsql`) and sends each statement where it can run:

- a statement outside a transaction that only reads (SELECT, WITH without a data change,
  no lock, no sequence) goes to the replica; while the replica has not yet replayed this
  process's latest write (read your own writes), it goes to the primary;
- `Store.transaction()` (BEGIN ... COMMIT) and every other statement go to the primary.

While the primary does not answer, a write raises `PrimaryUnavailable` at once: the
primary is asked again (a connection with a short timeout) only after a back-off of a few
seconds, never on every write; reads go on from the replica. An event row written outside
a transaction meanwhile waits in the spool (`store.spool`), as the inventory flush's
batches do (`phones.spooled`), and ships when the primary answers.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from twisted.logger import Logger

from appliance.store.branch_state import PoolState, PrimaryUnavailable
from appliance.store.connection import Clock, iso_utc, utc_now
from appliance.store.database import Store, newest_schema_version
from appliance.store.errors import SchemaError, StoreError
from appliance.store.guard import check_thread
from appliance.store.pgsql import PgConnection, PgCursor
from appliance.store.primary import PrimaryLink, unreachable
from appliance.store.spool import STATEMENTS, Spool

log = Logger(namespace="ucupdates.pool")

_READ = re.compile(r"^\s*(SELECT|WITH|SHOW)\b", re.IGNORECASE)
_NOT_READ = re.compile(
    r"\b(INSERT|UPDATE|DELETE|MERGE|pg_advisory\w*|pg_try_advisory\w*|pg_notify|nextval|setval"
    r"|FOR\s+(NO\s+KEY\s+)?UPDATE|FOR\s+(KEY\s+)?SHARE)\b",
    re.IGNORECASE,
)
T = TypeVar("T")
_SPOOLED = re.compile(r"^\s*INSERT\s+INTO\s+events\b", re.IGNORECASE)


def is_read(sql: str) -> bool:
    """Whether a statement outside a transaction may run on a hot standby."""
    return bool(_READ.match(sql)) and not _NOT_READ.search(sql)


class BranchConnection:
    """The replica and the primary behind one connection with the adapter's shape."""

    def __init__(self, replica: PgConnection, primary: PrimaryLink, spool: Spool | None) -> None:
        self.replica = replica
        self.primary = primary
        self.spool = spool
        self._local = threading.local()  # .held: this thread's transaction's connection
        self._target_lock = threading.Lock()
        self._target: int | None = None  # the primary's WAL position after our last write

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        check_thread()
        verb = sql.strip().split(None, 1)[0].upper() if sql.strip() else ""
        held: PgConnection | None = getattr(self._local, "held", None)
        if verb == "BEGIN":
            conn = self.primary.connection()
            cursor = self._on_primary(lambda c: c.execute(sql, params), conn)
            self._local.held = conn  # the whole transaction on this primary connection
            return cursor
        if held is not None:
            if verb in ("COMMIT", "ROLLBACK"):
                self._local.held = None
                return self._end(held, sql, verb)
            return self._on_primary(lambda c: c.execute(sql, params), held)
        if is_read(sql):
            return self._read(sql, params)
        try:
            cursor = self._on_primary(lambda c: c.execute(sql, params))
        except PrimaryUnavailable:
            if self.spool is None or not _SPOOLED.match(sql):
                raise
            self._keep(sql, params)
            return PgCursor([])
        self._wrote()
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        check_thread()
        held: PgConnection | None = getattr(self._local, "held", None)
        cursor = self._on_primary(lambda c: c.executemany(sql, rows), held)
        if held is None:
            self._wrote()
        return cursor

    def script(self, sql: str) -> None:
        self._on_primary(lambda c: c.script(sql), getattr(self._local, "held", None))

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Every statement of this thread on one primary connection meanwhile."""
        conn = self.primary.connection()
        with conn.pinned():
            self._local.held = conn
            try:
                yield
            finally:
                self._local.held = None

    def close(self) -> None:
        try:
            self.primary.close()
        finally:
            self.replica.close()
            if self.spool is not None:
                self.spool.close()

    def _on_primary(self, call: Callable[[PgConnection], T], conn: PgConnection | None = None) -> T:
        """`call` on the primary's connection (`conn`: the one this thread's transaction
        runs on); a server away, or no connection to it, raises PrimaryUnavailable."""
        if conn is None:
            conn = self.primary.connection()
        try:
            return call(conn)
        except Exception as e:
            if not unreachable(e):
                raise
            self.primary.failed(e)
            raise self.primary.unavailable() from None

    def _end(self, conn: PgConnection, sql: str, verb: str) -> PgCursor:
        try:
            cursor: PgCursor = self._on_primary(lambda c: c.execute(sql), conn)
        except PrimaryUnavailable:
            if verb == "ROLLBACK":
                return PgCursor([])  # the transaction went with the connection
            raise
        if verb == "COMMIT":
            self._wrote()
        return cursor

    def _wrote(self) -> None:
        """Remember where the primary's WAL is now: reads wait for the replica to pass it."""
        try:
            row = self._on_primary(
                lambda c: c.execute("SELECT pg_current_wal_lsn()::text")
            ).fetchone()
        except PrimaryUnavailable:
            return
        position = _lsn(row[0])
        with self._target_lock:
            self._target = max(position, self._target or 0)

    def _read(self, sql: str, params: Sequence[Any]) -> PgCursor:
        target = self._target
        if target is not None:
            row = self.replica.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
            replayed = _lsn(row[0]) if row and row[0] else 0
            if replayed >= target:
                with self._target_lock:
                    if self._target is not None and replayed >= self._target:
                        self._target = None
            else:
                try:
                    cursor: PgCursor = self._on_primary(lambda c: c.execute(sql, params))
                    return cursor
                except PrimaryUnavailable:
                    pass  # what the replica has is what there is
        return self.replica.execute(sql, params)

    def _keep(self, sql: str, params: Sequence[Any]) -> None:
        assert self.spool is not None
        payload = json.dumps([[sql, list(params)]])
        if not self.spool.add(STATEMENTS, payload, 1, iso_utc(utc_now())):
            log.error(
                "the branch spool {path} is full ({limit} records): an event row is lost",
                path=str(self.spool.path),
                limit=self.spool.limit,
                event="pool.spool.full",
            )
            raise self.primary.unavailable()

    def pool_state(self) -> PoolState:
        """The primary (asked if the back-off allows), the spool, the replica's lag."""
        reachable = True
        try:
            self._on_primary(lambda c: c.execute("SELECT 1"))
        except PrimaryUnavailable:
            reachable = False
        row = self.replica.execute(_LAG).fetchone()
        lag = None if row is None or row[0] is None else max(0.0, float(row[0]))
        since = self.primary.since
        if not reachable and self.spool is not None:
            stored = self.spool.unreachable_since()
            if stored:
                since = min(since or _parse(stored), _parse(stored))
        return PoolState(
            primary_reachable=reachable,
            unreachable_since=None if reachable else since,
            buffered=0 if self.spool is None else self.spool.records(),
            lost=0 if self.spool is None else self.spool.lost(),
            spool_full=False if self.spool is None else self.spool.full(),
            replica_lag=lag,
            reason="" if reachable else self.primary.reason,
            refused=0 if self.spool is None else self.spool.refused(),
        )


# The replica's lag: none while it streams and has replayed all it received; else the age
# of the last transaction it replayed (how old its data may be).
_LAG = (
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0"
    " WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
    " AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0"
    " ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
)


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def open_branch(
    replica_dsn: str,
    primary_dsn: str,
    pool_size: int = 4,
    spool_path: Path | None = None,
    spool_limit: int = 200_000,
    clock: Clock = utc_now,
    upgrade: bool = True,
) -> Store:
    """A branch node's store: the hot standby `replica_dsn` read, the primary
    `primary_dsn` written, and the spool at `spool_path` (None: no spool; `ucupdates
    check` opens it too, to count what waits). The schema is brought to the newest on
    the primary when it answers (`upgrade`); without it the replica's must be the newest
    already (SchemaError)."""
    spool = Spool(spool_path, spool_limit) if spool_path is not None else None
    try:
        replica = PgConnection.open(replica_dsn, pool_size)
    except BaseException:
        if spool is not None:
            spool.close()
        raise
    link = PrimaryLink(primary_dsn, max(1, pool_size // 2), clock, spool)
    store = Store(BranchConnection(replica, link, spool), clock)
    store.backend = "postgresql"
    try:
        try:
            link.connection()
            Store.open_postgresql(primary_dsn, 1, clock=clock, upgrade=upgrade).close()
        except PrimaryUnavailable:
            pass  # served from the replica as it is
        except StoreError as e:
            if not unreachable(e):
                raise
            link.failed(e)  # gone between the two connections
        _wait_for_schema(store, 30.0 if link.since is None else 0.0)  # nothing to wait for
    except BaseException:
        store.close()
        raise
    return store


def _wait_for_schema(store: Store, seconds: float) -> None:
    """The replica at this version's schema (an upgrade on the primary reaches it in a
    moment); SchemaError after `seconds` (at once when the primary is away)."""
    newest = newest_schema_version()
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds * 10) + 1):
        found = store.schema_version
        if found == newest:
            return
        if found > newest or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise SchemaError(
        f"the replica's schema is version {found}, this ucupdates needs {newest}: upgrade"
        " the pool's primary (a node on it, or this one while the primary answers)"
    )


def pool_state(store: Store) -> PoolState | None:
    """A branch node's pool state; None for any other store."""
    conn = store._conn  # the store's own package
    return conn.pool_state() if isinstance(conn, BranchConnection) else None
