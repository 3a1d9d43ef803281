"""The phone side's store work off the reactor thread, on PostgreSQL.

The inventory's flush, the rollout timer and the daily drift summary query the store. On
SQLite they run on the reactor thread (the local disk answers in microseconds); on
PostgreSQL each runs in a small thread pool of its own (`StoreThreads`), and what they
touch in memory (the inventory buffer) stays on the reactor thread: the work is handed
a batch taken there, and its result comes back there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

STORE_THREADS = 2  # the flush and the timers: seldom more than one at a time


class StoreThreads:
    """Runs store work in a thread pool of its own (started on first use, stopped when
    `reactor` shuts down, after the shutdown's last flush)."""

    def __init__(self, reactor: Any, threads: int = STORE_THREADS) -> None:
        self._reactor = reactor
        self._threads = threads
        self._pool: ThreadPool | None = None

    def __call__(self, work: Callable[[], T]) -> Deferred[T]:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self._threads, name="store")
            self._pool.start()
            self._reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return deferToThreadPool(self._reactor, self._pool, work)
