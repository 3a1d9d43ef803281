"""Success confirmed by the next check, written with the inventory (docs/rollouts.md).

Each check's offers wait, with the device's request, in the inventory buffer; the flush
(once a second, one transaction) reads the records of the devices it writes, confirms
them by what each device now reports and records its new offers
(`catalogue.check_outcomes`), and then logs each change of outcome as
`rollout.device.updated|stuck|reverted|silent`. Nothing here runs on a check's path.
Devices known only by their address are not followed: an address is not a device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from twisted.logger import Logger

from appliance.catalogue import Offer, StageMove, check_outcomes, sweep_silent, tick_stagings
from appliance.config import RolloutSettings
from appliance.model import DeviceRequest, OfferRecord, Outcome
from appliance.store import PrimaryUnavailable, Store

log = Logger(namespace="ucupdates.rollout")

Check = tuple[str, DeviceRequest, Sequence[Offer], datetime]  # identity, request, offers, at


def record_outcomes(
    store: Store, checks: Iterable[Check], settings: RolloutSettings
) -> list[tuple[OfferRecord | None, OfferRecord]]:
    """Confirm and record the checks' offers, each device's checks in order (the caller
    holds the transaction); returns (before, after) of each change of a record: new, or
    another version or outcome."""
    followed = [c for c in checks if not c[0].startswith("ip:")]
    if not followed:
        return []
    state: dict[str, dict[int, OfferRecord]] = {}
    for record in store.offers_of(sorted({c[0] for c in followed})):
        state.setdefault(record.identity, {})[record.rule_id] = record
    offering = any(c[2] for c in followed)
    if not state and not offering:
        return []
    stagings = store.stagings() if offering else []
    stage_of = {(s.rule_id, s.approval.version): s.approval.stage for s in stagings}
    changed: list[tuple[OfferRecord | None, OfferRecord]] = []
    written: dict[tuple[str, int], OfferRecord] = {}
    for identity, request, offers, at in followed:
        mine = state.setdefault(identity, {})
        if not mine and not offers:
            continue
        after = check_outcomes(
            list(mine.values()), request, offers, identity, stage_of, at, settings
        )
        for record in after:
            old = mine.get(record.rule_id)
            if old is None or old.outcome is not record.outcome or old.version != record.version:
                changed.append((old, record))
            mine[record.rule_id] = written[identity, record.rule_id] = record
    store.save_offers(written.values())
    return changed


def log_outcomes(changes: Iterable[tuple[OfferRecord | None, OfferRecord]]) -> None:
    """`rollout.device.<outcome>` for each record that reached an outcome other than pending."""
    for before, after in changes:
        if after.outcome is Outcome.PENDING:
            continue
        if (
            before is not None
            and before.outcome is after.outcome
            and before.version == after.version
        ):
            continue
        log.info(
            "rollout: device {identity} {outcome} on {version} of rule {rule_id}"
            " (reports {reported}, offered {offers} times since {first_offered_at})",
            identity=after.identity,
            outcome=after.outcome.value,
            version=after.version,
            rule_id=after.rule_id,
            reported=after.reported,
            offers=after.offers,
            first_offered_at=after.first_offered_at,
            previous=None if before is None else before.outcome.value,
            event=f"rollout.device.{after.outcome.value}",
        )


def rollout_tick(store: Store, now: datetime, settings: RolloutSettings) -> None:
    """What the service's rollout timer does every `rollouts.timer_seconds`: mark silent
    devices (`rollout.device.silent`), then let each staged approval advance on schedule
    or pause on its failures (`rollout.stage.advance`, `rollout.stage.pause`: in the event
    log too, actor `ucupdates`)."""
    try:
        silent = sweep_silent(store, now, settings)
        log_outcomes((None, r) for r in silent)
        moves = tick_stagings(store, now)
    except PrimaryUnavailable:  # a branch node's primary away: pool.primary.unreachable
        return  # says so once; the next tick tries again
    except Exception:
        log.failure("the rollout timer failed")
        return
    for staging, move, why in moves:
        approval = staging.approval
        paused = move is StageMove.PAUSE
        text = "paused itself at" if paused else "advanced to"
        (log.warn if paused else log.info)(
            "rollout: the staged approval of {version} on rule {rule_id} "
            + text
            + " stage {stage} ({share} %): {why}",
            version=approval.version,
            rule_id=staging.rule_id,
            rule=str(approval.rule),
            stage=approval.stage,
            share=approval.share,
            why=why,
            event=f"rollout.stage.{move.value}",
        )
