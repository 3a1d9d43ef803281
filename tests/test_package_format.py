"""updateInfo.xml (docs/protocol.md §8): the lenient reader and the canonical writer."""

from __future__ import annotations

import pytest

from appliance.catalogue.package_format import (
    PackageFormatError,
    PackageModule,
    PackageUpdate,
    parse_update_info,
    render_update_info,
)
from appliance.model import RuleKey

CU8 = "4.0.7577.4387"
CX600 = RuleKey("UCPhone", "Polycom", "CX600", "A", "ENU", "CPE")
CX700 = RuleKey("UCPhone", "Polycom", "CX700", "A", "ENU", "CPE")
PREFIX = "UCPhone/Polycom/CX600/A/ENU/CPE"
NBT = f"{PREFIX}/CPE.nbt"
CAT = f"{PREFIX}/CPE.cat"
MEMBERS = [NBT, CAT]

# The reconstruction in docs/protocol.md §8, verbatim.
CANONICAL = b"""\
<Updates>
  <Updates>
    <Update version="4.0.7577.4387" deviceType="UCPhone" brand="Polycom" model="CX600"
            revision="A" locale="ENU" updateType="CPE" timestamp="2013-04-02T00:00:00Z">
      <File name="CPE.nbt" path="UCPhone/Polycom/CX600/A/ENU/CPE/CPE.nbt"
            signature="UCPhone/Polycom/CX600/A/ENU/CPE/CPE.cat"/>
    </Update>
    <!-- one Update per device type / brand / model / revision / locale -->
  </Updates>
</Updates>
"""

EXPECTED = PackageUpdate(
    key=CX600,
    version=CU8,
    timestamp="2013-04-02T00:00:00Z",
    modules=(PackageModule("CPE.nbt", NBT, CAT),),
)

DEVICE = (
    'deviceType="UCPhone" brand="Polycom" model="CX600" revision="A" locale="ENU" updateType="CPE"'
)


def updates(inner: str) -> bytes:
    return f"<Updates><Updates>{inner}</Updates></Updates>".encode()


def parse_one(xml: bytes, members: list[str] = MEMBERS) -> PackageUpdate:
    (update,) = parse_update_info(xml, members)
    return update


def error(xml: bytes, members: list[str] = MEMBERS) -> str:
    with pytest.raises(PackageFormatError) as excinfo:
        parse_update_info(xml, members)
    message = str(excinfo.value)
    assert message.startswith("updateInfo.xml: ")
    return message


# -- the canonical form -----------------------------------------------------------------


def test_canonical_reconstruction() -> None:
    assert parse_update_info(CANONICAL, MEMBERS) == (EXPECTED,)


def test_render_writes_the_canonical_form() -> None:
    xml = render_update_info([EXPECTED])
    assert xml.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<Updates>\n  <Updates>\n')
    assert (
        b'<Update version="4.0.7577.4387" deviceType="UCPhone" brand="Polycom" model="CX600" '
        b'revision="A" locale="ENU" updateType="CPE" timestamp="2013-04-02T00:00:00Z">'
    ) in xml
    assert (
        b'<File name="CPE.nbt" path="UCPhone/Polycom/CX600/A/ENU/CPE/CPE.nbt" '
        b'signature="UCPhone/Polycom/CX600/A/ENU/CPE/CPE.cat" />'
    ) in xml


def test_render_then_parse_gives_back_the_updates() -> None:
    cx700_prefix = "UCPhone/Polycom/CX700/A/ENU/CPE"
    many = [
        EXPECTED,
        PackageUpdate(
            key=CX700,
            version="4.0.7577.4366",
            timestamp=None,
            modules=(
                PackageModule("Boot.nbt", f"{cx700_prefix}/Boot.nbt", None),
                PackageModule("CPE.nbt", f"{cx700_prefix}/CPE.nbt", f"{cx700_prefix}/CPE.cat"),
            ),
        ),
    ]
    members = [m for u in many for m in u.members()]
    xml = render_update_info(many)
    assert parse_update_info(xml, members) == tuple(many)
    assert b"timestamp" not in xml.split(b"CX700")[1]


def test_render_escapes_what_xml_needs() -> None:
    update = PackageUpdate(
        key=CX600,
        version=CU8,
        timestamp='2013 <"&">',
        modules=(PackageModule("CPE.nbt", NBT, CAT),),
    )
    assert parse_one(render_update_info([update])).timestamp == '2013 <"&">'


# -- lenient reading --------------------------------------------------------------------


def test_fields_as_child_elements() -> None:
    xml = updates(
        "<Update><Version>4.0.7577.4387</Version><DeviceType>UCPhone</DeviceType>"
        "<Brand>Polycom</Brand><Model>CX600</Model><Revision>A</Revision>"
        "<Locale>ENU</Locale><UpdateType>CPE</UpdateType>"
        "<Timestamp>2013-04-02T00:00:00Z</Timestamp>"
        "<Files><File><Name>CPE.nbt</Name><Path>UCPhone/Polycom/CX600/A/ENU/CPE/CPE.nbt</Path>"
        "<Signature>CPE.cat</Signature></File></Files></Update>"
    )
    assert parse_one(xml) == EXPECTED


def test_mixed_attributes_and_child_elements() -> None:
    xml = updates(
        '<Update version="4.0.7577.4387" deviceType="UCPhone" brand="Polycom">'
        "<Model> CX600 </Model><Revision>A</Revision><Locale>ENU</Locale>"
        "<UpdateType>CPE</UpdateType><Timestamp>2013-04-02T00:00:00Z</Timestamp>"
        '<File name="CPE.nbt"/></Update>'
    )
    assert parse_one(xml) == EXPECTED


def test_attribute_wins_over_child_element() -> None:
    xml = updates(
        f'<Update version="{CU8}" {DEVICE}><Version>1.0.0.0</Version>'
        '<File name="CPE.nbt"/></Update>'
    )
    assert parse_one(xml).version == CU8


def test_blank_attribute_falls_back_to_child_element() -> None:
    xml = updates(
        f'<Update version=" " {DEVICE}><Version>{CU8}</Version><File name="CPE.nbt"/></Update>'
    )
    assert parse_one(xml).version == CU8


@pytest.mark.parametrize(
    "xml",
    [
        pytest.param(
            b'<UPDATES><UPDATES><UPDATE VERSION="4.0.7577.4387" DEVICETYPE="UCPhone" '
            b'BRAND="Polycom" MODEL="CX600" REVISION="A" LOCALE="ENU" UPDATETYPE="CPE" '
            b'TIMESTAMP="2013-04-02T00:00:00Z"><FILE NAME="CPE.nbt" SIGNATURE="CPE.cat"/>'
            b"</UPDATE></UPDATES></UPDATES>",
            id="upper-case",
        ),
        pytest.param(
            b'<updates><update version="4.0.7577.4387" devicetype="UCPhone" brand="Polycom" '
            b'model="CX600" revision="A" locale="ENU" updatetype="CPE" '
            b'timestamp="2013-04-02T00:00:00Z"><file name="CPE.nbt"/></update></updates>',
            id="lower-case-one-level",
        ),
        pytest.param(
            b'<Updates xmlns="urn:example:updates"><Updates><Update version="4.0.7577.4387" '
            b'deviceType="UCPhone" brand="Polycom" model="CX600" revision="A" locale="ENU" '
            b'updateType="CPE" timestamp="2013-04-02T00:00:00Z"><File name="CPE.nbt"/>'
            b"</Update></Updates></Updates>",
            id="default-namespace",
        ),
        pytest.param(
            b'<u:Updates xmlns:u="urn:example:updates"><u:Update u:Version="4.0.7577.4387" '
            b'u:DeviceType="UCPhone" u:Brand="Polycom" u:Model="CX600" u:Revision="A" '
            b'u:Locale="ENU" u:UpdateType="CPE"><u:Timestamp>2013-04-02T00:00:00Z</u:Timestamp>'
            b'<u:File u:Name="CPE.nbt"/></u:Update></u:Updates>',
            id="prefixed-namespace",
        ),
    ],
)
def test_names_in_any_case_and_namespace(xml: bytes) -> None:
    assert parse_one(xml) == EXPECTED


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(
            'deviceType="UCPhone" vendor="Polycom" model="CX600" revision="A" '
            'locale="ENU" updateType="CPE"',
            id="vendor",
        ),
        pytest.param(
            'deviceType="UCPhone" Manufacturer="Polycom" model="CX600" revision="A" '
            'locale="ENU" updateType="CPE"',
            id="manufacturer",
        ),
        pytest.param(
            'deviceType="UCPhone" brand="Polycom" model="CX600" HardwareRevision="A" '
            'locale="ENU" updateType="CPE"',
            id="hardware-revision",
        ),
        pytest.param(
            'Device="UCPhone" brand="Polycom" model="CX600" revision="A" '
            'Language="ENU" updateType="CPE"',
            id="device-and-language",
        ),
        pytest.param(
            'deviceType="UCPhone" brand="Polycom" model="CX600" revision="A" '
            'Culture="ENU" updateType="CPE"',
            id="culture",
        ),
    ],
)
def test_field_aliases(fields: str) -> None:
    xml = updates(f'<Update FirmwareVersion="{CU8}" {fields}><File name="CPE.nbt"/></Update>')
    update = parse_one(xml)
    assert update.key == CX600
    assert update.version == CU8


def test_file_aliases_and_release_date() -> None:
    xml = updates(
        f'<Update version="{CU8}" ReleaseDate="2013-04-02T00:00:00Z" {DEVICE}>'
        f'<Module FileName="CPE.nbt" Member="{NBT}" SignatureFile="CPE.cat"/></Update>'
    )
    assert parse_one(xml) == EXPECTED


def test_device_fields_come_from_the_member_path_when_missing() -> None:
    xml = updates(f'<Update version="{CU8}"><File path="{NBT}"/></Update>')
    update = parse_one(xml)
    assert update.key == CX600
    assert update.modules == (PackageModule("CPE.nbt", NBT, CAT),)
    assert update.timestamp is None


def test_only_missing_device_fields_come_from_the_path() -> None:
    xml = updates(f'<Update version="{CU8}" locale="DEU"><File path="{NBT}"/></Update>')
    assert parse_one(xml).key == RuleKey("UCPhone", "Polycom", "CX600", "A", "DEU", "CPE")


def test_device_fields_from_a_path_with_backslashes() -> None:
    windows = NBT.replace("/", "\\")
    xml = updates(f'<Update version="{CU8}"><File path="{windows}"/></Update>')
    update = parse_one(xml)
    assert update.key == CX600
    assert update.modules[0].member == NBT


def test_without_a_file_list_every_image_under_the_prefix_is_a_module() -> None:
    members = [
        NBT,
        CAT,
        f"{PREFIX}/Boot.nbt",
        f"{PREFIX}/Boot.cat",
        f"{PREFIX}/Fonts.nbt",  # no signature file in the package
        "UCPhone/Polycom/CX700/A/ENU/CPE/CPE.nbt",  # another update
        "UCPhone/Polycom/CX600/A/ENU/CPE.nbt",  # not inside the prefix folder
        "updateInfo.xml",
    ]
    xml = updates(f'<Update version="{CU8}" {DEVICE}/>')
    update = parse_one(xml, members)
    assert update.modules == (
        PackageModule("Boot.nbt", f"{PREFIX}/Boot.nbt", f"{PREFIX}/Boot.cat"),
        PackageModule("CPE.nbt", NBT, CAT),
        PackageModule("Fonts.nbt", f"{PREFIX}/Fonts.nbt", None),
    )


@pytest.mark.parametrize(
    ("file_elem", "members", "signature"),
    [
        pytest.param('<File name="CPE.nbt" signature="CPE.cat"/>', MEMBERS, CAT, id="bare-name"),
        pytest.param(f'<File name="CPE.nbt" signature="{CAT}"/>', MEMBERS, CAT, id="full-path"),
        pytest.param(
            '<File name="CPE.nbt" signature="Other.cat"/>',
            [NBT, CAT, f"{PREFIX}/Other.cat"],
            f"{PREFIX}/Other.cat",
            id="bare-name-other-stem",
        ),
        pytest.param(
            '<File name="CPE.nbt" signature="UCPhone/Shared/All.cat"/>',
            [NBT, "UCPhone/Shared/All.cat"],
            "UCPhone/Shared/All.cat",
            id="full-path-elsewhere",
        ),
        pytest.param(
            '<File name="CPE.nbt" signature="UCPhone\\Shared\\All.cat"/>',
            [NBT, "UCPhone/Shared/All.cat"],
            "UCPhone/Shared/All.cat",
            id="full-path-backslashes",
        ),
        pytest.param('<File name="CPE.nbt"/>', MEMBERS, CAT, id="absent-same-stem-cat"),
        pytest.param('<File name="CPE.nbt"/>', [NBT], None, id="absent-entirely"),
        pytest.param(
            '<File name="CPE.nbt"/>', [NBT, f"{PREFIX}/Other.cat"], None, id="absent-other-stem"
        ),
    ],
)
def test_signature_file(file_elem: str, members: list[str], signature: str | None) -> None:
    xml = updates(f'<Update version="{CU8}" {DEVICE}>{file_elem}</Update>')
    assert parse_one(xml, members).modules == (PackageModule("CPE.nbt", NBT, signature),)


def test_member_names_match_ignoring_case_and_keep_the_packages_spelling() -> None:
    members = [NBT.upper(), CAT.lower()]
    xml = updates(
        f'<Update version="{CU8}" {DEVICE}>'
        f'<File name="CPE.nbt" path="{NBT}" signature="cpe.CAT"/></Update>'
    )
    assert parse_one(xml, members).modules == (PackageModule("CPE.nbt", NBT.upper(), CAT.lower()),)


def test_name_defaults_to_the_members_name() -> None:
    members = [f"{PREFIX}/Cpe.NBT"]
    xml = updates(f'<Update version="{CU8}" {DEVICE}><File path="{PREFIX}/cpe.nbt"/></Update>')
    assert parse_one(xml, members).modules == (PackageModule("Cpe.NBT", f"{PREFIX}/Cpe.NBT", None),)


def test_several_updates_in_document_order() -> None:
    cx700_nbt = "UCPhone/Polycom/CX700/A/ENU/CPE/CPE.nbt"
    xml = updates(
        f'<Update version="{CU8}"><File path="{cx700_nbt}"/></Update>'
        f'<Update version="{CU8}"><File path="{NBT}"/></Update>'
    )
    found = parse_update_info(xml, [NBT, CAT, cx700_nbt])
    assert [u.key for u in found] == [CX700, CX600]


def test_same_device_in_two_versions_is_two_updates() -> None:
    old = "4.0.7577.4366"
    xml = updates(
        f'<Update version="{CU8}"><File path="{NBT}"/></Update>'
        f'<Update version="{old}"><File path="{NBT}"/></Update>'
    )
    assert [u.version for u in parse_update_info(xml, MEMBERS)] == [CU8, old]


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xml", "problem"),
    [
        pytest.param(b"this is not XML", "not well-formed XML", id="not-xml"),
        pytest.param(b"", "not well-formed XML", id="empty"),
        pytest.param(b"<Updates><Update></Updates>", "not well-formed XML", id="unclosed"),
        pytest.param(
            b'<?xml version="1.0"?>\n'
            b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n'
            b'<Updates><Update version="&e;"/></Updates>',
            "DTDs and entities are not allowed",
            id="xxe",
        ),
        pytest.param(
            b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n'
            b' <!ENTITY lol "lol">\n'
            b' <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n'
            b' <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">\n'
            b' <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">\n'
            b' <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">\n'
            b' <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">\n'
            b' <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">\n'
            b' <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">\n'
            b' <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">\n'
            b' <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">\n'
            b"]>\n<Updates><Update><Version>&lol9;</Version></Update></Updates>",
            "DTDs and entities are not allowed",
            id="billion-laughs",
        ),
        pytest.param(
            b'<!DOCTYPE Updates><Updates><Update version="4.0.7577.4387"/></Updates>',
            "DTDs and entities are not allowed",
            id="plain-doctype",
        ),
        pytest.param(b"<Updates><Updates/></Updates>", "lists no <Update>", id="no-update"),
        pytest.param(b"<Package/>", "lists no <Update>", id="other-root"),
    ],
)
def test_document_errors(xml: bytes, problem: str) -> None:
    assert problem in error(xml)


@pytest.mark.parametrize(
    ("update", "problem"),
    [
        pytest.param(
            f'<Update {DEVICE}><File name="CPE.nbt"/></Update>',
            "update 1: missing version",
            id="missing-version",
        ),
        pytest.param(
            f'<Update version="4.0.x" {DEVICE}><File name="CPE.nbt"/></Update>',
            "update 1: version '4.0.x' is not a dotted version",
            id="bad-version",
        ),
        pytest.param(
            f'<Update version="{CU8}"><File name="CPE.nbt"/></Update>',
            "update 1: missing device_type, brand, model, revision, locale, update_type",
            id="no-device-fields-and-no-path",
        ),
        pytest.param(
            f'<Update version="{CU8}" {DEVICE.replace("Polycom", "")}><File name="CPE.nbt"/>'
            "</Update>",
            "update 1: missing brand",
            id="empty-brand",
        ),
        pytest.param(
            f'<Update version="{CU8}" {DEVICE.replace("Polycom", "..")}>'
            '<File name="CPE.nbt"/></Update>',
            "update 1: brand '..' is not a safe name",
            id="dot-dot-brand",
        ),
        pytest.param(
            f'<Update version="{CU8}"><File path="UCPhone/Polycom/../A/ENU/CPE/CPE.nbt"/></Update>',
            "update 1: model '..' is not a safe name",
            id="dot-dot-from-path",
        ),
        pytest.param(
            f'<Update version="{CU8}" {DEVICE.replace("CX600", "a/b")}>'
            '<File name="CPE.nbt"/></Update>',
            "update 1: model 'a/b' is not a safe name",
            id="slash-in-model",
        ),
        pytest.param(
            f'<Update version="{CU8}" {DEVICE.replace("ENU", "EN U")}>'
            '<File name="CPE.nbt"/></Update>',
            "update 1: locale 'EN U' is not a safe name",
            id="space-in-locale",
        ),
        pytest.param(
            f'<Update version="{CU8}" {DEVICE}><File name="Missing.nbt"/></Update>',
            f"update 1: file '{PREFIX}/Missing.nbt' is not in the package",
            id="member-absent",
        ),
        pytest.param(
            f'<Update version="{CU8}" {DEVICE}><File name="CPE.nbt" signature="Nope.cat"/>'
            "</Update>",
            "update 1: signature file 'Nope.cat' is not in the package",
            id="signature-absent",
        ),
        pytest.param(
            f'<Update version="{CU8}" {DEVICE}><File signature="CPE.cat"/></Update>',
            "update 1: a <File> has neither name nor path",
            id="file-without-name-or-path",
        ),
        pytest.param(
            f'<Update version="{CU8}" {DEVICE}>'
            f'<File name="CPE.nbt"/><File name="cpe.NBT" path="{CAT}"/></Update>',
            "update 1 (UCPhone/Polycom/CX600/A/ENU/CPE): two files share a name",
            id="two-files-same-name",
        ),
        pytest.param(
            f'<Update version="{CU8}" {DEVICE}><File name="updateInfo.xml" path="{NBT}"/></Update>',
            "update 1: file name 'updateInfo.xml' is not a safe name",
            id="file-named-updateinfo",
        ),
        pytest.param(
            f'<Update version="{CU8}" {DEVICE}><File name=".hidden" path="{NBT}"/></Update>',
            "update 1: file name '.hidden' is not a safe name",
            id="file-name-leading-dot",
        ),
        pytest.param(
            f'<Update version="{CU8}" {DEVICE.replace("CX600", "CX800")}/>',
            "update 1 (UCPhone/Polycom/CX800/A/ENU/CPE): no files, "
            "and no members under UCPhone/Polycom/CX800/A/ENU/CPE/",
            id="no-files-and-no-members",
        ),
        pytest.param(
            f'<Update version="{CU8}" timestamp="{"2" * 65}" {DEVICE}>'
            '<File name="CPE.nbt"/></Update>',
            "update 1: timestamp is not a printable date",
            id="timestamp-too-long",
        ),
    ],
)
def test_update_errors_name_the_update_and_the_problem(update: str, problem: str) -> None:
    assert problem in error(updates(update))


def test_error_in_a_later_update_names_that_update() -> None:
    xml = updates(
        f'<Update version="{CU8}" {DEVICE}><File name="CPE.nbt"/></Update>'
        f'<Update version="4.0.7577.4366" {DEVICE}><File name="Gone.nbt"/></Update>'
    )
    assert "update 2: file" in error(xml)


def test_duplicate_update_is_refused() -> None:
    xml = updates(
        f'<Update version="{CU8}" {DEVICE}><File name="CPE.nbt"/></Update>'
        f'<Update version="{CU8}" {DEVICE.lower()}><File name="CPE.nbt"/></Update>'
    )
    message = error(xml)
    assert "update 2 repeats" in message
    assert "ucphone/polycom/cx600/a/enu/cpe 4.0.7577.4387" in message.casefold()


def test_duplicate_update_in_the_same_spelling_is_refused() -> None:
    one = f'<Update version="{CU8}" {DEVICE}><File name="CPE.nbt"/></Update>'
    message = error(updates(one + one))
    assert (
        message == "updateInfo.xml: update 2 repeats UCPhone/Polycom/CX600/A/ENU/CPE 4.0.7577.4387"
    )


# -- the rule GUID (docs/protocol.md §8: rules carry a GUID "pre-assigned" to them) ----------

GUID = "d5ce3c10-2588-420b-a5f1-1b00b8b58e4a"


@pytest.mark.parametrize(
    "update",
    [
        f'<Update version="{CU8}" {DEVICE} id="{GUID}"><File name="CPE.nbt"/></Update>',
        f'<Update version="{CU8}" {DEVICE} guid="{GUID}"><File name="CPE.nbt"/></Update>',
        f'<Update version="{CU8}" {DEVICE} GUID="{GUID}"><File name="CPE.nbt"/></Update>',
        f'<Update version="{CU8}" {DEVICE}><Id>{GUID}</Id><File name="CPE.nbt"/></Update>',
        f'<Update version="{CU8}" {DEVICE}><Guid> {GUID} </Guid><File name="CPE.nbt"/></Update>',
    ],
)
def test_a_rule_guid_is_kept_from_an_attribute_or_an_element(update: str) -> None:
    assert parse_one(updates(update)).guid == GUID


def test_a_guid_is_kept_as_spelled_and_none_without_one() -> None:
    braces = "{D5CE3C10-2588-420B-A5F1-1B00B8B58E4A}"
    got = parse_one(updates(f'<Update version="{CU8}" {DEVICE} guid="{braces}"/>'))
    assert got.guid == braces
    assert parse_one(CANONICAL).guid is None


def test_an_unusable_guid_is_refused() -> None:
    long = "x" * 65
    assert "guid is over 64 characters" in error(
        updates(f'<Update version="{CU8}" {DEVICE} guid="{long}"/>')
    )


def test_the_writer_round_trips_the_guid() -> None:
    update = PackageUpdate(CX600, CU8, None, (PackageModule("CPE.nbt", NBT, CAT),), GUID)
    assert parse_one(render_update_info([update])) == update
