"""The rollout tables: the policy's entries, the bucket salt, the offers and their outcomes,
and the admin actions' events (appliance/store/rollouts.py, offers.py,
appliance/catalogue/rollout_actions.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance import catalogue
from appliance.model import (
    AutoPause,
    DownloadWindows,
    ExternalPolicy,
    IdentifierKind,
    NetworkPolicy,
    OfferRecord,
    Outcome,
    Pin,
    PinAction,
    RolloutPolicy,
    StageHealth,
    StageSchedule,
    TimeWindow,
    UpgradeStep,
    parse_network,
)
from appliance.store import Store
from appliance.testing import CU7, CU8, CX600, FixedClock

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NIGHT = DownloadWindows("Europe/Berlin", (TimeWindow.parse("22:00-05:00"),))
STEP = UpgradeStep("UCPhone", "Polycom", "CX700", "4.0", "4.0.7577.4100")
BRANCH = NetworkPolicy(parse_network("10.20.0.0/16"), NIGHT, max_downloads=5)
HOLD = Pin(IdentifierKind.MAC, "00-04-F2-00-00-42", PinAction.HOLD, "reception", CU7)
DAILY = StageSchedule(timedelta(days=1), AutoPause(5.0, 3))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def db(clock: FixedClock, open_test_store: Callable[[FixedClock], Store]) -> Store:
    """A new store on each backend (tests/conftest.py: SQLite, then PostgreSQL)."""
    return open_test_store(clock)


def approved_rule(db: Store, pending: str = CU8, approved: str | None = CU7) -> int:
    rule = db.insert_rule(CX600, pending)
    if approved is not None:
        rule = db.save_rule(dataclasses.replace(rule, approved_version=approved))
    return rule.id


def test_an_empty_store_has_an_empty_policy_and_a_random_salt(tmp_path: Path) -> None:
    first = Store.open(tmp_path / "a.db")
    salt = first.rollout_salt()
    assert len(salt) == 32 and first.rollout_policy().empty
    assert first.rollout_policy().salt == salt
    first.close()
    again = Store.open(tmp_path / "a.db")
    assert again.rollout_salt() == salt  # written once, kept
    again.close()
    other = Store.open(tmp_path / "b.db")
    assert other.rollout_salt() != salt
    other.close()


def test_each_kind_of_entry_round_trips_into_the_policy(db: Store) -> None:
    rule_id = approved_rule(db)
    before = db.catalogue_generation()
    catalogue.set_upgrade_step(db, STEP, "alice")
    catalogue.set_network(db, BRANCH, "alice")
    catalogue.set_external(db, ExternalPolicy(NIGHT, max_bytes_per_second=10_000), "alice")
    catalogue.pin_device(db, HOLD, "alice")
    catalogue.stage_approved(db, rule_id, (5.0, 25.0, 100.0), DAILY, "alice")
    assert db.catalogue_generation() == before + 5  # each one reloads the phones' snapshot
    policy = db.rollout_policy()
    staged = policy.staged[0]
    assert policy == RolloutPolicy(
        paths=(STEP,),
        staged=(staged,),
        networks=(BRANCH,),
        external=NIGHT,
        pins=(HOLD,),
        salt=db.rollout_salt(),
        external_max_bytes_per_second=10_000,
    )
    assert (staged.rule, staged.version, staged.stage, staged.paused) == (CX600, CU7, 0, False)
    entries = db.rollout_entries()
    assert entries.paths[0].set_by == "alice" and entries.paths[0].set_at == "2026-12-01T09:00:00Z"
    assert entries.stagings[0].schedule == DAILY
    assert entries.stagings[0].entered_at == "2026-12-01T09:00:00Z"
    assert [e.action for e in db.events()][:5] == [
        "rollout.stage.set",
        "rollout.pin.set",
        "rollout.external.set",
        "rollout.network.set",
        "rollout.path.set",
    ]
    pin_event = db.events()[1]
    assert pin_event.target == "device mac 00-04-F2-00-00-42"
    assert pin_event.before is None and pin_event.after["reason"] == "reception"


def test_setting_again_replaces_and_says_what_was_there(db: Store) -> None:
    catalogue.set_network(db, BRANCH, "alice")
    wider = dataclasses.replace(BRANCH, max_downloads=10)
    replaced = catalogue.set_network(db, wider, "bob")
    assert replaced is not None and replaced.value == BRANCH
    assert [e.value for e in db.networks()] == [wider]
    event = db.events()[0]
    assert event.before["max_downloads"] == 5 and event.after["max_downloads"] == 10
    assert event.after["windows"] == ["22:00-05:00"] and event.after["time_zone"] == NIGHT.zone
    steeper = dataclasses.replace(STEP, offer="4.0.7577.4200")
    catalogue.set_upgrade_step(db, STEP, "alice")
    catalogue.set_upgrade_step(db, dataclasses.replace(steeper, model="cx700"), "alice")
    assert len(db.upgrade_steps()) == 1  # same model (any case), scope and threshold


def test_removing_entries(db: Store) -> None:
    catalogue.set_upgrade_step(db, STEP, "alice")
    catalogue.set_network(db, BRANCH, "alice")
    catalogue.set_external(db, ExternalPolicy(NIGHT), "alice")
    catalogue.pin_device(db, HOLD, "alice")
    catalogue.remove_upgrade_step(db, dataclasses.replace(STEP, offer="9.9"), "alice")
    catalogue.remove_network(db, "10.20.0.0/16", "alice")
    catalogue.clear_external(db, "alice")
    catalogue.unpin_device(db, IdentifierKind.MAC, HOLD.identifier, None, "alice")
    assert db.rollout_policy().empty
    with pytest.raises(catalogue.CatalogueError, match="no pin"):
        catalogue.unpin_device(db, IdentifierKind.MAC, HOLD.identifier, None, "alice")
    with pytest.raises(catalogue.CatalogueError, match="no rollout policy for network"):
        catalogue.remove_network(db, "10.20.0.0/16", "alice")
    with pytest.raises(catalogue.CatalogueError, match="invalid network"):
        catalogue.remove_network(db, "10.20.0.1/16", "alice")
    actions = [e.action for e in db.events()][:4]
    assert actions == [
        "rollout.pin.remove",
        "rollout.external.clear",
        "rollout.network.remove",
        "rollout.path.remove",
    ]


def test_pins_per_update_type_are_separate_entries(db: Store) -> None:
    exclude = Pin(IdentifierKind.SERIAL, "64167F0666", PinAction.EXCLUDE, "loan", None, "CPE")
    catalogue.pin_device(db, exclude, "alice")
    catalogue.pin_device(db, dataclasses.replace(exclude, update_type=None), "alice")
    assert len(db.pins()) == 2
    catalogue.unpin_device(db, IdentifierKind.SERIAL, "64167F0666", "cpe", "alice")
    assert [p.value.update_type for p in db.pins()] == [None]


def test_approve_staged_approves_and_stages_in_one_step(db: Store) -> None:
    rule_id = approved_rule(db)
    change, staging = catalogue.approve_staged(db, rule_id, (5, 25, 100), DAILY, "alice")
    assert change.after is not None and change.after.approved_version == CU8
    assert staging.approval.version == CU8 and staging.approval.share == 5
    approve, staged = db.events()[1], db.events()[0]
    assert approve.action == "approve" and approve.after["staged"] == [5, 25, 100]
    assert staged.action == "rollout.stage.set" and staged.after["version"] == CU8


def test_approve_staged_keeps_the_downgrade_guard(db: Store) -> None:
    rule_id = approved_rule(db, pending=CU7, approved=CU8)
    with pytest.raises(catalogue.DowngradeRefused):
        catalogue.approve_staged(db, rule_id, (5, 100), DAILY, "alice")
    assert db.rule(rule_id).approved_version == CU8  # type: ignore[union-attr]
    assert db.stagings() == []
    catalogue.approve_staged(db, rule_id, (5, 100), DAILY, "alice", allow_downgrade=True)
    assert db.events()[1].after["downgrade"] is True


def test_bad_stages_are_refused_and_nothing_changes(db: Store) -> None:
    rule_id = approved_rule(db)
    with pytest.raises(catalogue.CatalogueError, match="rise"):
        catalogue.approve_staged(db, rule_id, (25, 5), DAILY, "alice")
    assert db.rule(rule_id).approved_version == CU7  # type: ignore[union-attr]


def test_pause_resume_advance_and_remove(db: Store, clock: FixedClock) -> None:
    rule_id = approved_rule(db)
    catalogue.stage_approved(db, rule_id, (5, 25, 100), DAILY, "alice")
    paused = catalogue.pause_staging(db, rule_id, "looks odd", "alice")
    assert paused.approval.paused and paused.paused_why == "looks odd"
    with pytest.raises(catalogue.CatalogueError, match="resume it first"):
        catalogue.advance_staging(db, rule_id, "alice")
    clock.advance(hours=2)
    resumed = catalogue.resume_staging(db, rule_id, "alice")
    assert not resumed.approval.paused and resumed.entered_at == "2026-12-01T11:00:00Z"
    advanced = catalogue.advance_staging(db, rule_id, "alice")
    assert advanced.approval.stage == 1
    catalogue.remove_staging(db, rule_id, "alice")
    assert db.stagings() == []
    actions = [e.action for e in db.events()][:4]
    assert actions == [
        "rollout.stage.remove",
        "rollout.stage.advance",
        "rollout.stage.resume",
        "rollout.stage.pause",
    ]


def test_a_rule_removed_takes_its_staging_and_offers_with_it(db: Store) -> None:
    rule_id = approved_rule(db)
    catalogue.stage_approved(db, rule_id, (5, 100), DAILY, "alice")
    db.save_offers([offer("00-04-F2-00-00-01", rule_id)])
    db.delete_rule(rule_id)
    assert db.stagings() == [] and db.offers() == []


def test_an_offer_of_a_rule_removed_since_its_check_is_dropped_not_refused(db: Store) -> None:
    """The inventory flush saves the offers its checks made; a rule removed between a check
    and the flush must not fail the batch (put back, it failed again at every flush, and no
    sighting was recorded any more)."""
    kept = approved_rule(db)
    removed = kept + 1  # no rule has this id any more
    with db.transaction():
        db.save_offers([offer("A", removed), offer("A", kept)])
    assert [(r.identity, r.rule_id) for r in db.offers()] == [("A", kept)]


def offer(identity: str, rule_id: int, **changes: object) -> OfferRecord:
    record = OfferRecord(
        identity=identity,
        rule_id=rule_id,
        version=CU8,
        from_version=CU7,
        first_offered_at="2026-12-01T09:00:00Z",
        last_offered_at="2026-12-01T09:00:00Z",
        offers=1,
        outcome=Outcome.PENDING,
        outcome_at=None,
        last_seen_at="2026-12-01T09:00:00Z",
        reported=CU7,
        images=("cpe.nbt",),
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def test_offers_are_saved_in_a_batch_and_read_back(db: Store) -> None:
    rule_id = approved_rule(db)
    records = [
        offer("A", rule_id),
        offer("B", rule_id, outcome=Outcome.UPDATED, ran_it=True, stage=0),
        offer("C", rule_id, outcome=Outcome.REVERTED, ran_it=True),
        offer("D", rule_id, outcome=Outcome.STUCK, offers=4),
        offer("E", rule_id, version=CU7, outcome=Outcome.UPDATED),
    ]
    with db.transaction():
        db.save_offers(records)
    assert sorted(db.offers_of(["A", "B", "Z"]), key=lambda r: r.identity) == records[:2]
    assert db.offers(identity="D") == [records[3]]
    assert {r.identity for r in db.offers(rule_id=rule_id, outcome=Outcome.UPDATED)} == {"B", "E"}
    assert db.stage_health(rule_id, CU8) == StageHealth(4, updated=1, stuck=1, reverted=1)
    counts = {(c.version, c.stage, c.outcome): c.devices for c in db.offer_counts(rule_id)}
    assert counts[(CU8, None, Outcome.PENDING)] == 1 and counts[(CU8, 0, Outcome.UPDATED)] == 1
    changed = dataclasses.replace(records[0], offers=2, last_offered_at="2026-12-01T10:00:00Z")
    db.save_offers([changed])  # the same device and rule: replaced
    assert db.offers(identity="A") == [changed]


def test_quiet_offers_are_pending_ones_not_seen_since(db: Store) -> None:
    rule_id = approved_rule(db)
    db.save_offers(
        [
            offer("old", rule_id, last_seen_at="2026-11-28T09:00:00Z"),
            offer("new", rule_id, last_seen_at="2026-12-01T08:00:00Z"),
            offer("done", rule_id, outcome=Outcome.UPDATED, last_seen_at="2026-11-20T09:00:00Z"),
        ]
    )
    quiet = db.quiet_offers("2026-11-30T09:00:00Z")
    assert [r.identity for r in quiet] == ["old"]


def test_the_json_forms_are_plain(db: Store) -> None:
    import json

    catalogue.set_external(db, ExternalPolicy(None, max_downloads=3), "alice")
    entry = db.external_policy()
    assert entry is not None
    assert catalogue.entry_json(entry) == {
        "time_zone": None,
        "windows": [],
        "max_downloads": 3,
        "max_bytes_per_second": None,
        "set_by": "alice",
        "set_at": "2026-12-01T09:00:00Z",
    }
    rule_id = approved_rule(db)
    json.dumps(catalogue.offer_json(offer("A", rule_id)))
    json.dumps(catalogue.staging_json(catalogue.stage_approved(db, rule_id, (5, 100), DAILY, "a")))


def test_a_plain_approve_that_moves_back_is_skipped_unless_allowed(db: Store) -> None:
    from appliance.catalogue import Action, apply_action
    from appliance.store import RuleFilter

    rule_id = approved_rule(db, pending=CU7, approved=CU8)
    only = RuleFilter(ids=(rule_id,))
    (skipped,) = apply_action(db, Action.APPROVE, only, "alice")
    assert skipped.needs_downgrade and not skipped.downgrade
    assert skipped.skipped is not None and "would move approved" in skipped.skipped
    assert db.rule(rule_id).approved_version == CU8  # type: ignore[union-attr]
    note = {"soak_override": "urgent fix"}
    (done,) = apply_action(db, Action.APPROVE, only, "alice", allow_downgrade=True, note=note)
    assert done.downgrade and done.after is not None and done.after.approved_version == CU7
    event = db.events()[0]
    assert event.after["downgrade"] is True and event.after["soak_override"] == "urgent fix"
    assert catalogue.change_json(done)["downgrade"] is True


def test_a_plain_approve_forward_is_not_a_downgrade(db: Store) -> None:
    from appliance.catalogue import Action, apply_action
    from appliance.store import RuleFilter

    rule_id = approved_rule(db)
    (done,) = apply_action(db, Action.APPROVE, RuleFilter(ids=(rule_id,)), "alice")
    assert not done.downgrade and "downgrade" not in db.events()[0].after
