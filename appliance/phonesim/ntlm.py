"""The client side of NTLM over HTTP (docs/protocol.md §2), as Windows clients run it.

`negotiate()` is the Type 1 message; `authenticate()` answers the server's Type 2 with
an NTLMv2 Type 3 (MS-NLMP 3.3.2): NTProofStr = HMAC-MD5(NTOWFv2, server challenge +
blob), the blob carrying the time, a client challenge and the server's target info. No
session key is exchanged (KEY_EXCH is not asked for) and no MIC is sent: the TLS
connection carries the integrity, and the appliance reads neither.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time

from appliance.passwords import nt_hash

SIGNATURE = b"NTLMSSP\x00"
UNICODE = 0x00000001
REQUEST_TARGET = 0x00000004
NTLM = 0x00000200
ALWAYS_SIGN = 0x00008000
EXTENDED_SESSION_SECURITY = 0x00080000
TARGET_INFO = 0x00800000
FLAGS = UNICODE | REQUEST_TARGET | NTLM | ALWAYS_SIGN | EXTENDED_SESSION_SECURITY
_FILETIME_1970 = 116444736000000000
_AV_TIMESTAMP = 7


class NtlmClientError(ValueError):
    """A Type 2 message the client cannot answer."""


def negotiate() -> bytes:
    """The NEGOTIATE_MESSAGE: flags, empty domain and workstation."""
    return SIGNATURE + struct.pack("<II", 1, FLAGS) + bytes(16)


def _hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.md5).digest()


def _challenge(token: bytes) -> tuple[int, bytes, bytes]:
    """(flags, server challenge, target info) of a CHALLENGE_MESSAGE."""
    if len(token) < 32 or not token.startswith(SIGNATURE) or token[8:12] != b"\x02\x00\x00\x00":
        raise NtlmClientError("not an NTLM challenge message")
    flags: int = struct.unpack_from("<I", token, 20)[0]
    server_challenge = token[24:32]
    info = b""
    if len(token) >= 48:
        length, _, offset = struct.unpack_from("<HHI", token, 40)
        if offset + length > len(token):
            raise NtlmClientError("the challenge's target info is past its end")
        info = token[offset : offset + length]
    return flags, server_challenge, info


def _has_timestamp(info: bytes) -> bool:
    i = 0
    while i + 4 <= len(info):
        av_id, length = struct.unpack_from("<HH", info, i)
        if av_id == 0:
            return False
        if av_id == _AV_TIMESTAMP:
            return True
        i += 4 + length
    return False


def authenticate(challenge: bytes, user: str, password: str, workstation: str = "LPE") -> bytes:
    """The AUTHENTICATE_MESSAGE answering `challenge` for `user` (`DOMAIN\\user` splits)."""
    flags, server_challenge, info = _challenge(challenge)
    domain, _, name = user.rpartition("\\")
    key = _hmac_md5(bytes.fromhex(nt_hash(password)), (name.upper() + domain).encode("utf-16-le"))
    client_challenge = os.urandom(8)
    stamp = struct.pack("<Q", _FILETIME_1970 + int(time.time() * 10_000_000))
    blob = b"\x01\x01" + bytes(6) + stamp + client_challenge + bytes(4) + info + bytes(4)
    nt_response = _hmac_md5(key, server_challenge + blob) + blob
    if _has_timestamp(info):  # MS-NLMP 3.3.2: the LM response is then zeros
        lm_response = bytes(24)
    else:
        lm_response = _hmac_md5(key, server_challenge + client_challenge) + client_challenge
    unicode = flags & UNICODE
    codec = "utf-16-le" if unicode else "cp1252"
    names = [text.encode(codec, "replace") for text in (domain, name, workstation)]
    fields = [lm_response, nt_response, *names, b""]
    offset = 64
    descriptors = b""
    for value in fields:
        descriptors += struct.pack("<HHI", len(value), len(value), offset)
        offset += len(value)
    answer_flags = (FLAGS & ~UNICODE) | (flags & UNICODE) | (flags & TARGET_INFO)
    return (
        SIGNATURE
        + struct.pack("<I", 3)
        + descriptors
        + struct.pack("<I", answer_flags)
        + b"".join(fields)
    )
