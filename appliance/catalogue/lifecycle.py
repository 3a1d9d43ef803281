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


def restore(rule: Rule) -> Rule:
    """Roll back: approved goes back to the restore version, or to none."""
    if rule.approved_version is None and rule.restore_version is None:
        raise LifecycleError("has no approved or restore version to roll back")
    return dataclasses.replace(
        rule,
        approved_version=rule.restore_version,
        restore_version=None,
        state=RuleState.RESTORED,
    )


def apply(action: Action, rule: Rule) -> Rule | None:
    """The rule after `action`; None when the action removes it."""
    if action is Action.REMOVE:
        return None
    return {Action.APPROVE: approve, Action.RESET: reset, Action.RESTORE: restore}[action](rule)


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
