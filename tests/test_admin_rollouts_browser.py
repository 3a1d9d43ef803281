"""The Control Panel's rollout pages in a real headless Chromium, driven by Selenium.

One admin session: approve a rule in stages from the Updates page, follow it on the
Rollouts page (health counts from the offers' outcomes, what the devices are answered),
pause it with a reason, resume, advance and stop it, each through its confirmation; see
the rule's confirmation counts on the Updates page; approve a downgrade only after ticking
the box that says so, refused by a soak gate until its override is given; pin a device,
list a network with a night window and give the external zone a policy, add an upgrade
step, and remove each again; see on the Devices page what a phone was offered and what
became of it, and its details (explain and its offers).
Screenshots go to `test-artifacts/admin-rollouts/`; those the admin guide shows are
copied to docs/img by hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import chromium
from browser.page import Page
from browser.panel import REPO, Panel, simulate_check

from appliance.admin.accounts import add_account
from appliance.catalogue import Action, apply_action, import_package
from appliance.catalogue.sample import make_sample_package
from appliance.config import load_config
from appliance.model import OfferRecord, Outcome
from appliance.store import RuleFilter
from appliance.store.database import Store

pytestmark = pytest.mark.skipif(chromium.available() is not None, reason=str(chromium.available()))

ARTIFACTS = REPO / "test-artifacts" / "admin-rollouts"
USER, PASSWORD = "alice", "correct horse battery"
OLD, NEW = "4.0.7577.4366", "4.0.7577.4387"
# CX600 ENU phones: (MAC, the version each runs, what the next check made of the offer)
PHONES = [
    ("00-04-F2-00-06-01", OLD, Outcome.UPDATED),
    ("00-04-F2-00-06-02", OLD, Outcome.UPDATED),
    ("00-04-F2-00-06-03", "4.0.7577.4300", Outcome.REVERTED),
    ("00-04-F2-00-06-04", "4.0.7577.4300", None),
]


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    """Rules from the sample package at OLD; CX500's was approved at NEW first, so
    approving its pending OLD would be a downgrade."""
    tmp = tmp_path_factory.mktemp("rollouts-browser")
    data_dir = tmp / "data"
    data_dir.mkdir()
    config = load_config(None, data_dir)
    store = Store.open(config.db_path)
    add_account(store, USER, "admin", PASSWORD, "test")
    for version in (NEW, OLD):
        make_sample_package(tmp / f"{version}.cab", version=version, image_size=2048)
        import_package(store, config, tmp / f"{version}.cab", "test")
        if version == NEW:
            apply_action(store, Action.APPROVE, RuleFilter(model="CX500"), "test")
    store.close()
    running = Panel(data_dir)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(panel: Panel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    downloads = tmp_path_factory.mktemp("downloads")
    driver: Any = chromium.start(panel.cert_file, panel.fqdn, profile, downloads)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _offers(data_dir: Path, rule_id: int) -> None:
    """The phones checked in; the next check confirmed (or not) what they were offered."""
    for mac, version, _ in PHONES:
        simulate_check(data_dir, mac, version=version)
    store = Store.open(load_config(None, data_dir).db_path)
    at = "2026-12-06T08:00:00Z"
    try:
        with store.transaction():
            store.save_offers(
                OfferRecord(mac, rule_id, OLD, "4.0.7577.4300", at, at, 1, outcome, at, at, stage=0)
                for mac, _, outcome in PHONES
                if outcome is not None
            )
    finally:
        store.close()


def _in_stage(data_dir: Path, share: float) -> int:
    """How many of PHONES a stage of `share` % holds: their bucket (SHA-256 of the store's
    salt and the MAC, mod 10000) is below it."""
    store = Store.open(load_config(None, data_dir).db_path)
    try:
        salt = store.rollout_salt()
    finally:
        store.close()
    places = (
        int.from_bytes(hashlib.sha256(f"{salt}\nmac:{mac}".encode()).digest()[:8], "big") % 10000
        for mac, _, _ in PHONES
    )
    return sum(1 for p in places if p < share * 100)


def _confirm(page: Page, title: str) -> None:
    page.until(page.dialog_open, "the dialog")
    page.until(lambda: page.text("#confirm-title") == title, title)


def _closed(page: Page) -> None:
    page.until(lambda: not page.dialog_open(), "the dialog closed")


def test_rollout_pages(browser: Any, panel: Panel) -> None:
    from selenium.webdriver.common.keys import Keys

    page = Page(browser, panel, ARTIFACTS)
    page.open("/rollouts")
    page.find("#login-name").send_keys(USER)
    page.find("#login-password").send_keys(PASSWORD, Keys.ENTER)
    page.until(lambda: browser.current_url.endswith("/rollouts"), "the Rollouts page")
    page.until(lambda: "No staged approval" in page.text("#rollouts tbody"), "none yet")
    assert page.find("nav[aria-label=Main] a[href='/rollouts']").get_attribute("aria-current")

    # -- approve CX600 ENU in stages from the Updates page ------------------------------------
    page.find("nav a[href='/updates']").click()
    page.choose("#f-model", "CX600")
    page.choose("#f-locale", "ENU")
    page.until(lambda: len(page.rows("#rules")) == 1, "one CX600 ENU rule")
    rule_id = int(page.find("#rules tbody tr").get_attribute("data-rule"))
    page.find("#rules tbody input[type=checkbox]").click()
    page.find("[data-action=approve]").click()
    _confirm(page, "Approve 1 rule?")
    assert page.find("#confirm-how").is_displayed()
    assert not page.find("#confirm-downgrade-box").is_displayed()
    page.find("input[name=how][value=staged]").click()
    page.type("#confirm-stages", "5, 25, 20")  # not rising to 100
    page.until(lambda: not page.find("#confirm-ok").is_enabled(), "bad stages refused")
    assert page.find("#confirm-stages").get_attribute("aria-invalid") == "true"
    page.type("#confirm-stages", "5, 25, 100")
    page.until(lambda: page.find("#confirm-ok").is_enabled(), "the stages accepted")
    page.shot("approve-staged")
    page.find("#confirm-ok").click()
    page.until(lambda: "approved in stages (5 → 25 → 100 %)" in page.text("#toast"), "staged")

    # -- the Rollouts page: stage, health, what the devices are answered -----------------------
    _offers(panel.data_dir, rule_id)
    page.find("nav a[href='/rollouts']").click()
    row = f"#rollouts tr[data-rule='{rule_id}']"
    page.until(lambda: "running" in page.text(row), "the staged approval listed")
    assert page.text(f"{row} td:nth-child(3) strong") == "5 %"
    cells = [c.text for c in page.all(f"{row} td")]
    assert cells[1] == f"– → {OLD}"
    assert cells[3].startswith(f"{_in_stage(panel.data_dir, 5)} of 4 ("), cells[3]
    # what the four known CX600 ENU phones are answered now, by reason
    answered = cells[3].split("answered now: ", 1)[1].rstrip(")")
    assert sum(int(part.split()[0]) for part in answered.split(", ")) == 4, answered
    assert cells[4:8] == ["2", "0", "1", "0"]  # updated, stuck, reverted, silent
    assert "failing" in page.find(f"{row} td:nth-child(7)").get_attribute("class")
    counts = page.rows("#confirmations")
    assert any(f"{OLD} stage 1 0 2 0 1 0" in r for r in counts), counts

    # -- pause: the reason is required, Enter confirms -------------------------------------------
    page.find(f"{row} button[aria-label^='Pause']").click()
    _confirm(page, f"Pause rule {rule_id} UCPhone/Polycom/CX600/A/ENU/CPE?")
    assert "No device will be newly offered" in page.text("#confirm-impact")
    assert browser.switch_to.active_element.get_attribute("id") == "confirm-reason"
    assert not page.find("#confirm-ok").is_enabled()
    page.find("#confirm-reason").send_keys("one phone reverted: looking at it")
    page.until(lambda: page.find("#confirm-ok").is_enabled(), "the reason given")
    page.shot("pause-confirm")
    page.find("#confirm-reason").send_keys(Keys.ENTER)
    _closed(page)
    page.until(lambda: "paused one phone reverted" in page.text(row), "paused, with why")
    assert not page.find(f"{row} button[aria-label^='Advance']").is_enabled()
    page.shot("rollouts-paused")

    # -- resume, then advance ------------------------------------------------------------------
    page.find(f"{row} button[aria-label^='Resume']").click()
    _confirm(page, f"Resume rule {rule_id} UCPhone/Polycom/CX600/A/ENU/CPE?")
    assert "one phone reverted: looking at it" in page.text("#confirm-details")
    page.find("#confirm-ok").click()
    page.until(lambda: "running" in page.text(row), "running again")
    page.find(f"{row} button[aria-label^='Advance']").click()
    _confirm(page, f"Advance rule {rule_id} UCPhone/Polycom/CX600/A/ENU/CPE to 25 %?")
    assert "1 failing: look at them first." in page.text("#confirm-details")
    page.find("#confirm-ok").click()
    page.until(lambda: page.text(f"{row} td:nth-child(3) strong") == "25 %", "at 25 %")

    # -- stop staging: every device gets the version ----------------------------------------------
    page.find(f"{row} button[aria-label^='Stop staging']").click()
    _confirm(page, f"Stop staging rule {rule_id} UCPhone/Polycom/CX600/A/ENU/CPE?")
    assert "Every device of the rule will be offered" in page.text("#confirm-impact")
    page.find("#confirm-ok").click()
    page.until(lambda: "No staged approval" in page.text("#rollouts tbody"), "staging removed")

    # -- a downgrade needs its box ticked; a soak gate, met or overridden ------------------------
    page.find("nav a[href='/updates']").click()
    confirmed = f"#rules tr[data-rule='{rule_id}'] td:nth-child(13)"  # the approved version's
    page.until(lambda: page.text(confirmed) == "2 updated, 1 reverted", "confirmation counts")
    page.choose("#f-model", "CX500")
    page.until(lambda: len(page.rows("#rules")) == 1, "the CX500 rule")
    page.find("#rules tbody input[type=checkbox]").click()

    def downgrade(override: str) -> None:
        page.find("[data-action=approve]").click()
        page.until(page.dialog_open, "the dialog")
        page.until(lambda: page.find("#confirm-downgrade-box").is_displayed(), "the box")
        assert "Allow the downgrade" in page.text("#confirm-downgrade-box")
        assert f"would move approved {NEW} back to {OLD}" in page.text("#confirm-details")
        assert not page.find("#confirm-ok").is_enabled()
        assert page.text("#confirm-title") == "Approve 1 downgrade?"
        page.find("#confirm-downgrade").click()
        page.until(lambda: page.find("#confirm-ok").is_enabled(), "allowed")
        page.until(lambda: page.text("#confirm-title") == "Approve 1 rule?", "worked out again")
        page.find("#confirm-gate summary").click()
        page.type("#confirm-gate-devices", "1")
        page.type("#confirm-gate-hours", "24")
        if override:
            page.type("#confirm-gate-override", override)
        page.shot("approve-downgrade")
        page.find("#confirm-ok").click()

    downgrade("")  # no test device has run it: the gate refuses, nothing changes
    page.until(lambda: "soak gate is not met" in page.text("#toast"), "the gate refuses")
    assert "pending" in page.rows("#rules")[0]
    downgrade("vendor hotfix")
    page.until(lambda: "(soak gate overridden)" in page.text("#toast"), "overridden")
    page.until(lambda: f"{OLD} – {NEW} approved" in page.rows("#rules")[0], "CX500 back at OLD")

    # -- pins -----------------------------------------------------------------------------------
    page.find("nav a[href='/rollouts']").click()
    page.find("nav.sub a[href='/pins']").click()
    page.until(lambda: "No device is pinned" in page.text("#pins tbody"), "no pins")
    page.type("#pin-id", "00-04-F2-00-00-42")
    page.type("#pin-reason", "reception: waits for the new headset")
    page.find("#add-pin button[type=submit]").click()
    page.until(lambda: "the version" in page.text("#pin-error"), "a hold needs its version")
    page.type("#pin-version", NEW)
    page.find("#add-pin button[type=submit]").click()
    page.until(lambda: any("00-04-F2-00-00-42" in r for r in page.rows("#pins")), "pinned")
    assert f"held on {NEW}" in page.rows("#pins")[0]
    page.shot("pins")
    page.find("#pins tbody button").click()
    _confirm(page, "Remove the pin of MAC 00-04-F2-00-00-42?")
    page.find("#confirm-ok").click()
    page.until(lambda: "No device is pinned" in page.text("#pins tbody"), "unpinned")

    # -- networks and windows, the external zone -------------------------------------------------
    page.find("nav.sub a[href='/networks']").click()
    page.until(lambda: "No network is listed" in page.text("#networks tbody"), "no networks")
    page.type("#net-network", "10.20.0.0/16")
    page.type("#net-zone", "Europe/Berlin")
    page.type("#net-windows", "22:00-05:00")
    page.type("#net-max-downloads", "5")
    page.find("#add-network button[type=submit]").click()
    page.until(lambda: any("10.20.0.0/16" in r for r in page.rows("#networks")), "listed")
    assert "Europe/Berlin 22:00-05:00 5 no cap" in page.rows("#networks")[0]
    page.type("#net-network", "10.20.0.0/33")
    page.find("#add-network button[type=submit]").click()
    page.until(lambda: page.text("#net-error") != "", "a bad network refused")
    assert "at any hour" in page.text("#external-policy")
    page.type("#ext-windows", "01:00-04:00")
    page.find("#external-form button[type=submit]").click()
    page.until(lambda: "only 01:00-04:00 (UTC)" in page.text("#external-policy"), "external")
    page.shot("networks")
    page.find("#ext-clear").click()
    _confirm(page, "Clear the external zone's policy?")
    page.find("#confirm-ok").click()
    page.until(lambda: "no policy of their own" in page.text("#external-policy"), "cleared")
    page.find("#networks tbody button").click()
    _confirm(page, "Remove network 10.20.0.0/16?")
    page.find("#confirm-ok").click()
    page.until(lambda: "No network is listed" in page.text("#networks tbody"), "removed")

    # -- upgrade paths ---------------------------------------------------------------------------
    page.find("nav.sub a[href='/upgrade-paths']").click()
    page.until(lambda: "No upgrade path" in page.text("#upgrade-paths tbody"), "no paths")
    page.type("#path-brand", "Polycom")
    page.type("#path-model", "CX700")
    page.type("#path-below", "3.5")
    page.type("#path-offer", "3.5.6907.37")
    page.find("#add-path button[type=submit]").click()
    page.until(lambda: any("CX700" in r for r in page.rows("#upgrade-paths")), "the step")
    assert "UCPhone/Polycom/CX700 every type 3.5 3.5.6907.37" in page.rows("#upgrade-paths")[0]
    page.find("#upgrade-paths tbody button").click()
    _confirm(page, "Remove the upgrade step UCPhone/Polycom/CX700 below 3.5?")
    page.find("#confirm-ok").click()
    page.until(lambda: "No upgrade path" in page.text("#upgrade-paths tbody"), "removed")

    # -- a device's row: what it was offered, and what became of it -----------------------------
    page.find("nav a[href='/devices']").click()
    page.until(lambda: any(PHONES[2][0] in r for r in page.rows("#devices")), "the phones")
    offered = {
        row.find_element(page.by.CSS_SELECTOR, "td").text: row.find_element(
            page.by.CSS_SELECTOR, "td:nth-child(7)"
        ).text
        for row in page.all("#devices tbody tr")
    }
    assert [offered[mac] for mac, _, _ in PHONES] == [
        f"{OLD} updated",
        f"{OLD} updated",
        f"{OLD} reverted",
        "–",  # never offered anything
    ]
    assert page.find("#devices tbody .badge.reverted")
    page.find(f"#devices button[aria-label='Details of {PHONES[2][0]}']").click()
    page.until(lambda: page.find("#device-detail").is_displayed(), "the device's detail")
    assert browser.switch_to.active_element.get_attribute("id") == "device-detail-title"
    page.until(lambda: "reverted" in page.text("#device-offers tbody"), "its offers")
    assert page.rows("#device-offers")[0].startswith(f"rule {rule_id} ")
    explained = page.text("#device-explain")
    assert f"rule {rule_id} UCPhone/Polycom/CX600/A/ENU/CPE:" in explained
    assert "No download window applies" in explained and "Bucket " in explained
    assert page.text("#device-now").startswith("Now: ")
    browser.execute_script("document.getElementById('device-detail').scrollIntoView()")
    page.shot("device-detail")
    # nothing sticks out of the page sideways (a wide table scrolls in its own box)
    width = "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    scroll_width, client_width = browser.execute_script(width)
    assert scroll_width == client_width

    # no script error, no CSP violation, no failed request but the bad network's 400 and the
    # soak gate's 409
    problems = [e["message"] for e in browser.get_log("browser")]
    refused = (
        "/api/networks - Failed to load resource: the server responded with a status of 400",
        "/api/rollouts - Failed to load resource: the server responded with a status of 409",
    )
    assert [m for m in problems if not any(r in m for r in refused)] == []
    assert len(problems) == 2
