"""HTTP Basic for external phones: hashes, names, parsing, cache, lockout, local users."""

from __future__ import annotations

import base64
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.logger import LogEvent, formatEvent

from appliance.config import AuthSettings
from appliance.passwords import (
    ARGON2_MEMORY_KIB,
    ARGON2_TIME_COST,
    AuthError,
    hash_password,
    validate_password,
    validate_user_name,
    verify_password,
)
from appliance.phones.auth import (
    Authenticator,
    AuthResult,
    ThreadPoolRunner,
    parse_basic,
)
from appliance.phones.directories import LocalDirectory
from appliance.store import DuplicateError, Store, StoreError
from appliance.testing import FixedClock, MemoryDirectory, SecondsClock, memory_store
from appliance.testing import basic_credentials as basic
from appliance.testing import fired as result

SETTINGS = AuthSettings(
    cache_seconds=60,
    max_failures=3,
    failure_window=100,
    lockout_seconds=300,
    lockout_check_seconds=10,
    max_address_failures=8,
    known_good_seconds=3600,
)
KEY = b"k" * 32


class HeldRunner:
    """A run_blocking that holds every check until release()."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[[], bool], defer.Deferred[bool]]] = []

    def __call__(self, work: Callable[[], bool]) -> defer.Deferred[bool]:
        d: defer.Deferred[bool] = defer.Deferred()
        self.held.append((work, d))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for work, d in held:
            d.callback(work())


def make(
    directory: Any, clock: SecondsClock, settings: AuthSettings = SETTINGS, **kw: Any
) -> Authenticator:
    kw.setdefault("run_blocking", defer.maybeDeferred)
    return Authenticator(directory, settings, clock, key=KEY, **kw)


# -- password hashes --------------------------------------------------------------------


def test_hash_is_argon2id_with_the_stated_parameters_and_verifies() -> None:
    h = hash_password("correct horse")
    assert h.startswith(f"$argon2id$v=19$m={ARGON2_MEMORY_KIB},t={ARGON2_TIME_COST},p=1$")
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "correct horsE")
    assert not verify_password(h, "")
    assert hash_password("correct horse") != h  # salted


@pytest.mark.parametrize("damaged", ["", "plain", "$argon2id$v=19$m=8,t=1,p=1$xx$yy", "$2b$12$x"])
def test_a_damaged_hash_never_verifies(damaged: str) -> None:
    assert verify_password(damaged, "anything") is False


# -- names and passwords ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["alice", "CONTOSO\\alice", "alice@contoso.com", "Ålice Smith", "o'brien", "a" * 256],
)
def test_valid_user_names(name: str) -> None:
    assert validate_user_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "1 to 256"),
        ("a" * 257, "1 to 256"),
        ("al:ice", "':'"),
        ("CONTOSO\\al:ice", "':'"),
        ("alice\n", "printable"),
        ("al\x00ice", "printable"),
        ("al\tice", "printable"),
        (" alice", "space"),
        ("alice ", "space"),
        ("A\\B\\alice", "DOMAIN"),
        ("\\alice", "DOMAIN"),
        ("CONTOSO\\", "DOMAIN"),
        ("alice@", "DOMAIN"),
        ("@contoso.com", "DOMAIN"),
        ("a@b@c", "DOMAIN"),
        ("CONTOSO\\alice@contoso.com", "DOMAIN"),
    ],
)
def test_invalid_user_names(name: str, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        validate_user_name(name)


@pytest.mark.parametrize("password", ["x", "a" * 1024, "pässwörd", " spaced out ", "with:colon"])
def test_valid_passwords(password: str) -> None:
    assert validate_password(password) == password


@pytest.mark.parametrize(
    ("password", "message"),
    [("", "1 to 1024"), ("a" * 1025, "1 to 1024"), ("a\x00b", "NUL")],
)
def test_invalid_passwords(password: str, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        validate_password(password)


# -- parsing the header ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"Basic", None, id="no-token"),
        pytest.param(b"Bearer YWxpY2U6cHc=", None, id="not-basic"),
        pytest.param(b"NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw==", None),
        pytest.param(b"Basic YWxpY2U6cHc=", ("alice", "pw"), id="plain"),
        pytest.param(b"basic YWxpY2U6cHc=", ("alice", "pw"), id="lower-case-scheme"),
        pytest.param(b"  BASIC   YWxpY2U6cHc=  ", ("alice", "pw"), id="spaces"),
        pytest.param(b"Basic YWxpY2U6cHc", ("alice", "pw"), id="missing-padding"),
        pytest.param(b"Basic YWxp Y2U6\tcHc=", ("alice", "pw"), id="stray-whitespace"),
        pytest.param(b"Basic !!!!", None, id="bad-base64"),
        pytest.param(b"Basic YWxpY2U", None, id="no-colon"),
        pytest.param(b"Basic Y", None, id="truncated-base64"),
        pytest.param(basic("alice", "p:w:d"), ("alice", "p:w:d"), id="colon-in-password"),
        pytest.param(basic("alice", ""), ("alice", ""), id="empty-password"),
        pytest.param(basic("", "pw"), ("", "pw"), id="empty-user"),
        pytest.param(basic("jörg", "pässword"), ("jörg", "pässword"), id="utf-8"),
        pytest.param(
            basic("jörg", "pässword", "latin-1"), ("jörg", "pässword"), id="latin-1-fallback"
        ),
        pytest.param(
            b"Basic " + base64.b64encode(b"\xff\xfe:\x80"), ("\xff\xfe", "\x80"), id="non-utf-8"
        ),
    ],
)
def test_parse_basic(header: bytes | None, expected: tuple[str, str] | None) -> None:
    assert parse_basic(header) == expected


# -- the authenticator: cache ----------------------------------------------------------


def test_a_success_is_remembered_for_cache_seconds_only() -> None:
    clock = SecondsClock()
    directory = MemoryDirectory(alice="secret")
    auth = make(directory, clock)
    assert result(auth.authenticate(basic("alice", "secret"), "192.0.2.1")) == AuthResult(
        True, 200, "ok", user="alice"
    )
    clock.now += 59
    d = auth.authenticate(basic("alice", "secret"), "192.0.2.2")
    assert d.called  # answered synchronously
    assert result(d) == AuthResult(True, 200, "cached", user="alice")
    assert len(directory.calls) == 1
    clock.now += 1
    assert result(auth.authenticate(basic("alice", "secret"), "192.0.2.1")).reason == "ok"
    assert len(directory.calls) == 2


def test_the_cache_is_per_password_and_wrong_passwords_are_not_cached() -> None:
    clock = SecondsClock()
    directory = MemoryDirectory(alice="secret")
    auth = make(directory, clock)
    assert result(auth.authenticate(basic("alice", "wrong"), "192.0.2.1")).status == 401
    assert result(auth.authenticate(basic("alice", "wrong"), "192.0.2.1")).status == 401
    assert len(directory.calls) == 2
    assert result(auth.authenticate(basic("alice", "secret"), "192.0.2.1")).reason == "ok"
    # A wrong password of a cached user still goes to the directory, and fails.
    assert result(auth.authenticate(basic("alice", "secreT"), "192.0.2.9")).status == 401
    assert len(directory.calls) == 4
    assert result(auth.authenticate(basic("alice", "secret"), "192.0.2.9")).reason == "cached"


def test_the_cache_is_bounded_and_drops_the_oldest() -> None:
    clock = SecondsClock()
    directory = MemoryDirectory(**{f"u{i}": "pw" for i in range(5)})
    auth = make(directory, clock, cache_size=3)
    for i in range(5):
        assert result(auth.authenticate(basic(f"u{i}", "pw"), "192.0.2.1")).ok
    assert auth.cached_count == 3
    directory.calls.clear()
    assert result(auth.authenticate(basic("u4", "pw"), "192.0.2.1")).reason == "cached"
    assert result(auth.authenticate(basic("u0", "pw"), "192.0.2.1")).reason == "ok"
    assert directory.calls == [("u0", "pw")]


def test_forget_drops_remembered_successes() -> None:
    clock = SecondsClock()
    directory = MemoryDirectory(alice="secret", bob="pw")
    auth = make(directory, clock)
    result(auth.authenticate(basic("alice", "secret"), "192.0.2.1"))
    result(auth.authenticate(basic("bob", "pw"), "192.0.2.1"))
    auth.forget("ALICE")
    assert result(auth.authenticate(basic("alice", "secret"), "192.0.2.1")).reason == "ok"
    assert result(auth.authenticate(basic("bob", "pw"), "192.0.2.1")).reason == "cached"


# -- the authenticator: no, malformed and unacceptable credentials ---------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "no credentials"),
        (b"", "no credentials"),
        (b"Negotiate YIIG", "no credentials"),
        (b"Basic !!!!", "malformed credentials"),
        (b"Basic YWxpY2U=", "malformed credentials"),  # "alice", no colon
    ],
)
def test_missing_or_malformed_credentials_are_401_without_the_directory(
    header: bytes | None, reason: str
) -> None:
    directory = MemoryDirectory(alice="secret")
    auth = make(directory, SecondsClock())
    for _ in range(10):  # and they do not lock the address out
        assert result(auth.authenticate(header, "192.0.2.1")) == AuthResult(False, 401, reason)
    assert directory.calls == []


@pytest.mark.parametrize(
    "header",
    [basic("alice", ""), basic("", "secret"), basic("al\nice", "secret"), basic("a", "x" * 1025)],
)
def test_unacceptable_credentials_fail_without_the_directory(header: bytes) -> None:
    directory = MemoryDirectory(alice="secret")
    auth = make(directory, SecondsClock())
    assert result(auth.authenticate(header, "192.0.2.1")) == AuthResult(
        False, 401, "bad credentials"
    )
    assert directory.calls == []
    assert auth.tracked_counts == (1, 1)  # counted as a failure


# -- the authenticator: lockouts (docs/security.md, Phone lockouts) -------------------
#
# SETTINGS: max_failures=3 per user name and per (user name, address) within 100 s,
# max_address_failures=8 per address; a lockout lasts 300 s, during which a password that
# is not the remembered right one is checked at most once per 10 s per key.

X, Y = "203.0.113.9", "198.51.100.7"  # X: the guesser's address (a NAT, say)


def lock_out(auth: Authenticator, user: str = "alice", source: str = X) -> None:
    """Guess `user` from `source` until the lockout starts (max_failures + 1 failures)."""
    got = [result(auth.authenticate(basic(user, f"guess{i}"), source)) for i in range(4)]
    assert [g.status for g in got] == [401, 401, 401, 429]
    assert got[-1].reason == "locked out"


def test_a_lockout_holds_a_guesser_to_one_check_per_interval() -> None:
    """Defect 5 (c): a guesser keeps being refused, with the checks bounded."""
    clock = SecondsClock()
    directory = MemoryDirectory(alice="secret")
    auth = make(directory, clock)
    lock_out(auth)
    directory.calls.clear()
    got = result(auth.authenticate(basic("alice", "guess"), X))
    assert (got.status, got.reason, got.retry_after) == (429, "locked out", 10)
    statuses = set()
    for i in range(1000):  # a guess every 0.3 s for 300 s: the whole lockout
        got = result(auth.authenticate(basic("alice", f"more{i}"), X))
        statuses.add((got.status, got.reason))
        clock.now += 0.3
    assert statuses == {(429, "locked out")}  # checked ones too: the lockout goes on
    assert len(directory.calls) <= 300 / 10 + 1
    # Guessing from other addresses as well adds at most one check per interval.
    directory.calls.clear()
    for i in range(1000):
        result(auth.authenticate(basic("alice", f"spread{i}"), f"192.0.2.{i % 200}"))
        clock.now += 0.1
    assert len(directory.calls) <= 3 + 2 * (100 / 10 + 1)


def test_the_right_password_gets_in_during_a_lockout_caused_by_others() -> None:
    """Defect 5 (a): six wrong passwords for alice from X, then alice's own password."""
    clock = SecondsClock()
    directory = MemoryDirectory(alice="secret")
    auth = make(directory, clock)
    lock_out(auth)
    # From another address: at once (the guesser's checks never take its slot).
    assert result(auth.authenticate(basic("alice", "secret"), Y)) == AuthResult(
        True, 200, "ok", user="alice"
    )
    # From the guesser's own address, never signed in from: after the interval at most.
    auth = make(directory, clock)
    lock_out(auth)
    got = result(auth.authenticate(basic("alice", "secret"), X))
    assert (got.status, got.reason, got.retry_after) == (429, "locked out", 10)
    clock.now += 10
    assert result(auth.authenticate(basic("alice", "secret"), X)).ok
    # A guess in between does not take that turn away for long: one check per interval.
    got = result(auth.authenticate(basic("alice", "guess"), X))
    assert (got.status, got.retry_after) == (429, 10)


def test_the_remembered_right_password_passes_every_lockout_at_once() -> None:
    clock = SecondsClock()
    directory = MemoryDirectory(alice="secret")
    auth = make(directory, clock)
    assert result(auth.authenticate(basic("alice", "secret"), X)).ok
    clock.now += 61  # past cache_seconds: no longer cached, still the known right one
    lock_out(auth)
    for i in range(9):  # and the address too (max_address_failures=8)
        result(auth.authenticate(basic(f"user{i}", "guess"), X))
    directory.calls.clear()
    for source in (X, Y):
        got = result(auth.authenticate(basic("alice", "secret"), source))
        assert got.ok, source
    assert directory.calls == [("alice", "secret")]  # checked (then cached), not waved in
    assert result(auth.authenticate(basic("alice", "guess"), X)).status == 429
    # Once the directory says no (the password changed), it is an ordinary guess again.
    directory.users["alice"] = "changed"
    clock.now += 61
    assert result(auth.authenticate(basic("alice", "secret"), Y)).status == 429
    clock.now += 10
    assert result(auth.authenticate(basic("alice", "changed"), Y)).ok


def test_a_guesser_at_a_nat_does_not_lock_out_the_other_users_there() -> None:
    """Defect 5 (b): six wrong passwords for alice from the NAT address X, then bob."""
    clock = SecondsClock()
    directory = MemoryDirectory(alice="secret", bob="pw", carol="pw3")
    auth = make(directory, clock)
    lock_out(auth)
    assert result(auth.authenticate(basic("bob", "pw"), X)) == AuthResult(
        True, 200, "ok", user="bob"
    )
    # A sprayer (one guess per user name) is held back per address past
    # max_address_failures (8 failures within the window)...
    for i in range(4):
        assert result(auth.authenticate(basic(f"user{i}", "guess"), X)).status == 401
    got = result(auth.authenticate(basic("user4", "guess"), X))
    assert (got.status, got.retry_after) == (429, 10)
    directory.calls.clear()
    for i in range(5, 100):
        result(auth.authenticate(basic(f"user{i}", "guess"), X))
    assert directory.calls == []
    # ...a new phone there gets in at the address's next check (within 10 s),
    got = result(auth.authenticate(basic("carol", "pw3"), X))
    assert (got.status, got.reason, got.retry_after) == (429, "locked out", 10)
    clock.now += 10
    assert result(auth.authenticate(basic("carol", "pw3"), X)).ok
    # ...and the phones that signed in from it before go on at once (bob, not cached now).
    clock.now += 61
    assert result(auth.authenticate(basic("bob", "pw"), X)).ok
    assert result(auth.authenticate(basic("bob", "wrong"), X)).status == 401
    # Other addresses are not affected at all.
    assert result(auth.authenticate(basic("user1", "pw"), Y)).status == 401


def test_missing_credentials_are_401_even_from_a_locked_out_address() -> None:
    auth = make(MemoryDirectory(), SecondsClock())
    for i in range(9):
        result(auth.authenticate(basic(f"user{i}", "guess"), X))
    assert result(auth.authenticate(None, X)) == AuthResult(False, 401, "no credentials")


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = SecondsClock()
    auth = make(MemoryDirectory(alice="secret"), clock)
    for _ in range(3):
        assert result(auth.authenticate(basic("alice", "guess"), "192.0.2.1")).status == 401
    clock.now += 100
    for _ in range(3):
        assert result(auth.authenticate(basic("alice", "guess"), "192.0.2.1")).status == 401
    assert result(auth.authenticate(basic("alice", "guess"), "192.0.2.1")).status == 429


def test_a_lockout_ends_after_lockout_seconds() -> None:
    clock = SecondsClock()
    directory = MemoryDirectory(alice="secret")
    auth = make(directory, clock)
    lock_out(auth)
    clock.now += 299
    assert result(auth.authenticate(basic("alice", "guess"), X)).status == 429
    clock.now += 300  # the last failure was checked at 299: its lockout was not renewed
    assert result(auth.authenticate(basic("alice", "guess"), X)).status == 401


def test_a_sign_in_gives_a_guesser_no_new_tries() -> None:
    """A success clears no failures: a phone's sign-in must not reset a guesser's count."""
    clock = SecondsClock()
    auth = make(MemoryDirectory(alice="secret"), clock)
    for i in range(3):
        assert result(auth.authenticate(basic("alice", "guess"), f"192.0.2.{i}")).status == 401
    assert result(auth.authenticate(basic("alice", "secret"), "192.0.2.50")).ok
    got = result(auth.authenticate(basic("alice", "guess"), "198.51.100.3"))
    assert (got.status, got.reason) == (429, "locked out")
    # ...and the phone itself goes on: cached, and then its address is trusted.
    assert result(auth.authenticate(basic("alice", "secret"), "192.0.2.50")).reason == "cached"


def test_tracked_failures_are_bounded() -> None:
    clock = SecondsClock()
    auth = make(MemoryDirectory(), clock, tracked_keys=10)
    for i in range(50):
        result(auth.authenticate(basic(f"user{i}", "guess"), f"10.0.0.{i}"))
    assert auth.tracked_counts == (10, 10)


# -- the authenticator: concurrency ----------------------------------------------------


def test_concurrent_requests_with_the_same_credentials_share_one_check() -> None:
    directory = MemoryDirectory(alice="secret")
    runner = HeldRunner()
    auth = make(directory, SecondsClock(), run_blocking=runner)
    waiting = [auth.authenticate(basic("alice", "secret"), f"192.0.2.{i}") for i in range(3)]
    assert len(runner.held) == 1
    assert not any(d.called for d in waiting)
    runner.release()
    assert [result(d).ok for d in waiting] == [True, True, True]
    assert len(directory.calls) == 1


def test_a_shared_failed_check_counts_once_per_user_and_once_per_address() -> None:
    directory = MemoryDirectory(alice="secret")
    runner = HeldRunner()
    auth = make(directory, SecondsClock(), run_blocking=runner)
    waiting = [auth.authenticate(basic("alice", "guess"), "192.0.2.1") for _ in range(5)]
    runner.release()
    assert {result(d).status for d in waiting} == {401}

    def fail(source: str) -> int:
        d = auth.authenticate(basic("alice", f"from {source}"), source)
        runner.release()
        return result(d).status

    # One failure so far for alice and for 192.0.2.1, not five: two more are still 401.
    assert [fail("198.51.100.1"), fail("192.0.2.1")] == [401, 401]
    assert fail("198.51.100.2") == 429


def test_parallel_guesses_cannot_outrun_the_lockout() -> None:
    directory = MemoryDirectory(alice="secret")
    runner = HeldRunner()
    auth = make(directory, SecondsClock(), run_blocking=runner)  # max_failures=3
    waiting = [auth.authenticate(basic("alice", f"g{i}"), f"192.0.2.{i}") for i in range(4)]
    assert len(runner.held) == 4
    got = result(auth.authenticate(basic("alice", "secret"), "192.0.2.99"))
    assert (got.status, got.reason) == (429, "throttled")
    assert len(runner.held) == 4
    runner.release()
    assert [result(d).status for d in waiting] == [401, 401, 401, 429]


def test_at_most_max_pending_checks_wait_for_the_pool() -> None:
    runner = HeldRunner()
    auth = make(MemoryDirectory(), SecondsClock(), run_blocking=runner, max_pending=2)
    auth.authenticate(basic("a", "x"), "192.0.2.1")
    auth.authenticate(basic("b", "x"), "192.0.2.1")
    got = result(auth.authenticate(basic("c", "x"), "192.0.2.2"))
    assert (got.status, got.reason, got.retry_after) == (429, "busy", 5)
    runner.release()
    d = auth.authenticate(basic("c", "x"), "192.0.2.2")
    runner.release()
    assert result(d).status == 401


def test_checks_in_flight_are_bounded_per_address() -> None:
    """One address cannot fill the pool with guesses for many user names (nor outrun its
    failure budget), while other addresses go on."""
    runner = HeldRunner()
    auth = make(MemoryDirectory(), SecondsClock(), run_blocking=runner)  # 8 per address
    waiting = [auth.authenticate(basic(f"user{i}", "guess"), X) for i in range(20)]
    assert len(runner.held) == 9  # 8 failures to come, then one more would pass the budget
    assert {(got.status, got.reason) for got in map(result, waiting[9:])} == {(429, "throttled")}
    elsewhere = auth.authenticate(basic("user0", "other guess"), Y)
    assert len(runner.held) == 10
    runner.release()
    assert result(elsewhere).status == 401


def test_a_directory_error_is_503_and_not_a_failure() -> None:
    class Broken:
        def verify(self, username: str, password: str) -> bool:
            raise OSError("database is locked")

    auth = make(Broken(), SecondsClock())
    for _ in range(10):
        got = result(auth.authenticate(basic("alice", "secret"), "192.0.2.1"))
        assert (got.ok, got.status, got.reason) == (False, 503, "directory error")
    assert auth.tracked_counts == (0, 0)


# -- the authenticator: logs -----------------------------------------------------------


def test_failures_and_lockouts_are_logged_with_fields_and_never_the_password(
    log_events: list[LogEvent],
) -> None:
    auth = make(MemoryDirectory(alice="secret"), SecondsClock())
    for _ in range(4):
        result(auth.authenticate(basic("alice", "hunter2-guess"), "192.0.2.7"))
    result(auth.authenticate(basic("alice", "secret"), "192.0.2.8"))
    failures = [e for e in log_events if e.get("reason") == "bad credentials"]
    assert len(failures) == 4
    assert {(e["user"], e["source"]) for e in failures} == {("alice", "192.0.2.7")}
    lockouts = [e for e in log_events if "until" in e]
    # The user name, and the user name from that address (the address has one failure).
    assert {(e.get("user"), e.get("source")) for e in lockouts} == {
        ("alice", None),
        ("alice", "192.0.2.7"),
    }
    assert {e["event"] for e in lockouts} == {"auth.lockout"}
    assert all(e["until"] == 1_000_000.0 + 300 for e in lockouts)
    text = "\n".join(str(formatEvent(e)) + repr(e) for e in log_events)
    assert "hunter2" not in text
    assert "secret" not in text


# -- the local directory ---------------------------------------------------------------


@pytest.fixture
def store() -> Iterator[Store]:
    s = memory_store()
    yield s
    s.close()


def test_local_directory_checks_store_users(store: Store) -> None:
    store.add_user("alice", hash_password("secret"))
    store.add_user("CONTOSO\\bob", hash_password("pw"))
    store.add_user("carol", hash_password("pw"))
    store.set_user_disabled("carol", True)
    directory = LocalDirectory(lambda: store)
    assert directory.verify("alice", "secret")
    assert directory.verify("ALICE", "secret")  # names match without regard to case
    assert directory.verify("contoso\\bob", "pw")
    assert not directory.verify("alice", "Secret")
    assert not directory.verify("nobody", "secret")
    assert not directory.verify("carol", "pw")  # disabled
    store.set_user_disabled("carol", False)
    assert directory.verify("carol", "pw")
    store.set_user_password("alice", hash_password("new"))
    assert not directory.verify("alice", "secret")
    assert directory.verify("alice", "new")
    store.remove_user("alice")
    assert not directory.verify("alice", "new")


def test_local_directory_spends_as_long_on_unknown_users(store: Store) -> None:
    store.add_user("alice", hash_password("secret"))
    directory = LocalDirectory(lambda: store)
    directory.verify("nobody", "x")  # the first one makes the dummy hash

    def fastest(name: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            directory.verify(name, "wrong")
            times.append(time.perf_counter() - start)
        return min(times)

    assert fastest("nobody") > 0.5 * fastest("alice")


def test_authenticator_over_local_users_in_a_real_thread_pool(tmp_path: Path) -> None:
    """Checks run on pool threads, each with its own connection to the database file."""
    path = tmp_path / "ucupdates.sqlite3"
    admin = Store.open(path)
    admin.add_user("alice", hash_password("secret"))

    class Reactor:
        def __init__(self) -> None:
            self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()
            self.shutdown: list[Callable[[], None]] = []

        def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
            self.calls.put((f, args))

        def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
            self.shutdown.append(f)

    reactor = Reactor()
    auth = Authenticator(
        LocalDirectory.at(path), SETTINGS, SecondsClock(), run_blocking=ThreadPoolRunner(reactor)
    )
    try:
        pending = [
            auth.authenticate(basic("alice", "secret"), "192.0.2.1"),
            auth.authenticate(basic("alice", "wrong"), "192.0.2.1"),
            auth.authenticate(basic("nobody", "secret"), "192.0.2.1"),
        ]
        deadline = time.monotonic() + 30
        while not all(d.called for d in pending):
            f, args = reactor.calls.get(timeout=max(0.1, deadline - time.monotonic()))
            f(*args)
        assert [result(d).status for d in pending] == [200, 401, 401]
        assert threading.current_thread() is threading.main_thread()
    finally:
        for stop in reactor.shutdown:
            stop()
        admin.close()


# -- the store's users -----------------------------------------------------------------


def test_store_users() -> None:
    clock = FixedClock(datetime(2013, 4, 2, 9, 30, tzinfo=UTC))
    store = memory_store(clock)
    alice = store.add_user("Alice", "$argon2id$one")
    assert (alice.name, alice.password_hash, alice.disabled) == ("Alice", "$argon2id$one", False)
    assert alice.created_at == alice.updated_at == "2013-04-02T09:30:00Z"
    with pytest.raises(DuplicateError, match="exists already"):
        store.add_user("ALICE", "$argon2id$two")
    store.add_user("bob", "$argon2id$bob")
    assert [u.name for u in store.users()] == ["Alice", "bob"]
    assert store.user("alice") == alice
    assert store.user("nobody") is None

    clock.advance(hours=1)
    store.set_user_password("aLiCe", "$argon2id$three")
    changed = store.user("alice")
    assert changed is not None
    assert changed.password_hash == "$argon2id$three"
    assert (changed.created_at, changed.updated_at) == (
        "2013-04-02T09:30:00Z",
        "2013-04-02T10:30:00Z",
    )
    store.set_user_disabled("bob", True)
    assert [u.disabled for u in store.users()] == [False, True]

    for method in (
        lambda: store.set_user_password("nobody", "$argon2id$x"),
        lambda: store.set_user_disabled("nobody", True),
        lambda: store.remove_user("nobody"),
    ):
        with pytest.raises(StoreError, match="no user 'nobody'"):
            method()
    store.remove_user("ALICE")
    assert [u.name for u in store.users()] == ["bob"]
    store.add_user("alice", "$argon2id$again")  # the name is free again
