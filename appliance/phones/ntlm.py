"""NTLM over HTTP for external phones (docs/protocol.md §2): the messages and the checks.

The handshake is the one Windows clients run against IIS (MS-NLMP, RFC 4559 without
Negotiate): the client sends `Authorization: NTLM <Type 1>`, gets `401` with
`WWW-Authenticate: NTLM <Type 2>` (a fresh 8-byte server challenge) on the same
connection, and answers with `Authorization: NTLM <Type 3>`; the connection is then
authorised. A challenge belongs to its connection (`NtlmSession`), and is used once.

The messages are read and built by `ntlm_codec` (bytes in, bytes out); the response is
checked here against the user's NT hash. NTLMv2 is the default; NTLMv1 (24-byte
responses) only when the caller allows it. LM responses alone are never accepted here (no
LM hash is stored); the MIC is not checked (the session key is never used: the TLS
listener carries the integrity).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import struct
import time
from dataclasses import dataclass

from appliance.phones.ntlm_codec import (
    SIGNATURE,
    AvId,
    NegotiateFlag,
    av_pairs,
    av_text,
    build_challenge,
    filetime,
    ntlmv1_response,
    ntlmv2_proof,
    ntowfv2,
    read_negotiate,
)
from appliance.phones.ntlm_codec import NtlmError as NtlmError
from appliance.phones.ntlm_codec import read_authenticate as read_authenticate_message

MAX_TOKEN = 4096  # bytes of a decoded NTLM message; Windows' are a few hundred


def is_ntlm(header: bytes | None) -> bool:
    """Whether an `Authorization` value uses the NTLM scheme (any case)."""
    parts = (header or b"").strip().split(None, 1)
    return bool(parts) and parts[0].lower() == b"ntlm"


def ntlm_token(header: bytes | None) -> bytes | None:
    """The decoded message of an `Authorization: NTLM <base64>` value, or None. Never raises."""
    if not is_ntlm(header):
        return None
    parts = (header or b"").strip().split(None, 1)
    if len(parts) != 2:
        return None
    token = re.sub(rb"[^A-Za-z0-9+/]", b"", parts[1])
    if len(token) > MAX_TOKEN * 2:
        return None
    try:
        raw = base64.b64decode(token + b"=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if raw.startswith(SIGNATURE) and len(raw) >= 12 else None


def message_type(token: bytes) -> int:
    """1 (negotiate), 2 (challenge), 3 (authenticate), or another number."""
    value: int = struct.unpack_from("<I", token, 8)[0]
    return value


@dataclass(frozen=True)
class NtlmResponse:
    """What a Type 3 message says, with the server challenge it answers."""

    user: str
    domain: str
    workstation: str
    server_challenge: bytes
    nt_response: bytes
    lm_response: bytes
    flags: int

    @property
    def v2(self) -> bool:
        """NTLMv2: the NT response carries the client's blob (longer than v1's 24 bytes)."""
        return len(self.nt_response) > 24

    @property
    def anonymous(self) -> bool:
        """No NT response and an empty or one-zero-byte LM response (MS-NLMP anonymous)."""
        return not self.nt_response and self.lm_response in (b"", b"\x00")

    @property
    def version(self) -> str:
        """For logs and events: "NTLMv2", "NTLMv1" or "LM"."""
        if self.v2:
            return "NTLMv2"
        return "NTLMv1" if self.nt_response else "LM"


@dataclass(eq=False)  # identity: sessions are kept in a WeakSet
class NtlmSession:
    """One connection's NTLM state: the challenge waiting for its answer, then the user
    the connection is authorised as, until `until` (seconds on the authenticator's clock)."""

    challenge: bytes | None = None
    user: str | None = None
    until: float = 0.0

    def authorised(self, now: float) -> str | None:
        return self.user if self.user is not None and now < self.until else None

    def reset(self) -> None:
        self.challenge = None
        self.user = None
        self.until = 0.0


# What the challenge echoes of the client's flags (the rest is set or dropped).
_ECHOED = (
    NegotiateFlag.EXTENDED_SESSION_SECURITY
    | NegotiateFlag.KEY_128
    | NegotiateFlag.KEY_56
    | NegotiateFlag.KEY_EXCH
    | NegotiateFlag.SIGN
    | NegotiateFlag.SEAL
    | NegotiateFlag.ALWAYS_SIGN
)


def challenge_message(
    negotiate: bytes,
    server_challenge: bytes,
    domain: str,
    computer: str,
    dns_domain: str = "",
    now: float | None = None,
) -> bytes:
    """The Type 2 message answering the Type 1 `negotiate`, with `server_challenge`; its
    MsvAvTimestamp is `now` (Unix seconds), the wall clock when None."""
    asked = read_negotiate(negotiate)
    flags = (
        NegotiateFlag.NTLM
        | NegotiateFlag.REQUEST_TARGET
        | NegotiateFlag.TARGET_INFO
        | NegotiateFlag.TARGET_TYPE_DOMAIN
        | (asked & _ECHOED)
    )
    flags |= NegotiateFlag.UNICODE if asked & NegotiateFlag.UNICODE else NegotiateFlag.OEM
    info = av_pairs(
        [
            (AvId.NB_DOMAIN_NAME, av_text(domain)),
            (AvId.NB_COMPUTER_NAME, av_text(computer)),
            (AvId.DNS_DOMAIN_NAME, av_text(dns_domain or domain.lower())),
            (AvId.DNS_COMPUTER_NAME, av_text(computer.lower())),
            (AvId.TIMESTAMP, filetime(time.time() if now is None else now)),
        ]
    )
    return build_challenge(flags, server_challenge, domain, info)


def read_authenticate(token: bytes, server_challenge: bytes) -> NtlmResponse:
    """The fields of a Type 3 message; NtlmError when it is not one or is damaged."""
    message = read_authenticate_message(token)
    return NtlmResponse(
        user=message.user,
        domain=message.domain,
        workstation=message.workstation,
        server_challenge=server_challenge,
        nt_response=message.nt_response,
        lm_response=message.lm_response,
        flags=message.flags,
    )


def check_response(response: NtlmResponse, nt_hash: bytes) -> bool:
    """Whether the NT response proves knowledge of `nt_hash` (NTLMv2, or NTLMv1 with or
    without extended session security). The caller decides whether v1 is allowed."""
    nt = response.nt_response
    challenge = response.server_challenge
    if response.v2:
        if len(nt) < 16 + 28:
            return False
        key = ntowfv2(nt_hash, response.user, response.domain)
        return hmac.compare_digest(ntlmv2_proof(key, challenge, nt[16:]), nt[:16])
    if len(nt) != 24:
        return False  # LM alone, or damaged
    if response.flags & NegotiateFlag.EXTENDED_SESSION_SECURITY:
        if len(response.lm_response) < 8:
            return False
        expected = ntlmv1_response(nt_hash, challenge, response.lm_response[:8])
    else:
        expected = ntlmv1_response(nt_hash, challenge)
    return hmac.compare_digest(expected, nt)
