"""Phones on two networks, the appliance between them: `ucupdates phone-sim` end to end.

Two network namespaces made for the run, an internal and an external subnet (inside
198.18.0.0/15, the benchmarking range: nothing leaves the machine), each joined to the
host by a veth pair. `ucupdates serve` runs on the host, its phone listeners bound to the
veth host addresses: internal HTTPS, plain HTTP, DNS and the DHCPINFORM responder on the
internal one, external HTTPS on the external one; `zones.internal_networks` names only
the internal subnet and loopback (the Control Panel's). Phones run inside the namespaces
(`ip netns exec`), each from its own address, and show that:

- internal phones find the appliance through DHCPINFORM and DNS and update anonymously;
- external phones are refused without credentials and update with them (Basic, NTLM);
  a phone of the external subnet is external on the internal listeners too;
- a test device gets the pending version while the others stay on the approved one;
- a restore (the CLI on the same data folder) rolls phones back on their next check;
- the inventory (the Control Panel's API), the audit file and syslog (rsyslogd where it
  is installed, else a UDP socket of the test) show every phone.

Needs root and `ip`; skipped, with the reason, where namespaces cannot be made. Every
wait is bounded, nothing is timed, and everything is removed at the end, also after a
failure.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from appliance.phonesim import mac_of
from appliance.testing import (
    REPO,
    Subnet,
    free_port,
    in_namespace,
    namespaces_unavailable,
    run_cli,
    serving,
    veth_subnets,
)

pytestmark = pytest.mark.slow  # namespaces, a serving appliance, phones as processes

FQDN = "ucupdates-r2.example.com"
RUNNING, APPROVED, PENDING = "4.0.7577.4366", "4.0.7577.4387", "4.0.7577.4400"
USER, PASSWORD = "alice@example.com", "correct horse battery staple"
ADMIN, ADMIN_PASSWORD = "admin", "a long admin passphrase"
MODELS = "Polycom/CX600/A,Polycom/CX500/A,Aastra/6721ip/A,HP/4120/A"  # in the sample package
PHONES_PER_SUBNET = 14  # .2 to .15 of each subnet; fleets use .9 to .14 (x.8/29)
PHONE_SECONDS = 60.0  # one phone-sim run: a few phones, two or three rounds each
WAIT_SECONDS = 20.0
STARTUP_SECONDS = 60.0


# -- syslog: rsyslogd, or a socket ------------------------------------------------------------


@dataclass
class Syslog:
    """What serve sent to syslog: `messages()` are `MSGID [structured data] ...` lines."""

    port: int
    out: Path | None = None  # rsyslogd's file; None: `got`, the socket's messages
    got: list[str] = field(default_factory=list)

    def messages(self) -> list[str]:
        if self.out is not None:
            return self.out.read_text().splitlines() if self.out.exists() else []
        return list(self.got)


def _udp_listening(port: int) -> bool:
    return f"0100007F:{port:04X}" in Path("/proc/net/udp").read_text()


@contextmanager
def syslog_receiver(root: Path) -> Iterator[Syslog]:
    """rsyslogd on 127.0.0.1 (imudp, one line a message), else a UDP socket of the test."""
    if shutil.which("rsyslogd") is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.2)
            sink, stop = Syslog(sock.getsockname()[1]), threading.Event()

            def receive() -> None:
                while not stop.is_set():
                    try:
                        data = sock.recv(65536).decode(errors="replace")
                    except TimeoutError:
                        continue
                    found = re.match(r"<\d+>1 (?:\S+ ){4}(\S+ .*)", data, re.DOTALL)
                    sink.got.append(found.group(1) if found else data)

            thread = threading.Thread(target=receive, daemon=True)
            thread.start()
            try:
                yield sink
            finally:
                stop.set()
                thread.join(5)
        return
    (root / "work").mkdir(parents=True)
    sink = Syslog(free_port(socket.SOCK_DGRAM), root / "messages")
    conf = root / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{root / "work"}" maxMessageSize="8k")\n'
        'module(load="imudp")\n'
        f'input(type="imudp" address="127.0.0.1" port="{sink.port}")\n'
        'template(name="fields" type="string" string="%msgid% %structured-data%\\n")\n'
        f'*.* action(type="omfile" file="{sink.out}" template="fields")\n'
    )
    daemon = subprocess.Popen(
        ["rsyslogd", "-n", "-f", str(conf), "-i", str(root / "rsyslogd.pid")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not _udp_listening(sink.port):
            if daemon.poll() is not None or time.monotonic() > deadline:
                output = daemon.stdout.read() if daemon.stdout else b""
                raise AssertionError(f"rsyslogd did not start: {output.decode(errors='replace')}")
            time.sleep(0.05)
        yield sink
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=WAIT_SECONDS)
        if daemon.stdout is not None:
            daemon.stdout.close()


def syslog_params(line: str) -> dict[str, str]:
    return {
        k: re.sub(r"\\(.)", r"\1", v) for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line)
    }


# -- the appliance ------------------------------------------------------------------------------


@dataclass
class Appliance:
    data: Path
    ports: dict[str, int]
    dhcp_port: int
    inside: Subnet
    outside: Subnet
    syslog: Syslog

    @property
    def ca(self) -> str:
        return str(self.data / "tls" / "ca.pem")


def _cli(data: Path, *args: str, stdin: str | None = None) -> str:
    result = run_cli(data, *args, stdin=stdin, timeout=PHONE_SECONDS)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def _dhcp_port(log: Path, host: str) -> int:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = re.search(rf"DHCPINFORM responder on {re.escape(host)}:(\d+)", log.read_text())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"serve did not say where DHCP listens: {log.read_text()}")


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("zones")
    data = base / "data"
    for version in (APPROVED, PENDING):
        package = base / f"{version}.cab"
        _cli(data, "make-sample-package", str(package), "--version", version,
             "--image-size", "6000")  # fmt: skip
        _cli(data, "import", str(package))
        if version == APPROVED:
            _cli(data, "approve", "--all-pending")
    _cli(data, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    _cli(data, "admin", "add", ADMIN, "--role", "admin", "--password-stdin",
         stdin=ADMIN_PASSWORD + "\n")  # fmt: skip
    _cli(data, "test-device", "add", "lab phone", "--mac", mac_of(400))
    octet = os.getpid() % 256  # parallel runs take different subnets
    wanted = [("ucin", f"198.18.{octet}.0/24", PHONES_PER_SUBNET),
              ("ucex", f"198.19.{octet}.0/24", PHONES_PER_SUBNET)]  # fmt: skip
    with veth_subnets(*wanted) as (inside, outside), syslog_receiver(base / "syslog") as syslog:
        config = base / "ucupdates.toml"
        config.write_text(
            f"data_dir = {json.dumps(str(data))}\n"
            'domains = ["example.com"]\n'
            "[listeners]\n"
            f'dns = "{inside.host}:0"\ninternal_https = "{inside.host}:0"\n'
            f'internal_http = "{inside.host}:0"\nexternal_https = "{outside.host}:0"\n'
            'admin = "127.0.0.1:0"\n'
            f'[zones]\ninternal_networks = ["127.0.0.0/8", "{inside.network}"]\n'
            f'[dhcp]\nenabled = true\nlisten = "{inside.host}:0"\n'
            'sip_servers = ["sip.example.com"]\n'
            f'[dns]\nexternal_address = "{outside.host}"\n'
            f'[syslog]\nenabled = true\ntarget = "udp://127.0.0.1:{syslog.port}"\n'
        )
        log = base / "serve.log"
        with serving(config, log, startup=STARTUP_SECONDS) as served:
            yield Appliance(
                data, served.ports, _dhcp_port(log, inside.host), inside, outside, syslog
            )


# -- phones ---------------------------------------------------------------------------------------


@dataclass
class Run:
    status: int
    output: str  # standard output and error
    phones: list[dict[str, Any]]  # phone-sim --json: each phone, its rounds

    def outcomes(self) -> list[list[str]]:
        return [
            [
                r["outcome"] if r["outcome"] != "failed" else f"failed:{r['cause']}"
                for r in p["rounds"]
            ]
            for p in self.phones
        ]


def phone_sim(app: Appliance, subnet: Subnet, *args: str) -> Run:
    """`ucupdates phone-sim ARGS` inside the subnet's namespace; a phone idles 0.2 s (not
    five minutes) after an update before it restarts and checks again."""
    out = app.data.parent / f"phones-{time.monotonic_ns()}.json"
    argv = [sys.executable, "-m", "appliance", "--data-dir", str(app.data), "phone-sim",
            "--ca", app.ca, "--idle", "0.2", "--json", str(out), *args]  # fmt: skip
    env = {**os.environ, "UCUPDATES_PHONE_PASSWORD": PASSWORD}
    result = subprocess.run(
        in_namespace(subnet, argv), cwd=REPO, env=env, capture_output=True, text=True,
        timeout=PHONE_SECONDS,
    )  # fmt: skip
    assert out.exists(), (result.returncode, result.stdout, result.stderr)
    return Run(
        result.returncode, result.stdout + result.stderr, json.loads(out.read_text())["phones"]
    )


def discovering(app: Appliance) -> tuple[str, ...]:
    """An internal phone's way in: DHCPINFORM, then DNS, then HTTPS on the internal port."""
    host = app.inside.host
    return ("--dhcp", f"{host}:{app.dhcp_port}", "--dns", f"{host}:{app.ports['dns-udp']}",
            "--port", str(app.ports["internal-https"]))  # fmt: skip


def outside(app: Appliance, *auth: str) -> tuple[str, ...]:
    """An external phone's way in: the external listener (as the reverse proxy publishes)."""
    server = f"https://{FQDN}:{app.ports['external-https']}"
    return ("--external", "--server", server, "--connect", app.outside.host, *auth)


def outside_by_dns(app: Appliance) -> tuple[str, ...]:
    """The same found through the appliance's DNS: its answer for an outside client is the
    external listener's address (`dns.external_address`), and the phone adds its port."""
    dns = f"{app.inside.host}:{app.ports['dns-udp']}"
    port = str(app.ports["external-https"])
    return ("--external", "--dns", dns, "--domain", "example.com", "--external-port", port)


def fleet_sources(subnet: Subnet) -> str:
    return f"{subnet.network.network_address + 8}/29"


def one(number: int, source: str) -> tuple[str, ...]:
    return ("--first", str(number), "--source", source)


# -- the inventory, the audit file, syslog ---------------------------------------------------------


def admin_api(app: Appliance, path: str, cookie: str | None = None) -> tuple[Any, str | None]:
    """A Control Panel request to 127.0.0.1, the certificate checked for FQDN."""
    context = ssl.create_default_context(cafile=app.ca)
    port = app.ports["admin"]
    conn = http.client.HTTPSConnection(FQDN, port, context=context, timeout=10)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sock = context.wrap_socket(raw, server_hostname=FQDN)
    try:
        if cookie is None:
            body = json.dumps({"name": ADMIN, "password": ADMIN_PASSWORD})
            conn.request("POST", path, body, {"Content-Type": "application/json"})
        else:
            conn.request("GET", path, headers={"Cookie": cookie})
        response = conn.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, (path, response.status, answer)
        set_cookie = response.headers.get("Set-Cookie")
    finally:
        conn.close()
    return answer, set_cookie.split(";", 1)[0] if set_cookie else None


def until(what: str, probe: Any) -> Any:
    """`probe()` until it returns something true (bounded): serve writes some of it later."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not (got := probe()):
        assert time.monotonic() < deadline, f"{what}: {probe(True)}"
        time.sleep(0.2)
    return got


def hex12(mac: str) -> str:
    return re.sub(r"[^0-9A-F]", "", mac.upper())


# -- the test -------------------------------------------------------------------------------------


def test_phones_inside_and_outside_update_through_the_zones(appliance: Appliance) -> None:
    app = appliance
    inside_fleet, outside_fleet = fleet_sources(app.inside), fleet_sources(app.outside)
    expected: dict[str, tuple[str, str]] = {}  # MAC -> (zone, version) at the end

    # Inside: discovery by DHCPINFORM and DNS, anonymous updates to the approved version
    # (phone 400 is a test device: the others do not get its pending version).
    run = phone_sim(app, app.inside, *discovering(app), "--fleet", "4", "--first", "100",
                    "--models", MODELS, "--source", inside_fleet, "--concurrency", "4")  # fmt: skip
    assert run.status == 0 and run.outcomes() == [["updated", "current"]] * 4, run.output
    assert {p["version"] for p in run.phones} == {APPROVED}
    assert all({"dhcp", "dns", "check", "download"} <= set(p["rounds"][0]["seconds"])
               for p in run.phones)  # fmt: skip
    assert all(p["rounds"][0]["auth"] is None for p in run.phones)
    expected |= {p["mac"]: ("internal", APPROVED) for p in run.phones}

    run = phone_sim(app, app.inside, *discovering(app), *one(400, app.inside.phones[0]))
    assert run.status == 0 and run.outcomes() == [["updated", "current"]], run.output
    assert run.phones[0]["version"] == PENDING
    expected[mac_of(400)] = ("internal", PENDING)

    # Outside: refused without credentials, updated with them, Basic and NTLM. The NTLM
    # fleet asks the appliance's DNS, whose answer for an outside client is the external
    # listener's address (the split horizon), for the check and for ExternalBaseURL.
    refused = phone_sim(app, app.outside, *outside(app), "--fleet", "3", "--first", "200",
                        "--models", MODELS, "--source", outside_fleet, "--rounds", "1")  # fmt: skip
    assert refused.status == 1 and refused.outcomes() == [["failed:refused-401"]] * 3
    assert {p["version"] for p in refused.phones} == {RUNNING}
    for way, scheme, first in ((outside(app), "basic", 200), (outside_by_dns(app), "ntlm", 300)):
        run = phone_sim(app, app.outside, *way, "--user", USER, "--auth", scheme,
                        "--fleet", "3", "--first", str(first), "--models", MODELS,
                        "--source", outside_fleet)  # fmt: skip
        assert run.status == 0 and run.outcomes() == [["updated", "current"]] * 3, run.output
        assert {p["version"] for p in run.phones} == {APPROVED}
        assert {r["auth"] for p in run.phones for r in p["rounds"]} == {scheme}
        expected |= {p["mac"]: ("external", APPROVED) for p in run.phones}
    assert all("dns" in p["rounds"][0]["seconds"] for p in run.phones)

    # The external subnet is external on the internal listeners too: HTTPS asks for a
    # password, plain HTTP is refused outright. Neither check leaves a trace of the phone.
    cross = (f"https://{FQDN}:{app.ports['internal-https']}",
             f"http://{FQDN}:{app.ports['internal-http']}")  # fmt: skip
    for server, number, cause in zip(cross, (600, 601), ("refused-401", "http-403"), strict=True):
        source = app.outside.phones[number - 600]
        run = phone_sim(app, app.outside, "--server", server, "--connect", app.inside.host,
                        *one(number, source), "--rounds", "1")  # fmt: skip
        assert run.outcomes() == [[f"failed:{cause}"]], run.output

    # Approve the pending version: phones move to it; restore: their next check rolls
    # them back to the version approved before.
    _cli(app.data, "approve", "--all-pending")
    movers = (
        (app.inside, (*discovering(app), *one(500, app.inside.phones[1]))),
        (app.outside, (*outside(app, "--user", USER), *one(501, app.outside.phones[2]))),
    )
    for subnet, args in movers:
        run = phone_sim(app, subnet, *args, "--version", APPROVED)
        assert run.outcomes() == [["updated", "current"]] and run.phones[0]["version"] == PENDING
    _cli(app.data, "restore", "--all")
    for subnet, args in movers:
        run = phone_sim(app, subnet, *args, "--version", PENDING)
        assert run.outcomes() == [["updated", "current"]], run.output
        assert run.phones[0]["version"] == APPROVED
    expected[mac_of(500)] = ("internal", APPROVED)
    expected[mac_of(501)] = ("external", APPROVED)
    assert len(expected) == 4 + 1 + 6 + 2

    check_inventory(app, expected)
    check_audit_file(app, expected)
    check_syslog(app, expected)


def in_subnet(address: str, zone: str, app: Appliance) -> bool:
    subnet = app.inside if zone == "internal" else app.outside
    return IPv4Address(address) in subnet.network


def check_inventory(app: Appliance, expected: dict[str, tuple[str, str]]) -> None:
    """The Control Panel's device list: every phone, its zone, address and version; the
    refused phones are not in it."""
    _, cookie = admin_api(app, "/api/login")
    assert cookie is not None

    def probe(report: bool = False) -> Any:
        rows = admin_api(app, "/api/devices?limit=1000", cookie)[0]["devices"]
        seen = {row["mac"]: row for row in rows}
        done = all(
            mac in seen and (seen[mac]["zone"], seen[mac]["version"]) == zone_version
            for mac, zone_version in expected.items()
        )
        return seen if report else (seen if done else None)

    seen = until("the inventory", probe)
    assert set(seen) == set(expected), set(seen) ^ set(expected)
    for mac, (zone, _) in expected.items():
        assert in_subnet(seen[mac]["address"], zone, app), seen[mac]


def check_audit_file(app: Appliance, expected: dict[str, tuple[str, str]]) -> None:
    """Today's audit file: a line for each check of every phone, from its own subnet."""

    def probe(report: bool = False) -> Any:
        lines = [
            line.split(";")
            for path in (app.data / "Logs" / "Audit").glob("RequestHandlerAuditLog_*.log")
            for line in path.read_text().splitlines()
        ]
        macs = {fields[3] for fields in lines}
        return lines if report or set(expected) <= macs else None

    lines = until("the audit file", probe)
    for fields in lines:
        assert fields[3] in expected, fields
        assert in_subnet(fields[1], expected[fields[3]][0], app), fields
    counts = {mac: sum(f[3] == mac for f in lines) for mac in expected}
    assert counts[mac_of(100)] == 2 and counts[mac_of(500)] == 4, counts  # every check


def check_syslog(app: Appliance, expected: dict[str, tuple[str, str]]) -> None:
    """Syslog: an `update.check` of every phone with its zone and address; the DHCPINFORM
    of every internal one; the test device's check says why it got the pending version."""

    def probe(report: bool = False) -> Any:
        checks: dict[str, list[dict[str, str]]] = {}
        informs: set[str] = set()
        for line in app.syslog.messages():
            msgid, params = line.split(" ", 1)[0], syslog_params(line)
            if msgid == "update.check" and "mac" in params:
                checks.setdefault(params["mac"], []).append(params)
            elif msgid == "dhcp.inform.answered" and "mac" in params:
                informs.add(hex12(params["mac"]))
        inside = {hex12(m) for m, (zone, _) in expected.items() if zone == "internal"}
        done = set(expected) <= set(checks) and inside <= informs
        return (checks, informs) if report or done else None

    checks, informs = until("syslog", probe)
    for mac, (zone, _) in expected.items():
        assert {c["zone"] for c in checks[mac]} == {zone}, checks[mac]
        assert all(in_subnet(c["client"], zone, app) for c in checks[mac]), checks[mac]
    assert checks[mac_of(400)][0]["reason"] == "pending-test-device"
    assert checks[mac_of(400)][0]["version"] == PENDING
    assert {c["reason"] for c in checks[mac_of(100)]} == {"approved", "up-to-date"}
