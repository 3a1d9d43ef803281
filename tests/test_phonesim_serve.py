"""`ucupdates phone-sim` against a real `ucupdates serve`: whole rounds, as phones run them.

One serve process for the module (loopback, every listener on port 0, the DHCPINFORM
responder on too), with the sample package approved and one phone user. Phones connect
to 127.0.0.1 (`connect`) whatever the URLs name, as the DNS answer would send them;
phones that must not share an address with others (the lockout counts per address) use
their own 127.0.0.N. Every wait is bounded; nothing is timed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from appliance.phonesim import (
    Credentials,
    FleetSpec,
    Net,
    PhoneIdentity,
    PhoneState,
    Round,
    Schedule,
    Settings,
    fleet,
    inform,
    mac_of,
    phone_tls,
    run_fleet,
    run_round,
    serial_of,
)
from appliance.phonesim.http import open_connection
from appliance.store import Store
from appliance.testing import run_cli, serving

pytestmark = pytest.mark.slow  # a serving appliance

FQDN = "ucupdates-r2.example.com"
HOST = "127.0.0.1"
RUNNING, APPROVED = "4.0.7577.4366", "4.0.7577.4387"
IMAGE_SIZE = 6000
USER, PASSWORD = "alice@example.com", "correct horse battery staple"
SAMPLE_MODELS = (  # the sample package's ENU devices
    ("Polycom", "CX600", "A"),
    ("Polycom", "CX500", "A"),
    ("Polycom", "CX3000", "A"),
    ("Polycom", "CX700", "A"),
    ("Aastra", "6721ip", "A"),
    ("HP", "4120", "A"),
)
WAIT_SECONDS = 20.0


@dataclass
class Served:
    data: Path
    ports: dict[str, int]
    dhcp_port: int
    log: Path

    @property
    def ca(self) -> str:
        return str(self.data / "tls" / "ca.pem")

    def settings(self, listener: str = "internal-https", **changes: object) -> Settings:
        scheme = "http" if listener == "internal-http" else "https"
        net = Net(phone_tls(self.ca), verify=True, timeout=10.0, connect=HOST)
        server = f"{scheme}://{FQDN}:{self.ports[listener]}"
        return replace(Settings(net, server=server), **changes)  # type: ignore[arg-type]


def _cli(data: Path, *args: str, stdin: str | None = None) -> str:
    result = run_cli(data, *args, stdin=stdin)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def _dhcp_port(log: Path) -> int:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = re.search(r"DHCPINFORM responder on 127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"serve did not say where DHCP listens: {log.read_text()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("phonesim")
    data = base / "data"
    package = base / "UCUpdates.cab"
    _cli(data, "make-sample-package", str(package), "--version", APPROVED,
         "--image-size", str(IMAGE_SIZE))  # fmt: skip
    _cli(data, "import", str(package))
    _cli(data, "approve", "--all-pending")
    _cli(data, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    config = base / "ucupdates.toml"
    config.write_text(
        f"data_dir = {json.dumps(str(data))}\n"
        "[listeners]\n"
        f'dns = "{HOST}:0"\nadmin = "{HOST}:0"\ninternal_https = "{HOST}:0"\n'
        f'external_https = "{HOST}:0"\ninternal_http = "{HOST}:0"\n'
        "[service]\ncapture = true\n"
        f'[dhcp]\nenabled = true\nlisten = "{HOST}:0"\nsip_servers = ["sip.example.com"]\n'
    )
    with serving(config, base / "serve.log") as running:
        yield Served(data, running.ports, _dhcp_port(running.log), running.log)


def phone(
    number: int, model: tuple[str, str, str] = SAMPLE_MODELS[0], **kw: object
) -> PhoneIdentity:
    vendor, name, revision = model
    return PhoneIdentity(vendor, name, revision, "ENU", mac_of(number), serial_of(number), **kw)  # type: ignore[arg-type]


def rounds(identity: PhoneIdentity, settings: Settings) -> tuple[list[Round], PhoneState]:
    """Rounds until the phone is up to date or failed (at most 3), with no idle wait."""
    runs, _ = run_fleet([identity], settings, Schedule(idle=0.0, rounds=3, deadline=120.0))
    return runs[0].rounds, runs[0].state


def outcomes(records: list[Round]) -> list[str]:
    return [r.outcome if r.outcome != "failed" else f"failed:{r.cause}:{r.detail}" for r in records]


# -- inside ------------------------------------------------------------------------------


def test_an_internal_phone_updates_over_tls_1_0_without_sni(served: Served) -> None:
    me = phone(1, SAMPLE_MODELS[5])  # the first HP 4120 of the run: its check is captured
    records, state = rounds(me, served.settings())
    assert outcomes(records) == ["updated", "current"]
    assert records[0].offered == APPROVED and records[0].files == 2  # image and signature
    assert records[0].bytes > IMAGE_SIZE and records[1].bytes == 0
    assert state.version == APPROVED and state.last_update is not None
    conn, _ = open_connection(
        f"https://{FQDN}:{served.ports['internal-https']}/", served.settings().net
    )
    conn.connect()
    assert isinstance(conn.sock, ssl.SSLSocket)
    assert conn.sock.version() == "TLSv1" and conn.sock.cipher()[0] in ("AES128-SHA", "AES256-SHA")
    conn.close()
    captured = [json.loads(p.read_text()) for p in (served.data / "capture").glob("*.json")]
    mine = [c for c in captured if me.mac in c["request"]["body"].get("text", "")]
    assert mine and mine[0]["tls"]["version"] == "TLSv1" and mine[0]["tls"]["sni_sent"] is False


def test_an_internal_phone_updates_over_plain_http(served: Served) -> None:
    records, state = rounds(phone(2), served.settings("internal-http"))
    assert outcomes(records) == ["updated", "current"] and state.version == APPROVED


def test_a_phone_that_runs_the_approved_version_is_told_zero(served: Served) -> None:
    records, state = rounds(phone(3), served.settings())
    state_before = PhoneState(APPROVED)
    record = run_round(phone(3), state_before, served.settings())
    assert (
        record.outcome == "current" and record.offered is None and state_before.version == APPROVED
    )
    assert state.version == APPROVED


# -- outside -----------------------------------------------------------------------------


def test_an_external_phone_without_credentials_is_refused(served: Served) -> None:
    me = phone(10, external=True, source="127.0.0.21")
    record = run_round(me, PhoneState(), served.settings("external-https"))
    assert (record.outcome, record.cause) == ("failed", "refused-401")


@pytest.mark.parametrize(("scheme", "number"), [("basic", 11), ("ntlm", 12)])
def test_an_external_phone_updates_with_its_users_credentials(
    served: Served, scheme: str, number: int
) -> None:
    me = phone(number, external=True, user_id=USER, source=f"127.0.0.{number + 20}")
    settings = served.settings("external-https", credentials=Credentials(USER, PASSWORD, scheme))
    records, state = rounds(me, settings)
    assert outcomes(records) == ["updated", "current"] and state.version == APPROVED
    assert [r.auth for r in records] == [scheme, scheme]


def test_wrong_credentials_are_refused(served: Served) -> None:
    me = phone(13, external=True, user_id=USER, source="127.0.0.33")
    settings = served.settings("external-https", credentials=Credentials(USER, "wrong", "basic"))
    record = run_round(me, PhoneState(), settings)
    assert (record.outcome, record.cause) == ("failed", "refused-401")


# -- a cut download ------------------------------------------------------------------------


class CuttingProxy:
    """Relays TCP from `listen` to the appliance; the first image GET's answer is cut after
    `keep` bytes (None: nothing is cut; `stall`: nothing more is sent, the connection is left
    open), or with `corrupt` its body's first byte flipped.
    Counts connections, remembers request heads."""

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        keep: int | None,
        corrupt: bool = False,
        stall: bool = False,
    ) -> None:
        self.upstream, self.keep, self.corrupt, self.stall = upstream, keep, corrupt, stall
        self.heads: list[bytes] = []
        self.cut = keep is None  # None: never cut
        self.connections = 0
        self.server = socket.create_server(listen)
        self.server.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream, 10)
        client.settimeout(10)
        cut_this = threading.Event()

        def down() -> None:
            sent = 0
            head = b""
            try:
                while data := upstream.recv(65536):
                    if cut_this.is_set() and self.corrupt and head is not None:
                        head += data  # flip the body's first byte
                        end = head.find(b"\r\n\r\n")
                        if end < 0 or end + 4 >= len(head):
                            continue
                        data = head[: end + 4] + bytes([head[end + 4] ^ 0xFF]) + head[end + 5 :]
                        head = None  # type: ignore[assignment]
                        client.sendall(data)
                        continue
                    if (
                        cut_this.is_set()
                        and not self.corrupt
                        and sent + len(data) >= (self.keep or 0)
                    ):
                        client.sendall(data[: (self.keep or 0) - sent])
                        if self.stall:  # nothing more, nothing closed: the client times out
                            self.stopping.wait(60)
                        break
                    client.sendall(data)
                    sent += len(data)
            except OSError:
                pass
            finally:
                for end in (client, upstream):  # shutdown: the FIN goes out at once
                    with contextlib.suppress(OSError):
                        end.shutdown(socket.SHUT_RDWR)
                    end.close()

        pump = threading.Thread(target=down, daemon=True)
        pump.start()
        try:
            while data := client.recv(65536):
                self.heads.append(data.split(b"\r\n\r\n", 1)[0])
                if data.startswith(b"GET ") and b"CPE.nbt" in data and not self.cut:
                    self.cut = True
                    cut_this.set()
                upstream.sendall(data)
        except OSError:
            pass
        pump.join(15)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.server.close()


def test_a_cut_download_resumes_with_range(served: Served) -> None:
    port = served.ports["internal-http"]  # the port BaseURL names, on another address
    proxy = CuttingProxy(("127.0.0.77", port), (HOST, port), keep=3000)
    try:
        settings = served.settings("internal-http")
        settings = replace(settings, net=replace(settings.net, connect="127.0.0.77"))
        records, state = rounds(phone(20), settings)
    finally:
        proxy.close()
    assert outcomes(records) == ["updated", "current"] and state.version == APPROVED
    assert proxy.cut and records[0].resumed == 1
    ranges = [h for h in proxy.heads if b"\r\nRange: bytes=" in h]
    assert len(ranges) == 1, (records, proxy.heads)
    assert b"CPE.nbt" in ranges[0] and b"\r\nIf-Range: " in ranges[0]


def test_a_stalled_download_resumes_from_what_arrived(served: Served) -> None:
    port = served.ports["internal-http"]
    proxy = CuttingProxy(("127.0.0.80", port), (HOST, port), keep=3000, stall=True)
    try:
        settings = served.settings("internal-http")
        net = replace(settings.net, connect="127.0.0.80", timeout=3.0)
        record = run_round(phone(24), PhoneState(), replace(settings, net=net))
    finally:
        proxy.close()
    assert record.outcome == "updated" and record.resumed == 1, record.detail
    ranges = [h for h in proxy.heads if b"\r\nRange: bytes=" in h]
    start = re.search(rb"\r\nRange: bytes=(\d+)-", ranges[0]) if len(ranges) == 1 else None
    assert start is not None and int(start.group(1)) > 0, proxy.heads  # the bytes that came


def test_a_corrupted_image_fails_its_sha256(served: Served) -> None:
    port = served.ports["internal-http"]
    proxy = CuttingProxy(("127.0.0.79", port), (HOST, port), keep=None, corrupt=True)
    proxy.cut = False  # the first image GET is the one changed
    try:
        settings = served.settings("internal-http")
        settings = replace(settings, net=replace(settings.net, connect="127.0.0.79"))
        record = run_round(phone(23), PhoneState(), settings)
    finally:
        proxy.close()
    assert (record.outcome, record.cause) == ("failed", "sha256"), record.detail
    assert "CPE.nbt" in record.detail


def test_keep_alive_makes_one_connection_a_round(served: Served) -> None:
    port = served.ports["internal-http"]
    proxy = CuttingProxy(("127.0.0.78", port), (HOST, port), keep=None)
    try:
        settings = served.settings("internal-http", keep_alive=True)
        settings = replace(settings, net=replace(settings.net, connect="127.0.0.78"))
        records, state = rounds(phone(21), settings)
    finally:
        proxy.close()
    assert outcomes(records) == ["updated", "current"] and state.version == APPROVED
    assert proxy.connections == 2  # check, image and signature; then the second check
    assert sum(h.startswith((b"GET ", b"POST ")) for h in proxy.heads) == 4


def test_an_external_phone_keeps_its_ntlm_connection_for_the_downloads(served: Served) -> None:
    me = phone(22, external=True, user_id=USER, source="127.0.0.42")
    credentials = Credentials(USER, PASSWORD, "ntlm")
    settings = served.settings("external-https", credentials=credentials, keep_alive=True)
    records, state = rounds(me, settings)
    assert outcomes(records) == ["updated", "current"] and state.version == APPROVED
    assert records[0].auth == "ntlm"


# -- discovery -----------------------------------------------------------------------------


def test_dns_discovery_finds_the_appliance(served: Served) -> None:
    settings = served.settings(
        server=None, dns=(HOST, served.ports["dns-udp"]), domain="example.com",
        port=served.ports["internal-https"],
    )  # fmt: skip
    settings = replace(settings, net=replace(settings.net, connect=None))
    records, state = rounds(phone(30), settings)
    assert outcomes(records) == ["updated", "current"] and state.version == APPROVED
    assert (
        records[0].server
        == f"https://{FQDN}:{served.ports['internal-https']}/RequestHandler/ucdevice.upx"
    )
    assert "dns" in records[0].seconds and "dhcp" not in records[0].seconds


def _can_bind_client_port(address: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((address, 68))
    except OSError:
        return False
    return True


def test_dhcpinform_then_dns_finds_the_appliance(served: Served) -> None:
    """serve answers at ciaddr, port 68: only a privileged test can listen there."""
    source = "127.0.0.41"
    if os.geteuid() != 0 or not _can_bind_client_port(source):
        pytest.skip("the DHCPACK goes to port 68, which this test cannot bind")
    info = inform((HOST, served.dhcp_port), mac_of(40), source)
    assert info.sip_servers == ("sip.example.com",) and info.domain == "example.com"
    settings = served.settings(
        server=None, dhcp=(HOST, served.dhcp_port), dns=(HOST, served.ports["dns-udp"]),
        port=served.ports["internal-https"],
    )  # fmt: skip
    settings = replace(settings, net=replace(settings.net, connect=None))
    records, state = rounds(phone(41, source=source), settings)
    assert outcomes(records) == ["updated", "current"] and state.version == APPROVED
    assert {"dhcp", "dns", "check", "download"} <= set(records[0].seconds)


# -- a fleet -------------------------------------------------------------------------------


def test_a_fleet_of_50_updates_and_the_inventory_shows_every_phone(served: Served) -> None:
    sources = tuple(f"127.0.4.{i}" for i in range(1, 51))
    spec = FleetSpec(
        models=SAMPLE_MODELS, external_share=0.2, sources=sources, first_number=1000,
        external_user_id=USER,
    )  # fmt: skip
    phones = fleet(50, spec)
    settings = served.settings(
        credentials=Credentials(USER, PASSWORD),
        external_server=f"https://{FQDN}:{served.ports['external-https']}",
    )
    schedule = Schedule(concurrency=10, jitter=0.5, idle=0.0, rounds=3, deadline=300.0)
    runs, stats = run_fleet(phones, settings, schedule)
    assert dict(stats.failures) == {}
    assert (stats.checks, stats.updates, stats.current) == (100, 50, 50)
    assert len(stats.seconds["check"]) == 100 and len(stats.seconds["download"]) == 50
    assert all(r.state.version == APPROVED for r in runs)
    macs = {p.mac for p in phones}
    deadline = time.monotonic() + WAIT_SECONDS  # serve writes the inventory once a second
    while True:
        store = Store.open(served.data / "ucupdates.sqlite3")
        try:
            seen = {d.mac: d for d in store.devices() if d.mac in macs}
        finally:
            store.close()
        if len(seen) == 50 and all(d.version == APPROVED for d in seen.values()):
            break
        assert time.monotonic() < deadline, f"{len(seen)} of 50 phones in the inventory"
        time.sleep(0.2)
    assert {d.mac: d.address for d in seen.values()} == {p.mac: p.source for p in phones}
    zones = {str(d.zone) for d in seen.values()}
    assert sum(str(d.zone) == "external" for d in seen.values()) == 10, zones


def test_the_command_runs_one_phone_and_a_fleet(served: Served, tmp_path: Path) -> None:
    common = ("--server", f"https://{FQDN}:{served.ports['internal-https']}", "--connect", HOST,
              "--ca", served.ca, "--idle", "0")  # fmt: skip
    one = run_cli(served.data, "phone-sim", *common, "--mac", mac_of(2000), timeout=120)
    assert one.returncode == 0, one.stderr
    assert "round 1: updated to " + APPROVED in one.stdout and "round 2: Downloads 0" in one.stdout
    assert f"Current version: {APPROVED}" in one.stdout and mac_of(2000) in one.stdout
    out = tmp_path / "fleet.json"
    fleet_args = ("--fleet", "5", "--first", "2100", "--models", "Polycom/CX600,HP/4120")
    many = run_cli(served.data, "phone-sim", *common, *fleet_args, "--json", str(out), timeout=120)
    assert many.returncode == 0, many.stderr
    assert "phones 5, checks 10, updates 5, up to date 5, failed 0" in many.stdout
    assert "5/5 phones done" in many.stderr  # the last progress line (not a terminal)
    result = json.loads(out.read_text())
    assert result["summary"]["updates"] == 5 and len(result["phones"]) == 5
    assert {p["version"] for p in result["phones"]} == {APPROVED}
