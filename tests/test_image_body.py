"""An image body on a raw transport, in memory: batches, pauses, stalls, the end.

`phones.image_body.TransportBody` over Twisted's StringTransport and a memory reactor
(no sockets, no clock moving unless told): what is written and when, that it stops at
the transport's first pause, that a stall aborts, and that however it ends the file is
closed, the slot released and `done` called at most once. The real sockets (sendfile):
test_image_body_socket.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport

from appliance.config import ServiceSettings, load_config
from appliance.model import Zone
from appliance.phones.image_body import BATCH, CHUNK, Download, Part, TransportBody
from appliance.phones.ranges import ByteRange
from appliance.phones.slots import DownloadSlots, Slot

STALL = 30.0
SIZE = 3 * BATCH * CHUNK + 12_345  # more than three reactor turns' worth


class PausingTransport(StringTransport):
    """Pauses its producer when more than `limit` bytes are waiting, as a socket's
    transport does; `drain()` is the client reading them all."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.waiting = 0
        self.writes_while_paused = 0
        self.paused = False

    def write(self, data: bytes) -> None:
        if self.paused:
            self.writes_while_paused += 1
        super().write(data)
        self.waiting += len(data)
        if self.producer is not None and self.waiting > self.limit and not self.paused:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.waiting = 0
        if self.paused and self.producer is not None:
            self.paused = False
            self.producer.resumeProducing()


@dataclasses.dataclass
class Run:
    body: TransportBody
    transport: StringTransport
    reactor: MemoryReactorClock
    image: Any
    slots: DownloadSlots
    data: bytes
    done: list[bool]

    def turns(self, most: int = 100) -> int:
        """Run due calls until the body stops scheduling more; the number of turns."""
        for turn in range(most):
            if not self.reactor.getDelayedCalls() or self.body._ended:
                return turn
            self.reactor.advance(0)
        raise AssertionError("the body went on writing")


def settings(tmp_path: Path) -> ServiceSettings:
    service = load_config(None, tmp_path / "data").service
    return dataclasses.replace(service, download_stall_seconds=STALL)


def start(
    tmp_path: Path,
    transport: StringTransport | None = None,
    parts: list[Part] | None = None,
    trailer: bytes = b"",
    size: int = SIZE,
    paused: bool = False,
) -> Run:
    data = bytes(range(251)) * (size // 251) + bytes(size % 251)
    path = tmp_path / "image"
    path.write_bytes(data)
    reactor = MemoryReactorClock()
    transport = transport or StringTransport()
    slots = DownloadSlots(4, 4)
    slot = slots.take("192.0.2.1")
    assert isinstance(slot, Slot)
    stored: Any = SimpleNamespace(path=PurePosixPath("a/b.nbt"))
    download = Download(stored, "192.0.2.1", Zone.INTERNAL)
    image = path.open("rb")
    done: list[bool] = []
    parts = [Part(b"", ByteRange(0, size))] if parts is None else parts
    service = settings(tmp_path)
    body = TransportBody(
        reactor, transport, image, parts, trailer, slot, service, download, 206, done.append
    )
    transport.write(b"HEAD\r\n\r\n")  # what the protocol writes before it starts the body
    if paused:
        body.pauseProducing()
    body.start()
    return Run(body, transport, reactor, image, slots, data, done)


def ended_once(run: Run, done: list[bool]) -> None:
    assert run.done == done
    assert run.image.closed
    assert run.slots.active == 0 and run.slots.by_client == {}


def download_events(log_events: list[Any]) -> list[tuple[str, str]]:
    return [
        (e["event"], e.get("partial", ""))
        for e in log_events
        if e.get("event", "").startswith(("download.", "image."))
    ]


def test_a_memory_transport_gets_no_socket_writer(tmp_path: Path) -> None:
    run = start(tmp_path)
    assert run.body._socket is None  # its bytes go through transport.write


def test_a_body_is_written_in_bounded_batches_and_ends_once(
    tmp_path: Path, log_events: list[Any]
) -> None:
    run = start(tmp_path)
    assert len(run.transport.value()) == len(b"HEAD\r\n\r\n") + BATCH * CHUNK  # one batch now
    run.turns()  # the rest a batch a reactor turn (advance(0) runs turns due meanwhile)
    assert run.transport.value() == b"HEAD\r\n\r\n" + run.data
    assert run.body.sent == SIZE
    assert run.transport.producer is None  # unregistered before done
    ended_once(run, [True])
    run.body.connection_lost()  # the protocol closing later changes nothing
    run.body.stopProducing()
    ended_once(run, [True])
    assert download_events(log_events) == [("image.download", "")]
    [line] = [e for e in log_events if e.get("event") == "image.download"]
    assert line["status"] == 206


def test_a_body_stops_at_the_transports_first_pause(tmp_path: Path) -> None:
    limit = 100_000
    transport = PausingTransport(limit)
    run = start(tmp_path, transport)
    assert transport.paused and transport.writes_while_paused == 0
    assert transport.waiting <= limit + CHUNK  # at most one piece past what it wants
    run.reactor.advance(0)
    assert transport.writes_while_paused == 0
    for _ in range(1000):
        if run.done:
            break
        transport.drain()
        run.reactor.advance(0)
        assert transport.waiting <= limit + CHUNK and transport.writes_while_paused == 0
    assert transport.value() == b"HEAD\r\n\r\n" + run.data
    ended_once(run, [True])


def test_a_body_started_paused_waits_for_resume(tmp_path: Path) -> None:
    run = start(tmp_path, paused=True)
    run.reactor.advance(0)
    assert run.transport.value() == b"HEAD\r\n\r\n" and run.body.sent == 0
    run.body.resumeProducing()
    run.turns()
    assert run.transport.value() == b"HEAD\r\n\r\n" + run.data
    ended_once(run, [True])


def test_a_body_paused_past_the_stall_time_is_aborted_once(
    tmp_path: Path, log_events: list[Any]
) -> None:
    run = start(tmp_path)
    run.body.pauseProducing()
    run.reactor.advance(STALL - 1)
    run.body.resumeProducing()  # progress: the clock starts again at the next pause
    run.body.pauseProducing()
    run.reactor.advance(STALL - 1)
    assert not run.transport.disconnected and run.done == []
    run.reactor.advance(1)
    assert run.transport.disconnected  # aborted
    ended_once(run, [False])
    assert run.transport.producer is None
    run.body.connection_lost()  # what the abort leads to: no second done
    run.body.resumeProducing()
    run.reactor.advance(STALL * 2)
    ended_once(run, [False])
    assert download_events(log_events) == [
        ("download.stalled", ""),
        ("image.download", " (interrupted)"),
    ]


def test_a_lost_connection_ends_the_body_without_done(
    tmp_path: Path, log_events: list[Any]
) -> None:
    run = start(tmp_path)
    written = len(run.transport.value())
    run.body.connection_lost()
    for _ in range(5):
        run.reactor.advance(0)
        run.body.resumeProducing()
    run.body.stopProducing()
    assert len(run.transport.value()) == written
    ended_once(run, [])
    assert download_events(log_events) == [("image.download", " (interrupted)")]
    assert [e for e in log_events if e.get("log_failure") is not None] == []


def test_stop_producing_from_the_transport_ends_it_as_lost(tmp_path: Path) -> None:
    run = start(tmp_path)
    run.body.stopProducing()
    run.reactor.advance(0)
    ended_once(run, [])


def test_a_transport_already_gone_gets_nothing(tmp_path: Path) -> None:
    class Gone(StringTransport):
        def registerProducer(self, producer: Any, streaming: bool) -> None:
            producer.stopProducing()  # what Twisted's transports do once disconnected

    run = start(tmp_path, Gone())
    run.reactor.advance(0)
    assert run.transport.value() == b"HEAD\r\n\r\n"
    ended_once(run, [])


def test_a_file_that_shrinks_aborts_the_body(tmp_path: Path, log_events: list[Any]) -> None:
    run = start(tmp_path)
    (tmp_path / "image").write_bytes(b"")  # truncated under the open file
    run.turns()
    assert run.transport.disconnected
    ended_once(run, [False])
    [error] = [e for e in log_events if "aborted" in e.get("log_format", "")]
    assert "image ended" in error["why"]


def test_multipart_heads_spans_and_trailer_go_in_order(tmp_path: Path) -> None:
    parts = [
        Part(b"\r\n--b\r\nfirst\r\n\r\n", ByteRange(0, 10)),
        Part(b"\r\n--b\r\nsecond\r\n\r\n", ByteRange(CHUNK * 2 + 5, CHUNK + 7)),
    ]
    run = start(tmp_path, parts=parts, trailer=b"\r\n--b--\r\n")
    run.turns()
    data = run.data
    assert run.transport.value() == (
        b"HEAD\r\n\r\n\r\n--b\r\nfirst\r\n\r\n"
        + data[:10]
        + b"\r\n--b\r\nsecond\r\n\r\n"
        + data[CHUNK * 2 + 5 : CHUNK * 3 + 12]
        + b"\r\n--b--\r\n"
    )
    ended_once(run, [True])


def test_an_empty_body_is_done_at_once(tmp_path: Path) -> None:
    run = start(tmp_path, parts=[], size=0)
    assert run.transport.value() == b"HEAD\r\n\r\n" and run.transport.producer is None
    ended_once(run, [True])


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_lost_connection_during_a_pause_cancels_the_stall(tmp_path: Path, when: str) -> None:
    run = start(tmp_path)
    run.body.pauseProducing()
    if when == "after":
        run.reactor.advance(STALL / 2)
    run.body.connection_lost()
    run.reactor.advance(STALL * 2)
    assert not run.transport.disconnected
    assert run.reactor.getDelayedCalls() == []
    ended_once(run, [])
