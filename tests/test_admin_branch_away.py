"""The Control Panel of a branch node whose pool primary does not answer (in process, the
store's writes made to raise PrimaryUnavailable as a branch node's store does): a change
gets 503 with the line to show and Retry-After, not a 500; an admin's session still reads
although its last-seen time cannot be written; every page says the primary is away."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from browser.api import PASSWORD, Browser

from appliance.admin import add_account, make_admin_site
from appliance.config import load_config
from appliance.store import PoolState, PrimaryUnavailable, Store
from appliance.testing import FixedClock, InlineReactor, memory_client

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
AWAY = "the pool's primary does not answer: admin changes need it"


def _away(*args: Any, **kwargs: Any) -> Any:
    raise PrimaryUnavailable(AWAY)


def test_a_change_gets_503_and_a_session_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    clock = FixedClock(NOW)
    store = Store.open(config.db_path, clock=clock)
    add_account(store, "alice", "admin", PASSWORD, "test")
    stub = memory_client(lambda _: make_admin_site(config, store, clock, InlineReactor()))
    admin = Browser(stub).login("alice")
    monkeypatch.setattr(store, "add_test_device", _away)
    monkeypatch.setattr(store, "touch_admin_session", _away)
    reply = admin.request("POST", "/api/test-devices", {"name": "lab", "mac": "00-04-F2-00-00-01"})
    assert reply.status == 503 and reply.error == AWAY
    assert reply.headers["Retry-After"] == "30"
    clock.set(NOW + timedelta(seconds=config.admin.session_touch_seconds + 1))
    assert admin.request("GET", "/api/session").status == 200  # its touch could not be written
    # every page but Pool (which shows it in its place) carries the branch's pool line
    away = PoolState(False, NOW, 3, 0, False, None, "connection refused")
    monkeypatch.setattr(store, "backend", "postgresql")  # the pages' view of it only
    monkeypatch.setattr(store, "pool_state", lambda: away)
    page = admin.request("GET", "/updates").body.decode()
    assert 'id="pool-banner"' in page and "primary is unreachable since 2026-12-06" in page
    assert 'id="pool-banner"' not in admin.request("GET", "/pool").body.decode()
    store.close()
