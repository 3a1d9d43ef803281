"""The Pool page in a real headless Chromium: two Control Panel processes on one
PostgreSQL store, each writing its heartbeat; an admin signed in on one follows the main
navigation to Pool and reads both nodes there, live, this one marked, with the backend.
Screenshot in `test-artifacts/admin-pool/`."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from browser import chromium
from browser.page import Page
from browser.panel import REPO, Panel
from test_admin_browser import PASSWORD, browser

from appliance.admin.accounts import add_account
from appliance.store import Store
from appliance.testing import Postgres, throwaway_postgres

needs_chromium = pytest.mark.skipif(
    chromium.available() is not None, reason=str(chromium.available())
)

__all__ = ["browser"]  # test_admin_browser's fixture, with this module's panel

ARTIFACTS = REPO / "test-artifacts" / "admin-pool"
ADMIN = "alice"


@pytest.fixture(scope="module")
def server() -> Iterator[Postgres]:
    with throwaway_postgres() as running:
        store = Store.open_postgresql(running.conninfo)
        add_account(store, ADMIN, "admin", PASSWORD, "test")
        store.close()
        yield running


@pytest.fixture(scope="module")
def panels(server: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Panel]]:
    folder = tmp_path_factory.mktemp("browser-pool")
    dsn = folder / "dsn"
    dsn.touch(mode=0o600)
    dsn.write_text(server.conninfo + "\n")
    os.environ["UCUPDATES_REACTOR_GUARD"] = "raise"  # inherited by the panels
    try:
        running = [Panel(folder / n, "--fqdn", "localhost", "--dsn-file", str(dsn)) for n in "ab"]
    finally:
        del os.environ["UCUPDATES_REACTOR_GUARD"]
    yield running
    for panel in running:
        panel.stop()
        assert "Traceback" not in panel.log_text(), panel.log_text()


@pytest.fixture(scope="module")
def panel(panels: list[Panel]) -> Panel:
    return panels[0]


@needs_chromium
def test_the_pool_page_lists_both_nodes(browser: Any, panel: Panel, panels: list[Panel]) -> None:
    from selenium.webdriver.common.keys import Keys

    page = Page(browser, panel, ARTIFACTS)
    page.open("/login?next=%2Fupdates")
    page.find("#login-name").send_keys(ADMIN)
    page.find("#login-password").send_keys(PASSWORD, Keys.ENTER)
    page.until(lambda: browser.current_url.endswith("/updates"), "the Updates page")
    page.find('nav a[href="/pool"]').click()
    page.until(lambda: browser.current_url.endswith("/pool"), "the Pool page")
    assert page.text("h1") == "Pool"
    assert page.find('nav a[aria-current="page"]').text == "Pool"
    assert "Backend: PostgreSQL" in page.text("#pool-backend")
    names = [f"{socket.gethostname()}:{p.port}" for p in panels]  # host name, admin port
    assert f"This node is {names[0]}." in page.text("#pool-backend")

    def both_listed() -> bool:  # the second node's first heartbeat may still be on its way
        browser.refresh()
        return len(page.rows("#pool-nodes")) == 2

    page.until(both_listed, "both nodes on the Pool page")
    rows = [row.split() for row in page.rows("#pool-nodes")]
    assert rows[0][:3] == [names[0], "(this", "node)"] and rows[1][0] == names[1]
    assert all(row[-1] == "live" and "primary" in row for row in rows)
    page.shot("pool")
