"""The catalogue watcher of a node on PostgreSQL: the phones' snapshot reloaded off the reactor.

On SQLite a check looks at the store's `data_version` itself (microseconds, `answers.py`).
On PostgreSQL no check may wait on the database, so a thread of its own watches instead:
it waits for a notification of a change (`store.ChangeFeed`: LISTEN on the primary), at
most `POLL_SECONDS`, then reads the catalogue's version (the fallback, and the only way on
a hot standby, which delivers no notifications). When the version or this process's own
catalogue generation moved, it loads the snapshot (`answers.load_snapshot`), in this
thread, and hands it to the reactor thread, which swaps it in (`Answers.install`); then
`after_reload` runs, in this thread (a node's blob cache fills from it).

The first snapshot is loaded when the service starts, before the reactor runs, so the very
first check is answered from the catalogue. A database that does not answer is logged
once (`store.unreachable`) and again when it answers (`store.reachable`); meanwhile the
phones are answered from the snapshot held.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from appliance.phones.answers import Answers, Snapshot, load_snapshot
from appliance.store import ChangeFeed, Store

log = Logger(namespace="ucupdates.store")

POLL_SECONDS = 1.0  # the catalogue's version is read at least this often


class CatalogueWatcher(service.Service):
    """Keeps `answers` on the newest catalogue, from a thread of its own."""

    def __init__(
        self,
        store: Store,
        answers: Answers,
        reactor: Any,
        after_reload: Callable[[], object] | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.store = store
        self.answers = answers
        self.reactor = reactor
        self.after_reload = after_reload
        self.poll_seconds = poll_seconds
        self.reloads = 0  # snapshots installed (for tests and the log)
        self.notified = 0  # notifications that announced a change (LISTEN)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: tuple[int, int] | None = None  # (data_version, generation) loaded
        self._failing = False

    def startService(self) -> None:
        super().startService()
        self._stop = stop = threading.Event()  # a thread of an earlier start keeps its own
        self._thread = None
        self._reload()  # at start (before the reactor runs): the first checks need it
        self._thread = threading.Thread(
            target=self._run, args=(stop,), name="catalogue-watcher", daemon=True
        )
        self._thread.start()

    def stopService(self) -> Any:
        super().stopService()
        self._stop.set()  # the thread ends within a poll; nothing waits for it
        return None

    def _run(self, stop: threading.Event) -> None:
        self._after_reload()  # for the snapshot loaded at start
        feed = ChangeFeed(self.store)
        try:
            while not stop.is_set():
                try:
                    heard = feed.wait(self.poll_seconds, stop)
                    self.notified = feed.heard
                    if not stop.is_set():
                        self._look(heard)
                except Exception:  # the watcher must go on: a node would stop learning
                    log.failure("the catalogue watcher failed; it goes on")
                    stop.wait(self.poll_seconds)
        finally:
            feed.close()

    def _look(self, heard: bool) -> None:
        """One look at the version; a reload when it moved (or a notification came)."""
        try:
            seen = (self.store.data_version(), self.store.catalogue_generation())
        except Exception as e:
            self._unreachable(e)
            return
        if heard or seen != self._seen:
            self._reload()

    def _reload(self) -> None:
        try:
            snapshot = load_snapshot(self.store)
        except Exception as e:
            self._unreachable(e)
            return
        if self._failing:
            self._failing = False
            log.info("the catalogue is read again", event="store.reachable")
        self._seen = (snapshot.data_version, snapshot.generation)
        if self._thread is None:  # at start, on the reactor's thread before it runs
            self._install(snapshot)
            return
        self.reactor.callFromThread(self._install, snapshot)
        self._after_reload()

    def _after_reload(self) -> None:
        if self.after_reload is not None:
            try:
                self.after_reload()
            except Exception:
                log.failure("after a catalogue reload")

    def _install(self, snapshot: Snapshot) -> None:
        self.answers.install(snapshot)
        self.reloads += 1
        log.debug("catalogue snapshot {version} installed", version=snapshot.data_version)

    def _unreachable(self, error: Exception) -> None:
        if not self._failing:
            self._failing = True
            text = str(error).strip()
            log.error(
                "cannot read the catalogue: {error}; phones are answered from the one held",
                error=text.splitlines()[0] if text else type(error).__name__,
                event="store.unreachable",
            )
