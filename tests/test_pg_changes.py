"""PostgreSQL: a catalogue change moves the catalogue's version and notifies listeners in
the transaction that makes it (the triggers of store/pgchanges.py), and nothing else does.

A real listener (LISTEN on its own connection) sees each committed change once, with the
new version as its payload; a change rolled back moves nothing and sends nothing; a
statement that changes no row moves nothing; a transaction of many statements moves the
version once. A catalogue write outside a transaction waits for a running writer.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from appliance.model import IdentifierKind
from appliance.store import Store
from appliance.store.pgchanges import CATALOGUE_TABLES, CHANNEL
from appliance.testing import Postgres
from appliance.testing.records import CX600
from appliance.testing.stores import add_rule

_databases = itertools.count()
WAIT_SECONDS = 30.0  # for a notification that must come: loopback delivers in milliseconds

pytestmark = pytest.mark.slow


@pytest.fixture
def dsn(store_postgres: Postgres) -> str:
    """A fresh database of the session's server, at the newest schema."""
    name = f"changes_{next(_databases)}"
    return store_postgres.create_database(name, template="store_template")


@pytest.fixture
def store(dsn: str) -> Iterator[Store]:
    s = Store.open_postgresql(dsn)
    yield s
    s.close()


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        yield conn


def _next_payload(conn: psycopg.Connection[Any]) -> str:
    """The next notification's payload (waits, bounded, for one that must come)."""
    for n in conn.notifies(timeout=WAIT_SECONDS, stop_after=1):
        assert n.channel == CHANNEL
        return n.payload
    raise AssertionError(f"no notification within {WAIT_SECONDS} s")


def _version(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT version FROM catalogue_version").fetchone()[0])


def test_a_change_moves_the_version_and_notifies_with_its_commit_once(
    store: Store, dsn: str, listener: psycopg.Connection[Any]
) -> None:
    before = _version(dsn)
    with store.transaction():
        add_rule(store, CX600, pending="4.0.7577.4455")  # packages, updates, files, rule
        store.add_test_device("lab", IdentifierKind.MAC, "00-04-F2-00-00-01")
        assert _version(dsn) == before  # another session sees nothing before the commit
    assert _version(dsn) == before + 1 == store.data_version()
    assert _next_payload(listener) == str(before + 1)
    # a single statement outside a transaction is its own transaction
    store.add_test_device("desk", IdentifierKind.MAC, "00-04-F2-00-00-02")
    assert _next_payload(listener) == str(before + 2)
    assert _version(dsn) == before + 2


def test_a_rolled_back_change_moves_nothing_and_sends_nothing(
    store: Store, dsn: str, listener: psycopg.Connection[Any]
) -> None:
    before = _version(dsn)
    with pytest.raises(RuntimeError), store.transaction():
        add_rule(store, CX600, pending="4.0.7577.4455")
        raise RuntimeError("the admin's action fails after its writes")
    assert _version(dsn) == before
    assert store.rules() == []
    # Notifications arrive in commit order: the first one is the next change's.
    store.add_test_device("lab", IdentifierKind.MAC, "00-04-F2-00-00-01")
    assert _next_payload(listener) == str(before + 1)


def test_statements_that_change_no_row_and_other_tables_move_nothing(
    store: Store, dsn: str, listener: psycopg.Connection[Any]
) -> None:
    before = _version(dsn)
    store.remove_test_device(12345)  # no such row
    store.delete_rule(12345)
    store.append_event("admin", "login", "admin", None, None)  # not a catalogue table
    assert _version(dsn) == before
    store.add_test_device("lab", IdentifierKind.MAC, "00-04-F2-00-00-01")
    assert _next_payload(listener) == str(before + 1)


def test_every_catalogue_table_has_its_triggers_and_opening_again_adds_none(
    store: Store, dsn: str
) -> None:
    Store.open_postgresql(dsn).close()  # a second open finds them there
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE t.tgname LIKE 'ucupdates%' AND NOT t.tgisinternal GROUP BY c.relname"
        ).fetchall()
    assert dict(rows) == {table: 5 for table in CATALOGUE_TABLES}


def test_a_write_outside_a_transaction_waits_for_the_running_writer(store: Store, dsn: str) -> None:
    """The triggers take the writer lock first, as BEGIN IMMEDIATE does: the other node's
    write lands after this transaction, whose rows it never holds (no deadlock)."""
    other = Store.open_postgresql(dsn)
    done = threading.Event()

    def write() -> None:
        other.add_test_device("desk", IdentifierKind.MAC, "00-04-F2-00-00-02")
        done.set()

    try:
        with store.transaction():
            rule = add_rule(store, CX600, pending="4.0.7577.4455")
            writer = threading.Thread(target=write)
            writer.start()
            with psycopg.connect(dsn, autocommit=True) as watch:
                for _ in range(600):  # until the other write waits on the lock (bounded)
                    waiting = watch.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    ).fetchone()[0]
                    if waiting or done.is_set():
                        break
                    threading.Event().wait(0.05)
            assert not done.is_set()
            store.save_rule(rule)
        writer.join(WAIT_SECONDS)
        assert done.is_set()
        assert [d.name for d in store.test_devices()] == ["desk"]
    finally:
        other.close()
