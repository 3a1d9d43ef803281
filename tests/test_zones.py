"""Who is inside the firewall (docs/protocol.md §2): client address and zone, as tables."""

from __future__ import annotations

import pytest

from appliance.config import Network, ZoneSettings
from appliance.model import Zone
from appliance.zones import client_address, zone_of

CHECK = b"/RequestHandler/ucdevice.upx"

# Two reverse proxies in the DMZ (one of them also on IPv6); the default internal networks.
PROXIED = ZoneSettings(
    trusted_proxies=(
        Network.parse("172.16.5.10"),
        Network.parse("172.16.5.11"),
        Network.parse("fd00:5::10"),
    )
)
PLAIN = ZoneSettings()


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        pytest.param("192.168.1.20", [], "192.168.1.20", id="no-proxy-no-xff"),
        pytest.param("203.0.113.7", [], "203.0.113.7", id="public-peer-no-xff"),
        pytest.param(
            "203.0.113.7", [b"192.168.1.20"], "203.0.113.7", id="untrusted-public-peer-xff-ignored"
        ),
        pytest.param(
            "192.168.1.5", [b"203.0.113.7"], "192.168.1.5", id="untrusted-internal-peer-xff-ignored"
        ),
        pytest.param("172.16.5.10", [b"203.0.113.7"], "203.0.113.7", id="trusted-proxy"),
        pytest.param("172.16.5.10", [b"192.168.1.20"], "192.168.1.20", id="trusted-proxy-inside"),
        pytest.param("172.16.5.10", [], "172.16.5.10", id="trusted-proxy-without-xff"),
        pytest.param(
            "172.16.5.10", [b"203.0.113.7, 172.16.5.11"], "203.0.113.7", id="chain-of-two-proxies"
        ),
        pytest.param(
            "172.16.5.10",
            [b"10.0.0.1, 203.0.113.7"],
            "203.0.113.7",
            id="spoofed-left-entry-not-believed",
        ),
        pytest.param(
            "172.16.5.10",
            [b"10.0.0.1, 203.0.113.7, 172.16.5.11"],
            "203.0.113.7",
            id="two-proxies-spoofed-left-entry",
        ),
        pytest.param(
            "172.16.5.10",
            [b"10.0.0.1", b"203.0.113.7"],
            "203.0.113.7",
            id="several-headers-last-is-rightmost",
        ),
        pytest.param(
            "172.16.5.10",
            [b"10.0.0.1, 203.0.113.7", b"172.16.5.11"],
            "203.0.113.7",
            id="several-headers-joined-across-proxies",
        ),
        pytest.param(
            "172.16.5.10", [b"10.0.0.1, unknown"], "unknown", id="garbled-makes-client-unknown"
        ),
        pytest.param(
            "172.16.5.10",
            [b"10.0.0.1, not-an-ip, 172.16.5.11"],
            "not-an-ip",
            id="garbled-behind-second-proxy-is-unknown",
        ),
        pytest.param("172.16.5.10", [b"10.0.0.1, "], "unknown", id="empty-entry-is-unknown"),
        pytest.param("172.16.5.10", [b"203.0.113.7:51234"], "203.0.113.7", id="v4-with-port"),
        pytest.param(
            "fd00:5::10", [b"[2001:db8::7]:51234"], "2001:db8::7", id="bracketed-v6-with-port"
        ),
        pytest.param("fd00:5::10", [b"[2001:db8::7]"], "2001:db8::7", id="bracketed-v6"),
        pytest.param("fd00:5::10", [b"2001:db8::7"], "2001:db8::7", id="bare-v6"),
        pytest.param(
            "172.16.5.10",
            [b"  203.0.113.7  ,\t172.16.5.11 "],
            "203.0.113.7",
            id="whitespace-around-entries",
        ),
        pytest.param("::ffff:10.1.2.3", [], "10.1.2.3", id="v4-mapped-peer"),
        pytest.param(
            "::ffff:172.16.5.10", [b"203.0.113.7"], "203.0.113.7", id="v4-mapped-trusted-proxy"
        ),
        pytest.param("172.16.5.10", [b"::ffff:203.0.113.7"], "203.0.113.7", id="v4-mapped-in-xff"),
        pytest.param(
            "::ffff:203.0.113.7",
            [b"10.1.2.3"],
            "203.0.113.7",
            id="v4-mapped-untrusted-peer-xff-ignored",
        ),
    ],
)
def test_client_address(peer: str, forwarded: list[bytes], expected: str) -> None:
    assert client_address(peer, forwarded, PROXIED) == expected


def test_without_trusted_proxies_no_xff_is_believed() -> None:
    assert client_address("172.16.5.10", [b"203.0.113.7"], PLAIN) == "172.16.5.10"
    assert client_address("203.0.113.7", [b"10.1.2.3"], PLAIN) == "203.0.113.7"


@pytest.mark.parametrize(
    ("client", "external_listener", "path", "expected"),
    [
        pytest.param("192.168.1.20", False, CHECK, Zone.INTERNAL, id="rfc1918-192"),
        pytest.param("10.1.2.3", False, CHECK, Zone.INTERNAL, id="rfc1918-10"),
        pytest.param("172.31.255.254", False, CHECK, Zone.INTERNAL, id="rfc1918-172"),
        pytest.param("127.0.0.1", False, CHECK, Zone.INTERNAL, id="loopback"),
        pytest.param("::1", False, CHECK, Zone.INTERNAL, id="loopback-v6"),
        pytest.param("fd12:3456::1", False, CHECK, Zone.INTERNAL, id="ula-v6"),
        pytest.param("::ffff:10.1.2.3", False, CHECK, Zone.INTERNAL, id="v4-mapped-inside"),
        pytest.param("203.0.113.7", False, CHECK, Zone.EXTERNAL, id="public-v4"),
        pytest.param("172.32.0.1", False, CHECK, Zone.EXTERNAL, id="just-outside-172-16-12"),
        pytest.param("2001:db8::7", False, CHECK, Zone.EXTERNAL, id="public-v6"),
        pytest.param("::ffff:203.0.113.7", False, CHECK, Zone.EXTERNAL, id="v4-mapped-outside"),
        pytest.param("?", False, CHECK, Zone.EXTERNAL, id="no-address-is-external"),
        pytest.param("192.168.1.20", True, CHECK, Zone.EXTERNAL, id="external-listener"),
        pytest.param(
            "192.168.1.20",
            False,
            b"/RequestHandlerExt/ucdevice.upx",
            Zone.EXTERNAL,
            id="ext-check-path",
        ),
        pytest.param(
            "192.168.1.20",
            False,
            b"/requesthandlerext/UCDEVICE.UPX",
            Zone.EXTERNAL,
            id="ext-check-path-lower-case",
        ),
        pytest.param(
            "10.1.2.3", False, b"/REQUESTHANDLEREXT/Files", Zone.EXTERNAL, id="ext-upload-upper"
        ),
        pytest.param(
            "10.1.2.3",
            False,
            b"/DeviceUpdateFiles_Ext/UCPhone/Polycom/CX600/A/ENU/4.0.7577.4387/CPE/CPE.nbt",
            Zone.EXTERNAL,
            id="ext-files-path",
        ),
        pytest.param(
            "10.1.2.3",
            False,
            b"/deviceupdatefiles_EXT/x",
            Zone.EXTERNAL,
            id="ext-files-path-mixed-case",
        ),
        pytest.param(
            "10.1.2.3",
            False,
            b"/DeviceUpdateFiles_Int/UCPhone/Polycom/CX600/A/ENU/4.0.7577.4387/CPE/CPE.nbt",
            Zone.INTERNAL,
            id="int-files-path",
        ),
        pytest.param("10.1.2.3", False, b"/RequestHandler/Files", Zone.INTERNAL, id="int-upload"),
    ],
)
def test_zone_of(client: str, external_listener: bool, path: bytes, expected: Zone) -> None:
    assert zone_of(client, external_listener, path, PLAIN) is expected


def test_configured_internal_networks_replace_the_defaults() -> None:
    settings = ZoneSettings(internal_networks=(Network.parse("10.20.0.0/16"),))
    assert zone_of("10.20.3.4", False, CHECK, settings) is Zone.INTERNAL
    assert zone_of("10.21.3.4", False, CHECK, settings) is Zone.EXTERNAL
    assert zone_of("192.168.1.20", False, CHECK, settings) is Zone.EXTERNAL


@pytest.mark.parametrize(
    ("peer", "forwarded", "external_listener", "path", "expected"),
    [
        pytest.param(
            "203.0.113.7", [b"10.1.2.3"], False, CHECK, Zone.EXTERNAL, id="spoof-from-outside"
        ),
        pytest.param(
            "203.0.113.7",
            [b"172.16.5.10"],
            False,
            CHECK,
            Zone.EXTERNAL,
            id="spoof-a-proxy-from-outside",
        ),
        pytest.param(
            "172.16.5.10",
            [b"10.1.2.3, 203.0.113.7"],
            False,
            CHECK,
            Zone.EXTERNAL,
            id="spoof-through-a-proxy",
        ),
        pytest.param(
            "172.16.5.10", [b"203.0.113.7"], False, CHECK, Zone.EXTERNAL, id="outsider-via-proxy"
        ),
        pytest.param(
            "172.16.5.10", [b"192.168.1.20"], False, CHECK, Zone.INTERNAL, id="insider-via-proxy"
        ),
        pytest.param(
            "172.16.5.10",
            [b"192.168.1.20"],
            True,
            CHECK,
            Zone.EXTERNAL,
            id="insider-via-external-listener",
        ),
        pytest.param(
            "192.168.1.20",
            [],
            False,
            b"/RequestHandlerExt/ucdevice.upx",
            Zone.EXTERNAL,
            id="insider-on-ext-path",
        ),
    ],
)
def test_zone_of_a_request_as_the_service_decides_it(
    peer: str, forwarded: list[bytes], external_listener: bool, path: bytes, expected: Zone
) -> None:
    client = client_address(peer, forwarded, PROXIED)
    assert zone_of(client, external_listener, path, PROXIED) is expected


def test_a_trusted_proxy_that_cannot_name_the_client_makes_it_external() -> None:
    settings = ZoneSettings(trusted_proxies=(Network.parse("10.0.5.10"),))
    client = client_address("10.0.5.10", [b"unknown"], settings)
    assert zone_of(client, False, b"/RequestHandler/ucdevice.upx", settings) is Zone.EXTERNAL
