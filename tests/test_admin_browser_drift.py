"""The Compliance page in a real headless Chromium, driven by Selenium (the fixtures and
verbs of test_admin_browser.py): a viewer follows the main navigation to it, reads the
drift table (a row per model, revision, locale and update type, a totals row) and gets
the CSV its link names. Screenshot in `test-artifacts/admin-drift/`. And `ucupdates
--server URL drift` against the same Control Panel process, over HTTPS."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from browser import chromium
from browser.page import Page
from browser.panel import REPO, Panel, simulate_check
from test_admin_browser import PASSWORD, browser

from appliance.admin.accounts import add_account
from appliance.cli.main import build_parser
from appliance.cli.remote import run_remote
from appliance.config import load_config
from appliance.store.database import Store
from appliance.testing.records import CX600
from appliance.testing.stores import add_rule

needs_chromium = pytest.mark.skipif(
    chromium.available() is not None, reason=str(chromium.available())
)

__all__ = ["browser"]  # test_admin_browser's fixture, with this module's panel

ARTIFACTS = REPO / "test-artifacts" / "admin-drift"
VIEWER = "victor"
OLD, NEW = "4.0.7577.4366", "4.0.7577.4387"


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    """A Control Panel with CX600 ENU's NEW approved, three CX600s and a CX3000 seen."""
    data_dir = tmp_path_factory.mktemp("browser-drift") / "data"
    data_dir.mkdir()
    store = Store.open(load_config(None, data_dir).db_path)
    add_account(store, VIEWER, "viewer", PASSWORD, "test")
    add_rule(store, CX600, approved=NEW, restore=OLD)
    store.close()
    for n, version in enumerate((NEW, OLD, OLD), start=1):
        simulate_check(data_dir, f"00-04-F2-00-00-3{n}", version=version)
    simulate_check(data_dir, "00-04-F2-00-00-39", model="CX3000", version=OLD)
    running = Panel(data_dir, "--fqdn", "localhost")
    yield running
    running.stop()


@needs_chromium
def test_a_viewer_reads_the_compliance_page(browser: Any, panel: Panel) -> None:
    from selenium.webdriver.common.keys import Keys

    page = Page(browser, panel, ARTIFACTS)
    page.open("/login?next=%2Fdevices")
    page.find("#login-name").send_keys(VIEWER)
    page.find("#login-password").send_keys(PASSWORD, Keys.ENTER)
    page.until(lambda: browser.current_url.endswith("/devices"), "the Devices page")
    page.find('nav a[href="/compliance"]').click()
    page.until(lambda: browser.current_url.endswith("/compliance"), "the Compliance page")
    assert page.text("h1") == "Compliance"
    assert page.find('nav a[aria-current="page"]').text == "Compliance"

    rows = page.rows("#drift")
    assert len(rows) == 2
    assert rows[0].split()[:5] == ["Polycom", "CX3000", "A", "ENU", "no"]  # no rule
    assert rows[1].split()[:6] == ["Polycom", "CX600", "A", "ENU", "CPE", NEW]
    cells = [c.text for c in page.all("#drift tbody tr:nth-child(2) td")]
    assert cells[4:8] == ["3", "1", "2", "0"]  # devices, current, behind, ahead
    assert page.text("#drift tfoot").startswith("All rows 4 1 2 0 1")  # and unknown: 1
    headers = [h.text for h in page.all("#drift thead th")]
    assert headers[:6] == ["Model", "Rev.", "Locale", "Type", "Approved", "Devices"]
    assert "Drift and compliance at" in page.text("#drift caption")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "compliance.png"))

    link = page.find("#drift-csv")
    assert link.get_attribute("download") is not None
    href = link.get_attribute("href")
    assert href == panel.url + "/api/reports/drift.csv"
    text = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text()).then(done, e => done(String(e)));",
        href,
    )
    table = list(csv.DictReader(io.StringIO(text)))
    assert [(r["model"], r["update_type"], r["devices"]) for r in table] == [
        ("CX3000", "", "1"),
        ("CX600", "CPE", "3"),
    ]


def remote(panel: Panel, *argv: str) -> tuple[int, str]:
    url = f"https://localhost:{panel.port}"
    args = build_parser().parse_args(["--server", url, "--server-ca", str(panel.ca_file), *argv])
    out = io.StringIO()
    return run_remote(args, VIEWER, PASSWORD, out=out), out.getvalue()


def test_drift_with_server(panel: Panel) -> None:
    status, out = remote(panel, "drift")
    assert status == 0
    assert out.splitlines()[2].split()[:9] == [
        "Polycom",
        "CX600",
        "A",
        "ENU",
        "CPE",
        NEW,
        "3",
        "1",
        "2",
    ]
    status, out = remote(panel, "drift", "--json", "--unseen-days", "30")
    assert status == 0 and json.loads(out)["unseen_days"] == 30
    status, out = remote(panel, "drift", "--csv")
    assert status == 0
    assert [r["model"] for r in csv.DictReader(io.StringIO(out))] == ["CX3000", "CX600"]
