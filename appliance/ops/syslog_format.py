"""RFC 5424 syslog messages with structured data, made from twisted.logger events (pure).

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [ucupdates@32473 key="value" ...] MSG

PRI is `facility * 8 + severity` (debug 7, info 6, warn 4, error 3, critical 2); MSGID is
the event's `event` field (`update.check`, `image.download`, ...) or `-`; the structured
data carries the event's named fields whose values are scalars (str, int, float, bool),
escaped as RFC 5424 §6.3.3 says; MSG is the text `twisted.logger.formatEvent` makes.
The structured data's ID is `ucupdates@<syslog.enterprise_number>` (32473 by default).
The observer is in `syslog`, the transports in `syslog_transport` and `syslog_tcp`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

from twisted.logger import LogEvent, LogLevel, formatEvent

from appliance.ops.logtext import readable

ENTERPRISE_NUMBER = 32473  # the one RFC 5612 reserves for documentation
SD_ID = f"ucupdates@{ENTERPRISE_NUMBER}"
MAX_VALUE_CHARS = 512  # one structured-data value, before escaping

_SEVERITY = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}
# Keys of events that Twisted's legacy `twisted.python.log` makes; not named fields.
_LEGACY_KEYS = frozenset({"message", "isError", "system", "time", "format", "failure", "why"})
_BOM = b"\xef\xbb\xbf"


class SyslogError(Exception):
    """A syslog setting that cannot be used; str() is the one line to show."""


# -- formatting (pure) -----------------------------------------------------------------------


def printable_ascii(text: str, limit: int) -> str:
    """RFC 5424 header fields: PRINTUSASCII (33-126) only, at most `limit`, `-` if empty."""
    kept = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return kept or "-"


def sd_name(key: str) -> str:
    """An SD-NAME: printable ASCII without `=`, space, `]` and `"`, at most 32 characters."""
    return "".join(c for c in key if 33 <= ord(c) <= 126 and c not in '= ]"')[:32]


def sd_escape(value: str) -> str:
    """A PARAM-VALUE: `"`, `\\` and `]` escaped with a backslash (RFC 5424 §6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def rfc3339(seconds: float) -> str:
    """`2026-11-27T12:00:00.123456Z`: UTC, microseconds, as RFC 5424 §6.2.3 allows."""
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def severity(event: LogEvent) -> int:
    """The RFC 5424 severity of the event's level; informational without a known level."""
    level = event.get("log_level")
    for known, number in _SEVERITY.items():
        if level is known:
            return number
    return 6


def wanted(event: LogEvent) -> bool:
    """Whether an event goes to syslog: a named event, or one at level warn and above."""
    return bool(event.get("event")) or severity(event) <= 4


def structured_params(event: LogEvent) -> list[tuple[str, str]]:
    """The event's named scalar fields as (SD-NAME, value), sorted by name."""
    legacy = "log_legacy" in event
    params: dict[str, str] = {}
    for key, value in event.items():
        if not isinstance(key, str) or key.startswith("log_") or key == "event":
            continue
        if legacy and key in _LEGACY_KEYS:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float | str):
            text = str(value)
        else:
            continue  # None, lists, objects: the message text shows them
        name = sd_name(key)
        if name and name not in params:
            params[name] = text[:MAX_VALUE_CHARS]
    return sorted(params.items())


def message_text(event: LogEvent) -> str:
    """The formatted text (None as `-`, a tuple's items joined: `logtext`), with the
    error of a `log.failure` event on the same line."""
    text = formatEvent(readable(event))
    failure = event.get("log_failure")
    if failure is not None:
        with contextlib.suppress(Exception):  # a broken failure: the text still goes out
            text += f" ({failure.type.__name__}: {failure.getErrorMessage()})"
    return text


@dataclass(frozen=True)
class Header:
    """What every message of one process carries, sanitised once."""

    facility: int
    hostname: str
    app_name: str
    procid: str
    sd_id: str = SD_ID  # `ucupdates@<enterprise number>`

    @classmethod
    def of(
        cls,
        facility: int,
        hostname: str,
        app_name: str,
        procid: str,
        enterprise_number: int = ENTERPRISE_NUMBER,
    ) -> Header:
        if not 0 <= facility <= 23:
            raise SyslogError(f"syslog.facility must be 0-23 (16 is local0), got {facility}")
        if enterprise_number <= 0:
            raise SyslogError(f"syslog.enterprise_number must be > 0, got {enterprise_number}")
        return cls(
            facility,
            printable_ascii(hostname, 255),
            printable_ascii(app_name, 48),
            printable_ascii(procid, 128),
            f"ucupdates@{enterprise_number}",
        )


def format_message(
    event: LogEvent, header: Header, now: float, max_bytes: int, bom: bool = False
) -> bytes:
    """One RFC 5424 message of at most `max_bytes` bytes.

    Too long, the MSG is cut (at a character boundary); structured-data parameters are
    left off from the end only when they alone do not fit. The message stays well formed.
    """
    pri = header.facility * 8 + severity(event)
    stamp = event.get("log_time")
    when = stamp if isinstance(stamp, int | float) else now
    msgid = printable_ascii(str(event.get("event") or "-"), 32)
    head = (
        f"<{pri}>1 {rfc3339(when)} {header.hostname} {header.app_name} {header.procid} {msgid} "
    ).encode("ascii")
    params = structured_params(event)
    msg = message_text(event).encode("utf-8", "replace")
    if msg and bom:
        msg = _BOM + msg
    while params and len(head) + len(_sd(params, header.sd_id)) > max_bytes:
        params = params[:-1]
    sd = _sd(params, header.sd_id)
    room = max_bytes - len(head) - len(sd) - 1  # for the MSG, after its space
    if len(msg) > room:
        msg = msg[: max(room, 0)].decode("utf-8", "ignore").encode("utf-8")
    return head + sd + (b" " + msg if msg else b"")


def _sd(params: list[tuple[str, str]], sd_id: str) -> bytes:
    if not params:
        return b"-"
    inner = " ".join(f'{name}="{sd_escape(value)}"' for name, value in params)
    return f"[{sd_id} {inner}]".encode("utf-8", "replace")
