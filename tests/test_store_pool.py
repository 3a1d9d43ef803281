"""The tables a pool's nodes share besides the catalogue (schema 9), on both engines:
lockouts one node started, and each serve process's heartbeat row. And the Pool view of
an SQLite appliance, which is alone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from appliance.admin.pool import PoolApi
from appliance.config import load_config
from appliance.model import Lockout, PoolNode
from appliance.store import PoolState, Store
from appliance.store.connection import Clock

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
T = 1_800_000_000.0  # epoch seconds, as the lockouts keep them


def test_a_lockout_keeps_its_later_end_and_is_read_until_it_ends(
    open_test_store: Callable[[Clock], Store],
) -> None:
    store = open_test_store(lambda: NOW)
    store.put_lockout("phone.user", "alice", T + 600, "a")
    store.put_lockout("phone.user", "alice", T + 300, "b")  # an earlier end: kept as it was
    store.put_lockout("admin.address", "10.0.0.1", T + 60, "b")
    assert store.lockout_until("phone.user", "alice", T) == T + 600
    assert store.lockouts("phone.", T) == [Lockout("phone.user", "alice", T + 600, "a")]
    assert [lock.key for lock in store.lockouts("", T)] == ["10.0.0.1", "alice"]
    assert store.lockout_until("admin.address", "10.0.0.1", T + 60) is None  # ended
    store.put_lockout("phone.user", "alice", T + 900, "b")  # a later end replaces it
    assert store.lockouts("phone.", T) == [Lockout("phone.user", "alice", T + 900, "b")]
    assert store.clear_lockouts("phone.user", "alice") == 1
    assert store.lockouts("", T) == [Lockout("admin.address", "10.0.0.1", T + 60, "b")]


def test_heartbeats_are_written_refreshed_and_forgotten(
    open_test_store: Callable[[Clock], Store],
) -> None:
    store = open_test_store(lambda: NOW)
    a = PoolNode(
        "a:9443", "a", "primary", "1.0", 10, "2026-12-06T09:00:00Z", "2026-12-06T09:00:00Z"
    )
    b = PoolNode("b:9443", "b", "branch", "1.0", 11, "2026-12-05T09:00:00Z", "2026-12-05T09:00:00Z")
    store.beat_pool_node(a)
    store.beat_pool_node(b)
    later = PoolNode(**{**a.__dict__, "last_seen_at": "2026-12-06T09:30:00Z", "pid": 12})
    store.beat_pool_node(later)
    assert store.pool_nodes() == [later, b]
    assert store.forget_pool_nodes("2026-12-05T10:00:00Z") == 1
    assert store.pool_nodes() == [later]


def test_an_sqlite_appliance_is_alone_in_its_pool(tmp_path: Path) -> None:
    config = load_config(None, tmp_path)
    store = Store.open(":memory:")
    view = PoolApi(config, store, lambda: NOW).view()
    assert view["backend"] == "sqlite" and view["nodes"] == [] and view["branch"] is None
    assert "This appliance is alone" in PoolApi(config, store, lambda: NOW).page_body(None)


def test_a_branch_node_s_pool_state_is_on_its_pool_page(tmp_path: Path) -> None:
    config = load_config(None, tmp_path)
    store = Store.open(":memory:")
    store.backend = "postgresql"  # the view only: the pool tables read on SQLite
    away = PoolState(False, NOW, 7, 0, False, 2.0, "connection refused")
    store.pool_state = lambda: away  # type: ignore[method-assign]
    api = PoolApi(config, store, lambda: NOW)
    branch = api.view()["branch"]
    assert branch["primary_reachable"] is False and branch["buffered"] == 7
    assert branch["unreachable_since"] == "2026-12-06T09:30:00Z"
    assert branch["summary"] == away.summary()
    body = api.page_body(None)
    assert 'id="pool-branch" class="note warn"' in body and "primary is unreachable" in body
    assert "No heartbeat yet." in body
