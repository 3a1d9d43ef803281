"""Events as RFC 5424 syslog messages with structured data, besides standard error.

Each chosen event (one with an `event` field, or any at level warn and above: Twisted's
own chatter stays out) becomes one message:

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [ucupdates@32473 key="value" ...] MSG

PRI is `facility * 8 + severity` (debug 7, info 6, warn 4, error 3, critical 2); MSGID is
the event's `event` field (`update.check`, `image.download`, ...) or `-`; the structured
data carries the event's named fields whose values are scalars (str, int, float, bool),
escaped as RFC 5424 §6.3.3 says; MSG is the text `twisted.logger.formatEvent` makes.
The formatting is in `syslog_format`; the observer and the transports are here.

Three transports, chosen by `syslog.target`: `local` (the datagram socket /dev/log),
`udp://host:port` (one datagram per message, at most 2048 bytes) and `tcp://host:port`
(octet counting, RFC 6587, with reconnection and a bounded queue). None of them blocks
the reactor, and nothing here raises into the logging system: a message that cannot be
made or sent is dropped and counted (`Rfc5424Observer.dropped`).
"""

from __future__ import annotations

import collections
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import protocol
from twisted.logger import LogEvent
from twisted.python import threadable

from appliance.config import Config, SyslogSettings
from appliance.ops.syslog_format import SD_ID as SD_ID
from appliance.ops.syslog_format import Header, format_message, wanted
from appliance.ops.syslog_format import SyslogError as SyslogError

UDP_MAX_BYTES = 2048  # fits every path MTU after fragmentation; RFC 5426 asks for >= 480
STREAM_MAX_BYTES = 8192  # rsyslog's default maxMessageSize (/dev/log and TCP)
QUEUE_MESSAGES = 1000  # kept while a TCP receiver is away; the oldest go first
DEV_LOG = "/dev/log"


# -- the observer ------------------------------------------------------------------------------


class Sender(Protocol):
    """Where finished messages go. `send` never raises; what it cannot send, it counts."""

    max_bytes: int
    dropped: int

    def send(self, message: bytes) -> None: ...

    def close(self) -> None: ...


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
        self.header = Header.of(settings.facility, hostname, settings.app_name, procid)
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


# -- transports ------------------------------------------------------------------------------


def _in_reactor_thread() -> bool:
    if threadable.ioThread is None:  # the reactor has not run yet: the main thread is its
        return threading.current_thread() is threading.main_thread()
    return bool(threadable.isInIOThread())


class MemorySender:
    """Keeps the messages: for tests, here beside the real transports."""

    def __init__(self, max_bytes: int = STREAM_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.dropped = 0
        self.messages: list[bytes] = []

    def send(self, message: bytes) -> None:
        self.messages.append(message)

    def close(self) -> None:
        pass


class LocalSender:
    """The local syslog daemon's datagram socket (/dev/log), non-blocking.

    Without the socket (no daemon), messages are dropped and counted; the socket is looked
    for again at most every `retry_seconds`, so a daemon started or restarted later is
    found. A full socket buffer drops the message rather than wait.
    """

    def __init__(
        self,
        path: str = DEV_LOG,
        retry_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.max_bytes = STREAM_MAX_BYTES
        self.dropped = 0
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._sock: socket.socket | None = None
        self._tried = float("-inf")
        self._lock = threading.Lock()

    def send(self, message: bytes) -> None:
        with self._lock:
            for attempt in range(2):
                sock = self._sock or self._connect(force=attempt > 0)
                if sock is None:
                    break
                try:
                    sock.send(message)
                    return
                except BlockingIOError:
                    break
                except OSError:  # the daemon went away or restarted: reconnect once
                    self._drop_socket()
            self.dropped += 1

    def _connect(self, force: bool) -> socket.socket | None:
        now = self._clock()
        if not force and now - self._tried < self.retry_seconds:
            return None
        self._tried = now
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(self.path)
        except OSError:
            sock.close()
            return None
        self._sock = sock
        return sock

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        with self._lock:
            self._drop_socket()


def parse_target(target: str) -> tuple[str, str, int]:
    """`udp://host:port` or `tcp://host:port` (`[v6]` allowed) as (scheme, host, port)."""
    scheme, sep, rest = target.partition("://")
    host, colon, port = rest.rpartition(":")
    if scheme not in ("udp", "tcp") or not sep or not colon or not port.isdigit():
        raise SyslogError(f"syslog.target {target!r}: expected udp://host:port or tcp://host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not 0 < int(port) <= 65535:
        raise SyslogError(f"syslog.target {target!r}: no host, or a port out of 1-65535")
    return scheme, host, int(port)


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class UdpSender:
    """One datagram per message through a Twisted UDP port, from the reactor thread.

    A host name is resolved through the reactor (not blocking it); messages that arrive
    meanwhile wait in a bounded queue. Calls from other threads are passed to the reactor.
    """

    def __init__(self, reactor: Any, host: str, port: int) -> None:
        self.max_bytes = UDP_MAX_BYTES
        self.dropped = 0
        self._reactor = reactor
        self._host = host
        self._port = port
        literal = _ip_literal(host)
        self._address: str | None = None if literal is None else str(literal)
        self._resolving = False
        self._udp: Any = None
        self._waiting: collections.deque[bytes] = collections.deque()

    def send(self, message: bytes) -> None:
        if not _in_reactor_thread():
            self._reactor.callFromThread(self.send, message)
            return
        if self._address is None:
            self._wait(message)
            self._resolve()
            return
        self._write(message, self._address)

    def _write(self, message: bytes, address: str) -> None:
        try:
            if self._udp is None:
                interface = "::" if ":" in address else ""
                self._udp = self._reactor.listenUDP(0, protocol.DatagramProtocol(), interface)
            self._udp.write(message, (address, self._port))
        except Exception:
            self.dropped += 1

    def _wait(self, message: bytes) -> None:
        if len(self._waiting) >= QUEUE_MESSAGES:
            self._waiting.popleft()
            self.dropped += 1
        self._waiting.append(message)

    def _resolve(self) -> None:
        if self._resolving:
            return
        self._resolving = True

        def resolved(address: str) -> None:
            self._resolving = False
            self._address = address
            while self._waiting:
                self._write(self._waiting.popleft(), address)

        def failed(_: Any) -> None:  # tried again with the next message
            self._resolving = False
            self.dropped += len(self._waiting)
            self._waiting.clear()

        self._reactor.resolve(self._host).addCallbacks(resolved, failed)

    def close(self) -> None:
        self.dropped += len(self._waiting)
        self._waiting.clear()
        if self._udp is not None:
            udp, self._udp = self._udp, None
            udp.stopListening()


class _FramedProtocol(protocol.Protocol):
    """One TCP connection to the receiver; a push producer of its transport's buffer."""

    def __init__(self, sender: TcpSender) -> None:
        self.sender = sender
        self.paused = False

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.registerProducer(self, True)
        self.sender.connected(self)

    def write(self, frame: bytes) -> None:
        transport: Any = self.transport
        transport.write(frame)

    def close(self) -> None:
        transport: Any = self.transport
        transport.loseConnection()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.sender.flush()

    def stopProducing(self) -> None:
        self.paused = True

    def dataReceived(self, data: bytes) -> None:
        pass  # syslog receivers send nothing back

    def connectionLost(self, reason: Any = None) -> None:
        self.sender.disconnected(self)


class _Factory(protocol.ClientFactory):
    noisy = False

    def __init__(self, sender: TcpSender) -> None:
        self.sender = sender

    def buildProtocol(self, addr: Any) -> _FramedProtocol:
        return _FramedProtocol(self.sender)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.sender.retry_later()

    def clientConnectionLost(self, connector: Any, reason: Any) -> None:
        self.sender.retry_later()


class TcpSender:
    """Octet-counting frames (`LEN SP MSG`, RFC 6587 §3.4.1) over one TCP connection.

    Reconnects with exponential backoff (1 s, doubling up to `max_delay`). While there is
    no connection, or the kernel and Twisted buffers are full (the transport pauses this
    producer), messages wait in a queue of `queue_messages`; when it is full the oldest
    is dropped and counted.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        queue_messages: int = QUEUE_MESSAGES,
        max_delay: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.max_bytes = STREAM_MAX_BYTES
        self.dropped = 0
        self.sent = 0
        self.max_delay = max_delay
        self.delay = 1.0
        self._reactor = reactor
        self._host = host
        self._port = port
        self._timeout = connect_timeout
        self._factory = _Factory(self)
        self._queue: collections.deque[bytes] = collections.deque()
        self._queue_messages = queue_messages
        self._connection: _FramedProtocol | None = None
        self._connecting = False
        self._retry: Any = None
        self._closed = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    def start(self) -> None:
        """Connect now, unless connected, connecting, waiting to retry, or closed."""
        if self._closed or self._connecting or self._connection or self._retry:
            return
        self._connecting = True
        self._reactor.connectTCP(self._host, self._port, self._factory, timeout=self._timeout)

    def retry_later(self) -> None:
        self._connecting = False
        self._connection = None
        if self._closed or self._retry is not None:
            return
        self._retry = self._reactor.callLater(self.delay, self._retry_now)
        self.delay = min(self.delay * 2, self.max_delay)

    def _retry_now(self) -> None:
        self._retry = None
        self.start()

    def send(self, message: bytes) -> None:
        if not _in_reactor_thread():
            self._reactor.callFromThread(self.send, message)
            return
        if self._closed:
            self.dropped += 1
            return
        if len(self._queue) >= self._queue_messages:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(b"%d %s" % (len(message), message))
        self.start()
        self.flush()

    def flush(self) -> None:
        connection = self._connection
        while connection is not None and not connection.paused and self._queue:
            connection.write(self._queue.popleft())
            self.sent += 1

    def connected(self, connection: _FramedProtocol) -> None:
        self._connecting = False
        if self._closed:  # closed while connecting
            connection.close()
            return
        self.delay = 1.0
        self._connection = connection
        self.flush()

    def disconnected(self, connection: _FramedProtocol) -> None:
        if self._connection is connection:
            self._connection = None

    def close(self) -> None:
        """Stop reconnecting and close; what is queued and unsent counts as dropped."""
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._connection is not None:
            self._connection.close()
        self.dropped += len(self._queue)
        self._queue.clear()


class BlockingSender:
    """UDP or TCP with plain sockets and short timeouts, for short command-line processes
    that run no reactor (the admin commands); never use it in `serve`. After one failure
    it drops the rest at once, so an unreachable receiver delays a command only once."""

    def __init__(self, scheme: str, host: str, port: int, timeout: float = 2.0) -> None:
        self.max_bytes = UDP_MAX_BYTES if scheme == "udp" else STREAM_MAX_BYTES
        self.dropped = 0
        self._scheme = scheme
        self._host = host
        self._port = port
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._failed = False

    def send(self, message: bytes) -> None:
        if self._failed:
            self.dropped += 1
            return
        try:
            if self._sock is None:
                self._sock = self._open()
            if self._scheme == "udp":
                self._sock.send(message)
            else:
                self._sock.sendall(b"%d %s" % (len(message), message))
        except OSError:
            self.dropped += 1
            self._failed = True
            self.close()

    def _open(self) -> socket.socket:
        if self._scheme == "tcp":
            return socket.create_connection((self._host, self._port), self._timeout)
        family, kind, proto, _, address = socket.getaddrinfo(
            self._host, self._port, type=socket.SOCK_DGRAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.settimeout(self._timeout)
        sock.connect(address)
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def make_sender(target: str, reactor: Any | None) -> Sender:
    """The transport for `syslog.target`; with no reactor, blocking sockets (see
    `BlockingSender`)."""
    if target == "local":
        return LocalSender()
    scheme, host, port = parse_target(target)
    if reactor is None:
        return BlockingSender(scheme, host, port)
    if scheme == "udp":
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
