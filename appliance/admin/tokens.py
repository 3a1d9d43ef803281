"""API tokens for automation: made, listed and revoked with `ucupdates admin token ...`,
sent as `Authorization: Bearer <token>` on `/api/` and by `ucupdates --server`.

A token made here is `uct_` and 32 random bytes (256 bits, URL-safe base64), shown once.
The store keeps only its SHA-256: a copy of the database opens nothing. A fast hash is
enough where a password needs a slow one (argon2id): nobody can guess 256 random bits,
so there is no dictionary for a slow hash to slow down, and every API request can check
its token at the cost of one SHA-256. A secret handed in (`--secret-stdin`, from an
Ansible vault) must be as long as a made one: at least 32 characters of the token68
alphabet (RFC 6750: what fits in the header), e.g. `openssl rand -hex 32`.

The token is found by its hash through the table's index, then the hash is compared
again in constant time. A token acts with its role (a viewer's cannot change anything),
needs no cookie and no CSRF token (a browser never adds an Authorization header to a
cross-site request by itself), and stops working when it expires or is revoked.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from appliance.admin.accounts import AccountError, iso, parse_role, validate_name
from appliance.model import ApiToken, Role
from appliance.store import DuplicateError, Store, StoreError

PREFIX = "uct_"
MIN_SECRET = 32
MAX_SECRET = 256
TOUCH_SECONDS = 60  # last_used_at is written at most this often
_SECRET = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750's b64token (token68)
_BEARER = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/-]+=*) *")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii", "replace")).hexdigest()


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def validate_secret(secret: str) -> str:
    if not MIN_SECRET <= len(secret) <= MAX_SECRET or not _SECRET.fullmatch(secret):
        raise AccountError(
            f"a token's secret has {MIN_SECRET} to {MAX_SECRET} letters, digits or '-._~+/'"
            " (then '=' padding): make it random, e.g. openssl rand -hex 32"
        )
    return secret


def parse_expiry(text: str | None, now: datetime) -> str | None:
    """`--expires`: DAYS from now, or a DATE (YYYY-MM-DD) the token is valid through (UTC).
    None or "never": it does not expire."""
    if text is None or text.strip().lower() in ("", "never"):
        return None
    text = text.strip()
    if text.isdigit():
        days = int(text)
        if not 1 <= days <= 36500:
            raise AccountError("--expires takes 1 to 36500 days")
        return iso(now + timedelta(days=days))
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise AccountError(f"--expires takes DAYS or a date YYYY-MM-DD, not {text!r}") from None
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    if end <= now:
        raise AccountError(f"--expires {text} is in the past")
    return iso(end)


@dataclass(frozen=True)
class Made:
    """What `create_token` did: the token, its secret when one was made here, and whether
    anything changed (an `--update` that found the token as asked changes nothing)."""

    token: ApiToken
    secret: str | None
    changed: bool


def create_token(
    store: Store,
    name: str,
    role: str,
    expires_at: str | None,
    actor: str,
    *,
    secret: str | None = None,
    update: bool = False,
) -> Made:
    """A new token (with a made secret unless one is given). With `update`, a token of that
    name is brought in line with the role, expiry and secret instead of refused."""
    name = validate_name(name)
    checked = parse_role(role)
    made = secret is None
    secret = new_secret() if secret is None else validate_secret(secret)
    hashed = digest(secret)
    existing = store.api_token(name)
    try:
        with store.transaction():
            if existing is not None and update:
                same_secret = hmac.compare_digest(existing.token_hash, hashed)
                if same_secret and (existing.role, existing.expires_at) == (checked, expires_at):
                    return Made(existing, None, False)
                store.update_api_token(existing.name, checked, hashed, expires_at)
                store.append_event(
                    actor,
                    "admin.token.update",
                    f"token {existing.name}",
                    _shown(existing.role, existing.expires_at),
                    {**_shown(checked, expires_at), "secret_changed": not same_secret},
                )
                token = store.api_token(existing.name)
            else:
                token = store.add_api_token(name, checked, hashed, expires_at)
                store.append_event(
                    actor, "admin.token.create", f"token {name}", None, _shown(checked, expires_at)
                )
    except DuplicateError as e:
        raise AccountError(str(e)) from e
    assert token is not None
    return Made(token, secret if made else None, True)


def revoke_token(store: Store, name: str, actor: str) -> None:
    token = store.api_token(name)
    if token is None:
        raise AccountError(f"no API token {name!r}")
    with store.transaction():
        store.remove_api_token(token.name)
        store.append_event(
            actor,
            "admin.token.revoke",
            f"token {token.name}",
            _shown(token.role, token.expires_at),
            None,
        )


def bearer_secret(authorization: bytes | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None without one (another
    scheme, or no header). A malformed Bearer header gives "" (refused as invalid)."""
    if not authorization or authorization[:7].lower() != b"bearer ":
        return None
    m = _BEARER.fullmatch(authorization.strip())
    if m is None or len(m.group(1)) > MAX_SECRET:
        return ""
    return m.group(1).decode("ascii")


def find_token(store: Store, secret: str, now: datetime) -> ApiToken | None:
    """The live token of a secret: known, the hash equal in constant time, not expired.
    Records its use (at most once a minute)."""
    if not secret:
        return None
    hashed = digest(secret)
    token = store.api_token_by_hash(hashed)
    if token is None or not hmac.compare_digest(token.token_hash, hashed):
        return None
    if token.expires_at is not None and token.expires_at <= iso(now):
        return None
    touch_before = iso(now - timedelta(seconds=TOUCH_SECONDS))
    if token.last_used_at is None or token.last_used_at < touch_before:
        # best effort: a branch node whose primary is away still lets the token read
        with contextlib.suppress(StoreError), store.transaction():
            store.touch_api_token(token.id, iso(now))
    return token


def _shown(role: Role, expires_at: str | None) -> dict[str, str | None]:
    return {"role": role.value, "expires_at": expires_at}
