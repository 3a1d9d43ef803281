"""The rollout pages' HTML, in process: who sees which forms, navigation, labels, no inline
script or style (the CSP forbids both); and the Devices rows' latest offer, which the
Devices page shows. What the pages do in a browser: test_admin_rollouts_browser.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq

from appliance.admin import add_account, make_admin_site
from appliance.catalogue import import_package, make_sample_package
from appliance.config import Config, load_config
from appliance.model import OfferRecord, Outcome
from appliance.store import Store
from appliance.testing import InlineReactor, memory_client, seen_device, settle

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
BASE = "https://ucupdates.test:9443"
PASSWORD = "correct horse battery"
PAGES = {  # page: the form an admin gets there
    "/rollouts": None,
    "/pins": "add-pin",
    "/networks": "add-network",
    "/upgrade-paths": "add-path",
}


class Outline(HTMLParser):
    """The tags, ids, labels and scripts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.labelled: set[str] = set()
        self.inputs: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.styled = 0
        self.current: dict[str, str] = {}
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if "style" in a or tag == "style":
            self.styled += 1
        if tag == "label" and a.get("for"):
            self.labelled.add(str(a["for"]))
        if tag in ("input", "select") and a.get("type") not in ("radio", "checkbox"):
            self.inputs.append(str(a.get("id")))
        if tag == "script":
            self.scripts.append(a)
        if tag == "a" and a.get("aria-current"):
            self.current[str(a["href"])] = str(a["aria-current"])


def outline(body: bytes) -> Outline:
    parser = Outline()
    parser.feed(body.decode())
    return parser


@dataclass
class Site:
    config: Config
    store: Store
    stub: StubTreq


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    store = Store.open(config.db_path, clock=lambda: NOW)
    add_account(store, "alice", "admin", PASSWORD, "test")
    add_account(store, "victor", "viewer", PASSWORD, "test")
    yield Site(
        config,
        store,
        memory_client(lambda _: make_admin_site(config, store, lambda: NOW, InlineReactor())),
    )
    store.close()


@pytest.fixture
def stub(site: Site) -> StubTreq:
    return site.stub


def get(stub: StubTreq, path: str, cookie: str | None = None) -> tuple[int, bytes, Any]:
    headers = {"Cookie": [cookie]} if cookie else {}
    request = stub.request("GET", BASE + path, headers=headers, allow_redirects=False)
    response = settle(stub, request)
    return response.code, settle(stub, response.content()), response.headers


def login(stub: StubTreq, name: str) -> str:
    body = f'{{"name": "{name}", "password": "{PASSWORD}"}}'.encode()
    headers = {"Content-Type": ["application/json"], "Origin": [BASE]}
    response = settle(stub, stub.request("POST", BASE + "/api/login", data=body, headers=headers))
    assert response.code == 200
    cookie = response.headers.getRawHeaders("Set-Cookie")[0]
    return str(cookie.split(";", 1)[0])


@pytest.mark.parametrize("path", PAGES)
def test_an_admin_gets_the_page_with_its_form_labelled(stub: StubTreq, path: str) -> None:
    status, body, headers = get(stub, path, login(stub, "alice"))
    assert status == 200
    page = outline(body)
    form = PAGES[path]
    assert form is None or form in page.ids
    assert len(page.ids) == len(set(page.ids)), "an id used twice"
    unlabelled = [i for i in page.inputs if i not in page.labelled]
    assert unlabelled == []
    assert page.styled == 0
    assert page.scripts and all(s.get("src", "").startswith("/static/") for s in page.scripts)
    assert "confirm" in page.ids  # every change is confirmed in a dialog
    # the main navigation marks Rollouts; the section's own marks the page
    assert page.current == {"/rollouts": "true" if path != "/rollouts" else "page", path: "page"}
    csp = headers.getRawHeaders("Content-Security-Policy")[0]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


@pytest.mark.parametrize("path", PAGES)
def test_a_viewer_gets_no_form(stub: StubTreq, path: str) -> None:
    status, body, _ = get(stub, path, login(stub, "victor"))
    assert status == 200
    assert b"signed in as a viewer" in body
    assert not re.search(rb"<form id=\"(add-|external-)", body)


def test_without_a_session_the_pages_lead_to_the_login(stub: StubTreq) -> None:
    for path in PAGES:
        status, _, headers = get(stub, path)
        assert status == 303
        assert headers.getRawHeaders("Location") == [f"/login?next=%2F{path[1:]}"]


def test_the_script_is_served_and_only_writes_text(stub: StubTreq) -> None:
    status, body, headers = get(stub, "/static/rollouts.js")
    assert status == 200
    assert headers.getRawHeaders("Content-Type") == ["text/javascript; charset=utf-8"]
    assert b"innerHTML" not in body and b"eval(" not in body


def test_a_device_row_carries_its_latest_offer_and_outcome(site: Site, tmp_path: Path) -> None:
    make_sample_package(tmp_path / "UCUpdates.cab", image_size=1024)
    import_package(site.store, site.config, tmp_path / "UCUpdates.cab", "test")
    first, second = (r.id for r in site.store.rules()[:2])
    phone, quiet = "00-04-F2-00-00-01", "00-04-F2-00-00-02"
    with site.store.transaction():
        for mac in (phone, quiet):
            site.store.record_device(seen_device(mac, "4.0.1"))
        earlier, later = "2026-12-05T08:00:00Z", "2026-12-06T08:00:00Z"
        site.store.save_offers(
            [
                OfferRecord(
                    phone,
                    first,
                    "4.0.2",
                    "4.0.1",
                    earlier,
                    earlier,
                    1,
                    Outcome.UPDATED,
                    None,
                    earlier,
                ),
                OfferRecord(
                    phone, second, "4.0.3", "4.0.1", later, later, 2, Outcome.REVERTED, later, later
                ),
            ]
        )
    status, answer, _ = get(site.stub, "/api/devices", login(site.stub, "victor"))
    assert status == 200
    rows = {d["identity"]: d["offer"] for d in json.loads(answer)["devices"]}
    assert rows == {
        phone: {
            "rule_id": second,
            "version": "4.0.3",
            "outcome": "reverted",
            "first_offered_at": later,
            "last_offered_at": later,
        },
        quiet: None,
    }
