"""The drift and compliance report (appliance/catalogue/drift.py), as parameter tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from appliance.catalogue.drift import COUNT_COLUMNS, DriftCounts, DriftReport, drift_report
from appliance.model import Device, OfferRecord, Outcome, Rule
from appliance.testing import CU6, CU7, CU8, catalog_of, make_rule, rule_key, seen_device

NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
SEEN = "2026-11-26T09:00:00Z"  # yesterday
CX600 = make_rule(CU8, rule_id=1)
CX600_RESTORED = make_rule(CU7, restore=CU7, rule_id=1)  # CU8 was approved, then restored
CX600_PENDING = make_rule(None, CU8, rule_id=1)
CX700 = make_rule(CU8, rule_id=2, key=rule_key(model="CX700"))
LANGUAGE = make_rule(CU7, rule_id=3, key=rule_key("Language"))


def phone(n: int, version: str | None = CU7, **fields: Any) -> Device:
    mac = f"00-04-F2-00-00-{n:02X}"
    return seen_device(mac, version, last_seen=fields.pop("last_seen", SEEN), **fields)


def offer(n: int, outcome: Outcome, rule_id: int = 1, reported: str | None = None) -> OfferRecord:
    return OfferRecord(
        identity=f"00-04-F2-00-00-{n:02X}",
        rule_id=rule_id,
        version=CU8,
        from_version=CU7,
        first_offered_at="2026-11-20T09:00:00Z",
        last_offered_at="2026-11-25T09:00:00Z",
        offers=3,
        outcome=outcome,
        outcome_at="2026-11-25T09:00:00Z",
        last_seen_at=SEEN,
        reported=reported,
    )


def days_ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat().replace("+00:00", "Z")


# (rules, devices, offers, expected rows: (model, update type, approved, counts not zero))
CASES = [
    pytest.param(
        [CX600],
        [phone(1, CU8), phone(2, CU8)],
        [],
        [("CX600", "CPE", CU8, {"devices": 2, "current": 2})],
        id="on-the-approved-version",
    ),
    pytest.param(
        [CX600],
        [phone(1, CU7), phone(2, CU6), phone(3, CU8)],
        [],
        [("CX600", "CPE", CU8, {"devices": 3, "current": 1, "behind": 2})],
        id="behind",
    ),
    pytest.param(
        [CX600_RESTORED],
        [phone(1, CU8), phone(2, CU7)],
        [],
        [("CX600", "CPE", CU7, {"devices": 2, "current": 1, "ahead": 1})],
        id="ahead-rollback-pending",
    ),
    pytest.param(
        [CX600],
        [phone(1, "4.0.7577.04387")],
        [],
        [("CX600", "CPE", CU8, {"devices": 1, "current": 1})],
        id="versions-compare-as-numbers",
    ),
    pytest.param(
        [CX600],
        [phone(1, None), phone(2, "beta-2")],
        [],
        [("CX600", "CPE", CU8, {"devices": 2, "unknown": 2})],
        id="version-unknown-or-not-dotted",
    ),
    pytest.param(
        [CX600_PENDING],
        [phone(1, CU7)],
        [],
        [("CX600", "CPE", None, {"devices": 1, "unknown": 1})],
        id="nothing-approved-yet",
    ),
    pytest.param(
        [CX600],
        [
            phone(1, CU8, last_seen=days_ago(15)),
            phone(2, CU7, last_seen=days_ago(14)),  # exactly N days: not yet unseen
            phone(3, CU7, last_seen=days_ago(13.9)),
        ],
        [],
        [("CX600", "CPE", CU8, {"devices": 3, "current": 1, "behind": 2, "unseen": 1})],
        id="unseen-past-14-days",
    ),
    pytest.param(
        [CX600],
        [phone(1), phone(2), phone(3, CU8), phone(4), phone(5, CU8)],
        [
            offer(1, Outcome.STUCK),
            offer(2, Outcome.REVERTED, reported=CU7),
            offer(3, Outcome.SILENT, reported=CU8),
            offer(4, Outcome.PENDING),
            offer(5, Outcome.UPDATED, reported=CU8),
        ],
        [
            (
                "CX600",
                "CPE",
                CU8,
                {"devices": 5, "current": 2, "behind": 3, "stuck": 1, "reverted": 1, "silent": 1},
            )
        ],
        id="stuck-reverted-silent-from-the-offers",
    ),
    pytest.param(
        [CX600],
        [phone(1, CU7)],
        [offer(1, Outcome.UPDATED, reported=CU8)],
        [("CX600", "CPE", CU8, {"devices": 1, "current": 1})],
        id="offer-reported-version-wins",
    ),
    pytest.param(
        [CX600],
        [phone(1, CU7)],
        [offer(1, Outcome.STUCK, rule_id=9)],
        [("CX600", "CPE", CU8, {"devices": 1, "behind": 1})],
        id="another-rules-offer-ignored",
    ),
    pytest.param(
        [CX600],
        [phone(1, CU8), phone(2, CU7, model="CX3000"), phone(3, CU7, model="cx3000")],
        [],
        [
            ("CX3000", None, None, {"devices": 2, "unknown": 2}),
            ("CX600", "CPE", CU8, {"devices": 1, "current": 1}),
        ],
        id="a-model-with-no-rule",
    ),
    pytest.param(
        [CX600],
        [phone(1, CU7, model=None)],
        [],
        [("?", None, None, {"devices": 1, "unknown": 1})],
        id="inventory-lacks-a-field",
    ),
    pytest.param(
        [CX600, LANGUAGE],
        [phone(1, CU8), phone(2, CU7)],
        [offer(1, Outcome.UPDATED, reported=CU8), offer(1, Outcome.STUCK, 3, reported=CU6)],
        [
            ("CX600", "CPE", CU8, {"devices": 2, "current": 1, "unknown": 1}),
            ("CX600", "Language", CU7, {"devices": 2, "behind": 1, "stuck": 1, "unknown": 1}),
        ],
        id="several-update-types",
    ),
    pytest.param(
        [CX700, CX600],
        [phone(1, CU8), phone(2, CU7, model="CX700"), phone(3, CU8, locale="deu")],
        [],
        [
            ("CX600", None, None, {"devices": 1, "unknown": 1}),  # no DEU rule
            ("CX600", "CPE", CU8, {"devices": 1, "current": 1}),
            ("CX700", "CPE", CU8, {"devices": 1, "behind": 1}),
        ],
        id="per-model-and-locale",
    ),
    pytest.param([CX600], [], [], [], id="no-devices-no-rows"),
]


@pytest.mark.parametrize(("rules", "devices", "offers", "expected"), CASES)
def test_drift_report(
    rules: list[Rule],
    devices: list[Device],
    offers: list[OfferRecord],
    expected: list[tuple[str, str | None, str | None, dict[str, int]]],
) -> None:
    report = drift_report(devices, catalog_of(*rules), offers, NOW, unseen_days=14)
    got = [(r.model, r.update_type, r.approved_version, _nonzero(r.counts)) for r in report.rows]
    assert got == expected
    for row in report.rows:
        c = row.counts
        assert c.current + c.behind + c.ahead + c.unknown == c.devices
    assert report.totals.devices == sum(r.counts.devices for r in report.rows)


def _nonzero(counts: DriftCounts) -> dict[str, int]:
    return {k: v for k, v in counts.as_json().items() if v}


def test_rows_name_model_revision_locale() -> None:
    devices = [phone(1, CU8), phone(2, CU8, locale="DEU")]
    report = drift_report(devices, catalog_of(CX600), [], NOW)
    assert [(r.revision, r.locale, r.rule_id) for r in report.rows] == [
        ("A", "DEU", None),
        ("A", "ENU", 1),
    ]


def test_per_model_totals_and_json() -> None:
    devices = [phone(1, CU8), phone(2, CU7), phone(3, CU7, model="CX700")]
    report = drift_report(devices, catalog_of(CX600, LANGUAGE, CX700), [], NOW)
    totals = report.per_model()
    assert [(t.brand, t.model, t.approved, t.counts.devices) for t in totals] == [
        ("Polycom", "CX600", (CU7, CU8), 4),  # two devices, two update types each
        ("Polycom", "CX700", (CU8,), 1),
    ]
    body = report.as_json()
    assert body["at"] == "2026-11-27T06:00:00Z"
    assert body["unseen_days"] == 14
    rows: Any = body["rows"]
    assert set(rows[0]) == {
        "device_type",
        "brand",
        "model",
        "revision",
        "locale",
        "update_type",
        "rule_id",
        "approved_version",
        *COUNT_COLUMNS,
    }


def test_unseen_days_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        drift_report([], catalog_of(), [], NOW, unseen_days=0)


def test_empty_report() -> None:
    report = drift_report([], catalog_of(), [], NOW)
    assert report == DriftReport(NOW, 14, ())
    assert report.totals == DriftCounts()
    assert report.per_model() == []
