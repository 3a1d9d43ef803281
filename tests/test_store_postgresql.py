"""The store on PostgreSQL where it differs from SQLite underneath: the schema applied
once by one of several nodes opening together, the writer lock of a transaction, the
catalogue version other nodes read, and a connection string never shown."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import psycopg
import pytest

from appliance.store import Store, StoreError, newest_schema_version
from appliance.testing import CU8, CX600, Postgres

pytestmark = pytest.mark.slow
_databases = itertools.count()


@pytest.fixture
def dsn(store_postgres: Postgres) -> Iterator[str]:
    """An empty database (no schema yet) of the session's server."""
    name = f"empty_{next(_databases)}"
    yield store_postgres.create_database(name)


def test_nodes_opening_an_empty_database_together_apply_each_version_once(dsn: str) -> None:
    stores: list[Store] = []
    failures: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(Store.open_postgresql(dsn))
        except BaseException as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert failures == []
        assert len(stores) == 3
        versions = stores[0]._conn.execute("SELECT version FROM schema_version").fetchall()
        assert [v for (v,) in versions] == list(range(1, newest_schema_version() + 1))
        assert all(s.schema_version == newest_schema_version() for s in stores)
    finally:
        for s in stores:
            s.close()


def test_a_catalogue_change_on_one_node_moves_the_version_another_reads(dsn: str) -> None:
    first, second = Store.open_postgresql(dsn), Store.open_postgresql(dsn)
    try:
        before = second.data_version()
        first.append_event("admin", "login", "admin", None, None)
        assert second.data_version() == before  # not a catalogue change
        first.insert_rule(CX600, CU8)
        assert second.data_version() != before
    finally:
        first.close()
        second.close()


def test_write_transactions_of_two_nodes_run_one_at_a_time(dsn: str) -> None:
    first, second = Store.open_postgresql(dsn), Store.open_postgresql(dsn)
    entered = threading.Event()

    def write() -> None:
        with second.transaction():
            entered.set()
            second.insert_rule(CX600, "5.0")

    try:
        with first.transaction():
            first.append_event("admin", "approve", "rule", None, None)
            writer = threading.Thread(target=write)
            writer.start()
            with psycopg.connect(dsn, autocommit=True) as watch:
                for _ in range(600):  # until the second node waits on the writer lock
                    waiting = watch.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    ).fetchone()
                    if waiting == (1,):
                        break
                    threading.Event().wait(0.05)
                assert waiting == (1,)
            assert not entered.is_set()
        writer.join(60)
        assert entered.is_set()
        assert [r.pending_version for r in first.rules()] == ["5.0"]
    finally:
        first.close()
        second.close()


def test_a_refused_connection_names_no_password(store_postgres: Postgres) -> None:
    wrong = store_postgres.conninfo.replace(
        f"password={store_postgres.password}", "password=not-the-secret-4711"
    )
    with pytest.raises(StoreError) as refused:
        Store.open_postgresql(wrong)
    assert "not-the-secret-4711" not in str(refused.value)
    assert str(refused.value).startswith("cannot connect to the PostgreSQL store")
