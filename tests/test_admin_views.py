"""The Control Panel's pure parts: the impact preview, the inventory's rows, filters and
CSV, the audit-file readers and the SVG charts. No reactor, no store."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import pytest

from appliance.admin import charts, inventory
from appliance.admin.impact import preview
from appliance.catalogue.lifecycle import Action
from appliance.model import Catalog, Device, Rule
from appliance.testing import catalog_of, make_rule, seen_device

OLD, NEW, NEWER = "4.0.1", "4.0.2", "4.0.3"


def device(mac: str, version: str | None, model: str = "CX600") -> Device:
    """Seen in this order: the last two digits of the MAC are the second of its last check."""
    return seen_device(mac, version, model=model, last_seen=f"2026-01-02T00:00:{mac[-2:]}Z")


FLEET = [
    device("00-00-00-00-00-01", OLD),
    device("00-00-00-00-00-02", OLD),
    device("00-00-00-00-00-03", NEW),
    device("00-00-00-00-00-04", OLD, "CX500"),
]


@pytest.mark.parametrize(
    ("action", "the_rule", "test_macs", "before", "after", "changed", "up_to_date"),
    [
        # approving NEW: the two on OLD get NEW, the one on NEW is up to date
        (Action.APPROVE, make_rule(None, NEW), (), [], [(NEW, 2)], 2, 1),
        # approving NEWER over approved NEW: everyone is offered NEWER
        (Action.APPROVE, make_rule(NEW, NEWER), (), [(NEW, 2)], [(NEWER, 3)], 3, 0),
        # restoring to OLD rolls back the one on NEW; those on OLD stop being offered NEW
        (Action.RESTORE, make_rule(NEW, None, OLD), (), [(NEW, 2)], [(OLD, 1)], 3, 2),
        # resetting only changes what the test device gets (the one on NEW is rolled back
        # to the approved OLD either way)
        (
            Action.RESET,
            make_rule(OLD, NEW),
            ("00-00-00-00-00-01",),
            [(OLD, 1), (NEW, 1)],
            [(OLD, 1)],
            1,
            2,
        ),
        # removing: nothing is offered any more
        (Action.REMOVE, make_rule(NEW), (), [(NEW, 2)], [], 2, 0),
    ],
)
def test_preview(
    action: Action,
    the_rule: Rule,
    test_macs: tuple[str, ...],
    before: list[tuple[str, int]],
    after: list[tuple[str, int]],
    changed: int,
    up_to_date: int,
) -> None:
    catalog = catalog_of(the_rule, test_macs=test_macs)
    impact = preview(action, [the_rule], catalog, FLEET)
    assert impact.devices == 3  # the CX500 has no rule here
    assert [(o.version, o.devices) for o in impact.before] == before
    assert [(o.version, o.devices) for o in impact.after] == after
    assert impact.changed == changed
    assert impact.up_to_date_after == up_to_date


def test_preview_of_an_action_that_does_not_apply() -> None:
    the_rule = make_rule(NEW)
    impact = preview(Action.APPROVE, [the_rule], catalog_of(the_rule), FLEET)
    assert impact.rule_ids == () and impact.skipped == ((1, "has no pending version to approve"),)
    assert impact.summary() == "Approve applies to none of the selected rules."


# The FLEET's three CX600s: two run OLD, one runs NEW (the CX500 has no rule here).
@pytest.mark.parametrize(
    ("action", "the_rule", "test_macs", "force", "summary"),
    [
        pytest.param(
            Action.APPROVE,
            make_rule(None, NEW),
            (),
            False,
            f"2 phones will be offered {NEW} at their next check; 1 phone already runs {NEW}.",
            id="approve",
        ),
        pytest.param(
            Action.APPROVE,
            make_rule(OLD, NEW),
            ("00-00-00-00-00-01", "00-00-00-00-00-03"),
            False,
            f"2 phones (1 of them a test device) will be offered {NEW} at their next check; "
            f"1 test device already runs {NEW}.",
            id="approve-with-test-devices",
        ),
        pytest.param(
            Action.RESTORE,
            make_rule(NEW, None, OLD),
            (),
            False,
            f"1 phone will be offered {OLD} at its next check; 2 phones already run {OLD}.",
            id="restore",
        ),
        pytest.param(
            Action.RESTORE,
            make_rule(NEW),
            (),
            True,
            "3 phones will be offered no update and keep the firmware they run.",
            id="restore-forced-to-nothing",
        ),
        pytest.param(
            Action.RESTORE,
            make_rule(NEW),
            (),
            False,
            "Restore applies to none of the selected rules.",
            id="restore-that-needs-force",
        ),
    ],
)
def test_the_preview_says_it_in_a_sentence(
    action: Action, the_rule: Rule, test_macs: tuple[str, ...], force: bool, summary: str
) -> None:
    impact = preview(action, [the_rule], catalog_of(the_rule, test_macs=test_macs), FLEET, force)
    assert impact.summary() == summary


@pytest.mark.parametrize(
    ("action", "the_rule", "line"),
    [
        (Action.APPROVE, make_rule(OLD, NEW), f"Polycom CX600 ENU: {OLD} → {NEW}"),
        (Action.APPROVE, make_rule(None, NEW), f"Polycom CX600 ENU: no version → {NEW}"),
        (Action.RESTORE, make_rule(NEW, None, OLD), f"Polycom CX600 ENU: {NEW} → {OLD}"),
        (
            Action.RESET,
            make_rule(OLD, NEW),
            f"Polycom CX600 ENU: pending {NEW} rejected; {OLD} stays approved",
        ),
        (
            Action.REMOVE,
            make_rule(OLD, NEW),
            f"Polycom CX600 ENU: rule removed (approved {OLD}, pending {NEW})",
        ),
    ],
)
def test_the_preview_names_each_rule_with_its_versions(
    action: Action, the_rule: Rule, line: str
) -> None:
    impact = preview(action, [the_rule], catalog_of(the_rule), FLEET)
    assert [(r.rule_id, r.text) for r in impact.lines] == [(the_rule.id, line)]


def test_a_restore_that_needs_force_is_named_as_such() -> None:
    the_rule = make_rule(NEW)
    plain = preview(Action.RESTORE, [the_rule], catalog_of(the_rule), FLEET)
    assert plain.rule_ids == () and plain.needs_force == (the_rule.id,)
    forced = preview(Action.RESTORE, [the_rule], catalog_of(the_rule), FLEET, force=True)
    assert forced.rule_ids == (the_rule.id,) and forced.needs_force == (the_rule.id,)
    assert [r.text for r in forced.lines] == [f"Polycom CX600 ENU: {NEW} → no version"]


def test_rows_status_filters_and_csv() -> None:
    catalog = catalog_of(make_rule(NEW))
    rows = inventory.device_rows([*FLEET, device("00-00-00-00-00-05", None)], catalog)
    status = {r.mac: r.status.value for r in rows}
    assert status == {
        "00-00-00-00-00-01": "outdated",
        "00-00-00-00-00-02": "outdated",
        "00-00-00-00-00-03": "current",
        "00-00-00-00-00-04": "no-rule",
        "00-00-00-00-00-05": "unknown",
    }
    assert rows[0].mac == "00-00-00-00-00-05"  # the most recently seen first
    outdated = [r for r in rows if inventory.DeviceFilter(status="outdated").matches(r)]
    assert {r.offered_version for r in outdated} == {NEW}
    assert [r.mac for r in rows if inventory.DeviceFilter(model="cx500").matches(r)] == [
        "00-00-00-00-00-04"
    ]
    table = list(csv.reader(io.StringIO(inventory.csv_bytes(rows).decode())))
    assert table[0] == list(inventory.CSV_COLUMNS) and len(table) == 6


def test_versions_per_model_orders_versions_numerically() -> None:
    rows = inventory.device_rows(
        [device("00-00-00-00-00-01", "4.0.10"), device("00-00-00-00-00-02", "4.0.9")], Catalog()
    )
    (model,) = inventory.versions_per_model(rows)
    assert model.model == "Polycom CX600"
    assert model.versions == (("4.0.9", 1), ("4.0.10", 1))


def test_audit_readers(tmp_path: Path) -> None:
    audit = tmp_path / "Audit"
    audit.mkdir()
    line = "2026-03-0{d} 10:00:0{s};10.0.0.{s};UCPhone;00-00-00-00-00-0{s};;Polycom;CX600;A;ENU;"
    tail = "CPE.nbt;4.0.1;t;CPE.nbt;CPE.cat;4.0.2;t;"
    (audit / "RequestHandlerAuditLog_srv_20260301.log").write_text(
        "".join(line.format(d=1, s=s) + tail + "\n" for s in range(3))
    )
    (audit / "RequestHandlerAuditLog_srv_20260302.log").write_text(
        line.format(d=2, s=9) + tail + "\n"
    )
    days = inventory.checkins_per_day(tmp_path, date(2026, 3, 2), days=3)
    assert days == [(date(2026, 2, 28), 0), (date(2026, 3, 1), 3), (date(2026, 3, 2), 1)]
    events = inventory.recent_device_events(tmp_path, limit=2)
    assert [e.at for e in events] == ["2026-03-02T10:00:09Z", "2026-03-01T10:00:02Z"]
    assert events[0].reported == "4.0.1" and events[0].offered == "4.0.2"
    assert inventory.recent_device_events(tmp_path / "nowhere") == []


def test_charts_are_accessible_svg() -> None:
    rows = inventory.device_rows(FLEET, Catalog())
    svg = charts.versions_chart(inventory.versions_per_model(rows))
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.get("role") == "img"
    assert root.find(f"{ns}title").text == "Versions per model"  # type: ignore[union-attr]
    assert "Polycom CX600: 2 on 4.0.1, 1 on 4.0.2" in root.find(f"{ns}desc").text  # type: ignore[union-attr]
    assert len(root.findall(f"{ns}rect")) == 3 + 2  # three bars, two legend swatches
    days = [(date(2026, 3, d), d * 3) for d in range(1, 15)]
    checkins = ET.fromstring(charts.checkins_chart(days))
    bars = [r for r in checkins.findall(f"{ns}rect")]
    assert len(bars) == 14
    assert bars[-1].find(f"{ns}title").text == "2026-03-14: 42 check(s)"  # type: ignore[union-attr]
    empty = ET.fromstring(charts.versions_chart([]))
    assert "No device has checked in yet." in "".join(empty.itertext())
    hostile = inventory.device_rows([device("00-00-00-00-00-01", "<script>")], Catalog())
    assert "<script>" not in charts.versions_chart(inventory.versions_per_model(hostile))
