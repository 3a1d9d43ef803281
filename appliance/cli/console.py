"""The text log on standard error, as Twisted's `textFileLogObserver` writes it, cheaper.

`serve` logs every update check at info (`update.check`), and Twisted formats each event
through `string.Formatter` in Python and the time through `datetime` and `strftime`: more
CPU than the rest of the check's record keeping. `text_observer` writes the same bytes
from a format parsed once per format string and a time formatted once per second. An
event it cannot write so (a traceback, a field such as `{a.b}`, `{x!r}` or `{x:>5}`, a
field that is missing or fails to format) goes through Twisted's own formatter, which
writes what it always did. Either way a None field reads `-` and a tuple's items are
joined (`appliance.ops` `shown`), not Python's repr.
"""

from __future__ import annotations

import string
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    LogEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)

from appliance.ops import readable, shown

_Parts = tuple[tuple[str, str | None], ...]  # (literal text, field name or None)
_MAX_FORMATS = 1024  # parsed format strings kept (the appliance logs a few dozen)
_formatter = string.Formatter()


def _parse(log_format: str) -> _Parts | None:
    """The literal text and plain field names of a format; None for anything else."""
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in _formatter.parse(log_format):
        if name is not None and (not name.isidentifier() or spec or conversion):
            return None
        parts.append((literal, name))
    return tuple(parts)


class _Formats:
    def __init__(self) -> None:
        self.parsed: dict[str, _Parts | None] = {}
        self.second: int | None = None
        self.stamp = ""

    def time(self, when: float) -> str:
        """Twisted's RFC 3339 time (whole seconds, the local offset), once a second."""
        second = int(when)
        if second != self.second or when < 0:
            self.second, self.stamp = second, formatTime(when, timeFormatRFC3339)
        return self.stamp

    def text(self, event: LogEvent) -> str | None:
        """The event as `formatEventAsClassicLogText` formats it."""
        log_format = event.get("log_format")
        if (
            type(log_format) is not str
            or "log_flattened" in event
            or "log_failure" in event
            or "log_time" not in event
        ):
            return formatEventAsClassicLogText(readable(event), _twisted_time)
        if log_format in self.parsed:
            parts = self.parsed[log_format]
        else:
            if len(self.parsed) >= _MAX_FORMATS:
                self.parsed.clear()
            parts = self.parsed[log_format] = _parse(log_format)
        if parts is None:
            return formatEventAsClassicLogText(readable(event), _twisted_time)
        try:
            message = "".join(
                literal + ("" if name is None else shown(event[name])) for literal, name in parts
            )
            when = event["log_time"]
            stamp = "-" if when is None else self.time(when)
        except Exception:
            return formatEventAsClassicLogText(readable(event), _twisted_time)  # says it failed
        if not message:
            return None
        text = f"{stamp} [{_system(event)}] {message}"
        return text.replace("\n", "\n\t") + "\n"


def _twisted_time(when: float | None) -> str:
    return formatTime(when, timeFormatRFC3339)


def _system(event: LogEvent) -> str:
    """`log_system`, or `namespace#level` (Twisted's `[...]` part of a line)."""
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        return f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
    try:
        return str(system)
    except Exception:
        return "UNFORMATTABLE"


def text_observer(out: IO[Any]) -> FileLogObserver:
    """What `textFileLogObserver(out)` is, writing the same text."""
    return FileLogObserver(out, _Formats().text)
