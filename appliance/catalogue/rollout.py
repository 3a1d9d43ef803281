"""The rollout decision: `choose_update` with the admin's rollout policy around it.

`decide(request, catalog, policy, now, address)` answers an update check the way
`choose_update` does (docs/protocol.md §6), then lets the policy (rollout_policy.py) hold
back or redirect what is offered, per rule, in this order:

1. A pin that excludes the device: nothing offered. A pin that holds it on a version: that
   version is its approved one (offered when it runs another, even an older one; the
   offer's own reason stays APPROVED, the decision's says `held`).
2. Test devices get the pending version first, as before; stages do not apply to them
   (they are the canaries). For other devices, a staged approval of the rule's current
   approved version applies: a device whose bucket is outside the current stage, or any
   device while the stage is paused, is answered as before the approval: the previous
   approved (restore) version when it differs from what the device runs and is not older
   than it, nothing otherwise. A stage never rolls a device back, and a device that already
   runs the approved version stays on it.
3. An upgrade path redirects the chosen version to the path's next step
   (rollout_paths.py). A step whose files are missing or broken is not offered, and
   neither is the version behind it: the path exists because the direct update fails.
4. Outside the download window of the device's network (or of the external zone), every
   offer waits: `Downloads` 0, and the phone asks again at its next check.

With `RolloutPolicy()` the answer is `choose_update`'s, field for field; with a policy
that changes nothing for a device, too (tests/test_rollout.py runs test_decision.py's
tables through both). The reasons the policy adds are `RolloutReason`s: `Reason` belongs
to the decision and none of its members changes meaning. `RolloutDecision` has
`Decision`'s fields (offers, reason, detail) so the answer renders the same way.

What the decision reads beyond `answer_key` is `RolloutFacts`: the device's pins, whether
its bucket is inside each staged approval's current stage, and whether its window is
closed (not the time: answers stay remembered while the window stays open or shut).
`rollout_key` is `answer_key` plus those facts. No I/O and no clock: `now` (aware) and the
client address are parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from appliance.catalogue.decision import (
    Decision,
    Offer,
    Reason,
    answer_key,
    choose_update,
    describe_device,
    image_names,
    is_older,
    is_test_device,
    matching_rules,
    offer_or_problem,
    reported_version,
)
from appliance.catalogue.rollout_paths import next_step
from appliance.catalogue.rollout_policy import (
    Pin,
    PinAction,
    RolloutPolicy,
    StagedApproval,
)
from appliance.identifiers import same_version
from appliance.model import Catalog, DeviceRequest, Rule, Zone


class RolloutReason(StrEnum):
    EXCLUDED = "excluded"  # a pin excludes the device from the rule's updates
    HELD = "held"  # a pin holds the device on a version
    NOT_IN_STAGE = "not-in-stage"  # the staged approval has not reached the device's bucket
    STAGE_PAUSED = "stage-paused"  # the staged approval is paused
    UPGRADE_PATH = "upgrade-path"  # offered an upgrade path's step before the chosen version
    OUTSIDE_WINDOW = "outside-window"  # an offer waits for the network's download window


AnyReason = Reason | RolloutReason

# As the decision's priority, with the policy's reasons before "up to date": a device
# nothing is offered to because of the policy is reported as such.
_NO_OFFER_PRIORITY: tuple[AnyReason, ...] = (
    Reason.BROKEN_FILES,
    Reason.MISSING_FILES,
    RolloutReason.EXCLUDED,
    RolloutReason.STAGE_PAUSED,
    RolloutReason.NOT_IN_STAGE,
    RolloutReason.HELD,
    Reason.UP_TO_DATE,
    Reason.NO_VERSION,
)


@dataclass(frozen=True)
class RolloutDecision:
    """`Decision`'s fields, with the policy's reasons among the reasons."""

    offers: tuple[Offer, ...]
    reason: AnyReason
    detail: str

    @property
    def downloads(self) -> int:
        return len(self.offers)

    @classmethod
    def of(cls, decision: Decision) -> RolloutDecision:
        return cls(decision.offers, decision.reason, decision.detail)


AnyDecision = Decision | RolloutDecision  # what the phone service answers from


def kept_versions(
    rules: Iterable[Rule], policy: RolloutPolicy
) -> frozenset[tuple[tuple[str, ...], str]]:
    """(folded rule key, version) of every update a device may be offered: the versions
    the rules reference, the upgrade steps of their models and the versions pins hold
    (what phones may download, and what clean-files keeps)."""
    kept: set[tuple[tuple[str, ...], str]] = set()
    holds = [p for p in policy.pins if p.version is not None]
    for rule in rules:
        folded = rule.key.folded()
        kept.update((folded, v) for v in rule.versions())
        kept.update((folded, s.offer) for s in policy.paths if s.matches(rule.key))
        kept.update((folded, p.version or "") for p in holds if p.covers(rule.key.update_type))
    return frozenset(kept)


@dataclass(frozen=True)
class RolloutFacts:
    """What the rollout decision reads besides `answer_key`'s fields and the catalogue."""

    pins: tuple[Pin, ...] = ()  # the pins naming the device (by MAC first)
    in_stage: tuple[bool, ...] = ()  # per policy.staged: inside the current stage's share
    closed_window: str | None = None  # the device's window, when it is closed now


NO_FACTS = RolloutFacts()


def rollout_facts(
    request: DeviceRequest, policy: RolloutPolicy, now: datetime, address: str | None
) -> RolloutFacts:
    """What the policy says of this device now: its pins, its stages, its window.

    A few microseconds (the bucket's SHA-256, the window's local time; a client address's
    network is remembered by the policy), so it can run on every check."""
    if policy.empty:
        return NO_FACTS
    pins = policy.pins_for(request.mac, request.serial) if policy.pins else ()
    in_stage: tuple[bool, ...] = ()
    if policy.staged:
        place = policy.bucket(request.mac, request.serial)
        in_stage = tuple(s.includes(place) for s in policy.staged)
    closed = None
    if request.zone is Zone.EXTERNAL:
        if policy.external is not None and not policy.external.is_open(now):
            closed = policy.external_label
    elif policy.networks:
        network = policy.network_for(address)
        if network is not None and not network.windows.is_open(now):
            closed = network.label
    return RolloutFacts(pins, in_stage, closed)


def rollout_key(
    request: DeviceRequest,
    catalog: Catalog,
    policy: RolloutPolicy,
    now: datetime,
    address: str | None,
) -> tuple[object, ...]:
    """`answer_key` and the rollout facts: requests with equal keys get equal answers from
    the same catalogue and policy. The path a device walks is not added: it follows from
    the model and reported versions, which `answer_key` holds. A caller that wants the
    facts once per check builds the same key from `rollout_facts` and, on a miss, answers
    with `decide_with`."""
    return (*answer_key(request, catalog), rollout_facts(request, policy, now, address))


def decide(
    request: DeviceRequest,
    catalog: Catalog,
    policy: RolloutPolicy,
    now: datetime,
    address: str | None,
) -> RolloutDecision:
    """The answer to an update check under `policy`, at `now`, from client `address`."""
    if policy.empty:
        return RolloutDecision.of(choose_update(request, catalog))
    return decide_with(request, catalog, policy, rollout_facts(request, policy, now, address))


def decide_with(
    request: DeviceRequest, catalog: Catalog, policy: RolloutPolicy, facts: RolloutFacts
) -> RolloutDecision:
    """The decision from the facts alone (what `rollout_key` holds)."""
    rules = matching_rules(request, catalog)
    if not rules:
        return RolloutDecision.of(choose_update(request, catalog))
    test = is_test_device(request, catalog)
    who = describe_device(request, test)
    outcomes = [_consider(rule, request, catalog, policy, facts, test, who) for rule in rules]
    offers = tuple(o.offer for o in outcomes if o.offer is not None)
    detail = "; ".join(o.detail for o in outcomes)
    if offers and facts.closed_window is not None:
        return RolloutDecision(
            (),
            RolloutReason.OUTSIDE_WINDOW,
            f"{detail}; outside the download window ({facts.closed_window}): offered when it opens",
        )
    if offers:
        reason = next(o.reason for o in outcomes if o.offer is not None)
    else:
        reason = next(r for r in _NO_OFFER_PRIORITY if any(o.reason is r for o in outcomes))
    return RolloutDecision(offers, reason, detail)


@dataclass(frozen=True)
class _Outcome:
    offer: Offer | None
    reason: AnyReason
    detail: str


def _consider(
    rule: Rule,
    request: DeviceRequest,
    catalog: Catalog,
    policy: RolloutPolicy,
    facts: RolloutFacts,
    test: bool,
    who: str,
) -> _Outcome:
    pins = [p for p in facts.pins if p.covers(rule.key.update_type)]
    excluded = next((p for p in pins if p.action is PinAction.EXCLUDE), None)
    if excluded is not None:
        return _Outcome(
            None,
            RolloutReason.EXCLUDED,
            f"{who}: excluded from rule {rule.key} by its pin ({excluded.reason}); not offered",
        )
    held = next((p for p in pins if p.action is PinAction.HOLD), None)
    if held is not None and held.version is not None:
        label = f"held (pin: {held.reason})"
        return _offer(rule, request, catalog, policy, held.version, label, RolloutReason.HELD, who)
    if test and rule.pending_version:
        version, label, reason = rule.pending_version, "pending", Reason.PENDING_TEST_DEVICE
        return _offer(rule, request, catalog, policy, version, label, reason, who)
    if rule.approved_version:
        staged = _staging(rule, policy, facts)
        if staged is not None and not test:
            return _behind_stage(rule, request, catalog, policy, staged, who)
        version = rule.approved_version
        return _offer(rule, request, catalog, policy, version, "approved", Reason.APPROVED, who)
    wanted = "pending or approved" if test else "approved"
    return _Outcome(None, Reason.NO_VERSION, f"{who}: rule {rule.key} has no {wanted} version")


def _staging(rule: Rule, policy: RolloutPolicy, facts: RolloutFacts) -> StagedApproval | None:
    """The staged approval holding this device back from the rule's approved version."""
    for staged, inside in zip(policy.staged, facts.in_stage, strict=True):
        if staged.applies_to(rule.key, rule.approved_version):
            return staged if staged.paused or not inside else None
    return None


def _behind_stage(
    rule: Rule,
    request: DeviceRequest,
    catalog: Catalog,
    policy: RolloutPolicy,
    staged: StagedApproval,
    who: str,
) -> _Outcome:
    approved = rule.approved_version or ""
    reported = reported_version(request, image_names(rule, approved, catalog))
    if same_version(approved, reported):
        return _Outcome(
            None, Reason.UP_TO_DATE, f"{who}: already runs approved {approved} (rule {rule.key})"
        )
    if staged.paused:
        reason, where = RolloutReason.STAGE_PAUSED, f"paused at {staged.share:g} %"
    else:
        reason, where = RolloutReason.NOT_IN_STAGE, f"at {staged.share:g} %"
    why = f"approved {approved} of rule {rule.key} is staged ({where}) and not for this device"
    previous = rule.restore_version
    if previous is None:
        return _Outcome(None, reason, f"{who}: {why} yet; nothing offered")
    if same_version(previous, reported) or is_older(previous, reported):
        return _Outcome(None, reason, f"{who}: {why} yet; stays on reported {reported}")
    return _offer(
        rule, request, catalog, policy, previous, f"previous approved ({why} yet)", reason, who
    )


def _offer(
    rule: Rule,
    request: DeviceRequest,
    catalog: Catalog,
    policy: RolloutPolicy,
    version: str,
    label: str,
    why: AnyReason,
    who: str,
) -> _Outcome:
    """The rule's chosen `version` offered unless the device runs it or it cannot be; the
    texts are choose_update's, so that a policy that changes nothing changes no word."""
    reported = reported_version(request, image_names(rule, version, catalog))
    own = Reason.PENDING_TEST_DEVICE if why is Reason.PENDING_TEST_DEVICE else Reason.APPROVED
    if same_version(version, reported):
        done = Reason.UP_TO_DATE if why is own else why
        return _Outcome(None, done, f"{who}: already runs {label} {version} (rule {rule.key})")
    offered, what = version, f"{label} {version}"
    step = next_step(policy, rule.key, reported, version)
    if step is not None:
        offered, what = step.offer, f"upgrade path step {step.offer} (before {what})"
        why = RolloutReason.UPGRADE_PATH
    offer, problem, detail = offer_or_problem(rule, offered, what, reported, catalog, who, own)
    return _Outcome(offer, problem or why, detail)
