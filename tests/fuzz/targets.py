"""Fuzz targets: one function per surface an attacker feeds, bytes in, with its invariant.

A target returns normally when the code under test answered as it should: a result, or
the module's own error (CabError, PackageError, CheckError, MalformedPacket, NtlmError).
Anything else escapes, and that is a crash. The hypothesis tests (tests/test_fuzz_*.py)
and the atheris driver (tests/fuzz/run.py) call the same targets on the same seed
corpora, built here in code (no binary fixtures).

- cab: cab.open_package, Cabinet.extract; a refused extract leaves no file behind.
- importer: catalogue.import_package; a refused package leaves the store, the image
  folder and the staging folder as they were (testing.catalogue_state).
- check: phones.codec.parse_check; only CheckError(400).
- dns: discovery.dns_answer.respond (and relay); replies carry the query's ID and QR, fit
  the UDP limit, and a refusal is never much larger than its query.
- dhcp: dhcp_codec parse/pack and dhcp_answer.decide; a parsed packet packs back to
  itself; a reply parses, fits 1472 bytes and never goes to a multicast or 0.x address.
- ntlm: phones.ntlm_codec and phones.ntlm; only NtlmError; any response read is checkable.
- http, http_ext: web.GuardedSite around the phone resource (internal, external), one
  connection per input: a response or a close, never a logged failure, the connection
  ended after the guard's timeouts and its slot given back.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

HTTP_TIMEOUT_SLACK = 1.0  # seconds past the guard's own timeouts before a connection must end


@dataclass(frozen=True)
class Target:
    name: str
    seeds: Callable[[], list[bytes]]
    run: Callable[[bytes], object]
    max_size: int  # inputs longer than this are cut (keeps each run fast)


def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ucupdates-fuzz-"))
    atexit.register(shutil.rmtree, path, True)
    return path


# -- cab: the cabinet reader ---------------------------------------------------------------

MTIME = datetime(2013, 4, 2, tzinfo=UTC)


def _cab_bytes(files: dict[str, bytes], compression: str = "mszip") -> bytes:
    from appliance.cab import CabEntry, write_cab

    out = _workdir() / "seed.cab"
    entries = [CabEntry(n, len(d), functools.partial(iter, [d]), MTIME) for n, d in files.items()]
    write_cab(out, entries, compression=compression)
    return out.read_bytes()


@functools.cache
def _sample_bytes(version: str = "4.0.7577.4400") -> bytes:
    from appliance.catalogue import make_sample_package

    out = _workdir() / "UCUpdates.cab"
    make_sample_package(out, version=version, image_size=2048)
    return out.read_bytes()


GOOD_XML = (
    b'<Updates><Updates><Update version="4.0.7577.4401" deviceType="UCPhone" brand="HP" '
    b'model="4110" revision="A" locale="ENU" updateType="CPE"/></Updates></Updates>'
)


@functools.cache
def cab_seeds() -> list[bytes]:
    one = {"updateInfo.xml": GOOD_XML, "UCPhone/HP/4110/A/ENU/CPE/CPE.nbt": b"image " * 300}
    return [
        _sample_bytes(),
        _cab_bytes(one),
        _cab_bytes(one, compression="none"),
        _cab_bytes({"a/b.bin": bytes(5000), "c.txt": b"text"}),
    ]


_LIMITS: Any = None


def cab(data: bytes) -> None:
    from appliance.cab import CabError, CabLimits, open_package

    global _LIMITS
    if _LIMITS is None:
        _LIMITS = CabLimits(max_entries=1000, max_total_bytes=64 * 1024**2)
    work = Path(tempfile.mkdtemp(prefix="ucupdates-fuzz-cab-"))
    try:
        path = work / "in.cab"
        path.write_bytes(data)
        try:
            cabinet = open_package(path, _LIMITS)
        except CabError:
            return
        out = work / "out"
        try:
            done = cabinet.extract([m.name for m in cabinet.members], out)
        except CabError:
            left = [p for p in out.rglob("*")] if out.exists() else []
            assert not left, f"a refused extract left {left}"
            return
        for member in cabinet.members:
            assert done[member.name].size == member.size
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- importer: the whole import, refused packages change nothing -----------------------------


@dataclass
class _Catalogue:
    config: Any
    store: Any
    package: Path


@functools.cache
def _catalogue() -> _Catalogue:
    from appliance.catalogue import import_package
    from appliance.config import load_config
    from appliance.store import Store

    work = _workdir()
    config = load_config(None, work / "data")
    config.data_dir.mkdir(parents=True)
    store = Store.open(config.db_path)
    first = work / "first.cab"
    first.write_bytes(_sample_bytes("4.0.7577.4387"))
    import_package(store, config, first, "fuzz")  # a catalogue to leave unchanged
    return _Catalogue(config, store, work / "package.cab")


def importer_seeds() -> list[bytes]:
    return [_sample_bytes(), _sample_bytes("4.0.7577.4387"), *cab_seeds()[1:3]]


def importer(data: bytes) -> None:
    from appliance.catalogue import PackageError, import_package
    from appliance.testing import catalogue_state

    cat = _catalogue()
    cat.package.write_bytes(data)
    before = catalogue_state(cat.config)
    try:
        import_package(cat.store, cat.config, cat.package, "fuzz")
    except PackageError as e:
        assert str(e).startswith(cat.package.name), e
        assert catalogue_state(cat.config) == before, f"refused ({e}), yet the catalogue changed"


# -- check: the update-check parser -----------------------------------------------------------


def check_seeds() -> list[bytes]:
    from appliance.catalogue import sample_check

    return [
        sample_check(),
        sample_check("4.0.7577.4400", "00:04:f2:aa:bb:cc"),
        b'<?xml version="1.0"?><ns:Request xmlns:ns="urn:x"><ns:Brand>HP</ns:Brand>'
        b"<ns:Model>4120</ns:Model><MAC>0004f2aabbcc</MAC><Serial>abc</Serial></ns:Request>",
        b"<r><vendor>Aastra</vendor><model>6725ip</model><modules>"
        + b"<module><name>CPE.nbt</name><version>1.2</version></module>" * 3
        + b"</modules></r>",
    ]


def check(data: bytes) -> None:
    from appliance.model import Zone
    from appliance.phones.codec import CheckError, parse_check

    for zone in (Zone.INTERNAL, Zone.EXTERNAL):
        try:
            request = parse_check(data, zone, "192.0.2.1")
        except CheckError as e:
            assert e.status == 400, e.status
            continue
        assert request.brand and request.model


# -- dns: the answer function over raw query bytes --------------------------------------------


@functools.cache
def _dns_table() -> Any:
    from appliance.discovery.dns_answer import Addresses, AnswerTable

    return AnswerTable.build(
        ("contoso.com", "example.com"),
        Addresses("10.0.0.5", "2001:db8::5"),
        Addresses("198.51.100.5"),
        forwarding=True,
    )


def dns_seeds() -> list[bytes]:
    from dnslib import EDNS0, DNSRecord

    seeds = []
    for name, qtype, edns in [
        ("ucupdates-r2.contoso.com", "A", None),
        ("ucupdates.example.com", "AAAA", 1232),
        ("UcUpdates-R2.contoso.com", "ANY", 4096),
        ("ucupdates-r2.contoso.com", "SOA", None),
        ("ucupdates-r2.contoso.com", "NS", 512),
        ("x.ucupdates-r2.contoso.com", "A", None),
        ("www.example.org", "MX", 1232),
    ]:
        q = DNSRecord.question(name, qtype)
        if edns:
            q.add_ar(EDNS0(udp_len=edns, flags="do"))
        seeds.append(bytes(q.pack()))
    # a compression pointer to itself in the question name
    seeds.append(seeds[0][:12] + b"\xc0\x0c\x00\x01\x00\x01")
    return seeds


def dns(data: bytes) -> None:
    from appliance.discovery.dns_answer import (
        OUR_UDP_SIZE,
        QR,
        Action,
        relay,
        respond,
    )

    table = _dns_table()
    for internal in (True, False):
        for tcp in (False, True):
            outcome = respond(data, internal, tcp, table)
            if outcome.action is Action.DROP:
                assert outcome.reply == b""
                continue
            reply = outcome.reply
            assert reply[:2] == data[:2], "the reply carries another ID"
            assert struct.unpack_from("!H", reply, 2)[0] & QR, "the reply is not a response"
            if not tcp:
                assert len(reply) <= max(outcome.limit, OUR_UDP_SIZE), len(reply)
            if outcome.kind not in ("answer", "nodata", "nxdomain"):
                assert len(reply) <= len(data) + 100, "a refusal larger than its query"
            if outcome.action is Action.FORWARD:
                # an upstream's answer, any bytes: relayed with the ID patched, cut to size
                relayed = relay(data[::-1], data, outcome, tcp)
                assert tcp or len(relayed) <= max(outcome.limit, len(data))


# -- dhcp: the codec and the DHCPINFORM decision ------------------------------------------------


@functools.cache
def _dhcp_answers() -> Any:
    from appliance.discovery.dhcp_answer import InformAnswers
    from appliance.discovery.dhcp_options import option43, option120, vlan_option43

    sip = "sip.contoso.com"
    return InformAnswers(option43(sip), option120([sip, "sip2.contoso.com"]), vlan_option43(100))


RELAY = "10.0.0.1"  # the relay agent the seeds name in giaddr, and the one configured


@functools.cache
def _relays() -> dict[str, Any]:
    """`relays=` for `decide` once it takes the configured relays."""
    import inspect

    from appliance.config import Network
    from appliance.discovery.dhcp_answer import decide

    if "relays" not in inspect.signature(decide).parameters:
        return {}
    return {"relays": (Network.parse(RELAY),)}


def _dhcp_packet(
    vendor: bytes,
    params: bytes,
    ciaddr: bytes = bytes(4),
    giaddr: bytes = bytes(4),
    extra: bytes = b"",
) -> bytes:
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, 0x12345678, 7, 0, ciaddr, bytes(4), bytes(4), giaddr,
        bytes.fromhex("0004f2aabbcc").ljust(16, b"\0"), bytes(64), bytes(128),
    )  # fmt: skip
    options = bytes((53, 1, 8, 60, len(vendor))) + vendor + bytes((55, len(params))) + params
    return header + b"\x63\x82\x53\x63" + options + extra + b"\xff"


def dhcp_seeds() -> list[bytes]:
    return [
        _dhcp_packet(b"MS-UC-Client", bytes((43, 120))),
        _dhcp_packet(b"CPE-OCPHONE", bytes((43,)), ciaddr=bytes((10, 0, 0, 7))),
        _dhcp_packet(
            b"MS-UC-Client",
            bytes((120, 43, 1, 3)),
            giaddr=bytes((10, 0, 0, 1)),
            extra=bytes((57, 2, 5, 220, 61, 7, 1)) + bytes(6) + bytes((82, 4, 1, 2, 3, 4)),
        ),
        _dhcp_packet(b"MS-UC-Client", bytes((43,)), extra=bytes((43, 255)) + bytes(255) * 1),
    ]


def dhcp(data: bytes) -> None:
    from appliance.discovery.dhcp_answer import Outcome, decide
    from appliance.discovery.dhcp_codec import MalformedPacket, parse_packet

    try:
        packet = parse_packet(data)
    except MalformedPacket:
        packet = None
    if packet is not None:
        assert parse_packet(packet.pack()) == packet, "a packet that does not round-trip"
    for sender in (None, "10.0.0.7", RELAY):
        decision = decide(data, _dhcp_answers(), "192.0.2.10", sender=sender, **_relays())
        if decision.outcome is not Outcome.ANSWERED:
            assert decision.reply is None
            continue
        assert packet is not None and decision.reply is not None
        assert decision.destination is not None
        reply = parse_packet(decision.reply)
        assert reply.xid == packet.xid and reply.message_type == 5
        assert len(decision.reply) <= 1500 - 28
        host = IPv4Address(decision.destination[0])
        assert not (host.is_multicast or host.packed[0] == 0), host


# -- ntlm: the codec and the response check ------------------------------------------------------


@functools.cache
def ntlm_seeds() -> list[bytes]:
    import spnego

    from appliance.phones.ntlm import challenge_message

    seeds = []
    for login in ("CONTOSO\\dave", "alice"):
        client = spnego.client(login, "pw", protocol="ntlm")
        negotiate = client.step() or b""
        challenge = challenge_message(negotiate, bytes(8), "D", "C", now=0.0)
        seeds += [negotiate, challenge, client.step(challenge) or b""]
    return seeds


def ntlm(data: bytes) -> None:
    from appliance.phones.ntlm import challenge_message, check_response, read_authenticate
    from appliance.phones.ntlm_codec import NtlmError, read_negotiate
    from appliance.phones.ntlm_codec import read_authenticate as read_message

    for parse in (
        read_negotiate,
        read_message,
        lambda t: challenge_message(t, bytes(8), "D", "C", now=0.0),
    ):
        with contextlib.suppress(NtlmError):
            parse(data)
    try:
        response = read_authenticate(data, bytes(8))
    except NtlmError:
        return
    assert check_response(response, bytes(16)) in (True, False)


# -- http: the admission guard and the phone resource, one connection per input ----------------


@dataclass
class _Phones:
    internal: Any
    external: Any
    reactor: Any
    failures: list[dict[str, Any]]


@functools.cache
def _phones() -> _Phones:
    from twisted.internet.testing import MemoryReactorClock
    from twisted.logger import globalLogPublisher

    from appliance.catalogue import add_user
    from appliance.config import load_config
    from appliance.phones import Authenticator, LocalDirectory, PhoneService
    from appliance.testing import NOW, FixedClock, SecondsClock, approved_sample, inline, phone_site

    work = _workdir()
    config = load_config(None, work / "data")
    store = approved_sample(config, FixedClock(NOW), version="4.0.7577.4400", image_size=4096)
    add_user(store, "phone1", "right password 1", "fuzz")
    local = LocalDirectory(lambda: store)
    authenticator = Authenticator(
        local, config.auth, SecondsClock(), run_blocking=inline, ntlm=local
    )
    service = PhoneService(config, store, authenticator, lambda: NOW)
    reactor = MemoryReactorClock()
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    return _Phones(
        phone_site(service, reactor), phone_site(service, reactor, external=True), reactor, failures
    )


IMAGE = b"/DeviceUpdateFiles_Int/UCPhone/Polycom/CX600/A/ENU/4.0.7577.4400/CPE/CPE.nbt"


def http_seeds() -> list[bytes]:
    import base64

    from appliance.catalogue import sample_check

    body = sample_check()
    check = (
        b"POST /RequestHandler/ucdevice.upx HTTP/1.1\r\nHost: ucupdates.test\r\n"
        b"Content-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    basic = base64.b64encode(b"phone1:right password 1")
    return [
        check,
        check.replace(b"RequestHandler/", b"RequestHandlerExt/").replace(
            b"Host:", b"Authorization: Basic " + basic + b"\r\nHost:"
        ),
        b"GET " + IMAGE + b" HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99,200-\r\n\r\n",
        b"GET " + IMAGE + b" HTTP/1.0\r\n\r\n",
        b"POST /RequestHandler/ucdevice.upx HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n5\r\n<Requ\r\n0\r\n\r\n",
        b"PUT /RequestHandler/Files?filename=x.clg&mac=00-04-F2-00-00-01 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 5\r\n\r\nhello",
        check + check,  # pipelined
    ]


def _pump(phones: _Phones, transport: Any) -> None:
    """Move a download's bytes (static.File's pull producer) and run due timers, bounded."""
    from twisted.internet import reactor as global_reactor

    for _ in range(64):
        global_reactor.runUntilCurrent()  # type: ignore[attr-defined]
        if transport.producer is None:
            break


@functools.cache
def _transport_class() -> Any:
    from twisted.internet.testing import StringTransport

    class Transport(StringTransport):
        """A memory transport as lenient as a socket's or TLS's: a producer may be
        unregistered when none is (HTTPChannel.loseConnection does so), and reading may
        be paused or resumed after loseConnection (the guard pauses a refused client)."""

        def unregisterProducer(self) -> None:
            if self.producer is not None:
                super().unregisterProducer()

        def pauseProducing(self) -> None:
            self.producerState = "paused"

        def resumeProducing(self) -> None:
            self.producerState = "producing"

    return Transport


def _http(data: bytes, external: bool) -> bytes:
    """What the server sent back on one connection that received `data`."""
    from twisted.internet.address import IPv4Address
    from twisted.python.failure import Failure

    phones = _phones()
    site = phones.external if external else phones.internal
    peer = IPv4Address("TCP", "203.0.113.7" if external else "10.0.0.7", 40000)
    open_before = site.open_connections
    phones.failures.clear()
    channel = site.buildProtocol(peer)
    transport = _transport_class()(peerAddress=peer)
    channel.makeConnection(transport)
    for at in range(0, len(data), 512):  # as a socket would deliver it
        if transport.disconnecting:
            break
        channel.dataReceived(data[at : at + 512])
        _pump(phones, transport)
    limits = site.limits
    phones.reactor.advance(limits.request_timeout + HTTP_TIMEOUT_SLACK)
    _pump(phones, transport)
    phones.reactor.advance(limits.idle_timeout + HTTP_TIMEOUT_SLACK)
    _pump(phones, transport)
    out = transport.value()
    assert not phones.failures, phones.failures[0]["log_failure"].getTraceback()
    assert out == b"" or out.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), out[:60]
    assert transport.disconnecting, "the connection outlived the guard's timeouts"
    channel.connectionLost(Failure(ConnectionError("closed")))
    assert site.open_connections == open_before, "a connection slot was not given back"
    return bytes(out)


def http(data: bytes) -> bytes:
    return _http(data, external=False)


def http_ext(data: bytes) -> bytes:
    return _http(data, external=True)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("cab", cab_seeds, cab, 64 * 1024),
        Target("importer", importer_seeds, importer, 64 * 1024),
        Target("check", check_seeds, check, 16 * 1024),
        Target("dns", dns_seeds, dns, 4096),
        Target("dhcp", dhcp_seeds, dhcp, 2048),
        Target("ntlm", ntlm_seeds, ntlm, 4096),
        Target("http", http_seeds, http, 16 * 1024),
        Target("http_ext", http_seeds, http_ext, 16 * 1024),
    )
}


def mutations(seed: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """`seed` with each edit (kind, where, value) applied: a byte set, a bit flipped, a run
    cut out, a run repeated, a cut-off end, a 16-bit or 32-bit field overwritten."""
    data = bytearray(seed)
    for kind, where, value in edits:
        if not data:
            data = bytearray(bytes((value & 0xFF,)))
            continue
        at = where % len(data)
        match kind % 7:
            case 0:
                data[at] = value & 0xFF
            case 1:
                data[at] ^= 1 << (value % 8)
            case 2:
                del data[at : at + 1 + value % 64]
            case 3:
                data[at:at] = data[at : at + 1 + value % 64] * (1 + value % 4)
            case 4:
                del data[at:]
            case 5:
                data[at : at + 2] = struct.pack("<H", value & 0xFFFF)
            case _:
                data[at : at + 4] = struct.pack("<I", value & 0xFFFFFFFF)
    return bytes(data)


def seeds_of(name: str) -> Iterator[bytes]:
    yield from TARGETS[name].seeds()
