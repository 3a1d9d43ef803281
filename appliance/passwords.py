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
    """
    return md4(password.encode("utf-16-le", "surrogatepass")).hex()


# MD4 (RFC 1320), only for the NT hash: OpenSSL 3 no longer gives hashlib one. A password
# is hashed once when it is set, so a plain Python loop is fast enough.
_MASK = 0xFFFFFFFF
_MD4_ROUND_2 = 0x5A827999
_MD4_ROUND_3 = 0x6ED9EBA1
_MD4_ORDER_3 = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _MASK


def md4(data: bytes) -> bytes:
    """The RFC 1320 MD4 digest (16 bytes) of `data`."""
    length = len(data)
    message = data + b"\x80" + b"\x00" * ((55 - length) % 64)
    message += ((length * 8) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    for start in range(0, len(message), 64):
        x = [int.from_bytes(message[i : i + 4], "little") for i in range(start, start + 64, 4)]
        a, b, c, d = h
        for i in range(16):  # round 1: F(b, c, d) = b and c, or not b and d
            k, s = i, (3, 7, 11, 19)[i % 4]
            a = _rotl((a + ((b & c) | (~b & d)) + x[k]) & _MASK, s)
            a, b, c, d = d, a, b, c
        for i in range(16):  # round 2: G = majority(b, c, d)
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            a = _rotl((a + ((b & c) | (b & d) | (c & d)) + x[k] + _MD4_ROUND_2) & _MASK, s)
            a, b, c, d = d, a, b, c
        for i in range(16):  # round 3: H = b xor c xor d
            k, s = _MD4_ORDER_3[i], (3, 9, 11, 15)[i % 4]
            a = _rotl((a + (b ^ c ^ d) + x[k] + _MD4_ROUND_3) & _MASK, s)
            a, b, c, d = d, a, b, c
        h = [(v + w) & _MASK for v, w in zip(h, (a, b, c, d), strict=True)]
    return b"".join(v.to_bytes(4, "little") for v in h)


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
