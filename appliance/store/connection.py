"""What every table group works through: the open SQLite connection and the clock."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


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

    def __init__(self, conn: sqlite3.Connection, clock: Clock = utc_now) -> None:
        self._conn = conn
        self._clock = clock
        self._in_transaction = False
        self._catalogue_written = False  # in this transaction: counted when it commits

    def now(self) -> str:
        return iso_utc(self._clock())

    def catalogue_generation(self) -> int:
        """A number that changes whenever a change to the catalogue's tables (rules,
        updates and files, test devices) commits in this process, on any connection or
        thread: answers compare it, without a query, to know they must reload. Another
        process's commits show only in `data_version`."""
        return _catalogue_generation

    def _catalogue_changed(self) -> None:
        """A catalogue table was written: counted now, or when the transaction commits."""
        if self._in_transaction:
            self._catalogue_written = True
        else:
            count_catalogue_change()
