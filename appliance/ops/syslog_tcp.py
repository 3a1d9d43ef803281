"""Syslog over TCP: octet-counting frames (RFC 6587 §3.4.1) on one connection through the
reactor, which is passed in, with reconnection (exponential backoff) and a bounded queue.
"""

from __future__ import annotations

import collections
from typing import Any

from twisted.internet import protocol

from appliance.ops.syslog_transport import QUEUE_MESSAGES, STREAM_MAX_BYTES, in_reactor_thread


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
        if not in_reactor_thread():
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
