"""Where finished syslog messages go: the transports behind `syslog.target`.

`local` is the datagram socket /dev/log (`LocalSender`); `udp://host:port` sends one
datagram per message, at most 2048 bytes (`UdpSender`); `tcp://host:port` uses octet
counting, RFC 6587, with reconnection and a bounded queue (`TcpSender`, in `syslog_tcp`).
None blocks the reactor, which is passed in, and none raises: what cannot be sent is
dropped and counted (`dropped`). Without a reactor (the short admin commands),
`BlockingSender` uses plain sockets with short timeouts. `MemorySender` keeps the
messages, for tests.
"""

from __future__ import annotations

import collections
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol

from twisted.internet import protocol
from twisted.python import threadable

from appliance.ops.syslog_format import SyslogError

UDP_MAX_BYTES = 2048  # fits every path MTU after fragmentation; RFC 5426 asks for >= 480
STREAM_MAX_BYTES = 8192  # rsyslog's default maxMessageSize (/dev/log and TCP)
QUEUE_MESSAGES = 1000  # kept while a TCP receiver is away; the oldest go first
DEV_LOG = "/dev/log"


class Scheme(StrEnum):
    """The network transports of `syslog.target` (`udp://` or `tcp://`)."""

    UDP = "udp"
    TCP = "tcp"


class Sender(Protocol):
    """Where finished messages go. `send` never raises; what it cannot send, it counts."""

    max_bytes: int
    dropped: int

    def send(self, message: bytes) -> None: ...

    def close(self) -> None: ...


def in_reactor_thread() -> bool:
    """Whether this is the reactor's thread (calls from others go through callFromThread)."""
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


def parse_target(target: str) -> tuple[Scheme, str, int]:
    """`udp://host:port` or `tcp://host:port` (`[v6]` allowed) as (scheme, host, port)."""
    scheme, sep, rest = target.partition("://")
    host, colon, port = rest.rpartition(":")
    if scheme not in list(Scheme) or not sep or not colon or not port.isdigit():
        raise SyslogError(f"syslog.target {target!r}: expected udp://host:port or tcp://host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not 0 < int(port) <= 65535:
        raise SyslogError(f"syslog.target {target!r}: no host, or a port out of 1-65535")
    return Scheme(scheme), host, int(port)


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
        if not in_reactor_thread():
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


class BlockingSender:
    """UDP or TCP with plain sockets and short timeouts, for short command-line processes
    that run no reactor (the admin commands); never use it in `serve`. After one failure
    it drops the rest at once, so an unreachable receiver delays a command only once."""

    def __init__(self, scheme: Scheme, host: str, port: int, timeout: float = 2.0) -> None:
        self.max_bytes = UDP_MAX_BYTES if scheme is Scheme.UDP else STREAM_MAX_BYTES
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
            if self._scheme is Scheme.UDP:
                self._sock.send(message)
            else:
                self._sock.sendall(b"%d %s" % (len(message), message))
        except OSError:
            self.dropped += 1
            self._failed = True
            self.close()

    def _open(self) -> socket.socket:
        if self._scheme is Scheme.TCP:
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
