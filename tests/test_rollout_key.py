"""Windows at the rollout decision, and the key its answers are remembered by.

The phone service remembers answers by key (appliance/phones/answers.py). `rollout_key`
must hold everything `decide` reads: two checks with equal keys get equal answers, over a
grid of every kind of fact (pins, stage buckets, windows open and shut, zones, upgrade
steps) and over hypothesis-drawn requests.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.test_decision as table
from appliance.catalogue.decision import Reason, answer_key
from appliance.catalogue.rollout import (
    RolloutReason,
    decide,
    decide_with,
    rollout_facts,
    rollout_key,
)
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
from appliance.model import DeviceRequest, IdentifierKind, ReportedModule, Zone
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

CU9, STEP = "4.0.7577.4400", "4.0.7577.4200"
TEST_MAC, HELD_MAC, EXCLUDED_SERIAL = "00-04-F2-00-00-99", "00-04-F2-00-00-42", "64167F0666"
NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # Berlin 13:00: both windows shut
MIDNIGHT = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)  # Berlin 00:00: open; external shut
DAWN = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # Berlin 04:00 and external: both open
BRANCH, CAMPUS, OUTSIDE = "10.1.2.3", "10.9.9.9", "192.0.2.1"

CATALOG = catalog_of(
    make_rule(CU8, CU9, CU7),
    files=[f for v in (CU6, CU7, CU8, CU9, STEP) for f in update_files(v)],
    test_macs=(TEST_MAC,),
)
POLICY = RolloutPolicy(
    paths=(UpgradeStep("UCPhone", "Polycom", "CX600", STEP, STEP),),
    staged=(StagedApproval(CX600, CU8, (25.0, 100.0)),),
    networks=(
        NetworkPolicy(
            parse_network("10.1.0.0/16"),
            DownloadWindows("Europe/Berlin", (TimeWindow.parse("22:00-05:00"),)),
        ),
        NetworkPolicy(parse_network("10.0.0.0/8"), DownloadWindows("UTC")),
    ),
    external=DownloadWindows("UTC", (TimeWindow.parse("00:00-06:00"),)),
    pins=(
        Pin(IdentifierKind.MAC, HELD_MAC, PinAction.HOLD, "reception", CU7),
        Pin(IdentifierKind.SERIAL, EXCLUDED_SERIAL, PinAction.EXCLUDE, "loan phone"),
    ),
)
SALT = POLICY.salt
_generated = [f"00-04-F2-02-{i // 256:02X}-{i % 256:02X}" for i in range(64)]
IN_STAGE = next(m for m in _generated if bucket(SALT, m, None) < 2500)
OUT_OF_STAGE = next(m for m in _generated if bucket(SALT, m, None) >= 2500)


PAUSED = dataclasses.replace(
    POLICY, staged=tuple(dataclasses.replace(x, paused=True) for x in POLICY.staged)
)


def answer_of(
    req: DeviceRequest, now: datetime, address: str | None, policy: RolloutPolicy = POLICY
) -> tuple[object, ...]:
    """What a remembered answer holds for the phone: the offers and the reason."""
    decision = decide(req, CATALOG, policy, now, address)
    offers = tuple(
        (o.rule.key.update_type, o.version, tuple(f.path for f in o.files)) for o in decision.offers
    )
    return (offers, decision.reason)


# --- windows at the decision ------------------------------------------------------------

WINDOWS = [
    # (request fields, now, address, offered?, reason)
    pytest.param({}, NOON, BRANCH, False, RolloutReason.OUTSIDE_WINDOW, id="branch-shut-at-noon"),
    pytest.param({}, MIDNIGHT, BRANCH, True, Reason.APPROVED, id="branch-open-at-night"),
    pytest.param({}, NOON, CAMPUS, True, Reason.APPROVED, id="campus-no-window"),
    pytest.param({}, NOON, OUTSIDE, True, Reason.APPROVED, id="no-network-no-window"),
    pytest.param({}, NOON, None, True, Reason.APPROVED, id="no-address-no-window"),
    pytest.param({"version": CU8}, NOON, BRANCH, False, Reason.UP_TO_DATE, id="up-to-date-says-so"),
    pytest.param(
        {"zone": Zone.EXTERNAL},
        MIDNIGHT,
        BRANCH,
        False,
        RolloutReason.OUTSIDE_WINDOW,
        id="external-own-policy-shut",
    ),
    pytest.param(
        {"zone": Zone.EXTERNAL}, DAWN, OUTSIDE, True, Reason.APPROVED, id="external-own-policy-open"
    ),
    pytest.param(
        {"mac": TEST_MAC},
        NOON,
        BRANCH,
        False,
        RolloutReason.OUTSIDE_WINDOW,
        id="test-devices-wait-too",
    ),
]


@pytest.mark.parametrize(("fields", "now", "address", "is_offered", "reason"), WINDOWS)
def test_windows_hold_offers(
    fields: dict[str, object], now: datetime, address: str | None, is_offered: bool, reason: object
) -> None:
    req = device_request(**{"mac": IN_STAGE, **fields})
    decision = decide(req, CATALOG, POLICY, now, address)
    assert decision.reason is reason, decision.detail
    assert bool(decision.offers) is is_offered
    if reason is RolloutReason.OUTSIDE_WINDOW:
        assert decision.downloads == 0
        assert "outside the download window (" in decision.detail
        assert decision.detail.endswith("offered when it opens")


def test_the_window_names_the_network_and_its_hours() -> None:
    decision = decide(device_request(mac=IN_STAGE), CATALOG, POLICY, NOON, BRANCH)
    assert "(10.1.0.0/16, 22:00-05:00 Europe/Berlin)" in decision.detail


# --- the key ----------------------------------------------------------------------------

GRID = {
    "mac": (None, PHONE_MAC, TEST_MAC, HELD_MAC, IN_STAGE, OUT_OF_STAGE),
    "serial": (None, PHONE_SERIAL, EXCLUDED_SERIAL),
    "version": (None, "garbage", CU6, CU7, CU8, CU9),
    "modules": ((), (ReportedModule("CPE.nbt", STEP),)),
    "zone": (Zone.INTERNAL, Zone.EXTERNAL),
}
NOWS = (NOON, MIDNIGHT, DAWN)
ADDRESSES = (None, BRANCH, CAMPUS, OUTSIDE)


def grid() -> list[tuple[DeviceRequest, datetime, str | None]]:
    names = list(GRID)
    out: list[tuple[DeviceRequest, datetime, str | None]] = []
    for values in itertools.product(*GRID.values()):
        req = device_request(**dict(zip(names, values, strict=True)))
        out.extend((req, now, address) for now in NOWS for address in ADDRESSES)
    return out


@pytest.mark.parametrize("policy", [POLICY, PAUSED], ids=["running", "paused"])
def test_equal_keys_get_equal_answers_over_the_grid(policy: RolloutPolicy) -> None:
    answers: dict[tuple[object, ...], tuple[object, ...]] = {}
    seen_reasons = set()
    checks = grid()
    for req, now, address in checks:
        answer = answer_of(req, now, address, policy)
        remembered = answers.setdefault(rollout_key(req, CATALOG, policy, now, address), answer)
        assert remembered == answer, (req, now, address)
        seen_reasons.add(answer[1])
    # The grid reaches every reason the policy adds, so the property covers each of them
    # (a paused stage answers stage-paused where a running one answers not-in-stage).
    other = RolloutReason.NOT_IN_STAGE if policy is PAUSED else RolloutReason.STAGE_PAUSED
    assert seen_reasons & set(RolloutReason) == set(RolloutReason) - {other}
    assert len(answers) < len(checks) / 10  # and answers are shared: the key is not per device


def test_each_fact_of_the_key_changes_an_answer_answer_key_would_not_tell() -> None:
    # Pairs with equal answer_key and different answers: a key without the rollout facts
    # would hand one the other's answer.
    pairs = [
        (
            (device_request(mac=IN_STAGE), NOON, BRANCH),
            (device_request(mac=IN_STAGE), DAWN, BRANCH),
        ),
        (
            (device_request(mac=IN_STAGE), NOON, CAMPUS),
            (device_request(mac=OUT_OF_STAGE), NOON, CAMPUS),
        ),
        (
            (device_request(mac=HELD_MAC), NOON, CAMPUS),
            (device_request(mac=PHONE_MAC, serial=EXCLUDED_SERIAL), NOON, CAMPUS),
        ),
        (
            (device_request(mac=IN_STAGE, zone=Zone.EXTERNAL), MIDNIGHT, BRANCH),
            (device_request(mac=IN_STAGE), MIDNIGHT, BRANCH),
        ),
    ]
    for a, b in pairs:
        assert answer_key(a[0], CATALOG) == answer_key(b[0], CATALOG)
        assert answer_of(*a) != answer_of(*b), (a, b)
        assert rollout_key(a[0], CATALOG, POLICY, a[1], a[2]) != rollout_key(
            b[0], CATALOG, POLICY, b[1], b[2]
        )


def test_the_key_reads_every_field_the_decision_reads() -> None:
    by_decision: set[str] = set()
    by_key: set[str] = set()
    for req, now, address in grid()[::7]:
        by_decision |= table.fields_read(
            lambda r, n=now, a=address: decide(r, CATALOG, POLICY, n, a), req
        )
        by_key |= table.fields_read(
            lambda r, n=now, a=address: rollout_key(r, CATALOG, POLICY, n, a), req
        )
    assert by_decision - by_key == set()
    assert {"mac", "serial", "zone"} <= by_key


def test_the_key_holds_the_window_state_not_the_time() -> None:
    req = device_request(mac=IN_STAGE)
    late = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)  # another open hour in Berlin
    assert rollout_key(req, CATALOG, POLICY, MIDNIGHT, BRANCH) == rollout_key(
        req, CATALOG, POLICY, late, BRANCH
    )
    empty = RolloutPolicy()
    assert rollout_key(req, CATALOG, empty, NOON, BRANCH)[:-1] == answer_key(req, CATALOG)


macs = st.integers(0, 2**24 - 1).map(
    lambda i: f"00-04-F2-{i >> 16:02X}-{i >> 8 & 255:02X}-{i & 255:02X}"
)
requests = st.builds(
    lambda mac, serial, version, module, zone, model, locale: dataclasses.replace(
        device_request(mac=mac, serial=serial, version=version, zone=zone),
        modules=module,
        model=model,
        locale=locale,
    ),
    st.one_of(st.none(), st.sampled_from(GRID["mac"]), macs),
    st.sampled_from(GRID["serial"]),
    st.sampled_from((*GRID["version"], "", STEP, "4.0.07577.4387")),
    st.sampled_from(
        (
            (),
            *(
                (ReportedModule(n, v),)
                for n in ("CPE.nbt", "cpe.NBT", "boot.bin")
                for v in (CU6, CU8, STEP, None)
            ),
        )
    ),
    st.sampled_from(tuple(Zone)),
    st.sampled_from(("CX600", "cx600", "CX700")),
    st.sampled_from(("ENU", "enu", "DEU")),
)
checks = st.tuples(
    requests,
    st.sampled_from((*NOWS, datetime(2026, 3, 29, 1, 30, tzinfo=UTC))),
    st.sampled_from((*ADDRESSES, "10.1.255.255", "::ffff:10.1.0.1", "not an address")),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(checks, min_size=2, max_size=40))
def test_equal_keys_get_equal_answers_drawn(
    drawn: list[tuple[DeviceRequest, datetime, str]],
) -> None:
    answers: dict[tuple[object, ...], tuple[object, ...]] = {}
    for req, now, address in drawn:
        answer = answer_of(req, now, address)
        key = rollout_key(req, CATALOG, POLICY, now, address)
        assert answers.setdefault(key, answer) == answer, (req, now, address)
        assert decide(req, CATALOG, POLICY, now, address) == decide(
            req, CATALOG, POLICY, now, address
        )


def test_facts_once_a_check_give_the_same_key_and_answer() -> None:
    # The service's way: the facts once, the key from them, decide_with on a miss.
    for req, now, address in grid()[::11]:
        facts = rollout_facts(req, POLICY, now, address)
        assert (*answer_key(req, CATALOG), facts) == rollout_key(req, CATALOG, POLICY, now, address)
        assert decide_with(req, CATALOG, POLICY, facts) == decide(
            req, CATALOG, POLICY, now, address
        )
