"""Image downloads: which bytes a Range gets, the slots, in process.

The Range rules are pure (`phones.ranges`) and tested with a table; the answers go
through a real GuardedSite over memory (`appliance.testing.phone_client`). The stalled
readers, curl's resume and the dropped connections need real sockets: see
test_downloads_serve.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
from treq.testing import StubTreq

from appliance.catalogue import sample_check
from appliance.config import Config, load_config
from appliance.phones import Authenticator, LocalDirectory, PhoneService
from appliance.phones.ranges import ByteRange, RangeAnswer, if_range_holds, plan_ranges
from appliance.phones.slots import DownloadLimit, DownloadSlots, Slot
from appliance.store import Store
from appliance.testing import FixedClock, approved_sample, inline, phone_client, settle

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
CHECK = "http://ucupdates.test/RequestHandler/ucdevice.upx"
SIZE = 256 * 1024  # the sample image
MAX_RANGES = 4


# -- which bytes: the pure rules ----------------------------------------------------------


def _r(*spans: tuple[int, int]) -> tuple[ByteRange, ...]:
    return tuple(ByteRange(first, last - first + 1) for first, last in spans)


@pytest.mark.parametrize(
    ("header", "answer", "ranges"),
    [
        (None, RangeAnswer.WHOLE, ()),
        (b"bytes=0-99", RangeAnswer.PARTIAL, _r((0, 99))),
        (b"bytes=1000-", RangeAnswer.PARTIAL, _r((1000, 9999))),  # a phone's resume
        (b"bytes=-500", RangeAnswer.PARTIAL, _r((9500, 9999))),
        (b"bytes=-50000", RangeAnswer.PARTIAL, _r((0, 9999))),
        (b"bytes=9990-20000", RangeAnswer.PARTIAL, _r((9990, 9999))),
        (b"BYTES = 0-0", RangeAnswer.PARTIAL, _r((0, 0))),
        (b"bytes=0-9, 20-29,,40-", RangeAnswer.PARTIAL, _r((0, 9), (20, 29), (40, 9999))),
        (b"bytes=0-9,10-19", RangeAnswer.PARTIAL, _r((0, 9), (10, 19))),  # adjacent
        (b"bytes=0-9,20000-", RangeAnswer.PARTIAL, _r((0, 9))),  # past the end: dropped
        (b"bytes=10000-", RangeAnswer.UNSATISFIABLE, ()),
        (b"bytes=-0", RangeAnswer.UNSATISFIABLE, ()),
        (b"bytes=20000-30000,-0", RangeAnswer.UNSATISFIABLE, ()),
        # ignored: the whole file
        (b"bytes=" + b",".join([b"0-"] * 5000), RangeAnswer.WHOLE, ()),
        (b"bytes=0-,0-", RangeAnswer.WHOLE, ()),
        (b"bytes=0-99,50-150", RangeAnswer.WHOLE, ()),
        (b"bytes=100-199,0-9", RangeAnswer.WHOLE, ()),
        (b"bytes=-100,0-9", RangeAnswer.WHOLE, ()),
        (b"bytes=0-0,2-2,4-4,6-6,8-8", RangeAnswer.WHOLE, ()),  # more than MAX_RANGES
        (b"bytes=9-0", RangeAnswer.WHOLE, ()),
        (b"bytes=a-b", RangeAnswer.WHOLE, ()),
        (b"bytes=-", RangeAnswer.WHOLE, ()),
        (b"bytes=+1-2", RangeAnswer.WHOLE, ()),
        (b"bytes=" + b"9" * 5000 + b"-", RangeAnswer.WHOLE, ()),
        (b"items=0-9", RangeAnswer.WHOLE, ()),
        (b"bytes 0-9", RangeAnswer.WHOLE, ()),
        (b"bytes=", RangeAnswer.WHOLE, ()),
    ],
)
def test_which_ranges_are_honoured(
    header: bytes | None, answer: RangeAnswer, ranges: tuple[ByteRange, ...]
) -> None:
    plan = plan_ranges(header, 10_000, MAX_RANGES)
    assert (plan.answer, plan.ranges) == (answer, ranges)
    assert sum(r.size for r in plan.ranges) <= 10_000
    assert bool(plan.ignored) == (answer is RangeAnswer.WHOLE and header is not None)


def test_if_range_matches_only_the_strong_etag_or_the_exact_date() -> None:
    etag = b'"abc"'
    modified = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)
    assert if_range_holds(None, etag, modified)
    assert if_range_holds(b'"abc"', etag, modified)
    assert not if_range_holds(b'"abd"', etag, modified)
    assert not if_range_holds(b'W/"abc"', etag, modified)
    assert if_range_holds(format_datetime(modified, usegmt=True).encode(), etag, modified)
    later = datetime(2026, 12, 1, 8, 0, 1, tzinfo=UTC)
    assert not if_range_holds(format_datetime(later, usegmt=True).encode(), etag, modified)
    assert not if_range_holds(b"yesterday", etag, modified)


# -- the slots ---------------------------------------------------------------------------


def test_slots_are_capped_in_all_and_per_client_and_given_back_once() -> None:
    slots = DownloadSlots(total=5, per_client=2)
    a1, a2 = slots.take("192.0.2.1"), slots.take("192.0.2.1")
    assert isinstance(a1, Slot) and isinstance(a2, Slot)
    assert slots.take("192.0.2.1") is DownloadLimit.PER_CLIENT
    others = [slots.take(f"192.0.2.{n}") for n in (2, 3, 4)]
    assert slots.take("192.0.2.9") is DownloadLimit.ALL
    a1.release()
    a1.release()  # a second release (finish, then connection lost) gives nothing back
    assert slots.active == 4
    assert isinstance(slots.take("192.0.2.1"), Slot)
    assert slots.take("192.0.2.1") is DownloadLimit.ALL
    for slot in [a2, *others]:
        assert isinstance(slot, Slot)
        slot.release()
    assert slots.active == 1
    assert slots.by_client == {"192.0.2.1": 1}


# -- the answers, in process ---------------------------------------------------------------


@dataclass
class Phones:
    config: Config
    store: Store
    service: PhoneService
    client: StubTreq
    url: str
    sha256: str


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[Phones]:
    config = load_config(None, tmp_path / "data")
    store = approved_sample(config, FixedClock(NOW), version="4.0.7577.4400")
    authenticator = Authenticator(
        LocalDirectory(lambda: store), config.auth, lambda: 0.0, run_blocking=inline
    )
    service = PhoneService(config, store, authenticator, lambda: NOW)
    client = phone_client(service)
    response = settle(client, client.post(CHECK, data=sample_check("4.0.7577.4366")))
    body = settle(client, response.content()).decode()
    base = re.search(r"<BaseURL>[^<]*/(DeviceUpdateFiles_Int/[^<]+)</BaseURL>", body)
    name = re.search(r"<FileName>([^<]+)</FileName>", body)
    sha = re.search(r"<SHA256>([^<]+)</SHA256>", body)
    assert base and name and sha, body
    url = f"http://ucupdates.test/{base.group(1)}/{name.group(1)}"
    yield Phones(config, store, service, client, url, sha.group(1))
    service.close()
    store.close()


def fetch(
    phones: Phones, headers: dict[str, str], method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    sent = {k: [v] for k, v in headers.items()}
    response = settle(phones.client, phones.client.request(method, phones.url, headers=sent))
    body = settle(phones.client, response.content())
    got = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    if isinstance(response.length, int):  # Twisted's client keeps Content-Length apart
        got["content-length"] = str(response.length)
    return response.code, got, body


def whole(phones: Phones, headers: dict[str, str]) -> None:
    code, got, body = fetch(phones, headers)
    assert code == 200
    assert got["content-length"] == str(SIZE)
    assert hashlib.sha256(body).hexdigest() == phones.sha256
    assert phones.service.downloads.slots.active == 0


def test_five_thousand_copies_of_the_whole_file_get_it_once(phones: Phones) -> None:
    # Before: 206, multipart, Content-Length 5,000 times the file's size.
    whole(phones, {"Range": "bytes=" + ",".join(["0-"] * 5000)})


@pytest.mark.parametrize(
    "ranges", ["0-,0-", "0-99,50-150", "100-199,0-9", "-100,0-9", "0-0,2-2,4-4,6-6,8-8", "x"]
)
def test_overlapping_out_of_order_or_too_many_ranges_get_the_whole_file(
    phones: Phones, ranges: str
) -> None:
    whole(phones, {"Range": f"bytes={ranges}"})


def test_a_resume_gets_the_rest(phones: Phones) -> None:
    _, _, full = fetch(phones, {})
    code, got, body = fetch(phones, {"Range": "bytes=1000-"})
    assert code == 206
    assert got["content-range"] == f"bytes 1000-{SIZE - 1}/{SIZE}"
    assert got["content-length"] == str(SIZE - 1000)
    assert body == full[1000:]
    code, got, body = fetch(phones, {"Range": "bytes=-10"})
    assert (code, got["content-range"], body) == (
        206,
        f"bytes {SIZE - 10}-{SIZE - 1}/{SIZE}",
        full[-10:],
    )


def test_a_few_ordered_ranges_get_a_multipart_answer_of_the_announced_length(
    phones: Phones,
) -> None:
    _, _, full = fetch(phones, {})
    code, got, body = fetch(phones, {"Range": "bytes=0-9,100-109,-5"})
    assert code == 206
    assert got["content-type"].startswith("multipart/byteranges; boundary=")
    assert int(got["content-length"]) == len(body) < 1000
    for first, last in ((0, 9), (100, 109), (SIZE - 5, SIZE - 1)):
        part = f"content-range: bytes {first}-{last}/{SIZE}\r\n\r\n".encode()
        assert re.search(re.escape(part) + re.escape(full[first : last + 1]), body, re.I)


def test_a_range_past_the_end_is_416(phones: Phones) -> None:
    code, got, _ = fetch(phones, {"Range": f"bytes={SIZE}-"})
    assert code == 416
    assert got["content-range"] == f"bytes */{SIZE}"
    assert phones.service.downloads.slots.active == 0


def test_if_range_with_the_etag_resumes_and_with_another_gets_the_whole_file(
    phones: Phones,
) -> None:
    _, headers, _ = fetch(phones, {})
    etag = headers["etag"]
    assert etag == f'"{phones.sha256}"'
    code, _, body = fetch(phones, {"Range": "bytes=10-", "If-Range": etag})
    assert (code, len(body)) == (206, SIZE - 10)
    code, _, body = fetch(phones, {"Range": "bytes=10-", "If-Range": '"another"'})
    assert (code, len(body)) == (200, SIZE)
    code, _, body = fetch(phones, {"Range": "bytes=10-", "If-Range": headers["last-modified"]})
    assert (code, len(body)) == (206, SIZE - 10)


def test_head_and_if_none_match_take_no_slot(phones: Phones) -> None:
    code, got, body = fetch(phones, {}, method="HEAD")
    assert (code, body) == (200, b"")  # its Content-Length: test_serve.py, over a socket
    assert got["accept-ranges"] == "bytes"
    code, _, body = fetch(phones, {"If-None-Match": got["etag"]})
    assert (code, body) == (304, b"")
    assert phones.service.downloads.slots.active == 0


def test_a_client_over_its_share_of_slots_gets_503_and_others_do_not(phones: Phones) -> None:
    slots = phones.service.downloads.slots
    per_client = phones.config.service.max_downloads_per_client
    held = [slots.take("127.0.0.1") for _ in range(per_client)]
    code, got, _ = fetch(phones, {})
    assert code == 503
    assert got["retry-after"] == str(phones.config.service.retry_after)
    for slot in held:
        assert isinstance(slot, Slot)
        slot.release()
    whole(phones, {})


# -- a body of many batches, in process (the body alone: tests/test_image_body.py) ---------


def test_an_image_of_many_batches_downloads_whole_in_process(tmp_path: Path) -> None:
    config = load_config(None, tmp_path / "data")
    size = 3 * 1024 * 1024 + 5  # more than one batch (BATCH chunks a reactor turn)
    store = approved_sample(config, FixedClock(NOW), version="4.0.7577.4400", image_size=size)
    authenticator = Authenticator(
        LocalDirectory(lambda: store), config.auth, lambda: 0.0, run_blocking=inline
    )
    service = PhoneService(config, store, authenticator, lambda: NOW)
    try:
        client = phone_client(service)
        response = settle(client, client.post(CHECK, data=sample_check("4.0.7577.4366")))
        body = settle(client, response.content()).decode()
        base = re.search(r"<BaseURL>[^<]*/(DeviceUpdateFiles_Int/[^<]+)</BaseURL>", body)
        name = re.search(r"<FileName>([^<]+)</FileName>", body)
        assert base and name, body
        got = settle(client, client.get(f"http://ucupdates.test/{base.group(1)}/{name.group(1)}"))
        assert (got.code, len(settle(client, got.content()))) == (200, size)
        assert service.downloads.slots.active == 0
    finally:
        service.close()
        store.close()
