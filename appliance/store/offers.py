"""What was offered each device for each rule, and what became of it (`OfferRecord`).

Written in batches by the inventory flush (never on a check's path) and read by the stage
timer, the silent sweep and the reports. Writing them is not a catalogue change: the
phone service does not reload for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from appliance.model import OfferCount, OfferRecord, Outcome, StageHealth
from appliance.store.connection import Connection

_OFFER_COLUMNS = (
    "identity, rule_id, version, from_version, first_offered_at, last_offered_at, offers,"
    " outcome, outcome_at, last_seen_at, reported, ran_it, stage, images"
)
_CHUNK = 400  # identities per IN (...) list


class OfferTables(Connection):
    """The offers' records and their outcomes."""

    def save_offers(self, records: Iterable[OfferRecord]) -> None:
        """Insert or replace each device's record for its rule (the flush's batch; the
        caller holds the transaction). A record of a rule removed since its check is
        dropped: the offer went with the rule, and the batch must not fail on it (it would
        be put back and fail again at every flush)."""
        self._conn.executemany(
            f"INSERT INTO rollout_offers ({_OFFER_COLUMNS})"
            " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
            " WHERE EXISTS (SELECT 1 FROM rules WHERE id = ?)"
            " ON CONFLICT (identity, rule_id) DO UPDATE SET version = excluded.version,"
            " from_version = excluded.from_version,"
            " first_offered_at = excluded.first_offered_at,"
            " last_offered_at = excluded.last_offered_at, offers = excluded.offers,"
            " outcome = excluded.outcome, outcome_at = excluded.outcome_at,"
            " last_seen_at = excluded.last_seen_at, reported = excluded.reported,"
            " ran_it = excluded.ran_it, stage = excluded.stage, images = excluded.images",
            [(*_offer_row(r), r.rule_id) for r in records],
        )

    def offers_of(self, identities: Sequence[str]) -> list[OfferRecord]:
        """The records of these devices (every rule)."""
        found: list[OfferRecord] = []
        for start in range(0, len(identities), _CHUNK):
            chunk = identities[start : start + _CHUNK]
            rows = self._conn.execute(
                f"SELECT {_OFFER_COLUMNS} FROM rollout_offers"
                f" WHERE identity IN ({', '.join('?' * len(chunk))})",
                tuple(chunk),
            )
            found.extend(_offer(r) for r in rows)
        return found

    def offers(
        self,
        rule_id: int | None = None,
        identity: str | None = None,
        outcome: Outcome | None = None,
        version: str | None = None,
        limit: int | None = None,
    ) -> list[OfferRecord]:
        """Records by rule, device, outcome and version (each optional), newest offer first."""
        where, args = _where(rule_id=rule_id, identity=identity, outcome=outcome, version=version)
        sql = f"SELECT {_OFFER_COLUMNS} FROM rollout_offers{where} ORDER BY last_offered_at DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_offer(r) for r in self._conn.execute(sql, args)]

    def offer_counts(self, rule_id: int | None = None) -> list[OfferCount]:
        """Devices per rule, version, stage and outcome."""
        where, args = _where(rule_id=rule_id)
        rows = self._conn.execute(
            "SELECT rule_id, version, stage, outcome, count(*) FROM rollout_offers"
            f"{where} GROUP BY rule_id, version, stage, outcome"
            " ORDER BY rule_id, version, stage, outcome",
            args,
        )
        return [OfferCount(r[0], r[1], r[2], Outcome(r[3]), r[4]) for r in rows]

    def stage_health(self, rule_id: int, version: str) -> StageHealth:
        """The devices offered `version` of the rule (every stage so far: a stage holds the
        earlier ones' devices), by outcome: what `tick_stage` reads."""
        counts = {o: 0 for o in Outcome}
        rows = self._conn.execute(
            "SELECT outcome, count(*) FROM rollout_offers WHERE rule_id = ? AND version = ?"
            " GROUP BY outcome",
            (rule_id, version),
        )
        for outcome, n in rows:
            counts[Outcome(outcome)] = n
        return StageHealth(
            offered=sum(counts.values()),
            updated=counts[Outcome.UPDATED],
            stuck=counts[Outcome.STUCK],
            reverted=counts[Outcome.REVERTED],
            silent=counts[Outcome.SILENT],
        )

    def quiet_offers(self, seen_before: str, limit: int = 1000) -> list[OfferRecord]:
        """Pending records of devices not seen since `seen_before` (the silent sweep)."""
        rows = self._conn.execute(
            f"SELECT {_OFFER_COLUMNS} FROM rollout_offers WHERE outcome = ?"
            " AND last_seen_at < ? ORDER BY last_seen_at LIMIT ?",
            (Outcome.PENDING.value, seen_before, limit),
        )
        return [_offer(r) for r in rows]


def _offer_row(r: OfferRecord) -> tuple[Any, ...]:
    return (
        r.identity,
        r.rule_id,
        r.version,
        r.from_version,
        r.first_offered_at,
        r.last_offered_at,
        r.offers,
        r.outcome.value,
        r.outcome_at,
        r.last_seen_at,
        r.reported,
        int(r.ran_it),
        r.stage,
        " ".join(r.images),
    )


def _offer(r: Sequence[Any]) -> OfferRecord:
    return OfferRecord(
        identity=r[0],
        rule_id=r[1],
        version=r[2],
        from_version=r[3],
        first_offered_at=r[4],
        last_offered_at=r[5],
        offers=r[6],
        outcome=Outcome(r[7]),
        outcome_at=r[8],
        last_seen_at=r[9],
        reported=r[10],
        ran_it=bool(r[11]),
        stage=r[12],
        images=tuple(r[13].split()),
    )


def _where(**filters: Any) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for column, value in filters.items():
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value.value if isinstance(value, Outcome) else value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
