"""A branch node's spool: what the primary could not take while it was unreachable.

A branch node (docs/pool.md) writes to a primary across the WAN. While the primary does
not answer, the records the node makes on its own (the inventory flush's batches, event
rows) wait here, in a small SQLite file of the data folder, in order; `ship` writes them
to the primary when it answers again, oldest first, each batch in one primary transaction
that also moves this node's mark in `branch_shipped`, and removes a batch locally only
after that commit. A batch whose number the mark already covers (the node stopped between
the commit and the removal) is removed without being written again: each lands once.

The spool holds at most `limit` records; a batch that would pass it is refused (the
caller logs `pool.spool.full`) and counted as lost. The same file tells `ucupdates check`
(another process) since when the serving process has found the primary unreachable.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.logger import Logger

from appliance.store.branch_state import PrimaryUnavailable
from appliance.store.errors import StoreError

if TYPE_CHECKING:
    from appliance.store.database import Store

log = Logger(namespace="ucupdates.pool")

SPOOL_MODE = 0o600  # it holds what phones sent: their addresses, users, versions
ATTEMPTS = 3  # a batch the primary refuses this many times is set aside
_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    records INTEGER NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refused (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    records INTEGER NOT NULL,
    at TEXT NOT NULL,
    error TEXT NOT NULL
);
"""
# On the primary: the newest batch of each branch node written there (`ship`).
SHIPPED_TABLE = (
    "CREATE TABLE IF NOT EXISTS branch_shipped (node TEXT PRIMARY KEY, batch BIGINT NOT NULL)"
)

# kind -> writes one batch's payload to the store, inside the caller's transaction; what
# it returns is handed to `ship`'s `landed` once that transaction has committed
Shipper = Callable[["Store", str], object]


@dataclass(frozen=True)
class SpoolBatch:
    seq: int
    kind: str  # what wrote it, and so what ships it ("statements", "sightings")
    payload: str  # JSON, as the writer of this kind made it
    records: int
    at: str  # when it was spooled (UTC, ISO)


class Spool:
    """The spool file at `path`, holding at most `limit` records. Thread-safe."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self._lock = threading.Lock()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, SPOOL_MODE)
            os.close(fd)
            self._db = sqlite3.connect(
                str(path), isolation_level=None, timeout=10.0, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
            self.node = self._meta("node") or self._new_node()
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"{path}: cannot open the branch spool: {e}") from None

    def _new_node(self) -> str:
        node = secrets.token_hex(8)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('node', ?)", (node,))
        return self._meta("node") or node

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, kind: str, payload: str, records: int, at: str) -> bool:
        """Keep one batch; False (nothing kept, the loss counted) when the spool is full."""
        with self._lock:
            held = self._records()
            if held + records > self.limit:
                self._db.execute(
                    "INSERT INTO meta VALUES ('lost', ?) ON CONFLICT (key) DO UPDATE"
                    " SET value = CAST(value AS INTEGER) + excluded.value",
                    (str(records),),
                )
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('full', '1')")
                return False
            self._db.execute(
                "INSERT INTO batches (kind, payload, records, at) VALUES (?, ?, ?, ?)",
                (kind, payload, records, at),
            )
            self._db.execute("DELETE FROM meta WHERE key = 'full'")
            return True

    def oldest(self) -> SpoolBatch | None:
        with self._lock:
            row = self._db.execute(
                "SELECT seq, kind, payload, records, at FROM batches ORDER BY seq LIMIT 1"
            ).fetchone()
        return None if row is None else SpoolBatch(*row)

    def remove(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            self._db.execute("DELETE FROM meta WHERE key = 'full'")
            if self._records() == 0:
                self._db.execute("VACUUM")  # an outage's batches gone: give the space back

    def failed(self, batch: SpoolBatch, error: str) -> bool:
        """The primary refused `batch` (not for being away); True when that was its
        `ATTEMPTS`th time, and it is now set aside (kept in the table `refused`, never
        shipped) so that the batches after it can go."""
        with self._lock:
            key = f"attempts:{batch.seq}"
            tries = int(self._meta(key) or 0) + 1
            if tries < ATTEMPTS:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(tries)))
                return False
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO refused SELECT seq, kind, payload, records, at, ?"
                " FROM batches WHERE seq = ?",
                (error, batch.seq),
            )
            self._db.execute("DELETE FROM batches WHERE seq = ?", (batch.seq,))
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
            self._db.execute("COMMIT")
            return True

    def refused(self) -> int:
        """Records the primary refused, set aside in the spool."""
        with self._lock:
            row = self._db.execute("SELECT coalesce(sum(records), 0) FROM refused").fetchone()
            return int(row[0])

    def records(self) -> int:
        """Records waiting to be shipped."""
        with self._lock:
            return self._records()

    def _records(self) -> int:
        return int(self._db.execute("SELECT coalesce(sum(records), 0) FROM batches").fetchone()[0])

    def full(self) -> bool:
        """Whether the latest batch offered was refused (none kept since)."""
        with self._lock:
            return self._meta("full") is not None

    def lost(self) -> int:
        """Records refused since the spool was made, because it was full."""
        with self._lock:
            return int(self._meta("lost") or 0)

    def set_unreachable_since(self, at: str | None) -> None:
        """Since when (UTC, ISO) the serving process finds the primary unreachable; None
        when it answers."""
        with self._lock:
            if at is None:
                self._db.execute("DELETE FROM meta WHERE key = 'unreachable_since'")
            else:
                self._db.execute(
                    "INSERT INTO meta VALUES ('unreachable_since', ?) ON CONFLICT (key) DO NOTHING",
                    (at,),
                )

    def unreachable_since(self) -> str | None:
        with self._lock:
            return self._meta("unreachable_since")


STATEMENTS = "statements"  # event rows written while the primary was away (store.split)
_STATEMENT = re.compile(r"^\s*INSERT\s+INTO\s+events\b", re.IGNORECASE)


def ship_statements(store: Store, payload: str) -> None:
    """A batch of `STATEMENTS`: each row's INSERT as the branch node ran it (only event
    rows are ever kept so)."""
    for sql, params in json.loads(payload):
        if not _STATEMENT.match(sql):
            raise StoreError("the branch spool holds a statement that is not an event row")
        store._conn.execute(sql, tuple(params))


def branch_spool(store: Store) -> Spool | None:
    """The spool of a branch node's store; None for any other store."""
    spool = getattr(store._conn, "spool", None)
    return spool if isinstance(spool, Spool) else None


def ship(
    store: Store,
    spool: Spool,
    shippers: Mapping[str, Shipper],
    most: int = 50,
    landed: Callable[[object], None] = lambda result: None,
) -> int:
    """Write up to `most` of the spool's batches to the primary, oldest first, each in one
    transaction with this node's mark; a batch goes from the spool once that commits.
    Returns the records shipped. PrimaryUnavailable (the primary gone again) stops it:
    the rest waits for the next call. A batch the primary refuses otherwise (a row it will
    not take, a kind nothing ships) stops it too, and after `ATTEMPTS` such tries is set
    aside (`pool.spool.refused`), so one bad batch cannot hold back every later one.
    `landed` gets what each batch's shipper returned, once its transaction committed."""
    shipped = 0
    for _ in range(most):
        batch = spool.oldest()
        if batch is None:
            break
        try:
            shipped += _ship_one(store, spool, batch, shippers, landed)
        except PrimaryUnavailable:
            raise
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            if spool.failed(batch, error):
                log.error(
                    "the primary refused a buffered batch of {records} records ({error}):"
                    " set aside in the spool, the batches after it go on",
                    records=batch.records,
                    error=error,
                    kind=batch.kind,
                    event="pool.spool.refused",
                )
                continue
            raise
        spool.remove(batch.seq)
    return shipped


def _ship_one(
    store: Store,
    spool: Spool,
    batch: SpoolBatch,
    shippers: Mapping[str, Shipper],
    landed: Callable[[object], None],
) -> int:
    shipper = {STATEMENTS: ship_statements, **shippers}.get(batch.kind)
    if shipper is None:
        raise StoreError(f"the branch spool holds a batch of unknown kind {batch.kind!r}")
    with store.transaction():
        conn = store._conn  # the store's own package: the spool's SQL lives here
        conn.execute(SHIPPED_TABLE)
        row = conn.execute(
            "SELECT batch FROM branch_shipped WHERE node = ?", (spool.node,)
        ).fetchone()
        if row is not None and int(row[0]) >= batch.seq:
            return 0  # landed before the node stopped: not again
        result = shipper(store, batch.payload)
        conn.execute(
            "INSERT INTO branch_shipped (node, batch) VALUES (?, ?)"
            " ON CONFLICT (node) DO UPDATE SET batch = excluded.batch",
            (spool.node, batch.seq),
        )
    landed(result)
    return batch.records
