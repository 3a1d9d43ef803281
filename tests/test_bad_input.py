"""A catalogue of bad input: each case with the answer it must get, and a check that
nothing changed (the catalogue, the image and log folders, the device inventory).

In process wherever the case allows it (the phone listeners' real GuardedSite over a
memory transport, the pure codecs, the importer on a temporary data folder); the cases
already tested elsewhere are listed in docs/security.md ("Fuzzing and the catalogue of
bad input") with the test that holds them, not repeated here.
"""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from dnslib import DNSRecord
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from appliance.cab import CabEntry, write_cab
from appliance.catalogue import PackageError, add_user, import_package, sample_check
from appliance.config import Config, load_config
from appliance.discovery.dhcp_answer import Outcome as DhcpOutcome
from appliance.discovery.dhcp_answer import decide
from appliance.discovery.dhcp_codec import MalformedPacket, parse_packet
from appliance.discovery.dns_answer import Action, respond
from appliance.phones import Authenticator, LocalDirectory, PhoneService
from appliance.store import Store
from appliance.testing import (
    NOW,
    FixedClock,
    SecondsClock,
    approved_sample,
    catalogue_state,
    file_tree,
    inline,
    phone_site,
)
from appliance.web import GuardedSite
from tests.fuzz import targets

IMAGE = targets.IMAGE.decode()
CHECK_PATH = b"/RequestHandler/ucdevice.upx"
INSIDE = IPv4Address("TCP", "10.0.0.7", 40000)
OUTSIDE = IPv4Address("TCP", "203.0.113.7", 40000)
GiB = 1024**3


# -- the phone listeners in process ------------------------------------------------------------


@dataclass
class Phones:
    config: Config
    store: Store
    internal: GuardedSite
    external: GuardedSite
    reactor: MemoryReactorClock

    def state(self) -> tuple[object, ...]:
        """What a refused request must leave as it was: the catalogue and image folder,
        the inventory, and every file of the data folder but the database itself and the
        capture folder (capture mode keeps every unparsable check, bounded, by design)."""
        skip = (self.config.db_path.name, self.config.capture_dir.name + "/")
        files = {
            name: digest
            for name, digest in file_tree(self.config.data_dir).items()
            if not name.startswith(skip)
        }
        return catalogue_state(self.config), self.store.devices(), files

    def unchanged(self, before: tuple[object, ...]) -> None:
        after = self.state()
        for what, was, now in zip(("catalogue", "inventory", "files"), before, after, strict=True):
            if isinstance(was, dict) and isinstance(now, dict):
                changed = {k for k in was.keys() | now.keys() if was.get(k) != now.get(k)}
                assert not changed, f"{what} changed: {sorted(changed)}"
            assert was == now, f"{what} changed"


@pytest.fixture(scope="module")
def approved_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with the sample approved and a phone user, made once and copied."""
    config = load_config(None, tmp_path_factory.mktemp("approved") / "data")
    store = approved_sample(config, FixedClock(NOW), version="4.0.7577.4400", image_size=4096)
    add_user(store, "phone1", "right password 1", "test")
    store.close()
    return config.data_dir


@pytest.fixture
def phones(tmp_path: Path, approved_data: Path) -> Iterator[Phones]:
    shutil.copytree(approved_data, tmp_path / "data")
    config = load_config(None, tmp_path / "data")
    store = Store.open(config.db_path, clock=FixedClock(NOW))
    local = LocalDirectory(lambda: store)
    authenticator = Authenticator(
        local, config.auth, SecondsClock(), run_blocking=inline, ntlm=local
    )
    service = PhoneService(config, store, authenticator, lambda: NOW)
    reactor = MemoryReactorClock()
    yield Phones(
        config,
        store,
        phone_site(service, reactor),
        phone_site(service, reactor, external=True),
        reactor,
    )
    service.close()
    store.close()


@dataclass
class Exchange:
    response: bytes
    closed: bool
    sent: int  # bytes the client got to send before the connection was closed

    @property
    def status(self) -> int:
        return int(self.response.split(b" ", 2)[1]) if self.response else 0


def exchange(
    site: GuardedSite, *pieces: bytes, peer: IPv4Address = INSIDE, wait: bool = False
) -> Exchange:
    """Send `pieces` on one connection, as a socket would deliver them, stopping when the
    server closes; run the download pump. With `wait`, then let the guard's request
    timeout pass. The connection is then closed by the client."""
    channel = site.buildProtocol(peer)
    transport = targets._transport_class()(peerAddress=peer)
    channel.makeConnection(transport)
    sent = 0
    for piece in pieces:
        if transport.disconnecting:
            break
        channel.dataReceived(piece)
        sent += len(piece)
        targets._pump(None, transport)  # type: ignore[arg-type]
    if wait and not transport.disconnecting:
        site.reactor.advance(site.limits.request_timeout + 1)  # type: ignore[attr-defined]
    result = Exchange(transport.value(), bool(transport.disconnecting), sent)
    channel.connectionLost(Failure(ConnectionError("client closed")))
    return result


def check_request(body: bytes, path: bytes = CHECK_PATH, extra: bytes = b"") -> bytes:
    return (
        b"POST "
        + path
        + b" HTTP/1.1\r\nHost: ucupdates.test\r\nContent-Type: text/xml\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def get_request(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: ucupdates.test\r\n" + extra + b"\r\n"


# -- XML entity tricks and invalid UTF-8 in a check --------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(b'<!ENTITY %c "%s">' % (98 + i, b"&%c;" % (97 + i) * 10) for i in range(9))
    + b"]><Request><Vendor>&j;</Vendor><Model>CX600</Model></Request>"
)
XML_CASES = {
    "billion-laughs": BILLION_LAUGHS,
    "external-entity": b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<Request><Vendor>&x;</Vendor><Model>CX600</Model></Request>",
    "external-dtd": b'<?xml version="1.0"?><!DOCTYPE Request SYSTEM "http://192.0.2.1/x.dtd">'
    b"<Request><Vendor>Polycom</Vendor><Model>CX600</Model></Request>",
    "parameter-entity": b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd">'
    b"%p;]><Request/>",
    "invalid-utf8-text": sample_check().replace(b"Polycom", b"Poly\xff\xfecom"),
    "invalid-utf8-overlong-slash": sample_check().replace(b"CX600", b"CX\xc0\xaf600"),
    "utf16-surrogate-as-utf8": sample_check().replace(b"CX600", b"CX\xed\xa0\x80600"),
    "declared-ebcdic": sample_check().replace(b'encoding="utf-8"', b'encoding="cp500"'),
    "unknown-encoding": sample_check().replace(b'encoding="utf-8"', b'encoding="x-none"'),
    "nul-byte": sample_check().replace(b"CX600", b"CX\x00600"),
}


@pytest.mark.parametrize("case", sorted(XML_CASES))
def test_hostile_xml_in_a_check_is_a_400_and_changes_nothing(phones: Phones, case: str) -> None:
    before = phones.state()
    answer = exchange(phones.internal, check_request(XML_CASES[case]))
    assert answer.status == 400, answer.response[:200]
    assert b"root:" not in answer.response  # /etc/passwd was not read into the answer
    phones.unchanged(before)


# -- bodies: 1 GB declared, endless chunked ------------------------------------------------------


def test_a_1_gib_body_declared_is_refused_413_before_a_byte_of_it(phones: Phones) -> None:
    before = phones.state()
    head = check_request(b"").replace(b"Content-Length: 0", b"Content-Length: %d" % GiB)
    answer = exchange(phones.internal, head, b"x" * 65536)
    assert answer.status == 413 and answer.closed
    assert answer.sent == len(head)  # the answer came with the headers: no body was read
    phones.unchanged(before)


def test_a_1_gib_chunked_body_is_cut_off_at_the_limit(phones: Phones) -> None:
    before = phones.state()
    head = check_request(b"").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    chunk = b"10000\r\n" + b"<" * 0x10000 + b"\r\n"
    started = time.monotonic()
    answer = exchange(phones.internal, head, *([chunk] * (GiB // 0x10000)))
    assert answer.status == 413 and answer.closed
    limit = phones.config.service.max_check_bytes
    assert answer.sent <= len(head) + limit + 2 * len(chunk)  # cut at the limit, not at 1 GiB
    assert time.monotonic() - started < 5
    phones.unchanged(before)


def test_a_1_gib_log_upload_declared_is_refused_413_from_its_headers(phones: Phones) -> None:
    before = phones.state()
    head = (
        b"PUT /RequestHandler/Files?filename=x.clg HTTP/1.1\r\nHost: ucupdates.test\r\n"
        b"Content-Length: %d\r\n\r\n" % GiB
    )
    answer = exchange(phones.internal, head)
    assert answer.status == 413 and answer.closed
    phones.unchanged(before)


# -- header floods --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        b"".join(b"X-Flood-%d: x\r\n" % i for i in range(10_000)),  # many small headers
        b"X-Huge: " + b"a" * (1024 * 1024) + b"\r\n",  # one header of 1 MiB
        b"Cookie: " + b"a=b; " * 20_000 + b"\r\n",  # one long line of many values
    ],
    ids=["10000-headers", "1-mib-header", "long-cookie"],
)
def test_header_floods_are_refused_and_closed(phones: Phones, headers: bytes) -> None:
    before = phones.state()
    request = check_request(sample_check(), extra=headers)
    pieces = [request[i : i + 4096] for i in range(0, len(request), 4096)]
    answer = exchange(phones.internal, *pieces)
    assert answer.status in (400, 431), answer.response[:100]
    assert answer.closed
    assert answer.sent < len(request)  # closed before the flood was all read
    phones.unchanged(before)


# -- request smuggling shapes ---------------------------------------------------------------------

SMUGGLED_MAC = "00-04-F2-5A-5A-5A"  # the MAC of the check hidden in the body: never answered


def smuggled() -> bytes:
    return check_request(sample_check(mac=SMUGGLED_MAC))


SMUGGLING = {
    "cl-and-te": check_request(b"0\r\n\r\n" + smuggled(), extra=b"Transfer-Encoding: chunked\r\n"),
    "te-and-cl": (
        b"POST /RequestHandler/ucdevice.upx HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 4\r\n\r\n5c\r\n" + smuggled()[:0x5C] + b"\r\n0\r\n\r\n"
    ),
    "duplicate-cl": check_request(b"", extra=b"Content-Length: %d\r\n" % len(smuggled()))
    + smuggled(),
    "te-obfuscated": check_request(
        b"0\r\n\r\n" + smuggled(), extra=b"Transfer-Encoding: xchunked\r\n"
    ),
    "te-list": check_request(
        b"0\r\n\r\n" + smuggled(), extra=b"Transfer-Encoding: gzip, chunked\r\n"
    ),
    "chunk-size-negative": (
        b"POST /RequestHandler/ucdevice.upx HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n-1\r\n" + smuggled()
    ),
    "chunk-size-0x": (
        b"POST /RequestHandler/ucdevice.upx HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" + smuggled()
    ),
    "chunk-size-huge": (
        b"POST /RequestHandler/ucdevice.upx HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
        b"\r\n\r\nffffffffffffffffffffffff\r\n" + smuggled()
    ),
    "chunk-size-space": (
        b"POST /RequestHandler/ucdevice.upx HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n 5\r\nhello\r\n0\r\n\r\n" + smuggled()
    ),
    "cl-plus-sign": check_request(b"", extra=b"").replace(
        b"Content-Length: 0", b"Content-Length: +0"
    )
    + smuggled(),
    "bare-lf-te": check_request(
        b"0\r\n\r\n" + smuggled(), extra=b"Transfer-Encoding:\nchunked\r\n"
    ),
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_smuggling_shapes_get_400_and_the_hidden_request_is_never_answered(
    phones: Phones, case: str
) -> None:
    before = phones.state()
    answer = exchange(phones.internal, SMUGGLING[case], wait=True)
    statuses = [
        int(line.split(b" ")[1])
        for line in answer.response.split(b"\r\n")
        if line.startswith(b"HTTP/1.")
    ]
    assert statuses and statuses[0] in (400, 408, 411, 413, 501), answer.response[:200]
    assert len(statuses) == 1 and answer.closed
    assert SMUGGLED_MAC not in {d.mac for d in phones.store.devices()}
    phones.unchanged(before)


# -- traversal in URLs ----------------------------------------------------------------------------

TRAVERSALS = [
    b"/DeviceUpdateFiles_Int/../../etc/passwd",
    b"/DeviceUpdateFiles_Int/../ucupdates.sqlite3",
    b"/DeviceUpdateFiles_Int/%2e%2e/%2e%2e/etc/passwd",
    b"/DeviceUpdateFiles_Int/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    b"/DeviceUpdateFiles_Int/%252e%252e/%252e%252e/etc/passwd",  # double-encoded
    b"/DeviceUpdateFiles_Int/..%5c..%5cetc%5cpasswd",  # encoded backslashes
    b"/DeviceUpdateFiles_Int/..\\..\\etc\\passwd",  # raw backslashes
    b"/DeviceUpdateFiles_Int/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",  # overlong UTF-8 dots
    b"/DeviceUpdateFiles_Int/UCPhone/%2e%2e/%2e%2e/%2e%2e/tls/server.key",
    b"/DeviceUpdateFiles_Int//etc/passwd",
    b"/DeviceUpdateFiles_Int/UCPhone/Polycom/CX600/A/ENU/4.0.7577.4400/CPE/CPE.nbt%00.txt",
    b"/DeviceUpdateFiles_Int/\xff\xfe/..",  # raw bytes that are not UTF-8
    b"//etc/passwd",
    b"/DeviceUpdateFiles_Int/UCPhone/Polycom/CX600/A/ENU/4.0.7577.4400/CPE/./../../../../../../..",
]


@pytest.mark.parametrize("path", TRAVERSALS, ids=lambda p: p.decode("latin-1")[:60])
def test_traversal_in_urls_is_not_found(phones: Phones, path: bytes) -> None:
    before = phones.state()
    answer = exchange(phones.internal, get_request(path))
    assert answer.status in (400, 404), answer.response[:200]
    assert b"root:" not in answer.response and b"SQLite" not in answer.response
    assert b"PRIVATE KEY" not in answer.response
    phones.unchanged(before)


@pytest.mark.parametrize(
    "query",
    [
        b"filename=../../../etc/cron.d/x.log",
        b"filename=..%5c..%5cx.log",
        b"mac=../../../x&filename=a.log",
    ],
)
def test_traversal_in_a_log_upload_stays_in_the_log_folder(phones: Phones, query: bytes) -> None:
    request = (
        b"PUT /RequestHandler/Files?" + query + b" HTTP/1.1\r\nHost: ucupdates.test\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    answer = exchange(phones.internal, request)
    assert answer.status in (201, 400, 415)
    logs = phones.config.logs_dir.resolve()
    data = phones.config.data_dir.resolve()
    for path in data.parent.rglob("*"):
        if path.is_file() and path.read_bytes() == b"hello":
            assert path.resolve().is_relative_to(logs), path


# -- bad MAC and serial ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mac",
    [
        "00-04-F2-00-00",
        "ZZ-04-F2-00-00-01",
        "00-04-F2-00-00-01-02",
        "'; DROP TABLE devices; --",
        "x" * 300,
    ],
)
def test_a_bad_mac_is_left_out_and_the_check_still_answered(phones: Phones, mac: str) -> None:
    body = sample_check().replace(b"00-04-F2-00-00-01", mac.encode())
    answer = exchange(phones.internal, check_request(body))
    if len(mac) > 256:
        assert answer.status == 400  # a field over 256 characters
        return
    assert answer.status == 200, answer.response[:200]
    assert all(d.mac != mac for d in phones.store.devices())
    assert all(d.mac is None or len(d.mac) == 17 for d in phones.store.devices())


@pytest.mark.parametrize("serial", ["\u202eevil", "a" * 257, "64167F0001\t", "<x>"])
def test_a_bad_serial_is_left_out_or_refused(phones: Phones, serial: str) -> None:
    body = sample_check().replace(b"64167F0001", serial.encode().replace(b"<", b"&lt;"))
    answer = exchange(phones.internal, check_request(body))
    assert answer.status in (200, 400)
    assert all(d.serial != serial for d in phones.store.devices())


def test_invalid_utf8_in_basic_credentials_is_a_401(phones: Phones) -> None:
    before = phones.state()
    token = base64.b64encode(b"phone1\xff:right password 1\xfe")
    request = check_request(
        sample_check(),
        b"/RequestHandlerExt/ucdevice.upx",
        b"Authorization: Basic " + token + b"\r\n",
    )
    answer = exchange(phones.external, request, peer=OUTSIDE)
    assert answer.status == 401
    phones.unchanged(before)


# -- packages: a decompression bomb, 100,000 entries, traversal in member names ----------------

MTIME = datetime(2013, 4, 2, tzinfo=UTC)
UPDATE_XML = (
    b'<Updates><Updates><Update version="4.0.7577.4401" deviceType="UCPhone" brand="HP" '
    b'model="4110" revision="A" locale="ENU" updateType="CPE"/></Updates></Updates>'
)


def package(path: Path, files: dict[str, Any]) -> Path:
    """A cabinet of our writer; a value is bytes, or (size, chunk) repeated to that size."""
    entries = []
    for name, value in files.items():
        if isinstance(value, bytes):
            entries.append(CabEntry(name, len(value), partial(iter, [value]), MTIME))
        else:
            size, chunk = value
            entries.append(
                CabEntry(name, size, partial(iter, [chunk] * (size // len(chunk))), MTIME)
            )
    write_cab(path, entries)
    return path


@pytest.fixture
def catalogue(tmp_path: Path, approved_data: Path) -> Iterator[tuple[Config, Store]]:
    shutil.copytree(approved_data, tmp_path / "data")
    config = load_config(None, tmp_path / "data")
    store = Store.open(config.db_path)
    yield config, store
    store.close()


def test_a_decompression_bomb_is_refused_before_it_is_expanded(
    catalogue: tuple[Config, Store], tmp_path: Path
) -> None:
    config, store = catalogue
    zeros = 256 * 1024**2  # 256 MiB of zeros in about 0.25 MiB of MSZIP
    bomb = package(
        tmp_path / "bomb.cab",
        {
            "updateInfo.xml": UPDATE_XML,
            "UCPhone/HP/4110/A/ENU/CPE/CPE.nbt": (zeros, bytes(1 << 20)),
        },
    )
    assert bomb.stat().st_size < 4 * 1024**2
    before = catalogue_state(config)
    started = time.monotonic()
    with pytest.raises(PackageError, match="ratio"):
        import_package(store, config, bomb, "test")
    assert time.monotonic() - started < 2  # refused from the tables, nothing decompressed
    assert catalogue_state(config) == before


def test_a_cabinet_of_65535_entries_is_refused_from_its_header(
    catalogue: tuple[Config, Store], tmp_path: Path
) -> None:
    # 100,000 entries cannot be declared: CFHEADER's file count is 16 bits. The format's
    # most, 65,535, against the default limit of 10,000.
    config, store = catalogue
    files: dict[str, Any] = {"updateInfo.xml": UPDATE_XML}
    files.update({f"f/{i}": b"" for i in range(65_534)})
    many = package(tmp_path / "many.cab", files)
    before = catalogue_state(config)
    started = time.monotonic()
    with pytest.raises(PackageError, match="too many entries: 65535"):
        import_package(store, config, many, "test")
    assert time.monotonic() - started < 2
    assert catalogue_state(config) == before


def test_an_update_info_of_100000_updates_is_refused(
    catalogue: tuple[Config, Store], tmp_path: Path
) -> None:
    config, store = catalogue
    update = (
        b'<Update version="4.0.7577.%d" deviceType="UCPhone" brand="HP" model="4110" '
        b'revision="A" locale="ENU" updateType="CPE"/>'
    )
    xml = (
        b"<Updates><Updates>"
        + b"".join(update % i for i in range(100_000))
        + b"</Updates></Updates>"
    )
    path = package(tmp_path / "updates.cab", {"updateInfo.xml": xml})
    before = catalogue_state(config)
    started = time.monotonic()
    with pytest.raises(PackageError, match="at most"):  # over import.max_xml_bytes
        import_package(store, config, path, "test")
    assert time.monotonic() - started < 10
    assert catalogue_state(config) == before


def test_a_check_of_100000_elements_is_refused(phones: Phones) -> None:
    before = phones.state()
    body = sample_check().replace(b"<Modules>", b"<Modules>" + b"<a/>" * 100_000)
    answer = exchange(phones.internal, check_request(body))
    assert answer.status == 413 and answer.closed  # over service.max_check_bytes
    phones.unchanged(before)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("..\\..\\etc\\evil", "'..'"),
        ("UCPhone\\..\\..\\x", "'..'"),
        ("/etc/evil", "absolute"),
        ("C:\\evil", ":"),
        ("a\\.\\b", "'.'"),
        ("evil\u202etxt.exe", "non-printable"),
    ],
)
def test_traversal_in_package_members_is_refused_and_changes_nothing(
    catalogue: tuple[Config, Store], tmp_path: Path, name: str, problem: str
) -> None:
    config, store = catalogue
    path = tmp_path / "evil.cab"
    raw = {"updateInfo.xml": UPDATE_XML, "UCPhone/HP/4110/A/ENU/CPE/CPE.nbt": b"image"}
    placeholder = "placeholder-näme-x"  # not ASCII: the writer flags the name as UTF-8
    package(path, {**raw, placeholder: b"x"})
    # our writer refuses hostile names: put one in the placeholder's place, padded to
    # its length so that the cabinet's offsets stay right
    spelled = placeholder.encode()
    hostile = name.encode().ljust(len(spelled), b"x")
    assert len(hostile) == len(spelled)
    data = path.read_bytes().replace(spelled, hostile)
    path.write_bytes(data)
    before = catalogue_state(config)
    with pytest.raises(PackageError, match=problem):
        import_package(store, config, path, "test")
    assert catalogue_state(config) == before
    assert not (tmp_path / "etc").exists()


# -- DNS: compression loops and pointers ------------------------------------------------------


def dns_query(qname: bytes) -> bytes:
    return bytes.fromhex("abcd01000001000000000000") + qname + b"\x00\x01\x00\x01"


@pytest.mark.parametrize(
    "qname",
    [
        b"\xc0\x0c",  # points at itself
        b"\x01a\xc0\x0e",  # a label, then back to the label before it: a loop of two
        b"\xc0\x10\x00\x00\xc0\x0c",  # forward to a pointer that points back
        b"\xc0\xff",  # past the end of the packet
        b"\x3fx" + b"\xc0\x0c",  # a label length running over the pointer
        b"\x01a" * 127 + b"\xc0\x0c",  # 127 labels, then a loop
    ],
    ids=["self", "two-step-loop", "forward-back", "past-end", "label-over-pointer", "deep-loop"],
)
def test_dns_compression_loops_are_dropped_or_formerr(qname: bytes) -> None:
    query = dns_query(qname)
    table = targets._dns_table()
    started = time.monotonic()
    for internal in (True, False):
        for tcp in (False, True):
            outcome = respond(query, internal, tcp, table)
            assert outcome.action in (Action.DROP, Action.REPLY), outcome
            if outcome.action is Action.REPLY:
                assert outcome.kind == "formerr" and len(outcome.reply) <= len(query) + 11
    assert time.monotonic() - started < 1
    assert targets._dns_table() == table  # the answer table is what it was


def test_a_query_of_a_name_over_255_bytes_is_formerr() -> None:
    labels = b"".join(b"\x3f" + b"a" * 63 for _ in range(5))  # 320 bytes of name
    outcome = respond(dns_query(labels + b"\x00"), True, False, targets._dns_table())
    assert outcome.action is Action.DROP or outcome.kind == "formerr"


def test_dnslib_still_refuses_the_loops_we_drop() -> None:
    with pytest.raises(Exception):  # noqa: B017 - dnslib raises DNSError or RecursionError
        DNSRecord.parse(dns_query(b"\xc0\x0c"))


# -- DHCP: oversized options ----------------------------------------------------------------


def inform(
    extra: bytes, vendor: bytes = b"MS-UC-Client", params: bytes = bytes((43, 120))
) -> bytes:
    return targets._dhcp_packet(vendor, params, extra=extra)[:-1] + extra[:0] + b"\xff"


OVERSIZED = {
    # RFC 3396: a code given again is one long option (here 10 x 255 bytes of client id)
    "client-id-2550-bytes": bytes((61, 255)) + bytes(255) * 1 + (bytes((61, 255)) + bytes(255)) * 9,
    "relay-info-2550-bytes": (bytes((82, 255)) + bytes(255)) * 10,
    "parameter-list-255": bytes((55, 255)) + bytes(range(255)),
    "max-message-65535": bytes((57, 2, 0xFF, 0xFF)),
    "max-message-1-byte": bytes((57, 1, 0xFF)),
    "vendor-class-2550": (bytes((60, 255)) + b"M" * 255) * 10,
    "message-type-2-bytes": bytes((53, 2, 8, 8)),
}


@pytest.mark.parametrize("case", sorted(OVERSIZED))
def test_oversized_dhcp_options_get_a_reply_that_fits_or_none(case: str) -> None:
    packet = targets._dhcp_packet(b"MS-UC-Client", bytes((43, 120)), extra=OVERSIZED[case])
    for sender in (None, targets.RELAY):
        decision = decide(
            packet, targets._dhcp_answers(), "192.0.2.10", sender=sender, **targets._relays()
        )
        if decision.reply is not None:
            assert len(decision.reply) <= 576 - 28 or case == "max-message-65535"
            assert len(decision.reply) <= 1500 - 28
            parse_packet(decision.reply)  # well-formed
        else:
            assert decision.outcome is not DhcpOutcome.ANSWERED


def test_an_option_running_past_the_datagram_is_malformed() -> None:
    packet = targets._dhcp_packet(b"MS-UC-Client", bytes((43, 120)))[:-1] + bytes((61, 200)) + b"x"
    with pytest.raises(MalformedPacket, match="runs past the end"):
        parse_packet(packet)
    decision = decide(packet, targets._dhcp_answers(), "192.0.2.10")
    assert decision.outcome is DhcpOutcome.MALFORMED and decision.reply is None
