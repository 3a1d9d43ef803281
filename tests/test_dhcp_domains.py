"""Reading the domains a DHCP server announces (option 15) from ISC and Kea configurations."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.discovery.dhcp_domains import DhcpDomainsError, parse_domains, read_domains

ISC_SCOPES = """\
# dhcpd.conf of a small site; "quotes" in comments are not strings
option domain-name "Corp.Example.com";   # global
option domain-name-servers 10.0.0.1, 10.0.0.2;
option domain-search "search.example.com";  # option 119: not the phones' domain
shared-network floor1 {
  subnet 10.1.0.0 netmask 255.255.0.0 {
    option domain-name "lab.example.com";
    pool { range 10.1.0.10 10.1.0.99; option domain-name "pool.example.com"; }
  }
}
host phone1 { hardware ethernet 00:04:f2:00:00:01; option domain-name = "host.example.net."; }
group { option domain-name "corp.example.com"; }  # again: listed once
"""

KEA_LEVELS = """\
// Kea allows C, C++ and shell comments
{
  "Dhcp4": {
    /* global
       options */
    "option-data": [ { "name": "domain-name", "data": "kea.example.com" } ],  # trailing
    "shared-networks": [ {
      "name": "floor1",
      "option-data": [ { "name": "domain-name-servers", "data": "10.0.0.1" } ],
      "subnet4": [ {
        "subnet": "10.1.0.0/16",
        "option-data": [ { "code": 15, "data": "subnet.example.com" } ],
        "pools": [ { "pool": "10.1.0.10 - 10.1.0.99",
                     "option-data": [ { "name": "domain-name", "data": "pool.example.com" } ] } ]
      } ]
    } ],
    "subnet4": [ {
      "subnet": "10.2.0.0/16",
      "reservations": [ { "hw-address": "00:04:f2:00:00:01",
          "option-data": [ { "name": "domain-name", "csv-format": false,
                             "data": "72 65 73 2e 65 78 61 6d 70 6c 65 2e 63 6f 6d" } ] } ],
      "option-data": [ { "name": "domain-name", "space": "vendor-x", "data": "not.this.one" } ]
    } ],
    "client-classes": [ { "name": "phones",
        "option-data": [ { "name": "domain-name", "data": "URL://x" } ] } ]
  }
}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            ISC_SCOPES,
            (
                "corp.example.com",
                "lab.example.com",
                "pool.example.com",
                "host.example.net",
            ),
        ),
        ('option domain-name "a.example.com b.example.com";', ("a.example.com", "b.example.com")),
        ('option domain-name "corp";  # single label AD domain', ("corp",)),
        ("subnet 10.0.0.0 netmask 255.0.0.0 { option routers 10.0.0.1; }", ()),
        ("", ()),
        ('option domain-name "esc\\"aped.example.com";', None),  # a quote is not a name
    ],
    ids=["scopes", "several-in-one", "single-label", "none", "empty", "escaped-quote"],
)
def test_isc(text: str, expected: tuple[str, ...] | None) -> None:
    if expected is None:
        with pytest.raises(DhcpDomainsError, match="not a DNS domain name"):
            parse_domains(text)
    else:
        assert parse_domains(text) == expected


def test_kea_levels() -> None:
    kea = KEA_LEVELS.replace('"URL://x"', '"class.example.com"')
    assert parse_domains(kea) == (
        "kea.example.com",
        "subnet.example.com",
        "pool.example.com",
        "res.example.com",
        "class.example.com",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('option domain-name "a.example.com"', "line 1: ';' expected"),
        ("option domain-name a.example.com;", "line 1: option domain-name needs a quoted name"),
        ('\n\noption domain-name "a.example.com;\n', "line 3: unterminated string"),
        ('subnet 10.0.0.0 netmask 255.0.0.0 {\n option domain-name "a.b";\n', "not closed"),
        ("}\n", "line 1: '}' without '{'"),
        ('option domain-name "-bad-.example.com";', "'-bad-.example.com' is not a DNS domain"),
        ('option domain-name "10.0.0.1";', "'10.0.0.1' is not a DNS domain name"),
        ('option domain-name "";', "empty domain-name"),
        (KEA_LEVELS, "client-classes\\[0\\].option-data\\[0\\]: 'URL://x' is not a DNS"),
        ('{ "Dhcp4": { "option-data": [ }', "line 1: not valid Kea JSON"),
        ('{ "Dhcp6": {} }', "no Dhcp4 object"),
        ('{ "Dhcp4": { /* never closed }', "'/\\*' comment not closed"),
        ('{ "Dhcp4": { "subnet4": {} } }', "Dhcp4.subnet4: expected a list"),
        ('{ "Dhcp4": { "option-data": [ { "name": "domain-name" } ] } }', "needs a string 'data'"),
        (
            '{ "Dhcp4": { "option-data": [ { "name": "domain-name", "csv-format": false, '
            '"data": "zz" } ] } }',
            "not hex",
        ),
        ('{ "Dhcp4": { <?include "subnets.json"?> } }', "include"),
    ],
)
def test_errors_name_the_line_or_the_place(text: str, message: str) -> None:
    with pytest.raises(DhcpDomainsError, match=message):
        parse_domains(text)


def test_read_domains_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "dhcpd.conf"
    good.write_text('option domain-name "site.example.com";\n')
    assert read_domains(good) == ("site.example.com",)
    kea = tmp_path / "kea-dhcp4.conf"
    kea.write_text(KEA_LEVELS.replace('"URL://x"', '"c.example.com"'))
    assert read_domains(kea)[0] == "kea.example.com"
    bad = tmp_path / "broken.conf"
    bad.write_text('option domain-name "x.example.com"\n')
    with pytest.raises(DhcpDomainsError, match=f"^{bad}: line 1: ';' expected"):
        read_domains(bad)
    with pytest.raises(DhcpDomainsError, match=f"^{tmp_path / 'missing.conf'}: cannot read"):
        read_domains(tmp_path / "missing.conf")
