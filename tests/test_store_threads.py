"""One PostgreSQL store called from several threads (serve's threads share it): each
thread's transaction is its own, the pool bounds the connections rather than the
threads, and the reactor guard refuses a call made on the declared thread."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from appliance.store import GuardMode, ReactorBlockingError, Store, guard_thread
from appliance.testing import Postgres

pytestmark = pytest.mark.slow
_databases = itertools.count()


@pytest.fixture
def shared(store_postgres: Postgres) -> Iterator[Store]:
    """A store of two connections at most, on a fresh database at the newest schema."""
    name = f"threads_{next(_databases)}"
    dsn = store_postgres.create_database(name, template="store_template")
    store = Store.open_postgresql(dsn, pool_size=2)
    yield store
    store.close()


def run_in_threads(count: int, work: object) -> list[BaseException]:
    failures: list[BaseException] = []

    def one(i: int) -> None:
        try:
            work(i)  # type: ignore[operator]
        except BaseException as e:  # reported by the caller
            failures.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return failures


def test_eight_threads_share_a_store_of_two_connections(shared: Store) -> None:
    def work(i: int) -> None:
        for n in range(5):
            with shared.transaction():
                shared.append_event(f"thread-{i}", "test", str(n), None, None)
            assert shared.rules() == []

    assert run_in_threads(8, work) == []
    events = shared.events(limit=100)
    assert len(events) == 40
    assert {e.actor for e in events} == {f"thread-{i}" for i in range(8)}


def test_a_thread_rolling_back_leaves_another_threads_transaction_alone(shared: Store) -> None:
    inside = threading.Event()
    started = threading.Event()

    def work(i: int) -> None:
        if i == 0:
            with pytest.raises(RuntimeError), shared.transaction():
                shared.append_event("rolled-back", "test", "x", None, None)
                inside.set()
                assert started.wait(30)
                raise RuntimeError("rolled back")
        else:
            assert inside.wait(30)
            started.set()
            with shared.transaction():  # its own: waits for the writer lock, then commits
                shared.append_event("kept", "test", "y", None, None)

    assert run_in_threads(2, work) == []
    assert [e.actor for e in shared.events(limit=10)] == ["kept"]


def test_the_guard_refuses_a_call_on_the_declared_thread(shared: Store) -> None:
    guard_thread(GuardMode.RAISE)
    try:
        with pytest.raises(ReactorBlockingError):
            shared.data_version()
        with pytest.raises(ReactorBlockingError), shared.transaction():
            pass
        # another thread is not the reactor: it may call the store meanwhile
        assert run_in_threads(1, lambda i: shared.data_version()) == []
    finally:
        guard_thread(GuardMode.OFF)
    assert shared.data_version() >= 0  # the guard lifted
    assert shared.events(limit=1) == []  # no transaction was left open by the refusal
