"""What every table group works through: the open SQLite connection and the clock."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(t: datetime) -> str:
    """The stored form of a time: `2013-04-02T09:30:00Z`."""
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Connection:
    """The connection and clock the table groups share; `Store` composes them."""

    def __init__(self, conn: sqlite3.Connection, clock: Clock = utc_now) -> None:
        self._conn = conn
        self._clock = clock
        self._in_transaction = False

    def now(self) -> str:
        return iso_utc(self._clock())
