"""Rule transitions with the semantics of the Lync cmdlets (docs/protocol.md §7).

Pure functions from a rule to the rule after the action; a transition that does not
apply raises LifecycleError with the reason, and changes nothing.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum

from appliance.identifiers import same_version
from appliance.model import Rule, RuleState


class LifecycleError(Exception):
    """The action does not apply to this rule; str() says why."""


class NeedsForce(LifecycleError):
    """The action applies only when forced: it would leave phones with no approved version."""


class Action(StrEnum):
    APPROVE = "approve"
    RESET = "reset"
    RESTORE = "restore"
    REMOVE = "remove"


def approve(rule: Rule) -> Rule:
    """Pending becomes approved; the previous approved version becomes the restore one."""
    if rule.pending_version is None:
        raise LifecycleError("has no pending version to approve")
    return dataclasses.replace(
        rule,
        approved_version=rule.pending_version,
        restore_version=rule.approved_version,
        pending_version=None,
        state=RuleState.APPROVED,
    )


def reset(rule: Rule) -> Rule:
    """Reject the pending version: test devices fall back to the approved one."""
    if rule.pending_version is None:
        raise LifecycleError("has no pending version to reset")
    return dataclasses.replace(rule, pending_version=None, state=RuleState.RESET)


def restore(rule: Rule, force: bool = False) -> Rule:
    """Roll back: approved goes back to the restore version.

    With no restore version that would leave no version approved, and phones would be
    offered nothing for the rule: refused (NeedsForce, saying so) unless `force`.
    """
    if rule.approved_version is None and rule.restore_version is None:
        raise LifecycleError("has no approved or restore version to roll back")
    if rule.restore_version is None and not force:
        still = (
            f" (test devices would still get pending {rule.pending_version})"
            if rule.pending_version is not None
            else ""
        )
        raise NeedsForce(
            f"has no restore version: restoring would withdraw {rule.approved_version} and "
            f"approve nothing, so phones would be offered no update for it{still}; "
            "force it to do that"
        )
    return dataclasses.replace(
        rule,
        approved_version=rule.restore_version,
        restore_version=None,
        state=RuleState.RESTORED,
    )


def apply(action: Action, rule: Rule, force: bool = False) -> Rule | None:
    """The rule after `action`; None when the action removes it. `force` lets a restore
    without a restore version withdraw the approved one (the others ignore it)."""
    if action is Action.REMOVE:
        return None
    if action is Action.RESTORE:
        return restore(rule, force)
    return {Action.APPROVE: approve, Action.RESET: reset}[action](rule)


def with_pending(rule: Rule, version: str) -> Rule | None:
    """The rule after an import offers `version`; None when that changes nothing.

    A version the rule already has pending or approved is no change: importing the
    same package twice changes nothing.
    """
    if same_version(rule.pending_version, version) or same_version(rule.approved_version, version):
        return None
    return dataclasses.replace(rule, pending_version=version, state=RuleState.PENDING)


def rule_summary(rule: Rule) -> dict[str, str | None]:
    """What the event log records of a rule, before and after a change."""
    return {
        "approved": rule.approved_version,
        "pending": rule.pending_version,
        "restore": rule.restore_version,
        "state": rule.state.value,
    }
