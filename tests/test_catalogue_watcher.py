"""serve's catalogue watcher on PostgreSQL, in process: a node on the primary hears of a
change by NOTIFY (long before its next poll), a node on a hot standby (which delivers no
notifications) by polling the catalogue's version; each then answers from the new
snapshot, loaded in the watcher's thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.model import IdentifierKind
from appliance.phones import CatalogueWatcher
from appliance.phones.answers import Answers
from appliance.phones.codec import BaseUrls
from appliance.store import Store
from appliance.testing import Postgres

pytestmark = pytest.mark.slow

MAC = "00-04-F2-00-09-01"
WAIT_SECONDS = 20.0


class ThreadReactor:
    """What the watcher asks of the reactor: run this on the reactor's thread (here, at
    once, under a lock the test reads under)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        with self.lock:
            f(*args)


def watched(store: Store, tmp_path: Path, poll_seconds: float) -> tuple[CatalogueWatcher, Answers]:
    urls = BaseUrls.from_config(load_config(None, tmp_path / "data"))
    answers = Answers(store, urls, watched=True)
    return CatalogueWatcher(store, answers, ThreadReactor(), poll_seconds=poll_seconds), answers


def eventually(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_SECONDS
    for _ in range(int(WAIT_SECONDS / 0.1)):
        if condition() or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return condition()


def test_a_node_on_the_primary_hears_of_a_change_by_notify(
    store_postgres: Postgres, tmp_path: Path
) -> None:
    dsn = store_postgres.create_database("watched_primary", "store_template")
    node, admin = Store.open_postgresql(dsn), Store.open_postgresql(dsn)
    watcher, answers = watched(node, tmp_path, poll_seconds=600.0)  # no poll comes
    try:
        watcher.startService()
        # loaded at start, and again once it LISTENs (a change before then is not announced)
        assert eventually(lambda: watcher.reloads >= 2)
        assert MAC not in answers.catalog().test_macs
        admin.add_test_device("lab", IdentifierKind.MAC, MAC)
        assert eventually(lambda: MAC in answers.catalog().test_macs)
        assert watcher.notified >= 1
    finally:
        watcher.stopService()
        admin.close()
        node.close()


def test_a_node_on_a_standby_learns_of_a_change_by_polling(
    postgres: Postgres, tmp_path: Path
) -> None:
    admin = Store.open_postgresql(postgres.conninfo)
    standby = postgres.replica()
    postgres.caught_up(standby)
    node = Store.open_postgresql(standby.conninfo, upgrade=False)
    watcher, answers = watched(node, tmp_path, poll_seconds=0.2)
    try:
        watcher.startService()
        assert MAC not in answers.catalog().test_macs
        admin.add_test_device("lab", IdentifierKind.MAC, MAC)
        assert eventually(lambda: MAC in answers.catalog().test_macs)
        assert watcher.notified == 0  # a standby delivers none: the poll found it
    finally:
        watcher.stopService()
        node.close()
        admin.close()
