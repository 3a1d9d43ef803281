"""The API's sessions: `POST /api/login`, `POST /api/logout`, `GET /api/session`.

A login checks the password off the reactor thread (argon2id is slow on purpose), and
locks out an account, and separately a client address, after too many wrong passwords.

A failure counts only once its check is done, so the checks under way count too: an
account (or an address) with `max_failures` minus its recent failures checks in flight
gets 429 and Retry-After until one ends (as the phones' authenticator throttles). Forty
parallel wrong logins run at most `max_failures` checks, and the account ends locked.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from appliance.admin.accounts import (
    AddressFailures,
    is_local_name,
    locked_until,
    password_matches,
    recent_failures,
    record_failure,
)
from appliance.admin.call import Call
from appliance.admin.directory_logins import (
    AdminDirectory,
    DirectoryAnswer,
    account_name,
    directory_account,
    is_directory_name,
)
from appliance.admin.sessions import (
    Login,
    clearing_cookie,
    close_session,
    idle_expiry,
    open_session,
    session_cookie,
)
from appliance.admin.threads import blocking
from appliance.admin.web import ApiError, Reply
from appliance.config import AdminSettings
from appliance.directory import DirectoryUnavailable
from appliance.model import AdminAccount
from appliance.store import Store, node_name

log = Logger(namespace="ucupdates.admin")

MAX_CHECKS = 16  # password checks in flight at once, all accounts and addresses together
RETRY_SECONDS = 1  # Retry-After while the checks under way use up the allowance


class SessionsApi:
    """Logging in and out, and what a page needs to know of its session."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        reactor: Any,
        settings: AdminSettings,
        directory: AdminDirectory | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.reactor = reactor
        self.settings = settings
        self.directory = directory  # directory logins ([admin.ldap]), or None
        shared = store if store.backend == "postgresql" else None  # lockouts pool-wide
        self.address_failures = AddressFailures(settings, shared=shared, node=node_name())
        self._checks_lock = threading.Lock()  # on PostgreSQL logins run in worker threads
        self.checking_accounts: Counter[str] = Counter()  # checks in flight per account name
        self.checking_addresses: Counter[str] = Counter()  # and per client address

    def login(self, call: Call) -> defer.Deferred[Reply]:
        body = call.json()
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
            raise ApiError(400, "give the account name and password")
        address = _client(call.request)
        left = self.address_failures.locked(address, self.reactor.seconds())
        if left is not None:
            raise _locked(left, "too many wrong passwords from this address")
        local = self.settings.local_accounts and is_local_name(name)
        account = self.store.admin_account(name) if local else None
        if account is None and self.directory is not None and is_directory_name(name):
            return self._directory_login(name, password, address)
        failed = self._check_lockout(account)
        key = name.lower()[:64]  # the store finds accounts by lower(name)
        self._start_check(key, failed, address)
        checked = blocking(self.reactor, password_matches, account, password)

        def decided(ok: bool) -> Reply:
            if not ok or account is None:
                raise self._failed(name, name if local else None, address)
            return self._succeeded(account, address)

        return checked.addCallback(decided).addBoth(self._ended(key, address))

    def _directory_login(self, name: str, password: str, address: str) -> defer.Deferred[Reply]:
        """A login the directory checks; its groups give the role (directory_logins)."""
        assert self.directory is not None
        row = account_name(name)
        existing = self.store.admin_account(row)
        failed = self._check_lockout(existing)
        key = row.lower()
        self._start_check(key, failed, address)
        checked = blocking(self.reactor, self.directory.check, name, password)

        def decided(answer: DirectoryAnswer) -> Reply:
            if not answer.accepted:
                raise self._failed(row, row, address)
            if answer.role is None:
                ended = 0
                if existing is not None:
                    with self.store.transaction():
                        ended = self.store.remove_admin_sessions_of(existing.id)
                log.warn(
                    "admin login refused for {name} from {address}: in no Control Panel group"
                    " ({groups}); {ended} open session(s) ended",
                    name=row,
                    address=address,
                    groups=", ".join(answer.groups) or "no groups",
                    ended=ended,
                    event="admin.login.refused",
                )
                raise ApiError(
                    403, "the directory knows you, but you are in no group of the Control Panel"
                )
            account = directory_account(self.store, row, answer.role)
            return self._succeeded(account, address)

        def unavailable(failure: Failure) -> Reply:
            failure.trap(DirectoryUnavailable)
            log.warn(
                "admin login for {name} from {address}: {error}",
                name=row,
                address=address,
                error=str(failure.value),
                event="admin.login.directory_unavailable",
            )
            local = " (local accounts still work)" if self.settings.local_accounts else ""
            raise ApiError(503, f"{failure.value}: try again later{local}")

        checked.addCallbacks(decided, unavailable)
        return checked.addBoth(self._ended(key, address))

    def _check_lockout(self, account: AdminAccount | None) -> int:
        """Refuse (429) a locked account; else its recent wrong passwords."""
        if account is None:
            return 0
        until = locked_until(account, self.clock(), self.settings.lockout_seconds)
        if until is not None:
            seconds = (datetime.fromisoformat(until) - self.clock()).total_seconds()
            raise _locked(seconds, "too many wrong passwords for this account")
        return recent_failures(account, self.clock(), self.settings)

    def _failed(self, name: str, row: str | None, address: str) -> ApiError:
        """Count a wrong password against the address and the account `row`, if it exists;
        the answer is the same whether the account exists or not."""
        self.address_failures.fail(address, self.reactor.seconds())
        fresh = self.store.admin_account(row) if row is not None else None
        until = None
        if fresh is not None:
            until = record_failure(self.store, fresh, self.clock(), self.settings)
        log.warn(
            "admin login failed for {name} from {address}{locked}",
            name=name[:64],
            address=address,
            locked=f": locked until {until}" if until else "",
            event="admin.login.failed",
        )
        return ApiError(401, "wrong account name or password")

    def _succeeded(self, account: AdminAccount, address: str) -> Reply:
        self.address_failures.clear(address)
        login = open_session(self.store, account, address, self.clock(), self.settings)
        log.info(
            "admin login {name} ({role}) from {address}",
            name=account.name,
            role=account.role,
            address=address,
            event="admin.login",
        )
        return Reply(
            body=self.session_json(login),
            headers=[(b"set-cookie", session_cookie(login.token, self.settings))],
        )

    def _ended(self, key: str, address: str) -> Callable[[Any], Any]:
        """The check stops counting as under way (after `decided` counted a failure)."""

        def done(result: Any) -> Any:
            self._end_check(key, address)
            return result

        return done

    def _start_check(self, key: str, failed: int, address: str) -> None:
        """Count a check as under way, or refuse it (429) when the checks already under way
        could use up what is left of the account's or the address's allowance."""
        allowed = self.settings.max_failures
        recent = self.address_failures.recent(address, self.reactor.seconds())
        with self._checks_lock:
            if self.checking_accounts[key] + failed >= allowed:
                why = "password checks for this account under way"
            elif self.checking_addresses[address] + recent >= allowed:
                why = "password checks from this address under way"
            elif self.checking_accounts.total() >= MAX_CHECKS:
                why = "too many password checks under way"
            else:
                self.checking_accounts[key] += 1
                self.checking_addresses[address] += 1
                return
        log.info(
            "admin login throttled for {name} from {address}: {why}",
            name=key,
            address=address,
            why=why,
            event="admin.login.throttled",
        )
        raise _locked(RETRY_SECONDS, why)

    def _end_check(self, key: str, address: str) -> None:
        with self._checks_lock:
            for counter, item in (
                (self.checking_accounts, key),
                (self.checking_addresses, address),
            ):
                counter[item] -= 1
                if counter[item] <= 0:
                    del counter[item]

    def logout(self, call: Call) -> Reply:
        assert call.login is not None
        close_session(self.store, call.login.token)
        log.info("admin logout {name}", name=call.login.account.name, event="admin.logout")
        return Reply(body={"ok": True}, headers=[(b"set-cookie", clearing_cookie())])

    def session(self, call: Call) -> Reply:
        if call.login is None:
            raise ApiError(403, "an API token has no session: this needs a login")
        return Reply(body=self.session_json(call.login))

    def session_json(self, login: Login) -> dict[str, Any]:
        return {
            "name": login.account.name,
            "role": login.account.role,
            "csrf_token": login.session.csrf_token,
            "expires_at": idle_expiry(login, self.clock(), self.settings),
            "max_upload_bytes": self.settings.max_upload_bytes,
        }


def _client(request: server.Request) -> str:
    address: Any = request.getClientAddress()
    return str(getattr(address, "host", "?"))


def _locked(seconds: float, why: str) -> ApiError:
    wait = max(1, int(seconds + 0.999))
    error = ApiError(429, f"{why}: try again in {wait} s")
    error.headers.append((b"retry-after", str(wait).encode()))
    return error
