"""Operations from the command line: the event log, health checks, events to syslog.

    events [--limit N] [--json]   the admin event log, newest first
    check [--json]                health checks as a monitoring plugin (Nagios, Icinga):
                                  exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN

`events_to_syslog` wraps every command that opens the store: what it logged goes to the
configured syslog server too (`serve` forwards its own events as they happen).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from appliance.config import Config
from appliance.store import Store


def add_events_parser(sub: Any) -> None:
    p = sub.add_parser("events", help="the admin event log, newest first")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")


def add_check_parser(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="health checks as a monitoring plugin: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def run_events(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    events = store.events(args.limit)
    if args.json:
        print(json.dumps([asdict(e) for e in events], indent=2))
        return 0
    for e in events:
        change = ""
        if e.before is not None or e.after is not None:
            change = f" {json.dumps(e.before)} -> {json.dumps(e.after)}"
        print(f"{e.at} {e.actor} {e.action} {e.target}{change}")
    return 0


def run_check(args: argparse.Namespace, config: Config) -> int:
    """The checks open the store themselves: a missing database is a failed check."""
    from appliance.ops import run_check as run_health_checks

    return run_health_checks(config, args.json)


def check_cannot_run(args: argparse.Namespace, reason: str) -> int:
    """`check` with a config it cannot read: UNKNOWN (exit 3), as a monitoring plugin."""
    from appliance.ops import report_unknown

    return report_unknown(reason, bool(getattr(args, "json", False)))


@contextmanager
def events_to_syslog(config: Config, store: Store, command: str) -> Iterator[None]:
    """Forward the events the command adds to syslog when it ends, if syslog is enabled."""
    if not config.syslog.enabled or command == "serve":
        yield
        return
    from appliance.ops import forward_new_events, newest_event_id

    since = newest_event_id(store)
    try:
        yield
    finally:
        forward_new_events(config, store, since)
