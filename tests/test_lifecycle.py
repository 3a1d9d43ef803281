"""Rule transitions (docs/protocol.md §7) from every interesting starting state."""

from __future__ import annotations

import pytest

from appliance import testing
from appliance.catalogue.lifecycle import (
    Action,
    LifecycleError,
    NeedsForce,
    apply,
    approve,
    reset,
    restore,
    rule_summary,
    with_pending,
)
from appliance.model import Rule, RuleState

KEY = testing.CX600
PENDING = testing.CU8  # just imported
APPROVED = testing.CU7  # what ordinary phones get
RESTORE = testing.CU6  # what a roll-back goes to
NEW = "4.0.7577.4400"

# name -> (approved, pending, restore, state as the store would hold it)
STARTS: dict[str, tuple[str | None, str | None, str | None, RuleState]] = {
    "pending-only": (None, PENDING, None, RuleState.PENDING),
    "approved-only": (APPROVED, None, None, RuleState.APPROVED),
    "approved+pending": (APPROVED, PENDING, None, RuleState.PENDING),
    "approved+restore": (APPROVED, None, RESTORE, RuleState.APPROVED),
    "approved+pending+restore": (APPROVED, PENDING, RESTORE, RuleState.PENDING),
    "restore-only": (None, None, RESTORE, RuleState.RESTORED),
    "nothing": (None, None, None, RuleState.RESET),
}

NO_PENDING = "no pending version"
NO_ROLLBACK = "no approved or restore version"
NEEDS_FORCE = "has no restore version: restoring would withdraw"

# (action, start) -> (approved, pending, restore, state) after, or the LifecycleError text.
Outcome = tuple[str | None, str | None, str | None, RuleState] | str
TRANSITIONS: dict[tuple[Action, str], Outcome] = {
    # approve: pending -> approved, previous approved -> restore, pending cleared.
    (Action.APPROVE, "pending-only"): (PENDING, None, None, RuleState.APPROVED),
    (Action.APPROVE, "approved-only"): NO_PENDING,
    (Action.APPROVE, "approved+pending"): (PENDING, None, APPROVED, RuleState.APPROVED),
    (Action.APPROVE, "approved+restore"): NO_PENDING,
    (Action.APPROVE, "approved+pending+restore"): (PENDING, None, APPROVED, RuleState.APPROVED),
    (Action.APPROVE, "restore-only"): NO_PENDING,
    (Action.APPROVE, "nothing"): NO_PENDING,
    # reset: only for a pending rule; the pending version is cleared, the rest kept.
    (Action.RESET, "pending-only"): (None, None, None, RuleState.RESET),
    (Action.RESET, "approved-only"): NO_PENDING,
    (Action.RESET, "approved+pending"): (APPROVED, None, None, RuleState.RESET),
    (Action.RESET, "approved+restore"): NO_PENDING,
    (Action.RESET, "approved+pending+restore"): (APPROVED, None, RESTORE, RuleState.RESET),
    (Action.RESET, "restore-only"): NO_PENDING,
    (Action.RESET, "nothing"): NO_PENDING,
    # restore: approved goes back to the restore version; pending is kept. Without a
    # restore version it would approve nothing: refused unless forced (FORCED below).
    (Action.RESTORE, "pending-only"): NO_ROLLBACK,
    (Action.RESTORE, "approved-only"): NEEDS_FORCE,
    (Action.RESTORE, "approved+pending"): NEEDS_FORCE,
    (Action.RESTORE, "approved+restore"): (RESTORE, None, None, RuleState.RESTORED),
    (Action.RESTORE, "approved+pending+restore"): (RESTORE, PENDING, None, RuleState.RESTORED),
    (Action.RESTORE, "restore-only"): (RESTORE, None, None, RuleState.RESTORED),
    (Action.RESTORE, "nothing"): NO_ROLLBACK,
}


# The same with force: only a restore without a restore version changes, to no version
# approved (the Lync cmdlet's behaviour); every other outcome is the table's above.
FORCED: dict[tuple[Action, str], Outcome] = {
    **TRANSITIONS,
    (Action.RESTORE, "approved-only"): (None, None, None, RuleState.RESTORED),
    (Action.RESTORE, "approved+pending"): (None, PENDING, None, RuleState.RESTORED),
}


def make_rule(start: str) -> Rule:
    approved, pending, restore_version, state = STARTS[start]
    return testing.make_rule(approved, pending, restore_version, state=state, rule_id=7)


def versions(rule: Rule) -> tuple[str | None, str | None, str | None, RuleState]:
    return (rule.approved_version, rule.pending_version, rule.restore_version, rule.state)


def test_the_table_covers_every_action_from_every_start() -> None:
    wanted = {(a, s) for a in (Action.APPROVE, Action.RESET, Action.RESTORE) for s in STARTS}
    assert set(TRANSITIONS) == wanted


@pytest.mark.parametrize(
    ("action", "start", "expected"),
    [
        pytest.param(a, s, out, id=f"{a.value}-from-{s}")
        for (a, s), out in TRANSITIONS.items()
        if not isinstance(out, str)
    ],
)
def test_transition(action: Action, start: str, expected: Outcome) -> None:
    before = make_rule(start)
    after = apply(action, before)
    assert after is not None
    assert versions(after) == expected
    # The rule keeps its identity; only versions and state change.
    assert (after.id, after.key, after.updated_at) == (before.id, before.key, before.updated_at)


@pytest.mark.parametrize(
    ("action", "start", "reason"),
    [
        pytest.param(a, s, out, id=f"{a.value}-from-{s}")
        for (a, s), out in TRANSITIONS.items()
        if isinstance(out, str)
    ],
)
def test_transition_that_does_not_apply_is_refused(action: Action, start: str, reason: str) -> None:
    before = make_rule(start)
    with pytest.raises(LifecycleError, match=reason):
        apply(action, before)


@pytest.mark.parametrize(
    ("action", "start", "expected"),
    [pytest.param(a, s, out, id=f"{a.value}-forced-from-{s}") for (a, s), out in FORCED.items()],
)
def test_forced_transition(action: Action, start: str, expected: Outcome) -> None:
    before = make_rule(start)
    if isinstance(expected, str):
        with pytest.raises(LifecycleError, match=expected):
            apply(action, before, force=True)
    else:
        after = apply(action, before, force=True)
        assert after is not None and versions(after) == expected


@pytest.mark.parametrize(
    ("start", "says"),
    [
        pytest.param("approved-only", f"withdraw {APPROVED} and approve nothing", id="approved"),
        pytest.param(
            "approved+pending", f"test devices would still get pending {PENDING}", id="pending"
        ),
    ],
)
def test_a_restore_that_needs_force_says_what_phones_would_get(start: str, says: str) -> None:
    with pytest.raises(NeedsForce) as refused:
        restore(make_rule(start))
    assert says in str(refused.value)
    assert "phones would be offered no update" in str(refused.value)


@pytest.mark.parametrize(
    ("action", "function"),
    [
        pytest.param(Action.APPROVE, approve, id="approve"),
        pytest.param(Action.RESET, reset, id="reset"),
        pytest.param(Action.RESTORE, restore, id="restore"),
    ],
)
def test_named_functions_do_what_apply_does(action: Action, function: object) -> None:
    rule = make_rule("approved+pending+restore")
    assert callable(function)
    assert function(rule) == apply(action, rule)


@pytest.mark.parametrize("start", list(STARTS))
def test_remove_deletes_the_rule_from_any_state(start: str) -> None:
    assert apply(Action.REMOVE, make_rule(start)) is None


def test_approve_then_restore_rolls_devices_back_to_the_previous_version() -> None:
    rule = approve(make_rule("approved+pending"))
    assert rule.approved_version == PENDING
    rolled_back = restore(rule)
    assert rolled_back.approved_version == APPROVED
    assert rolled_back.restore_version is None
    # A second roll-back has only "no approved version" left to go to: only when forced.
    with pytest.raises(NeedsForce):
        restore(rolled_back)
    assert restore(rolled_back, force=True).approved_version is None
    with pytest.raises(LifecycleError):
        restore(restore(rolled_back, force=True), force=True)


@pytest.mark.parametrize(
    ("text", "action"),
    [
        pytest.param("approve", Action.APPROVE, id="approve"),
        pytest.param("reset", Action.RESET, id="reset"),
        pytest.param("restore", Action.RESTORE, id="restore"),
        pytest.param("remove", Action.REMOVE, id="remove"),
    ],
)
def test_actions_are_spelled_as_the_commands(text: str, action: Action) -> None:
    assert Action(text) is action


# -- an import offering a version -------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "version", "expected"),
    [
        pytest.param("nothing", NEW, (None, NEW, None), id="nothing-gets-pending"),
        pytest.param("pending-only", NEW, (None, NEW, None), id="pending-replaced"),
        pytest.param("approved-only", NEW, (APPROVED, NEW, None), id="approved-kept"),
        pytest.param(
            "approved+pending+restore",
            NEW,
            (APPROVED, NEW, RESTORE),
            id="approved-and-restore-kept",
        ),
        pytest.param("restore-only", NEW, (None, NEW, RESTORE), id="restore-kept"),
        pytest.param(
            "approved+restore",
            RESTORE,
            (APPROVED, RESTORE, RESTORE),
            id="restore-version-offered-again",
        ),
    ],
)
def test_with_pending_makes_the_version_pending(
    start: str, version: str, expected: tuple[str | None, str | None, str | None]
) -> None:
    after = with_pending(make_rule(start), version)
    assert after is not None
    assert versions(after) == (*expected, RuleState.PENDING)
    assert (after.id, after.key) == (7, KEY)


@pytest.mark.parametrize(
    ("start", "version"),
    [
        pytest.param("pending-only", PENDING, id="already-pending"),
        pytest.param("approved-only", APPROVED, id="already-approved"),
        pytest.param("approved+pending", PENDING, id="already-pending-with-approved"),
        pytest.param("approved+pending", APPROVED, id="approved-while-another-pending"),
        pytest.param("pending-only", "4.0.07577.4387", id="pending-leading-zero"),
        pytest.param("approved-only", "4.0.07577.4366", id="approved-leading-zero"),
        pytest.param("approved-only", " 4.0.7577.4366 ", id="approved-with-spaces"),
    ],
)
def test_with_pending_is_no_change_for_a_version_the_rule_has(start: str, version: str) -> None:
    assert with_pending(make_rule(start), version) is None


def test_rule_summary_is_what_the_event_log_records() -> None:
    assert rule_summary(make_rule("approved+pending+restore")) == {
        "approved": APPROVED,
        "pending": PENDING,
        "restore": RESTORE,
        "state": "pending",
    }
    assert rule_summary(approve(make_rule("pending-only"))) == {
        "approved": PENDING,
        "pending": None,
        "restore": None,
        "state": "approved",
    }
