"""PostgreSQL under the table groups: a thin adapter with the shape of SQLite's connection.

The table groups run the same SQL on both engines. What differs is translated here, and
only here (docs/pool.md lists it):

- placeholders: `?` becomes `%s` (`dialect.statement_to_postgresql`, which also refuses
  SQLite-only SQL);
- the id of a new row: SQLite's `lastrowid` is the `RETURNING id` this adapter appends to
  an INSERT into a table numbered by an `id INTEGER PRIMARY KEY`;
- a unique key violated (psycopg's UniqueViolation) raises `UniqueRowError`, which the
  table groups turn into DuplicateError as they do SQLite's IntegrityError;
- `BEGIN IMMEDIATE` (SQLite: one writer at a time, reads inside see every earlier commit)
  becomes `BEGIN` and a transaction-scoped advisory lock, `WRITER_LOCK`: write
  transactions of every node run one at a time, and in READ COMMITTED each statement
  after the lock sees what the previous writer committed, so the read-then-write methods
  behave as on SQLite.

Connections come from psycopg_pool, in autocommit mode (each statement outside
`Store.transaction` is its own transaction, as in SQLite). The store may be called from
any thread: a statement borrows a connection for as long as it runs (its rows are read
before the connection goes back), and a thread inside a transaction (or an upgrade) keeps
its own until the end, so the pool's `max_size` bounds the connections, not the threads.
A thread declared by `store.guard` (the reactor's) is refused every statement.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from appliance.store.connection import UniqueRowError
from appliance.store.dialect import statement_to_postgresql
from appliance.store.errors import StoreError
from appliance.store.guard import check_thread

WRITER_LOCK = 0x75637570  # pg_advisory_xact_lock: one write transaction at a time
SCHEMA_LOCK = WRITER_LOCK + 1  # pg_advisory_lock: one node upgrades the schema at a time
CONNECT_SECONDS = 10.0

_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)
_NUMBERED = re.compile(r"CREATE\s+TABLE\s+(\w+)\s*\(\s*id\s+INTEGER\s+PRIMARY\s+KEY", re.I)


@lru_cache(maxsize=1)
def numbered_tables() -> frozenset[str]:
    """The tables whose `id` SQLite numbers on insert (the schema scripts say which)."""
    found: set[str] = set()
    for entry in resources.files("appliance.store").joinpath("schema").iterdir():
        if entry.name.endswith(".sql"):
            found.update(m.group(1).lower() for m in _NUMBERED.finditer(entry.read_text("utf-8")))
    return frozenset(found)


@lru_cache(maxsize=512)
def _translated(sql: str) -> tuple[str, bool]:
    """The statement for PostgreSQL, and whether it returns the new row's id."""
    if sql.strip().upper() == "BEGIN IMMEDIATE":
        return "BEGIN", False
    text = statement_to_postgresql(sql)
    m = _INSERT.match(sql)
    if m and m.group(1).lower() in numbered_tables() and "RETURNING" not in sql.upper():
        return f"{text} RETURNING id", True
    return text, False


class PgCursor:
    """What the table groups read from a statement: rows, rowcount, lastrowid. The rows
    are read when the statement has run (`of`), so its connection may go back to the
    pool."""

    def __init__(self, rows: list[Any], rowcount: int = -1, lastrowid: int | None = None):
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    @classmethod
    def of(cls, cursor: psycopg.Cursor[Any], returns_id: bool) -> PgCursor:
        rows: list[Any] = cursor.fetchall() if cursor.description else []
        if returns_id:
            return cls([], cursor.rowcount, int(rows[0][0]) if rows else None)
        return cls(rows, cursor.rowcount)

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Any]:
        rows, self._next = self._rows[self._next :], len(self._rows)
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


_END = frozenset({"COMMIT", "ROLLBACK"})


class PgConnection:
    """The pooled PostgreSQL connections, called as the table groups call SQLite's."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
        self._pool = pool
        self._local = threading.local()  # .held: this thread's connection, .pins: how held

    @classmethod
    def open(cls, dsn: str, pool_size: int) -> PgConnection:
        """Connect through a new pool of at most `pool_size` connections. The message of
        a failure names the server as psycopg reports it, never the connection string."""
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            num_workers=1,
            kwargs={"autocommit": True},
            name="ucupdates-store",
        )
        try:
            pool.open(wait=True, timeout=CONNECT_SECONDS)
            return cls(pool)
        except (PoolTimeout, psycopg.Error) as e:
            pool.close()
            raise StoreError(f"cannot connect to the PostgreSQL store: {_first_line(e)}") from None

    @property
    def conninfo(self) -> str:
        """The connection string (for a connection of its own, such as LISTEN's). Secret:
        never part of a message."""
        return str(self._pool.conninfo)

    def _take(self) -> psycopg.Connection[Any]:
        """This thread's held connection, else one from the pool (given back by `_give`)."""
        held: psycopg.Connection[Any] | None = getattr(self._local, "held", None)
        if held is not None:
            return held
        try:
            return self._pool.getconn(timeout=CONNECT_SECONDS)
        except PoolTimeout as e:
            raise StoreError(f"no connection to the PostgreSQL store: {_first_line(e)}") from None

    def _give(self, conn: psycopg.Connection[Any]) -> None:
        if getattr(self._local, "held", None) is not conn:
            self._pool.putconn(conn)

    def _hold(self, conn: psycopg.Connection[Any]) -> None:
        self._local.held = conn
        self._local.pins = getattr(self._local, "pins", 0) + 1

    def _release(self) -> None:
        self._local.pins -= 1
        if self._local.pins == 0:
            conn, self._local.held = self._local.held, None
            self._pool.putconn(conn)

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Every statement of this thread on one connection meanwhile (a session lock)."""
        check_thread()
        self._hold(self._take())
        try:
            yield
        finally:
            self._release()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        check_thread()
        text, returns_id = _translated(sql)
        if text == "BEGIN":
            conn = self._take()
            self._hold(conn)
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
            except BaseException:
                self._end(conn, "ROLLBACK")
                raise
            return PgCursor([])
        verb = text.strip().upper()
        held = getattr(self._local, "held", None)
        if verb in _END and held is not None:
            self._end(held, verb)
            return PgCursor([])
        conn = self._take()
        try:
            cursor = conn.cursor()
            cursor.execute(text.encode(), tuple(params))
            return PgCursor.of(cursor, returns_id)
        except pg_errors.UniqueViolation as e:
            raise UniqueRowError(_first_line(e)) from e
        finally:
            self._give(conn)

    def _end(self, conn: psycopg.Connection[Any], verb: str) -> None:
        """COMMIT or ROLLBACK this thread's transaction; its connection goes back."""
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute(verb)
        finally:
            self._release()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        check_thread()
        text, _ = _translated(sql)
        conn = self._take()
        try:
            cursor = conn.cursor()
            cursor.executemany(text.encode(), [tuple(r) for r in rows])
            return PgCursor.of(cursor, False)
        except pg_errors.UniqueViolation as e:
            raise UniqueRowError(_first_line(e)) from e
        finally:
            self._give(conn)

    def script(self, sql: str) -> None:
        """Several statements already in PostgreSQL's SQL (a translated schema script)."""
        check_thread()
        conn = self._take()
        try:
            conn.execute(sql.encode())
        finally:
            self._give(conn)

    def close(self) -> None:
        self._pool.close()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
