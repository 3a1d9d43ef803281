"""Word of catalogue changes other nodes commit, for a watcher's thread (PostgreSQL only).

A node on the primary hears of a change at once: the transaction that changes the catalogue
sends NOTIFY on `pgchanges.CHANNEL` (delivered at its commit), and `ChangeFeed.wait` returns
True as soon as one arrives. A hot standby delivers no notifications, and a notification can
be missed while the feed reconnects, so the watcher also polls `Store.data_version()` at
every `wait` timeout: the feed only makes it quicker. The feed has its own connection (not
one of the store's pool: it sits in LISTEN for as long as the node runs), made with the
pool's connection string and never shown.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from appliance.store.database import Store
from appliance.store.guard import check_thread
from appliance.store.pgchanges import CHANNEL
from appliance.store.pgsql import CONNECT_SECONDS, PgConnection


class ChangeFeed:
    """LISTEN on the catalogue's channel, from one thread. Without a PostgreSQL primary
    connection to listen on (SQLite, a branch node's split store) it only waits."""

    def __init__(self, store: Store) -> None:
        conn = store._conn
        self._conninfo: str | None = conn.conninfo if isinstance(conn, PgConnection) else None
        self._listening: psycopg.Connection[Any] | None = None
        self.heard = 0  # notifications that announced a change

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Whether to look at the catalogue's version now: a change was announced within
        `timeout` seconds, or the LISTEN connection was just made (a change committed
        before it was would not be announced). False after `timeout`, or when `stop` is
        set. A connection lost is made again at the next call; meanwhile this waits."""
        check_thread()
        if self._conninfo is None:
            stop.wait(timeout)
            return False
        try:
            if self._listening is None or self._listening.closed:
                self._connect()
                return True
            assert self._listening is not None
            heard = False
            for _ in self._listening.notifies(timeout=timeout, stop_after=1):
                heard = True
            for _ in self._listening.notifies(timeout=0):  # a burst of changes counts once
                pass
            self.heard += heard
            return heard
        except psycopg.Error:
            self.close()
            stop.wait(timeout)
            return False

    def _connect(self) -> None:
        assert self._conninfo is not None
        conn = psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=int(CONNECT_SECONDS)
        )
        conn.execute(f"LISTEN {CHANNEL}")
        self._listening = conn

    def close(self) -> None:
        if self._listening is not None:
            try:
                self._listening.close()
            finally:
                self._listening = None
