"""Success confirmed by the next check: what became of an offer (docs/rollouts.md).

The phone service remembers what it offered each device per rule (`OfferRecord`, stored
in batches by the inventory flush). At the device's next check its reported version for
that rule (read by the offered version's image names, as the decision reads it) says:

- *updated*: it runs the offered version, or a newer one;
- *reverted*: it runs an older one after having been seen running the offered one;
- *stuck*: it still runs an older one after `stuck_offers` offers or `stuck_hours` since
  the first;
- *pending*: none of these yet (and again after *silent*, when it checks in once more).

*Silent* is given by a timer, not by a check: a device offered a version that has not
checked in for `silent_hours` (its check interval and some slack). A device that reports
no version for the rule tells nothing: only its last-seen time moves.

Pure functions of records and times, besides `sweep_silent`, which the timer calls.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from datetime import datetime, timedelta

from appliance.catalogue.decision import Offer, reported_version
from appliance.config import RolloutSettings
from appliance.identifiers import is_version, same_version, version_tuple
from appliance.model import DeviceRequest, OfferRecord, Outcome
from appliance.store import Store, iso_utc


@functools.lru_cache(maxsize=4096)  # a fleet reports few distinct versions
def _order(a: str, b: str) -> int | None:
    """-1, 0, 1 as version a is older, the same, newer than b (as `same_version` and
    `version_tuple` compare); None when they do not order (not both dotted numbers)."""
    x, y = a.strip(), b.strip()
    if is_version(x) and is_version(y):
        tx, ty = version_tuple(x), version_tuple(y)
        return (tx > ty) - (tx < ty)
    return 0 if x.casefold() == y.casefold() else None


def reported_for(record: OfferRecord, request: DeviceRequest) -> str | None:
    """What the device reports for the record's update (None: it does not say)."""
    return reported_version(request, frozenset(record.images))


# Outcomes a check reporting the same version as the last one cannot change.
_SETTLED = frozenset({Outcome.UPDATED, Outcome.REVERTED, Outcome.STUCK})


def confirm(
    record: OfferRecord,
    reported: str | None,
    now: datetime,
    settings: RolloutSettings,
) -> OfferRecord:
    """The record after a check of its device reporting `reported` for its rule; the same
    record (`is`) when the check changes nothing worth writing: a settled outcome (updated,
    reverted, stuck) and the same report as before. `last_seen_at` follows the checks
    while the outcome may still move (pending, silent)."""
    settled = record.outcome in _SETTLED
    if settled and (reported is None or reported == record.reported):
        return record
    stamp = iso_utc(now)
    if reported is None:
        return dataclasses.replace(record, last_seen_at=stamp)
    ran, outcome = record.ran_it, record.outcome
    order = _order(reported, record.version)
    if order is not None and order >= 0:
        outcome, ran = Outcome.UPDATED, True
    elif order is not None and record.ran_it:
        outcome = Outcome.REVERTED
    else:
        first = datetime.fromisoformat(record.first_offered_at)
        late = now - first >= timedelta(hours=settings.stuck_hours)
        stuck = record.offers >= settings.stuck_offers or late
        outcome = Outcome.STUCK if stuck else Outcome.PENDING
    return dataclasses.replace(
        record,
        outcome=outcome,
        outcome_at=stamp if outcome is not record.outcome else record.outcome_at,
        ran_it=ran,
        reported=reported,
        last_seen_at=stamp,
    )


def offered(
    record: OfferRecord | None,
    identity: str,
    offer: Offer,
    stage: int | None,
    now: datetime,
) -> OfferRecord:
    """The record after `offer` was made to the device (after `confirm` of the same check):
    the same version counts one more offer; another starts a new record."""
    stamp = iso_utc(now)
    if record is not None and same_version(record.version, offer.version):
        return dataclasses.replace(record, offers=record.offers + 1, last_offered_at=stamp)
    images = tuple(sorted({f.file_name.strip().casefold() for f in offer.files}))
    return OfferRecord(
        identity=identity,
        rule_id=offer.rule.id,
        version=offer.version,
        from_version=offer.reported,
        first_offered_at=stamp,
        last_offered_at=stamp,
        offers=1,
        outcome=Outcome.PENDING,
        outcome_at=None,
        last_seen_at=stamp,
        reported=offer.reported,
        stage=stage,
        images=images,
    )


def check_outcomes(
    records: Sequence[OfferRecord],
    request: DeviceRequest,
    offers: Sequence[Offer],
    identity: str,
    stage_of: dict[tuple[int, str], int],
    now: datetime,
    settings: RolloutSettings,
) -> list[OfferRecord]:
    """A device's records after one check that changed: each confirmed by what it
    reports, then each offer of the check recorded (`stage_of`: (rule id, version) -> the
    staged approval's current stage). Records the check left as they were are not
    returned (nothing to write)."""
    changed: dict[int, OfferRecord] = {}
    for record in records:
        after = confirm(record, reported_for(record, request), now, settings)
        if after is not record:
            changed[record.rule_id] = after
    if offers:
        known = {r.rule_id: r for r in records}
        for offer in offers:
            rule_id = offer.rule.id
            current = changed.get(rule_id, known.get(rule_id))
            stage = stage_of.get((rule_id, offer.version))
            changed[rule_id] = offered(current, identity, offer, stage, now)
    return list(changed.values())


def sweep_silent(store: Store, now: datetime, settings: RolloutSettings) -> list[OfferRecord]:
    """Mark silent the pending offers whose device has not checked in for `silent_hours`;
    returns them (a bounded batch a call)."""
    cutoff = iso_utc(now - timedelta(hours=settings.silent_hours))
    stamp = iso_utc(now)
    with store.transaction():
        quiet = [
            dataclasses.replace(r, outcome=Outcome.SILENT, outcome_at=stamp)
            for r in store.quiet_offers(cutoff)
        ]
        store.save_offers(quiet)
    return quiet
