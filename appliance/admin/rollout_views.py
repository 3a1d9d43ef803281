"""Staged approvals and `explain` as JSON: what a rollout is doing, and what a device gets.

Shared by the JSON API (`api_rollouts`) and the command line, as `rollout_ops` is. A
rollout's view is the staging (`staging_json`) with the rule, the health of the devices
offered the version (updated, stuck, reverted, silent: `store.stage_health`), what the
stage timer would do next, and what the rule's known devices are answered now, counted
by reason: `not-in-stage` and `stage-paused` wait for the rollout, `outside-window` for
their network's download window. That count runs the rollout decision for each device of
the rule's model in the inventory, with the address and zone of its last check.
`devices` counts the same devices and those the current stage holds (their bucket).

Approving goes through the catalogue's `approve_staged` (or `apply_action` without
stages) after two guards: the downgrade guard (`check_approval`) and, when asked for,
the soak gate (N test devices ran the pending version for T hours), which a stated reason
overrides; the override and what fell short are recorded in the `approve` event
(`soak_override`, `soak_shortfall`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from appliance.admin.rollout_ops import Body, InputError, Missing, flag, number, text, whole
from appliance.catalogue import (
    Action,
    AutoPause,
    CatalogueError,
    StageSchedule,
    UnknownRule,
    advance_staging,
    apply_action,
    approve_staged,
    change_json,
    decide,
    is_test_device,
    pause_staging,
    remove_staging,
    resume_staging,
    soak_shortfall,
    stage_approved,
    staging_json,
    tick_stage,
)
from appliance.model import (
    Device,
    DeviceRequest,
    IdentifierKind,
    Outcome,
    RolloutError,
    Rule,
    Staging,
    Zone,
)
from appliance.store import RuleFilter, Store


class SoakGateRefused(CatalogueError):
    """The soak gate is not met and no reason to override it was given."""


# -- a rollout's view ----------------------------------------------------------------------


def _rule(store: Store, rule_id: int) -> Rule:
    rule = store.rule(rule_id)
    if rule is None:
        raise UnknownRule(f"no rule with id {rule_id}")
    return rule


def rollout_json(store: Store, staging: Staging, now: datetime, answers: bool) -> dict[str, Any]:
    """The staging, its rule, its health, the timer's next move and (with `answers`) what
    the rule's devices are answered now."""
    rule = _rule(store, staging.rule_id)
    health = store.stage_health(rule.id, staging.approval.version)
    current = staging.approval.applies_to(rule.key, rule.approved_version)
    entered = datetime.fromisoformat(staging.entered_at)
    _, move, why = tick_stage(staging.approval, health, entered, now, staging.schedule)
    body: dict[str, Any] = {
        **staging_json(staging),
        "current": current,
        "approved_version": rule.approved_version,
        "restore_version": rule.restore_version,
        "health": {
            "offered": health.offered,
            "pending": health.offered - health.updated - health.failing,
            "updated": health.updated,
            "stuck": health.stuck,
            "reverted": health.reverted,
            "silent": health.silent,
            "failing": health.failing,
        },
        "next": {
            "move": move.value if current else "none",
            "why": why
            if current
            else "the rule's approved version is another one: this staging holds nobody back",
        },
    }
    body["devices"] = devices_in_stage(store, rule, staging)
    if answers:
        body["answers"] = answers_by_reason(store, rule, now)
    return body


def devices_in_stage(store: Store, rule: Rule, staging: Staging) -> dict[str, int]:
    """The rule's devices in the inventory (`known`) and how many of them the current stage
    holds (`in_stage`): their bucket, under the store's salt, is below the stage's share,
    as the decision places them. Test devices count in every stage, as the decision
    offers them the version whatever their bucket. Pausing changes nobody's place."""
    catalog = store.catalog()
    policy = store.rollout_policy()
    wanted = rule.key.folded()[:5]
    known = inside = 0
    for device in store.devices():
        request = request_of(device)
        if request is None or _folded(request) != wanted:
            continue
        known += 1
        place = policy.bucket(request.mac, request.serial)
        if staging.approval.includes(place) or is_test_device(request, catalog):
            inside += 1
    return {"known": known, "in_stage": inside}


def answers_by_reason(store: Store, rule: Rule, now: datetime) -> dict[str, int]:
    """The rule's devices in the inventory (its model, revision and locale), counted by the
    reason of what the rollout decision answers them now for this rule alone."""
    catalog = store.catalog()
    alone = dataclasses.replace(catalog, rules=(rule,))
    policy = store.rollout_policy()
    wanted = rule.key.folded()[:5]
    counts: Counter[str] = Counter()
    for device in store.devices():
        request = request_of(device)
        if request is None or _folded(request) != wanted:
            continue
        counts[decide(request, alone, policy, now, device.address).reason.value] += 1
    return dict(sorted(counts.items()))


def _folded(request: DeviceRequest) -> tuple[str, ...]:
    fields = (request.device_type, request.brand, request.model, request.revision, request.locale)
    return tuple(v.strip().casefold() for v in fields)


def request_of(device: Device) -> DeviceRequest | None:
    """The check a device of the inventory would make (its last one's fields)."""
    fields = (device.device_type, device.brand, device.model, device.revision, device.locale)
    if any(f is None for f in fields):
        return None
    device_type, brand, model, revision, locale = (f or "" for f in fields)
    return DeviceRequest(
        device_type,
        brand,
        model,
        revision,
        locale,
        mac=device.mac,
        serial=device.serial,
        version=device.version,
        zone=device.zone or Zone.INTERNAL,
        address=device.address,
    )


def list_rollouts(store: Store, now: datetime) -> dict[str, Any]:
    return {"rollouts": [rollout_json(store, s, now, False) for s in store.stagings()]}


def show_rollout(store: Store, now: datetime, rule_id: int) -> dict[str, Any]:
    staging = store.staging(rule_id)
    if staging is None:
        _rule(store, rule_id)  # an unknown rule says so
        raise Missing(f"rule {rule_id} has no staged approval")
    return rollout_json(store, staging, now, True)


# -- approving, and moving through the stages -----------------------------------------------


def stages_of(body: Body) -> tuple[float, ...] | None:
    raw = body.get("stages")
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in raw)
    ):
        raise InputError("stages is a list of rising percentages, e.g. [5, 25, 100]")
    return tuple(float(s) for s in raw)


def schedule_of(body: Body) -> StageSchedule:
    """soak_hours (none: advance by hand), auto_pause, pause_percent, pause_min."""
    hours = number(body, "soak_hours")
    auto = None
    if flag(body, "auto_pause", True):
        defaults = AutoPause()
        percent = number(body, "pause_percent")
        auto = _record(
            AutoPause,
            defaults.max_failing_percent if percent is None else percent,
            whole(body, "pause_min") or defaults.min_failing,
        )
    soak = None if not hours else timedelta(hours=hours)
    return _record(StageSchedule, soak, auto)  # type: ignore[no-any-return]


def _record(build: Any, *args: Any) -> Any:
    try:
        return build(*args)
    except RolloutError as e:
        raise InputError(str(e)) from e


def soak_gate_shortfall(
    store: Store, rule: Rule, devices: int, hours: float, now: datetime
) -> tuple[str, ...]:
    """What the soak gate misses before approving the rule's pending version: `devices`
    of its test devices must have run it (confirmed by a check: outcome updated) for
    `hours`. Empty: the gate is met."""
    version = rule.pending_version or ""
    tests = store.test_devices()
    macs = {d.identifier for d in tests if d.kind is IdentifierKind.MAC}
    serials = {d.identifier for d in tests if d.kind is IdentifierKind.SERIAL}
    identities = set(macs) | {f"serial:{s}" for s in serials}
    identities |= {d.identity for d in store.devices() if d.serial in serials}
    since = [
        datetime.fromisoformat(r.outcome_at or r.last_seen_at)
        for r in store.offers(rule_id=rule.id, version=version, outcome=Outcome.UPDATED)
        if r.identity in identities
    ]
    return soak_shortfall([rule.key.model], {rule.key.model: since}, now, devices, hours)


def approve_rollout(store: Store, now: datetime, actor: str, body: Body) -> dict[str, Any]:
    """Approve the rule's pending version, staged when `stages` are given (or, with
    "approve": false, stage the approved version as it is).

    Body: rule_id, stages, soak_hours, auto_pause, pause_percent, pause_min, approve,
    allow_downgrade, soak_gate {"devices", "hours"}, override_soak (a reason)."""
    rule = _rule(store, whole(body, "rule_id") or 0)
    stages, schedule = stages_of(body), schedule_of(body)
    approving = flag(body, "approve", True)
    allow_downgrade = flag(body, "allow_downgrade")
    override = text(body, "override_soak")
    shortfall: tuple[str, ...] = ()
    gate = body.get("soak_gate")
    if override is not None and gate is None:
        raise InputError("override_soak overrides a soak_gate: give both")
    if gate is not None and approving:
        if not isinstance(gate, dict):
            raise InputError('soak_gate is {"devices": N, "hours": H}')
        devices, hours = whole(gate, "devices"), number(gate, "hours")
        if devices is None or hours is None:
            raise InputError('soak_gate is {"devices": N, "hours": H}')
        shortfall = soak_gate_shortfall(store, rule, devices, hours, now)
        if shortfall and override is None:
            raise SoakGateRefused(
                f"the soak gate is not met for {rule.pending_version}: "
                + "; ".join(shortfall)
                + " (override it with a reason)"
            )
    note = {"soak_override": override, "soak_shortfall": list(shortfall)} if shortfall else None
    change: dict[str, Any] | None = None
    rollout: dict[str, Any] | None = None
    if not approving:
        if stages is None:
            raise InputError("staging the approved version needs stages")
        staging = stage_approved(store, rule.id, stages, schedule, actor)
        rollout = rollout_json(store, staging, now, False)
    elif stages is not None:
        result, staging = approve_staged(
            store, rule.id, stages, schedule, actor, allow_downgrade, note=note
        )
        change, rollout = change_json(result), rollout_json(store, staging, now, False)
    else:
        flt = RuleFilter(ids=(rule.id,))
        (result,) = apply_action(
            store, Action.APPROVE, flt, actor, allow_downgrade=allow_downgrade, note=note
        )
        if result.skipped is not None:
            raise CatalogueError(f"rule {rule.id}: {result.skipped}")
        change = change_json(result)
    return {"change": change, "rollout": rollout, "soak_override": list(shortfall) or None}


def move_rollout(
    store: Store, now: datetime, actor: str, rule_id: int, move: str, body: Body
) -> dict[str, Any]:
    """advance, pause (with a reason) or resume."""
    _rule(store, rule_id)
    if move == "advance":
        staging = advance_staging(store, rule_id, actor)
    elif move == "pause":
        staging = pause_staging(store, rule_id, text(body, "reason", True) or "", actor)
    elif move == "resume":
        staging = resume_staging(store, rule_id, actor)
    else:
        raise Missing(f"unknown move {move!r}: advance, pause or resume")
    return rollout_json(store, staging, now, False)


def drop_rollout(store: Store, actor: str, rule_id: int) -> dict[str, Any]:
    _rule(store, rule_id)
    if store.staging(rule_id) is None:
        raise Missing(f"rule {rule_id} has no staged approval")
    return {"removed": staging_json(remove_staging(store, rule_id, actor))}
