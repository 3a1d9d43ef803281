"""The drift report over the API and on the Compliance page, in process: the admin
listener's real site over treq's memory transport, every /api/ answer checked against
`appliance/admin/openapi.json`; and `ucupdates drift` in process, locally and through
`--server` (its client pointed at the same site)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from browser.api import BASE, PASSWORD, Browser
from treq.testing import StubTreq

from appliance.admin import add_account, make_admin_site
from appliance.cli.drift import remote_drift
from appliance.cli.main import build_parser
from appliance.config import load_config
from appliance.model import OfferRecord, Outcome
from appliance.store import Store
from appliance.testing import FixedClock, InlineReactor, memory_client
from appliance.testing.records import CU6, CU7, CU8, CX600, rule_key, seen_device
from appliance.testing.stores import add_rule

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
RECENT = "2026-11-27T09:00:00Z"


@dataclass
class Site:
    store: Store
    stub: StubTreq
    data_dir: Path

    def viewer(self) -> Browser:
        return Browser(self.stub).login("victor")


def offer(mac: str, rule_id: int, outcome: Outcome, reported: str) -> OfferRecord:
    return OfferRecord(mac, rule_id, CU8, CU7, RECENT, RECENT, 3, outcome, RECENT, RECENT, reported)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    clock = FixedClock(NOW)
    store = Store.open(config.db_path, clock=clock)
    rule = add_rule(store, CX600, approved=CU8, restore=CU7)
    add_rule(store, rule_key(model="CX700"), approved=CU8, restore=CU6)
    for n, version in enumerate((CU8, CU7, CU7, CU6), start=1):
        store.record_device(seen_device(f"00-04-F2-00-00-0{n}", version, last_seen=RECENT))
    store.record_device(seen_device("00-04-F2-00-00-09", CU8, model="CX700"))  # long unseen
    store.record_device(seen_device("00-04-F2-00-00-0A", CU7, model="=HYPERLINK(1)"))
    with store.transaction():
        store.save_offers([offer("00-04-F2-00-00-02", rule.id, Outcome.STUCK, CU7)])
    add_account(store, "victor", "viewer", PASSWORD, "test")
    stub = memory_client(lambda _: make_admin_site(config, store, clock, InlineReactor()))
    yield Site(store, stub, config.data_dir)
    store.close()


def test_a_viewer_reads_the_report_as_json(site: Site) -> None:
    reply = site.viewer().request("GET", "/api/reports/drift")
    assert reply.status == 200
    body = reply.json()
    assert (body["at"], body["unseen_days"]) == ("2026-11-27T12:00:00Z", 14)
    rows = {(r["model"], r["update_type"]): r for r in body["rows"]}
    cx600 = rows[("CX600", "CPE")]
    assert (cx600["approved_version"], cx600["devices"], cx600["current"]) == (CU8, 4, 1)
    assert (cx600["behind"], cx600["stuck"], cx600["unseen"]) == (3, 1, 0)
    assert rows[("CX700", "CPE")]["unseen"] == 1
    assert rows[("=HYPERLINK(1)", None)]["rule_id"] is None
    assert body["totals"]["devices"] == 6


def test_unseen_days_is_a_parameter(site: Site) -> None:
    viewer = site.viewer()
    body = viewer.request("GET", "/api/reports/drift?unseen_days=3650").json()
    assert (body["unseen_days"], body["totals"]["unseen"]) == (3650, 0)
    for bad in ("0", "x", "3651", "-1"):
        reply = viewer.request("GET", f"/api/reports/drift?unseen_days={bad}")
        assert reply.status == 400
        assert "unseen_days" in reply.json()["error"]


def test_the_csv_opens_in_a_spreadsheet(site: Site) -> None:
    reply = site.viewer().request("GET", "/api/reports/drift.csv?unseen_days=30")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert reply.headers["Content-Disposition"] == (
        'attachment; filename="ucupdates-drift-20261127-120000.csv"'
    )
    assert b"\r\n" in reply.body
    rows = list(csv.DictReader(io.StringIO(reply.body.decode("utf-8"))))
    assert list(rows[0])[:8] == [
        "device_type",
        "brand",
        "model",
        "revision",
        "locale",
        "update_type",
        "rule_id",
        "approved_version",
    ]
    by_model = {r["model"]: r for r in rows}
    assert by_model["CX600"]["behind"] == "3" and by_model["CX600"]["stuck"] == "1"
    assert by_model["'=HYPERLINK(1)"]["update_type"] == ""  # no formula from a phone


def test_without_a_session_the_report_is_refused(site: Site) -> None:
    for path in ("/api/reports/drift", "/api/reports/drift.csv"):
        assert Browser(site.stub).request("GET", path).status == 401


def test_the_compliance_page_shows_the_table_and_the_csv_link(site: Site) -> None:
    viewer = site.viewer()
    reply = viewer.request("GET", "/compliance")
    assert reply.status == 200, reply.body
    page = reply.body.decode()
    assert "<h1>Compliance</h1>" in page
    assert '<table id="drift" class="data">' in page
    assert 'href="/api/reports/drift.csv"' in page
    assert '<a href="/compliance" aria-current="page">Compliance</a>' in page
    assert "=HYPERLINK(1)" in page and "<em>no rule</em>" in page
    assert "<script>" not in page


class _Remote:
    """What cli.remote's RemoteClient does, over the in-process site as a viewer."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser

    def request(self, method: str, path: str) -> Any:
        reply = self.browser.request(method, path)
        assert reply.status == 200, reply.body
        if reply.headers["Content-Type"].startswith("application/json"):
            return reply.json()
        return reply.body


def test_the_drift_command_through_the_api(site: Site) -> None:
    remote = _Remote(site.viewer())
    args = build_parser().parse_args(["--server", BASE, "drift", "--unseen-days", "30"])
    out = io.StringIO()
    assert remote_drift(remote, args, out) == 0
    assert "Polycom CX600" in out.getvalue() and "unseen for 30 days" in out.getvalue()
    args = build_parser().parse_args(["--server", BASE, "drift", "--csv"])
    out = io.StringIO()
    assert remote_drift(remote, args, out) == 0
    assert out.getvalue().startswith("device_type,brand,model,")
    args = build_parser().parse_args(["--server", BASE, "drift", "--json"])
    out = io.StringIO()
    assert remote_drift(remote, args, out) == 0
    assert json.loads(out.getvalue())["unseen_days"] == 14
