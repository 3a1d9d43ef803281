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

Connections come from psycopg_pool; the store holds one in autocommit mode (each
statement outside `Store.transaction` is its own transaction, as in SQLite).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from appliance.store.connection import UniqueRowError
from appliance.store.dialect import statement_to_postgresql
from appliance.store.errors import StoreError

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
    """What the table groups read from a statement: rows, rowcount, lastrowid."""

    def __init__(self, cursor: psycopg.Cursor[Any], returns_id: bool) -> None:
        self._cursor = cursor
        self.rowcount = cursor.rowcount
        self.lastrowid: int | None = None
        if returns_id:
            row = cursor.fetchone()
            self.lastrowid = None if row is None else int(row[0])

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """One pooled PostgreSQL connection, called as the table groups call SQLite's."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
        self._pool = pool
        self._conn = pool.getconn(timeout=CONNECT_SECONDS)

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

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        text, returns_id = _translated(sql)
        cursor = self._conn.cursor()
        try:
            if text == "BEGIN":
                cursor.execute("BEGIN")
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
            else:
                cursor.execute(text.encode(), tuple(params))
        except pg_errors.UniqueViolation as e:
            raise UniqueRowError(_first_line(e)) from e
        return PgCursor(cursor, returns_id)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        text, _ = _translated(sql)
        cursor = self._conn.cursor()
        try:
            cursor.executemany(text.encode(), [tuple(r) for r in rows])
        except pg_errors.UniqueViolation as e:
            raise UniqueRowError(_first_line(e)) from e
        return PgCursor(cursor, False)

    def script(self, sql: str) -> None:
        """Several statements already in PostgreSQL's SQL (a translated schema script)."""
        self._conn.execute(sql.encode())

    def close(self) -> None:
        try:
            self._pool.putconn(self._conn)
        finally:
            self._pool.close()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
