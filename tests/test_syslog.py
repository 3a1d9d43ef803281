"""Events as RFC 5424 syslog messages: the format read back by a parser, each transport,
and a real rsyslogd on loopback receiving them over UDP and TCP from a Twisted process."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from appliance.catalogue.actions import add_test_device
from appliance.config import Config, SyslogSettings
from appliance.model import IdentifierKind
from appliance.ops.events import (
    emit_admin_event,
    events_after,
    forward_new_events,
    newest_event_id,
)
from appliance.ops.syslog import Rfc5424Observer, make_syslog_observer
from appliance.ops.syslog_format import SD_ID, SyslogError
from appliance.ops.syslog_tcp import TcpSender
from appliance.ops.syslog_transport import (
    UDP_MAX_BYTES,
    BlockingSender,
    LocalSender,
    Scheme,
    UdpSender,
    parse_target,
)
from appliance.store.database import Store
from appliance.testing import REPO, MemorySender, SecondsClock, free_port

T = datetime(2026, 11, 27, 8, 0, 0, 250000, tzinfo=UTC).timestamp()
HOST = "127.0.0.1"
WAIT_SECONDS = 10.0

# -- a small RFC 5424 parser ------------------------------------------------------------------

_SD_NAME = r'[^\s="\]]{1,32}'
_PARAM = rf'{_SD_NAME}="(?:[^"\\\]]|\\.)*"'
_ELEMENT = rf"\[{_SD_NAME}(?: {_PARAM})*\]"
RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>1 "
    r"(?P<timestamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)) "
    r"(?P<hostname>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) "
    rf"(?P<msgid>[!-~]{{1,32}}) (?P<sd>-|(?:{_ELEMENT})+)(?: (?P<msg>.*))?",
    re.DOTALL,
)


@dataclass
class Parsed:
    facility: int
    severity: int
    timestamp: datetime
    hostname: str
    app: str
    procid: str
    msgid: str
    sd_id: str | None
    params: dict[str, str]
    msg: str


def parse_sd(sd: str) -> tuple[str | None, dict[str, str]]:
    if sd == "-":
        return None, {}
    m = re.fullmatch(rf"\[({_SD_NAME})((?: {_PARAM})*)\]", sd)
    assert m, sd
    params = {
        name: re.sub(r"\\(.)", r"\1", value)
        for name, value in re.findall(r'([^\s="\]]+)="((?:[^"\\\]]|\\.)*)"', m.group(2))
    }
    return m.group(1), params


def parse(raw: bytes) -> Parsed:
    m = RFC5424.fullmatch(raw.decode("utf-8"))
    assert m, raw
    pri = int(m.group("pri"))
    sd_id, params = parse_sd(m.group("sd"))
    return Parsed(
        facility=pri // 8,
        severity=pri % 8,
        timestamp=datetime.fromisoformat(m.group("timestamp")),
        hostname=m.group("hostname"),
        app=m.group("app"),
        procid=m.group("procid"),
        msgid=m.group("msgid"),
        sd_id=sd_id,
        params=params,
        msg=m.group("msg") or "",
    )


# -- formatting ---------------------------------------------------------------------------------


@pytest.fixture
def sent() -> MemorySender:
    return MemorySender()


def observer_for(sender: Any, **settings: Any) -> Rfc5424Observer:
    return Rfc5424Observer(
        SyslogSettings(enabled=True, **settings), "appliance.example.com", "4242", sender
    )


def emit(sender: Any, level: LogLevel, fmt: str, **fields: Any) -> list[Parsed]:
    observer = observer_for(sender)
    Logger(namespace="ucupdates.test", observer=observer).emit(level, fmt, **fields)
    return [parse(m) for m in sender.messages]


def test_an_update_check_becomes_one_message_with_its_fields(sent: MemorySender) -> None:
    (m,) = emit(
        sent,
        LogLevel.info,
        "update check {client} {mac}: {reason} {version}",
        client="10.1.2.3",
        mac="00-04-F2-00-00-01",
        reason="pending-test-device",
        version="4.0.7577.4400",
        size=6000,
        ratio=1.5,
        external=False,
        user=None,
        modules=["a", "b"],
        event="update.check",
    )
    assert (m.facility, m.severity) == (16, 6)  # local0, informational: PRI 134
    assert (m.hostname, m.app, m.procid, m.msgid) == (
        "appliance.example.com",
        "ucupdates",
        "4242",
        "update.check",
    )
    assert m.sd_id == SD_ID == "ucupdates@32473"
    assert m.params == {
        "client": "10.1.2.3",
        "mac": "00-04-F2-00-00-01",
        "reason": "pending-test-device",
        "version": "4.0.7577.4400",
        "size": "6000",
        "ratio": "1.5",
        "external": "false",
    }  # None and the list are left out, and so are Twisted's log_* keys and `event`
    assert m.msg == ("update check 10.1.2.3 00-04-F2-00-00-01: pending-test-device 4.0.7577.4400")


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (LogLevel.debug, 7),
        (LogLevel.info, 6),
        (LogLevel.warn, 4),
        (LogLevel.error, 3),
        (LogLevel.critical, 2),
    ],
)
def test_pri_is_facility_times_8_plus_the_level_severity(level: LogLevel, severity: int) -> None:
    sender = MemorySender()
    observer = Rfc5424Observer(SyslogSettings(facility=4), "h", "1", sender)
    Logger(observer=observer).emit(level, "x", event="e")
    assert sender.messages[0].startswith(b"<%d>1 " % (4 * 8 + severity))


def test_values_are_escaped_and_names_cleaned_as_rfc5424_says(sent: MemorySender) -> None:
    tricky = 'say "hi" \\ path] end ü'
    (m,) = emit(
        sent,
        LogLevel.warn,
        "odd {value}",
        value=tricky,
        **{"with space": "1", "a=b": "2", 'q"]': "3", "x" * 40: "4"},
        event="auth.failure",
    )
    raw = sent.messages[0].decode()
    assert 'value="say \\"hi\\" \\\\ path\\] end ü"' in raw
    assert m.params["value"] == tricky  # read back unchanged
    assert m.params["withspace"] == "1" and m.params["ab"] == "2" and m.params["q"] == "3"
    assert m.params["x" * 32] == "4"  # SD-NAMEs are at most 32 characters
    assert all(re.fullmatch(_SD_NAME, name) for name in m.params)


def test_timestamp_is_rfc3339_utc_from_the_event_time(sent: MemorySender) -> None:
    observer = observer_for(sent)
    observer({"log_time": T, "log_level": LogLevel.info, "log_format": "x", "event": "e"})
    (m,) = [parse(x) for x in sent.messages]
    assert sent.messages[0].split(b" ")[1] == b"2026-11-27T08:00:00.250000Z"
    assert m.timestamp == datetime(2026, 11, 27, 8, 0, 0, 250000, tzinfo=UTC)
    assert m.timestamp.utcoffset() is not None


def test_an_event_without_a_time_takes_the_clock() -> None:
    sender = MemorySender()
    observer = Rfc5424Observer(SyslogSettings(), "h", "1", sender, clock=lambda: T)
    observer({"log_level": LogLevel.warn, "log_format": "no time"})
    assert parse(sender.messages[0]).timestamp.timestamp() == T


def test_msgid_is_the_event_name_or_a_dash_and_header_fields_are_ascii() -> None:
    sender = MemorySender()
    observer = Rfc5424Observer(
        SyslogSettings(app_name="uc updates/ü"), "host name\n", "", sender, clock=lambda: T
    )
    log = Logger(observer=observer)
    log.warn("no name")
    log.info("long name", event="x" * 40 + " y")
    first, second = (parse(m) for m in sender.messages)
    assert first.msgid == "-" and first.sd_id is None and first.msg == "no name"
    assert second.msgid == "x" * 32
    assert (first.hostname, first.app, first.procid) == ("hostname", "ucupdates/", "-")


def test_only_named_events_and_warnings_go_to_syslog(sent: MemorySender) -> None:
    log = Logger(observer=observer_for(sent))
    log.info("Starting factory {f}", f="twisted chatter")
    log.debug("debug chatter")
    log.info("listener up", event="listener.start")
    log.warn("a warning")
    log.error("an error")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.failure("crashed handling {what}", what="a check")
    got = [parse(m) for m in sent.messages]
    assert [(m.msgid, m.severity) for m in got] == [
        ("listener.start", 6),
        ("-", 4),
        ("-", 3),
        ("-", 2),
    ]
    assert got[-1].msg == "crashed handling a check (ZeroDivisionError: division by zero)"


def test_messages_are_cut_to_the_transport_size_and_stay_well_formed() -> None:
    sender = MemorySender(max_bytes=UDP_MAX_BYTES)
    log = Logger(observer=observer_for(sender))
    log.info("{text}", text="é" * 3000, event="big")  # each é is two bytes
    params = {f"p{i:02d}": "v" * 500 for i in range(10)}
    log.info("many fields", event="wide", **params)
    big, wide = sender.messages
    assert len(big) <= UDP_MAX_BYTES and len(wide) <= UDP_MAX_BYTES
    parsed_big, parsed_wide = parse(big), parse(wide)  # cut at a character boundary
    assert parsed_big.msg and set(parsed_big.msg) == {"é"}
    assert parsed_big.params["text"] == "é" * 512  # values are capped before that
    assert 0 < len(parsed_wide.params) < 10 and parsed_wide.msg == "many fields"
    assert list(parsed_wide.params) == sorted(params)[: len(parsed_wide.params)]


def test_bom_marks_the_message_as_utf8_when_asked() -> None:
    sender = MemorySender()
    observer = Rfc5424Observer(SyslogSettings(), "h", "1", sender, bom=True)
    Logger(observer=observer).info("héllo", event="e")
    assert sender.messages[0].endswith(b"- \xef\xbb\xbfh\xc3\xa9llo")


class Exploding:
    max_bytes = 2048
    dropped = 0

    def send(self, message: bytes) -> None:
        raise RuntimeError("transport bug")

    def close(self) -> None:
        raise RuntimeError("close bug")


class BadStr:
    def __str__(self) -> str:
        raise ValueError("no text")


def test_the_observer_never_raises_into_the_logging_system() -> None:
    broken = Rfc5424Observer(SyslogSettings(), "h", "1", Exploding())
    log = Logger(observer=broken)
    log.info("one", event="e")
    broken.close()
    assert broken.errors == 2 and broken.dropped == 2

    sender = MemorySender()
    observer = Rfc5424Observer(SyslogSettings(), "h", "1", sender)
    log = Logger(observer=observer)
    log.info("x", event=BadStr())  # cannot be formatted: dropped and counted
    log.info("{broken!x}", event="e")  # a bad format string: Twisted says so in the text
    observer({"log_level": object(), "event": "odd", "log_time": "soon"})
    assert observer.errors == 1 and observer.dropped == 1
    second, third = (parse(m) for m in sender.messages)
    assert second.msg.startswith("Unable to format event")
    assert (third.msgid, third.severity, third.msg) == ("odd", 6, "")


def test_the_structured_data_id_carries_the_configured_enterprise_number() -> None:
    sender = MemorySender()
    observer = observer_for(sender, enterprise_number=99999)
    Logger(namespace="ucupdates.test", observer=observer).info(
        "update check {mac}", mac="00-04-F2-00-00-01", event="update.check"
    )
    (m,) = [parse(raw) for raw in sender.messages]
    assert (m.sd_id, m.params) == ("ucupdates@99999", {"mac": "00-04-F2-00-00-01"})
    with pytest.raises(SyslogError, match="syslog.enterprise_number must be > 0"):
        observer_for(MemorySender(), enterprise_number=0)


def test_a_bad_facility_is_refused_in_one_line() -> None:
    with pytest.raises(SyslogError, match="syslog.facility must be 0-23"):
        Rfc5424Observer(SyslogSettings(facility=24), "h", "1", MemorySender())


def test_make_syslog_observer_is_none_when_disabled(config: Config) -> None:
    assert make_syslog_observer(config, None) is None
    enabled = dataclasses.replace(
        config, syslog=SyslogSettings(enabled=True, target="udp://127.0.0.1:9", hostname="h1")
    )
    observer = make_syslog_observer(enabled, None)
    assert observer is not None
    assert observer.header.hostname == "h1" and observer.header.procid == str(os.getpid())
    observer.close()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("udp://127.0.0.1:514", (Scheme.UDP, "127.0.0.1", 514)),
        ("tcp://logs.example.com:6514", (Scheme.TCP, "logs.example.com", 6514)),
        ("udp://[::1]:514", (Scheme.UDP, "::1", 514)),
    ],
)
def test_targets_are_parsed(target: str, expected: tuple[Scheme, str, int]) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["udp://:514", "tcp://h:0", "http://h:1", "udp://h"])
def test_bad_targets_are_refused(target: str) -> None:
    with pytest.raises(SyslogError):
        parse_target(target)


# -- /dev/log ---------------------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: Unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="ucsl"))
    yield path
    shutil.rmtree(path)


def unix_receiver(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(WAIT_SECONDS)
    return sock


def test_local_socket_gets_each_message_and_is_found_again_later(short_dir: Path) -> None:
    path = short_dir / "log"
    clock = SecondsClock(0.0)
    sender = LocalSender(str(path), retry_seconds=5.0, clock=clock)
    sender.send(b"lost: no daemon")
    assert sender.dropped == 1
    receiver = unix_receiver(path)
    try:
        sender.send(b"lost: not looked for again yet")
        assert sender.dropped == 2
        clock.now = 5.0
        sender.send(b"<134>1 first")
        assert receiver.recv(4096) == b"<134>1 first"
    finally:
        receiver.close()
    path.unlink()
    sender.send(b"lost: the daemon went away")  # reconnecting fails at once
    assert sender.dropped == 3
    receiver = unix_receiver(path)  # restarted: found at the next attempt
    try:
        clock.now = 10.0
        sender.send(b"<134>1 again")
        assert receiver.recv(4096) == b"<134>1 again"
    finally:
        receiver.close()
        sender.close()


def test_a_full_local_socket_drops_instead_of_blocking(short_dir: Path) -> None:
    path = short_dir / "log"
    receiver = unix_receiver(path)
    sender = LocalSender(str(path))
    try:
        start = time.monotonic()
        for _ in range(5000):  # nobody reads: the queue fills
            sender.send(b"x" * 1000)
        assert sender.dropped > 0
        assert time.monotonic() - start < 5
    finally:
        receiver.close()
        sender.close()


# -- UDP and TCP through Twisted, on memory reactors ------------------------------------------


class FakeUdpReactor:
    """What UdpSender uses of a reactor: listenUDP and resolve."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.interfaces: list[str] = []
        self.resolving: list[defer.Deferred[str]] = []

    def listenUDP(self, port: int, proto: Any, interface: str = "") -> Any:
        self.interfaces.append(interface)
        reactor = self

        class Port:
            def write(self, data: bytes, addr: tuple[str, int]) -> None:
                reactor.written.append((data, addr))

            def stopListening(self) -> None:
                pass

        return Port()

    def resolve(self, host: str) -> defer.Deferred[str]:
        d: defer.Deferred[str] = defer.Deferred()
        self.resolving.append(d)
        return d


def test_udp_sends_one_datagram_per_message_after_resolving_the_name() -> None:
    reactor = FakeUdpReactor()
    sender = UdpSender(reactor, "logs.example.com", 514)
    sender.send(b"one")
    sender.send(b"two")
    assert reactor.written == [] and len(reactor.resolving) == 1  # one lookup at a time
    reactor.resolving[0].callback("192.0.2.10")
    sender.send(b"three")
    assert reactor.written == [
        (b"one", ("192.0.2.10", 514)),
        (b"two", ("192.0.2.10", 514)),
        (b"three", ("192.0.2.10", 514)),
    ]
    assert reactor.interfaces == [""]  # one port, IPv4


def test_udp_to_an_unknown_name_drops_and_tries_again() -> None:
    reactor = FakeUdpReactor()
    sender = UdpSender(reactor, "nowhere.example", 514)
    sender.send(b"one")
    reactor.resolving[0].errback(Failure(OSError("no such name")))
    assert sender.dropped == 1
    sender.send(b"two")
    assert len(reactor.resolving) == 2


def test_udp_to_an_ipv6_address_uses_an_ipv6_port() -> None:
    reactor = FakeUdpReactor()
    UdpSender(reactor, "::1", 514).send(b"x")
    assert reactor.interfaces == ["::"] and reactor.written == [(b"x", ("::1", 514))]


def connect(reactor: MemoryReactorClock, index: int = -1) -> tuple[Any, StringTransport]:
    host, port, factory, timeout, _ = reactor.tcpClients[index]
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_tcp_frames_are_octet_counted() -> None:
    reactor = MemoryReactorClock()
    sender = TcpSender(reactor, "127.0.0.1", 6514)
    sender.send(b"<134>1 first")
    sender.send("<134>1 zweité\nline".encode())
    assert [(h, p) for h, p, *_ in reactor.tcpClients] == [("127.0.0.1", 6514)]
    _, transport = connect(reactor)
    assert transport.value() == b"12 <134>1 first19 <134>1 zweit\xc3\xa9\nline"
    sender.send(b"later")
    assert transport.value().endswith(b"5 later")
    assert sender.sent == 3 and sender.queued == 0


def test_tcp_reconnects_with_backoff_and_keeps_a_bounded_queue() -> None:
    reactor = MemoryReactorClock()
    sender = TcpSender(reactor, "127.0.0.1", 6514, queue_messages=3, max_delay=4.0)
    sender.send(b"m1")
    factory = reactor.tcpClients[0][2]
    delays = []
    for _ in range(4):  # the receiver is down: 1, 2, 4, then 4 s (the maximum)
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        before = len(reactor.tcpClients)
        waited = 0.0
        while len(reactor.tcpClients) == before:
            reactor.advance(0.5)
            waited += 0.5
        delays.append(waited)
    assert delays == [1.0, 2.0, 4.0, 4.0]
    for n in range(2, 6):
        sender.send(b"m%d" % n)
    assert sender.queued == 3 and sender.dropped == 2  # m1 and m2, the oldest, are gone
    proto, transport = connect(reactor)
    assert transport.value() == b"2 m32 m42 m5"
    assert sender.delay == 1.0  # a connection resets the backoff

    proto.pauseProducing()  # the transport's buffer is full
    sender.send(b"m6")
    assert transport.value().endswith(b"2 m5") and sender.queued == 1
    proto.resumeProducing()
    assert transport.value().endswith(b"2 m6")

    proto.connectionLost(Failure(ConnectionResetError()))
    factory.clientConnectionLost(None, Failure(ConnectionResetError()))
    sender.send(b"m7")  # waits for the next connection
    reactor.advance(1.0)
    _, transport = connect(reactor)
    assert transport.value() == b"2 m7"

    sender.close()
    assert transport.disconnecting
    sender.send(b"after close")
    assert sender.dropped == 3


# -- blocking sockets for the admin commands --------------------------------------------------


def test_blocking_udp_and_tcp_senders_reach_loopback_receivers() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((HOST, 0))
    udp.settimeout(WAIT_SECONDS)
    tcp = socket.socket()
    tcp.bind((HOST, 0))
    tcp.listen(1)
    tcp.settimeout(WAIT_SECONDS)
    try:
        to_udp = BlockingSender(Scheme.UDP, HOST, udp.getsockname()[1])
        to_udp.send(b"<134>1 over udp")
        assert udp.recv(4096) == b"<134>1 over udp"
        to_tcp = BlockingSender(Scheme.TCP, HOST, tcp.getsockname()[1])
        to_tcp.send(b"<134>1 over tcp")
        to_tcp.close()
        conn, _ = tcp.accept()
        conn.settimeout(WAIT_SECONDS)
        assert conn.recv(4096) == b"15 <134>1 over tcp"
        conn.close()
    finally:
        udp.close()
        tcp.close()
    with socket.socket() as s:
        s.bind((HOST, 0))
        free = s.getsockname()[1]
    nobody = BlockingSender(Scheme.TCP, HOST, free)
    nobody.send(b"x")
    with socket.socket() as late:  # a receiver that comes up later is not tried again
        late.bind((HOST, free))
        late.listen(1)
        nobody.send(b"y")
    assert nobody.dropped == 2


def test_tcp_closed_while_connecting_closes_the_connection_when_it_comes() -> None:
    reactor = MemoryReactorClock()
    sender = TcpSender(reactor, "127.0.0.1", 6514)
    sender.send(b"m1")
    sender.close()
    assert sender.dropped == 1
    _, transport = connect(reactor)
    assert transport.disconnecting and transport.value() == b""


def test_admin_actions_reach_syslog_after_the_command(config: Config, store: Store) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((HOST, 0))
    receiver.settimeout(WAIT_SECONDS)
    target = f"udp://{HOST}:{receiver.getsockname()[1]}"
    config = dataclasses.replace(config, syslog=SyslogSettings(enabled=True, target=target))
    try:
        add_test_device(store, "lab phone", IdentifierKind.MAC, "00-04-F2-00-00-01", "alice")
        since = newest_event_id(store)
        assert since > 0
        desk = add_test_device(store, "desk phone", IdentifierKind.MAC, "00-04-F2-00-00-02", "bob")
        assert [e.actor for e in events_after(store, since)] == ["bob"]
        assert forward_new_events(config, store, since) == 1
        m = parse(receiver.recv(4096))
    finally:
        receiver.close()
    assert m.msgid == "test-device.add" and m.severity == 6
    assert m.params["actor"] == "bob"
    assert m.params["target"].endswith("desk phone")
    assert json.loads(m.params["after"]) == {
        "identifier": "00-04-F2-00-00-02",
        "kind": "mac",
        "scope": desk.scope,
    }
    assert "before" not in m.params
    assert m.msg.startswith("admin test-device.add test device")


def test_events_after_pages_through_a_long_log(store: Store) -> None:
    with store.transaction():
        for i in range(300):
            store.append_event("alice", "user.add", f"user u{i}", None, {"name": f"u{i}"})
    assert [e.target for e in events_after(store, 10)][:2] == ["user u10", "user u11"]
    assert len(events_after(store, 10)) == 290
    assert events_after(store, 300) == []


def test_emit_admin_event_logs_before_and_after_as_json(sent: MemorySender) -> None:
    log = Logger(observer=observer_for(sent))
    emit_admin_event(log, "approve", "alice", "rule 3", {"approved": None}, {"approved": "4.0"})
    (m,) = [parse(x) for x in sent.messages]
    assert m.msgid == "approve"
    assert m.params == {
        "action": "approve",
        "actor": "alice",
        "target": "rule 3",
        "before": '{"approved":null}',
        "after": '{"approved":"4.0"}',
    }


# -- a real rsyslogd ----------------------------------------------------------------------------

SEP = " ||| "
TEMPLATE_FIELDS = (
    "%inputname%",
    "%syslogfacility%",
    "%syslogseverity%",
    "%hostname%",
    "%app-name%",
    "%procid%",
    "%msgid%",
    "%structured-data%",
    "%timereported:::date-rfc3339%",
    "%msg%",
)


def listening(port: int, proc_file: str) -> bool:
    text = Path(proc_file).read_text()
    return f"0100007F:{port:04X}" in text


@dataclass
class Rsyslog:
    udp_port: int
    tcp_port: int
    out: Path
    socket: Path  # a Unix datagram socket as /dev/log would be

    def lines(self) -> list[list[str]]:
        if not self.out.exists():
            return []
        return [line.split(SEP) for line in self.out.read_text().splitlines()]

    def wait_for(self, count: int, inputname: str) -> list[list[str]]:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            got = [fields for fields in self.lines() if fields[0] == inputname]
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"rsyslogd got only {self.lines()}")


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    if shutil.which("rsyslogd") is None:
        pytest.skip("needs rsyslogd (Debian package rsyslog)")
    root = tmp_path_factory.mktemp("rsyslog")
    (root / "work").mkdir()
    daemon = Rsyslog(
        free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM), root / "out", root / "log"
    )
    template = SEP.join(TEMPLATE_FIELDS) + "\\n"
    conf = root / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{root / "work"}" maxMessageSize="8k")\n'
        'module(load="imudp")\n'
        'module(load="imtcp")\n'
        'module(load="imuxsock" SysSock.Use="off")\n'
        # RFC 5424 on a local socket needs the regular parsers: imuxsock's default
        # "special parser" takes only the traditional format (see docs/events.md).
        f'input(type="imuxsock" Socket="{daemon.socket}" UseSpecialParser="off" '
        'ParseHostname="on")\n'
        f'input(type="imudp" address="{HOST}" port="{daemon.udp_port}")\n'
        f'input(type="imtcp" address="{HOST}" port="{daemon.tcp_port}")\n'
        f'template(name="fields" type="string" string="{template}")\n'
        f'*.* action(type="omfile" file="{daemon.out}" template="fields")\n'
    )
    proc = subprocess.Popen(
        ["rsyslogd", "-n", "-f", str(conf), "-i", str(root / "rsyslogd.pid")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not (
            listening(daemon.udp_port, "/proc/net/udp")
            and listening(daemon.tcp_port, "/proc/net/tcp")
            and daemon.socket.is_socket()
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.stdout.read() if proc.stdout else b""
                pytest.fail(f"rsyslogd did not start: {output.decode(errors='replace')}")
            time.sleep(0.05)
        yield daemon
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# A Twisted process: make_syslog_observer with the real reactor, a few events, then it
# waits until the sender has handed everything to the kernel and stops.
SCRIPT = """
import dataclasses, sys
from twisted.internet import reactor, task
from twisted.logger import Logger
from appliance.config import Config, SyslogSettings
from appliance.ops.syslog import make_syslog_observer

target, tag = sys.argv[1], sys.argv[2]
settings = SyslogSettings(enabled=True, target=target, hostname="appliance.test", facility=17)
observer = make_syslog_observer(dataclasses.replace(Config(), syslog=settings), reactor)
log = Logger(namespace="ucupdates.live", observer=observer)

def emit():
    log.info("Starting factory {f}", f="chatter that stays out")
    log.info(
        "update check {client} {mac}: {reason} {version}",
        client="127.0.0.1", mac="00-04-F2-00-00-01", reason="pending-test-device",
        version="4.0.7577.4400", tag=tag, tricky='say "hi" \\\\ path] end', size=6000,
        event="update.check",
    )
    log.warn("auth lockout of user {user}", user="bob", tag=tag, event="auth.lockout")
    log.error("disk full {tag}", tag=tag)
    log.info("{text}", text="long " * 600, tag=tag, event="long")
    started = reactor.seconds()

    def done():
        sender = observer.sender
        drained = getattr(sender, "queued", 0) == 0 and getattr(sender, "sent", 1) >= 1
        if drained or reactor.seconds() - started > 8:
            observer.close()
            print("dropped", observer.dropped, flush=True)
            reactor.callLater(0.2, reactor.stop)
            loop.stop()

    loop = task.LoopingCall(done)
    loop.start(0.05)

reactor.callWhenRunning(emit)
reactor.run()
"""


def run_script(tmp_path: Path, target: str, tag: str) -> str:
    script = tmp_path / "send.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), target, tag],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_arrivals(got: list[list[str]], tag: str) -> None:
    mine = [f for f in got if f'tag="{tag}"' in f[7]]
    by_msgid = {f[6]: f for f in mine}
    assert sorted(by_msgid) == ["-", "auth.lockout", "long", "update.check"]  # no chatter
    check = by_msgid["update.check"]
    assert check[1:7] == ["17", "6", "appliance.test", "ucupdates", str(check[5]), "update.check"]
    assert check[5].isdigit()
    sd_id, params = parse_sd(check[7])
    assert sd_id == SD_ID
    assert params == {
        "client": "127.0.0.1",
        "mac": "00-04-F2-00-00-01",
        "reason": "pending-test-device",
        "version": "4.0.7577.4400",
        "tag": tag,
        "tricky": 'say "hi" \\ path] end',
        "size": "6000",
    }
    assert check[9].strip() == (
        "update check 127.0.0.1 00-04-F2-00-00-01: pending-test-device 4.0.7577.4400"
    )
    sent_at = datetime.fromisoformat(check[8])
    assert sent_at.utcoffset() is not None
    assert abs(sent_at.timestamp() - time.time()) < 60
    assert by_msgid["auth.lockout"][2] == "4" and parse_sd(by_msgid["auth.lockout"][7])[1] == {
        "user": "bob",
        "tag": tag,
    }
    assert by_msgid["-"][2] == "3" and by_msgid["-"][9].strip() == f"disk full {tag}"


def test_rsyslogd_receives_events_over_udp(rsyslog: Rsyslog, tmp_path: Path) -> None:
    out = run_script(tmp_path, f"udp://{HOST}:{rsyslog.udp_port}", "viaudp")
    assert "dropped 0" in out
    got = [f for f in rsyslog.wait_for(4, "imudp") if 'tag="viaudp"' in f[7]]
    check_arrivals(got, "viaudp")
    text = next(f for f in got if f[6] == "long")[9].strip()
    assert 1000 < len(text) < UDP_MAX_BYTES  # cut to one safe datagram
    assert ("long " * 600).startswith(text)


def test_rsyslogd_receives_events_over_tcp(rsyslog: Rsyslog, tmp_path: Path) -> None:
    out = run_script(tmp_path, f"tcp://{HOST}:{rsyslog.tcp_port}", "viatcp")
    assert "dropped 0" in out
    got = [f for f in rsyslog.wait_for(4, "imtcp") if 'tag="viatcp"' in f[7]]
    check_arrivals(got, "viatcp")
    long = next(f for f in got if f[6] == "long")
    assert long[9].strip() == ("long " * 600).strip()  # octet counting: one whole message


def test_rsyslogd_receives_events_on_its_local_socket(rsyslog: Rsyslog) -> None:
    sender = LocalSender(str(rsyslog.socket))
    observer = Rfc5424Observer(
        SyslogSettings(enabled=True, facility=17), "appliance.test", "4242", sender
    )
    log = Logger(namespace="ucupdates.live", observer=observer)
    tag = "vialocal"
    log.info("Starting factory {f}", f="chatter that stays out")
    log.info(
        "update check {client} {mac}: {reason} {version}",
        client="127.0.0.1",
        mac="00-04-F2-00-00-01",
        reason="pending-test-device",
        version="4.0.7577.4400",
        tag=tag,
        tricky='say "hi" \\ path] end',
        size=6000,
        event="update.check",
    )
    log.warn("auth lockout of user {user}", user="bob", tag=tag, event="auth.lockout")
    log.error("disk full {tag}", tag=tag)
    log.info("{text}", text="long " * 600, tag=tag, event="long")
    observer.close()
    assert observer.dropped == 0
    got = [f for f in rsyslog.wait_for(4, "imuxsock") if f'tag="{tag}"' in f[7]]
    check_arrivals(got, tag)
