"""A branch node's primary across the WAN: connected when needed, asked again after a
back-off, and what counts as the primary being away (docs/pool.md, "Branch nodes").

While the primary answers, a branch node writes to it through an ordinary pool of
connections (`store.pgsql`). When a connection to it fails or breaks, `PrimaryLink.failed`
drops the pool and every write is refused at once (`PrimaryUnavailable`) until a back-off
of a few seconds has passed; then one thread asks again with a short connection timeout.
The connection string gets TCP keepalives and a send timeout unless it sets its own, so a
WAN that drops packets fails a statement in seconds rather than after TCP's retries.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import PoolClosed, PoolTimeout
from twisted.logger import Logger

from appliance.store.branch_state import PrimaryUnavailable
from appliance.store.connection import Clock, iso_utc
from appliance.store.errors import StoreError
from appliance.store.pgsql import PgConnection
from appliance.store.spool import Spool

log = Logger(namespace="ucupdates.pool")

PROBE_SECONDS = 3  # libpq's connect_timeout when the primary is asked again
FIRST_BACKOFF = 2.0  # seconds before the primary is asked again after a failure...
LAST_BACKOFF = 15.0  # ...doubling up to this

# SQLSTATEs of a server that is going or gone: admin shutdown, crash shutdown, starting up
_GONE = frozenset({"57P01", "57P02", "57P03"})


def unreachable(error: BaseException) -> bool:
    """Whether `error` says the server is away (not that a statement failed): a connection
    that failed or broke (no SQLSTATE, or class 08), a server shutting down, no connection
    to be had from the pool (the adapter's StoreError, the pool's own errors)."""
    if isinstance(error, psycopg.InterfaceError | PoolTimeout | PoolClosed):
        return True
    if isinstance(error, psycopg.OperationalError):
        state = error.sqlstate
        return state is None or state.startswith("08") or state in _GONE
    return type(error) is StoreError  # the adapter's "cannot connect" / "no connection"


# libpq settings for a primary across a WAN, unless the connection string sets them: a
# WAN that drops packets (rather than refusing) fails a statement in seconds, not the
# minutes of TCP's own retries.
WAN_SETTINGS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "15",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "20000",  # ms: data sent and not acknowledged
}


def across_the_wan(dsn: str) -> str:
    """`dsn` with WAN_SETTINGS for what it does not set itself."""
    given = conninfo_to_dict(dsn)
    return make_conninfo(dsn, **{k: v for k, v in WAN_SETTINGS.items() if k not in given})


class PrimaryLink:
    """The primary of a branch node: connected when first needed, and after a failure
    asked again only once the back-off has passed (by one thread; the others are told
    at once that it is unavailable)."""

    def __init__(self, dsn: str, pool_size: int, clock: Clock, spool: Spool | None) -> None:
        self._dsn = across_the_wan(dsn)
        self._pool_size = pool_size
        self._clock = clock
        self._spool = spool
        self._conn: PgConnection | None = None
        self._lock = threading.Lock()
        self._asking = threading.Lock()
        self.since: datetime | None = None  # unreachable since (UTC)
        self.reason = ""
        self._backoff = FIRST_BACKOFF
        self._next_try = 0.0  # time.monotonic() after which the primary is asked again

    def connection(self) -> PgConnection:
        """The primary's connection; PrimaryUnavailable at once while it is away."""
        conn = self._conn
        if conn is not None:
            return conn
        if time.monotonic() < self._next_try or not self._asking.acquire(blocking=False):
            raise self.unavailable()
        try:
            if self._conn is None:
                self._connect()
            assert self._conn is not None
            return self._conn
        finally:
            self._asking.release()

    def retry(self) -> None:
        """Ask the primary at the next statement, whatever the back-off says."""
        self._next_try = 0.0

    def _connect(self) -> None:
        try:
            probe = psycopg.connect(make_conninfo(self._dsn, connect_timeout=PROBE_SECONDS))
            probe.close()
            conn = PgConnection.open(self._dsn, self._pool_size)
        except (psycopg.Error, StoreError) as e:
            self.failed(e)
            raise self.unavailable() from None
        with self._lock:
            self._conn = conn
            was, self.since, self.reason = self.since, None, ""
            self._backoff = FIRST_BACKOFF
        if self._spool is not None:
            self._spool.set_unreachable_since(None)
        if was is not None:
            log.info(
                "the primary answers again (unreachable since {since})",
                since=iso_utc(was),
                event="pool.primary.back",
            )

    def failed(self, error: BaseException) -> None:
        """The primary did not answer: drop its connections, wait before asking again."""
        with self._lock:
            conn, self._conn = self._conn, None
            first = self.since is None
            if first:
                self.since = self._clock()
            self.reason = _first_line(error)
            self._next_try = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, LAST_BACKOFF)
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing more to do
                conn.close()  # connections in use close when given back
        if first:
            if self._spool is not None:
                self._spool.set_unreachable_since(iso_utc(self.since or self._clock()))
            log.warn(
                "the primary is unreachable ({reason}): writes wait or are refused, phones"
                " are served from the replica",
                reason=self.reason,
                event="pool.primary.unreachable",
            )

    def unavailable(self) -> PrimaryUnavailable:
        since = f" since {iso_utc(self.since)}" if self.since else ""
        return PrimaryUnavailable(
            f"the pool's primary database is unreachable{since}: this branch node serves "
            "phones from its replica, but changes need the primary"
        )

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
