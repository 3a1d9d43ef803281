"""The DHCPINFORM responder: the codec and decision with no reactor, then the real thing as
a process on 127.0.0.1 answering real datagrams, and surviving thousands of broken ones.

Every packet here is built with struct in this file, and every reply is read twice: with
the module's parser and with the plain struct unpacking below, which shares no code with it.
Every packet that could be answered carries giaddr or ciaddr 127.0.0.1, so replies only
ever go to loopback.
"""

from __future__ import annotations

import dataclasses
import random
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.logger import LogLevel, capturedLogs, eventsFromJSONLogFile

from appliance.config import Config, ConfigError, Network, load_config
from appliance.discovery.dhcp import InformProtocol, local_address_towards, make_dhcp_service
from appliance.discovery.dhcp_answer import (
    InformAnswers,
    Outcome,
    ReplyPorts,
    answer_inform,
    decide,
)
from appliance.discovery.dhcp_codec import parse_packet
from appliance.discovery.dhcp_options import option43, option120, vlan_option43
from appliance.testing import REPO, SecondsClock, config_from

SIP = "sip.contoso.com"
MAC = "00:04:f2:aa:bb:cc"
LOOP = "127.0.0.1"
SERVER = "192.0.2.10"  # option 54 in the pure tests: never a destination
ANSWERS = InformAnswers(option43(SIP), option120([SIP, "sip2.contoso.com"]), vlan_option43(100))
NO_VLAN = dataclasses.replace(ANSWERS, vlan43=None)
COOKIE = b"\x63\x82\x53\x63"
RELAY = "127.0.0.2"  # the relay agent of the pure tests: giaddr and sender
RELAYS = (Network.parse(RELAY),)  # dhcp.relays
TRUSTED = (Network.parse("127.0.0.0/8"),)
INFORM, DISCOVER, REQUEST, DECLINE, ACK, RELEASE = 8, 1, 3, 4, 5, 7


def dhcp_packet(
    msg_type: int | None = INFORM,
    vendor: str | None = "MS-UC-Client",
    params: tuple[int, ...] | None = (43, 120),
    *,
    ciaddr: str = LOOP,
    giaddr: str = "0.0.0.0",
    xid: int = 0x12345678,
    mac: str = MAC,
    flags: int = 0,
    op: int = 1,
    hlen: int = 6,
    extra: bytes = b"",
    end: bool = True,
) -> bytes:
    """A client's BOOTREQUEST, as struct packs it."""
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        op, 1, hlen, 0, xid, 7, flags,
        socket.inet_aton(ciaddr), bytes(4), bytes(4), socket.inet_aton(giaddr),
        bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0"), bytes(64), bytes(128),
    )  # fmt: skip
    options = b""
    if msg_type is not None:
        options += bytes((53, 1, msg_type))
    if vendor is not None:
        options += bytes((60, len(vendor))) + vendor.encode()
    if params is not None:
        options += bytes((55, len(params), *params))
    options += extra + (b"\xff" if end else b"")
    return header + COOKIE + options


@dataclass
class Unpacked:
    """A reply read with struct alone."""

    op: int
    htype: int
    hlen: int
    hops: int
    xid: int
    secs: int
    flags: int
    ciaddr: str
    yiaddr: str
    siaddr: str
    giaddr: str
    chaddr: bytes
    options: list[tuple[int, bytes]]

    def option(self, code: int) -> bytes | None:
        parts = [v for c, v in self.options if c == code]
        return b"".join(parts) if parts else None


def unpack(data: bytes) -> Unpacked:
    fields = struct.unpack_from("!BBBBIHH4s4s4s4s16s", data)
    assert data[236:240] == COOKIE
    options: list[tuple[int, bytes]] = []
    i = 240
    while data[i] != 255:  # a reply must end with the end option
        if data[i] == 0:
            i += 1
            continue
        code, length = data[i], data[i + 1]
        assert i + 2 + length <= len(data)
        options.append((code, data[i + 2 : i + 2 + length]))
        i += 2 + length
    assert set(data[i + 1 :]) <= {0}, "only padding after the end option"
    op, htype, hlen, hops, xid, secs, flags = fields[:7]
    ciaddr, yiaddr, siaddr, giaddr = (socket.inet_ntoa(a) for a in fields[7:11])
    return Unpacked(
        op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, fields[11], options
    )


def answered(
    packet: bytes, answers: InformAnswers = ANSWERS, **kw: object
) -> tuple[bytes, tuple[str, int]]:
    result = answer_inform(packet, answers, SERVER, **kw)  # type: ignore[arg-type]
    assert result is not None, decide(packet, answers, SERVER).reason
    return result


# -- MS-UC-Client -----------------------------------------------------------------------


def test_ms_uc_client_inform_gets_an_ack_with_43_and_120() -> None:
    query = dhcp_packet(xid=0xCAFEF00D, flags=0x8000, giaddr="0.0.0.0")
    reply, destination = answered(query)
    assert destination == (LOOP, 68)

    r = unpack(reply)
    assert (r.op, r.htype, r.hlen, r.hops, r.xid, r.flags) == (2, 1, 6, 0, 0xCAFEF00D, 0x8000)
    assert (r.ciaddr, r.yiaddr, r.siaddr, r.giaddr) == (LOOP, "0.0.0.0", "0.0.0.0", "0.0.0.0")
    assert r.chaddr == bytes.fromhex("0004f2aabbcc").ljust(16, b"\0")
    assert r.option(53) == b"\x05"
    assert r.option(54) == socket.inet_aton(SERVER)
    assert r.option(43) == option43(SIP)
    assert r.option(120) == option120([SIP, "sip2.contoso.com"])
    assert [c for c, _ in r.options] == [53, 54, 43, 120]
    assert len(reply) >= 300

    ours = parse_packet(reply)  # the module's own parser agrees
    assert ours.op == 2 and ours.message_type == 5 and ours.xid == 0xCAFEF00D
    assert str(ours.yiaddr) == "0.0.0.0" and ours.mac == MAC
    assert ours.option(43) == option43(SIP)
    assert ours.option(120) == option120([SIP, "sip2.contoso.com"])


def test_only_the_asked_options_in_the_asked_order() -> None:
    r = unpack(answered(dhcp_packet(params=(1, 3, 120, 6)))[0])
    assert r.option(120) is not None and r.option(43) is None
    assert [c for c, _ in r.options] == [53, 54, 120]
    r = unpack(answered(dhcp_packet(params=(120, 42, 43, 120)))[0])
    assert [c for c, _ in r.options] == [53, 54, 120, 43]


def test_relayed_inform_goes_back_to_the_relay_on_port_67() -> None:
    packet = dhcp_packet(giaddr=RELAY, ciaddr="127.0.0.3")
    reply, destination = answered(packet, sender=RELAY, relays=RELAYS)
    assert destination == ("127.0.0.2", 67)
    r = unpack(reply)
    assert (r.giaddr, r.ciaddr) == ("127.0.0.2", "127.0.0.3")


def test_relay_agent_information_is_echoed_only_for_a_relay() -> None:
    info = bytes((82, 6, 1, 4)) + b"port"
    r = unpack(answered(dhcp_packet(giaddr=RELAY, extra=info), sender=RELAY, relays=RELAYS)[0])
    assert r.options[-1] == (82, b"\x01\x04port")
    r = unpack(answered(dhcp_packet(extra=info))[0])
    assert r.option(82) is None


def test_client_identifier_is_echoed() -> None:
    r = unpack(answered(dhcp_packet(extra=bytes((61, 7, 1)) + bytes.fromhex("0004f2aabbcc")))[0])
    assert r.option(61) == b"\x01" + bytes.fromhex("0004f2aabbcc")


def test_inform_without_ciaddr_is_broadcast() -> None:
    _, destination = answered(dhcp_packet(ciaddr="0.0.0.0"))
    assert destination == ("255.255.255.255", 68)


def test_reply_ports_are_configurable() -> None:
    ports = ReplyPorts(relay=10067, client=10068)
    assert answered(dhcp_packet(), ports=ports)[1] == (LOOP, 10068)
    relayed = answered(dhcp_packet(giaddr=RELAY), ports=ports, sender=RELAY, relays=RELAYS)
    assert relayed[1] == ("127.0.0.2", 10067)


def test_server_identifier_from_the_route_to_the_destination() -> None:
    seen: list[str] = []

    def route(host: str) -> str | None:
        seen.append(host)
        return "127.0.0.9"

    decision = decide(dhcp_packet(giaddr=RELAY), ANSWERS, route, RELAY, relays=RELAYS)
    assert seen == ["127.0.0.2"]
    assert unpack(decision.reply or b"").option(54) == socket.inet_aton("127.0.0.9")
    no_route = decide(dhcp_packet(), ANSWERS, lambda host: None)
    assert no_route.outcome is Outcome.IGNORED and "no local address" in no_route.reason


def test_local_address_towards_loopback() -> None:
    assert local_address_towards(LOOP) == LOOP


# -- CPE-OCPHONE ------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", ["CPE-OCPHONE", "CPE-OCPhone"])
def test_cpe_ocphone_gets_the_voice_vlan(vendor: str) -> None:
    r = unpack(answered(dhcp_packet(vendor=vendor, params=(43, 120)))[0])
    assert r.option(43) == b"\x0a\x03100"
    assert r.option(120) is None  # that is for MS-UC-Client
    assert r.option(53) == b"\x05"


def test_cpe_ocphone_without_a_vlan_gets_nothing() -> None:
    decision = decide(dhcp_packet(vendor="CPE-OCPHONE", params=(43,)), NO_VLAN, SERVER)
    assert decision.reply is None and decision.outcome is Outcome.IGNORED
    assert decision.reason == "no voice VLAN configured"


# -- what is never answered -------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (dhcp_packet(DISCOVER), "DHCPDISCOVER"),
        (dhcp_packet(REQUEST), "DHCPREQUEST"),
        (dhcp_packet(DECLINE), "DHCPDECLINE"),
        (dhcp_packet(RELEASE), "DHCPRELEASE"),
        (dhcp_packet(ACK), "DHCPACK"),
        (dhcp_packet(99), "message type 99"),
        (dhcp_packet(None), "BOOTP"),
        (dhcp_packet(op=2), "not BOOTREQUEST"),
        (dhcp_packet(vendor=None), "without vendor class"),
        (dhcp_packet(vendor="PXEClient:Arch:00000"), "not served"),
        (dhcp_packet(vendor="ms-uc-client"), "not served"),
        (dhcp_packet(vendor="MS-UC-Client2"), "not served"),
        (dhcp_packet(params=None), "none of our options"),
        (dhcp_packet(params=(1, 3, 6)), "none of our options"),
        (dhcp_packet(giaddr="224.0.0.1"), "will not reply"),
        (dhcp_packet(giaddr="255.255.255.255"), "will not reply"),
        (dhcp_packet(giaddr="0.1.2.3"), "will not reply"),
    ],
)
def test_ignored(packet: bytes, reason: str) -> None:
    decision = decide(packet, ANSWERS, SERVER, LOOP, relays=TRUSTED)
    assert decision.outcome is Outcome.IGNORED
    assert reason in decision.reason
    assert decision.reply is None
    assert answer_inform(packet, ANSWERS, SERVER, LOOP, relays=TRUSTED) is None


@pytest.mark.parametrize(
    ("sender", "relays"),
    [
        ("127.0.0.66", RELAYS),  # a client forging giaddr: not a configured relay
        ("127.0.0.66", ()),
        (RELAY, ()),  # no dhcp.relays (the default): relayed messages are ignored
        (None, RELAYS),  # the sender unknown
        ("not an address", RELAYS),
    ],
    ids=["client-forging-giaddr", "no-relays", "relay-not-configured", "no-sender", "bad-sender"],
)
def test_forged_giaddr_is_not_answered(sender: str | None, relays: tuple[Network, ...]) -> None:
    """Reflection: a forged giaddr from any sender reflected 365-byte replies."""
    packet = dhcp_packet(giaddr="127.0.0.9", ciaddr="127.0.0.66")
    decision = decide(packet, ANSWERS, SERVER, sender, relays=relays)
    assert decision.outcome is Outcome.UNTRUSTED_RELAY and decision.reply is None
    assert "not one of dhcp.relays" in decision.reason and decision.relay == "127.0.0.9"
    assert answer_inform(packet, ANSWERS, SERVER, sender, relays=relays) is None


def test_configured_relay_and_direct_informs_are_answered() -> None:
    relayed = decide(dhcp_packet(giaddr="127.0.0.9"), ANSWERS, SERVER, RELAY, relays=RELAYS)
    assert relayed.outcome is Outcome.ANSWERED and relayed.destination == ("127.0.0.9", 67)
    wide = decide(dhcp_packet(giaddr="127.0.0.9"), ANSWERS, SERVER, RELAY, relays=TRUSTED)
    assert wide.outcome is Outcome.ANSWERED  # a network of relays
    direct = decide(dhcp_packet(ciaddr="127.0.0.7"), ANSWERS, SERVER, "127.0.0.7")
    assert direct.outcome is Outcome.ANSWERED  # a phone's own DHCPINFORM: no relay needed
    assert direct.destination == ("127.0.0.7", 68)


def test_forged_ciaddr_is_not_answered() -> None:
    packet = dhcp_packet(ciaddr="127.0.0.7")
    assert decide(packet, ANSWERS, SERVER, sender="127.0.0.7").outcome is Outcome.ANSWERED
    decision = decide(packet, ANSWERS, SERVER, sender="127.0.0.8")
    assert decision.outcome is Outcome.IGNORED and "not from ciaddr" in decision.reason


# -- malformed and odd packets ----------------------------------------------------------


GOOD = dhcp_packet()


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"", "shorter than a DHCP header"),
        (GOOD[:239], "shorter than a DHCP header"),
        (GOOD[:236] + b"\x63\x82\x53\x64" + GOOD[240:], "magic cookie"),
        (GOOD[:240] + bytes((53, 1, 8, 60, 20)) + b"MS-UC", "runs past the end"),
        (GOOD[:240] + bytes((53, 1, 8, 60)), "has no length"),
        (dhcp_packet(hlen=17), "over 16"),
        (GOOD[:240] + bytes((53, 2, 8, 8, 255)), "message type"),
    ],
)
def test_malformed(packet: bytes, reason: str) -> None:
    decision = decide(packet, ANSWERS, SERVER)
    assert decision.outcome is Outcome.MALFORMED
    assert reason in decision.reason


def test_tolerated_oddities() -> None:
    # no end option; pads between options; option overload; option 55 split in two (RFC 3396)
    assert answer_inform(dhcp_packet(end=False), ANSWERS, SERVER) is not None
    padded = GOOD[:240] + b"\0\0" + GOOD[240:]
    assert answer_inform(padded, ANSWERS, SERVER) is not None
    overload = dhcp_packet(extra=bytes((52, 1, 3)))
    assert answer_inform(overload, ANSWERS, SERVER) is not None
    split = dhcp_packet(params=(1,), extra=bytes((55, 1, 43)))
    assert unpack(answered(split)[0]).option(43) == option43(SIP)


def test_reply_stays_within_576_bytes_unless_the_client_takes_more() -> None:
    long_names = [f"{'s' * 50}{i}.{'c' * 50}.example.com" for i in range(2)]
    big = InformAnswers(option43("w" * 60 + "." + "x" * 60 + ".example.com"), option120(long_names))
    assert len(big.option43) + len(big.option120) + 240 + 9 + 4 > 548
    r = unpack(reply := answered(dhcp_packet(params=(43, 120)), big)[0])
    assert len(reply) <= 576 - 28
    assert r.option(43) == big.option43 and r.option(120) is None  # the first asked fits
    max_size = bytes((57, 2)) + (1500).to_bytes(2, "big")
    r = unpack(answered(dhcp_packet(params=(43, 120), extra=max_size), big)[0])
    assert r.option(43) == big.option43 and r.option(120) == big.option120


# -- settings ---------------------------------------------------------------------------


def dhcp_config(tmp_path: Path, body: str) -> Config:
    return config_from(tmp_path, 'domains = ["contoso.com"]\n[dhcp]\n' + body)


def test_answers_from_config_default_to_the_internal_fqdn(tmp_path: Path) -> None:
    config = dhcp_config(tmp_path, 'enabled = true\nsip_servers = ["sip.contoso.com"]\n')
    answers = InformAnswers.from_config(config)
    assert answers.option43 == option43("ucupdates-r2.contoso.com", 443)
    assert answers.option120 == option120([SIP])
    assert answers.vlan43 is None


def test_answers_from_config_with_everything(tmp_path: Path) -> None:
    config = dhcp_config(
        tmp_path,
        'sip_servers = ["a.contoso.com", "b.contoso.com"]\nweb_fqdn = "web.contoso.com"\n'
        'web_port = 4443\ncert_prov_path = "/cp"\nvoice_vlan = 42\n',
    )
    answers = InformAnswers.from_config(config)
    assert answers.option43 == option43("web.contoso.com", 4443, "https", "/cp")
    assert answers.option120 == option120(["a.contoso.com", "b.contoso.com"])
    assert answers.vlan43 == vlan_option43(42)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("enabled = true\n", "dhcp.sip_servers"),
        ('enabled = true\nsip_servers = ["sip.contoso.com"]\nvoice_vlan = 5000\n', "1 to 4094"),
        ('enabled = true\nsip_servers = ["sip.contoso.com"]\nlisten = "[::1]:67"\n', "IPv4"),
    ],
)
def test_unservable_settings_are_config_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        make_dhcp_service(dhcp_config(tmp_path, body), object())
    assert "ucupdates.toml" in str(e.value)


def test_disabled_service_does_nothing(tmp_path: Path) -> None:
    service = make_dhcp_service(dhcp_config(tmp_path, ""), object())  # no reactor is touched
    service.startService()
    assert service.running and service.port is None
    service.stopService()


# -- the protocol, on a fake transport ---------------------------------------------------


class RecordingTransport:
    """A UDP transport that keeps what is written to it."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.broadcast = False

    def write(self, packet: bytes, addr: tuple[str, int]) -> None:
        self.written.append((packet, addr))

    def setBroadcastAllowed(self, enabled: bool) -> None:
        self.broadcast = enabled


def test_protocol_sends_counts_and_logs() -> None:
    protocol = InformProtocol(ANSWERS, LOOP, relays=RELAYS)
    transport = RecordingTransport()
    protocol.makeConnection(cast(Any, transport))
    assert transport.broadcast
    with capturedLogs() as events:
        protocol.datagramReceived(dhcp_packet(giaddr="127.0.0.2"), (RELAY, 67))
        protocol.datagramReceived(dhcp_packet(DISCOVER), (LOOP, 68))
        protocol.datagramReceived(b"junk", (LOOP, 68))
        protocol.datagramReceived(b"junk", (LOOP, 68))
    assert len(transport.written) == 1
    reply, destination = transport.written[0]
    assert destination == ("127.0.0.2", 67) and unpack(reply).option(53) == b"\x05"
    assert protocol.counts == {Outcome.ANSWERED: 1, Outcome.IGNORED: 1, Outcome.MALFORMED: 2}
    by_event = {e["event"]: e for e in events}
    answered_event = by_event["dhcp.inform.answered"]
    assert answered_event["log_level"] is LogLevel.info
    assert (answered_event["mac"], answered_event["vendor_class"], answered_event["relay"]) == (
        MAC,
        "MS-UC-Client",
        "127.0.0.2",
    )
    assert by_event["dhcp.ignored"]["log_level"] is LogLevel.debug
    assert by_event["dhcp.malformed"]["count"] == 2


def test_protocol_drops_untrusted_relays_and_says_so_once_a_minute() -> None:
    clock = SecondsClock(1000.0)
    protocol = InformProtocol(ANSWERS, LOOP, relays=RELAYS, clock=clock)
    transport = RecordingTransport()
    protocol.makeConnection(cast(Any, transport))
    forged = dhcp_packet(giaddr="127.0.0.9")
    with capturedLogs() as events:
        for _ in range(100):  # a flood of forged giaddr from a client
            protocol.datagramReceived(forged, ("127.0.0.66", 68))
        clock.now += 61
        protocol.datagramReceived(forged, ("127.0.0.66", 68))
        protocol.datagramReceived(forged, (RELAY, 67))  # the configured relay
    assert [addr for _, addr in transport.written] == [("127.0.0.9", 67)]
    assert protocol.counts[Outcome.UNTRUSTED_RELAY] == 101
    warned = [e for e in events if e.get("event") == "dhcp.untrusted_relay"]
    assert [(e["unlogged"], e["count"]) for e in warned] == [(0, 1), (99, 101)]
    assert warned[0]["log_level"] is LogLevel.warn and warned[0]["giaddr"] == "127.0.0.9"
    assert warned[0]["sender"] == "127.0.0.66"


# -- the real thing: a Twisted process on 127.0.0.1 --------------------------------------

CHILD = """
import sys
from pathlib import Path
from twisted.internet import reactor
from twisted.logger import globalLogBeginner, jsonFileLogObserver
from appliance.config import load_config
from appliance.discovery.dhcp import make_dhcp_service

config_path, relay_port, client_port, log_path = sys.argv[1:5]
globalLogBeginner.beginLoggingTo(
    [jsonFileLogObserver(open(log_path, "a"))], redirectStandardIO=False
)
service = make_dhcp_service(
    load_config(Path(config_path)), reactor,
    relay_port=int(relay_port), client_port=int(client_port),
)
service.startService()
reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
print(service.port, flush=True)
reactor.run()
"""
IO_SECONDS = 5.0


@dataclass
class Live:
    process: subprocess.Popen[str]
    port: int
    relay: socket.socket  # receives what goes to giaddr 127.0.0.1 (the relay port)
    client: socket.socket  # receives what goes to ciaddr 127.0.0.1 (the client port)
    log_path: Path
    answers: InformAnswers

    def send(self, packet: bytes, sock: socket.socket | None = None) -> None:
        (sock or self.client).sendto(packet, (LOOP, self.port))

    def receive(self, sock: socket.socket, timeout: float = IO_SECONDS) -> bytes | None:
        ready, _, _ = select.select([sock], [], [], timeout)
        return sock.recv(65536) if ready else None

    def events(self) -> list[dict[str, object]]:
        with self.log_path.open() as f:
            return list(eventsFromJSONLogFile(f))


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOP, 0))
    return s


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("dhcp")
    config_path = tmp / "ucupdates.toml"
    config_path.write_text(
        f'data_dir = "data"\n[dhcp]\nenabled = true\nlisten = "{LOOP}:0"\n'
        f'sip_servers = ["{SIP}"]\nweb_fqdn = "{SIP}"\nvoice_vlan = 100\nrelays = ["{LOOP}"]\n'
    )
    relay, client = udp_socket(), udp_socket()
    log_path = tmp / "dhcp.json"
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(config_path), str(relay.getsockname()[1]),
         str(client.getsockname()[1]), str(log_path)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20.0)
        assert ready, "the DHCP process did not start in 20 s"
        port = int(process.stdout.readline())
        yield Live(
            process,
            port,
            relay,
            client,
            log_path,
            InformAnswers.from_config(load_config(config_path)),
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
        relay.close()
        client.close()


def test_live_inform_is_answered_at_ciaddr(live: Live) -> None:
    live.send(dhcp_packet(xid=0xA1, mac="00:04:f2:00:00:a1"))
    reply = live.receive(live.client)
    assert reply is not None, "no DHCPACK"
    r = unpack(reply)
    assert (r.op, r.xid, r.option(53)) == (2, 0xA1, b"\x05")
    assert r.option(54) == socket.inet_aton(LOOP)  # the listen address
    assert r.option(43).hex() == option43(SIP).hex()  # type: ignore[union-attr]
    assert r.option(120) == option120([SIP])
    assert r.yiaddr == "0.0.0.0"


def test_live_relayed_inform_is_answered_at_the_relay(live: Live) -> None:
    live.send(dhcp_packet(xid=0xA2, giaddr=LOOP, vendor="CPE-OCPHONE", params=(43,)), live.relay)
    reply = live.receive(live.relay)
    assert reply is not None, "no DHCPACK at the relay port"
    r = unpack(reply)
    assert (r.xid, r.giaddr, r.option(43)) == (0xA2, LOOP, b"\x0a\x03100")
    deadline = time.monotonic() + IO_SECONDS
    while time.monotonic() < deadline:
        answered_events = [
            e
            for e in live.events()
            if e.get("event") == "dhcp.inform.answered" and e.get("relay") == LOOP
        ]
        if answered_events:
            break
        time.sleep(0.05)
    assert answered_events and answered_events[-1]["vendor_class"] == "CPE-OCPHONE"


def test_live_forged_giaddr_is_not_reflected(live: Live) -> None:
    """Reflection: a client (127.0.0.3, not in dhcp.relays) naming the relay's
    address as giaddr gets nothing sent there; the relay's own message still is answered."""
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger.bind(("127.0.0.3", 0))
    try:
        for xid in range(0xC0, 0xC8):
            forger.sendto(dhcp_packet(xid=xid, giaddr=LOOP, ciaddr="127.0.0.3"), (LOOP, live.port))
    finally:
        forger.close()
    live.send(dhcp_packet(xid=0xCF, giaddr=LOOP), live.relay)  # after them: all were seen
    reply = live.receive(live.relay)
    assert reply is not None and unpack(reply).xid == 0xCF, "a forged giaddr was answered"
    deadline = time.monotonic() + IO_SECONDS
    while time.monotonic() < deadline:
        warned = [e for e in live.events() if e.get("event") == "dhcp.untrusted_relay"]
        if warned:
            break
        time.sleep(0.05)
    assert warned and warned[0]["sender"] == "127.0.0.3"


def test_live_discover_gets_nothing(live: Live) -> None:
    live.send(dhcp_packet(DISCOVER, xid=0xA3))
    live.send(dhcp_packet(REQUEST, xid=0xA4))
    live.send(dhcp_packet(xid=0xA5, vendor="SomethingElse"))
    live.send(dhcp_packet(xid=0xA6))  # a good one after them: all before it were seen
    reply = live.receive(live.client)
    assert reply is not None and unpack(reply).xid == 0xA6


def fuzzed(rng: random.Random, xid: int) -> bytes:
    """A broken or odd variant of a DHCPINFORM; any that is long enough to be answered is
    re-stamped with giaddr and ciaddr 127.0.0.1 (so replies stay on loopback) and `xid`."""
    base = dhcp_packet(
        rng.choice([INFORM, INFORM, INFORM, DISCOVER, REQUEST, rng.randrange(256)]),
        rng.choice(["MS-UC-Client", "CPE-OCPHONE", "CPE-OCPhone", "x", ""]),
        tuple(rng.randrange(256) for _ in range(rng.randrange(6)))
        + rng.choice([(43, 120), (120,), ()]),
        end=rng.random() < 0.8,
    )
    data = bytearray(base)
    kind = rng.randrange(6)
    if kind == 0:  # flipped bytes anywhere
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # truncated
        data = data[: rng.randrange(len(data))]
    elif kind == 2:  # random garbage
        data = bytearray(rng.randbytes(rng.randrange(0, 700)))
    elif kind == 3:  # options with lying lengths and random codes
        data = data[:240] + bytearray(rng.randbytes(rng.randrange(0, 300)))
    elif kind == 4:  # a huge option area: long, repeated options (RFC 3396 concatenation)
        data = (
            data[:-1] + bytes((55, 255)) + bytes(range(255)) + bytes((82, 255)) + rng.randbytes(255)
        )
    else:  # flips in the options only
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(240, len(data))] = rng.randrange(256)
    if len(data) >= 28:
        data[4:8] = xid.to_bytes(4, "big")
        data[12:16] = socket.inet_aton(LOOP)
        data[24:28] = socket.inet_aton(LOOP)
    return bytes(data)


def test_live_thousands_of_broken_packets(live: Live) -> None:
    rng = random.Random(20240611)
    queries = {xid: fuzzed(rng, xid) for xid in range(1, 3001)}
    expected = {
        xid
        for xid, q in queries.items()
        if decide(q, live.answers, LOOP, LOOP, ReplyPorts(), (Network.parse(LOOP),)).outcome
        is Outcome.ANSWERED
    }
    assert 50 < len(expected) < 2000  # the fuzz reaches both sides of the decision
    replies: dict[int, bytes] = {}
    started = time.monotonic()
    xids = sorted(queries)
    for batch_start in range(0, len(xids), 50):  # bounded batches, then a probe to sync
        for xid in xids[batch_start : batch_start + 50]:
            live.send(queries[xid], live.relay)
        probe = 0xF0000000 + batch_start
        live.send(dhcp_packet(xid=probe, giaddr=LOOP), live.relay)
        for _ in range(60):  # at most the batch's replies and the probe's
            reply = live.receive(live.relay)
            assert reply is not None, f"the service stopped answering after {batch_start}"
            xid = int.from_bytes(reply[4:8], "big")
            if xid == probe:
                break
            assert xid not in replies, f"two replies to {xid}"
            replies[xid] = reply
        else:
            raise AssertionError("probe never answered")
    assert time.monotonic() - started < 20
    assert live.process.poll() is None, "the service died"
    assert set(replies) == expected  # the live service decides as the pure function does
    for xid, reply in replies.items():
        r = unpack(reply)
        assert r.op == 2 and r.option(53) == b"\x05" and r.yiaddr == "0.0.0.0"
        assert len(reply) <= len(queries[xid]) + 100, (xid, len(reply), len(queries[xid]))
    # and still answers a plain DHCPINFORM
    live.send(dhcp_packet(xid=0xB0))
    reply = live.receive(live.client)
    assert reply is not None and unpack(reply).xid == 0xB0
    malformed = [e for e in live.events() if e.get("event") == "dhcp.malformed"]
    assert len(malformed) > 500 and malformed[-1]["log_level"] == LogLevel.debug
