"""Events as RFC 5424 syslog messages with structured data, besides standard error.

Each chosen event (one with an `event` field, or any at level warn and above: Twisted's
own chatter stays out) becomes one message:

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [ucupdates@32473 key="value" ...] MSG

PRI is `facility * 8 + severity` (debug 7, info 6, warn 4, error 3, critical 2); MSGID is
the event's `event` field (`update.check`, `image.download`, ...) or `-`; the structured
data carries the event's named fields whose values are scalars (str, int, float, bool),
escaped as RFC 5424 §6.3.3 says; MSG is the text `twisted.logger.formatEvent` makes.
The formatting is in `syslog_format`, the transports in `syslog_transport` and
`syslog_tcp`; here is the observer that joins them, and `make_syslog_observer`, which
builds it (and its transport, `make_sender`) from the config.
Nothing here raises into the logging system: a message that cannot be made or sent is
dropped and counted (`Rfc5424Observer.dropped`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.logger import LogEvent

from appliance.config import Config, SyslogSettings
from appliance.ops.syslog_format import Header, format_message, wanted
from appliance.ops.syslog_tcp import TcpSender
from appliance.ops.syslog_transport import (
    BlockingSender,
    LocalSender,
    Scheme,
    Sender,
    UdpSender,
    parse_target,
)


class Rfc5424Observer:
    """A twisted.logger observer (ILogObserver: a callable taking one event) that sends
    the chosen events (see `wanted`) to syslog."""

    def __init__(
        self,
        settings: SyslogSettings,
        hostname: str,
        procid: str,
        sender: Sender,
        clock: Callable[[], float] = time.time,
        select: Callable[[LogEvent], bool] = wanted,
        bom: bool = False,
    ) -> None:
        self.header = Header.of(
            settings.facility, hostname, settings.app_name, procid, settings.enterprise_number
        )
        self.sender = sender
        self.clock = clock
        self.select = select
        self.bom = bom
        self.errors = 0  # events that could not be formatted or handed over
        self._local = threading.local()

    @property
    def dropped(self) -> int:
        """Messages lost: not formatted, or not sent (no receiver, queue full, errors)."""
        return self.errors + self.sender.dropped

    def __call__(self, event: LogEvent) -> None:
        if getattr(self._local, "busy", False):
            return  # an event logged while sending one (Twisted's socket notices): skip it
        self._local.busy = True
        try:
            if self.select(event):
                message = format_message(
                    event, self.header, self.clock(), self.sender.max_bytes, self.bom
                )
                self.sender.send(message)
        except Exception:
            self.errors += 1
        finally:
            self._local.busy = False

    def close(self) -> None:
        """Stop the transport (a TCP connection is closed after what it holds is written)."""
        try:
            self.sender.close()
        except Exception:
            self.errors += 1


def make_sender(target: str, reactor: Any | None) -> Sender:
    """The transport for `syslog.target`; with no reactor, blocking sockets (see
    `BlockingSender`)."""
    if target == "local":
        return LocalSender()
    scheme, host, port = parse_target(target)
    if reactor is None:
        return BlockingSender(scheme, host, port)
    if scheme is Scheme.UDP:
        return UdpSender(reactor, host, port)
    sender = TcpSender(reactor, host, port)
    sender.start()
    return sender


def make_syslog_observer(config: Config, reactor: Any | None) -> Rfc5424Observer | None:
    """The syslog observer of `config` (None when syslog.enabled is false).

    `serve` passes its reactor; an admin command, which runs none, passes None and gets
    blocking sockets with short timeouts. Raises SyslogError for an unusable setting.
    """
    settings = config.syslog
    if not settings.enabled:
        return None
    return Rfc5424Observer(
        settings,
        hostname=settings.hostname or socket.gethostname(),
        procid=str(os.getpid()),
        sender=make_sender(settings.target, reactor),
    )
