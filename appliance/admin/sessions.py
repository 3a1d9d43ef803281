"""Server-side sessions of the Control Panel, their cookie, and the CSRF token.

Sessions live in the store, not in memory: they survive a restart of `serve`, every
worker process sees the same ones, and logging out (or a password change) ends a session
everywhere at once. The cookie carries 32 random bytes; the store keeps only their
SHA-256, so a copy of the database opens no session. Each session has its own
synchronizer CSRF token, which every state-changing request must send back in the
`X-CSRF-Token` header (a page gets it from the session, never from a cookie).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.admin.accounts import iso
from appliance.config import AdminSettings
from appliance.model import AdminAccount, AdminSession
from appliance.store import Store, StoreError

# `__Host-`: the browser accepts the cookie only when Secure, with Path=/ and no Domain,
# so no other host or path (nor plain HTTP) can set or shadow it.
COOKIE_NAME = b"__Host-ucupdates-session"
CSRF_HEADER = b"x-csrf-token"
CLOCK_SKEW_SECONDS = 60  # how far back the clock may step before sessions end


@dataclass(frozen=True)
class Login:
    """An open session and its account, as a request sees them."""

    token: str
    session: AdminSession
    account: AdminAccount


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def open_session(
    store: Store, account: AdminAccount, address: str, now: datetime, settings: AdminSettings
) -> Login:
    """A new session for `account` (after a correct password); drops expired sessions."""
    token = secrets.token_urlsafe(32)
    session = AdminSession(
        token_hash=token_hash(token),
        account_id=account.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=iso(now),
        last_seen_at=iso(now),
        expires_at=iso(now + timedelta(seconds=settings.session_max_seconds)),
        address=address,
    )
    with store.transaction():
        store.remove_expired_admin_sessions(iso(now), _idle_before(now, settings))
        store.record_admin_login(account.id, iso(now))
        store.add_admin_session(session)
    return Login(token, session, account)


def find_session(
    store: Store, token: str | None, now: datetime, settings: AdminSettings
) -> Login | None:
    """The live session of a cookie token, or None (unknown, expired or idle too long)."""
    if not token or len(token) > 128:
        return None
    digest = token_hash(token)
    session = store.admin_session(digest)
    if session is None:
        return None
    if (
        session.expires_at <= iso(now)
        or session.last_seen_at < _idle_before(now, settings)
        # seen "in the future": the clock went back, and its idle limit would not run out
        # before the clock came forward again; the admin signs in again
        or session.last_seen_at > iso(now + timedelta(seconds=CLOCK_SKEW_SECONDS))
    ):
        with contextlib.suppress(StoreError), store.transaction():  # (a later look removes
            store.remove_admin_session(digest)  # it when this one cannot: ended either way)
        return None
    account = store.admin_account_by_id(session.account_id)
    if account is None:  # pragma: no cover - the cascade removes the session with it
        return None
    touch_before = iso(now - timedelta(seconds=settings.session_touch_seconds))
    if session.last_seen_at < touch_before:
        # best effort: a branch node whose primary is away still lets the session read
        with contextlib.suppress(StoreError), store.transaction():
            store.touch_admin_session(digest, iso(now))
    return Login(token, session, account)


def close_session(store: Store, token: str) -> None:
    with store.transaction():
        store.remove_admin_session(token_hash(token))


def csrf_matches(session: AdminSession, sent: bytes | None) -> bool:
    if not sent:
        return False
    return hmac.compare_digest(session.csrf_token.encode(), sent.strip())


def idle_expiry(login: Login, now: datetime, settings: AdminSettings) -> str:
    """When the session ends if no request comes (the earlier of idle and absolute)."""
    idle = iso(now + timedelta(seconds=settings.session_idle_seconds))
    return min(idle, login.session.expires_at)


def session_cookie(token: str, settings: AdminSettings) -> bytes:
    max_age = int(settings.session_max_seconds)
    return (
        COOKIE_NAME
        + b"="
        + token.encode("ascii")
        + b"; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=%d" % max_age
    )


def clearing_cookie() -> bytes:
    return COOKIE_NAME + b"=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"


def cookie_token(cookie_headers: Sequence[bytes] | None) -> str | None:
    """The session token from the request's Cookie headers (parsed here: the guard runs
    before Twisted parses cookies)."""
    for header in cookie_headers or ():
        for part in header.split(b";"):
            name, sep, value = part.strip().partition(b"=")
            if sep and name == COOKIE_NAME:
                try:
                    return value.decode("ascii")
                except UnicodeDecodeError:
                    return None
    return None


def _idle_before(now: datetime, settings: AdminSettings) -> str:
    return iso(now - timedelta(seconds=settings.session_idle_seconds))
