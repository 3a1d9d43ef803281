"""Lockouts for the authenticator: who may have a password checked now, and what a failure does.

A lockout here is a guard, not a wall (docs/security.md, Phone lockouts). Failures are
counted per user name, per (user name, client address) pair and per client address;
more than `auth.max_failures` (pairs and user names) or `auth.max_address_failures`
(addresses) within `auth.failure_window` seconds guard that key for
`auth.lockout_seconds`. While a key is guarded, a password that is not the user's
remembered right one (the authenticator checks that first) is checked at most once per
`auth.lockout_check_seconds` for that key; the rest get 429 without a check. So a guesser
is held to a few checks a minute, while the right password still gets in:

- a guarded pair (this address guessed this user name) needs its own slot and the user
  name's "guarded" slot, so one address, or many, guess at most once per interval;
- a guarded user name alone (guessed from other addresses) needs the user name's "fresh"
  slot, which the guessing addresses never take: a phone elsewhere is not held up by a
  single guessing address, and not at all from an address it signed in from before (a
  *trusted* pair, remembered for `auth.known_good_seconds`);
- a guarded address (a NAT's, or a sprayer's) needs the address's slot, except for the
  user names that signed in from it before: a NAT's other phones go on.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.logger import Logger

from appliance.config import AuthSettings
from appliance.directory import loggable_name
from appliance.model import Lockout
from appliance.phones.credentials import AuthReason, AuthResult
from appliance.store import Store

log = Logger(namespace="appliance.phones.auth")

MAX_RUNNING_PER_ADDRESS = 16  # checks in flight from one client address
MAX_STARTED = 1_000  # lockouts started and not yet written for the pool
# The scopes of the phones' lockouts in the store's lockouts table (a pool's nodes share them)
USER, PAIR, SOURCE = "phone.user", "phone.pair", "phone.source"


@dataclass(slots=True)
class _Record:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class Failures:
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

    def adopt(self, key: str, until: float) -> None:
        """Hold `key` locked until `until` (another node's lockout); a later end is kept."""
        record = self._records.pop(key, None) or _Record()
        self._records[key] = record
        while len(self._records) > self._max_keys:
            self._records.popitem(last=False)
        record.locked_until = max(record.locked_until, until)


class Expiring:
    """Keys remembered until a time each, the oldest-touched dropped beyond a bound."""

    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def get(self, key: str, now: float) -> float:
        """The time `key` is remembered until (in the past, or 0.0, when it is not)."""
        until = self._until.get(key, 0.0)
        if until and until <= now:
            del self._until[key]
        return until

    def put(self, key: str, until: float) -> None:
        self._until.pop(key, None)
        self._until[key] = until
        while len(self._until) > self._max_keys:
            self._until.popitem(last=False)

    def drop(self, match: str) -> None:
        """Forget the keys that start with `match`."""
        for key in [k for k in self._until if k.startswith(match)]:
            del self._until[key]


def locked(wait: float) -> AuthResult:
    return AuthResult(False, 429, AuthReason.LOCKED_OUT, max(1, math.ceil(wait)))


THROTTLED = AuthResult(False, 429, AuthReason.THROTTLED, 1)


class Guard:
    """The failures, guards, check slots, trusted pairs and checks in flight. Reactor only.

    Keys are casefolded user names, client addresses, and `user\\0address` for pairs.
    """

    def __init__(self, settings: AuthSettings, tracked_keys: int) -> None:
        self._settings = settings
        window, lockout = settings.failure_window, settings.lockout_seconds
        self._users = Failures(settings.max_failures, window, lockout, tracked_keys)
        self._pairs = Failures(settings.max_failures, window, lockout, tracked_keys)
        self._sources = Failures(settings.max_address_failures, window, lockout, tracked_keys)
        self._slots = Expiring(3 * tracked_keys)  # slot key -> when the next check may run
        self._trusted = Expiring(tracked_keys)  # pair -> until when
        self._running: Counter[str] = Counter()
        # Lockouts started here, (scope, key, until), for the pool's other nodes to hold
        # (kept only when `share` is set: a pool's authenticator writes them to the store).
        self.share = False
        self.started: list[tuple[str, str, float]] = []
        # Counted for /metrics: failed checks, and lockouts started by scope.
        self.counts = dict.fromkeys(
            ("failures", "lockout_user", "lockout_user_source", "lockout_source"), 0
        )

    def __len__(self) -> int:
        return len(self._users)

    @property
    def addresses(self) -> int:
        return len(self._sources)

    # -- trust: a user name that signed in from an address --------------------------------

    def trust(self, user: str, source: str, now: float) -> None:
        self._trusted.put(_pair(user, source), now + self._settings.known_good_seconds)

    def trusted(self, user: str, source: str, now: float) -> bool:
        return self._trusted.get(_pair(user, source), now) > now

    def forget(self, user: str | None) -> None:
        """Forget the trusted pairs of one user name (casefolded), or all."""
        self._trusted.drop("" if user is None else user + "\0")

    # -- before a check ---------------------------------------------------------------------

    def _slots_needed(self, user: str, source: str, now: float) -> list[str]:
        pair = _pair(user, source)
        trusted = self.trusted(user, source, now)
        needs: list[str] = []
        if self._pairs.locked_until(pair, now) is not None:
            needs += ["p" + pair, "g" + user]
        elif not trusted and self._users.locked_until(user, now) is not None:
            needs.append("u" + user)
        if not trusted and self._sources.locked_until(source, now) is not None:
            needs.append("a" + source)
        return needs

    def _wait(self, needs: list[str], now: float) -> float:
        return max((self._slots.get(k, now) - now for k in needs), default=0.0)

    def _take(self, needs: list[str], now: float) -> None:
        for key in needs:
            self._slots.put(key, now + self._settings.lockout_check_seconds)

    def admit(self, user: str, source: str, now: float) -> AuthResult | None:
        """None when a check of a password (not the remembered one) may start now, counted
        as running until `finish`; otherwise the 429 to answer without a check."""
        needs = self._slots_needed(user, source, now)
        pair = _pair(user, source)
        if needs:
            wait = self._wait(needs, now)
            if wait > 0:
                return locked(wait)
            self._take(needs, now)
        else:  # parallel checks must not outrun the guards
            limits = self._settings.max_failures, self._settings.max_address_failures
            over = self._pairs.recent(pair, now) + self._running["p" + pair] > limits[0]
            if not self.trusted(user, source, now):
                over = over or self._users.recent(user, now) + self._running["u" + user] > limits[0]
                running = self._running["a" + source]
                over = over or self._sources.recent(source, now) + running > limits[1]
            if over or self._running["a" + source] >= MAX_RUNNING_PER_ADDRESS:
                return THROTTLED
        self.start(user, source)
        return None

    def start(self, user: str, source: str) -> None:
        self._running.update(("u" + user, "p" + _pair(user, source), "a" + source))

    def finish(self, user: str, source: str) -> None:
        self._running.subtract(("u" + user, "p" + _pair(user, source), "a" + source))
        self._running = +self._running  # drop the zeros

    # -- after a failed check ---------------------------------------------------------------

    def fail(self, username: str, sources: list[str], now: float) -> dict[str, AuthResult]:
        """Count one failure for the user name and one for each address (and pair); the
        answer for each address: 401, or 429 while a guard holds it (its slots taken)."""
        user = username.casefold()
        shown = loggable_name(username)
        seconds = self._settings.lockout_seconds
        counts = self.counts
        counts["failures"] += 1
        until = self._users.fail(user, now)
        counts["lockout_user"] += until is not None
        self._started(USER, user, until)
        _lockout("user {user}", until, seconds, user=shown)
        results: dict[str, AuthResult] = {}
        for source in dict.fromkeys(sources):
            log.info(
                "auth failure for {user} from {source}: {reason}",
                user=shown,
                source=source,
                reason=AuthReason.BAD_CREDENTIALS,
                event="auth.failure",
            )
            until = self._pairs.fail(_pair(user, source), now)
            counts["lockout_user_source"] += until is not None
            self._started(PAIR, _pair(user, source), until)
            _lockout("user {user} from {source}", until, seconds, user=shown, source=source)
            until = self._sources.fail(source, now)
            counts["lockout_source"] += until is not None
            self._started(SOURCE, source, until)
            _lockout("source {source}", until, seconds, source=source)
            needs = self._slots_needed(user, source, now)
            self._take(needs, now)
            results[source] = (
                locked(self._wait(needs, now))
                if needs
                else AuthResult(False, 401, AuthReason.BAD_CREDENTIALS)
            )
        return results

    def _started(self, scope: str, key: str, until: float | None) -> None:
        if self.share and until is not None and len(self.started) < MAX_STARTED:
            self.started.append((scope, key, until))

    def adopt(self, scope: str, key: str, until: float, now: float) -> None:
        """Hold a lockout another node started (an end beyond this node's own lockout's
        length is cut to it: the clocks of two nodes differ a little)."""
        table = {USER: self._users, PAIR: self._pairs, SOURCE: self._sources}.get(scope)
        if table is not None and until > now:
            table.adopt(key, min(until, now + self._settings.lockout_seconds))


def _lockout(what: str, until: float | None, seconds: float, **who: str) -> None:
    """The `auth.lockout` line when a failure started a lockout (`until` is its end)."""
    if until is not None:
        log.warn(
            "auth lockout of " + what + " for {seconds} s",
            until=until,
            seconds=seconds,
            event="auth.lockout",
            **who,
        )


def _pair(user: str, source: str) -> str:
    return user + "\0" + source


class SharedLockouts:
    """The phones' lockouts pool-wide (PostgreSQL): a lockout this node starts is written
    to the store's lockouts table, and after each failed check the node reads the ones
    that hold and holds them too, before it counts that failure (so it learns another
    node's lockout at its next failed check at the latest). Failures are counted per node.
    Store calls: off the reactor. Times are the wall clock's in the store; `offset` turns
    the authenticator's steady clock into it."""

    def __init__(self, store: Store, node: str, wall: Callable[[], float] = time.time) -> None:
        self._store = store
        self._node = node
        self._wall = wall

    def offset(self, now: float) -> float:
        """What to add to the authenticator's time `now` for the wall clock's."""
        return self._wall() - now

    def publish(self, started: list[tuple[str, str, float]], offset: float) -> None:
        """Write lockouts (their ends in the authenticator's time, `offset` from the wall)."""
        for scope, key, until in started:
            self._store.put_lockout(scope, key, until + offset, self._node)

    def holding(self) -> list[Lockout]:
        """The phones' lockouts that hold now (ends in wall-clock seconds)."""
        return self._store.lockouts("phone.", self._wall())
