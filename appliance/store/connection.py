"""What every table group works through: the open database connection and the clock.

The connection is SQLite's own (`sqlite3.Connection`) or, on PostgreSQL, the adapter of
`store.pgsql` with the same shape (`Database`): the table groups run one SQL for both.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

Clock = Callable[[], datetime]
Backend = Literal["sqlite", "postgresql"]


class Cursor(Protocol):
    """What the table groups read from a statement they ran."""

    @property
    def rowcount(self) -> int: ...
    @property
    def lastrowid(self) -> int | None: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    """The connection the table groups call: SQLite's, or PostgreSQL's adapter."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Cursor: ...
    def close(self) -> None: ...


class UniqueRowError(Exception):
    """PostgreSQL refused a row whose unique key exists (SQLite raises IntegrityError)."""


# What a violated unique key raises on either backend: the table groups catch these.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, UniqueRowError)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(t: datetime) -> str:
    """The stored form of a time: `2013-04-02T09:30:00Z`."""
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_generation_lock = threading.Lock()
_catalogue_generation = 0  # catalogue changes this process committed, on any connection


def count_catalogue_change() -> None:
    """One more catalogue change committed (`Connection.catalogue_generation`)."""
    global _catalogue_generation
    with _generation_lock:
        _catalogue_generation += 1


class Connection:
    """The connection and clock the table groups share; `Store` composes them."""

    backend: Backend = "sqlite"

    def __init__(self, conn: Database, clock: Clock = utc_now) -> None:
        self._conn = conn
        self._clock = clock
        # Per thread: a PostgreSQL store is called from several threads, each in its own
        # transaction (an SQLite store is used by one thread only).
        self._thread = threading.local()

    @property
    def _in_transaction(self) -> bool:
        """Whether this thread is inside `Store.transaction`."""
        return getattr(self._thread, "in_transaction", False)

    @_in_transaction.setter
    def _in_transaction(self, value: bool) -> None:
        self._thread.in_transaction = value

    @property
    def _catalogue_written(self) -> bool:
        """Whether this thread's transaction wrote the catalogue (counted when it commits)."""
        return getattr(self._thread, "catalogue_written", False)

    @_catalogue_written.setter
    def _catalogue_written(self, value: bool) -> None:
        self._thread.catalogue_written = value

    def now(self) -> str:
        return iso_utc(self._clock())

    def catalogue_generation(self) -> int:
        """A number that changes whenever a change to the catalogue's tables (rules,
        updates and files, test devices) commits in this process, on any connection or
        thread: answers compare it, without a query, to know they must reload. Another
        process's commits show only in `data_version`."""
        return _catalogue_generation

    def _catalogue_changed(self) -> None:
        """A catalogue table was written: counted now, or when the transaction commits.
        On PostgreSQL the pool-wide counter row (`data_version`) moves, and its
        notification goes, by the catalogue tables' triggers in the writing transaction
        (`store.pgchanges`); SQLite keeps its own `PRAGMA data_version`."""
        if self._in_transaction:
            self._catalogue_written = True
        else:
            count_catalogue_change()
