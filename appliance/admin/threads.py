"""Where the Control Panel's store work runs: on the reactor thread for SQLite, in a small
thread pool of its own for PostgreSQL.

SQLite answers from the local disk in microseconds, so the Control Panel has always called
it on the reactor thread, and still does. A network database cannot be called there: on
PostgreSQL each admin request (its session lookup, its handler, the event-log entries it
added) runs in a worker thread, and the reactor writes the answer (twisted.web's Request
is written to on the reactor thread only). The pool is bounded by the store's pool size,
so the Control Panel never holds more connections than the store has.

Blocking work a handler starts itself (a password check, an import) goes to the reactor's
thread pool from the reactor thread; when the handler already runs in a worker thread, it
runs there at once (`blocking`), so a handler is written once for both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from appliance.store import Store

T = TypeVar("T")

DEFAULT_THREADS = 4  # [store] pool_size's default

_local = threading.local()


def in_worker() -> bool:
    """Whether this thread is running admin work for a request (a worker's)."""
    return bool(getattr(_local, "active", False))


def blocking(reactor: Any, work: Callable[..., T], *args: Any) -> defer.Deferred[T]:
    """Run blocking `work`: in the reactor's thread pool when called on the reactor thread;
    at once (the Deferred has fired when this returns) in a worker thread."""
    if in_worker():
        return defer.maybeDeferred(work, *args)
    return deferToThreadPool(reactor, reactor.getThreadPool(), work, *args)


def resolved(outcome: Any) -> Any:
    """The result of `outcome`, a value or a Deferred that has fired (a handler run in a
    worker thread, whose blocking work ran at once); a failure is raised."""
    if not isinstance(outcome, defer.Deferred):
        return outcome
    box: list[Any] = []
    outcome.addBoth(box.append)
    if not box:
        raise RuntimeError("an admin handler's Deferred did not fire in its worker thread")
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


class Worker:
    """Runs a request's store work: in a bounded pool on PostgreSQL (`threaded`), inline on
    SQLite. The pool starts on first use and stops when the reactor shuts down."""

    def __init__(self, reactor: Any, store: Store, threads: int = DEFAULT_THREADS) -> None:
        self.reactor = reactor
        self.threaded = store.backend == "postgresql"
        self.threads = max(1, threads)
        self._pool: ThreadPool | None = None
        self._lock = threading.Lock()

    def run(self, work: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        """`work(*args)` in a worker thread (marked, for `blocking`), its result delivered
        on the reactor thread; inline on SQLite."""
        if not self.threaded:
            return defer.maybeDeferred(work, *args)

        def marked() -> T:
            _local.active = True
            try:
                return work(*args)
            finally:
                _local.active = False

        return deferToThreadPool(self.reactor, self._started(), marked)

    def _started(self) -> ThreadPool:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPool(minthreads=0, maxthreads=self.threads, name="admin")
                self._pool.start()
                self.reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
            return self._pool
