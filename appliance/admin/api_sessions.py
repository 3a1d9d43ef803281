"""The API's sessions: `POST /api/login`, `POST /api/logout`, `GET /api/session`.

A login checks the password off the reactor thread (argon2id is slow on purpose), and
locks out an account, and separately a client address, after too many wrong passwords.

A failure counts only once its check is done, so the checks under way count too: an
account (or an address) with `max_failures` minus its recent failures checks in flight
gets 429 and Retry-After until one ends (as the phones' authenticator throttles). Forty
parallel wrong logins run at most `max_failures` checks, and the account ends locked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web import server

from appliance.admin.accounts import (
    AddressFailures,
    locked_until,
    password_matches,
    recent_failures,
    record_failure,
)
from appliance.admin.call import Call
from appliance.admin.sessions import (
    Login,
    clearing_cookie,
    close_session,
    idle_expiry,
    open_session,
    session_cookie,
)
from appliance.admin.web import ApiError, Reply
from appliance.config import AdminSettings
from appliance.store import Store

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
    ) -> None:
        self.store = store
        self.clock = clock
        self.reactor = reactor
        self.settings = settings
        self.address_failures = AddressFailures(settings)
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
        account = self.store.admin_account(name) if len(name) <= 64 else None
        failed = 0
        if account is not None:
            until = locked_until(account, self.clock(), self.settings.lockout_seconds)
            if until is not None:
                seconds = (datetime.fromisoformat(until) - self.clock()).total_seconds()
                raise _locked(seconds, "too many wrong passwords for this account")
            failed = recent_failures(account, self.clock(), self.settings)
        key = name.lower()[:64]  # the store finds accounts by lower(name)
        self._start_check(key, failed, address)
        pool = self.reactor.getThreadPool()
        checked = deferToThreadPool(self.reactor, pool, password_matches, account, password)

        def decided(ok: bool) -> Reply:
            if not ok or account is None:
                self.address_failures.fail(address, self.reactor.seconds())
                fresh = self.store.admin_account(name)
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
                raise ApiError(401, "wrong account name or password")
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

        def done(result: Any) -> Any:
            self._end_check(key, address)
            return result

        # `decided` counts a failure before the check stops counting as under way.
        return checked.addCallback(decided).addBoth(done)

    def _start_check(self, key: str, failed: int, address: str) -> None:
        """Count a check as under way, or refuse it (429) when the checks already under way
        could use up what is left of the account's or the address's allowance."""
        allowed = self.settings.max_failures
        recent = self.address_failures.recent(address, self.reactor.seconds())
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
        for counter, item in ((self.checking_accounts, key), (self.checking_addresses, address)):
            counter[item] -= 1
            if counter[item] <= 0:
                del counter[item]

    def logout(self, call: Call) -> Reply:
        assert call.login is not None
        close_session(self.store, call.login.token)
        log.info("admin logout {name}", name=call.login.account.name, event="admin.logout")
        return Reply(body={"ok": True}, headers=[(b"set-cookie", clearing_cookie())])

    def session(self, call: Call) -> Reply:
        assert call.login is not None
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
