"""A rollout network's caps on concurrent downloads and bytes a second (phones/slots.py,
throttle.py, image_body.py, downloads.py), in process: the answers through the phone
routes over memory as in test_downloads.py, a body over a memory transport and clock as
in test_image_body.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport

from appliance import catalogue
from appliance.config import load_config
from appliance.model import DownloadWindows, ExternalPolicy, NetworkPolicy, Zone, parse_network
from appliance.phones.image_body import Download, Part, TransportBody
from appliance.phones.ranges import ByteRange
from appliance.phones.slots import DownloadLimit, DownloadSlots, NetworkCaps, Slot
from appliance.phones.throttle import MIN_PIECE, Throttle
from tests import test_image_body_socket as socket_harness
from tests.test_downloads import Phones, fetch, whole
from tests.test_downloads import phones as phones  # the fixture
from tests.test_image_body_socket import SIZE as SOCKET_SIZE
from tests.test_image_body_socket import make_server as make_server  # fixtures
from tests.test_image_body_socket import sendfiles as sendfiles
from tests.test_image_body_socket import tls as tls

ALWAYS = DownloadWindows("UTC")


def test_a_cap_counts_the_slots_of_its_network_and_gives_them_back() -> None:
    slots = DownloadSlots(total=10, per_client=5)
    branch = NetworkCaps("10.20.0.0/16", 2)
    a, b = slots.take("10.20.0.1", branch), slots.take("10.20.0.2", branch)
    assert slots.take("10.20.0.3", branch) is DownloadLimit.NETWORK
    assert isinstance(slots.take("10.30.0.1", NetworkCaps("10.30.0.0/16", 2)), Slot)
    assert isinstance(slots.take("10.40.0.1"), Slot)  # no cap
    assert isinstance(slots.take("10.40.0.2", NetworkCaps("10.40.0.0/16", None, 1000)), Slot)
    assert isinstance(a, Slot) and isinstance(b, Slot)
    a.release()
    a.release()
    assert slots.by_group == {"10.20.0.0/16": 1, "10.30.0.0/16": 1}
    assert isinstance(slots.take("10.20.0.3", branch), Slot)
    assert slots.refused == 1


def test_the_answers_name_the_cap_of_the_clients_network(phones: Phones) -> None:
    store, answers = phones.store, phones.service.answers
    assert answers.download_caps("127.0.0.1", Zone.INTERNAL) is None
    catalogue.set_network(store, NetworkPolicy(parse_network("127.0.0.0/8"), ALWAYS, 1), "a")
    catalogue.set_network(store, NetworkPolicy(parse_network("10.9.0.0/16"), ALWAYS), "a")
    catalogue.set_external(store, ExternalPolicy(None, max_bytes_per_second=7), "a")
    answers.policy()  # reloaded
    assert answers.download_caps("127.0.0.1", Zone.INTERNAL) == NetworkCaps("127.0.0.0/8", 1)
    assert answers.download_caps("10.0.0.1", Zone.INTERNAL) is None
    assert answers.download_caps("10.9.0.1", Zone.INTERNAL) is None  # windows only
    assert answers.download_caps("127.0.0.1", Zone.EXTERNAL) == NetworkCaps(
        "external zone", None, 7
    )


def test_a_phone_past_its_networks_cap_is_told_to_retry(phones: Phones) -> None:
    policy = NetworkPolicy(parse_network("127.0.0.0/8"), ALWAYS, max_downloads=1)
    catalogue.set_network(phones.store, policy, "alice")
    phones.service.answers.policy()
    slots = phones.service.downloads.slots
    held = slots.take("127.0.0.2", NetworkCaps("127.0.0.0/8", 1))  # another phone of the network
    assert isinstance(held, Slot)
    code, got, _ = fetch(phones, {})
    assert code == 503 and got["retry-after"] == str(phones.config.service.retry_after)
    held.release()
    whole(phones, {})


# -- bytes a second ------------------------------------------------------------------------


def test_the_bucket_holds_a_second_and_refills_at_the_rate() -> None:
    bucket = Throttle(100_000, now=10.0)
    assert bucket.budget(10.0) == 100_000  # a second's worth to start
    bucket.spend(95_000)
    assert bucket.budget(10.0) == 0  # 5,000 left: less than a piece worth sending
    assert bucket.wait(10.0) == pytest.approx((MIN_PIECE - 5_000) / 100_000)
    assert bucket.budget(10.5) == 55_000
    assert bucket.budget(20.0) == 100_000  # never more than a second's worth
    slow = Throttle(1_000, now=0.0)
    assert slow.floor == 1_000 and slow.budget(0.0) == 1_000


RATE = 64 * 1024
SIZE = 4 * RATE


def throttled(tmp_path: Path, paused: bool) -> tuple[TransportBody, StringTransport, Any, bytes]:
    data = bytes(range(251)) * (SIZE // 251) + bytes(SIZE % 251)
    (tmp_path / "image").write_bytes(data)
    reactor = MemoryReactorClock()
    transport = StringTransport()
    slot = DownloadSlots(4, 4).take("192.0.2.1")
    assert isinstance(slot, Slot)
    stored: Any = SimpleNamespace(path=PurePosixPath("a/b.nbt"))
    service = dataclasses.replace(
        load_config(None, tmp_path / "data").service, download_stall_seconds=0.5
    )  # shorter than every wait for the bucket
    done: list[bool] = []
    body = TransportBody(
        reactor,
        transport,
        (tmp_path / "image").open("rb"),
        [Part(b"", ByteRange(0, SIZE))],
        b"",
        slot,
        service,
        Download(stored, "192.0.2.1", Zone.INTERNAL),
        200,
        done.append,
        Throttle(RATE, reactor.seconds()),
    )
    if paused:
        body.pauseProducing()
    body.start()
    if paused:
        body.resumeProducing()
    return body, transport, reactor, data


@pytest.mark.parametrize("paused", [False, True])
def test_a_throttled_body_sends_at_the_rate_and_its_waits_are_no_stall(
    tmp_path: Path, paused: bool
) -> None:
    body, transport, reactor, data = throttled(tmp_path, paused)
    sent = []
    for _ in range(10):
        sent.append(len(transport.value()))
        if body._ended:
            break
        reactor.advance(1.0)
    assert transport.value() == data and body.sent == SIZE  # whole, never aborted
    assert sent == [RATE, 2 * RATE, 3 * RATE, 4 * RATE]  # a second's worth a second


def test_a_throttled_body_goes_whole_by_the_socket(
    make_server: Any, sendfiles: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain (sendfile) and TLS: no send is larger than the bucket held, the waits are
    not taken for stalls (the harness's stall limit is 0.5 s), the file arrives whole."""
    rate = SOCKET_SIZE * 3 // 4  # the second quarter waits for the bucket

    def with_throttle(reactor: Any, *args: Any) -> TransportBody:
        return TransportBody(reactor, *args, Throttle(rate, reactor.seconds()))

    monkeypatch.setattr(socket_harness, "TransportBody", with_throttle)
    server = make_server()
    sock = socket_harness.client(server)
    got = bytearray()
    expected = len(server.head) + SOCKET_SIZE
    server.until("the body sent", lambda: len(got) >= expected, socket_harness.reader(sock, got))
    assert bytes(got) == server.head + server.data and server.done == [True]
    assert sum(sendfiles) == SOCKET_SIZE and max(sendfiles) <= rate
    sock.close()
