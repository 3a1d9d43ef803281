"""How a staged approval moves: by hand, on a schedule, paused on its own, and the soak gate.

Pure decisions over counts and times the caller gathers (what each device was offered and
what it reports at its next check: updated, stuck, reverted or silent, docs/rollouts.md);
the caller stores the new `StagedApproval` and writes the event. Nothing here reads a
clock or the store.

- `advance_stage` is the admin's "next stage": refused while paused (resume first, having
  looked at why it paused) and past the last stage.
- `tick_stage` is what a timer calls for each staged approval: it pauses the stage when its
  failing devices pass the threshold, else advances it once it has run its soak time.
  Failing is stuck + reverted + silent among the devices of the stage offered the
  version. The threshold has a floor in devices (by default 3) as well as a share, so
  one odd phone in a 5 % stage of a small fleet does not stop a rollout, and a bad image
  does not need to reach many phones before it does.
- `soak_shortfall` is the gate before an approval: N test devices of each affected model
  must have run the pending version for T hours. It says what is missing; overriding it
  with a stated reason is the caller's (and goes in the event log).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from appliance.model import (
    AutoPause,
    RolloutError,
    StagedApproval,
    StageHealth,
    StageSchedule,
)


class StageMove(StrEnum):
    STAY = "stay"
    ADVANCE = "advance"
    PAUSE = "pause"
    DONE = "done"  # at the last stage: the staged approval is complete


def pause_reason(health: StageHealth, auto: AutoPause | None) -> str | None:
    """Why the stage should pause, or None."""
    if auto is None or health.offered == 0:
        return None
    share = 100 * health.failing / health.offered
    if health.failing < auto.min_failing or share < auto.max_failing_percent:
        return None
    return (
        f"{health.failing} of {health.offered} devices offered the version failed"
        f" ({health.stuck} stuck, {health.reverted} reverted, {health.silent} silent:"
        f" {share:.1f} %, the limit is {auto.max_failing_percent:g} %)"
    )


def advance_stage(staged: StagedApproval) -> StagedApproval:
    """The next stage, by hand."""
    if staged.paused:
        raise RolloutError(f"the staged approval of {staged.version} is paused: resume it first")
    if staged.stage + 1 >= len(staged.stages):
        raise RolloutError(f"{staged.version} is at its last stage ({staged.share:g} %) already")
    return dataclasses.replace(staged, stage=staged.stage + 1)


def tick_stage(
    staged: StagedApproval,
    health: StageHealth,
    entered_at: datetime,
    now: datetime,
    schedule: StageSchedule,
) -> tuple[StagedApproval, StageMove, str]:
    """The staged approval after a look at its current stage, the move and why."""
    if staged.paused:
        return staged, StageMove.STAY, "paused"
    why = pause_reason(health, schedule.auto_pause)
    if why is not None:
        return dataclasses.replace(staged, paused=True), StageMove.PAUSE, why
    if staged.stage + 1 >= len(staged.stages):
        return staged, StageMove.DONE, f"at its last stage ({staged.share:g} %)"
    if schedule.soak is None:
        return staged, StageMove.STAY, "advances by hand"
    due = entered_at + schedule.soak
    if now < due:
        return staged, StageMove.STAY, f"advances at {due.isoformat()}"
    after = advance_stage(staged)
    return (
        after,
        StageMove.ADVANCE,
        f"stage {after.stage} ({after.share:g} %) after {schedule.soak}",
    )


def soak_shortfall(
    models: Iterable[str],
    running_since: Mapping[str, Sequence[datetime]],
    now: datetime,
    devices: int,
    hours: float,
) -> tuple[str, ...]:
    """What the soak gate misses: per affected model, unless `devices` of its test devices
    have run the pending version for `hours` (`running_since`: per model, when each of
    its test devices was first seen running it). Empty: the approval may go ahead."""
    needed = timedelta(hours=hours)
    missing = []
    for model in sorted(set(models)):
        soaked = sum(1 for since in running_since.get(model, ()) if now - since >= needed)
        if soaked < devices:
            missing.append(
                f"{model}: {soaked} of {devices} test devices have run it for {hours:g} hours"
            )
    return tuple(missing)


__all__ = [
    "AutoPause",
    "StageHealth",
    "StageMove",
    "StageSchedule",
    "advance_stage",
    "pause_reason",
    "soak_shortfall",
    "tick_stage",
]
