"""HTTP Basic for external phones (docs/protocol.md §2): the authenticator.

Checking a password is slow on purpose (argon2id, or a network round trip for LDAP: see
`appliance.phones.directories`), so the authenticator remembers a success for
`auth.cache_seconds` under a keyed HMAC of the credentials, runs every real check off the
reactor thread, and refuses guessing: more than `auth.max_failures` failures within
`auth.failure_window` seconds, per user name and per client address, lock that name or
address out for `auth.lockout_seconds`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from appliance.config import AuthSettings
from appliance.passwords import AuthError, validate_password, validate_user_name
from appliance.phones.directories import Directory, loggable_name

log = Logger()


def _acceptable(username: str, password: str) -> bool:
    try:
        validate_user_name(username)
        validate_password(password)
    except AuthError:
        return False
    return True


# -- HTTP Basic -------------------------------------------------------------------------


def parse_basic(header: bytes | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` value, or None. Never raises.

    Lenient: any case of "Basic", missing base64 padding and stray characters are accepted;
    the decoded text is UTF-8, or Latin-1 when it is not valid UTF-8.
    """
    if not header:
        return None
    parts = header.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != b"basic":
        return None
    token = re.sub(rb"[^A-Za-z0-9+/]", b"", parts[1])
    try:
        raw = base64.b64decode(token + b"=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, colon, password = text.partition(":")
    return (user, password) if colon else None


def _is_basic(header: bytes | None) -> bool:
    parts = (header or b"").strip().split(None, 1)
    return bool(parts) and parts[0].lower() == b"basic"


class AuthReason(StrEnum):
    """Why a request was let in or refused; the value is the text logs and bodies show."""

    OK = "ok"
    CACHED = "cached"
    NO_CREDENTIALS = "no credentials"
    MALFORMED = "malformed credentials"
    BAD_CREDENTIALS = "bad credentials"
    LOCKED_OUT = "locked out"
    THROTTLED = "throttled"
    BUSY = "busy"
    DIRECTORY_ERROR = "directory error"


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    status: int  # 200 ok, 401 bad or no credentials, 429 throttled or locked out, 503
    reason: AuthReason
    retry_after: int | None = None  # seconds, for a Retry-After header
    user: str | None = None  # the name as the client sent it, when ok


NO_CREDENTIALS = AuthResult(False, 401, AuthReason.NO_CREDENTIALS)
MALFORMED = AuthResult(False, 401, AuthReason.MALFORMED)

RunBlocking = Callable[[Callable[[], bool]], "defer.Deferred[bool]"]


class ThreadPoolRunner:
    """Runs blocking checks in a small dedicated thread pool (argon2 or LDAP must not stall
    the reactor, nor take every thread of the reactor's shared pool). The pool starts on
    first use and stops when `reactor` shuts down."""

    def __init__(self, reactor: Any, threads: int = 2) -> None:
        self._reactor = reactor
        self._threads = threads
        self._pool: ThreadPool | None = None

    def __call__(self, work: Callable[[], bool]) -> defer.Deferred[bool]:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self._threads, name="auth")
            self._pool.start()
            self._reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return deferToThreadPool(self._reactor, self._pool, work)


CACHE_SIZE = 10_000  # remembered successes
TRACKED_KEYS = 100_000  # user names, and separately client addresses, with failures
MAX_PENDING = 64  # distinct checks waiting for or running in the pool
BUSY_RETRY_AFTER = 5  # seconds


@dataclass(slots=True)
class _Record:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class _Failures:
    """Recent failures and lockouts per key, the oldest-touched key dropped beyond a bound."""

    def __init__(self, limit: int, window: float, lockout: float, max_keys: int) -> None:
        self._limit = limit
        self._window = window
        self._lockout = lockout
        self._max_keys = max_keys
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def locked_until(self, key: str, now: float) -> float | None:
        record = self._records.get(key)
        if record is None or record.locked_until <= now:
            return None
        return record.locked_until

    def recent(self, key: str, now: float) -> int:
        record = self._records.get(key)
        if record is None:
            return 0
        return sum(1 for t in record.times if now - t < self._window)

    def fail(self, key: str, now: float) -> float | None:
        """Count a failure; returns the end of the lockout when this one starts it."""
        record = self._records.pop(key, None) or _Record()
        self._records[key] = record
        while len(self._records) > self._max_keys:
            self._records.popitem(last=False)
        record.times = [t for t in record.times if now - t < self._window][-self._limit :]
        record.times.append(now)
        if len(record.times) > self._limit:
            record.times = []
            record.locked_until = now + self._lockout
            return record.locked_until
        return None

    def clear(self, key: str) -> None:
        self._records.pop(key, None)


@dataclass
class _Check:
    """One directory check in flight, and the requests waiting for its answer."""

    username: str
    user_key: str
    waiters: list[tuple[defer.Deferred[AuthResult], str]]


class Authenticator:
    """Decides HTTP Basic requests. Use it from the reactor thread only.

    `clock` gives seconds (reactor.seconds). `run_blocking` runs a directory check and
    returns a Deferred of its bool: the service passes a ThreadPoolRunner on its reactor,
    tests pass `defer.maybeDeferred` to run checks inline.

    Order of decisions: a locked-out address, then missing or malformed credentials, then a
    locked-out user name (all answered without the directory, even for the right password),
    then the cache of recent successes, then the directory. A success clears the user name's
    failures (not the address's). Concurrent requests with the same uncached credentials
    share one check; at most `max_failures` + 1 checks per user name run or are recent at a
    time, so parallel guesses cannot outrun the lockout.
    """

    def __init__(
        self,
        directory: Directory,
        settings: AuthSettings,
        clock: Callable[[], float],
        key: bytes | None = None,
        *,
        run_blocking: RunBlocking,
        cache_size: int = CACHE_SIZE,
        tracked_keys: int = TRACKED_KEYS,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._directory = directory
        self._settings = settings
        self._clock = clock
        self._key = key if key is not None else secrets.token_bytes(32)
        self._run_blocking = run_blocking
        self._cache_size = cache_size
        self._max_pending = max_pending
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._users = _Failures(
            settings.max_failures, settings.failure_window, settings.lockout_seconds, tracked_keys
        )
        self._sources = _Failures(
            settings.max_failures, settings.failure_window, settings.lockout_seconds, tracked_keys
        )
        self._checks: dict[bytes, _Check] = {}
        self._user_checks: dict[str, int] = {}

    # -- the decision -----------------------------------------------------------------------

    def authenticate(self, header: bytes | None, source: str) -> defer.Deferred[AuthResult]:
        now = self._clock()
        until = self._sources.locked_until(source, now)
        if until is not None:
            return defer.succeed(_locked(until, now))
        credentials = parse_basic(header)
        if credentials is None:
            if not _is_basic(header):
                return defer.succeed(NO_CREDENTIALS)
            log.info(
                "auth failure from {source}: {reason}",
                source=source,
                reason=MALFORMED.reason,
                event="auth.failure",
            )
            return defer.succeed(MALFORMED)
        username, password = credentials
        user_key = username.casefold()
        until = self._users.locked_until(user_key, now)
        if until is not None:
            return defer.succeed(_locked(until, now))
        if not _acceptable(username, password):
            return defer.succeed(self._failed(username, [source], now)[source])
        digest = self._digest(username, password)
        if self._cached(username, digest, now):
            self._users.clear(user_key)
            return defer.succeed(AuthResult(True, 200, AuthReason.CACHED, user=username))

        waiter: defer.Deferred[AuthResult] = defer.Deferred()
        check = self._checks.get(digest)
        if check is not None:
            check.waiters.append((waiter, source))
            return waiter
        if len(self._checks) >= self._max_pending:
            log.warn("auth busy: {count} checks pending", count=len(self._checks))
            return defer.succeed(AuthResult(False, 429, AuthReason.BUSY, BUSY_RETRY_AFTER))
        running = self._user_checks.get(user_key, 0)
        if self._users.recent(user_key, now) + running > self._settings.max_failures:
            return defer.succeed(AuthResult(False, 429, AuthReason.THROTTLED, 1))
        self._checks[digest] = _Check(username, user_key, [(waiter, source)])
        self._user_checks[user_key] = running + 1
        directory = self._directory
        d = defer.maybeDeferred(self._run_blocking, lambda: directory.verify(username, password))
        d.addBoth(self._checked, digest, username)
        return waiter

    def _checked(self, outcome: bool | Failure, digest: bytes, username: str) -> None:
        check = self._checks.pop(digest)
        left = self._user_checks.pop(check.user_key) - 1
        if left:
            self._user_checks[check.user_key] = left
        now = self._clock()
        sources = [source for _, source in check.waiters]
        if isinstance(outcome, Failure):
            log.failure("auth directory error for {user}", outcome, user=loggable_name(username))
            error = AuthResult(False, 503, AuthReason.DIRECTORY_ERROR, BUSY_RETRY_AFTER)
            results = dict.fromkeys(sources, error)
        elif outcome is True:
            self._remember(username, digest, now)
            self._users.clear(check.user_key)
            results = dict.fromkeys(sources, AuthResult(True, 200, AuthReason.OK, user=username))
        else:
            results = self._failed(username, sources, now)
        for waiter, source in check.waiters:
            waiter.callback(results[source])

    def _failed(self, username: str, sources: list[str], now: float) -> dict[str, AuthResult]:
        """Count one failure for the user name and one for each client address."""
        user_until = self._users.fail(username.casefold(), now)
        if user_until is not None:
            log.warn(
                "auth lockout of user {user} for {seconds} s",
                user=loggable_name(username),
                until=user_until,
                seconds=self._settings.lockout_seconds,
                event="auth.lockout",
            )
        results: dict[str, AuthResult] = {}
        for source in dict.fromkeys(sources):
            log.info(
                "auth failure for {user} from {source}: {reason}",
                user=loggable_name(username),
                source=source,
                reason=AuthReason.BAD_CREDENTIALS,
                event="auth.failure",
            )
            source_until = self._sources.fail(source, now)
            if source_until is not None:
                log.warn(
                    "auth lockout of source {source} for {seconds} s",
                    source=source,
                    until=source_until,
                    seconds=self._settings.lockout_seconds,
                    event="auth.lockout",
                )
            untils = [u for u in (user_until, source_until) if u is not None]
            results[source] = (
                _locked(max(untils), now)
                if untils
                else AuthResult(False, 401, AuthReason.BAD_CREDENTIALS)
            )
        return results

    # -- the cache of recent successes ------------------------------------------------------

    def _digest(self, username: str, password: str) -> bytes:
        message = username.encode("utf-8", "surrogatepass") + b"\0"
        message += password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _cached(self, username: str, digest: bytes, now: float) -> bool:
        entry = self._cache.get(username)
        if entry is None:
            return False
        remembered, expires = entry
        if expires <= now:
            del self._cache[username]
            return False
        return hmac.compare_digest(remembered, digest)

    def _remember(self, username: str, digest: bytes, now: float) -> None:
        self._cache.pop(username, None)
        self._cache[username] = (digest, now + self._settings.cache_seconds)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def forget(self, username: str | None = None) -> None:
        """Drop remembered successes: one user name's (any case), or all of them."""
        if username is None:
            self._cache.clear()
        else:
            for name in [n for n in self._cache if n.casefold() == username.casefold()]:
                del self._cache[name]

    @property
    def cached_count(self) -> int:
        return len(self._cache)

    @property
    def tracked_counts(self) -> tuple[int, int]:
        """How many user names and client addresses have failures or lockouts on record."""
        return len(self._users), len(self._sources)


def _locked(until: float, now: float) -> AuthResult:
    return AuthResult(False, 429, AuthReason.LOCKED_OUT, max(1, math.ceil(until - now)))
