"""Rollouts in the running appliance, in process: the phones' answers under a stored policy,
the offers confirmed by the next check at the inventory flush, the silent sweep and the
stage timer (appliance/phones/answers.py, confirmations.py,
appliance/catalogue/rollout_confirm.py, rollout_actions.tick_stagings)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance import catalogue
from appliance.catalogue import Reason, RolloutReason, StageMove
from appliance.catalogue.rollout_confirm import confirm
from appliance.config import Config, RolloutSettings, load_config
from appliance.model import (
    AutoPause,
    DownloadWindows,
    IdentifierKind,
    NetworkPolicy,
    OfferRecord,
    Outcome,
    Pin,
    PinAction,
    StageSchedule,
    TimeWindow,
    UpgradeStep,
    parse_network,
)
from appliance.phones.answers import Answers
from appliance.phones.codec import BaseUrls
from appliance.phones.records import Records
from appliance.store import Store, iso_utc
from appliance.testing import CU6, CU7, CU8, CX600, FixedClock, add_rule, add_update, device_request

URLS = BaseUrls.of("ucupdates.example.com", 443, "ucupdates-ext.example.com", 4443)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 13:00 in Berlin
MAC = "00-04-F2-00-00-01"
SETTINGS = RolloutSettings()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Config, Store, FixedClock]]:
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    clock = FixedClock(T0)
    store = Store.open(config.db_path, clock=clock)
    yield config, store, clock
    store.close()


def approved(store: Store) -> int:
    with store.transaction():
        return add_rule(store, CX600, approved=CU8, restore=CU7).id


def test_answers_read_the_stored_policy_and_reload_when_it_changes(
    setup: tuple[Config, Store, FixedClock],
) -> None:
    _, store, clock = setup
    approved(store)
    answers = Answers(store, URLS, now=clock)
    phone = device_request(mac=MAC, version=CU7, address="10.20.1.5")
    assert answers.answer(phone)[0].reason is Reason.APPROVED
    night = DownloadWindows("Europe/Berlin", (TimeWindow.parse("22:00-05:00"),))
    catalogue.set_network(store, NetworkPolicy(parse_network("10.20.0.0/16"), night), "alice")
    decision, body = answers.answer(phone)
    assert decision.reason is RolloutReason.OUTSIDE_WINDOW and b"<Downloads>0</Downloads>" in body
    elsewhere = dataclasses.replace(phone, address="10.30.1.5")
    assert answers.answer(elsewhere)[0].reason is Reason.APPROVED
    clock.set(T0 + timedelta(hours=9))  # 22:00 in Berlin: the window opens
    assert answers.answer(phone)[0].reason is Reason.APPROVED
    pin = Pin(IdentifierKind.MAC, MAC, PinAction.EXCLUDE, "loan phone")
    catalogue.pin_device(store, pin, "alice")
    assert answers.answer(phone)[0].reason is RolloutReason.EXCLUDED
    catalogue.unpin_device(store, IdentifierKind.MAC, MAC, None, "alice")
    catalogue.remove_network(store, "10.20.0.0/16", "alice")
    assert answers.policy().empty
    assert answers.answer(phone)[0].reason is Reason.APPROVED


def test_a_staged_approval_holds_devices_outside_the_stage_on_the_previous_version(
    setup: tuple[Config, Store, FixedClock],
) -> None:
    _, store, clock = setup
    rule_id = approved(store)
    catalogue.stage_approved(store, rule_id, (0.0, 100.0), StageSchedule(), "alice")
    answers = Answers(store, URLS, now=clock)
    decision, _ = answers.answer(device_request(mac=MAC, version=CU6))
    assert decision.reason is RolloutReason.NOT_IN_STAGE
    assert [o.version for o in decision.offers] == [CU7]
    catalogue.advance_staging(store, rule_id, "alice")
    assert [o.version for o in answers.answer(device_request(mac=MAC, version=CU6))[0].offers] == [
        CU8
    ]


def test_an_upgrade_steps_files_are_served_and_kept_by_clean_files(
    setup: tuple[Config, Store, FixedClock],
) -> None:
    config, store, clock = setup
    approved(store)
    with store.transaction():
        add_update(store, CX600, CU6)  # no rule references it
    step_image = (CX600.store_dir(CU6) / "CPE.nbt").as_posix()
    answers = Answers(store, URLS, now=clock)
    assert answers.referenced_file(step_image) is None
    catalogue.set_upgrade_step(
        store, UpgradeStep("UCPhone", "Polycom", "CX600", "4.0.7577.4000", CU6), "a"
    )
    assert answers.referenced_file(step_image) is not None
    decision, _ = answers.answer(device_request(mac=MAC, version="4.0.7577.1"))
    assert decision.reason is RolloutReason.UPGRADE_PATH
    assert [o.version for o in decision.offers] == [CU6]
    lock = config.data_dir / "lock"
    cleaned = catalogue.clean_files(store, config.store_dir, lock, "a")
    assert cleaned.updates == ()  # the step's version is kept


def check(records: Records, answers: Answers, version: str, mac: str = MAC) -> None:
    phone = device_request(mac=mac, version=version)
    decision, _ = answers.answer(phone)
    records.record_check(phone, decision, "10.1.1.1")


def test_the_next_check_confirms_an_offer_at_the_flush(
    setup: tuple[Config, Store, FixedClock],
) -> None:
    config, store, clock = setup
    rule_id = approved(store)
    answers = Answers(store, URLS, now=clock)
    records = Records(config, store, clock)
    check(records, answers, CU7)
    assert store.offers() == []  # nothing written on the check's path
    records.flush_inventory()
    (first,) = store.offers()
    assert (first.rule_id, first.version, first.from_version) == (rule_id, CU8, CU7)
    assert (first.outcome, first.offers, first.images) == (Outcome.PENDING, 1, ("cpe.nbt",))
    clock.advance(minutes=10)
    check(records, answers, CU8)  # it took it and restarted
    records.flush_inventory()
    (after,) = store.offers()
    assert (after.outcome, after.ran_it, after.outcome_at) == (
        Outcome.UPDATED,
        True,
        "2026-12-01T12:10:00Z",
    )
    clock.advance(minutes=10)
    check(records, answers, CU7)  # back on the old one: offered again
    records.flush_inventory()
    (back,) = store.offers()
    assert (back.outcome, back.offers) == (Outcome.REVERTED, 2)


def test_a_device_offered_again_and_again_is_stuck(
    setup: tuple[Config, Store, FixedClock],
) -> None:
    config, store, clock = setup
    approved(store)
    answers = Answers(store, URLS, now=clock)
    records = Records(config, store, clock)
    outcomes = []
    for _ in range(SETTINGS.stuck_offers + 1):
        check(records, answers, CU7)
        records.flush_inventory()
        outcomes.append(store.offers()[0].outcome)
        clock.advance(hours=1)
    assert outcomes == [Outcome.PENDING] * SETTINGS.stuck_offers + [Outcome.STUCK]


def record(**changes: object) -> OfferRecord:
    base = OfferRecord(
        identity=MAC,
        rule_id=1,
        version=CU8,
        from_version=CU7,
        first_offered_at=iso_utc(T0),
        last_offered_at=iso_utc(T0),
        offers=1,
        outcome=Outcome.PENDING,
        outcome_at=None,
        last_seen_at=iso_utc(T0),
        images=("cpe.nbt",),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


HOUR = timedelta(hours=1)
CONFIRMS = [
    # (record, reported, at, outcome, ran it after)
    pytest.param(record(), CU8, T0 + HOUR, Outcome.UPDATED, True, id="runs-it"),
    pytest.param(record(), "4.0.7577.4400", T0 + HOUR, Outcome.UPDATED, True, id="runs-newer"),
    pytest.param(record(), "4.0.07577.4387", T0 + HOUR, Outcome.UPDATED, True, id="same-spelled"),
    pytest.param(record(), CU7, T0 + HOUR, Outcome.PENDING, False, id="not-yet"),
    pytest.param(record(offers=3), CU7, T0 + HOUR, Outcome.STUCK, False, id="after-3-offers"),
    pytest.param(record(), CU7, T0 + 48 * HOUR, Outcome.STUCK, False, id="after-48-hours"),
    pytest.param(record(), CU7, T0 + 47 * HOUR, Outcome.PENDING, False, id="before-48-hours"),
    pytest.param(
        record(ran_it=True, outcome=Outcome.UPDATED), CU7, T0, Outcome.REVERTED, True, id="back"
    ),
    pytest.param(
        record(ran_it=True, outcome=Outcome.REVERTED), CU8, T0, Outcome.UPDATED, True, id="again"
    ),
    pytest.param(record(outcome=Outcome.SILENT), CU7, T0, Outcome.PENDING, False, id="heard"),
    pytest.param(record(outcome=Outcome.SILENT), None, T0, Outcome.SILENT, False, id="unknown"),
    pytest.param(record(), "junk", T0 + HOUR, Outcome.PENDING, False, id="unordered"),
]


@pytest.mark.parametrize(("before", "reported", "at", "outcome", "ran"), CONFIRMS)
def test_confirm(
    before: OfferRecord, reported: str | None, at: datetime, outcome: Outcome, ran: bool
) -> None:
    after = confirm(before, reported, at, SETTINGS)
    assert (after.outcome, after.ran_it, after.last_seen_at) == (outcome, ran, iso_utc(at))
    changed = outcome is not before.outcome
    assert after.outcome_at == (iso_utc(at) if changed else before.outcome_at)


def test_devices_offered_a_version_and_then_quiet_go_silent(
    setup: tuple[Config, Store, FixedClock],
) -> None:
    _, store, _ = setup
    rule_id = approved(store)
    quiet = record(rule_id=rule_id)
    updated = record(rule_id=rule_id, identity="other", outcome=Outcome.UPDATED)
    store.save_offers([quiet, updated])
    assert catalogue.sweep_silent(store, T0 + 25 * HOUR, SETTINGS) == []
    (silent,) = catalogue.sweep_silent(store, T0 + 27 * HOUR, SETTINGS)
    assert (silent.identity, silent.outcome) == (MAC, Outcome.SILENT)
    assert store.stage_health(rule_id, CU8).silent == 1


def test_the_stage_timer_advances_on_schedule_and_pauses_on_failures(
    setup: tuple[Config, Store, FixedClock],
) -> None:
    _, store, clock = setup
    rule_id = approved(store)
    schedule = StageSchedule(timedelta(days=1), AutoPause(5.0, 3))
    catalogue.stage_approved(store, rule_id, (5, 25, 100), schedule, "alice")
    assert catalogue.tick_stagings(store, T0 + 23 * HOUR) == []
    ((staging, move, why),) = catalogue.tick_stagings(store, T0 + 24 * HOUR)
    assert (move, staging.approval.stage, staging.entered_at) == (
        StageMove.ADVANCE,
        1,
        iso_utc(T0 + 24 * HOUR),
    )
    event = store.events()[0]
    assert (event.action, event.actor, event.after["stage"]) == (
        "rollout.stage.advance",
        "ucupdates",
        1,
    )
    failing = [
        record(rule_id=rule_id, identity=f"d{n}", outcome=Outcome.REVERTED) for n in range(3)
    ]
    fine = [record(rule_id=rule_id, identity=f"e{n}", outcome=Outcome.UPDATED) for n in range(20)]
    store.save_offers(failing + fine)
    ((staging, move, why),) = catalogue.tick_stagings(store, T0 + 25 * HOUR)
    assert move is StageMove.PAUSE and staging.approval.paused
    assert staging.paused_why == why and "3 reverted" in why
    assert store.events()[0].action == "rollout.stage.pause"
    assert catalogue.tick_stagings(store, T0 + 72 * HOUR) == []  # paused: stays


def test_a_staging_of_a_replaced_approval_is_left_alone(
    setup: tuple[Config, Store, FixedClock],
) -> None:
    _, store, _ = setup
    rule_id = approved(store)
    catalogue.stage_approved(store, rule_id, (5, 100), StageSchedule(timedelta(hours=1)), "a")
    rule = store.rule(rule_id)
    assert rule is not None
    with store.transaction():
        store.save_rule(dataclasses.replace(rule, approved_version=CU7))
    assert catalogue.tick_stagings(store, T0 + 48 * HOUR) == []


@pytest.mark.parametrize("outcome", [Outcome.UPDATED, Outcome.REVERTED, Outcome.STUCK])
@pytest.mark.parametrize("reported", [CU7, None])
def test_a_settled_record_and_the_same_report_change_nothing(
    outcome: Outcome, reported: str | None
) -> None:
    before = record(outcome=outcome, reported=CU7, ran_it=True)
    assert confirm(before, reported, T0 + 72 * HOUR, SETTINGS) is before


def test_checks_within_one_flush_are_confirmed_in_order(
    setup: tuple[Config, Store, FixedClock],
) -> None:
    config, store, clock = setup
    approved(store)
    answers = Answers(store, URLS, now=clock)
    records = Records(config, store, clock)
    check(records, answers, CU7)  # offered CU8
    check(records, answers, CU8)  # took it and restarted, within the same second
    records.flush_inventory()
    (taken,) = store.offers()
    assert (taken.outcome, taken.ran_it, taken.offers) == (Outcome.UPDATED, True, 1)
    for version in (CU7, CU8, CU7):  # offered, took it, went back: all in one flush
        check(records, answers, version, mac="00-04-F2-00-00-02")
    records.flush_inventory()
    (back,) = store.offers(identity="00-04-F2-00-00-02")
    assert (back.outcome, back.offers) == (Outcome.REVERTED, 2)
