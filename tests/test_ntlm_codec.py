"""The appliance's own NTLM codec and MD4: known answers from the specifications, round
trips with pyspnego's public initiator (a real NTLM client), and damaged input.

Known answers (MS-NLMP 4.2, "Cryptographic Values for Validation"): user "User", domain
"Domain", password "Password", workstation "COMPUTER", server challenge 0123456789abcdef,
client challenge aaaaaaaaaaaaaaaa, time 0, target info NbDomainName "Domain" and
NbComputerName "Server":
  NTOWFv1 (the NT hash)       a4f49c406510bdcab6824ee7c30fd852            (4.2.2.1.2)
  NTLMv1 response             67c43011f30298a2ad35ece64f16331c44bdbed927841f94  (4.2.2.2.1)
  NTLMv1 with client chall.   7537f803ae367128ca458204bde7caf81e97ed2683267232  (4.2.3.2.2)
  NTOWFv2                     0c868a403bfd7a93a3001ef22ef02e3f            (4.2.4.1.1)
  NTLMv2 NTProofStr           68cd0ab851e51c96aabc927bebef6a1c            (4.2.4.2.2)
and the CHALLENGE and AUTHENTICATE messages the spec prints in 4.2.2.3, 4.2.3.3, 4.2.4.3.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

import pytest
import spnego

from appliance.passwords import md4, nt_hash
from appliance.phones.ntlm import NtlmResponse, challenge_message, check_response
from appliance.phones.ntlm import read_authenticate as read_response
from appliance.phones.ntlm_codec import (
    AvId,
    NegotiateFlag,
    NtlmError,
    av_pairs,
    av_text,
    build_challenge,
    filetime,
    message_type,
    ntlmv1_response,
    ntlmv2_proof,
    ntowfv2,
    read_authenticate,
    read_negotiate,
)

SERVER_CHALLENGE = bytes.fromhex("0123456789abcdef")
CLIENT_CHALLENGE = bytes.fromhex("aaaaaaaaaaaaaaaa")
NT_HASH = bytes.fromhex("a4f49c406510bdcab6824ee7c30fd852")
SPEC_INFO = av_pairs(
    [(AvId.NB_DOMAIN_NAME, av_text("Domain")), (AvId.NB_COMPUTER_NAME, av_text("Server"))]
)
SPEC_VERSION = bytes.fromhex("060070170000000f")  # Windows 6.0.6000, NTLM revision 15
# The NTLMv2 blob ("temp", 4.2.4.1.3): header, time 0, client challenge, target info, Z(4).
SPEC_BLOB = (
    bytes.fromhex("0101000000000000" + "0000000000000000" + "aa" * 8 + "00000000")
    + SPEC_INFO
    + bytes(4)
)

# The AUTHENTICATE_MESSAGEs of MS-NLMP 4.2.2.3 (NTLMv1), 4.2.3.3 (NTLMv1 with extended
# session security) and 4.2.4.3 (NTLMv2).
SPEC_V1 = (
    "4e544c4d5353500003000000180018006c00000018001800840000000c000c00"
    "480000000800080054000000100010005c000000100010009c000000358280e2"
    "0501280a0000000f44006f006d00610069006e00550073006500720043004f00"
    "4d005000550054004500520098def7b87f88aa5dafe2df779688a172def11c7d"
    "5ccdef1367c43011f30298a2ad35ece64f16331c44bdbed927841f94518822b1"
    "b3f350c8958682ecbb3e3cb7"
)
SPEC_V1_ESS = (
    "4e544c4d5353500003000000180018006c00000018001800840000000c000c00"
    "480000000800080054000000100010005c000000000000009c00000035820882"
    "0501280a0000000f44006f006d00610069006e00550073006500720043004f00"
    "4d0050005500540045005200aaaaaaaaaaaaaaaa000000000000000000000000"
    "000000007537f803ae367128ca458204bde7caf81e97ed2683267232"
)
SPEC_V2 = (
    "4e544c4d5353500003000000180018006c00000054005400840000000c000c00"
    "480000000800080054000000100010005c00000010001000d8000000358288e2"
    "0501280a0000000f44006f006d00610069006e00550073006500720043004f00"
    "4d005000550054004500520086c35097ac9cec102554764a57cccc19aaaaaaaa"
    "aaaaaaaa68cd0ab851e51c96aabc927bebef6a1c010100000000000000000000"
    "00000000aaaaaaaaaaaaaaaa0000000002000c0044006f006d00610069006e00"
    "01000c005300650072007600650072000000000000000000c5dad2544fc97990"
    "94ce1ce90bc9d03e"
)

# -- MD4 (RFC 1320 A.5) and the NT hash ---------------------------------------------------


@pytest.mark.parametrize(
    ("message", "digest"),
    [
        (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
        (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
        (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
        (b"message digest", "d9130a8164549fe818874806e1c7014b"),
        (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
        (
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            "043f8582f241db351ce627e153e7f0e4",
        ),
        (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
    ],
)
def test_md4_gives_the_rfc_1320_digests(message: bytes, digest: str) -> None:
    assert md4(message).hex() == digest


def test_md4_pads_across_block_boundaries() -> None:
    # 55, 56 and 64 bytes are where the length no longer fits the first block.
    digests = {md4(b"x" * n) for n in (55, 56, 63, 64, 65, 119, 120)}
    assert len(digests) == 7 and all(len(d) == 16 for d in digests)


def test_the_nt_hash_is_md4_of_utf16le() -> None:
    assert nt_hash("Password") == NT_HASH.hex()
    assert nt_hash("") == "31d6cfe0d16ae931b73c59d7e0c089c0"  # the well-known empty hash


# -- MS-NLMP 4.2 known answers ------------------------------------------------------------


def test_ntowfv2_and_the_ntlmv2_proof() -> None:
    key = ntowfv2(NT_HASH, "User", "Domain")
    assert key.hex() == "0c868a403bfd7a93a3001ef22ef02e3f"
    assert ntowfv2(NT_HASH, "user", "Domain") == key  # the user is upper-cased
    assert ntowfv2(NT_HASH, "User", "DOMAIN") != key  # the domain is not
    assert (
        ntlmv2_proof(key, SERVER_CHALLENGE, SPEC_BLOB).hex() == "68cd0ab851e51c96aabc927bebef6a1c"
    )


def test_ntlmv1_responses() -> None:
    assert (
        ntlmv1_response(NT_HASH, SERVER_CHALLENGE).hex()
        == "67c43011f30298a2ad35ece64f16331c44bdbed927841f94"
    )
    assert (
        ntlmv1_response(NT_HASH, SERVER_CHALLENGE, CLIENT_CHALLENGE).hex()
        == "7537f803ae367128ca458204bde7caf81e97ed2683267232"
    )


def test_the_spec_challenge_messages_are_built_byte_for_byte() -> None:
    v2 = build_challenge(0xE28A8233, SERVER_CHALLENGE, "Server", SPEC_INFO, SPEC_VERSION)
    assert v2.hex() == (
        "4e544c4d53535000020000000c000c003800000033828ae20123456789abcdef"
        "00000000000000002400240044000000060070170000000f5300650072007600"
        "6500720002000c0044006f006d00610069006e0001000c005300650072007600"
        "6500720000000000"
    )
    v1 = build_challenge(0x820A8233, SERVER_CHALLENGE, "Server", b"", SPEC_VERSION)
    assert v1.hex() == (
        "4e544c4d53535000020000000c000c003800000033820a820123456789abcdef"
        "00000000000000000000000000000000060070170000000f530065007200760065007200"
    )


@pytest.mark.parametrize(
    ("message", "version", "flag_ess"),
    [(SPEC_V1, "NTLMv1", False), (SPEC_V1_ESS, "NTLMv1", True), (SPEC_V2, "NTLMv2", True)],
)
def test_the_spec_authenticate_messages_are_read_and_checked(
    message: str, version: str, flag_ess: bool
) -> None:
    token = bytes.fromhex(message)
    fields = read_authenticate(token)
    assert (fields.user, fields.domain, fields.workstation) == ("User", "Domain", "COMPUTER")
    assert bool(fields.flags & NegotiateFlag.EXTENDED_SESSION_SECURITY) == flag_ess
    response = read_response(token, SERVER_CHALLENGE)
    assert response.version == version
    assert check_response(response, NT_HASH)
    assert not check_response(response, bytes.fromhex(nt_hash("password")))
    other = read_response(token, SERVER_CHALLENGE[:7] + b"\xee")
    assert not check_response(other, NT_HASH)


def test_a_v2_response_for_another_user_or_domain_fails() -> None:
    response = read_response(bytes.fromhex(SPEC_V2), SERVER_CHALLENGE)
    for user, domain in (("Other", "Domain"), ("User", "Other"), ("User", "")):
        changed = NtlmResponse(user, domain, "", SERVER_CHALLENGE, response.nt_response, b"", 0)
        assert not check_response(changed, NT_HASH)


# -- Type 1 and Type 2 ---------------------------------------------------------------------


def av_pairs_of(data: bytes) -> Iterator[tuple[int, bytes]]:
    """A test-side reader of a TargetInfo, independent of the codec's writer."""
    at = 0
    while at + 4 <= len(data):
        av_id, length = struct.unpack_from("<HH", data, at)
        if av_id == AvId.EOL:
            return
        yield av_id, data[at + 4 : at + 4 + length]
        at += 4 + length


def challenge_fields(message: bytes) -> tuple[int, bytes, bytes, bytes]:
    """(flags, server challenge, target name, target info) of a CHALLENGE_MESSAGE."""
    name_len, _, name_at = struct.unpack_from("<HHI", message, 12)
    info_len, _, info_at = struct.unpack_from("<HHI", message, 40)
    flags = struct.unpack_from("<I", message, 20)[0]
    return (
        flags,
        message[24:32],
        message[name_at : name_at + name_len],
        message[info_at : info_at + info_len],
    )


def test_the_challenge_answers_what_the_client_asked() -> None:
    negotiate = spnego.client("alice", "pw", protocol="ntlm").step() or b""
    asked = read_negotiate(negotiate)
    assert asked & NegotiateFlag.UNICODE
    message = challenge_message(negotiate, b"\x11" * 8, "CONTOSO", "UCUPDATES", now=1.5e9)
    flags, challenge, name, info = challenge_fields(message)
    assert message_type(message) == 2 and challenge == b"\x11" * 8
    assert name == "CONTOSO".encode("utf-16-le")
    assert flags & NegotiateFlag.UNICODE and not flags & NegotiateFlag.OEM
    for bit in (NegotiateFlag.NTLM, NegotiateFlag.TARGET_INFO, NegotiateFlag.REQUEST_TARGET):
        assert flags & bit
    echoed = NegotiateFlag.EXTENDED_SESSION_SECURITY | NegotiateFlag.KEY_128 | NegotiateFlag.SIGN
    assert flags & echoed == asked & echoed
    pairs = dict(av_pairs_of(info))
    assert pairs[AvId.NB_DOMAIN_NAME] == "CONTOSO".encode("utf-16-le")
    assert pairs[AvId.NB_COMPUTER_NAME] == "UCUPDATES".encode("utf-16-le")
    assert pairs[AvId.DNS_DOMAIN_NAME] == "contoso".encode("utf-16-le")
    assert pairs[AvId.DNS_COMPUTER_NAME] == "ucupdates".encode("utf-16-le")
    ticks = struct.unpack("<Q", pairs[AvId.TIMESTAMP])[0]
    assert ticks == 116444736000000000 + 15 * 10**15  # 1.5e9 s after 1970, in 100 ns
    assert filetime(0) == struct.pack("<Q", 116444736000000000)


def test_an_oem_client_gets_an_oem_target_name() -> None:
    negotiate = b"NTLMSSP\x00\x01\x00\x00\x00" + struct.pack("<I", 0x00000206)  # OEM|REQ|NTLM
    flags, _, name, _ = challenge_fields(challenge_message(negotiate, bytes(8), "DÖMAIN", "X"))
    assert flags & NegotiateFlag.OEM and not flags & NegotiateFlag.UNICODE
    assert name == "DÖMAIN".encode("cp1252")


@pytest.mark.parametrize(
    "token",
    [
        b"",
        b"NTLMSSP\x00",
        b"NTLMSSP\x00\x01\x00\x00\x00",  # no flags
        b"NTLMSSP\x00\x03\x00\x00\x00" + bytes(8),  # a Type 3
        b"NOTNTLM\x00\x01\x00\x00\x00" + bytes(8),
    ],
)
def test_what_is_not_a_negotiate_message_is_an_ntlm_error(token: bytes) -> None:
    with pytest.raises(NtlmError):
        read_negotiate(token)
    with pytest.raises(NtlmError):
        challenge_message(token, bytes(8), "D", "C")


def test_a_challenge_has_eight_bytes() -> None:
    with pytest.raises(NtlmError):
        build_challenge(0, bytes(7), "D", b"")


# -- Type 3 --------------------------------------------------------------------------------


def authenticate_message(
    flags: int, lm: bytes, nt: bytes, domain: bytes, user: bytes, workstation: bytes
) -> bytes:
    """A hand-built AUTHENTICATE_MESSAGE, payload after the 64-byte header."""
    payload, fields, at = b"", b"", 64
    for value in (lm, nt, domain, user, workstation, b""):
        fields += struct.pack("<HHI", len(value), len(value), at)
        payload += value
        at += len(value)
    return b"NTLMSSP\x00\x03\x00\x00\x00" + fields + struct.pack("<I", flags) + payload


def test_oem_names_are_read_in_the_oem_code_page() -> None:
    oem = NegotiateFlag.OEM | NegotiateFlag.NTLM
    token = authenticate_message(oem, bytes(24), bytes(24), b"D\xd6M", b"d\xe4v\xe9", b"WS")
    fields = read_authenticate(token)
    assert (fields.domain, fields.user, fields.workstation) == ("DÖM", "dävé", "WS")
    unicode = authenticate_message(
        NegotiateFlag.UNICODE, b"", bytes(24), b"", "dävé".encode("utf-16-le"), b""
    )
    assert read_authenticate(unicode).user == "dävé"


def test_an_empty_field_may_point_anywhere() -> None:
    token = bytearray(authenticate_message(NegotiateFlag.UNICODE, b"\x00", b"", b"", b"", b""))
    struct.pack_into("<I", token, 32, 0xFFFFFFF0)  # the empty DomainName's offset
    assert read_authenticate(bytes(token)).domain == ""


@pytest.mark.parametrize(
    ("at", "value"),
    [
        (12, struct.pack("<HHI", 24, 24, 100)),  # LM response past the end
        (20, struct.pack("<HHI", 24, 24, 0xFFFFFFFF)),  # NT response: offset overflows
        (28, struct.pack("<HHI", 2, 2, 90)),  # domain, one byte over
        (36, struct.pack("<HHI", 0xFFFF, 0xFFFF, 64)),  # user
        (44, struct.pack("<HHI", 4, 4, 88)),  # workstation
    ],
)
def test_a_field_past_the_message_end_is_an_ntlm_error(at: int, value: bytes) -> None:
    token = bytearray(authenticate_message(NegotiateFlag.UNICODE, bytes(24), b"", b"", b"", b""))
    assert len(token) == 88
    token[at : at + 8] = value
    with pytest.raises(NtlmError, match="past the message end"):
        read_authenticate(bytes(token))


@pytest.mark.parametrize(
    ("flags", "user"),
    [
        (NegotiateFlag.UNICODE, b"abc"),  # odd UTF-16
        (NegotiateFlag.UNICODE, b"\x00\xd8"),  # a lone surrogate
        (NegotiateFlag.OEM, b"a\x81"),  # undefined in cp1252
    ],
)
def test_unreadable_names_are_an_ntlm_error(flags: int, user: bytes) -> None:
    token = authenticate_message(flags, b"", bytes(24), b"", user, b"")
    with pytest.raises(NtlmError, match="UserName"):
        read_authenticate(token)


def test_short_or_other_messages_are_not_authenticate_messages() -> None:
    token = bytes.fromhex(SPEC_V2)
    for bad in (token[:63], b"NTLMSSP\x00\x02" + token[9:], b"XTLMSSP\x00" + token[8:]):
        with pytest.raises(NtlmError):
            read_authenticate(bad)


# -- round trips with a real client (pyspnego's public initiator) ------------------------


@pytest.mark.parametrize("lm_compat", ["0", "1", "2", "3"])
@pytest.mark.parametrize(
    ("login", "user", "domain"),
    [("alice", "alice", ""), ("CONTOSO\\dave", "dave", "CONTOSO"), ("dävé@x", "dävé@x", "")],
)
def test_a_real_client_answers_our_challenge(
    monkeypatch: pytest.MonkeyPatch, lm_compat: str, login: str, user: str, domain: str
) -> None:
    # LM_COMPAT_LEVEL 0-2 make pyspnego answer NTLMv1 (with extended session security
    # when negotiated), 3 NTLMv2 (its default).
    monkeypatch.setenv("LM_COMPAT_LEVEL", lm_compat)
    password = "Pässword 1"
    client = spnego.client(login, password, protocol="ntlm")
    challenge = bytes(range(8))
    message = challenge_message(client.step() or b"", challenge, "UCUPDATES", "UCUPDATES")
    token = client.step(message) or b""
    response = read_response(token, challenge)
    assert (response.user, response.domain) == (user, domain)
    assert response.version == ("NTLMv2" if lm_compat == "3" else "NTLMv1")
    assert check_response(response, bytes.fromhex(nt_hash(password)))
    assert not check_response(response, bytes.fromhex(nt_hash(password + "x")))
    if response.v2:  # the client's blob carries the target info we sent, and adds to it
        pairs = dict(av_pairs_of(response.nt_response[16 + 28 :]))
        assert pairs[AvId.NB_DOMAIN_NAME] == "UCUPDATES".encode("utf-16-le")
        assert pairs[AvId.DNS_COMPUTER_NAME] == "ucupdates".encode("utf-16-le")
        assert AvId.TIMESTAMP in pairs and AvId.FLAGS in pairs


# -- damaged input: NtlmError and nothing else ---------------------------------------------


def mutations(seeds: list[bytes], rounds: int, rng: random.Random) -> Iterator[bytes]:
    for _ in range(rounds):
        token = bytearray(rng.choice(seeds))
        kind = rng.randrange(5)
        if kind == 0:  # random bytes anywhere
            for _ in range(rng.randrange(1, 6)):
                token[rng.randrange(len(token))] = rng.randrange(256)
        elif kind == 1:  # a field descriptor pointed somewhere else
            at = rng.choice((12, 20, 28, 36, 44, 52))
            token[at : at + 8] = struct.pack("<HHI", *(rng.getrandbits(b) for b in (16, 16, 32)))
        elif kind == 2:  # cut short
            del token[rng.randrange(len(token)) :]
        elif kind == 3 and len(token) > 60:  # Type 3 flags flipped (Unicode <-> OEM)
            token[60] ^= rng.choice((1, 2, 3))
        else:  # pure noise behind the signature
            token = bytearray(b"NTLMSSP\x00" + rng.randbytes(rng.randrange(0, 200)))
        yield bytes(token)


def answer(negotiate: bytes) -> bytes:
    return challenge_message(negotiate, bytes(8), "D", "C")


def test_damaged_messages_raise_only_ntlm_error() -> None:
    rng = random.Random(1320)
    seeds = [bytes.fromhex(m) for m in (SPEC_V1, SPEC_V1_ESS, SPEC_V2)]
    client = spnego.client("CONTOSO\\dave", "pw", protocol="ntlm")
    negotiate = client.step() or b""
    seeds += [negotiate, client.step(challenge_message(negotiate, bytes(8), "D", "C")) or b""]
    read = refused = 0
    for token in mutations(seeds, 20_000, rng):
        for parse in (read_negotiate, read_authenticate, answer):
            try:
                parse(token)
            except NtlmError:
                refused += 1
        try:
            response = read_response(token, SERVER_CHALLENGE)
        except NtlmError:
            continue
        check_response(response, NT_HASH)  # any response is checked without raising
        read += 1
    assert read > 1000 and refused > 1000  # the loop reached both outcomes


def test_the_challenge_keeps_the_bytes_of_the_pyspnego_based_version() -> None:
    # What appliance.phones.ntlm sent when it packed its messages with pyspnego 0.12's
    # private classes, for this Type 1 (pyspnego's flags), challenge, names and time.
    negotiate = b"NTLMSSP\x00\x01\x00\x00\x00" + struct.pack("<I", 0xE2088297) + bytes(16)
    message = challenge_message(
        negotiate, SERVER_CHALLENGE, "UCUPDATES", "UCUPDATES", now=1796549400.0
    )
    assert message.hex() == (
        "4e544c4d53535000020000001200120030000000158289e00123456789abcdef"
        "0000000000000000680068004200000055004300550050004400410054004500"
        "5300020012005500430055005000440041005400450053000100120055004300"
        "5500500044004100540045005300040012007500630075007000640061007400"
        "650073000300120075006300750070006400610074006500730007000800001c"
        "545d6485dd0100000000"
    )
