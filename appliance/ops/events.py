"""Admin actions as log events, so that they reach syslog as well as the store's event log.

The store's event log (`ucupdates events`) stays the record. The admin commands run as
short processes of their own, without `serve`'s log observers, so the command line
forwards what a command wrote to the event log once it is done: `forward_new_events`
after the command, with the newest event id read before it. See docs/events.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from twisted.logger import Logger

from appliance.config import Config
from appliance.model import Event
from appliance.ops.syslog import make_syslog_observer
from appliance.ops.syslog_format import SyslogError
from appliance.store import Store

admin_log = Logger(namespace="ucupdates.admin")


def emit_admin_event(
    log: Logger,
    action: str,
    actor: str,
    target: str,
    before: Any = None,
    after: Any = None,
    at: str | None = None,
) -> None:
    """Log one admin action: MSGID `action`; `before`/`after` as compact JSON fields."""
    log.info(
        "admin {action} {target} by {actor}",
        action=action,
        actor=actor,
        target=target,
        before=_compact(before),
        after=_compact(after),
        at=at,
        event=action,
    )


def emit_store_events(log: Logger, events: Iterable[Event]) -> int:
    """`emit_admin_event` for each event-log entry, oldest first; returns how many."""
    count = 0
    for e in sorted(events, key=lambda e: e.id):
        emit_admin_event(log, e.action, e.actor, e.target, e.before, e.after, at=e.at)
        count += 1
    return count


def newest_event_id(store: Store) -> int:
    newest = store.events(1)
    return newest[0].id if newest else 0


def events_after(store: Store, since_id: int) -> list[Event]:
    """The event-log entries with an id above `since_id`, oldest first."""
    limit = 64
    while True:
        found = store.events(limit)
        if len(found) < limit or found[-1].id <= since_id:
            break
        limit *= 4
    return sorted((e for e in found if e.id > since_id), key=lambda e: e.id)


def forward_new_events(config: Config, store: Store, since_id: int) -> int:
    """Send the entries a command added (ids above `since_id`) to syslog, if enabled.

    For the admin commands (no reactor: blocking sockets with short timeouts). Never
    raises for a syslog problem: what cannot be sent is dropped. Returns how many went out.
    """
    try:
        observer = make_syslog_observer(config, None)
    except SyslogError:
        return 0
    if observer is None:
        return 0
    try:
        events = events_after(store, since_id)
        send: Any = observer  # an ILogObserver: a callable taking one event
        emit_store_events(Logger(namespace="ucupdates.admin", observer=send), events)
        return len(events) - observer.dropped
    finally:
        observer.close()


def _compact(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
