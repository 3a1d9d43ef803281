"""The rollout decision (appliance/catalogue/rollout.py), as parameter tables.

Nothing configured means today's answers: every table of tests/test_decision.py goes
through `decide` with an empty policy and with one that changes nothing for its devices,
and must come out as `choose_update`'s answer, word for word.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

import tests.test_decision as table
from appliance.catalogue.decision import Reason, choose_update
from appliance.catalogue.rollout import (
    RolloutDecision,
    RolloutReason,
    decide,
)
from appliance.catalogue.rollout_paths import TANJAY_STEPS
from appliance.catalogue.rollout_policy import (
    NetworkPolicy,
    Pin,
    PinAction,
    RolloutPolicy,
    StagedApproval,
    UpgradeStep,
    bucket,
)
from appliance.catalogue.rollout_windows import DownloadWindows, TimeWindow, parse_network
from appliance.model import Catalog, DeviceRequest, IdentifierKind, RuleKey, Zone
from appliance.testing import (
    CU6,
    CU7,
    CU8,
    CX600,
    PHONE_MAC,
    PHONE_SERIAL,
    catalog_of,
    device_request,
    make_rule,
    update_files,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ADDRESS = "10.1.2.3"
CU9 = "4.0.7577.4400"
OTHER_MAC, OTHER_SERIAL = "00-04-F2-00-00-77", "UNRELATED1"


# --- nothing configured: exactly choose_update ------------------------------------------


def decision_table_rows() -> Iterator[tuple[str, DeviceRequest, Catalog]]:
    """(id, request, catalogue) of every row of test_decision.py's tables."""
    for name, rows in (("matching", table.MATCHING), ("choice", table.CHOICE)):
        for p in rows:
            yield f"{name}-{p.id}", p.values[0], p.values[1]
    for p in table.DETAILS:
        yield f"details-{p.id}", p.values[0], p.values[1]
    for p in table.VERSIONS:
        reported, approved = p.values[0], p.values[1]
        yield (
            f"versions-{p.id}",
            table.request(reported),
            catalog_of(make_rule(approved, restore=CU6)),
        )
    for p in table.REPORTED:
        version, modules = p.values[0], p.values[1]
        yield f"reported-{p.id}", table.request(version, modules), catalog_of(make_rule(CU8))
    for p in table.TWO_TYPES:
        cpe, ui, cpe_files = p.values[0], p.values[1], p.values[2]
        ui_key, cpe_key = table.UI, table.CPE
        files = update_files("1.1", "UI.bin", key=ui_key) + update_files(
            "1.2", "UI.bin", key=ui_key
        )
        if cpe_files:
            files += update_files(CU7, key=cpe_key) + update_files(CU8, key=cpe_key)
        cat = catalog_of(
            make_rule(cpe, key=cpe_key, rule_id=1),
            make_rule(ui, key=ui_key, rule_id=2),
            files=files,
        )
        yield f"two-types-{p.id}", table.request(None, (("CPE.nbt", CU7), ("UI.bin", "1.1"))), cat
    broken = dataclasses.replace(
        catalog_of(make_rule(CU8)), broken=frozenset({(CX600.folded(), CU8)})
    )
    yield "broken-files", table.request(CU7), broken
    yield (
        "files-of-another-version",
        table.request(CU7),
        catalog_of(make_rule(CU8), files=update_files(CU7)),
    )
    for i, (_, req) in enumerate(table.key_requests()):
        yield f"key-{i}", req, table.KEY_CATALOG


def inert_policy(cat: Catalog) -> RolloutPolicy:
    """A policy with something of every kind that changes nothing for the tables' devices:
    every approval staged at 100 %, pins on other devices, upgrade steps nobody qualifies
    for, and windows that are open."""
    all_day = DownloadWindows("Europe/Berlin", (TimeWindow.parse("00:00-00:00"),))
    return RolloutPolicy(
        paths=(
            *TANJAY_STEPS,
            UpgradeStep("UCPhone", "Polycom", "CX600", "0.1", "0.1"),
            UpgradeStep("UCPhone", "Polycom", "CX600", "9.0", "9.0"),  # not older than targets
        ),
        staged=tuple(
            StagedApproval(r.key, r.approved_version, (5.0, 100.0), 1)
            for r in cat.rules
            if r.approved_version
        ),
        networks=(
            NetworkPolicy(parse_network("0.0.0.0/0"), all_day),
            NetworkPolicy(parse_network("10.1.0.0/16"), DownloadWindows("UTC")),
        ),
        external=all_day,
        pins=(
            Pin(IdentifierKind.MAC, OTHER_MAC, PinAction.EXCLUDE, "broken screen"),
            Pin(IdentifierKind.SERIAL, OTHER_SERIAL, PinAction.HOLD, "lab", CU6),
        ),
    )


@pytest.mark.parametrize("policy_kind", ["empty", "inert"])
def test_nothing_configured_means_choose_update(policy_kind: str) -> None:
    rows = list(decision_table_rows())
    tables = (table.MATCHING, table.CHOICE, table.DETAILS, table.VERSIONS, table.REPORTED)
    expected_rows = sum(map(len, tables)) + len(table.TWO_TYPES) + 2 + len(table.key_requests())
    assert len(rows) == expected_rows > 250  # every table, and the key table's requests
    for row_id, req, cat in rows:
        policy = RolloutPolicy() if policy_kind == "empty" else inert_policy(cat)
        for zone in (Zone.INTERNAL, Zone.EXTERNAL):
            asked = dataclasses.replace(req, zone=zone)
            expected = RolloutDecision.of(choose_update(asked, cat))
            assert decide(asked, cat, policy, NOW, ADDRESS) == expected, row_id


# --- stages and buckets ----------------------------------------------------------------

SALT = "ucupdates-rollout"
TEST_MAC = "00-04-F2-00-00-99"
PLACE = bucket(SALT, PHONE_MAC, None)  # the phone's bucket
INSIDE, AT_BOUNDARY = (PLACE + 1) / 100, PLACE / 100  # shares just taking it in, or not
NO_ID = dict(mac=None, serial=None)


def staged_catalog(
    approved: str = CU8, restore: str | None = CU7, pending: str | None = None
) -> Catalog:
    return catalog_of(make_rule(approved, pending, restore), test_macs=(TEST_MAC,))


STAGES = [
    # (share %, paused, rule (approved, restore, pending), request fields, offered, reason)
    pytest.param(INSIDE, False, (CU8, CU7, None), {}, CU8, Reason.APPROVED, id="in-stage"),
    pytest.param(
        AT_BOUNDARY,
        False,
        (CU8, CU7, None),
        {"version": CU6},
        CU7,
        RolloutReason.NOT_IN_STAGE,
        id="at-boundary-gets-previous",
    ),
    pytest.param(
        AT_BOUNDARY,
        False,
        (CU8, CU7, None),
        {},
        None,
        RolloutReason.NOT_IN_STAGE,
        id="at-boundary-stays-on-previous",
    ),
    pytest.param(
        0.0,
        False,
        (CU8, CU7, None),
        {"version": CU6},
        CU7,
        RolloutReason.NOT_IN_STAGE,
        id="0%-previous-for-everybody",
    ),
    pytest.param(100.0, False, (CU8, CU7, None), {}, CU8, Reason.APPROVED, id="100%"),
    pytest.param(
        0.0,
        False,
        (CU8, CU7, None),
        {"version": CU8},
        None,
        Reason.UP_TO_DATE,
        id="outside-but-already-on-approved",
    ),
    pytest.param(
        0.0,
        False,
        (CU8, CU7, None),
        {"version": "4.0.7577.4370"},
        None,
        RolloutReason.NOT_IN_STAGE,
        id="outside-never-rolled-back",
    ),
    pytest.param(
        0.0,
        False,
        (CU8, None, None),
        {},
        None,
        RolloutReason.NOT_IN_STAGE,
        id="outside-first-approval-nothing",
    ),
    pytest.param(
        0.0,
        False,
        (CU8, CU7, None),
        {"version": None},
        CU7,
        RolloutReason.NOT_IN_STAGE,
        id="outside-unknown-version-previous",
    ),
    pytest.param(
        INSIDE,
        True,
        (CU8, CU7, None),
        {},
        None,
        RolloutReason.STAGE_PAUSED,
        id="paused-in-stage-not-offered",
    ),
    pytest.param(
        INSIDE,
        True,
        (CU8, CU7, None),
        {"version": CU6},
        CU7,
        RolloutReason.STAGE_PAUSED,
        id="paused-previous-still-offered",
    ),
    pytest.param(
        100.0,
        True,
        (CU8, CU7, None),
        {"version": CU8},
        None,
        Reason.UP_TO_DATE,
        id="paused-on-approved-stays",
    ),
    pytest.param(
        0.0,
        False,
        (CU8, CU7, CU9),
        {"mac": TEST_MAC},
        CU9,
        Reason.PENDING_TEST_DEVICE,
        id="test-device-pending-first",
    ),
    pytest.param(
        0.0,
        False,
        (CU8, CU7, None),
        {"mac": TEST_MAC},
        CU8,
        Reason.APPROVED,
        id="test-device-is-in-every-stage",
    ),
    pytest.param(
        0.0,
        True,
        (CU8, CU7, None),
        {"mac": TEST_MAC},
        CU8,
        Reason.APPROVED,
        id="test-device-even-paused",
    ),
    pytest.param(
        99.99,
        False,
        (CU8, CU7, None),
        {**NO_ID, "version": CU6},
        CU7,
        RolloutReason.NOT_IN_STAGE,
        id="no-identifier-not-before-100%",
    ),
    pytest.param(
        100.0, False, (CU8, CU7, None), NO_ID, CU8, Reason.APPROVED, id="no-identifier-at-100%"
    ),
    pytest.param(
        (bucket(SALT, None, PHONE_SERIAL) + 1) / 100,
        False,
        (CU8, CU7, None),
        {"mac": None},
        CU8,
        Reason.APPROVED,
        id="by-serial-in",
    ),
    pytest.param(
        bucket(SALT, None, PHONE_SERIAL) / 100,
        False,
        (CU8, CU7, None),
        {"mac": None},
        None,
        RolloutReason.NOT_IN_STAGE,
        id="by-serial-boundary-out",
    ),
]


@pytest.mark.parametrize(("share", "paused", "versions", "fields", "offered", "reason"), STAGES)
def test_staged_approval(
    share: float,
    paused: bool,
    versions: tuple[str, str | None, str | None],
    fields: dict[str, object],
    offered: str | None,
    reason: object,
) -> None:
    approved, restore, pending = versions
    cat = staged_catalog(approved, restore, pending)
    policy = RolloutPolicy(staged=(StagedApproval(CX600, approved, (share,), 0, paused),))
    decision = decide(device_request(**fields), cat, policy, NOW, ADDRESS)
    assert decision.reason is reason, decision.detail
    assert [o.version for o in decision.offers] == ([offered] if offered else [])
    if decision.reason in (RolloutReason.NOT_IN_STAGE, RolloutReason.STAGE_PAUSED):
        assert f"approved {approved} of rule {CX600} is staged" in decision.detail


def test_a_stale_staging_record_holds_nobody_back() -> None:
    # The staging was for CU7; the rule has since been approved to CU8 without one.
    policy = RolloutPolicy(staged=(StagedApproval(CX600, CU7, (0.0,)),))
    decision = decide(device_request(version=CU6), staged_catalog(), policy, NOW, ADDRESS)
    assert (decision.reason, [o.version for o in decision.offers]) == (Reason.APPROVED, [CU8])


def test_stages_place_every_device_by_its_hash_alone() -> None:
    # 400 devices, none of them known before: each is offered the approved version exactly
    # when its bucket is under the share, and a later stage keeps everybody an earlier had.
    devices = [f"00-04-F2-01-{i // 256:02X}-{i % 256:02X}" for i in range(400)]
    taken: dict[float, set[str]] = {}
    for share in (5.0, 25.0, 100.0):
        policy = RolloutPolicy(staged=(StagedApproval(CX600, CU8, (share,)),))
        taken[share] = {
            mac
            for mac in devices
            if decide(
                device_request(mac=mac, version=CU7), staged_catalog(), policy, NOW, None
            ).offers
        }
        assert taken[share] == {m for m in devices if bucket(SALT, m, None) < share * 100}
    assert taken[5.0] <= taken[25.0] <= taken[100.0] == set(devices)
    assert 8 <= len(taken[5.0]) <= 32 and 80 <= len(taken[25.0]) <= 120


# --- pins -------------------------------------------------------------------------------


def hold(version: str, kind: IdentifierKind = IdentifierKind.MAC, **more: str) -> Pin:
    ident = PHONE_MAC if kind is IdentifierKind.MAC else PHONE_SERIAL
    return Pin(kind, ident, PinAction.HOLD, "CEO's desk", version, **more)


def exclude(kind: IdentifierKind = IdentifierKind.MAC, **more: str) -> Pin:
    ident = PHONE_MAC if kind is IdentifierKind.MAC else PHONE_SERIAL
    return Pin(kind, ident, PinAction.EXCLUDE, "sent for repair", **more)


SERIAL = IdentifierKind.SERIAL
PINS = [
    # (pins, request fields, offered, reason)
    pytest.param((exclude(),), {}, None, RolloutReason.EXCLUDED, id="exclude-by-mac"),
    pytest.param((exclude(SERIAL),), {}, None, RolloutReason.EXCLUDED, id="exclude-by-serial"),
    pytest.param(
        (exclude(SERIAL),),
        {"mac": None},
        None,
        RolloutReason.EXCLUDED,
        id="exclude-by-serial-no-mac",
    ),
    pytest.param((exclude(update_type="UI"),), {}, CU8, Reason.APPROVED, id="exclude-other-type"),
    pytest.param((hold(CU7),), {"version": CU6}, CU7, RolloutReason.HELD, id="hold-offers-it"),
    pytest.param((hold(CU7),), {}, None, RolloutReason.HELD, id="hold-already-on-it"),
    pytest.param((hold(CU6),), {}, CU6, RolloutReason.HELD, id="hold-older-rolls-back"),
    pytest.param(
        (hold(CU7, SERIAL),), {"version": CU6}, CU7, RolloutReason.HELD, id="hold-by-serial"
    ),
    pytest.param(
        (hold(CU6, SERIAL), hold(CU7)),
        {"version": "1.0"},
        CU7,
        RolloutReason.HELD,
        id="mac-hold-beats-serial-hold",
    ),
    pytest.param(
        (hold(CU7), exclude(SERIAL)),
        {"version": CU6},
        None,
        RolloutReason.EXCLUDED,
        id="exclude-beats-hold",
    ),
    pytest.param(
        (hold(CU7),),
        {"mac": OTHER_MAC, "version": CU6},
        CU8,
        Reason.APPROVED,
        id="pin-of-another-device",
    ),
    pytest.param(
        (hold("4.0.7577.4200"),), {}, None, Reason.MISSING_FILES, id="hold-version-without-files"
    ),
]


@pytest.mark.parametrize(("pins", "fields", "offered", "reason"), PINS)
def test_pins(
    pins: tuple[Pin, ...], fields: dict[str, object], offered: str | None, reason: object
) -> None:
    cat = catalog_of(
        make_rule(CU8, restore=CU7),
        files=[*update_files(CU6), *update_files(CU7), *update_files(CU8)],
        test_macs=(TEST_MAC,),
    )
    decision = decide(device_request(**fields), cat, RolloutPolicy(pins=pins), NOW, ADDRESS)
    assert decision.reason is reason, decision.detail
    assert [o.version for o in decision.offers] == ([offered] if offered else [])
    if reason is RolloutReason.EXCLUDED:
        assert "by its pin (sent for repair); not offered" in decision.detail
    if reason is RolloutReason.HELD:
        assert "held (pin: CEO's desk)" in decision.detail


def test_a_pin_beats_the_pending_version_of_a_test_device() -> None:
    cat = catalog_of(make_rule(CU7, pending=CU8), test_macs=(PHONE_MAC,))
    policy = RolloutPolicy(pins=(hold(CU7),))
    decision = decide(device_request(version=CU6), cat, policy, NOW, ADDRESS)
    assert [o.version for o in decision.offers] == [CU7]
    assert decision.offers[0].reason is Reason.APPROVED  # the phone sees an approval


# --- upgrade paths at the decision ------------------------------------------------------

CX700 = RuleKey("UCPhone", "Polycom", "CX700", "A", "ENU", "CPE")
OCS_2007, OCS_R2, LYNC_STEP = "1.0.522.101", "3.5.6907.37", "4.0.7577.4100"
TANJAY = RolloutPolicy(paths=TANJAY_STEPS)


def tanjay(
    approved: str = CU8, pending: str | None = None, steps: tuple[str, ...] = (OCS_R2, LYNC_STEP)
) -> Catalog:
    rule = make_rule(approved, pending, key=CX700)
    versions = {approved, *steps} | ({pending} if pending else set())
    return catalog_of(
        rule,
        files=[f for v in sorted(versions) for f in update_files(v, key=CX700)],
        test_macs=(TEST_MAC,),
    )


def cx700(version: str | None, **fields: object) -> DeviceRequest:
    return device_request(model="CX700", version=version, **fields)


PATHS = [
    # (catalogue, request, offered, reason, words in the detail)
    pytest.param(
        tanjay(),
        cx700(OCS_R2),
        LYNC_STEP,
        RolloutReason.UPGRADE_PATH,
        f"upgrade path step {LYNC_STEP} (before approved {CU8}) differs from reported {OCS_R2}",
        id="one-step",
    ),
    pytest.param(
        tanjay(),
        cx700(OCS_2007),
        OCS_R2,
        RolloutReason.UPGRADE_PATH,
        f"upgrade path step {OCS_R2} (before approved {CU8})",
        id="first-of-two-steps",
    ),
    pytest.param(tanjay(), cx700(LYNC_STEP), CU8, Reason.APPROVED, "approved", id="last-hop"),
    pytest.param(tanjay(), cx700(CU7), CU8, Reason.APPROVED, "approved", id="above-threshold"),
    pytest.param(tanjay(), cx700(CU8), None, Reason.UP_TO_DATE, "already runs", id="arrived"),
    pytest.param(
        tanjay(steps=(OCS_R2,)),
        cx700(OCS_R2),
        None,
        Reason.MISSING_FILES,
        f"upgrade path step {LYNC_STEP} (before approved {CU8}) of rule"
        f" {CX700} has no files in the catalogue; not offered",
        id="step-without-files",
    ),
    pytest.param(
        tanjay(),
        cx700(None),
        CU8,
        Reason.APPROVED,
        "unknown reported version",
        id="unknown-version-direct",
    ),
    pytest.param(
        tanjay(CU7, pending=CU8),
        cx700(OCS_R2, mac=TEST_MAC),
        LYNC_STEP,
        RolloutReason.UPGRADE_PATH,
        f"(before pending {CU8})",
        id="test-device-too",
    ),
    pytest.param(
        tanjay(),
        device_request(model="CX700", version=OCS_2007, revision="B"),
        None,
        Reason.NO_RULE,
        "no rule",
        id="no-rule-no-path",
    ),
]


@pytest.mark.parametrize(("cat", "req", "offered", "reason", "words"), PATHS)
def test_upgrade_paths(
    cat: Catalog, req: DeviceRequest, offered: str | None, reason: object, words: str
) -> None:
    decision = decide(req, cat, TANJAY, NOW, ADDRESS)
    assert decision.reason is reason, decision.detail
    assert [o.version for o in decision.offers] == ([offered] if offered else [])
    assert words in decision.detail
    for o in decision.offers:
        assert o.reason in (Reason.APPROVED, Reason.PENDING_TEST_DEVICE)
        assert [f.path.parts[5] for f in o.files] == [offered]  # the step's own files


def test_a_tanjay_walks_the_path_one_check_at_a_time() -> None:
    cat, seen = tanjay(), []
    version: str | None = OCS_2007
    for _ in range(5):
        decision = decide(cx700(version), cat, TANJAY, NOW, ADDRESS)
        if not decision.offers:
            break
        version = decision.offers[0].version  # installed, restarted, checks again
        seen.append(version)
    assert seen == [OCS_R2, LYNC_STEP, CU8]


def test_broken_step_files_hold_the_device() -> None:
    cat = dataclasses.replace(tanjay(), broken=frozenset({(CX700.folded(), LYNC_STEP)}))
    decision = decide(cx700(OCS_R2), cat, TANJAY, NOW, ADDRESS)
    assert (decision.offers, decision.reason) == ((), Reason.BROKEN_FILES)
    assert f"upgrade path step {LYNC_STEP}" in decision.detail


def test_a_held_version_takes_its_path_and_waits_for_its_window() -> None:
    cat = tanjay()
    pin = Pin(IdentifierKind.MAC, PHONE_MAC, PinAction.HOLD, "lab bench", CU8)
    night = DownloadWindows("UTC", (TimeWindow.parse("22:00-05:00"),))
    policy = RolloutPolicy(
        paths=TANJAY_STEPS,
        pins=(pin,),
        networks=(NetworkPolicy(parse_network("10.1.0.0/16"), night),),
    )
    by_day = decide(cx700(OCS_R2), cat, policy, NOW, ADDRESS)
    assert (by_day.offers, by_day.reason) == ((), RolloutReason.OUTSIDE_WINDOW)
    assert f"upgrade path step {LYNC_STEP} (before held (pin: lab bench) {CU8})" in by_day.detail
    at_night = decide(cx700(OCS_R2), cat, policy, NOW.replace(hour=23), ADDRESS)
    assert [o.version for o in at_night.offers] == [LYNC_STEP]
    assert at_night.reason is RolloutReason.UPGRADE_PATH


def test_a_staging_names_its_version_numerically() -> None:
    policy = RolloutPolicy(staged=(StagedApproval(CX600, "4.0.07577.4387", (0.0,)),))
    decision = decide(device_request(version=CU6), staged_catalog(), policy, NOW, ADDRESS)
    assert (decision.reason, [o.version for o in decision.offers]) == (
        RolloutReason.NOT_IN_STAGE,
        [CU7],
    )
