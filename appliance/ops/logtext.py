"""How an event's fields read in log text (the console and syslog's MSG), pure.

Twisted formats a field with `format(value, "")`: None reads `None` and a tuple reads
`('a', 'b')`, Python's repr, which is no text for an admin. Here None reads `-` (as in
the audit file and RFC 5424's NILVALUE) and the items of a tuple, list or set are joined
with `, ` (a set's sorted); an empty one reads `-`. The fields themselves are unchanged:
the JSON log and syslog's structured data keep the values.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import LogEvent

_SEQUENCES = (tuple, list, set, frozenset)


def shown(value: Any) -> str:
    """A field's value as log text shows it."""
    if value is None:
        return "-"
    if isinstance(value, _SEQUENCES):
        items = [shown(v) for v in value]
        if isinstance(value, set | frozenset):
            items.sort()
        return ", ".join(items) if items else "-"
    return format(value, "")


def readable(event: LogEvent) -> LogEvent:
    """The event with its None and sequence fields replaced by their text, for a
    formatter (the same event when it has none)."""
    changed = {
        key: shown(value)
        for key, value in event.items()
        if (value is None or isinstance(value, _SEQUENCES))
        and isinstance(key, str)
        and not key.startswith("log_")
    }
    return {**event, **changed} if changed else event
