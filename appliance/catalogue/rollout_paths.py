"""Upgrade paths and the downgrade guard: pure version arithmetic around the rule lifecycle.

Upgrade paths (docs/rollouts.md): some firmware cannot install the approved version
directly; old Tanjay-family firmware must first take an intermediate version
(docs/protocol.md §10). A step applies to a device when its reported version is a dotted
version below the step's threshold and the step's version is older than what the device
would otherwise get; of the steps that apply, the lowest is offered, so chains walk one
hop at a time. A device whose version is unknown (not reported, or not dotted) takes no
step: nothing can be said about where it stands, and it gets what it got before.

The downgrade guard: approving a version older than the rule's approved one (or one that
cannot be ordered against it) needs an explicit flag. It is a check callers make before
`lifecycle.approve`; restore stays the one-step rollback and is not guarded.
"""

from __future__ import annotations

from appliance.catalogue.lifecycle import LifecycleError
from appliance.catalogue.rollout_policy import RolloutPolicy, UpgradeStep
from appliance.identifiers import is_version, same_version, version_tuple
from appliance.model import Rule, RuleKey

# The Tanjay two-step as sample data (docs/protocol.md §10): Polycom CX700 and LG-Nortel
# IP8540 phones on OCS-era firmware (below 4.0) first take the intermediate Lync release;
# firmware older still (OCS 2007, 1.0.522.x) first takes the OCS 2007 R2 release. The
# versions are those of the samples (tests and docs): an admin names the ones imported.
TANJAY_STEPS = tuple(
    UpgradeStep("UCPhone", brand, model, below, offer)
    for brand, model in (("Polycom", "CX700"), ("LG-Nortel", "IP8540"))
    for below, offer in (("3.5", "3.5.6907.37"), ("4.0", "4.0.7577.4100"))
)


class DowngradeRefused(LifecycleError):
    """The approval would move a rule to an older version and was not asked for as such."""


def next_step(
    policy: RolloutPolicy, key: RuleKey, reported: str | None, target: str
) -> UpgradeStep | None:
    """The step a device on `reported` takes before `target` (rule `key`); None: go direct."""
    if not policy.paths or reported is None:
        return None
    now, goal = reported.strip(), target.strip()
    if not (is_version(now) and is_version(goal)):
        return None
    at, to = version_tuple(now), version_tuple(goal)
    steps = [
        s
        for s in policy.paths
        if s.matches(key) and at < version_tuple(s.below) and version_tuple(s.offer) < to
    ]
    return min(steps, key=lambda s: version_tuple(s.offer), default=None)


def upgrade_path(
    policy: RolloutPolicy, key: RuleKey, reported: str | None, target: str
) -> tuple[str, ...]:
    """The versions a device on `reported` will be offered, in order, ending with `target`
    (empty when it already runs `target`): what `explain` shows."""
    walked: list[str] = []
    at = reported
    for _ in range(len(policy.paths) + 1):  # each hop climbs past a distinct step
        step = next_step(policy, key, at, target)
        if step is None:
            break
        walked.append(step.offer)
        at = step.offer
    if not same_version(target, at):
        walked.append(target)
    return tuple(walked)


def check_approval(rule: Rule, new_version: str, allow_downgrade: bool) -> bool:
    """Whether approving `new_version` on `rule` is a downgrade the caller asked for.

    False: not a downgrade (nothing approved yet, the same version, a newer one). True: a
    downgrade, allowed by `allow_downgrade` (the caller records that in its event).
    Raises DowngradeRefused for a downgrade without the flag, including a version that
    cannot be ordered against the approved one (not both dotted): it may be older.
    """
    approved = rule.approved_version
    if approved is None or same_version(approved, new_version):
        return False
    old, new = approved.strip(), new_version.strip()
    if is_version(old) and is_version(new):
        if version_tuple(new) > version_tuple(old):
            return False
        what = f"would move approved {old} back to {new}"
    else:
        what = f"cannot order {new!r} against approved {old!r}, so it may be a downgrade"
    if allow_downgrade:
        return True
    raise DowngradeRefused(
        f"{what}: a downgrade must be asked for explicitly (restore is the one-step rollback)"
    )
