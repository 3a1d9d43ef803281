"""Drift and compliance (pure): per model, revision, locale and update type, the approved
version and how many devices run it, are behind or ahead of it, are stuck, reverted or
silent on what they were offered, or have not been seen for N days.

One row per rule that matches at least one device of the inventory (a device matches one
rule per update type), and one row, without an approved version, per model, revision and
locale of devices no rule matches. Within a row, every device is counted once in
`current`, `behind`, `ahead` or `unknown`, by the version it runs against the approved
one; `stuck`, `reverted` and `silent` count the outcome of its latest offer for the rule
(docs/rollouts.md, success confirmed by the next check) and `unseen` its last check,
so those overlap the first four.

The version a device runs for a rule: what it reported for the rule at its last check,
when it was ever offered something for it (the offer record keeps that per rule);
otherwise the inventory's one version, when the device matches a single rule; otherwise
it is not known (a device with several update types reports a version per module, and
the inventory keeps one).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta

from appliance.catalogue.decision import matching_rules
from appliance.identifiers import is_version, same_version, version_tuple
from appliance.model import Catalog, Device, DeviceRequest, OfferRecord, Outcome, Rule

DEFAULT_UNSEEN_DAYS = 14
NO_VALUE = "?"  # a device field the inventory does not know


@dataclass(frozen=True)
class DriftCounts:
    """Devices by where they stand; `current + behind + ahead + unknown == devices`."""

    devices: int = 0
    current: int = 0  # run the approved version
    behind: int = 0  # run an older version than the approved one
    ahead: int = 0  # run a newer one (a restore: the rollback is still to come)
    unknown: int = 0  # version not reported, not dotted numbers, or nothing approved
    stuck: int = 0  # their latest offer: still on the old version after N offers or T hours
    reverted: int = 0  # went back below what they were offered
    silent: int = 0  # took an offer, then stopped checking in
    unseen: int = 0  # no check for the last N days

    def __add__(self, other: DriftCounts) -> DriftCounts:
        return DriftCounts(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(DriftCounts))
        )

    def as_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(DriftCounts)}


COUNT_COLUMNS = tuple(f.name for f in fields(DriftCounts))


@dataclass(frozen=True)
class DriftRow:
    """One model, revision, locale and update type (None: no rule matches these devices)."""

    device_type: str
    brand: str
    model: str
    revision: str
    locale: str
    update_type: str | None
    rule_id: int | None
    approved_version: str | None
    counts: DriftCounts

    def as_json(self) -> dict[str, object]:
        head = {f.name: getattr(self, f.name) for f in fields(DriftRow) if f.name != "counts"}
        return head | self.counts.as_json()


@dataclass(frozen=True)
class ModelTotal:
    """The rows of one brand and model added up (the daily summary's unit)."""

    brand: str
    model: str
    approved: tuple[str, ...]  # the approved versions of its rows, oldest first
    counts: DriftCounts


@dataclass(frozen=True)
class DriftReport:
    at: datetime
    unseen_days: int
    rows: tuple[DriftRow, ...]

    @property
    def totals(self) -> DriftCounts:
        return sum((r.counts for r in self.rows), DriftCounts())

    def per_model(self) -> list[ModelTotal]:
        found: dict[tuple[str, str], list[DriftRow]] = {}
        for row in self.rows:
            found.setdefault((row.brand.casefold(), row.model.casefold()), []).append(row)
        totals = []
        for rows in found.values():
            versions = {r.approved_version for r in rows if r.approved_version}
            totals.append(
                ModelTotal(
                    rows[0].brand,
                    rows[0].model,
                    tuple(sorted(versions, key=_version_order)),
                    sum((r.counts for r in rows), DriftCounts()),
                )
            )
        return sorted(totals, key=lambda t: (t.brand.casefold(), t.model.casefold()))

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "unseen_days": self.unseen_days,
            "rows": [r.as_json() for r in self.rows],
            "totals": self.totals.as_json(),
        }


def drift_report(
    devices: Iterable[Device],
    catalog: Catalog,
    offers: Iterable[OfferRecord],
    now: datetime,
    unseen_days: int = DEFAULT_UNSEEN_DAYS,
) -> DriftReport:
    """The report at `now` (UTC) over the inventory, the catalogue and the offer records."""
    if unseen_days < 1:
        raise ValueError(f"unseen days must be at least 1, not {unseen_days}")
    latest: dict[tuple[str, int], OfferRecord] = {}
    for offer in offers:
        pair = (offer.identity, offer.rule_id)
        if pair not in latest or offer.last_offered_at > latest[pair].last_offered_at:
            latest[pair] = offer
    cutoff = now - timedelta(days=unseen_days)
    rules_of: dict[tuple[str | None, ...], tuple[Rule, ...]] = {}
    places: dict[tuple[str | None, str | None], int] = {}  # few versions: each compared once
    groups: dict[tuple[object, ...], tuple[DriftRow, list[int]]] = {}
    for device in devices:
        unseen = int(_seen_at(device.last_seen) < cutoff)
        raw = (device.device_type, device.brand, device.model, device.revision, device.locale)
        if raw not in rules_of:  # a fleet has few models: each is matched once
            request = _request(device)
            rules_of[raw] = matching_rules(request, catalog) if request is not None else ()
        rules = rules_of[raw]
        if not rules:
            key: tuple[object, ...] = (None, *(v.casefold() for v in _fields(device)))
            tally = groups.setdefault(key, (_no_rule_row(device), [0] * len(COUNT_COLUMNS)))[1]
            tally[_DEVICES] += 1
            tally[_UNKNOWN] += 1
            tally[_UNSEEN] += unseen
            continue
        for rule in rules:
            last = latest.get((device.identity, rule.id))
            if last is not None and last.reported is not None:
                runs: str | None = last.reported
            else:
                runs = device.version if len(rules) == 1 else None
            versions = (runs, rule.approved_version)
            if versions not in places:
                places[versions] = COUNT_COLUMNS.index(_place(*versions))
            tally = groups.setdefault((rule.id,), (_rule_row(rule), [0] * len(COUNT_COLUMNS)))[1]
            tally[_DEVICES] += 1
            tally[places[versions]] += 1
            tally[_UNSEEN] += unseen
            if last is not None and last.outcome in _OUTCOME_COLUMN:
                tally[_OUTCOME_COLUMN[last.outcome]] += 1
    rows = [replace(row, counts=DriftCounts(*tally)) for row, tally in groups.values()]
    rows.sort(key=_row_order)
    return DriftReport(now, unseen_days, tuple(rows))


_DEVICES = COUNT_COLUMNS.index("devices")
_UNKNOWN = COUNT_COLUMNS.index("unknown")
_UNSEEN = COUNT_COLUMNS.index("unseen")
_OUTCOME_COLUMN = {
    o: COUNT_COLUMNS.index(o.value) for o in (Outcome.STUCK, Outcome.REVERTED, Outcome.SILENT)
}


def _place(runs: str | None, approved: str | None) -> str:
    """Where a device running `runs` stands against `approved`: its version column."""
    if approved is None or runs is None:
        return "unknown"
    if same_version(runs, approved):
        return "current"
    if is_version(runs.strip()) and is_version(approved.strip()):
        older = version_tuple(runs.strip()) < version_tuple(approved.strip())
        return "behind" if older else "ahead"
    return "unknown"


def _request(device: Device) -> DeviceRequest | None:
    """The device's fields as a request, to find its rules (None: the inventory lacks one)."""
    values = (device.device_type, device.brand, device.model, device.revision, device.locale)
    if any(v is None for v in values):
        return None
    device_type, brand, model, revision, locale = (str(v) for v in values)
    return DeviceRequest(device_type, brand, model, revision, locale)


def _fields(device: Device) -> tuple[str, ...]:
    values = (device.device_type, device.brand, device.model, device.revision, device.locale)
    return tuple(NO_VALUE if v is None else v.strip() for v in values)


def _no_rule_row(device: Device) -> DriftRow:
    device_type, brand, model, revision, locale = _fields(device)
    return DriftRow(device_type, brand, model, revision, locale, None, None, None, DriftCounts())


def _rule_row(rule: Rule) -> DriftRow:
    k = rule.key
    return DriftRow(
        k.device_type,
        k.brand,
        k.model,
        k.revision,
        k.locale,
        k.update_type,
        rule.id,
        rule.approved_version,
        DriftCounts(),
    )


def _row_order(row: DriftRow) -> tuple[object, ...]:
    text = (row.device_type, row.brand, row.model, row.revision, row.locale)
    return (*(t.casefold() for t in text), row.update_type is None, row.update_type or "")


def _version_order(version: str) -> tuple[int, tuple[int, ...], str]:
    return (0, version_tuple(version), version) if is_version(version) else (1, (), version)


def _seen_at(stamp: str) -> datetime:
    """A stored time (`2026-01-02T00:00:00Z`) as an aware datetime."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


CSV_COLUMNS = (
    "device_type",
    "brand",
    "model",
    "revision",
    "locale",
    "update_type",
    "rule_id",
    "approved_version",
    *COUNT_COLUMNS,
)


def drift_csv(report: DriftReport) -> str:
    """The rows as CSV with a header row (CRLF line ends, as spreadsheets expect)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        values = row.as_json()
        writer.writerow([_cell(values[c]) for c in CSV_COLUMNS])
    return out.getvalue()


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet must not run what a phone sent as a formula (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
