"""The phone listeners' HTTP as bytes on one connection (the lean server and the phone
routes, in process): what the other phone tests reach only through a client library.

Pipelined checks, HTTP/1.0, the pre-rendered check answer, If-Modified-Since, an upload
named by Content-Disposition, and a refused external request cut after its linger.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from appliance.catalogue import sample_check
from appliance.config import Config, load_config
from appliance.phones import Authenticator, LocalDirectory, PhoneService
from appliance.testing import NOW, FixedClock, approved_sample, inline, phone_site

INSIDE = IPv4Address("TCP", "10.0.0.7", 40000)
OUTSIDE = IPv4Address("TCP", "203.0.113.7", 40000)
CHECK = b"/RequestHandler/ucdevice.upx"
IMAGE = b"/DeviceUpdateFiles_Int/UCPhone/Polycom/CX600/A/ENU/4.0.7577.4400/CPE/CPE.nbt"


@dataclass
class Phones:
    config: Config
    service: PhoneService
    reactor: MemoryReactorClock

    def connect(self, external: bool = False) -> tuple[Any, StringTransport]:
        site = phone_site(self.service, self.reactor, external=external)
        peer = OUTSIDE if external else INSIDE
        channel = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        channel.makeConnection(transport)
        return channel, transport

    def exchange(self, data: bytes, external: bool = False) -> tuple[bytes, StringTransport]:
        channel, transport = self.connect(external)
        channel.dataReceived(data)
        out = transport.value()
        channel.connectionLost(Failure(ConnectionError("closed")))
        return out, transport


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[Phones]:
    config = load_config(None, tmp_path / "data")
    store = approved_sample(config, FixedClock(NOW), version="4.0.7577.4400", image_size=4096)
    authenticator = Authenticator(
        LocalDirectory(lambda: store), config.auth, lambda: 0.0, run_blocking=inline
    )
    service = PhoneService(config, store, authenticator, lambda: NOW)
    yield Phones(config, service, MemoryReactorClock())
    service.close()
    store.close()


def check(version: bytes = b"1.1", extra: bytes = b"") -> bytes:
    body = sample_check()
    return (
        b"POST %s HTTP/%s\r\nHost: ucupdates.test\r\nContent-Type: text/xml\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (CHECK, version, extra, len(body), body)
    )


def responses(out: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(status line, head, body) of each response in `out`."""
    found = []
    while out:
        head, _, rest = out.partition(b"\r\n\r\n")
        m = re.search(rb"\r\nContent-Length: (\d+)", head)
        length = int(m.group(1)) if m else 0
        found.append((head.split(b"\r\n", 1)[0], head, rest[:length]))
        out = rest[length:]
    return found


def test_pipelined_checks_get_the_same_answer_in_order(phones: Phones) -> None:
    out, transport = phones.exchange(check() * 3)
    answers = responses(out)
    assert [a[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 3
    assert answers[0] == answers[1] == answers[2]  # the same bytes within a second
    head = answers[0][1]
    assert b"\r\nServer: ucupdates" in head and b"\r\nDate: " in head
    assert b"\r\nContent-Type: text/xml; charset=utf-8" in head
    assert b"\r\nCache-Control: no-store" in head and b"<Response" in answers[0][2]
    assert not transport.disconnecting


def test_a_check_over_http_1_0_is_answered_so_and_closed(phones: Phones) -> None:
    out, transport = phones.exchange(check(b"1.0") + check())
    (answer,) = responses(out)  # nothing after the HTTP/1.0 request is read
    assert answer[0] == b"HTTP/1.0 200 OK" and transport.disconnecting


def test_if_modified_since_at_or_after_the_file_s_time_is_a_304(phones: Phones) -> None:
    get = b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n"
    out, _ = phones.exchange(get % (IMAGE, b""))
    ((status, head, body),) = responses(out)
    assert status == b"HTTP/1.1 200 OK" and len(body) == 4096
    modified = re.search(rb"\r\nLast-Modified: ([^\r]+)", head)
    assert modified is not None
    since = b"If-Modified-Since: " + modified.group(1) + b"\r\n"
    out, _ = phones.exchange(get % (IMAGE, since))
    ((status, head, body),) = responses(out)
    assert status == b"HTTP/1.1 304 Not Modified" and body == b""
    assert b"Content-Length" not in head and b"\r\nETag: " in head
    for other in (b"Thu, 01 Jan 1970 00:00:00 GMT", b"not a date", b";"):
        out, _ = phones.exchange(get % (IMAGE, b"If-Modified-Since: " + other + b"\r\n"))
        assert responses(out)[0][0] == b"HTTP/1.1 200 OK", other


def test_an_upload_named_by_content_disposition_is_stored(phones: Phones) -> None:
    body = b"a log"
    request = (
        b"PUT /RequestHandler/Files?mac=00-04-F2-00-00-01 HTTP/1.1\r\nHost: x\r\n"
        b'Content-Disposition: attachment; filename="phone.clg"\r\n'
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    out, _ = phones.exchange(request)
    assert responses(out)[0][0] == b"HTTP/1.1 201 Created"
    (stored,) = (phones.config.logs_dir / "Client" / "CELog").iterdir()
    assert stored.name.startswith("00-04-F2-00-00-01_") and stored.name.endswith("_phone.clg")
    assert stored.read_bytes() == body


def test_a_refused_external_check_is_answered_then_cut(phones: Phones) -> None:
    channel, transport = phones.connect(external=True)
    channel.dataReceived(check().replace(CHECK, b"/RequestHandlerExt/ucdevice.upx"))
    assert transport.value().startswith(b"HTTP/1.1 401 ") and transport.disconnecting
    assert b"\r\nConnection: close\r\n" in transport.value()
    assert not transport.disconnected
    phones.reactor.advance(1)  # LINGER_SECONDS
    assert transport.disconnected
    channel.connectionLost(Failure(ConnectionError("closed")))
