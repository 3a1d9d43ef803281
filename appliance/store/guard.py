"""The reactor guard: a PostgreSQL store call made on the reactor thread is a bug.

A network database may take milliseconds or, when the server is away, seconds to answer;
made on the reactor thread, such a call stops every phone's answer meanwhile. `serve`
declares its reactor thread (`guard_thread`) and every statement the PostgreSQL adapter
runs asks `check_thread` first: in "raise" mode (the tests: `UCUPDATES_REACTOR_GUARD=raise`)
it raises ReactorBlockingError, otherwise it logs the first such call with its stack, once.
SQLite is called on the reactor on purpose (the local disk answers in microseconds) and is
never checked.
"""

from __future__ import annotations

import threading
import traceback
from enum import StrEnum

from twisted.logger import Logger

log = Logger(namespace="ucupdates.store")


class GuardMode(StrEnum):
    RAISE = "raise"  # tests: the call fails
    LOG = "log"  # the default: the first call is logged with its stack
    OFF = "off"


class ReactorBlockingError(RuntimeError):
    """A PostgreSQL store call was made on the guarded (reactor) thread: a bug, never a
    StoreError (which callers may show as a user's error and go on)."""


class _Guard:
    thread: int | None = None
    mode = GuardMode.LOG
    logged = False


_guard = _Guard()


def guard_thread(mode: GuardMode | str = GuardMode.LOG) -> None:
    """Declare the calling thread as one that must never wait on PostgreSQL (the reactor's),
    and what a call made on it does. `mode` "off" lifts the guard."""
    _guard.mode = GuardMode(mode)
    _guard.thread = None if _guard.mode is GuardMode.OFF else threading.get_ident()
    _guard.logged = False


def check_thread() -> None:
    """Before each PostgreSQL statement: refused (or logged once) on the guarded thread."""
    if _guard.thread is None or threading.get_ident() != _guard.thread:
        return
    if _guard.mode is GuardMode.RAISE:
        raise ReactorBlockingError("a PostgreSQL store call on the reactor thread")
    if not _guard.logged:
        _guard.logged = True
        log.error(
            "a PostgreSQL store call on the reactor thread (logged once):\n{stack}",
            stack="".join(traceback.format_stack(limit=12)),
            event="store.reactor_call",
        )
