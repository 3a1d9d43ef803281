"""Which update a device gets (docs/protocol.md §6), as parameter tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import pytest

from appliance.catalogue.decision import (
    Decision,
    Reason,
    answer_key,
    choose_update,
    is_test_device,
)
from appliance.model import (
    Catalog,
    DeviceRequest,
    ReportedModule,
    Zone,
)
from appliance.testing import CU6, CU7, CU8, catalog_of, make_rule, rule_key, update_files
from appliance.testing import PHONE_MAC as MAC
from appliance.testing import PHONE_SERIAL as SERIAL


def request(
    version: str | None = None,
    modules: tuple[tuple[str, str | None], ...] = (),
    mac: str | None = MAC,
    serial: str | None = SERIAL,
    **fields: str,
) -> DeviceRequest:
    values = {
        "device_type": "UCPhone",
        "brand": "Polycom",
        "model": "CX600",
        "revision": "A",
        "locale": "ENU",
    }
    values.update(fields)
    return DeviceRequest(
        device_type=values["device_type"],
        brand=values["brand"],
        model=values["model"],
        revision=values["revision"],
        locale=values["locale"],
        mac=mac,
        serial=serial,
        version=version,
        modules=tuple(ReportedModule(name, v) for name, v in modules),
    )


def offered(decision: Decision) -> list[tuple[str, str, tuple[str, ...]]]:
    """What the phone would see: (update type, version, file names) per offer."""
    return [
        (o.rule.key.update_type, o.version, tuple(f.file_name for f in o.files))
        for o in decision.offers
    ]


# --- rule matching -------------------------------------------------------------------

MATCHING = [
    pytest.param(request(CU7), catalog_of(make_rule(CU8)), CU8, id="exact-fields"),
    pytest.param(
        request(CU7, brand="POLYCOM", model="cx600", locale="enu", device_type="ucphone"),
        catalog_of(make_rule(CU8)),
        CU8,
        id="request-case-differs",
    ),
    pytest.param(
        request(CU7),
        catalog_of(make_rule(CU8, key=rule_key(brand="polycom", model="Cx600", locale="Enu"))),
        CU8,
        id="rule-case-differs",
    ),
    pytest.param(request(CU7, model="CX500"), catalog_of(make_rule(CU8)), None, id="other-model"),
    pytest.param(request(CU7, locale="DEU"), catalog_of(make_rule(CU8)), None, id="other-locale"),
    pytest.param(request(CU7, revision="B"), catalog_of(make_rule(CU8)), None, id="other-revision"),
    pytest.param(request(CU7, brand="Aastra"), catalog_of(make_rule(CU8)), None, id="other-brand"),
    pytest.param(request(CU7), catalog_of(), None, id="empty-catalogue"),
]


@pytest.mark.parametrize(("req", "cat", "expected"), MATCHING)
def test_rule_matching_ignores_case(req: DeviceRequest, cat: Catalog, expected: str | None) -> None:
    decision = choose_update(req, cat)
    if expected is None:
        assert decision.offers == ()
        assert decision.downloads == 0
        assert decision.reason is Reason.NO_RULE
        assert "no rule for UCPhone/" in decision.detail
    else:
        assert offered(decision) == [("CPE", expected, ("CPE.nbt",))]
        assert decision.downloads == 1
        assert decision.reason is Reason.APPROVED


# --- which version: ordinary and test devices ---------------------------------------

CHOICE = [
    # (request, catalogue, offered version or None, reason)
    pytest.param(
        request(CU7), catalog_of(make_rule(CU8)), CU8, Reason.APPROVED, id="ordinary-approved"
    ),
    pytest.param(
        request(CU7),
        catalog_of(make_rule(pending=CU8)),
        None,
        Reason.NO_VERSION,
        id="ordinary-pending-only-rule",
    ),
    pytest.param(
        request(CU7),
        catalog_of(make_rule(None, restore=CU6)),
        None,
        Reason.NO_VERSION,
        id="ordinary-restored-to-nothing",
    ),
    pytest.param(
        request(CU6),
        catalog_of(make_rule(CU7, pending=CU8)),
        CU7,
        Reason.APPROVED,
        id="ordinary-ignores-pending",
    ),
    pytest.param(
        request(CU7),
        catalog_of(make_rule(pending=CU8), test_macs=(MAC,)),
        CU8,
        Reason.PENDING_TEST_DEVICE,
        id="test-by-mac-pending-only",
    ),
    pytest.param(
        request(CU7, mac=None),
        catalog_of(make_rule(pending=CU8), test_serials=(SERIAL,)),
        CU8,
        Reason.PENDING_TEST_DEVICE,
        id="test-by-serial-pending-only",
    ),
    pytest.param(
        request(CU6),
        catalog_of(make_rule(CU7, pending=CU8), test_macs=(MAC,)),
        CU8,
        Reason.PENDING_TEST_DEVICE,
        id="test-prefers-pending-over-approved",
    ),
    pytest.param(
        request(CU6),
        catalog_of(make_rule(CU7), test_serials=(SERIAL,)),
        CU7,
        Reason.APPROVED,
        id="test-no-pending-falls-back-to-approved",
    ),
    pytest.param(
        request(CU7),
        catalog_of(make_rule(), test_macs=(MAC,)),
        None,
        Reason.NO_VERSION,
        id="test-rule-with-no-version",
    ),
    pytest.param(
        request(CU6),
        catalog_of(make_rule(CU7, pending=CU8), test_macs=("00-04-F2-00-00-01",)),
        CU7,
        Reason.APPROVED,
        id="other-mac-listed-is-ordinary",
    ),
]


@pytest.mark.parametrize(("req", "cat", "expected", "reason"), CHOICE)
def test_version_choice(
    req: DeviceRequest, cat: Catalog, expected: str | None, reason: Reason
) -> None:
    decision = choose_update(req, cat)
    assert decision.reason is reason
    if expected is None:
        assert decision.offers == ()
        assert decision.downloads == 0
    else:
        assert offered(decision) == [("CPE", expected, ("CPE.nbt",))]
        assert decision.offers[0].reason is reason
        assert decision.downloads == 1


@pytest.mark.parametrize(
    ("req", "cat", "expected"),
    [
        pytest.param(request(mac=MAC, serial=None), catalog_of(test_macs=(MAC,)), True, id="mac"),
        pytest.param(
            request(mac=None, serial=SERIAL), catalog_of(test_serials=(SERIAL,)), True, id="serial"
        ),
        pytest.param(
            request(mac=SERIAL, serial=MAC),
            catalog_of(test_macs=(MAC,)),
            False,
            id="serial-list-is-not-mac-list",
        ),
        pytest.param(request(mac=None, serial=None), catalog_of(), False, id="anonymous"),
    ],
)
def test_is_test_device(req: DeviceRequest, cat: Catalog, expected: bool) -> None:
    assert is_test_device(req, cat) is expected


# --- differs, up to date, rollback --------------------------------------------------

VERSIONS = [
    # (reported top-level version, approved version, offered?, rollback)
    pytest.param(CU8, CU8, False, False, id="same"),
    pytest.param("4.0.07577.4387", CU8, False, False, id="same-numerically-leading-zero"),
    pytest.param(" 4.0.7577.4387 ", CU8, False, False, id="same-with-spaces"),
    pytest.param(CU7, CU8, True, False, id="newer-approved"),
    pytest.param(CU8, CU7, True, True, id="rollback-after-restore"),
    pytest.param("4.0.7577.4387.1", CU8, True, True, id="rollback-longer-reported"),
    pytest.param("garbage", CU8, True, False, id="unparsable-reported-not-rollback"),
]


@pytest.mark.parametrize(("reported", "approved", "is_offered", "rollback"), VERSIONS)
def test_offered_whenever_version_differs(
    reported: str, approved: str, is_offered: bool, rollback: bool
) -> None:
    decision = choose_update(request(reported), catalog_of(make_rule(approved, restore=CU6)))
    if not is_offered:
        assert offered(decision) == []
        assert decision.reason is Reason.UP_TO_DATE
        assert f"already runs approved {approved}" in decision.detail
        return
    assert offered(decision) == [("CPE", approved, ("CPE.nbt",))]
    offer = decision.offers[0]
    assert offer.rollback is rollback
    assert offer.reported == reported
    assert decision.reason is Reason.APPROVED
    verb = "rolls back from" if rollback else "differs from"
    assert f"approved {approved} {verb} reported {reported}" in decision.detail


def test_restore_rolls_back_a_test_device_too() -> None:
    # After restore, approved went back to CU7; a test device on CU8 with nothing pending.
    cat = catalog_of(make_rule(CU7), test_macs=(MAC,))
    decision = choose_update(request(CU8), cat)
    assert offered(decision) == [("CPE", CU7, ("CPE.nbt",))]
    assert decision.offers[0].rollback is True
    assert decision.reason is Reason.APPROVED


def test_test_device_already_on_pending_is_up_to_date() -> None:
    decision = choose_update(
        request(CU8), catalog_of(make_rule(CU7, pending=CU8), test_macs=(MAC,))
    )
    assert offered(decision) == []
    assert decision.reason is Reason.UP_TO_DATE
    assert decision.detail == (
        f"test device {MAC}: already runs pending {CU8} (rule UCPhone/Polycom/CX600/A/ENU/CPE)"
    )


# --- where the reported version comes from -------------------------------------------

REPORTED = [
    # (top-level version, modules, reported version the decision used)
    pytest.param(None, (("CPE.nbt", CU8),), CU8, id="single-module-by-name"),
    pytest.param(
        None, (("boot.bin", CU6), ("cpe.NBT", CU8)), CU8, id="module-by-name-ignoring-case"
    ),
    pytest.param(CU6, (("CPE.nbt", CU8),), CU8, id="module-by-name-beats-top-level"),
    pytest.param(CU8, (("boot.bin", CU6), ("ui.bin", CU6)), CU8, id="top-level-when-no-name"),
    pytest.param(CU8, (), CU8, id="top-level-no-modules"),
    pytest.param(None, (("firmware.img", CU8),), CU8, id="only-module-other-name"),
    pytest.param(None, (("boot.bin", CU8), ("ui.bin", CU8)), None, id="unknown-two-modules"),
    pytest.param(None, (), None, id="unknown-nothing-reported"),
    pytest.param(None, (("CPE.nbt", None),), None, id="unknown-module-without-version"),
    pytest.param("", (("CPE.nbt", ""),), None, id="unknown-blank-versions"),
]


@pytest.mark.parametrize(("version", "modules", "reported"), REPORTED)
def test_reported_version_source(
    version: str | None, modules: tuple[tuple[str, str | None], ...], reported: str | None
) -> None:
    # The approved version is CU8: a device known to run CU8 is up to date, any other
    # (or unknown) reported version gets CU8 offered.
    decision = choose_update(request(version, modules), catalog_of(make_rule(CU8)))
    if reported == CU8:
        assert offered(decision) == []
        assert decision.reason is Reason.UP_TO_DATE
    else:
        assert offered(decision) == [("CPE", CU8, ("CPE.nbt",))]
        assert decision.offers[0].reported == reported
        assert decision.offers[0].rollback is False
        assert "unknown reported version" in decision.detail


def test_module_matched_by_name_decides_not_other_modules() -> None:
    # The phone runs an old bootloader but the CPE image is current: no update.
    req = request(None, (("boot.bin", CU6), ("CPE.nbt", CU8)))
    decision = choose_update(req, catalog_of(make_rule(CU8)))
    assert decision.reason is Reason.UP_TO_DATE
    # And with the CPE image old, the offer says which version it replaces.
    req = request(None, (("boot.bin", CU8), ("CPE.nbt", CU7)))
    decision = choose_update(req, catalog_of(make_rule(CU8)))
    assert offered(decision) == [("CPE", CU8, ("CPE.nbt",))]
    assert decision.offers[0].reported == CU7


# --- files --------------------------------------------------------------------------


def test_missing_files_are_never_offered() -> None:
    decision = choose_update(request(CU7), catalog_of(make_rule(CU8), files=()))
    assert offered(decision) == []
    assert decision.downloads == 0
    assert decision.reason is Reason.MISSING_FILES
    assert f"approved {CU8}" in decision.detail
    assert "no files in the catalogue" in decision.detail


def test_files_of_another_version_do_not_count() -> None:
    decision = choose_update(request(CU7), catalog_of(make_rule(CU8), files=update_files(CU7)))
    assert decision.reason is Reason.MISSING_FILES
    assert decision.offers == ()


def test_up_to_date_device_needs_no_files() -> None:
    decision = choose_update(request(CU8), catalog_of(make_rule(CU8), files=()))
    assert decision.reason is Reason.UP_TO_DATE


def test_module_recognised_by_name_of_another_version_of_the_rule() -> None:
    # Approved CU7 lost its files; CU8 (pending) still names the image CPE.nbt, so the
    # phone's CPE.nbt module is recognised among several modules.
    cat = catalog_of(make_rule(CU7, pending=CU8), files=update_files(CU8))
    on_cu7 = request(None, (("boot.bin", CU6), ("CPE.nbt", CU7)))
    assert choose_update(on_cu7, cat).reason is Reason.UP_TO_DATE
    on_cu6 = request(None, (("boot.bin", CU7), ("CPE.nbt", CU6)))
    decision = choose_update(on_cu6, cat)
    assert decision.offers == ()
    assert decision.reason is Reason.MISSING_FILES


def test_offer_carries_every_file_of_the_version() -> None:
    cat = catalog_of(
        make_rule(CU8), files=update_files(CU8, "CPE.nbt", "boot.bin") + update_files(CU7)
    )
    decision = choose_update(request(CU7), cat)
    assert offered(decision) == [("CPE", CU8, ("boot.bin", "CPE.nbt"))]
    paths = [str(f.path) for f in decision.offers[0].files]
    assert paths == [
        f"UCPhone/Polycom/CX600/A/ENU/{CU8}/CPE/boot.bin",
        f"UCPhone/Polycom/CX600/A/ENU/{CU8}/CPE/CPE.nbt",
    ]


# --- several update types for one device --------------------------------------------

CPE = rule_key("CPE")
UI = rule_key("UI")
TWO_TYPES = [
    # (approved CPE, approved UI, CPE files present, offered update types, overall reason)
    pytest.param(CU8, "1.2", True, ["CPE", "UI"], Reason.APPROVED, id="both-offered"),
    pytest.param(CU7, "1.2", True, ["UI"], Reason.APPROVED, id="cpe-up-to-date-ui-offered"),
    pytest.param(CU7, "1.1", True, [], Reason.UP_TO_DATE, id="both-up-to-date"),
    pytest.param(None, "1.1", True, [], Reason.UP_TO_DATE, id="no-version-and-up-to-date"),
    pytest.param(CU8, "1.1", False, [], Reason.MISSING_FILES, id="missing-files-most-telling"),
    pytest.param(None, None, True, [], Reason.NO_VERSION, id="neither-has-a-version"),
]


@pytest.mark.parametrize(("cpe", "ui", "cpe_files", "types", "reason"), TWO_TYPES)
def test_two_update_types_for_one_device(
    cpe: str | None, ui: str | None, cpe_files: bool, types: list[str], reason: Reason
) -> None:
    all_files = update_files("1.1", "UI.bin", key=UI) + update_files("1.2", "UI.bin", key=UI)
    if cpe_files:
        all_files += update_files(CU7, "CPE.nbt", key=CPE) + update_files(CU8, "CPE.nbt", key=CPE)
    cat = catalog_of(
        make_rule(cpe, key=CPE, rule_id=1), make_rule(ui, key=UI, rule_id=2), files=all_files
    )
    req = request(None, (("CPE.nbt", CU7), ("UI.bin", "1.1")))
    decision = choose_update(req, cat)
    assert [t for t, _, _ in offered(decision)] == types
    assert decision.downloads == len(types)
    assert decision.reason is reason
    for offer in decision.offers:
        expected_file = "CPE.nbt" if offer.rule.key.update_type == "CPE" else "UI.bin"
        assert [f.file_name for f in offer.files] == [expected_file]
        assert offer.version == (cpe if offer.rule.key.update_type == "CPE" else ui)
    # One line covering both rules.
    assert "\n" not in decision.detail
    assert "/CPE" in decision.detail and "/UI" in decision.detail


# --- the human line -----------------------------------------------------------------

RULE = "UCPhone/Polycom/CX600/A/ENU/CPE"
DETAILS = [
    pytest.param(
        request(CU7),
        catalog_of(make_rule(pending=CU8), test_macs=(MAC,)),
        f"test device {MAC}: pending {CU8} differs from reported {CU7} (rule {RULE})",
        id="pending-test-device",
    ),
    pytest.param(
        request(CU7, mac=None),
        catalog_of(make_rule(CU8)),
        f"device serial {SERIAL}: approved {CU8} differs from reported {CU7} (rule {RULE})",
        id="approved-by-serial",
    ),
    pytest.param(
        request(CU8, mac=None, serial=None),
        catalog_of(make_rule(CU7)),
        f"device without MAC or serial: approved {CU7} rolls back from reported {CU8}"
        f" (rule {RULE})",
        id="rollback-anonymous",
    ),
    pytest.param(
        request(CU8),
        catalog_of(make_rule(CU8)),
        f"device {MAC}: already runs approved {CU8} (rule {RULE})",
        id="up-to-date",
    ),
    pytest.param(
        request(CU7),
        catalog_of(make_rule(pending=CU8)),
        f"device {MAC}: rule {RULE} has no approved version",
        id="no-version-ordinary",
    ),
    pytest.param(
        request(CU7),
        catalog_of(make_rule(), test_macs=(MAC,)),
        f"test device {MAC}: rule {RULE} has no pending or approved version",
        id="no-version-test-device",
    ),
    pytest.param(
        request(CU7),
        catalog_of(make_rule(CU8), files=()),
        f"device {MAC}: approved {CU8} of rule {RULE} has no files in the catalogue; not offered",
        id="missing-files",
    ),
    pytest.param(
        request(CU7, model="CX3000"),
        catalog_of(make_rule(CU8)),
        f"device {MAC}: no rule for UCPhone/Polycom/CX3000/A/ENU",
        id="no-rule",
    ),
]


@pytest.mark.parametrize(("req", "cat", "detail"), DETAILS)
def test_detail_line(req: DeviceRequest, cat: Catalog, detail: str) -> None:
    assert choose_update(req, cat).detail == detail


def test_paths_follow_store_layout() -> None:
    # Guard for the helpers: the files built here look like the store's.
    (f,) = update_files(CU8)
    assert f.path == PurePosixPath("UCPhone/Polycom/CX600/A/ENU") / CU8 / "CPE" / "CPE.nbt"


# -- the key answers are remembered by (phones/answers.py) ----------------------------------
# PhoneService remembers an answer under `answer_key`. A field that choose_update reads but
# the key lacks would hand one device another's answer, so both tests below go over every
# field of DeviceRequest: a new field needs values in KEY_VARIANTS before they pass.

TEST_MAC = "00-04-F2-00-00-99"
TEST_SERIAL = "64167F9999"
CU9 = "4.0.7577.4400"
REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(DeviceRequest))

# Approved CU8 for everyone, pending CU9 for the test devices, each with its files.
KEY_CATALOG = catalog_of(
    make_rule(CU8, pending=CU9), test_macs=(TEST_MAC,), test_serials=(TEST_SERIAL,)
)
KEY_BASES = (
    request(CU7),  # the top-level version decides
    request(modules=(("CPE.nbt", CU7),)),  # the module list decides
    request(CU8, mac=TEST_MAC),  # a test device
    request(CU9, mac=None, serial=TEST_SERIAL),  # a test device by serial, up to date
    request(mac=None, serial=None),  # anonymous, nothing reported
)
# Other values for each field: some change the answer, some (spelling) must not.
KEY_VARIANTS: dict[str, tuple[object, ...]] = {
    "device_type": ("UCPhone", "ucphone", " UCPhone ", "Other"),
    "brand": ("Polycom", "POLYCOM", "Aastra"),
    "model": ("CX600", "cx600", "CX3000"),
    "revision": ("A", "a", "B"),
    "locale": ("ENU", "enu", "DEU"),
    "mac": (None, MAC, TEST_MAC, "00-04-F2-00-00-01"),
    "serial": (None, SERIAL, TEST_SERIAL),
    "modules": (
        (),
        (ReportedModule("CPE.nbt", CU7),),
        (ReportedModule("cpe.NBT", CU8),),
        (ReportedModule("CPE.nbt", CU9),),
        (ReportedModule("Other.nbt", CU8),),
        (ReportedModule("Other.nbt", CU8), ReportedModule("CPE.nbt", CU7)),
    ),
    "version": (None, "", CU7, CU8, CU9),
    "user_id": (None, "alice@example.com", "bob@example.com"),
    "zone": (Zone.INTERNAL, Zone.EXTERNAL),
    "address": (None, "192.0.2.1", "198.51.100.7"),
}


def key_requests() -> list[tuple[tuple[str, int] | None, DeviceRequest]]:
    """Each base, and each base with one field changed (with that field and the base)."""
    out: list[tuple[tuple[str, int] | None, DeviceRequest]] = [(None, b) for b in KEY_BASES]
    for name in REQUEST_FIELDS:
        for i, base in enumerate(KEY_BASES):
            out.extend(
                ((name, i), dataclasses.replace(base, **{name: value}))
                for value in KEY_VARIANTS[name]
            )
    return out


def answer_of(req: DeviceRequest) -> tuple[object, ...]:
    """What a remembered answer holds for the phone: the offers and the reason."""
    decision = choose_update(req, KEY_CATALOG)
    return (tuple(offered(decision)), decision.reason)


def fields_read(call: Callable[[DeviceRequest], object], req: DeviceRequest) -> set[str]:
    """The DeviceRequest fields `call` reads of `req` (through a recording subclass)."""
    seen: set[str] = set()

    class Recording(DeviceRequest):
        def __getattribute__(self, name: str) -> Any:
            if name in REQUEST_FIELDS:
                seen.add(name)
            return super().__getattribute__(name)

    call(Recording(**{name: getattr(req, name) for name in REQUEST_FIELDS}))
    return seen


def test_every_request_field_has_variants() -> None:
    assert sorted(KEY_VARIANTS) == sorted(REQUEST_FIELDS)


def test_answer_key_reads_every_field_choose_update_reads() -> None:
    # MAC and serial are read by the key through is_test_device: that is all the decision
    # may use them for (besides naming the device in the detail line).
    by_decision: set[str] = set()
    by_key: set[str] = set()
    for _, req in key_requests():
        by_decision |= fields_read(lambda r: choose_update(r, KEY_CATALOG), req)
        by_key |= fields_read(lambda r: answer_key(r, KEY_CATALOG), req)
    assert by_decision - by_key == set()
    assert by_decision >= {"device_type", "brand", "model", "revision", "locale", "modules"}


def test_requests_with_equal_answer_keys_get_equal_answers() -> None:
    answers: dict[tuple[object, ...], tuple[object, ...]] = {}
    varied: dict[tuple[str, int], set[tuple[object, ...]]] = {}
    read: set[str] = set()
    for changed, req in key_requests():
        answer = answer_of(req)
        remembered = answers.setdefault(answer_key(req, KEY_CATALOG), answer)
        assert remembered == answer, (changed, req)
        if changed is not None:
            varied.setdefault(changed, set()).add(answer)
        read |= fields_read(lambda r: choose_update(r, KEY_CATALOG), req)
    # The table has teeth: for every field the decision reads, two requests that differ
    # only in that field get different answers, so a key without it fails the assert above.
    for name in read:
        assert any(len(varied[name, i]) > 1 for i in range(len(KEY_BASES))), name
