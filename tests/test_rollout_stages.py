"""How staged approvals move (appliance/catalogue/rollout_stages.py), as parameter tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from appliance.catalogue.rollout_policy import RolloutError, StagedApproval
from appliance.catalogue.rollout_stages import (
    AutoPause,
    StageHealth,
    StageMove,
    StageSchedule,
    advance_stage,
    pause_reason,
    soak_shortfall,
    tick_stage,
)
from appliance.testing import CU8, CX600

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
FIRST = StagedApproval(CX600, CU8, (5.0, 25.0, 100.0), 0)
LAST = StagedApproval(CX600, CU8, (5.0, 25.0, 100.0), 2)
PAUSED = StagedApproval(CX600, CU8, (5.0, 25.0, 100.0), 1, paused=True)
HEALTHY = StageHealth(offered=100, updated=98, stuck=1, reverted=1)
DAILY = StageSchedule(soak=DAY)

PAUSES = [
    # (health, auto-pause, pauses?)
    pytest.param(HEALTHY, AutoPause(), False, id="2-of-100-under-both"),
    pytest.param(StageHealth(100, 95, 3, 1, 1), AutoPause(), True, id="5-of-100-at-5%"),
    pytest.param(StageHealth(100, 96, 2, 1, 1), AutoPause(), False, id="4-of-100-under-5%"),
    pytest.param(StageHealth(10, 8, 0, 2), AutoPause(), False, id="20%-but-2-devices"),
    pytest.param(StageHealth(10, 7, 0, 3), AutoPause(), True, id="3-reverted-of-10"),
    pytest.param(StageHealth(40, 37, 0, 0, 3), AutoPause(5.0, 3), True, id="silent-count"),
    pytest.param(StageHealth(1, 0, 0, 1), AutoPause(0.0, 1), True, id="strictest"),
    pytest.param(StageHealth(0), AutoPause(0.0, 1), False, id="nothing-offered-yet"),
    pytest.param(StageHealth(10, 0, 10), None, False, id="auto-pause-off"),
]


@pytest.mark.parametrize(("health", "auto", "pauses"), PAUSES)
def test_pause_reason(health: StageHealth, auto: AutoPause | None, pauses: bool) -> None:
    why = pause_reason(health, auto)
    assert (why is not None) is pauses
    if why is not None:
        assert f"{health.failing} of {health.offered} devices offered the version failed" in why


TICKS = [
    # (staged, health, now, schedule, move, stage after, paused after)
    pytest.param(
        FIRST, HEALTHY, T0 + DAY, DAILY, StageMove.ADVANCE, 1, False, id="soaked-advances"
    ),
    pytest.param(
        FIRST,
        HEALTHY,
        T0 + DAY - timedelta(seconds=1),
        DAILY,
        StageMove.STAY,
        0,
        False,
        id="a-second-early-stays",
    ),
    pytest.param(
        FIRST,
        StageHealth(100, 90, 0, 10),
        T0 + DAY,
        DAILY,
        StageMove.PAUSE,
        0,
        True,
        id="reverted-pause-before-advancing",
    ),
    pytest.param(
        FIRST,
        StageHealth(100, 90, 0, 10),
        T0,
        DAILY,
        StageMove.PAUSE,
        0,
        True,
        id="pauses-any-time",
    ),
    pytest.param(PAUSED, HEALTHY, T0 + 9 * DAY, DAILY, StageMove.STAY, 1, True, id="paused-stays"),
    pytest.param(LAST, HEALTHY, T0 + 9 * DAY, DAILY, StageMove.DONE, 2, False, id="last-is-done"),
    pytest.param(
        LAST,
        StageHealth(100, 90, 10),
        T0,
        DAILY,
        StageMove.PAUSE,
        2,
        True,
        id="last-stage-can-pause",
    ),
    pytest.param(
        FIRST, HEALTHY, T0 + 9 * DAY, StageSchedule(), StageMove.STAY, 0, False, id="by-hand-only"
    ),
]


@pytest.mark.parametrize(("staged", "health", "now", "schedule", "move", "stage", "paused"), TICKS)
def test_tick(
    staged: StagedApproval,
    health: StageHealth,
    now: datetime,
    schedule: StageSchedule,
    move: StageMove,
    stage: int,
    paused: bool,
) -> None:
    after, moved, why = tick_stage(staged, health, T0, now, schedule)
    assert (moved, after.stage, after.paused) == (move, stage, paused), why
    assert after.version == staged.version and after.stages == staged.stages


def test_a_schedule_walks_a_healthy_rollout_to_the_end() -> None:
    staged, entered, seen = FIRST, T0, []
    for day in range(1, 6):
        staged, moved, _ = tick_stage(staged, HEALTHY, entered, T0 + day * DAY, DAILY)
        seen.append((moved, staged.share))
        if moved is StageMove.ADVANCE:
            entered = T0 + day * DAY
    assert seen == [
        (StageMove.ADVANCE, 25.0),
        (StageMove.ADVANCE, 100.0),
        (StageMove.DONE, 100.0),
        (StageMove.DONE, 100.0),
        (StageMove.DONE, 100.0),
    ]


def test_advance_by_hand() -> None:
    assert advance_stage(FIRST).stage == 1
    with pytest.raises(RolloutError, match="paused: resume it first"):
        advance_stage(PAUSED)
    with pytest.raises(RolloutError, match="last stage \\(100 %\\) already"):
        advance_stage(LAST)


def test_auto_pause_refuses_nonsense() -> None:
    with pytest.raises(RolloutError, match="at least 1 failing device"):
        AutoPause(5.0, 0)
    with pytest.raises(RolloutError, match="from 0 to 100"):
        AutoPause(150.0)


SOAKED = {"CX700": [T0 - 2 * DAY]}
SOAK = [
    # (running_since per model, devices, hours, missing models)
    pytest.param({"CX600": [T0 - DAY], **SOAKED}, 1, 24, [], id="one-device-a-day"),
    pytest.param(
        {"CX600": [T0 - DAY + timedelta(minutes=1)], **SOAKED},
        1,
        24,
        ["CX600"],
        id="a-minute-short",
    ),
    pytest.param(
        {"CX600": [T0 - DAY, T0], "CX700": [T0 - 2 * DAY] * 2},
        2,
        24,
        ["CX600"],
        id="second-device-just-started",
    ),
    pytest.param({"CX600": [T0 - DAY], "CX700": []}, 1, 24, ["CX700"], id="model-without-tests"),
    pytest.param({}, 1, 24, ["CX600", "CX700"], id="nothing-soaked"),
    pytest.param({}, 0, 24, [], id="gate-off"),
]


@pytest.mark.parametrize(("running", "devices", "hours", "missing"), SOAK)
def test_soak_gate(
    running: dict[str, list[datetime]], devices: int, hours: float, missing: list[str]
) -> None:
    short = soak_shortfall(["CX700", "CX600", "CX600"], running, T0, devices, hours)
    assert [line.split(":")[0] for line in short] == missing
    if missing:
        assert f"test devices have run it for {hours:g} hours" in short[0]
