"""Password hashes (argon2id) and the forms of user names and passwords.

Kept apart from `auth` (which needs Twisted and ldap3) so that the command line can
add users and admin accounts without loading either.
"""

from __future__ import annotations

import re

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError


class AuthError(Exception):
    """A user name, password or directory setting that cannot be used; str() is the line."""


# -- password hashes --------------------------------------------------------------------

# argon2id, 32 MiB, 2 passes, 1 lane: about 55 ms per hash or check on the 2-core build
# machine (OWASP's floor is 19 MiB / 2 passes). Each stored hash carries its parameters,
# so old hashes keep verifying when these change.
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 32 * 1024
ARGON2_PARALLELISM = 1

_hasher = PasswordHasher(
    time_cost=ARGON2_TIME_COST,
    memory_cost=ARGON2_MEMORY_KIB,
    parallelism=ARGON2_PARALLELISM,
    hash_len=32,
    salt_len=16,
    type=Type.ID,
)


def hash_password(password: str) -> str:
    """An argon2id PHC string for `password` (validate it first with validate_password)."""
    return _hasher.hash(password)


def nt_hash(password: str) -> str:
    """The NT hash of `password` (MD4 of its UTF-16LE form) in hex, for NTLM.

    It is password-equivalent: whoever has it can answer NTLM challenges as the user.
    MD4 is pyspnego's (OpenSSL 3 no longer gives hashlib one).
    """
    from spnego._ntlm_raw.md4 import md4

    return md4(password.encode("utf-16-le", "surrogatepass")).hex()


def verify_password(hash: str, password: str) -> bool:
    """Whether `password` matches the PHC string `hash`; a damaged hash is a mismatch."""
    try:
        return _hasher.verify(hash, password)
    except (VerificationError, InvalidHashError):
        return False


# -- user names and passwords -----------------------------------------------------------

MAX_USER_NAME = 256
MAX_PASSWORD = 1024
_NAME_PART = r"[^\\@:]+"
_USER_NAME = re.compile(rf"{_NAME_PART}|{_NAME_PART}\\{_NAME_PART}|{_NAME_PART}@{_NAME_PART}")


def validate_user_name(name: str) -> str:
    """`user`, `DOMAIN\\user` or `user@domain`: printable, no ':', 1 to 256 characters."""
    if not 1 <= len(name) <= MAX_USER_NAME:
        raise AuthError(f"a user name has 1 to {MAX_USER_NAME} characters")
    if not name.isprintable() or name != name.strip():
        raise AuthError(
            "a user name has only printable characters and no leading or trailing space"
        )
    if ":" in name:
        raise AuthError("a user name cannot contain ':' (HTTP Basic separates with it)")
    if not _USER_NAME.fullmatch(name):
        raise AuthError("a user name is written user, DOMAIN\\user or user@domain")
    return name


def validate_password(password: str) -> str:
    """1 to 1024 characters, no NUL."""
    if not 1 <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"a password has 1 to {MAX_PASSWORD} characters")
    if "\0" in password:
        raise AuthError("a password cannot contain NUL")
    return password
