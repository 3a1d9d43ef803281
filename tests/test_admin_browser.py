"""The Control Panel in a real headless Chromium (Debian's), driven by Selenium.

One admin session, as a person would use it: log in (after a wrong password), upload
the sample package and watch the progress bar (the upload's, then the import's), read
the rules an action would change, approve a rule after reading the impact preview, add a
test device (the MAC validated while typing), see a phone appear after a simulated check,
restore the rule (Escape cancels the first try; it has no restore version, so only the
box that says what phones then get lets it go ahead), read the activity, log out.
Screenshots of every step go to `test-artifacts/admin/` for review.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import chromium
from browser.page import Page
from browser.panel import REPO, Panel, simulate_check

from appliance.admin.accounts import add_account
from appliance.catalogue.sample import make_sample_package
from appliance.config import load_config
from appliance.store.database import Store

pytestmark = pytest.mark.skipif(chromium.available() is not None, reason=str(chromium.available()))

ARTIFACTS = REPO / "test-artifacts" / "admin"
USER, PASSWORD = "alice", "correct horse battery"
OLD, NEW = "4.0.7577.4366", "4.0.7577.4387"
PHONE = "00-04-F2-00-00-20"
FLEET = [  # other phones, for a realistic inventory and charts
    ("Polycom", "CX600", "DEU", OLD),
    ("Polycom", "CX500", "ENU", OLD),
    ("Polycom", "CX500", "ENU", NEW),
    ("Polycom", "CX3000", "ENU", OLD),
    ("Aastra", "6721ip", "ENU", "4.0.7577.4300"),
    ("Aastra", "6721ip", "ENU", OLD),
    ("HP", "4120", "ENU", NEW),
]


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    data_dir = tmp_path_factory.mktemp("browser") / "data"
    data_dir.mkdir()
    store = Store.open(load_config(None, data_dir).db_path)
    add_account(store, USER, "admin", PASSWORD, "test")
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


def test_an_admin_session(browser: Any, panel: Panel, tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    page = Page(browser, panel, ARTIFACTS)  # old screenshots removed

    # -- log in: a page asked for without a session leads to the login form -------------------
    page.open("/updates")
    page.until(lambda: "/login?next=%2Fupdates" in browser.current_url, "redirected to log in")
    page.find("#login-name").send_keys(USER)
    page.find("#login-password").send_keys("wrong password", Keys.ENTER)
    page.until(lambda: page.text("#login-error") == "wrong account name or password", "error")
    page.shot("login-wrong-password")
    page.find("#login-password").send_keys(PASSWORD, Keys.ENTER)
    page.until(lambda: browser.current_url.endswith("/updates"), "the Updates page after login")
    page.until(lambda: "No rule matches" in page.text("#rules tbody"), "an empty rules table")
    cookies = {c["name"]: c for c in browser.get_cookies()}
    session = cookies["__Host-ucupdates-session"]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""  # invisible to scripts
    page.shot("updates-empty")

    # -- upload the sample package --------------------------------------------------------------
    package = tmp_path / "UCUpdates.cab"
    make_sample_package(package, image_size=64 * 1024)
    page.find("nav a[href='/upload']").click()
    page.find("#package").send_keys(str(package))
    page.find("#upload-form button[type=submit]").click()
    page.until(lambda: page.find("#upload-result").is_displayed(), "the import's result")
    assert page.find("#progress").get_attribute("value") == "100"
    assert page.text("#progress-text") == "Imported."
    # the page followed the import: it asked for its progress once the upload was sent
    polled = "return performance.getEntriesByType('resource').map((e) => e.name)"
    assert any("/api/packages/progress/" in url for url in browser.execute_script(polled))
    assert "8 device update(s)" in page.text("#result-summary")
    assert "8 new rule(s)" in page.text("#result-summary")
    assert len(page.rows("#result-table")) == 8
    page.shot("upload-result")

    # -- approve a rule, after reading the impact -----------------------------------------------
    page.find("nav a[href='/updates']").click()
    page.until(lambda: len(page.rows("#rules")) == 8, "eight rules")
    # the dialog names the rules it would change: six, and how many more
    page.find("#select-all").click()
    page.find("[data-action=approve]").click()
    page.until(lambda: len(page.all("#confirm-rules li")) == 7, "the rules named")
    named = [li.text for li in page.all("#confirm-rules li")]
    assert named[-1] == "and 2 more" and named[0] == f"Aastra 6721ip ENU: no version → {NEW}"
    assert page.text("#confirm-title") == "Approve 8 rules?"
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    page.until(lambda: page.find("#confirm").get_attribute("open") is None, "dialog closed")
    page.find("#select-all").click()  # nothing selected again
    page.choose("#f-model", "CX600")
    page.choose("#f-locale", "ENU")
    page.until(lambda: len(page.rows("#rules")) == 1, "one CX600 ENU rule")
    assert not page.find("[data-action=approve]").is_enabled()
    page.find("#rules tbody input[type=checkbox]").click()
    assert page.text("#selection-count") == "1 rule selected"
    page.find("[data-action=approve]").click()
    page.until(lambda: page.find("#confirm").get_attribute("open") is not None, "the dialog")
    page.until(lambda: "No phone known" in page.text("#confirm-impact"), "the impact")
    assert page.text("#confirm-title") == "Approve 1 rule?"
    assert page.text("#confirm-rules") == f"Polycom CX600 ENU: no version → {NEW}"
    assert not page.find("#confirm-force-box").is_displayed()
    page.shot("approve-confirm")
    page.find("#confirm-ok").click()
    page.until(lambda: "1 rule approved" in page.text("#toast"), "the approval")
    page.until(lambda: "approved" in page.rows("#rules")[0], "the rule approved")
    assert NEW in page.rows("#rules")[0]
    page.shot("approved")

    # -- add a test device, validated while typing ---------------------------------------------
    page.find("nav a[href='/test-devices']").click()
    page.find("#td-name").send_keys("Lab CX600")
    ident = page.find("#td-id")
    ident.send_keys("00-04-F2-A1-B2")
    page.until(lambda: ident.get_attribute("aria-invalid") == "true", "the MAC marked invalid")
    assert "Not a valid mac address" in page.text("#td-id-error")
    assert not page.find("#td-add").is_enabled()
    page.shot("test-device-invalid-mac")
    ident.send_keys("-C3")
    page.until(lambda: page.find("#td-add").is_enabled(), "the add button enabled")
    assert page.text("#td-id-error") == ""
    page.find("#td-add").click()
    page.until(lambda: any("00-04-F2-A1-B2-C3" in r for r in page.rows("#test-devices")), "added")
    page.shot("test-device-added")

    # -- a phone checks in; it appears on the Devices page ---------------------------------------
    page.find("nav a[href='/devices']").click()
    page.until(lambda: "No phone has checked in yet." in page.text("#devices tbody"), "empty")
    simulate_check(panel.data_dir, PHONE, version=OLD)
    for n, (brand, model, locale, version) in enumerate(FLEET):
        simulate_check(
            panel.data_dir,
            f"00-04-F2-00-01-{n:02X}",
            brand=brand,
            model=model,
            locale=locale,
            version=version,
            address=f"10.1.2.{n + 10}",
        )
    page.find("#refresh-devices").click()
    page.until(lambda: any(PHONE in r for r in page.rows("#devices")), "the phone listed")
    row = next(r for r in page.rows("#devices") if PHONE in r)
    assert OLD in row and NEW in row and "outdated" in row
    page.until(
        lambda: "Polycom CX600" in page.find("#versions-chart").get_attribute("innerHTML"),
        "the versions chart redrawn",
    )
    assert page.find("#versions-chart svg").get_attribute("role") == "img"
    page.choose("#d-model", "CX600")
    page.until(lambda: "model=CX600" in page.find("#csv-link").get_attribute("href"), "CSV link")
    page.shot("devices")

    # -- restore: Escape cancels, then confirm ---------------------------------------------------
    page.find("nav a[href='/updates']").click()
    page.choose("#f-model", "CX600")
    page.choose("#f-locale", "ENU")
    page.until(lambda: len(page.rows("#rules")) == 1, "one CX600 ENU rule")
    page.find("#rules tbody input[type=checkbox]").send_keys(Keys.SPACE)  # the keyboard works
    # no restore version: a restore would leave phones with nothing, so it waits for the box
    page.find("[data-action=restore]").click()
    page.until(lambda: "none of the selected" in page.text("#confirm-impact"), "the impact")
    assert "has no restore version" in page.text("#confirm-details")
    assert f"Now 1 phone is offered {NEW}." in page.text("#confirm-details")
    assert page.find("#confirm-force-box").is_displayed()
    assert page.text("#confirm-title") == "Restore 1 rule without a restore version?"
    assert not page.find("#confirm-ok").is_enabled()
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    page.until(lambda: page.find("#confirm").get_attribute("open") is None, "dialog closed")
    assert "approved" in page.rows("#rules")[0]  # nothing changed
    page.find("[data-action=restore]").click()
    page.until(lambda: page.find("#confirm-force").is_displayed(), "the dialog again")
    page.find("#confirm-force").click()
    then = "1 phone will be offered no update and keeps the firmware it runs."
    page.until(lambda: page.text("#confirm-impact") == then, "the forced impact")
    assert page.text("#confirm-rules") == f"Polycom CX600 ENU: {NEW} → no version"
    assert page.text("#confirm-title") == "Restore 1 rule?"
    page.shot("restore-confirm")
    page.find("#confirm-ok").click()
    page.until(lambda: "1 rule restored (forced)" in page.text("#toast"), "the forced restore")
    page.until(lambda: "restored" in page.rows("#rules")[0], "the rule restored")
    page.shot("restored")

    # -- the activity ----------------------------------------------------------------------------
    page.find("nav a[href='/activity']").click()
    page.until(lambda: len(page.rows("#events")) > 3, "the event log")
    actions = [r.split()[3] for r in page.rows("#events")[:3]]
    assert actions == ["restore", "test-device.add", "approve"]
    assert f"web:{USER}" in page.rows("#events")[0]
    assert "forced – → true" in page.rows("#events")[0]
    assert any(PHONE in r for r in page.rows("#device-events"))
    page.shot("activity")

    # -- captures (viewers may read them too) ----------------------------------------------------
    from appliance.model import Capture, CapturedTls, Zone
    from appliance.ops import CaptureFolder

    CaptureFolder(panel.data_dir / "capture", 10, 10**6).write(
        Capture(
            id="20261206T093000-000000-1-000001",
            captured_at="2026-12-06T09:30:00Z",
            reason="unparsable: malformed XML",
            client="10.1.2.3",
            zone=Zone.INTERNAL,
            model=None,
            method="POST",
            target="/RequestHandler/ucdevice.upx",
            http_version="HTTP/1.1",
            headers=(("Authorization", "NTLM (credentials removed)"),),
            body=b"<Request>",
            tls=CapturedTls("TLSv1", "AES128-SHA", None),
            status=400,
            answer=b"malformed XML\n",
        )
    )
    page.find("nav a[href='/captures']").click()
    page.until(lambda: any("TLSv1" in r for r in page.rows("#captures")), "the capture listed")
    page.find("#captures tbody button").click()
    page.until(lambda: "no SNI sent" in page.text("#capture-text"), "the capture shown")
    assert "NTLM (credentials removed)" in page.text("#capture-text")
    assert page.find("#captures-export").get_attribute("href").endswith("/api/captures/export")
    page.shot("captures")

    # -- log out ---------------------------------------------------------------------------------
    page.find("#logout").click()
    page.until(lambda: browser.current_url.endswith("/login"), "the login page")
    page.open("/devices")
    page.until(lambda: "/login?next=%2Fdevices" in browser.current_url, "logged out for good")
    page.shot("logged-out")

    # -- a link to the login page that names another site ----------------
    # Before: the script went to any `next` starting with one "/": /\evil.example is
    # //evil.example to a browser.
    page.open("/login?next=/%5Cevil.example")
    page.find("#login-name").send_keys(USER)
    page.find("#login-password").send_keys(PASSWORD, Keys.ENTER)
    page.until(lambda: browser.current_url == panel.url + "/updates", "home, not evil.example")
    page.find("#logout").click()
    page.until(lambda: browser.current_url.endswith("/login"), "the login page again")
    # no script error, no CSP violation, no 404: only the wrong password's 401
    problems = [e["message"] for e in browser.get_log("browser")]
    assert [m for m in problems if "/api/login - " not in m or "401" not in m] == []
