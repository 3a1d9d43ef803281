"""Rollout policy records, buckets, upgrade paths and the downgrade guard (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.catalogue.lifecycle import LifecycleError
from appliance.catalogue.rollout_paths import (
    TANJAY_STEPS,
    DowngradeRefused,
    check_approval,
    next_step,
    upgrade_path,
)
from appliance.catalogue.rollout_policy import (
    BUCKETS,
    NO_IDENTIFIER_BUCKET,
    NetworkPolicy,
    Pin,
    PinAction,
    RolloutError,
    RolloutPolicy,
    StagedApproval,
    UpgradeStep,
    bucket,
)
from appliance.catalogue.rollout_windows import DownloadWindows, parse_network
from appliance.model import IdentifierKind, RuleKey
from appliance.testing import CU6, CU7, CU8, CX600, PHONE_MAC, PHONE_SERIAL, make_rule

CX700 = RuleKey("UCPhone", "Polycom", "CX700", "A", "ENU", "CPE")
IP8540 = RuleKey("UCPhone", "LG-Nortel", "IP8540", "B", "DEU", "CPE")
OCS_2007, OCS_R2, LYNC_STEP = "1.0.522.101", "3.5.6907.37", "4.0.7577.4100"
TANJAY = RolloutPolicy(paths=TANJAY_STEPS)


def macs(count: int) -> list[str]:
    """`count` distinct normalised MAC addresses, always the same ones."""
    return [f"00-04-F2-00-{i // 256:02X}-{i % 256:02X}" for i in range(count)]


# --- buckets ----------------------------------------------------------------------------


def test_buckets_are_stable_and_in_range() -> None:
    first = [bucket("salt", m, None) for m in macs(2000)]
    assert first == [bucket("salt", m, None) for m in macs(2000)]
    assert all(0 <= b < BUCKETS for b in first)


def test_buckets_spread_evenly_enough_for_shares() -> None:
    places = [bucket("ucupdates-rollout", m, None) for m in macs(4000)]
    for share in (5, 25, 50):
        inside = sum(p < share * BUCKETS // 100 for p in places)
        assert abs(inside / len(places) - share / 100) < 0.02, share


def test_bucket_uses_mac_then_serial_and_the_salt() -> None:
    by_mac = bucket("s", PHONE_MAC, PHONE_SERIAL)
    assert by_mac == bucket("s", PHONE_MAC, None)
    assert bucket("s", None, PHONE_SERIAL) != by_mac  # another hash input
    assert bucket("s", None, None) == NO_IDENTIFIER_BUCKET
    # Another salt reshuffles: most devices land elsewhere.
    moved = sum(bucket("a", m, None) != bucket("b", m, None) for m in macs(200))
    assert moved > 190


@pytest.mark.parametrize(
    ("stages", "stage", "place", "inside"),
    [
        pytest.param((5.0, 25.0, 100.0), 0, 499, True, id="5%-last-bucket-in"),
        pytest.param((5.0, 25.0, 100.0), 0, 500, False, id="5%-boundary-bucket-out"),
        pytest.param((5.0, 25.0, 100.0), 1, 500, True, id="25%-takes-it-in"),
        pytest.param((0.0, 100.0), 0, 0, False, id="0%-nobody"),
        pytest.param((0.0, 100.0), 1, NO_IDENTIFIER_BUCKET, True, id="100%-everybody"),
        pytest.param((99.99,), 0, NO_IDENTIFIER_BUCKET, False, id="99.99%-not-the-last"),
        pytest.param((0.5, 100.0), 0, 49, True, id="half-percent"),
        pytest.param((0.5, 100.0), 0, 50, False, id="half-percent-boundary"),
    ],
)
def test_stage_includes_buckets_below_its_share(
    stages: tuple[float, ...], stage: int, place: int, inside: bool
) -> None:
    assert StagedApproval(CX600, CU8, stages, stage).includes(place) is inside


# --- record checks ----------------------------------------------------------------------

BAD: list[Any] = [
    pytest.param(lambda: StagedApproval(CX600, CU8, ()), "at least one stage", id="no-stages"),
    pytest.param(lambda: StagedApproval(CX600, CU8, (25.0, 5.0)), "must rise", id="falling"),
    pytest.param(lambda: StagedApproval(CX600, CU8, (5.0, 5.0)), "must rise", id="repeated"),
    pytest.param(lambda: StagedApproval(CX600, CU8, (5.0, 120.0)), "0 to 100", id="over-100"),
    pytest.param(lambda: StagedApproval(CX600, CU8, (5.0,), 1), "not one of", id="stage-index"),
    pytest.param(
        lambda: UpgradeStep("UCPhone", "Polycom", "CX700", "4.0", "3.5"),
        "below its",
        id="step-under-threshold",
    ),
    pytest.param(
        lambda: UpgradeStep("UCPhone", "Polycom", "CX700", "4.x", "4.0"),
        "dotted",
        id="step-not-dotted",
    ),
    pytest.param(
        lambda: Pin(IdentifierKind.MAC, "00:04:f2:a1:b2:c3", PinAction.EXCLUDE, "r"),
        "not normalised",
        id="pin-mac-form",
    ),
    pytest.param(
        lambda: Pin(IdentifierKind.SERIAL, "bad serial!", PinAction.EXCLUDE, "r"),
        "invalid serial",
        id="pin-serial-invalid",
    ),
    pytest.param(
        lambda: Pin(IdentifierKind.MAC, PHONE_MAC, PinAction.EXCLUDE, " "),
        "reason",
        id="pin-no-reason",
    ),
    pytest.param(
        lambda: Pin(IdentifierKind.MAC, PHONE_MAC, PinAction.HOLD, "r"),
        "needs a version",
        id="hold-without-version",
    ),
    pytest.param(
        lambda: Pin(IdentifierKind.MAC, PHONE_MAC, PinAction.EXCLUDE, "r", CU7),
        "takes none",
        id="exclude-with-version",
    ),
    pytest.param(
        lambda: RolloutPolicy(staged=(StagedApproval(CX600, CU8), StagedApproval(CX600, CU7))),
        "same rule",
        id="two-stagings-one-rule",
    ),
    pytest.param(
        lambda: RolloutPolicy(
            pins=(
                Pin(IdentifierKind.MAC, PHONE_MAC, PinAction.EXCLUDE, "a"),
                Pin(IdentifierKind.MAC, PHONE_MAC, PinAction.HOLD, "b", CU7),
            )
        ),
        "two pins",
        id="two-pins-one-device",
    ),
    pytest.param(
        lambda: NetworkPolicy(parse_network("10.0.0.0/8"), DownloadWindows("UTC"), 0),
        "at least 1",
        id="zero-cap",
    ),
]


@pytest.mark.parametrize(("build", "message"), BAD)
def test_records_refuse_what_makes_no_sense(build: Any, message: str) -> None:
    with pytest.raises(RolloutError, match=message):
        build()


def test_the_empty_policy_is_empty() -> None:
    assert RolloutPolicy().empty
    assert not TANJAY.empty
    assert RolloutPolicy() == RolloutPolicy()


def test_pins_by_mac_come_before_pins_by_serial() -> None:
    by_serial = Pin(IdentifierKind.SERIAL, PHONE_SERIAL, PinAction.HOLD, "lab", CU6)
    by_mac = Pin(IdentifierKind.MAC, PHONE_MAC, PinAction.HOLD, "desk", CU7)
    policy = RolloutPolicy(pins=(by_serial, by_mac))
    assert policy.pins_for(PHONE_MAC, PHONE_SERIAL) == (by_mac, by_serial)
    assert policy.pins_for(None, PHONE_SERIAL) == (by_serial,)
    assert policy.pins_for("00-04-F2-00-00-01", None) == ()


def test_the_most_specific_network_holds_an_address() -> None:
    wide = NetworkPolicy(parse_network("10.0.0.0/8"), DownloadWindows("UTC"))
    branch = NetworkPolicy(parse_network("10.1.2.0/24"), DownloadWindows("Europe/Berlin"))
    policy = RolloutPolicy(networks=(wide, branch))
    assert policy.network_for("10.1.2.3") is branch
    assert policy.network_for("10.9.9.9") is wide
    assert policy.network_for("::ffff:10.1.2.3") is branch
    assert policy.network_for("192.0.2.1") is None
    assert policy.network_for(None) is None


# --- upgrade paths ----------------------------------------------------------------------

PATHS = [
    # (rule key, reported, target, the versions offered in turn)
    pytest.param(CX700, OCS_2007, CU8, (OCS_R2, LYNC_STEP, CU8), id="two-steps-from-ocs-2007"),
    pytest.param(CX700, OCS_R2, CU8, (LYNC_STEP, CU8), id="one-step-from-ocs-r2"),
    pytest.param(CX700, LYNC_STEP, CU8, (CU8,), id="at-the-step-direct"),
    pytest.param(CX700, CU7, CU8, (CU8,), id="above-threshold-direct"),
    pytest.param(CX700, CU8, CU8, (), id="already-there"),
    pytest.param(IP8540, OCS_2007, CU8, (OCS_R2, LYNC_STEP, CU8), id="lg-nortel-too"),
    pytest.param(CX600, OCS_2007, CU8, (CU8,), id="other-model-no-path"),
    pytest.param(CX700, None, CU8, (CU8,), id="unknown-version-direct"),
    pytest.param(CX700, "garbage", CU8, (CU8,), id="undotted-version-direct"),
    pytest.param(CX700, OCS_2007, OCS_R2, (OCS_R2,), id="target-is-the-step"),
    pytest.param(CX700, OCS_2007, "3.5.6907.10", ("3.5.6907.10",), id="target-below-step"),
]


@pytest.mark.parametrize(("key", "reported", "target", "walk"), PATHS)
def test_upgrade_path_walk(
    key: RuleKey, reported: str | None, target: str, walk: tuple[str, ...]
) -> None:
    assert upgrade_path(TANJAY, key, reported, target) == walk


def test_steps_match_model_revision_and_update_type_ignoring_case() -> None:
    step = UpgradeStep(
        "ucphone", "POLYCOM", "cx700", "4.0", LYNC_STEP, revision="a", update_type="cpe"
    )
    policy = RolloutPolicy(paths=(step,))
    assert next_step(policy, CX700, OCS_R2, CU8) == step
    other_revision = RuleKey("UCPhone", "Polycom", "CX700", "B", "ENU", "CPE")
    assert next_step(policy, other_revision, OCS_R2, CU8) is None
    other_type = RuleKey("UCPhone", "Polycom", "CX700", "A", "ENU", "UI")
    assert next_step(policy, other_type, OCS_R2, CU8) is None


# --- the downgrade guard ------------------------------------------------------------------

GUARD = [
    # (approved, new version, allow_downgrade, result: True/False or the refusal's words)
    pytest.param(None, CU8, False, False, id="first-approval"),
    pytest.param(CU7, CU8, False, False, id="upgrade"),
    pytest.param(CU8, CU8, False, False, id="same-version"),
    pytest.param(CU8, "4.0.07577.4387", False, False, id="same-numerically"),
    pytest.param(
        CU8,
        CU7,
        False,
        "would move approved 4.0.7577.4387 back to 4.0.7577.4366",
        id="downgrade-refused",
    ),
    pytest.param(CU8, CU7, True, True, id="downgrade-allowed"),
    pytest.param(CU8, "4.0.7577", False, "back to 4.0.7577", id="shorter-is-older"),
    pytest.param(CU8, "beta-2", False, "cannot order 'beta-2'", id="unknown-form-refused"),
    pytest.param("beta-1", CU8, False, "cannot order", id="unknown-approved-refused"),
    pytest.param(CU8, "beta-2", True, True, id="unknown-form-allowed"),
    pytest.param("beta-1", "BETA-1", False, False, id="same-unknown-form"),
]


@pytest.mark.parametrize(("approved", "new", "allow", "result"), GUARD)
def test_downgrade_guard(approved: str | None, new: str, allow: bool, result: object) -> None:
    rule = make_rule(approved, pending=new)
    if isinstance(result, bool):
        assert check_approval(rule, new, allow) is result
        return
    with pytest.raises(DowngradeRefused, match=str(result)) as refused:
        check_approval(rule, new, allow)
    assert isinstance(refused.value, LifecycleError)
    assert "asked for explicitly (restore is the one-step rollback)" in str(refused.value)
