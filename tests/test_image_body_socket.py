"""An image body on a real TCP connection, plain and TLS: stalls, resets, descriptors.

A private epoll reactor (not the global one) listens on a loopback port with a small
protocol that, on the first bytes of a request, writes a head through its transport and
starts a `TransportBody`, as the phone listener's protocol does; for TLS behind
Twisted's TLSMemoryBIOFactory with the phone listeners' context (TLS 1.0 to 1.3). The
client is a non-blocking socket driven from the same thread: the test turns the reactor
and reads, in bounded rounds. os.sendfile (plain) and os.preadv (TLS, the file read
beside Twisted's write path) are counted to show the bytes took the socket path; the
process's descriptors are counted to show the duplicate is let go however it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from appliance.config import TlsProfile, load_config
from appliance.model import Zone
from appliance.phones.image_body import Download, Part, TransportBody
from appliance.phones.ranges import ByteRange
from appliance.phones.slots import DownloadSlots, Slot
from appliance.tls import context_factory, ensure_test_certificates
from appliance.web import SocketWriter, TlsWriter

pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")

SIZE = 8 * 1024 * 1024 + 3  # well past the kernel's socket buffers
STALL = 0.5
ROUNDS = 200_000  # reactor turns a test may take, at most
WAIT_SECONDS = 30.0  # for what depends on the clock (the stall), at most
CLOSED = Failure(ConnectionError("closed"))
HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"


@dataclasses.dataclass
class Server:
    reactor: EPollReactor
    tls: str  # "plain", or the client's TLS version: "tls1.0", "tls1.3"
    port: int
    image: Path
    data: bytes
    slots: DownloadSlots
    parts: list[Part]
    trailer: bytes = b""
    head: bytes = b""
    done: list[bool] = dataclasses.field(default_factory=list)
    lost: list[Failure] = dataclasses.field(default_factory=list)
    bodies: list[TransportBody] = dataclasses.field(default_factory=list)
    opened: list[Any] = dataclasses.field(default_factory=list)

    def turn(self) -> None:
        self.reactor.iterate(0.001)

    def until(self, what: str, check: Callable[[], bool], also: Callable[[], None]) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        for _ in range(ROUNDS):
            if check():
                return
            self.turn()
            also()
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"never: {what}")


class OneBody(Protocol):
    server: Server

    def dataReceived(self, data: bytes) -> None:
        server = self.server
        if server.bodies:
            return
        service = load_config(None, server.image.parent / "data").service
        settings = dataclasses.replace(service, download_stall_seconds=STALL)
        slot = server.slots.take("127.0.0.1")
        assert isinstance(slot, Slot)
        stored: Any = SimpleNamespace(path=PurePosixPath("a/b.nbt"))
        image = server.image.open("rb")
        server.opened.append(image)
        body = TransportBody(
            server.reactor,
            self.transport,
            image,
            server.parts,
            server.trailer,
            slot,
            settings,
            Download(stored, "127.0.0.1", Zone.INTERNAL),
            200,
            server.done.append,
        )
        server.bodies.append(body)
        self.transport.write(server.head)
        body.start()

    def connectionLost(self, reason: Failure = CLOSED) -> None:
        self.server.lost.append(reason)
        if self.server.bodies:
            self.server.bodies[0].connection_lost()


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def sendfiles(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes of the file read by os.sendfile or os.preadv (TLS), call by call."""
    counted: list[int] = []
    real_sendfile, real_preadv = os.sendfile, os.preadv

    def sendfile(out: int, source: int, offset: int | None, count: int) -> int:
        sent = real_sendfile(out, source, offset, count)
        counted.append(sent)
        return sent

    def preadv(source: int, buffers: list[Any], offset: int) -> int:
        got = real_preadv(source, buffers, offset)
        counted.append(got)
        return got

    monkeypatch.setattr(os, "sendfile", sendfile)
    monkeypatch.setattr(os, "preadv", preadv)
    return counted


@pytest.fixture(params=["plain", "tls1.3", "tls1.0"])
def tls(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    return version


@pytest.fixture
def make_server(tmp_path: Path, tls: str) -> Iterator[Callable[..., Server]]:
    reactors: list[EPollReactor] = []

    def make(parts: list[Part] | None = None, trailer: bytes = b"", head: bytes = b"") -> Server:
        data = os.urandom(SIZE)
        image = tmp_path / "image"
        image.write_bytes(data)
        reactor = EPollReactor()
        reactors.append(reactor)
        factory: Any = Factory.forProtocol(OneBody)
        if tls != "plain":
            creds = ensure_test_certificates(tmp_path / "tls", ["localhost"])
            contexts = context_factory(creds, TlsProfile.LPE_LEGACY)
            factory = TLSMemoryBIOFactory(contexts, False, factory, reactor)
        parts = [Part(b"", ByteRange(0, SIZE))] if parts is None else parts
        server = Server(reactor, tls, 0, image, data, DownloadSlots(4, 4), parts, trailer)
        server.head = head or HEAD % SIZE
        OneBody.server = server
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        server.port = listening.getHost().port
        return server

    yield make
    for reactor in reactors:
        for port in list(reactor.getReaders()) + list(reactor.getWriters()):
            if port is not reactor.waker:
                with contextlib.suppress(Exception):  # a connection already half gone
                    port.connectionLost(Failure(ConnectionError("test over")))
        reactor.removeAll()
        reactor.waker.connectionLost(None)


def client(server: Server, rcvbuf: int | None = None) -> socket.socket:
    """Connected (TLS: handshake done) and the request sent; non-blocking."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    if server.tls != "plain":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if server.tls == "tls1.0":  # a phone's: TLS 1.0, AES128-SHA
            context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1
            context.set_ciphers("AES128-SHA:@SECLEVEL=0")
        sock = context.wrap_socket(sock, do_handshake_on_connect=False)
        box: list[bool] = []

        def handshake() -> None:
            try:
                sock.do_handshake()  # type: ignore[attr-defined]
                box.append(True)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass

        server.until("the TLS handshake", lambda: bool(box), handshake)
    request = b"GET /image HTTP/1.1\r\nHost: x\r\n\r\n"
    server.until("the request sent", lambda: bool(sock.send(request)), lambda: None)
    return sock


def reader(sock: socket.socket, into: bytearray, most: int | None = None) -> Callable[[], None]:
    """Reads what has come (up to `most` bytes in all); closes the socket at the end."""

    def read() -> None:
        while sock.fileno() != -1 and (most is None or len(into) < most):
            try:
                got = sock.recv(256 * 1024 if most is None else min(65536, most - len(into)))
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (ConnectionResetError, ssl.SSLError):
                got = b""
            if not got:
                sock.close()
                return
            into.extend(got)

    return read


def ended(server: Server, done: list[bool], baseline: int) -> None:
    assert server.done == done
    assert all(f.closed for f in server.opened)
    assert server.slots.active == 0
    assert fds() <= baseline


def test_a_whole_image_goes_by_the_socket(make_server: Any, sendfiles: list[int]) -> None:
    server = make_server()
    baseline = fds()
    sock = client(server)
    got = bytearray()
    server.until("the body sent", lambda: len(got) >= len(server.head) + SIZE, reader(sock, got))
    assert bytes(got) == server.head + server.data
    assert sum(sendfiles) == SIZE and server.bodies[0].sent == SIZE
    # the Twisted and pyOpenSSL internals the writers read are there (else: no writer)
    writer = type(server.bodies[0]._socket)
    assert writer is (SocketWriter if server.tls == "plain" else TlsWriter)
    sock.close()
    server.until("the connection closed", lambda: bool(server.lost), lambda: None)
    ended(server, [True], baseline + 1)  # the listening port's descriptor stays


def test_a_head_larger_than_the_socket_takes_goes_first(
    make_server: Any, sendfiles: list[int]
) -> None:
    head = HEAD % SIZE
    head = head[:-2] + b"X-Pad: " + b"p" * (4 * 1024 * 1024) + b"\r\n\r\n"
    server = make_server(head=head)
    sock = client(server, rcvbuf=65536)
    got = bytearray()
    server.until("the body sent", lambda: len(got) >= len(head) + SIZE, reader(sock, got))
    assert bytes(got) == head + server.data
    assert server.done == [True]


def test_multipart_heads_go_between_the_spans(make_server: Any, sendfiles: list[int]) -> None:
    spans = [ByteRange(5, 3 * 1024 * 1024), ByteRange(4 * 1024 * 1024, 100)]
    parts = [Part(b"\r\n--b\r\nPart: %d\r\n\r\n" % n, s) for n, s in enumerate(spans)]
    server = make_server(parts=parts, trailer=b"\r\n--b--\r\n", head=b"HEAD\r\n\r\n")
    sock = client(server)
    got = bytearray()
    want = b"HEAD\r\n\r\n" + b"".join(
        p.head + server.data[p.span.offset : p.span.offset + p.span.size] for p in parts
    )
    want += b"\r\n--b--\r\n"
    server.until("the body sent", lambda: len(got) >= len(want), reader(sock, got))
    assert bytes(got) == want
    assert sum(sendfiles) == sum(s.size for s in spans)
    assert server.done == [True]


def test_a_client_that_reads_slowly_then_stops_is_cut(
    make_server: Any, sendfiles: list[int], log_events: list[Any]
) -> None:
    server = make_server()
    baseline = fds()
    sock = client(server, rcvbuf=4096)
    got = bytearray()
    for _ in range(16):  # a slow reader: 4 KiB a turn, then nothing
        server.turn()
        reader(sock, got, most=len(got) + 4096)()
    server.until("a 64 KiB start", lambda: len(got) >= 65536, reader(sock, got, most=65536))
    server.until("the stall abort", lambda: bool(server.done), lambda: None)
    assert server.done == [False]
    server.until("the connection closed", lambda: bool(server.lost), lambda: None)
    assert server.bodies[0].sent < SIZE
    events = [e["event"] for e in log_events if e.get("event", "").startswith("download.")]
    assert events == ["download.stalled"]
    # the client sees the connection end (reset) once it reads on
    rest = bytearray()
    server.until("the client sees the end", lambda: sock.fileno() == -1, reader(sock, rest))
    assert len(got) + len(rest) < len(server.head) + SIZE
    ended(server, [False], baseline)


def test_a_client_that_resets_mid_way_ends_the_body_without_done(
    make_server: Any, sendfiles: list[int], log_events: list[Any]
) -> None:
    server = make_server()
    baseline = fds()
    sock = client(server, rcvbuf=65536)
    got = bytearray()
    server.until("some bytes", lambda: len(got) >= 100_000, reader(sock, got, most=100_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset
    server.until("the body ended", lambda: server.slots.active == 0, lambda: None)
    server.until("the connection lost", lambda: bool(server.lost), lambda: None)
    lines = [e for e in log_events if e.get("event") == "image.download"]
    assert [e["partial"] for e in lines] == [" (interrupted)"]
    assert [e for e in log_events if e.get("log_failure") is not None] == []
    ended(server, [], baseline)


def test_a_file_that_shrinks_under_sendfile_aborts(
    make_server: Any, sendfiles: list[int], log_events: list[Any]
) -> None:
    server = make_server()
    baseline = fds()
    sock = client(server, rcvbuf=65536)
    got = bytearray()
    server.until("some bytes", lambda: len(got) >= 100_000, reader(sock, got, most=100_000))
    os.truncate(server.image, 200_000)
    server.until("the abort", lambda: bool(server.done), reader(sock, got))
    server.until("the connection lost", lambda: bool(server.lost), reader(sock, got))
    assert len(got) < len(server.head) + SIZE
    [error] = [e for e in log_events if "aborted" in e.get("log_format", "")]
    assert "image ended" in error["why"]
    ended(server, [False], baseline)


@pytest.mark.parametrize("tls", ["plain"])
def test_a_file_sendfile_refuses_is_read_and_written(
    make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(out: int, source: int, offset: int | None, count: int) -> int:
        raise OSError(errno.EINVAL, "no sendfile on this file system")

    monkeypatch.setattr(os, "sendfile", refused)
    server = make_server()
    sock = client(server)
    got = bytearray()
    server.until("the body sent", lambda: len(got) >= len(server.head) + SIZE, reader(sock, got))
    assert bytes(got) == server.head + server.data
    assert server.done == [True]
