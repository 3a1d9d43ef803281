"""Faults, in process: a full disk under a log upload and the audit file, files created
under a loose umask, clocks that jump, an image corrupted on disk.

The phone side runs in process (`appliance.testing.phone_client`): real HTTP through the
real site, no sockets. The full disk is a real one: a small tmpfs mounted on the logs
folder (root only; the test says why it skips otherwise). What needs a real serve process
(a client that resets mid-download, the modes `serve` creates) is in test_faults_serve.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import LogEvent

from appliance.admin import accounts, sessions
from appliance.catalogue import Reason, choose_update, import_package, sample_check
from appliance.config import AdminSettings, AuthSettings, Config, load_config
from appliance.ops.checks import check_files
from appliance.phones import Authenticator, FileCheckService, LocalDirectory, PhoneService
from appliance.service import steady_seconds
from appliance.store import Store
from appliance.testing import (
    CU6,
    CU7,
    CU8,
    CX600,
    PHONE_MAC,
    FixedClock,
    MemoryDirectory,
    approved_sample,
    basic_credentials,
    catalog_of,
    device_request,
    fired,
    inline,
    make_rule,
    phone_client,
    settle,
)

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
CHECK = "http://ucupdates.test/RequestHandler/ucdevice.upx"
UPLOAD = "http://ucupdates.test/RequestHandler/Files?filename=boot.clg&mac=00-04-F2-00-00-01"
XML = {"Content-Type": ["text/xml"]}
RUNNING = "4.0.7577.4366"


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def make_service(config: Config, clock: FixedClock) -> tuple[Store, PhoneService]:
    store = approved_sample(config, clock, version="4.0.7577.4400")
    authenticator = Authenticator(
        LocalDirectory(lambda: store), config.auth, lambda: 0.0, run_blocking=inline
    )
    return store, PhoneService(config, store, authenticator, clock)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def phones(tmp_path: Path, clock: FixedClock) -> Iterator[tuple[PhoneService, StubTreq]]:
    config = load_config(None, tmp_path / "data")
    store, service = make_service(config, clock)
    yield service, phone_client(service)
    service.close()
    store.close()


def check(stub: StubTreq) -> int:
    response = settle(stub, stub.post(CHECK, data=sample_check(RUNNING), headers=XML))
    settle(stub, response.content())
    return int(response.code)


def upload(stub: StubTreq, body: bytes, url: str = UPLOAD) -> tuple[int, bytes]:
    response = settle(stub, stub.put(url, data=body))
    return int(response.code), settle(stub, response.content())


# -- file modes whatever the umask ----------------------------------------------------------


def test_a_new_database_and_its_wal_are_private_under_umask_022(tmp_path: Path) -> None:
    path = tmp_path / "ucupdates.sqlite3"
    with umask(0o022):
        store = Store.open(path)
        try:
            with store.transaction():
                store.add_user("phone1", "not-a-real-hash")
            found = {p.name: mode(p) for p in tmp_path.iterdir()}
        finally:
            store.close()
    assert found["ucupdates.sqlite3"] == 0o600, found
    assert found.get("ucupdates.sqlite3-wal", 0o600) == 0o600, found
    assert found.get("ucupdates.sqlite3-shm", 0o600) == 0o600, found
    assert "ucupdates.sqlite3-wal" in found  # WAL mode: it exists while the store is open


def test_an_existing_world_readable_database_loses_its_permissions_for_others(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ucupdates.sqlite3"
    Store.open(path).close()
    os.chmod(path, 0o644)  # as an older version left it under umask 022
    Store.open(path).close()
    assert mode(path) == 0o640


def test_audit_files_and_device_logs_are_private_under_umask_022(
    phones: tuple[PhoneService, StubTreq],
) -> None:
    service, stub = phones
    with umask(0o022):
        assert check(stub) == 200
        assert upload(stub, b"a boot log\n")[0] == 201
    logs = service.config.logs_dir
    audit = list((logs / "Audit").iterdir())
    device_logs = list((logs / "Client" / "CELog").iterdir())
    assert [mode(p) for p in audit] == [0o600]
    assert [mode(p) for p in device_logs] == [0o600]
    for folder in (logs / "Audit", logs / "Client" / "CELog"):
        assert mode(folder) & 0o007 == 0, folder


# -- a full disk ----------------------------------------------------------------------------

TMPFS_BYTES = 1024 * 1024


@contextmanager
def small_disk(where: Path, size: int = TMPFS_BYTES) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted on `where` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def fill(folder: Path, leave: int = 0) -> Path:
    """A file that takes every free byte of `folder`'s file system but `leave` bytes."""
    filler = folder / "filler"
    with filler.open("wb") as f:
        for _ in range(10_000):  # bounded: the tmpfs is 1 MiB
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize - leave
            if free <= 0:
                break
            try:
                f.write(b"\0" * min(free, 65536))
                f.flush()
            except OSError:
                break
    return filler


def names(event_log: list[LogEvent]) -> list[str]:
    return [e["event"] for e in event_log if "event" in e]


def test_a_log_upload_on_a_full_disk_is_refused_with_507_and_leaves_nothing(
    tmp_path: Path, clock: FixedClock, log_events: list[LogEvent]
) -> None:
    config = load_config(None, tmp_path / "data")
    store, service = make_service(config, clock)
    try:
        with small_disk(config.logs_dir):
            stub = phone_client(service)
            uploads = config.logs_dir / "Client" / "CELog"
            filler = fill(config.logs_dir, leave=300_000)
            # the disk fills part-way through the write
            assert upload(stub, b"x" * 600_000) == (507, b"cannot store the log now\n")
            assert list(uploads.iterdir()) == []  # no partial file, no temporary left
            assert upload(stub, b"y" * 2000)[0] == 201  # the service goes on
            filler.unlink()
            filler = fill(config.logs_dir)
            assert upload(stub, b"z" * 2000)[0] == 507  # nothing at all free
            assert len(list(uploads.iterdir())) == 1
            # checks are answered while the audit file cannot be written; one error said so
            assert [check(stub) for _ in range(3)] == [200, 200, 200]
            assert names(log_events).count("audit.failed") == 1
            filler.unlink()
            assert upload(stub, b"z" * 2000)[0] == 201
            assert check(stub) == 200
            assert names(log_events).count("audit.resumed") == 1
            audit = next((config.logs_dir / "Audit").iterdir()).read_text()
            assert len(audit.splitlines()) == 1 and audit.endswith("\n")  # no torn line
    finally:
        service.close()
        store.close()


# -- an image corrupted on disk ---------------------------------------------------------------

FILES = "http://ucupdates.test/DeviceUpdateFiles_Int/"


def offer(stub: StubTreq) -> dict[str, str]:
    response = settle(stub, stub.post(CHECK, data=sample_check(RUNNING), headers=XML))
    body = settle(stub, response.content())
    assert response.code == 200
    return {e.tag: (e.text or "") for e in ET.fromstring(body).iter()}


def image_of(fields: dict[str, str]) -> str:
    return fields["BaseURL"].split("/DeviceUpdateFiles_Int/", 1)[1] + "/" + fields["FileName"]


def download(stub: StubTreq, relative: str) -> tuple[int, bytes]:
    response = settle(stub, stub.get(FILES + relative))
    return int(response.code), settle(stub, response.content())


def flip_byte(path: Path, keep_time: bool = False) -> bytes:
    """Change one byte in the middle of `path` in place; returns the original bytes."""
    original = path.read_bytes()
    times = path.stat()
    middle = len(original) // 2
    path.write_bytes(original[:middle] + bytes([original[middle] ^ 0x01]) + original[middle + 1 :])
    if keep_time:  # as bit rot under the file system would
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
    return original


def test_a_corrupted_image_is_not_served_nor_offered_until_restored(
    phones: tuple[PhoneService, StubTreq], log_events: list[LogEvent]
) -> None:
    service, stub = phones
    fields = offer(stub)
    relative = image_of(fields)
    status, good = download(stub, relative)
    assert status == 200 and hashlib.sha256(good).hexdigest() == fields["SHA256"]
    on_disk = service.config.store_dir / relative
    flip_byte(on_disk)

    status, body = download(stub, relative)
    assert (status, body) == (503, b"this file fails verification; not served\n")
    assert names(log_events).count("file.corrupt") == 1
    fields_now = offer(stub)
    assert fields_now["Downloads"] == "0" and "BaseURL" not in fields_now
    assert download(stub, relative)[0] == 503  # remembered: not hashed again
    assert names(log_events).count("file.corrupt") == 1
    checked = check_files(service.config, service.store, hashes=True)
    assert not checked.ok and "fails its SHA-256" in checked.detail

    on_disk.write_bytes(good)  # restored
    assert download(stub, relative) == (200, good)
    assert names(log_events).count("file.restored") == 1
    assert offer(stub)["Version"] == fields["Version"]
    assert check_files(service.config, service.store, hashes=True).ok


def test_an_image_repaired_by_a_reimport_is_offered_again_at_the_next_check(
    phones: tuple[PhoneService, StubTreq], log_events: list[LogEvent]
) -> None:
    """The import writes the damaged file back from the package; a running serve that had
    found it broken offers the version again without waiting for a download of it."""
    service, stub = phones
    fields = offer(stub)
    relative = image_of(fields)
    flip_byte(service.config.store_dir / relative)
    assert download(stub, relative)[0] == 503
    assert offer(stub)["Downloads"] == "0"

    package = service.config.data_dir.parent / "UCUpdates.cab"
    other = Store.open(service.config.db_path)  # `ucupdates import`, another process
    try:
        result = import_package(other, service.config, package, "test")
    finally:
        other.close()
    assert [path for path, _ in result.repaired] == [relative]
    service.answers.clock = lambda: 10**9  # past the snapshot's next look at the store
    assert offer(stub)["Version"] == fields["Version"]
    assert names(log_events).count("file.restored") == 1


def test_the_start_up_check_finds_corruption_that_kept_the_file_time(
    tmp_path: Path, clock: FixedClock, log_events: list[LogEvent]
) -> None:
    config = load_config(None, tmp_path / "data")
    store, first = make_service(config, clock)
    stub = phone_client(first)
    relative = image_of(offer(stub))
    assert download(stub, relative)[0] == 200
    flip_byte(config.store_dir / relative, keep_time=True)
    assert download(stub, relative)[0] == 200  # same size and time: not read again
    first.close()

    # a restart: the start-up check hashes every referenced file, a chunk a step
    restarted = PhoneService(config, store, first.authenticator, clock)
    steps = sum(1 for _ in restarted.answers.verification_steps())
    assert 1 <= steps <= 100  # bounded: one step per MiB read
    assert names(log_events).count("file.corrupt") == 1
    stub = phone_client(restarted)
    assert offer(stub)["Downloads"] == "0"
    assert download(stub, relative)[0] == 503
    assert not check_files(config, store, hashes=True).ok
    assert check_files(config, store).ok  # without hashes (/health): sizes only
    restarted.close()
    store.close()


def test_a_missing_image_is_not_offered(phones: tuple[PhoneService, StubTreq]) -> None:
    service, stub = phones
    relative = image_of(offer(stub))
    (service.config.store_dir / relative).unlink()
    assert download(stub, relative)[0] == 503
    assert offer(stub)["Downloads"] == "0"


def test_the_start_up_check_runs_in_steps_on_the_reactor_and_ends(
    phones: tuple[PhoneService, StubTreq], log_events: list[LogEvent]
) -> None:
    service, stub = phones
    relative = image_of(offer(stub))
    flip_byte(service.config.store_dir / relative, keep_time=True)
    reactor = Clock()
    checker = FileCheckService(service.answers, reactor)
    checker.startService()
    assert names(log_events).count("file.verified") == 0  # nothing read before the first step
    for _ in range(100):  # bounded: a step every INTERVAL
        if "file.verified" in names(log_events):
            break
        reactor.advance(0.025)
    assert names(log_events).count("file.corrupt") == 1
    assert not reactor.getDelayedCalls()  # the loop ended
    assert offer(stub)["Downloads"] == "0"
    checker.stopService()


# -- clocks that jump -------------------------------------------------------------------------

YEAR = 365 * 86400.0
ADMIN = AdminSettings(
    session_idle_seconds=600,
    session_max_seconds=3600,
    max_failures=3,
    failure_window_seconds=300,
    lockout_seconds=900,
)


def test_the_audit_file_of_a_day_the_clock_went_back_to_is_appended_to(
    phones: tuple[PhoneService, StubTreq], clock: FixedClock
) -> None:
    service, stub = phones
    assert check(stub) == 200
    clock.advance(days=-1)  # back over midnight
    assert check(stub) == 200
    clock.advance(days=1)
    assert check(stub) == 200
    audit = service.config.logs_dir / "Audit"
    lines = {p.name[-12:-4]: len(p.read_text().splitlines()) for p in audit.iterdir()}
    assert lines == {"20261206": 2, "20261205": 1}  # nothing replaced, nothing lost


@pytest.fixture
def admin_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(tmp_path / "admin.sqlite3")
    yield store
    store.close()


def test_an_admin_session_ends_when_the_clock_jumps_forward_past_it(admin_store: Store) -> None:
    alice = accounts.add_account(admin_store, "alice", "admin", "long enough", "test")
    login = sessions.open_session(admin_store, alice, "127.0.0.1", NOW, ADMIN)
    assert sessions.find_session(admin_store, login.token, NOW, ADMIN) is not None
    later = NOW + timedelta(days=400)
    assert sessions.find_session(admin_store, login.token, later, ADMIN) is None
    # and stays ended when the clock comes back
    assert sessions.find_session(admin_store, login.token, NOW, ADMIN) is None


@pytest.mark.parametrize("back", [timedelta(minutes=10), timedelta(days=365)])
def test_a_backward_jump_does_not_keep_an_admin_session_open_past_its_limits(
    admin_store: Store, back: timedelta
) -> None:
    """Seen "in the future", a session's idle limit would never run out until the clock
    caught up again: a year of a session nobody uses."""
    alice = accounts.add_account(admin_store, "alice", "admin", "long enough", "test")
    login = sessions.open_session(admin_store, alice, "127.0.0.1", NOW, ADMIN)
    earlier = NOW - back
    assert sessions.find_session(admin_store, login.token, earlier, ADMIN) is None
    fresh = sessions.open_session(admin_store, alice, "127.0.0.1", earlier, ADMIN)
    idle = earlier + timedelta(seconds=ADMIN.session_idle_seconds + 1)
    assert sessions.find_session(admin_store, fresh.token, idle, ADMIN) is None


def test_a_backward_jump_does_not_hold_an_admin_lockout_until_the_clock_catches_up(
    admin_store: Store,
) -> None:
    accounts.add_account(admin_store, "alice", "admin", "long enough", "test")

    def fail(at: datetime) -> str | None:
        account = admin_store.admin_account("alice")
        assert account is not None
        return accounts.record_failure(admin_store, account, at, ADMIN)

    until = [fail(NOW) for _ in range(3)][-1]
    assert until is not None
    account = admin_store.admin_account("alice")
    assert account is not None
    longest = ADMIN.lockout_seconds
    assert accounts.locked_until(account, NOW, longest) == until
    year_ago = NOW - timedelta(days=365)
    assert accounts.locked_until(account, year_ago, longest) is None
    # failures counted "in the future" start a new window instead of adding up for a year
    assert fail(year_ago) is None
    addresses = accounts.AddressFailures(ADMIN)
    for _ in range(3):
        addresses.fail("192.0.2.1", 1_000_000.0)
    assert addresses.locked("192.0.2.1", 1_000_001.0) == pytest.approx(899.0)
    assert addresses.locked("192.0.2.1", 1_000_000.0 - YEAR) is None


class JumpingWall:
    """A wall clock and a monotonic one: a jump moves only the wall clock."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.elapsed = 50.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.elapsed += seconds


def test_a_phone_lockout_lasts_its_length_whatever_the_wall_clock_does() -> None:
    """The authenticator `serve` builds counts lockouts on a clock that a wall clock set
    back a year does not move: the lockout ends after lockout_seconds, not a year later."""
    settings = AuthSettings(max_failures=3, failure_window=100, lockout_seconds=300)
    times = JumpingWall()
    clock = steady_seconds(lambda: times.wall, lambda: times.elapsed)
    auth = Authenticator(
        MemoryDirectory(alice="secret"), settings, clock, run_blocking=inline, key=b"k" * 32
    )

    def attempt(password: str) -> int:
        d = auth.authenticate(basic_credentials("alice", password), "192.0.2.7")
        return int(fired(d).status)

    statuses = [attempt(f"guess{i}") for i in range(4)]
    assert statuses[-1] == 429  # locked out
    times.wall -= YEAR  # the clock is set back a year
    times.advance(settings.lockout_seconds + settings.failure_window + 1)
    assert attempt("guess again") == 401  # checked again: the lockout is over
    times.wall += 2 * YEAR  # and forward two
    assert clock() - times.elapsed == pytest.approx(1_800_000_000.0 - 50.0)


def test_the_decision_does_not_offer_a_broken_update_and_says_why() -> None:
    rule = make_rule(CU8, pending=CU6)
    broken = dataclasses.replace(catalog_of(rule), broken=frozenset({(CX600.folded(), CU8)}))
    decision = choose_update(device_request(version=CU7), broken)
    assert (decision.offers, decision.reason) == ((), Reason.BROKEN_FILES)
    assert "fails verification" in decision.detail
    # only the broken version is held back: a test device still gets the pending one
    test_device = device_request(version=CU7, mac=PHONE_MAC)
    tested = dataclasses.replace(broken, test_macs=frozenset({PHONE_MAC}))
    assert [o.version for o in choose_update(test_device, tested).offers] == [CU6]
