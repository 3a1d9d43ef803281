"""HTTP Basic and NTLM for external phones (docs/protocol.md §2): the authenticator.

Checking a password is slow on purpose (argon2id, or a network round trip for LDAP: see
`appliance.phones.directories`), so the authenticator remembers a success for
`auth.cache_seconds` under a keyed HMAC of the credentials, runs every real check off the
reactor thread, and holds guessing back without locking the right password out: the
remembered success and the user's last right password (its HMAC, for
`auth.known_good_seconds`) are looked at before any lockout, and a lockout (per user name,
per user name and address, per address: `appliance.phones.lockouts`) only limits how often
other passwords are checked.

NTLM (when an `NtlmVerifier` is given): a Type 1 message gets a challenge kept in the
connection's `NtlmSession`; the Type 3 that answers it is checked on the pool like a Basic
password, under the same lockouts, throttles and events. A success authorises the
connection for `auth.cache_seconds` (each NTLM answer differs, so the connection rather
than the cache remembers it); `forget` ends such authorisations too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from appliance.config import AuthSettings
from appliance.directory import loggable_name
from appliance.model import Lockout
from appliance.phones.credentials import (
    MALFORMED,
    NO_CREDENTIALS,
    AuthReason,
    AuthResult,
    RunBlocking,
    ThreadPoolRunner,
    acceptable,
    is_basic,
    parse_basic,
)
from appliance.phones.directories import Directory, NtlmVerifier
from appliance.phones.lockouts import Guard, SharedLockouts
from appliance.phones.ntlm import (
    NtlmError,
    NtlmSession,
    challenge_message,
    is_ntlm,
    message_type,
    ntlm_token,
    read_authenticate,
)

log = Logger()

__all__ = [
    "AuthReason",
    "AuthResult",
    "Authenticator",
    "RunBlocking",
    "ThreadPoolRunner",
    "parse_basic",
]


CACHE_SIZE = 10_000  # remembered successes
TRACKED_KEYS = 100_000  # user names, pairs, and client addresses with failures, each
MAX_PENDING = 64  # distinct checks waiting for or running in the pool
BUSY_RETRY_AFTER = 5  # seconds


@dataclass
class _Check:
    """One directory check in flight, and the requests waiting for its answer."""

    username: str
    user_key: str
    source: str  # the address that started it (counted as running for it)
    waiters: list[tuple[defer.Deferred[AuthResult], str]]
    remember: bool  # a success goes to the cache (Basic; NTLM answers differ every time)
    held: list[Lockout] = field(default_factory=list)  # the pool's, read after a failure


class Authenticator:
    """Decides HTTP Basic requests. Use it from the reactor thread only.

    `clock` gives seconds (reactor.seconds). `run_blocking` runs a directory check and
    returns a Deferred of its bool: the service passes a ThreadPoolRunner on its reactor,
    tests pass `defer.maybeDeferred` to run checks inline.

    Order of decisions: missing or malformed credentials (401), then the cache of recent
    successes (200 without a check), then the user's last right password (checked whatever
    the lockouts), then the lockouts (`Guard.admit`: a check now, or 429 without one),
    then the directory. A success counts no failure away (a guesser gains no new tries
    from a phone's sign-in); it makes the (user name, address) pair trusted. Concurrent
    requests with the same uncached credentials share one check; parallel guesses cannot
    outrun the lockouts (checks in flight count as failures to come).
    """

    def __init__(
        self,
        directory: Directory,
        settings: AuthSettings,
        clock: Callable[[], float],
        key: bytes | None = None,
        *,
        run_blocking: RunBlocking,
        ntlm: NtlmVerifier | None = None,
        cache_size: int = CACHE_SIZE,
        tracked_keys: int = TRACKED_KEYS,
        max_pending: int = MAX_PENDING,
        shared: SharedLockouts | None = None,
    ) -> None:
        self._directory = directory
        self._settings = settings
        self._clock = clock
        self._key = key if key is not None else secrets.token_bytes(32)
        self._run_blocking = run_blocking
        self._cache_size = cache_size
        self._max_pending = max_pending
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._good: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # last right ones
        self._guard = Guard(settings, tracked_keys)
        self._shared = shared  # a pool's lockouts (PostgreSQL), or None
        self._guard.share = shared is not None
        self._checks: dict[bytes, _Check] = {}
        self._ntlm = ntlm
        self._sessions: weakref.WeakSet[NtlmSession] = weakref.WeakSet()

    @property
    def ntlm_enabled(self) -> bool:
        """Whether NTLM is offered beside Basic (an NTLM verifier was given)."""
        return self._ntlm is not None

    # -- the decision -----------------------------------------------------------------------

    def authenticate(
        self, header: bytes | None, source: str, session: NtlmSession | None = None
    ) -> defer.Deferred[AuthResult]:
        """Decide one request. `session` is its connection's NTLM state (None: Basic only)."""
        now = self._clock()
        if session is not None and self._ntlm is not None:
            if is_ntlm(header):
                return self._ntlm_step(header, source, session, now)
            user = session.authorised(now)
            if header is None and user is not None:
                return defer.succeed(AuthResult(True, 200, AuthReason.CONNECTION, user=user))
        credentials = parse_basic(header)
        if credentials is None:
            if not is_basic(header):
                return defer.succeed(NO_CREDENTIALS)
            return defer.succeed(_malformed(source))
        username, password = credentials
        if not acceptable(username, password):
            return defer.succeed(self._fail(username, [source], now)[source])
        digest = self._digest(username, password)
        if self._cached(username, digest, now):
            return defer.succeed(AuthResult(True, 200, AuthReason.CACHED, user=username))
        known = self._known_good(username.casefold(), digest, now)
        directory = self._directory
        return self._check(
            digest, username, source, now, lambda: directory.verify(username, password), known
        )

    def _check(
        self,
        digest: bytes,
        username: str,
        source: str,
        now: float,
        work: Callable[[], bool],
        known: bool | None,
    ) -> defer.Deferred[AuthResult]:
        """Run `work` on the pool, shared by identical requests, within the bounds.
        `known`: Basic, and whether it is the user's last right password (which no
        lockout holds back); None: NTLM (never remembered)."""
        user_key = username.casefold()
        waiter: defer.Deferred[AuthResult] = defer.Deferred()
        check = self._checks.get(digest)
        if check is not None:
            check.waiters.append((waiter, source))
            return waiter
        if len(self._checks) >= self._max_pending:
            log.warn("auth busy: {count} checks pending", count=len(self._checks))
            return defer.succeed(AuthResult(False, 429, AuthReason.BUSY, BUSY_RETRY_AFTER))
        if known:
            self._guard.start(user_key, source)
        else:
            refused = self._guard.admit(user_key, source, now)
            if refused is not None:
                return defer.succeed(refused)
        remember = known is not None
        check = _Check(username, user_key, source, [(waiter, source)], remember)
        self._checks[digest] = check
        if self._shared is not None:
            work = _pulling(work, check, self._shared)
        d = defer.maybeDeferred(self._run_blocking, work)
        d.addBoth(self._checked, digest, username)
        return waiter

    # -- NTLM: Type 1 -> challenge, Type 3 -> a check, on one connection -------------------

    def _ntlm_step(
        self, header: bytes | None, source: str, session: NtlmSession, now: float
    ) -> defer.Deferred[AuthResult]:
        verifier = self._ntlm
        assert verifier is not None
        token = ntlm_token(header)
        kind = message_type(token) if token is not None else 0
        if token is not None and kind == 1:
            session.reset()
            session.challenge = secrets.token_bytes(8)
            domain = self._settings.ntlm_domain
            try:
                message = challenge_message(token, session.challenge, domain, domain)
            except NtlmError:
                return defer.succeed(_malformed(source))
            return defer.succeed(
                AuthResult(False, 401, AuthReason.NTLM_CHALLENGE, challenge=message)
            )
        if token is None or kind != 3:
            return defer.succeed(_malformed(source))
        challenge, session.challenge = session.challenge, None
        if challenge is None:
            log.info(
                "auth failure from {source}: {reason}",
                source=source,
                reason=AuthReason.NTLM_NO_CHALLENGE,
                event="auth.failure",
            )
            return defer.succeed(AuthResult(False, 401, AuthReason.NTLM_NO_CHALLENGE))
        try:
            response = read_authenticate(token, challenge)
        except NtlmError:
            return defer.succeed(_malformed(source))
        username = response.user
        if not username or response.anonymous:
            return defer.succeed(self._fail(username, [source], now)[source])
        if not response.v2 and not self._settings.ntlm_allow_v1:
            log.info(
                "auth failure for {user} from {source}: {reason} ({version})",
                user=loggable_name(username),
                source=source,
                reason=AuthReason.NTLM_V1_REFUSED,
                version=response.version,
                event="auth.failure",
            )
            return defer.succeed(AuthResult(False, 401, AuthReason.NTLM_V1_REFUSED))
        digest = hmac.new(self._key, b"ntlm\0" + token, hashlib.sha256).digest()
        d = self._check(digest, username, source, now, lambda: verifier.verify_ntlm(response), None)

        def authorise(result: AuthResult) -> AuthResult:
            if result.ok:
                session.user = username
                session.until = self._clock() + self._settings.cache_seconds
                self._sessions.add(session)
            return result

        d.addCallback(authorise)
        return d

    def _checked(self, outcome: bool | Failure, digest: bytes, username: str) -> None:
        check = self._checks.pop(digest)
        self._guard.finish(check.user_key, check.source)
        now = self._clock()
        sources = [source for _, source in check.waiters]
        if isinstance(outcome, Failure):
            log.failure("auth directory error for {user}", outcome, user=loggable_name(username))
            error = AuthResult(False, 503, AuthReason.DIRECTORY_ERROR, BUSY_RETRY_AFTER)
            results = dict.fromkeys(sources, error)
        elif outcome is True:
            if check.remember:
                self._remember(username, digest, now)
            for source in sources:
                self._guard.trust(check.user_key, source, now)
            results = dict.fromkeys(sources, AuthResult(True, 200, AuthReason.OK, user=username))
        else:
            good = self._good.get(check.user_key)
            if good is not None and hmac.compare_digest(good[0], digest):
                del self._good[check.user_key]  # the password changed since
            if self._shared is not None:  # the pool's lockouts hold here first
                offset = self._shared.offset(now)
                for held in check.held:
                    self._guard.adopt(held.scope, held.key, held.until - offset, now)
            results = self._fail(username, sources, now)
        for waiter, source in check.waiters:
            waiter.callback(results[source])

    def _fail(self, username: str, sources: list[str], now: float) -> dict[str, AuthResult]:
        """`Guard.fail`; the lockouts it started are written for the pool (in a thread)."""
        results = self._guard.fail(username, sources, now)
        shared, started = self._shared, self._guard.started
        if shared is not None and started:
            self._guard.started = []
            offset = shared.offset(now)

            def publish() -> bool:
                shared.publish(started, offset)
                return True

            written = defer.maybeDeferred(self._run_blocking, publish)
            written.addErrback(
                lambda f: log.warn("lockout not shared: {error}", error=f.getErrorMessage())
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

    def _known_good(self, user_key: str, digest: bytes, now: float) -> bool:
        entry = self._good.get(user_key)
        if entry is None or entry[1] <= now:
            return False
        return hmac.compare_digest(entry[0], digest)

    def _remember(self, username: str, digest: bytes, now: float) -> None:
        self._cache.pop(username, None)
        self._cache[username] = (digest, now + self._settings.cache_seconds)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        user_key = username.casefold()
        self._good.pop(user_key, None)
        self._good[user_key] = (digest, now + self._settings.known_good_seconds)
        while len(self._good) > self._cache_size:
            self._good.popitem(last=False)

    def forget(self, username: str | None = None) -> None:
        """Drop remembered successes, right passwords and trusted addresses: one user
        name's (any case), or all of them."""
        if username is None:
            self._cache.clear()
            self._good.clear()
        else:
            for name in [n for n in self._cache if n.casefold() == username.casefold()]:
                del self._cache[name]
            self._good.pop(username.casefold(), None)
        self._guard.forget(None if username is None else username.casefold())
        for session in list(self._sessions):
            if username is None or (session.user or "").casefold() == username.casefold():
                session.reset()

    @property
    def cached_count(self) -> int:
        return len(self._cache)

    @property
    def counts(self) -> dict[str, int]:
        """Failed checks and lockouts started by scope, since start (for /metrics)."""
        return self._guard.counts

    @property
    def tracked_counts(self) -> tuple[int, int]:
        """How many user names and client addresses have failures or lockouts on record."""
        return len(self._guard), self._guard.addresses


def _pulling(work: Callable[[], bool], check: _Check, shared: SharedLockouts) -> Callable[[], bool]:
    """`work`, then, when it failed, the pool's lockouts read in the same thread."""

    def run() -> bool:
        ok = work()
        if not ok:
            try:
                check.held = shared.holding()
            except Exception as e:  # the failure still counts here; the pool's next time
                log.warn("the pool's lockouts not read: {error}", error=str(e).split("\n")[0])
        return ok

    return run


def _malformed(source: str) -> AuthResult:
    log.info(
        "auth failure from {source}: {reason}",
        source=source,
        reason=MALFORMED.reason,
        event="auth.failure",
    )
    return MALFORMED
