"""Options 43 and 120 and the snippets for other DHCP servers.

The bytes are checked against the protocol reference's examples; every snippet is fed to
the real server's own config checker (kea-dhcp4 -t, dhcpd -t, dnsmasq --test), and where
the server runs on loopback (Kea, dnsmasq: as root), a real DHCPINFORM to it must come
back with exactly our bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.discovery.dhcp_options import (
    DhcpOptionError,
    decode,
    option43,
    option120,
    parse_option43,
    parse_option120,
    vlan_option43,
)
from appliance.discovery.dhcp_snippets import (
    LyncOptions,
    dhcp_options_command,
    dnsmasq_snippet,
    isc_snippet,
    kea_snippet,
    netsh_snippet,
)
from appliance.testing import free_port

# docs/protocol.md §4, for sip.contoso.com
REF_43 = (
    "010c4d532d55432d436c69656e7402056874747073030f7369702e636f6e746f736f2e636f6d"
    "040334343305252f4365727450726f762f4365727450726f766973696f6e696e67536572766963652e737663"
)
REF_120 = "000373697007636f6e746f736f03636f6d00"
SIP = "sip.contoso.com"


def lync(vlan: int | None = 100, servers: tuple[str, ...] = (SIP,)) -> LyncOptions:
    return LyncOptions.build(servers, SIP, 443, vlan)


# -- the bytes --------------------------------------------------------------------------


def test_option43_is_the_reference_example() -> None:
    assert option43(SIP).hex() == REF_43
    assert option43(SIP + ".").hex() == REF_43


def test_option120_is_the_reference_example() -> None:
    assert option120([SIP]).hex() == REF_120
    assert option120([SIP + "."]).hex() == REF_120


def test_option120_lists_several_servers_in_order() -> None:
    data = option120(["sip.contoso.com", "pool2.fabrikam.org", "a.b.c.example"])
    assert data == (
        b"\x00"
        + b"\x03sip\x07contoso\x03com\x00"
        + b"\x05pool2\x08fabrikam\x03org\x00"
        + b"\x01a\x01b\x01c\x07example\x00"
    )
    assert parse_option120(data) == (0, ["sip.contoso.com", "pool2.fabrikam.org", "a.b.c.example"])


def test_option43_carries_port_scheme_and_path() -> None:
    subs = {
        s.name: s.value for s in parse_option43(option43("web.contoso.com", 4443, "http", "/x"))
    }
    assert subs == {
        "UCIdentifier": b"MS-UC-Client",
        "URLScheme": b"http",
        "WebServerFQDN": b"web.contoso.com",
        "WebServerPort": b"4443",
        "CertProvRelPath": b"/x",
    }


def test_vlan_is_sub_option_10_in_ascii() -> None:
    assert vlan_option43(100) == bytes.fromhex("0a03313030")
    assert vlan_option43(4094) == b"\x0a\x044094"
    assert "10 VoiceVLAN" in decode("0a03313030")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: option120(["sip." + "a" * 64 + ".com"]), "at most 63"),
        (lambda: option120([f"{'s' * 60}.{'t' * 60}.{n}.example.com" for n in range(3)]), "255"),
        (lambda: option120([]), "at least one"),
        (lambda: option120(["sip"]), "fully qualified"),
        (lambda: option120(["sip..contoso.com"]), "empty label"),
        (lambda: option120(["sip_x.contoso.com"]), "not a host name label"),
        (lambda: option120(["1.2.3.4"]), "fully qualified"),
        (lambda: option43(".".join(["w" * 60] * 4)), "option 43 would be"),
        (lambda: option43(SIP, 0), "out of range"),
        (lambda: option43(SIP, 70000), "out of range"),
        (lambda: option43("sip.cöntoso.com"), "label"),
        (lambda: vlan_option43(0), "1-4094"),
        (lambda: vlan_option43(4095), "1-4094"),
    ],
)
def test_bad_input_is_a_clear_error(build: object, message: str) -> None:
    with pytest.raises(DhcpOptionError, match=message):
        build()  # type: ignore[operator]


def test_option120_at_exactly_255_bytes_is_accepted() -> None:
    # 1 encoding byte + names: each name "x{n}.example.com" label-encoded
    names = [f"{'n' * 61}{i}.example.com" for i in range(3)]  # 3 * (1+62+1+7+1+3+1) = 228
    short = option120(names)
    pad = 255 - len(short) - 1 - 13  # one more name: label of `pad` bytes + ".example.com"
    data = option120([*names, f"{'p' * pad}.example.com"])
    assert len(data) == 255
    with pytest.raises(DhcpOptionError, match="256 bytes"):
        option120([*names, f"{'p' * (pad + 1)}.example.com"])


# -- decoding ---------------------------------------------------------------------------


def spaced(hex_text: str, sep: str) -> str:
    return sep.join(hex_text[i : i + 2] for i in range(0, len(hex_text), 2))


@pytest.mark.parametrize(
    "text",
    [
        REF_43,
        REF_43.upper(),
        spaced(REF_43, " "),
        spaced(REF_43, ":"),
        "43: " + spaced(REF_43, ":"),
    ],
)
def test_decode_option43(text: str) -> None:
    out = decode(text)
    assert out.startswith("option 43")
    for line in (
        "1 UCIdentifier     MS-UC-Client",
        "2 URLScheme        https",
        "3 WebServerFQDN    sip.contoso.com",
        "4 WebServerPort    443",
        "5 CertProvRelPath  /CertProv/CertProvisioningService.svc",
    ):
        assert line in out


@pytest.mark.parametrize(
    "text", [REF_120, spaced(REF_120, " "), "120:" + spaced(REF_120, ":"), " 0x" + REF_120]
)
def test_decode_option120(text: str) -> None:
    out = decode(text)
    assert out.startswith("option 120")
    assert "encoding 0" in out
    assert out.splitlines()[1].strip() == SIP


def test_decode_takes_raw_bytes_and_round_trips_several_names() -> None:
    names = ["sip.contoso.com", "sip2.contoso.com"]
    out = decode(option120(names))
    assert [line.strip() for line in out.splitlines()[1:]] == names


def test_decode_option120_ipv4_addresses() -> None:
    out = decode("120:01 c0000201 c0000202")
    assert "encoding 1" in out
    assert [line.strip() for line in out.splitlines()[1:]] == ["192.0.2.1", "192.0.2.2"]
    assert "192.0.2.1" in decode("01c0000201")  # no prefix: not sub-options, so option 120


def test_decode_option120_follows_backward_compression_pointers() -> None:
    # "sip.contoso.com", then "pool.<pointer to contoso.com at offset 4 of the names>"
    data = b"\x00\x03sip\x07contoso\x03com\x00\x04pool\xc0\x04"
    assert parse_option120(data) == (0, ["sip.contoso.com", "pool.contoso.com"])
    with pytest.raises(DhcpOptionError, match="point back"):
        parse_option120(b"\x00\x03sip\xc0\x00")  # points at its own name: a loop


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no hex digits"),
        ("zz", "not a hex digit"),
        ("0a0", "odd number"),
        ("43:010c4d53", "claims 12 bytes"),
        ("120:0003736970", "not terminated"),
        ("120:07", "unknown encoding 7"),
        ("120:01c00002", "no names|IPv4 addresses"),
        ("ff" * 256, "at most 255"),
        ("4301", "neither option 43 nor 120"),
    ],
)
def test_decode_errors(text: str, message: str) -> None:
    with pytest.raises(DhcpOptionError, match=message):
        decode(text)


# -- the command's text -----------------------------------------------------------------


def test_command_prints_both_options_and_every_snippet() -> None:
    out = dhcp_options_command([SIP], None, 443, 100, None)
    assert f"option 120: {REF_120}" in out
    assert f"option 43 (vendor class MS-UC-Client): {REF_43}" in out
    assert "option 43 (vendor class CPE-OCPHONE, VLAN 100): 0a03313030" in out
    for heading in ("== Kea", "== ISC dhcpd", "== dnsmasq", "== Windows DHCP"):
        assert heading in out
    assert "https://sip.contoso.com:443/CertProv/CertProvisioningService.svc" in out


def test_command_without_vlan_has_no_cpe_ocphone() -> None:
    out = dhcp_options_command([SIP, "sip2.contoso.com"], "web.contoso.com", 4443, None, None)
    assert "CPE-OCPHONE" not in out.upper()
    assert option43("web.contoso.com", 4443).hex() in out
    assert option120([SIP, "sip2.contoso.com"]).hex() in out


def test_command_decodes() -> None:
    assert "WebServerFQDN    sip.contoso.com" in dhcp_options_command([], None, 443, None, REF_43)


def test_command_errors_are_one_line() -> None:
    with pytest.raises(DhcpOptionError, match="at least one SIP server"):
        dhcp_options_command([], None, 443, None, None)
    with pytest.raises(DhcpOptionError) as e:
        dhcp_options_command(["bad_name.contoso.com"], None, 443, None, None)
    assert "\n" not in str(e.value)


# -- Windows netsh ----------------------------------------------------------------------


def test_netsh_sets_every_sub_option_and_option_120() -> None:
    text = netsh_snippet(lync())
    assert REF_120.upper() in text
    values: dict[tuple[str, int], bytes] = {}
    for line in text.splitlines():
        words = line.split()
        if words[:4] == ["netsh", "dhcp", "server", "set"]:
            vendor = next((w.split("=", 1)[1] for w in words if w.startswith("vendor=")), "")
            values[(vendor, int(words[5]))] = bytes.fromhex(words[-1])
    rebuilt = b"".join(
        bytes((code, len(v))) + v for (vendor, code), v in values.items() if vendor == "MSUCClient"
    )
    assert rebuilt.hex() == REF_43  # Windows assembles option 43 from these
    assert values[("", 120)].hex() == REF_120
    assert values[("CPEOCPHONE", 10)] == b"100"
    assert 'add class MSUCClient "UC Vendor Class Id" "MS-UC-Client" 1' in text


# -- the other servers' own checkers ----------------------------------------------------


def need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian package: see the test's docstring)")
    return path


def kea_config(snippet: str, *, live: bool = False) -> str:
    interfaces = '["lo"], "dhcp-socket-type": "udp"' if live else "[]"
    subnet = "127.0.0.0/8" if live else "192.0.2.0/24"
    return (
        '{"Dhcp4": {\n'
        f'"interfaces-config": {{"interfaces": {interfaces}}},\n'
        '"lease-database": {"type": "memfile", "persist": false},\n'
        f'"subnet4": [{{"id": 1, "subnet": "{subnet}"}}],\n'
        f"{snippet}}}}}\n"
    )


def kea_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "KEA_PIDFILE_DIR": str(tmp_path), "KEA_LOCKFILE_DIR": str(tmp_path)}


def run_check(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=30, env=kea_env(tmp_path), check=False
    )


@pytest.mark.parametrize("vlan", [100, None])
def test_kea_accepts_the_snippet(tmp_path: Path, vlan: int | None) -> None:
    """Debian package kea-dhcp4-server."""
    kea = need("kea-dhcp4")
    snippet = kea_snippet(lync(vlan, (SIP, "sip2.contoso.com")))
    json.loads("{" + snippet + "}")  # the fragment is the inside of a JSON map
    conf = tmp_path / "kea.json"
    conf.write_text(kea_config(snippet))
    result = run_check([kea, "-t", str(conf)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # the check is a real one: a broken option is refused
    conf.write_text(kea_config(snippet.replace('"data": "010C', '"data": "XY0C')))
    assert run_check([kea, "-t", str(conf)], tmp_path).returncode != 0


@pytest.mark.parametrize("vlan", [100, None])
def test_isc_dhcpd_accepts_the_snippet(tmp_path: Path, vlan: int | None) -> None:
    """Debian package isc-dhcp-server."""
    dhcpd = need("dhcpd")
    conf = tmp_path / "dhcpd.conf"
    head = "subnet 192.0.2.0 netmask 255.255.255.0 {}\n"
    snippet = isc_snippet(lync(vlan, (SIP, "sip2.contoso.com")))
    conf.write_text(head + snippet)
    result = run_check([dhcpd, "-t", "-cf", str(conf)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    conf.write_text(head + snippet.replace("01:0c:4d", "01:0c:4x"))
    assert run_check([dhcpd, "-t", "-cf", str(conf)], tmp_path).returncode != 0


@pytest.mark.parametrize("vlan", [100, None])
def test_dnsmasq_accepts_the_snippet(tmp_path: Path, vlan: int | None) -> None:
    """Debian package dnsmasq-base (or dnsmasq)."""
    dnsmasq = need("dnsmasq")
    conf = tmp_path / "dnsmasq.conf"
    snippet = dnsmasq_snippet(lync(vlan))
    conf.write_text(snippet)
    result = run_check([dnsmasq, "--test", f"--conf-file={conf}"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    conf.write_text(snippet.replace("dhcp-option=", "dhcp-opton="))
    assert run_check([dnsmasq, "--test", f"--conf-file={conf}"], tmp_path).returncode != 0


# -- the servers answering with these snippets, on loopback ------------------------------


def inform(vendor_class: str, xid: int) -> bytes:
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, xid, 0, 0,
        socket.inet_aton("127.0.0.1"), bytes(4), bytes(4), bytes(4),
        bytes.fromhex("0004f2000001").ljust(16, b"\0"), bytes(64), bytes(128),
    )  # fmt: skip
    vc = vendor_class.encode()
    options = bytes((53, 1, 8, 60, len(vc))) + vc + bytes((55, 2, 43, 120, 255))
    return header + b"\x63\x82\x53\x63" + options


def reply_options(data: bytes) -> dict[int, bytes]:
    assert data[236:240] == b"\x63\x82\x53\x63"
    found: dict[int, bytes] = {}
    i = 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        found[data[i]] = found.get(data[i], b"") + data[i + 2 : i + 2 + data[i + 1]]
        i += 2 + data[i + 1]
    return found


@pytest.fixture
def client() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.5)
    yield s
    s.close()


def ask(client: socket.socket, server_port: int, vendor_class: str, tries: int = 20) -> bytes:
    """DHCPINFORM until answered (the server may still be starting)."""
    for attempt in range(tries):
        client.sendto(inform(vendor_class, 0x1000 + attempt), ("127.0.0.1", server_port))
        try:
            data, _ = client.recvfrom(4096)
            return data
        except TimeoutError:
            continue
    raise AssertionError(f"no answer to {vendor_class} from port {server_port}")


def live_server(argv: list[str], tmp_path: Path) -> subprocess.Popen[bytes]:
    if os.geteuid() != 0:
        pytest.skip("running a DHCP server on loopback needs root (CAP_NET_ADMIN/RAW)")
    log = (tmp_path / "server.log").open("wb")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=kea_env(tmp_path))


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def test_dnsmasq_with_the_snippet_answers_with_our_bytes(
    tmp_path: Path, client: socket.socket
) -> None:
    dnsmasq = need("dnsmasq")
    conf = tmp_path / "dnsmasq.conf"
    options = lync(100, (SIP, "sip2.contoso.com"))
    conf.write_text(dnsmasq_snippet(options))
    server_port, client_port = free_port(socket.SOCK_DGRAM), client.getsockname()[1]
    proc = live_server(
        [
            dnsmasq, "--keep-in-foreground", "--port=0", "--interface=lo", "--bind-interfaces",
            "--dhcp-range=127.0.0.0,static,255.0.0.0",
            f"--dhcp-alternate-port={server_port},{client_port}",
            f"--conf-file={conf}", f"--dhcp-leasefile={tmp_path / 'leases'}",
            f"--pid-file={tmp_path / 'pid'}", "--user=root",
        ],
        tmp_path,
    )  # fmt: skip
    try:
        got = reply_options(ask(client, server_port, "MS-UC-Client"))
        assert got[43] == options.option43
        assert got[120] == options.option120
        assert reply_options(ask(client, server_port, "CPE-OCPHONE"))[43] == options.vlan43
        # the OCS 2007 phones' spelling (docs/protocol.md §4) gets the same VLAN
        assert reply_options(ask(client, server_port, "CPE-OCPhone"))[43] == options.vlan43
    finally:
        stop(proc)


def test_kea_with_the_snippet_answers_with_our_bytes(tmp_path: Path, client: socket.socket) -> None:
    kea = need("kea-dhcp4")
    options = lync(100, (SIP, "sip2.contoso.com"))
    conf = tmp_path / "kea.json"
    conf.write_text(kea_config(kea_snippet(options), live=True))
    server_port, client_port = free_port(socket.SOCK_DGRAM), client.getsockname()[1]
    proc = live_server(
        [kea, "-c", str(conf), "-p", str(server_port), "-P", str(client_port)], tmp_path
    )
    try:
        time.sleep(0.2)
        got = reply_options(ask(client, server_port, "MS-UC-Client"))
        assert got[43] == options.option43
        assert got[120] == options.option120
        assert reply_options(ask(client, server_port, "CPE-OCPHONE"))[43] == options.vlan43
        # the OCS 2007 phones' spelling (docs/protocol.md §4) gets the same VLAN
        assert reply_options(ask(client, server_port, "CPE-OCPhone"))[43] == options.vlan43
    finally:
        stop(proc)


@pytest.mark.parametrize("snippet", [kea_snippet, isc_snippet, dnsmasq_snippet, netsh_snippet])
def test_every_snippet_matches_both_spellings_of_the_vlan_class(snippet: Any) -> None:
    """CPE-OCPHONE (Lync's docs) and CPE-OCPhone (the OCS 2007 phones' release notes):
    DHCP servers compare the vendor class case-sensitively (docs/protocol.md §4)."""
    text = snippet(lync(100))
    assert '"CPE-OCPHONE"' in text or ",CPE-OCPHONE" in text or "'CPE-OCPHONE'" in text
    assert '"CPE-OCPhone"' in text or ",CPE-OCPhone" in text or "'CPE-OCPhone'" in text
