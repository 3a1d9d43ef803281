"""The NTLM messages and their arithmetic (MS-NLMP 2.2, 3.3): bytes in, bytes out.

What a server needs and no more: read a NEGOTIATE_MESSAGE (Type 1) for its flags, build a
CHALLENGE_MESSAGE (Type 2), read an AUTHENTICATE_MESSAGE (Type 3) with every field's
offset and length checked against the message, and compute the responses a password's NT
hash gives (NTLMv2, NTLMv1 with and without extended session security). Anything malformed
raises NtlmError and nothing else. No Twisted, no clock: the caller passes the time.

HMAC-MD5 and MD5 are the standard library's; DES (for NTLMv1's DESL) is `cryptography`'s
TripleDES with the one 8-byte key repeated, which is single DES.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from functools import partial

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

SIGNATURE = b"NTLMSSP\x00"
OEM_ENCODING = "cp1252"  # text fields when NTLMSSP_NEGOTIATE_UNICODE is not negotiated
NEGOTIATE = 1
CHALLENGE = 2
AUTHENTICATE = 3
_CHALLENGE_HEADER = 48  # bytes before a CHALLENGE_MESSAGE's payload
_AUTHENTICATE_HEADER = 64  # up to and including NegotiateFlags
_FILETIME_1970 = 116444736000000000  # 1970-01-01 in 100 ns intervals since 1601-01-01


class NtlmError(Exception):
    """An NTLM message that cannot be read or built; str() says why."""


class NegotiateFlag(IntFlag):
    """The NegotiateFlags bits this appliance reads or sets (MS-NLMP 2.2.2.5)."""

    UNICODE = 0x00000001
    OEM = 0x00000002
    REQUEST_TARGET = 0x00000004
    SIGN = 0x00000010
    SEAL = 0x00000020
    LM_KEY = 0x00000080
    NTLM = 0x00000200
    ANONYMOUS = 0x00000800
    ALWAYS_SIGN = 0x00008000
    TARGET_TYPE_DOMAIN = 0x00010000
    TARGET_TYPE_SERVER = 0x00020000
    EXTENDED_SESSION_SECURITY = 0x00080000
    TARGET_INFO = 0x00800000
    VERSION = 0x02000000
    KEY_128 = 0x20000000
    KEY_EXCH = 0x40000000
    KEY_56 = 0x80000000


class AvId(IntEnum):
    """AV_PAIR identifiers of a TargetInfo (MS-NLMP 2.2.2.1)."""

    EOL = 0
    NB_COMPUTER_NAME = 1
    NB_DOMAIN_NAME = 2
    DNS_COMPUTER_NAME = 3
    DNS_DOMAIN_NAME = 4
    DNS_TREE_NAME = 5
    FLAGS = 6
    TIMESTAMP = 7
    SINGLE_HOST = 8
    TARGET_NAME = 9
    CHANNEL_BINDINGS = 10


def message_type(token: bytes) -> int:
    """1 (negotiate), 2 (challenge), 3 (authenticate) or another number; NtlmError when
    `token` does not start with the NTLMSSP signature and a type."""
    if len(token) < 12 or not token.startswith(SIGNATURE):
        raise NtlmError("not an NTLM message")
    value: int = struct.unpack_from("<I", token, 8)[0]
    return value


# -- Type 1 and Type 2 ----------------------------------------------------------------------


def read_negotiate(token: bytes) -> int:
    """The NegotiateFlags of a NEGOTIATE_MESSAGE. Its optional domain and workstation
    fields are not read: a server has no use for them and old clients send none."""
    if message_type(token) != NEGOTIATE or len(token) < 16:
        raise NtlmError("not an NTLM negotiate message")
    flags: int = struct.unpack_from("<I", token, 12)[0]
    return flags


def av_pairs(pairs: Iterable[tuple[AvId, bytes]]) -> bytes:
    """A TargetInfo: each (id, value) as an AV_PAIR, then MsvAvEOL."""
    out = bytearray()
    for av_id, value in pairs:
        if av_id == AvId.EOL:
            continue
        if len(value) > 0xFFFF:
            raise NtlmError(f"AV pair {av_id.name} is longer than 65535 bytes")
        out += struct.pack("<HH", av_id, len(value)) + value
    return bytes(out + b"\x00\x00\x00\x00")


def av_text(text: str) -> bytes:
    """A text AV_PAIR value: always UTF-16LE, whatever the flags say."""
    return text.encode("utf-16-le", "surrogatepass")


def filetime(unix_seconds: float) -> bytes:
    """A FILETIME (100 ns intervals since 1601, UTC) for MsvAvTimestamp, to the microsecond."""
    micro = round(unix_seconds * 1_000_000)
    return struct.pack("<Q", _FILETIME_1970 + micro * 10)


def _descriptor(value: bytes, offset: int) -> bytes:
    """A payload field's (length, maximum length, offset); an empty field's offset is 0."""
    return struct.pack("<HHI", len(value), len(value), offset if value else 0)


def build_challenge(
    flags: int, server_challenge: bytes, target_name: str, target_info: bytes, version: bytes = b""
) -> bytes:
    """A CHALLENGE_MESSAGE with exactly `flags` (the caller sets UNICODE or OEM, which also
    chooses the target name's encoding, and TARGET_INFO, REQUEST_TARGET, VERSION to match).
    The payload is the 8-byte `version` if any, the target name, then `target_info`."""
    if len(server_challenge) != 8:
        raise NtlmError("a server challenge has 8 bytes")
    if version and len(version) != 8:
        raise NtlmError("a VERSION has 8 bytes")
    if flags & NegotiateFlag.UNICODE:
        name = target_name.encode("utf-16-le", "surrogatepass")
    else:
        name = target_name.encode(OEM_ENCODING, "replace")
    if len(name) > 0xFFFF or len(target_info) > 0xFFFF:
        raise NtlmError("a challenge field is longer than 65535 bytes")
    name_at = _CHALLENGE_HEADER + len(version)
    info_at = name_at + len(name)
    return b"".join(
        (
            SIGNATURE,
            struct.pack("<I", CHALLENGE),
            _descriptor(name, name_at),
            struct.pack("<I", flags & 0xFFFFFFFF),
            server_challenge,
            b"\x00" * 8,  # Reserved
            _descriptor(target_info, info_at),
            version,
            name,
            target_info,
        )
    )


# -- Type 3 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authenticate:
    """The fields of an AUTHENTICATE_MESSAGE a server checks. The session key, VERSION and
    MIC are not read: the session key is never used (TLS carries the integrity)."""

    lm_response: bytes
    nt_response: bytes
    domain: str
    user: str
    workstation: str
    flags: int


def _field(token: bytes, at: int, name: str) -> bytes:
    """A payload field from its (length, maximum length, offset) descriptor at `at`."""
    length, _maximum, offset = struct.unpack_from("<HHI", token, at)
    if not length:
        return b""  # an empty field's offset is not looked at: clients put anything there
    if offset + length > len(token):
        raise NtlmError(f"the {name} field ({length} bytes at {offset}) is past the message end")
    return token[offset : offset + length]


def _text(data: bytes, flags: int, name: str) -> str:
    try:
        if flags & NegotiateFlag.UNICODE:
            return data.decode("utf-16-le")
        return data.decode(OEM_ENCODING)
    except UnicodeDecodeError as e:
        raise NtlmError(f"the {name} field is not readable text: {e.reason}") from e


def read_authenticate(token: bytes) -> Authenticate:
    """The fields of an AUTHENTICATE_MESSAGE: names decoded as UTF-16LE when the message's
    flags say UNICODE, else in the OEM code page."""
    if message_type(token) != AUTHENTICATE or len(token) < _AUTHENTICATE_HEADER:
        raise NtlmError("not an NTLM authenticate message")
    flags: int = struct.unpack_from("<I", token, 60)[0]
    return Authenticate(
        lm_response=_field(token, 12, "LmChallengeResponse"),
        nt_response=_field(token, 20, "NtChallengeResponse"),
        domain=_text(_field(token, 28, "DomainName"), flags, "DomainName"),
        user=_text(_field(token, 36, "UserName"), flags, "UserName"),
        workstation=_text(_field(token, 44, "Workstation"), flags, "Workstation"),
        flags=flags,
    )


# -- the arithmetic (MS-NLMP 3.3, 6) ------------------------------------------------------

_md5 = partial(hashlib.md5, usedforsecurity=False)


def md5(data: bytes) -> bytes:
    return _md5(data).digest()


def hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, _md5).digest()


def _des_key(seven: bytes) -> bytes:
    """56 key bits spread over 8 bytes, 7 bits each (the low bit, parity, left 0)."""
    bits = int.from_bytes(seven, "big")
    return bytes(((bits >> (49 - 7 * i)) & 0x7F) << 1 for i in range(8))


def des(key7: bytes, block: bytes) -> bytes:
    """DES-ECB of one 8-byte block under a 7-byte key (TripleDES with K1 = K2 = K3)."""
    key = _des_key(key7) * 3  # cryptography deprecates 8-byte (single-DES) TripleDES keys
    encryptor = Cipher(TripleDES(key), modes.ECB()).encryptor()  # noqa: S305
    return encryptor.update(block) + encryptor.finalize()


def desl(key: bytes, data: bytes) -> bytes:
    """DESL(K, D): D under K[0:7], K[7:14] and K[14:16] + Z(5), 24 bytes (MS-NLMP 6)."""
    k = key[:16].ljust(21, b"\x00")
    return des(k[:7], data) + des(k[7:14], data) + des(k[14:21], data)


def ntowfv2(nt_hash: bytes, user: str, domain: str) -> bytes:
    """NTOWFv2: HMAC-MD5 of the upper-cased user and the domain under the NT hash."""
    return hmac_md5(nt_hash, (user.upper() + domain).encode("utf-16-le", "surrogatepass"))


def ntlmv2_proof(key: bytes, server_challenge: bytes, blob: bytes) -> bytes:
    """NTProofStr: the first 16 bytes of an NTLMv2 response, whose rest is `blob`."""
    return hmac_md5(key, server_challenge + blob)


def ntlmv1_response(
    nt_hash: bytes, server_challenge: bytes, client_challenge: bytes = b""
) -> bytes:
    """The 24-byte NTLMv1 response; with extended session security (a `client_challenge`,
    the first 8 bytes of the LM response) the challenge is MD5(server + client)[:8]."""
    if client_challenge:
        return desl(nt_hash, md5(server_challenge + client_challenge[:8])[:8])
    return desl(nt_hash, server_challenge)
