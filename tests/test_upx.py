"""The update-check codec (docs/protocol.md §5, §9): requests in, responses and audit out."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import PurePosixPath

import pytest

from appliance.catalogue.decision import Decision, Offer, Reason
from appliance.model import (
    DeviceRequest,
    ReportedModule,
    Rule,
    RuleKey,
    RuleState,
    UpdateFile,
    Zone,
)
from appliance.phones.codec import BaseUrls, CheckError, audit_line, parse_check, render_response

MAC = "00-04-F2-A1-B2-C3"
CU7 = "4.0.7577.4366"
CU8 = "4.0.7577.4387"

# The request of docs/protocol.md §5, byte for byte.
CANONICAL = b"""<?xml version="1.0" encoding="utf-8"?>
<Request>
  <DeviceType>UCPhone</DeviceType>
  <MacAddress>00-04-F2-A1-B2-C3</MacAddress>
  <SerialNumber>64167F1234</SerialNumber>
  <Vendor>Polycom</Vendor>
  <Model>CX600</Model>
  <Revision>A</Revision>
  <Locale>ENU</Locale>
  <UserId>alice@contoso.com</UserId>
  <Modules>
    <Module><FileName>CPE.nbt</FileName><Version>4.0.7577.4366</Version><Timestamp>2012-12-10T00:00:00Z</Timestamp></Module>
  </Modules>
</Request>
"""

BRAND_MODEL = "<Vendor>Polycom</Vendor><Model>CX600</Model>"


def request_xml(*elements: str, root: str = "Request") -> bytes:
    return f"<{root}>{''.join(elements)}</{root}>".encode()


def module(file_name: str = "CPE.nbt", version: str = CU7, extra: str = "") -> str:
    return f"<Module><FileName>{file_name}</FileName><Version>{version}</Version>{extra}</Module>"


def refused(body: bytes) -> CheckError:
    with pytest.raises(CheckError) as caught:
        parse_check(body)
    return caught.value


# -- parse_check: the canonical request -------------------------------------------------------


def test_canonical_request_gives_every_field() -> None:
    assert parse_check(CANONICAL, Zone.EXTERNAL, "203.0.113.7") == DeviceRequest(
        device_type="UCPhone",
        brand="Polycom",
        model="CX600",
        revision="A",
        locale="ENU",
        mac=MAC,
        serial="64167F1234",
        modules=(ReportedModule("CPE.nbt", CU7, "2012-12-10T00:00:00Z"),),
        version=None,
        user_id="alice@contoso.com",
        zone=Zone.EXTERNAL,
        address="203.0.113.7",
    )


# -- parse_check: lenient variants ----------------------------------------------------------


LENIENT = [
    pytest.param(
        b"<request><devicetype>UCPhone</devicetype><vendor>Polycom</vendor>"
        b"<model>CX600</model><revision>A</revision><locale>ENU</locale></request>",
        {"brand": "Polycom", "model": "CX600", "revision": "A", "locale": "ENU"},
        id="names-lower-case",
    ),
    pytest.param(
        b"<REQUEST><VENDOR>Polycom</VENDOR><MODEL>CX600</MODEL><LOCALE>ENU</LOCALE></REQUEST>",
        {"brand": "Polycom", "model": "CX600", "locale": "ENU"},
        id="names-upper-case",
    ),
    pytest.param(
        b"<reQuest><vENDor>Polycom</vENDor><mOdEl>CX600</mOdEl></reQuest>",
        {"brand": "Polycom", "model": "CX600"},
        id="names-mixed-case",
    ),
    pytest.param(
        b'<Request xmlns="urn:schemas-microsoft-com:ucupdates"><Vendor>Polycom</Vendor>'
        b"<Model>CX600</Model><Modules>" + module().encode() + b"</Modules></Request>",
        {"brand": "Polycom", "model": "CX600", "modules": (ReportedModule("CPE.nbt", CU7),)},
        id="default-namespace",
    ),
    pytest.param(
        b'<u:Request xmlns:u="urn:x"><u:Vendor>Polycom</u:Vendor><u:Model>CX600</u:Model>'
        b"<u:MacAddress>0004F2A1B2C3</u:MacAddress></u:Request>",
        {"brand": "Polycom", "model": "CX600", "mac": MAC},
        id="prefixed-namespace",
    ),
    pytest.param(
        request_xml("<Brand>Polycom</Brand><Model>CX600</Model>"),
        {"brand": "Polycom"},
        id="brand-for-vendor",
    ),
    pytest.param(
        request_xml("<Manufacturer>Aastra</Manufacturer><Model>6725ip</Model>"),
        {"brand": "Aastra", "model": "6725ip"},
        id="manufacturer-for-vendor",
    ),
    pytest.param(
        request_xml(BRAND_MODEL, f"<MAC>{MAC}</MAC>"), {"mac": MAC}, id="MAC-for-MacAddress"
    ),
    pytest.param(
        request_xml(BRAND_MODEL, f"<MACAddress>{MAC}</MACAddress>"),
        {"mac": MAC},
        id="MACAddress-for-MacAddress",
    ),
    pytest.param(
        request_xml(BRAND_MODEL, "<Serial>64167F1234</Serial>"),
        {"serial": "64167F1234"},
        id="Serial-for-SerialNumber",
    ),
    pytest.param(
        request_xml(BRAND_MODEL, "<HardwareRevision>B</HardwareRevision>"),
        {"revision": "B"},
        id="HardwareRevision-for-Revision",
    ),
    pytest.param(
        request_xml(BRAND_MODEL, f"<Version>{CU7}</Version>"),
        {"version": CU7, "modules": ()},
        id="top-level-Version",
    ),
    pytest.param(
        request_xml(BRAND_MODEL, f"<FirmwareVersion>{CU7}</FirmwareVersion>"),
        {"version": CU7, "modules": ()},
        id="top-level-FirmwareVersion",
    ),
    pytest.param(
        request_xml("<Model>CX600</Model><Locale>ENU</Locale><Vendor>Polycom</Vendor>"),
        {"brand": "Polycom", "model": "CX600", "locale": "ENU"},
        id="any-element-order",
    ),
    pytest.param(
        request_xml("<Device><Vendor>Polycom</Vendor><Model>CX600</Model></Device>"),
        {"brand": "Polycom", "model": "CX600"},
        id="fields-nested-in-a-wrapper",
    ),
    pytest.param(
        request_xml("<Vendor>  Polycom\n </Vendor><Model>\tCX600</Model>"),
        {"brand": "Polycom", "model": "CX600"},
        id="surrounding-whitespace-trimmed",
    ),
    pytest.param(
        request_xml("<Vendor>Polycom</Vendor><Model>CX600</Model>"),
        {"device_type": "UCPhone", "mac": None, "serial": None, "user_id": None},
        id="missing-DeviceType-defaults-to-UCPhone",
    ),
    pytest.param(
        request_xml(BRAND_MODEL, "<DeviceType>  </DeviceType>"),
        {"device_type": "UCPhone"},
        id="blank-DeviceType-defaults-to-UCPhone",
    ),
]


@pytest.mark.parametrize(("body", "expected"), LENIENT)
def test_lenient_variants_are_understood(body: bytes, expected: dict[str, object]) -> None:
    request = parse_check(body)
    assert {k: getattr(request, k) for k in expected} == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("0004F2A1B2C3", id="bare"),
        pytest.param("00-04-F2-A1-B2-C3", id="dashes"),
        pytest.param("00:04:F2:A1:B2:C3", id="colons"),
        pytest.param("00:04:f2:a1:b2:c3", id="colons-lower-case"),
        pytest.param("0004f2a1b2c3", id="bare-lower-case"),
        pytest.param(" 00-04-f2-A1-b2-C3 ", id="dashes-mixed-case-padded"),
    ],
)
def test_mac_forms_are_normalised(text: str) -> None:
    assert parse_check(request_xml(BRAND_MODEL, f"<MacAddress>{text}</MacAddress>")).mac == MAC


@pytest.mark.parametrize(
    ("element", "field"),
    [
        pytest.param("<MacAddress>00-04-F2-A1-B2</MacAddress>", "mac", id="mac-five-pairs"),
        pytest.param("<MacAddress>00-04-F2-A1-B2-C3-D4</MacAddress>", "mac", id="mac-seven"),
        pytest.param("<MacAddress>00-04:F2-A1:B2-C3</MacAddress>", "mac", id="mac-mixed-seps"),
        pytest.param("<MacAddress>GG-04-F2-A1-B2-C3</MacAddress>", "mac", id="mac-not-hex"),
        pytest.param("<MacAddress>unknown</MacAddress>", "mac", id="mac-word"),
        pytest.param("<MacAddress/>", "mac", id="mac-empty"),
        pytest.param("<SerialNumber>6416 7F12</SerialNumber>", "serial", id="serial-space"),
        pytest.param("<SerialNumber>64167F1234!</SerialNumber>", "serial", id="serial-bang"),
        pytest.param(f"<SerialNumber>{'9' * 65}</SerialNumber>", "serial", id="serial-65"),
        pytest.param("<SerialNumber>   </SerialNumber>", "serial", id="serial-blank"),
    ],
)
def test_malformed_mac_or_serial_counts_as_absent(element: str, field: str) -> None:
    request = parse_check(request_xml(BRAND_MODEL, element))
    assert getattr(request, field) is None
    assert (request.brand, request.model) == ("Polycom", "CX600")  # the check still stands


def test_serial_is_upper_cased() -> None:
    body = request_xml(BRAND_MODEL, "<SerialNumber>64167f1234</SerialNumber>")
    assert parse_check(body).serial == "64167F1234"


@pytest.mark.parametrize(
    "unknown",
    [
        pytest.param("<Firmware2>x</Firmware2>", id="unknown-leaf"),
        pytest.param("<Extra><Deep><Deeper>y</Deeper></Deep></Extra>", id="unknown-subtree"),
        pytest.param("<Capabilities>" + "A" * 300 + "</Capabilities>", id="unknown-long"),
        pytest.param("<Note>bell&#x7f;here</Note>", id="unknown-not-printable"),
        pytest.param('<Vendor2 a="1"/>', id="unknown-empty-with-attribute"),
    ],
)
def test_unknown_elements_are_ignored(unknown: str) -> None:
    plain = parse_check(request_xml(BRAND_MODEL, module()))
    assert parse_check(request_xml(unknown, BRAND_MODEL, module(), unknown)) == plain


def test_module_version_is_not_the_top_level_version() -> None:
    request = parse_check(request_xml(BRAND_MODEL, f"<Modules>{module()}</Modules>"))
    assert request.modules == (ReportedModule("CPE.nbt", CU7),)
    assert request.version is None


def test_module_fields_are_not_top_level_fields() -> None:
    inside = "<Vendor>Evil</Vendor><Model>X1</Model><Locale>DEU</Locale><UserId>mallory</UserId>"
    request = parse_check(
        request_xml(
            f"<Modules>{module(extra=inside)}</Modules>", BRAND_MODEL, "<Locale>ENU</Locale>"
        )
    )
    assert (request.brand, request.model, request.locale, request.user_id) == (
        "Polycom",
        "CX600",
        "ENU",
        None,
    )


def test_vendor_only_inside_a_module_is_no_vendor() -> None:
    error = refused(request_xml(f"<Modules>{module(extra=BRAND_MODEL)}</Modules>"))
    assert error.status == 400
    assert "brand" in error.reason


def test_top_level_version_and_modules_are_kept_apart() -> None:
    request = parse_check(
        request_xml(
            BRAND_MODEL, f"<Modules>{module('CPE.nbt', CU7)}</Modules><Version>9.9</Version>"
        )
    )
    assert request.version == "9.9"
    assert request.modules == (ReportedModule("CPE.nbt", CU7),)


def test_several_modules_in_document_order() -> None:
    modules = module("CPE.nbt", CU7) + module("Lang.nbt", "4.0.7577.1") + module("x.nbt", "1")
    request = parse_check(request_xml(BRAND_MODEL, f"<Modules>{modules}</Modules>"))
    assert [(m.file_name, m.version) for m in request.modules] == [
        ("CPE.nbt", CU7),
        ("Lang.nbt", "4.0.7577.1"),
        ("x.nbt", "1"),
    ]


def test_exactly_64_modules_are_accepted() -> None:
    modules = "".join(module(f"m{i}.nbt") for i in range(64))
    assert len(parse_check(request_xml(BRAND_MODEL, f"<Modules>{modules}</Modules>")).modules) == 64


def test_a_field_of_exactly_256_characters_is_accepted() -> None:
    body = request_xml("<Vendor>Polycom</Vendor>", f"<Model>{'M' * 256}</Model>")
    assert parse_check(body).model == "M" * 256


# -- parse_check: refusals ----------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    + b"".join(
        b'<!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]>\n<Request><Vendor>&lol9;</Vendor><Model>CX600</Model></Request>"
)

REFUSALS = [
    pytest.param(b"this is not XML", "malformed XML", id="not-xml"),
    pytest.param(b"", "malformed XML", id="empty-body"),
    pytest.param(b"<Request><Vendor>Polycom</Vendor>", "malformed XML", id="truncated"),
    pytest.param(b"\xff\xfe<\x00R\x00", "malformed XML", id="binary"),
    pytest.param(
        b'<?xml version="1.0"?>\n<!DOCTYPE Request SYSTEM "file:///etc/passwd">\n'
        b"<Request><Vendor>Polycom</Vendor><Model>CX600</Model></Request>",
        "DTD",
        id="xxe-external-dtd",
    ),
    pytest.param(
        b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        b"<Request><Vendor>&xxe;</Vendor><Model>CX600</Model></Request>",
        "DTD",
        id="xxe-external-entity",
    ),
    pytest.param(BILLION_LAUGHS, "entities", id="billion-laughs"),
    pytest.param(request_xml("<Model>CX600</Model>"), "brand", id="missing-vendor"),
    pytest.param(request_xml("<Vendor>Polycom</Vendor>"), "model", id="missing-model"),
    pytest.param(request_xml("<Vendor> </Vendor><Model>CX600</Model>"), "brand", id="blank-vendor"),
    pytest.param(request_xml(), "brand and no model", id="missing-both"),
    pytest.param(
        request_xml("<Vendor>Polycom</Vendor>", f"<Model>{'M' * 257}</Model>"),
        "<model> is too long",
        id="field-257-chars",
    ),
    pytest.param(
        request_xml(BRAND_MODEL, f"<UserId>{'u' * 300}</UserId>"),
        "<userid> is too long",
        id="user-id-300-chars",
    ),
    pytest.param(
        request_xml(BRAND_MODEL, f"<Modules>{module('A' * 257)}</Modules>"),
        "<filename> is too long",
        id="module-file-name-257-chars",
    ),
    pytest.param(
        request_xml("<Vendor>Poly&#x7f;com</Vendor><Model>CX600</Model>"),
        "not printable",
        id="field-with-DEL",
    ),
    pytest.param(
        request_xml("<Vendor>Polycom</Vendor><Model>CX\n600</Model>"),
        "not printable",
        id="field-with-inner-newline",
    ),
    pytest.param(
        request_xml(BRAND_MODEL, "<Locale>E&#x200b;NU</Locale>"),
        "not printable",
        id="field-with-zero-width-space",
    ),
    pytest.param(
        request_xml(BRAND_MODEL, f"<Modules>{module(version='4.0&#x85;1')}</Modules>"),
        "not printable",
        id="module-version-with-NEL",
    ),
    pytest.param(
        request_xml(
            BRAND_MODEL,
            "<Modules>" + "".join(module(f"m{i}.nbt") for i in range(65)) + "</Modules>",
        ),
        "more than 64 modules",
        id="65-modules",
    ),
]


@pytest.mark.parametrize(("body", "reason"), REFUSALS)
def test_unusable_checks_get_400_with_a_short_reason(body: bytes, reason: str) -> None:
    error = refused(body)
    assert error.status == 400
    assert reason in error.reason
    assert len(error.reason) <= 120
    assert "\n" not in error.reason
    assert "Traceback" not in error.reason
    assert "root:" not in error.reason  # nothing of /etc/passwd comes back


def _fill(head: str, unit: str, tail: str = "", closing: str = "", size: int = 64 * 1024) -> bytes:
    """`head` + as many `unit` (each closed by `closing` at the end) as fit in `size` bytes."""
    room = size - len(head) - len(tail) - len("<Request></Request>")
    count = room // (len(unit) + len(closing))
    return request_xml(head, unit * count, closing * count, tail)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_fill(BRAND_MODEL, "<a>", closing="</a>"), id="nested-elements"),
        pytest.param(_fill(BRAND_MODEL, "<Module>", closing="</Module>"), id="nested-modules"),
        pytest.param(_fill(BRAND_MODEL, "<Modules>", closing="</Modules>"), id="nested-lists"),
        pytest.param(_fill(BRAND_MODEL, "<Module/>"), id="sibling-empty-modules"),
        pytest.param(_fill(BRAND_MODEL, "<x>y</x>"), id="sibling-unknown-leaves"),
        pytest.param(_fill(BRAND_MODEL, "<Vendor>Other</Vendor>"), id="sibling-repeated-field"),
        pytest.param(_fill("", "<Model>x</Model>", tail=BRAND_MODEL), id="repeats-before-fields"),
    ],
)
def test_64_kib_of_elements_is_answered(body: bytes) -> None:
    assert 60 * 1024 < len(body) <= 64 * 1024
    request = parse_check(body)
    assert request.brand in ("Polycom", "Other")
    assert request.modules == ()


def test_64_kib_of_modules_is_refused_not_parsed_in_full() -> None:
    error = refused(_fill(BRAND_MODEL, module("m.nbt")))
    assert (error.status, error.reason) == (400, "more than 64 modules")


# -- render_response ------------------------------------------------------------------------------

KEY = RuleKey("UCPhone", "Polycom", "CX600", "A", "ENU", "CPE")
URLS = BaseUrls("https://ucupdates-r2.contoso.com", "https://lyncweb.contoso.com")
FOLDER = "UCPhone/Polycom/CX600/A/ENU/4.0.7577.4387/CPE"


def update_file(
    name: str,
    signature: str | None = "CPE.cat",
    size: int = 31457280,
    sha256: str = "ab" * 32,
    timestamp: str | None = "2013-04-02T00:00:00Z",
    key: RuleKey = KEY,
    version: str = CU8,
) -> UpdateFile:
    return UpdateFile(
        key=key,
        version=version,
        file_name=name,
        signature_file_name=signature,
        size=size,
        sha256=sha256,
        timestamp=timestamp,
        path=key.store_dir(version) / name,
    )


def offer(*files: UpdateFile, key: RuleKey = KEY, version: str = CU8) -> Offer:
    rule = Rule(1, key, version, None, None, RuleState.APPROVED, "2013-04-02T00:00:00Z")
    return Offer(rule, version, files, Reason.APPROVED, CU7, False)


def decision(*offers: Offer) -> Decision:
    reason = offers[0].reason if offers else Reason.NO_RULE
    return Decision(offers, reason, "detail")


def modules_of(root: ET.Element) -> list[dict[str, str | None]]:
    return [{c.tag: c.text for c in m} for m in root.iterfind("Modules/Module")]


def test_no_offer_is_downloads_0_exactly() -> None:
    assert render_response(decision(), URLS) == (
        b'<?xml version="1.0" encoding="utf-8"?>\n<Response><Downloads>0</Downloads></Response>'
    )


def test_an_offer_names_its_base_urls_and_modules() -> None:
    nbt = update_file("CPE.nbt", size=31457280, sha256="ab" * 32)
    lang = update_file("Lang.nbt", signature="Lang.cat", size=1024, sha256="cd" * 32)
    body = render_response(decision(offer(nbt, lang)), URLS)

    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n')
    root = ET.fromstring(body)
    assert root.tag == "Response"
    assert root.findtext("Downloads") == "2"
    assert root.findtext("BaseURL") == (
        f"https://ucupdates-r2.contoso.com/DeviceUpdateFiles_Int/{FOLDER}"
    )
    assert root.findtext("ExternalBaseURL") == (
        f"https://lyncweb.contoso.com/DeviceUpdateFiles_Ext/{FOLDER}"
    )
    assert modules_of(root) == [
        {
            "FileName": "CPE.nbt",
            "SignatureFileName": "CPE.cat",
            "Version": CU8,
            "Timestamp": "2013-04-02T00:00:00Z",
            "Size": "31457280",
            "SHA256": "ab" * 32,
        },
        {
            "FileName": "Lang.nbt",
            "SignatureFileName": "Lang.cat",
            "Version": CU8,
            "Timestamp": "2013-04-02T00:00:00Z",
            "Size": "1024",
            "SHA256": "cd" * 32,
        },
    ]


def test_a_module_without_signature_or_timestamp_leaves_them_out() -> None:
    body = render_response(decision(offer(update_file("CPE.nbt", None, timestamp=None))), URLS)
    assert modules_of(ET.fromstring(body)) == [
        {"FileName": "CPE.nbt", "Version": CU8, "Size": "31457280", "SHA256": "ab" * 32}
    ]


def test_only_the_first_offer_is_rendered() -> None:
    ucmp = RuleKey("UCPhone", "Polycom", "CX600", "A", "ENU", "UCMP")
    first = offer(update_file("CPE.nbt"))
    second = offer(update_file("a.nbt", key=ucmp), update_file("b.nbt", key=ucmp), key=ucmp)
    root = ET.fromstring(render_response(decision(first, second), URLS))
    assert root.findtext("Downloads") == "1"
    assert (root.findtext("BaseURL") or "").endswith(f"/{FOLDER}")
    assert [m["FileName"] for m in modules_of(root)] == ["CPE.nbt"]


def test_xml_special_characters_in_a_file_name_are_escaped() -> None:
    name = 'A&B <1> "q".nbt'
    body = render_response(decision(offer(update_file(name, signature="x&y.cat"))), URLS)
    assert b"A&amp;B &lt;1&gt;" in body
    assert b"x&amp;y.cat" in body
    (parsed,) = modules_of(ET.fromstring(body))
    assert (parsed["FileName"], parsed["SignatureFileName"]) == (name, "x&y.cat")


def test_the_response_uses_the_folder_of_the_stored_files() -> None:
    key = RuleKey("UCPhone", "Aastra", "6725ip", "B", "FRA", "CPE")
    f = update_file("CPE.nbt", key=key, version="4.0.7577.4400")
    root = ET.fromstring(
        render_response(decision(offer(f, key=key, version="4.0.7577.4400")), URLS)
    )
    assert root.findtext("BaseURL") == (
        "https://ucupdates-r2.contoso.com/DeviceUpdateFiles_Int/"
        "UCPhone/Aastra/6725ip/B/FRA/4.0.7577.4400/CPE"
    )
    assert f.path == PurePosixPath("UCPhone/Aastra/6725ip/B/FRA/4.0.7577.4400/CPE/CPE.nbt")


@pytest.mark.parametrize(
    ("ports", "internal", "external"),
    [
        pytest.param(
            (443, 443),
            "https://ucupdates-r2.contoso.com",
            "https://lyncweb.contoso.com",
            id="both-443-omitted",
        ),
        pytest.param(
            (443, 4443),
            "https://ucupdates-r2.contoso.com",
            "https://lyncweb.contoso.com:4443",
            id="external-4443-kept",
        ),
        pytest.param(
            (8443, 443),
            "https://ucupdates-r2.contoso.com:8443",
            "https://lyncweb.contoso.com",
            id="internal-8443-kept",
        ),
        pytest.param(
            (80, 44300),
            "https://ucupdates-r2.contoso.com:80",
            "https://lyncweb.contoso.com:44300",
            id="odd-ports-kept",
        ),
    ],
)
def test_base_urls_omit_port_443_only(ports: tuple[int, int], internal: str, external: str) -> None:
    urls = BaseUrls.of("ucupdates-r2.contoso.com", ports[0], "lyncweb.contoso.com", ports[1])
    assert (urls.internal, urls.external) == (internal, external)
    root = ET.fromstring(render_response(decision(offer(update_file("CPE.nbt"))), urls))
    assert root.findtext("BaseURL") == f"{internal}/DeviceUpdateFiles_Int/{FOLDER}"
    assert root.findtext("ExternalBaseURL") == f"{external}/DeviceUpdateFiles_Ext/{FOLDER}"


# -- audit_line -----------------------------------------------------------------------------------

AT = datetime(2013, 4, 2, 10, 11, 12, tzinfo=UTC)
PHONE = DeviceRequest(
    device_type="UCPhone",
    brand="Polycom",
    model="CX600",
    revision="A",
    locale="ENU",
    mac=MAC,
    serial="64167F1234",
    modules=(
        ReportedModule("CPE.nbt", CU7, "2012-12-10T00:00:00Z"),
        ReportedModule("Lang.nbt", None, None),
    ),
    user_id="alice@contoso.com",
)


def test_audit_line_has_the_fields_of_lync_in_order() -> None:
    offered = offer(update_file("CPE.nbt"), update_file("Lang.nbt", signature="Lang.cat"))
    line = audit_line(AT, "192.168.1.20", PHONE, decision(offered))
    assert line == ";".join(
        [
            "2013-04-02 10:11:12",  # time
            "192.168.1.20",  # client IP
            "UCPhone",  # device type
            MAC,  # MAC
            "64167F1234",  # serial
            "Polycom",  # vendor
            "CX600",  # model
            "A",  # revision
            "ENU",  # locale
            f"CPE.nbt;{CU7};2012-12-10T00:00:00Z#Lang.nbt;;",  # request modules
            f"CPE.nbt;CPE.cat;{CU8};2013-04-02T00:00:00Z"  # response modules
            f"#Lang.nbt;Lang.cat;{CU8};2013-04-02T00:00:00Z",
            "alice@contoso.com",  # user ID
        ]
    )


def test_audit_line_blank_mac_serial_modules_and_user_are_empty_fields() -> None:
    anonymous = DeviceRequest("UCPhone", "Aastra", "6725ip", "A", "FRA", version=CU7)
    line = audit_line(AT, "10.1.2.3", anonymous, decision())
    assert line == "2013-04-02 10:11:12;10.1.2.3;UCPhone;;;Aastra;6725ip;A;FRA;;;"
    assert line.split(";")[3:5] == ["", ""]


@pytest.mark.parametrize(
    ("changes", "client"),
    [
        pytest.param({"model": "CX600\r\n2013-04-02 00:00:00"}, "10.1.2.3", id="crlf-in-model"),
        pytest.param({"user_id": "alice\nbob"}, "10.1.2.3", id="lf-in-user"),
        pytest.param({"locale": "EN\rU"}, "10.1.2.3", id="cr-in-locale"),
        pytest.param({"brand": "Poly\x00com\x1b[2J"}, "10.1.2.3", id="nul-and-escape"),
        pytest.param({"revision": "A\x0bB\x0cC"}, "10.1.2.3", id="vertical-tab-form-feed"),
        pytest.param({"device_type": "UC\x85Phone\u2028x\u2029y"}, "10.1.2.3", id="unicode-breaks"),
        pytest.param({"serial": "S\x1c\x1d\x1e1"}, "10.1.2.3", id="separators-in-serial"),
        pytest.param(
            {"modules": (ReportedModule("CPE\n.nbt", "4.0\r1", "t\x00"), PHONE.modules[1])},
            "10.1.2.3",
            id="control-in-module",
        ),
        pytest.param({}, "10.1.2.3\r\nforged", id="control-in-client"),
    ],
)
def test_control_characters_never_break_the_audit_line(
    changes: dict[str, object], client: str
) -> None:
    line = audit_line(AT, client, replace(PHONE, **changes), decision())
    assert len(line.splitlines()) == 1
    assert line.isprintable()
    # the fields stay where they were: a control character becomes one '?', not a separator
    clean = audit_line(AT, "10.1.2.3", PHONE, decision())
    assert line.count(";") == clean.count(";")
    assert line.count("#") == clean.count("#")
    assert "?" in line


# -- the request modules' Timestamp: "the time of the update request", never a file date -----


@pytest.mark.parametrize(
    "timestamp",
    [
        "2012-12-10T00:00:00Z",
        "12/10/2012 3:04:05 PM",  # a Windows CE locale's own format
        "10.12.2012 15:04:05",
        "0",
        "1601-01-01T00:00:00",  # a FILETIME of zero
        "9999-12-31T23:59:59.9999999+14:00",
        "not a date at all",
        "2012-13-45T99:99:99Z",  # impossible fields
        "Mo, 10 Dez 2012 15:04:05 MEZ",
        "2012-12-10\t00:00:00",  # a control character (was refused as not printable)
        "T" * 300,  # longer than any other field may be (was refused as too long)
        "heure: 10 déc. 2012 à 15 h 04 — UTC",
    ],
)
def test_any_module_timestamp_is_accepted_and_kept(timestamp: str) -> None:
    escaped = timestamp.replace("&", "&amp;").replace("<", "&lt;")
    body = request_xml(BRAND_MODEL, module(extra=f"<Timestamp>{escaped}</Timestamp>"))
    (reported,) = parse_check(body).modules
    assert reported.timestamp == timestamp
    assert reported.version == CU7


def test_a_blank_module_timestamp_is_absent_and_the_audit_line_stays_one_line() -> None:
    blank = request_xml(BRAND_MODEL, module(extra="<Timestamp>  </Timestamp>"))
    assert parse_check(blank).modules[0].timestamp is None
    odd = request_xml(BRAND_MODEL, module(extra="<Timestamp>10.12.2012\n15:04;#x</Timestamp>"))
    request = parse_check(odd)
    assert request.modules[0].timestamp == "10.12.2012\n15:04;#x"
    line = audit_line(AT, "10.1.2.3", request, decision())
    assert len(line.splitlines()) == 1
