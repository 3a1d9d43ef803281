"""Admin actions on the rollout policy, each in one store transaction with its event.

Every change goes to the event log as `rollout.<kind>.<change>` with the entry before and
after (rollout_json.py's forms), like the rule lifecycle's actions (actions.py):
`rollout.path.set|remove`, `rollout.stage.set|advance|pause|resume|remove`,
`rollout.network.set|remove`, `rollout.external.set|clear`, `rollout.pin.set|remove`.
`approve_staged` is `approve` and `rollout.stage.set` in one transaction, so no device is
offered the version outside the first stage in between. The stage timer's moves are
`tick_stagings` (actor `ucupdates`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from appliance.catalogue import lifecycle
from appliance.catalogue.actions import CatalogueError, RuleChange, UnknownRule
from appliance.catalogue.rollout_json import entry_json, staging_json
from appliance.catalogue.rollout_paths import check_approval
from appliance.catalogue.rollout_stages import StageMove, advance_stage, tick_stage
from appliance.model import (
    Entry,
    ExternalPolicy,
    IdentifierKind,
    NetworkPolicy,
    Pin,
    RolloutError,
    Rule,
    StagedApproval,
    StageSchedule,
    Staging,
    UpgradeStep,
)
from appliance.store import Store, iso_utc

TIMER_ACTOR = "ucupdates"  # the actor of the stage timer's moves


def _step_target(step: UpgradeStep) -> str:
    scope = "/".join(v for v in (step.device_type, step.brand, step.model, step.revision) if v)
    kind = f" {step.update_type}" if step.update_type else ""
    return f"upgrade path {scope}{kind} below {step.below}"


def _json(entry: Entry[Any] | None) -> dict[str, Any] | None:
    return None if entry is None else entry_json(entry)


# -- upgrade paths -----------------------------------------------------------------------


def set_upgrade_step(store: Store, step: UpgradeStep, actor: str) -> Entry[UpgradeStep] | None:
    """Add the step (or replace the one with its model, scope and threshold)."""
    with store.transaction():
        before = store.set_upgrade_step(step, actor)
        after = next(e for e in store.upgrade_steps() if e.value == step)
        store.append_event(
            actor, "rollout.path.set", _step_target(step), _json(before), _json(after)
        )
    return before


def remove_upgrade_step(store: Store, step: UpgradeStep, actor: str) -> Entry[UpgradeStep]:
    """Remove the step with `step`'s model, scope and threshold (its offer is not compared)."""
    with store.transaction():
        before = store.remove_upgrade_step(step)
        if before is None:
            raise CatalogueError(f"no {_step_target(step)}")
        store.append_event(actor, "rollout.path.remove", _step_target(step), _json(before), None)
    return before


# -- staged approvals --------------------------------------------------------------------


def _rule(store: Store, rule_id: int) -> Rule:
    rule = store.rule(rule_id)
    if rule is None:
        raise UnknownRule(f"no rule with id {rule_id}")
    return rule


def _target(rule: Rule) -> str:
    return f"rule {rule.id} {rule.key}"


def _new_staging(
    store: Store, rule: Rule, stages: Sequence[float], schedule: StageSchedule, actor: str
) -> Staging:
    if rule.approved_version is None:
        raise CatalogueError(f"rule {rule.id} has no approved version to stage")
    try:
        approval = StagedApproval(rule.key, rule.approved_version, tuple(stages), 0)
    except RolloutError as e:
        raise CatalogueError(str(e)) from e
    now = store.now()
    return Staging(rule.id, approval, schedule, now, set_by=actor, set_at=now)


def approve_staged(
    store: Store,
    rule_id: int,
    stages: Sequence[float],
    schedule: StageSchedule,
    actor: str,
    allow_downgrade: bool = False,
    note: Mapping[str, Any] | None = None,
) -> tuple[RuleChange, Staging]:
    """Approve the rule's pending version to its first stage only (events `approve`, with
    `staged`, `note`'s items and, if so, `downgrade`, and `rollout.stage.set`). Raises
    CatalogueError (no pending version, bad stages) or DowngradeRefused."""
    with store.transaction():
        rule = _rule(store, rule_id)
        if rule.pending_version is None:
            raise CatalogueError(f"rule {rule.id} has no pending version to approve")
        downgrade = check_approval(rule, rule.pending_version, allow_downgrade)
        after = store.save_rule(lifecycle.approve(rule))
        staging = store.save_staging(_new_staging(store, after, stages, schedule, actor))
        summary: dict[str, object] = {**lifecycle.rule_summary(after), "staged": list(stages)}
        if downgrade:
            summary["downgrade"] = True
        summary.update(note or {})
        store.append_event(actor, "approve", _target(rule), lifecycle.rule_summary(rule), summary)
        store.append_event(actor, "rollout.stage.set", _target(rule), None, staging_json(staging))
    return RuleChange(rule, after, downgrade=downgrade), staging


def stage_approved(
    store: Store, rule_id: int, stages: Sequence[float], schedule: StageSchedule, actor: str
) -> Staging:
    """Stage the rule's approved version as it is (devices outside the first stage that do
    not run it yet are held back from now on)."""
    with store.transaction():
        rule = _rule(store, rule_id)
        before = store.staging(rule_id)
        staging = store.save_staging(_new_staging(store, rule, stages, schedule, actor))
        store.append_event(
            actor,
            "rollout.stage.set",
            _target(rule),
            None if before is None else staging_json(before),
            staging_json(staging),
        )
    return staging


def _change_staging(
    store: Store, rule_id: int, action: str, actor: str, change: Callable[[Staging], Staging]
) -> Staging:
    with store.transaction():
        rule = _rule(store, rule_id)
        before = store.staging(rule_id)
        if before is None:
            raise CatalogueError(f"rule {rule_id} has no staged approval")
        try:
            wanted = change(before)
        except RolloutError as e:
            raise CatalogueError(str(e)) from e
        after = store.save_staging(wanted)
        store.append_event(actor, action, _target(rule), staging_json(before), staging_json(after))
    return after


def advance_staging(store: Store, rule_id: int, actor: str) -> Staging:
    """The next stage, by hand (refused while paused, and at the last stage)."""

    def change(s: Staging) -> Staging:
        return dataclasses.replace(s, approval=advance_stage(s.approval), entered_at=store.now())

    return _change_staging(store, rule_id, "rollout.stage.advance", actor, change)


def pause_staging(store: Store, rule_id: int, why: str, actor: str) -> Staging:
    """Pause: no device is newly offered the staged version."""

    def change(s: Staging) -> Staging:
        if s.approval.paused:
            raise RolloutError(f"the staged approval of rule {rule_id} is paused already")
        approval = dataclasses.replace(s.approval, paused=True)
        return dataclasses.replace(s, approval=approval, paused_why=why, paused_at=store.now())

    return _change_staging(store, rule_id, "rollout.stage.pause", actor, change)


def resume_staging(store: Store, rule_id: int, actor: str) -> Staging:
    """Resume a paused stage; its soak time starts again."""

    def change(s: Staging) -> Staging:
        if not s.approval.paused:
            raise RolloutError(f"the staged approval of rule {rule_id} is not paused")
        approval = dataclasses.replace(s.approval, paused=False)
        return dataclasses.replace(
            s, approval=approval, paused_why=None, paused_at=None, entered_at=store.now()
        )

    return _change_staging(store, rule_id, "rollout.stage.resume", actor, change)


def remove_staging(store: Store, rule_id: int, actor: str) -> Staging:
    """Drop the staging: the approved version goes to every device at once."""
    with store.transaction():
        rule = _rule(store, rule_id)
        before = store.remove_staging(rule_id)
        if before is None:
            raise CatalogueError(f"rule {rule_id} has no staged approval")
        store.append_event(actor, "rollout.stage.remove", _target(rule), staging_json(before), None)
    return before


def tick_stagings(store: Store, now: datetime) -> list[tuple[Staging, StageMove, str]]:
    """What the stage timer does: each staged approval of a rule's current approval paused
    when its failing devices pass its threshold, else advanced once its stage has soaked
    (events `rollout.stage.pause|advance`, actor `ucupdates`). Returns the moves made."""
    moves: list[tuple[Staging, StageMove, str]] = []
    with store.transaction():
        for staging in store.stagings():
            rule = store.rule(staging.rule_id)
            if rule is None or not staging.approval.applies_to(rule.key, rule.approved_version):
                continue  # a staging of an approval since replaced holds nobody back
            health = store.stage_health(rule.id, staging.approval.version)
            entered = datetime.fromisoformat(staging.entered_at)
            after, move, why = tick_stage(staging.approval, health, entered, now, staging.schedule)
            if move not in (StageMove.PAUSE, StageMove.ADVANCE):
                continue
            stamp = iso_utc(now)
            if move is StageMove.PAUSE:
                changed = dataclasses.replace(
                    staging, approval=after, paused_why=why, paused_at=stamp
                )
            else:
                changed = dataclasses.replace(staging, approval=after, entered_at=stamp)
            saved = store.save_staging(changed)
            store.append_event(
                TIMER_ACTOR,
                f"rollout.stage.{'pause' if move is StageMove.PAUSE else 'advance'}",
                _target(rule),
                staging_json(staging),
                {**staging_json(saved), "why": why},
            )
            moves.append((saved, move, why))
    return moves


# -- networks, the external zone, pins ---------------------------------------------------


def set_network(store: Store, policy: NetworkPolicy, actor: str) -> Entry[NetworkPolicy] | None:
    with store.transaction():
        before = store.set_network(policy, actor)
        after = next(e for e in store.networks() if e.value.network == policy.network)
        target = f"network {policy.network}"
        store.append_event(actor, "rollout.network.set", target, _json(before), _json(after))
    return before


def remove_network(store: Store, network: str, actor: str) -> Entry[NetworkPolicy]:
    with store.transaction():
        try:
            before = store.remove_network(network)
        except ValueError as e:
            raise CatalogueError(str(e)) from e
        if before is None:
            raise CatalogueError(f"no rollout policy for network {network}")
        target = f"network {before.value.network}"
        store.append_event(actor, "rollout.network.remove", target, _json(before), None)
    return before


def set_external(store: Store, policy: ExternalPolicy, actor: str) -> Entry[ExternalPolicy] | None:
    with store.transaction():
        before = store.set_external_policy(policy, actor)
        after = store.external_policy()
        store.append_event(
            actor, "rollout.external.set", "external zone", _json(before), _json(after)
        )
    return before


def clear_external(store: Store, actor: str) -> Entry[ExternalPolicy]:
    with store.transaction():
        before = store.clear_external_policy()
        if before is None:
            raise CatalogueError("the external zone has no rollout policy")
        store.append_event(actor, "rollout.external.clear", "external zone", _json(before), None)
    return before


def _pin_target(kind: IdentifierKind, identifier: str, update_type: str | None) -> str:
    scope = f" ({update_type})" if update_type else ""
    return f"device {kind.value} {identifier}{scope}"


def pin_device(store: Store, pin: Pin, actor: str) -> Entry[Pin] | None:
    with store.transaction():
        before = store.set_pin(pin, actor)
        after = next(e for e in store.pins() if e.value == pin)
        target = _pin_target(pin.kind, pin.identifier, pin.update_type)
        store.append_event(actor, "rollout.pin.set", target, _json(before), _json(after))
    return before


def unpin_device(
    store: Store, kind: IdentifierKind, identifier: str, update_type: str | None, actor: str
) -> Entry[Pin]:
    with store.transaction():
        before = store.remove_pin(kind, identifier, update_type)
        target = _pin_target(kind, identifier, update_type)
        if before is None:
            raise CatalogueError(f"no pin on {target}")
        store.append_event(actor, "rollout.pin.remove", target, _json(before), None)
    return before
