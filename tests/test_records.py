"""What checks leave behind (phones/records.py): audit lines written in batches when asked,
the same lines as one at a time, and inventory sightings recorded at the flush."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import LogEvent

from appliance.catalogue import Decision, Reason
from appliance.config import Config, load_config
from appliance.model import Zone
from appliance.phones.records import Records
from appliance.store import Store
from appliance.testing import FixedClock, device_request

NIGHT = datetime(2026, 12, 5, 23, 59, 59, tzinfo=UTC)
NOTHING = Decision((), Reason.NO_RULE, "no rule")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Config, Store, FixedClock]]:
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    store = Store.open(config.db_path)
    yield config, store, FixedClock(NIGHT)
    store.close()


def audit_files(config: Config) -> dict[str, list[str]]:
    folder = config.logs_dir / "Audit"
    if not folder.exists():
        return {}
    return {p.name[-12:-4]: p.read_text().splitlines() for p in sorted(folder.iterdir())}


def checks(records: Records, clock: FixedClock) -> None:
    """Five checks of three phones, over midnight."""
    for n, mac in enumerate(["00-04-F2-00-00-01", "00-04-F2-00-00-02", "00-04-F2-00-00-01"]):
        records.record_check(device_request(mac=mac, locale=f"L{n}"), NOTHING, "192.0.2.1")
    clock.advance(seconds=1)  # the next day
    records.record_check(device_request(mac=None, serial=None), NOTHING, "192.0.2.9")
    records.record_check(device_request(mac="00-04-F2-00-00-02"), NOTHING, "192.0.2.2")


def counting_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    write = os.write

    def counted(fd: int, data: bytes) -> int:
        sizes.append(len(data))
        return write(fd, data)

    monkeypatch.setattr(os, "write", counted)
    return sizes


def test_batched_lines_are_the_lines_written_one_at_a_time_in_one_write_a_file(
    setup: tuple[Config, Store, FixedClock], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, store, clock = setup
    one_by_one = Records(config, store, clock)
    checks(one_by_one, clock)
    one_by_one.close()
    expected = audit_files(config)
    assert [len(lines) for lines in expected.values()] == [3, 2]
    for folder in (config.logs_dir / "Audit",):
        for p in folder.iterdir():
            p.unlink()

    clock.set(NIGHT)
    scheduled: list[Callable[[], None]] = []
    batched = Records(config, store, clock)
    batched.batch_audit(scheduled.append)
    writes = counting_writes(monkeypatch)
    checks(batched, clock)
    assert len(scheduled) == 1 and audit_files(config) == {}  # nothing written yet
    scheduled.pop()()
    assert audit_files(config) == expected
    assert len(writes) == 2  # one a file (a day)
    batched.record_check(device_request(), NOTHING, "192.0.2.3")  # a new batch
    assert len(scheduled) == 1
    batched.close()
    assert len(audit_files(config)["20261206"]) == 3


def test_the_inventory_flush_writes_the_audit_lines_waiting(
    setup: tuple[Config, Store, FixedClock],
) -> None:
    config, store, clock = setup
    records = Records(config, store, clock)
    records.batch_audit(lambda write: None)  # a schedule that never comes
    checks(records, clock)
    assert audit_files(config) == {}
    assert records.flush_inventory() == 3
    assert [len(lines) for lines in audit_files(config).values()] == [3, 2]


def test_the_inventory_keeps_each_devices_last_sighting(
    setup: tuple[Config, Store, FixedClock],
) -> None:
    config, store, clock = setup
    records = Records(config, store, clock)
    checks(records, clock)
    assert records.flush_inventory() == 3
    devices = {d.identity: d for d in store.devices()}
    assert set(devices) == {"00-04-F2-00-00-01", "00-04-F2-00-00-02", "ip:192.0.2.9"}
    first = devices["00-04-F2-00-00-01"]
    assert (first.locale, first.address, first.zone) == ("L2", "192.0.2.1", Zone.INTERNAL)
    assert first.first_seen == first.last_seen == "2026-12-05T23:59:59Z"
    second = devices["00-04-F2-00-00-02"]
    assert (second.locale, second.address) == ("ENU", "192.0.2.2")
    assert second.first_seen == second.last_seen == "2026-12-06T00:00:00Z"  # one flush
    assert records.flush_inventory() == 0


def test_with_an_offload_the_buffer_is_taken_and_put_back_on_the_callers_thread(
    setup: tuple[Config, Store, FixedClock], log_events: list[LogEvent]
) -> None:
    """On PostgreSQL the flush's write runs through `offload` (a thread): the batch is
    taken first, a failed write puts it back for the next flush, and checks recorded
    meanwhile are kept beside it."""
    config, store, clock = setup
    works: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def offload(work: Callable[[], Any]) -> Deferred[Any]:
        works.append((Deferred(), work))
        return works[-1][0]

    records = Records(config, store, clock, offload)
    checks(records, clock)
    flushed = records.flush_inventory()
    assert isinstance(flushed, Deferred) and len(works) == 1
    records.record_check(device_request(mac="00-04-F2-00-00-03"), NOTHING, "192.0.2.3")
    failing, _ = works.pop()
    failing.errback(RuntimeError("the primary went away"))  # as the thread's failure
    assert flushed.result == 0 and store.devices() == []
    retried = records.flush_inventory()
    works.pop()[0].errback(RuntimeError("still away"))  # logged once a streak, below
    assert isinstance(retried, Deferred) and retried.result == 0
    again = records.flush_inventory()
    assert isinstance(again, Deferred)
    done, work = works.pop()
    done.callback(work())  # the write, then its result back
    assert again.result == 4
    assert len(store.devices()) == 4
    failures = [e for e in log_events if "log_failure" in e]
    assert len(failures) == 1
    assert any(
        e.get("log_namespace") == "ucupdates.phone" and e.get("event") == "inventory.resumed"
        for e in log_events
    )
