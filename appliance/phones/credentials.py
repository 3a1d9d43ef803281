"""The parts of a decision: HTTP Basic credentials, results and reasons, the thread pool.

Split from `appliance.phones.auth` (the authenticator), which re-exports them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from appliance.passwords import AuthError, validate_password, validate_user_name


def acceptable(username: str, password: str) -> bool:
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


def is_basic(header: bytes | None) -> bool:
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
    CONNECTION = "connection authorised"  # NTLM: an earlier handshake on this connection
    NTLM_CHALLENGE = "ntlm challenge"  # the Type 2 answer to a Type 1
    NTLM_NO_CHALLENGE = "ntlm response without a challenge on this connection"
    NTLM_V1_REFUSED = "ntlmv1 not allowed"


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    status: int  # 200 ok, 401 bad or no credentials, 429 throttled or locked out, 503
    reason: AuthReason
    retry_after: int | None = None  # seconds, for a Retry-After header
    user: str | None = None  # the name as the client sent it, when ok
    challenge: bytes | None = None  # NTLM: the Type 2 message for `WWW-Authenticate: NTLM`


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
