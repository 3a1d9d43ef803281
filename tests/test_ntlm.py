"""NTLM beside Basic, in process: real NTLM bytes from pyspnego's initiator, checked by the
appliance's own code, and the handshake through a real GuardedSite over a memory transport
(one connection = one channel, so keep-alive and connection binding are what a socket has).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import spnego
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, globalLogPublisher

from appliance.catalogue import (
    add_user,
    sample_check,
    set_password,
)
from appliance.config import AuthSettings, NtlmBackend, load_config
from appliance.passwords import nt_hash
from appliance.phones import Authenticator, LocalDirectory, PhoneService
from appliance.phones.auth import AuthResult
from appliance.phones.directories import ntlm_verifier
from appliance.phones.ntlm import (
    NtlmSession,
    check_response,
    ntlm_token,
    read_authenticate,
)
from appliance.phones.winbind import WinbindVerifier, helper_answer, helper_request
from appliance.store import Store
from appliance.testing import (
    FixedClock,
    SecondsClock,
    approved_sample,
    basic_credentials,
    fired,
    inline,
    phone_site,
)
from appliance.web import GuardedSite

USER, PASSWORD = "alice", "Passw0rd with spaces"
SETTINGS = AuthSettings(max_failures=3)
NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
CHECK = b"/RequestHandlerExt/ucdevice.upx"


def ntlm(token: bytes) -> bytes:
    return b"NTLM " + base64.b64encode(token)


def handshake(
    auth: Authenticator,
    password: str = PASSWORD,
    user: str = USER,
    session: NtlmSession | None = None,
    source: str = "192.0.2.1",
) -> AuthResult:
    """Type 1 -> challenge -> Type 3 through the authenticator, on one session."""
    session = session if session is not None else NtlmSession()
    client = spnego.client(user, password, protocol="ntlm")
    challenged = fired(auth.authenticate(ntlm(client.step() or b""), source, session))
    assert challenged.status == 401 and challenged.challenge is not None
    return fired(auth.authenticate(ntlm(client.step(challenged.challenge) or b""), source, session))


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store.open(":memory:")
    add_user(store, USER, PASSWORD, "test")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def auth(store: Store) -> Authenticator:
    local = LocalDirectory(lambda: store)
    return Authenticator(
        local, SETTINGS, SecondsClock(), key=b"k" * 32, run_blocking=inline, ntlm=local
    )


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    seen: list[LogEvent] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(seen.append)


def named(events: list[LogEvent], name: str) -> list[LogEvent]:
    return [e for e in events if e.get("event") == name]


# -- the messages and the check ------------------------------------------------------------


def test_the_nt_hash_is_md4_of_the_utf16_password() -> None:
    # The well-known NT hash of "Password" (MS-NLMP test vectors use it).
    assert nt_hash("Password") == "a4f49c406510bdcab6824ee7c30fd852"


def test_an_ntlmv2_response_is_checked_against_the_nt_hash(auth: Authenticator) -> None:
    client = spnego.client(USER, PASSWORD, protocol="ntlm")
    session = NtlmSession()
    challenged = fired(auth.authenticate(ntlm(client.step() or b""), "192.0.2.1", session))
    assert challenged.challenge is not None
    challenge = session.challenge
    assert challenge is not None
    response = read_authenticate(client.step(challenged.challenge) or b"", challenge)
    assert response.v2 and response.user == USER
    assert check_response(response, bytes.fromhex(nt_hash(PASSWORD)))
    assert not check_response(response, bytes.fromhex(nt_hash(PASSWORD + "x")))


def test_ntlmv1_responses_are_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LM_COMPAT_LEVEL", "1")
    from appliance.phones.ntlm import challenge_message

    client = spnego.client(USER, PASSWORD, protocol="ntlm")
    challenge = b"\x01\x23\x45\x67\x89\xab\xcd\xef"
    message = challenge_message(client.step() or b"", challenge, "UCUPDATES", "UCUPDATES")
    response = read_authenticate(client.step(message) or b"", challenge)
    assert not response.v2 and response.version == "NTLMv1"
    assert check_response(response, bytes.fromhex(nt_hash(PASSWORD)))
    assert not check_response(response, bytes.fromhex(nt_hash("other")))


def test_damaged_tokens_are_not_ntlm() -> None:
    assert ntlm_token(b"NTLM !!!") is None
    assert ntlm_token(b"NTLM " + base64.b64encode(b"NOTNTLM\x00\x01\x00\x00\x00")) is None
    assert ntlm_token(b"Basic " + base64.b64encode(b"a:b")) is None
    assert ntlm_token(b"ntlm " + base64.b64encode(b"NTLMSSP\x00\x01\x00\x00\x00")) is not None


# -- the authenticator ---------------------------------------------------------------------


def test_the_handshake_authorises_its_session(auth: Authenticator, events: list[LogEvent]) -> None:
    session = NtlmSession()
    result = handshake(auth, session=session)
    assert result.ok and result.user == USER
    # Later requests on that connection need no header; Basic is unaffected.
    again = fired(auth.authenticate(None, "192.0.2.1", session))
    assert again.ok and again.reason == "connection authorised"
    assert not fired(auth.authenticate(None, "192.0.2.1", NtlmSession())).ok
    assert not named(events, "auth.failure")


def test_a_wrong_password_counts_toward_the_lockout(
    auth: Authenticator, events: list[LogEvent]
) -> None:
    statuses = [handshake(auth, "wrong", source=f"192.0.2.{i}").status for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert len(named(events, "auth.failure")) == 4
    assert named(events, "auth.lockout")
    # Locked out: a password is checked once per auth.lockout_check_seconds (60 s by
    # default), and the last failure took this turn; NTLM and Basic count together.
    assert handshake(auth, source="192.0.2.50").status == 429
    basic = fired(auth.authenticate(basic_credentials(USER, PASSWORD), "192.0.2.51"))
    assert basic.status == 429


def test_the_right_ntlm_answer_gets_in_during_a_lockout_and_a_guesser_does_not(
    store: Store, events: list[LogEvent]
) -> None:
    """Defect 5 (d): NTLM answers differ every time (nothing to remember), so what lets the
    right one in is the check slot the guesser's address cannot take."""
    clock = SecondsClock()
    local = LocalDirectory(lambda: store)
    settings = AuthSettings(max_failures=3, lockout_check_seconds=10)
    auth = Authenticator(local, settings, clock, run_blocking=inline, ntlm=local)
    guesser = "203.0.113.9"  # a NAT, say
    statuses = [handshake(auth, "wrong", source=guesser).status for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    # From another address: at once. Another user behind the guesser's NAT: at once.
    assert handshake(auth, source="198.51.100.7").ok
    add_user(store, "bob", PASSWORD, "test")
    assert handshake(auth, user="bob", source=guesser).ok
    # From the guesser's address: at its next check, 10 s on.
    assert handshake(auth, source=guesser).status == 429
    clock.now += 10
    assert handshake(auth, source=guesser).ok
    # The guesser: 300 handshakes over 150 s, all refused, at most one checked per 10 s.
    checked = len(named(events, "auth.failure"))
    for _ in range(300):
        assert handshake(auth, "wrong", source=guesser).status == 429
        clock.now += 0.5
    assert len(named(events, "auth.failure")) - checked <= 150 / 10 + 1


def test_a_type_3_without_a_challenge_on_its_session_is_refused(auth: Authenticator) -> None:
    client = spnego.client(USER, PASSWORD, protocol="ntlm")
    first = NtlmSession()
    challenged = fired(auth.authenticate(ntlm(client.step() or b""), "192.0.2.1", first))
    assert challenged.challenge is not None
    type3 = ntlm(client.step(challenged.challenge) or b"")
    refused = fired(auth.authenticate(type3, "192.0.2.1", NtlmSession()))
    assert (refused.status, refused.reason) == (
        401,
        "ntlm response without a challenge on this connection",
    )
    # ...and the challenge is used once: the same answer again on its own session fails.
    assert fired(auth.authenticate(type3, "192.0.2.1", first)).ok
    assert not fired(auth.authenticate(type3, "192.0.2.1", first)).ok


def test_ntlmv1_is_refused_unless_allowed(
    store: Store, monkeypatch: pytest.MonkeyPatch, events: list[LogEvent]
) -> None:
    monkeypatch.setenv("LM_COMPAT_LEVEL", "1")
    local = LocalDirectory(lambda: store)
    strict = Authenticator(local, SETTINGS, SecondsClock(), run_blocking=inline, ntlm=local)
    refused = handshake(strict)
    assert (refused.status, refused.reason) == (401, "ntlmv1 not allowed")
    assert named(events, "auth.failure")
    allowing = AuthSettings(max_failures=3, ntlm_allow_v1=True)
    lenient = Authenticator(local, allowing, SecondsClock(), run_blocking=inline, ntlm=local)
    assert handshake(lenient).ok


def test_users_without_an_nt_hash_or_disabled_cannot_use_ntlm(
    store: Store, auth: Authenticator
) -> None:
    add_user(store, "nohash", PASSWORD, "test", ntlm=False)
    assert store.user("nohash") is not None and not store.user("nohash").ntlm  # type: ignore[union-attr]
    assert handshake(auth, user="nohash").status == 401
    set_password(store, "nohash", PASSWORD, "test")  # the next password change adds it
    assert handshake(auth, user="nohash", source="192.0.2.9").ok
    store.set_user_disabled(USER, True)
    assert handshake(auth, source="192.0.2.10").status == 401


def test_domain_names_are_ignored_or_tried_as_domain_backslash_user(store: Store) -> None:
    add_user(store, "CONTOSO\\carol", PASSWORD, "test")
    local = LocalDirectory(lambda: store)
    auth = Authenticator(local, SETTINGS, SecondsClock(), run_blocking=inline, ntlm=local)
    assert handshake(auth, user="ANYDOMAIN\\alice").ok
    assert handshake(auth, user="CONTOSO\\carol").ok


def test_forget_ends_connections_authorised_by_ntlm(auth: Authenticator) -> None:
    session = NtlmSession()
    assert handshake(auth, session=session).ok
    auth.forget(USER.upper())
    assert not fired(auth.authenticate(None, "192.0.2.1", session)).ok


def test_with_ntlm_off_an_ntlm_header_is_no_credentials(store: Store) -> None:
    local = LocalDirectory(lambda: store)
    auth = Authenticator(local, SETTINGS, SecondsClock(), run_blocking=inline)
    client = spnego.client(USER, PASSWORD, protocol="ntlm")
    result = fired(auth.authenticate(ntlm(client.step() or b""), "192.0.2.1", NtlmSession()))
    assert (result.status, result.challenge) == (401, None)
    assert ntlm_verifier(AuthSettings(ntlm=False), Path("x.sqlite3")) is None


def test_the_winbind_backend_speaks_ntlm_server_1(store: Store) -> None:
    settings = AuthSettings(ntlm_backend=NtlmBackend.WINBIND, ntlm_helper=("/bin/true",))
    verifier = ntlm_verifier(settings, Path("unused"))
    assert isinstance(verifier, WinbindVerifier)
    client = spnego.client("CONTOSO\\dave", PASSWORD, protocol="ntlm")
    from appliance.phones.ntlm import challenge_message

    message = challenge_message(client.step() or b"", b"\x11" * 8, "CONTOSO", "UCUPDATES")
    response = read_authenticate(client.step(message) or b"", b"\x11" * 8)
    lines = helper_request(response).decode().splitlines()
    assert lines[0] == "Username:: " + base64.b64encode(b"dave").decode()
    assert lines[1] == "NT-Domain:: " + base64.b64encode(b"CONTOSO").decode()
    assert lines[2] == "LANMAN-Challenge: " + "11" * 8
    assert lines[3].startswith("NT-Response: ") and lines[-1] == "."
    assert helper_answer(b"Authenticated: Yes\n.\n") == (True, "")
    assert helper_answer(
        b"Authenticated: No\nAuthentication-Error: NT_STATUS_WRONG_PASSWORD\n.\n"
    ) == (
        False,
        "NT_STATUS_WRONG_PASSWORD",
    )
    assert not verifier.verify_ntlm(response)  # /bin/true says nothing: not authenticated


# -- through the site: one memory connection per channel -----------------------------------


@dataclass
class Connection:
    """One client connection to a GuardedSite, bytes in and out."""

    channel: object
    transport: StringTransport

    def send(self, request: bytes) -> bytes:
        self.transport.clear()
        self.channel.dataReceived(request)  # type: ignore[attr-defined]
        return self.transport.value()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[GuardedSite]:
    config = load_config(None, tmp_path / "data")
    store = approved_sample(config, FixedClock(NOW), version="4.0.7577.4400")
    add_user(store, USER, PASSWORD, "test")
    local = LocalDirectory(lambda: store)
    authenticator = Authenticator(
        local, config.auth, SecondsClock(), run_blocking=inline, ntlm=local
    )
    service = PhoneService(config, store, authenticator, lambda: NOW)
    yield phone_site(service, MemoryReactorClock(), external=True)
    service.close()
    store.close()


def connect(site: GuardedSite) -> Connection:
    channel = site.buildProtocol(IPv4Address("TCP", "203.0.113.7", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "203.0.113.7", 40000))
    channel.makeConnection(transport)
    return Connection(channel, transport)


def post(authorization: bytes | None, body: bytes) -> bytes:
    head = b"POST " + CHECK + b" HTTP/1.1\r\nHost: ucupdates.test\r\nContent-Type: text/xml\r\n"
    if authorization:
        head += b"Authorization: " + authorization + b"\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def offers(response: bytes) -> list[bytes]:
    return re.findall(rb"(?im)^WWW-Authenticate: (.*?)\r$", response)


def test_the_401_offers_ntlm_and_basic_on_two_lines(site: GuardedSite) -> None:
    response = connect(site).send(post(None, sample_check()))
    assert status(response) == 401
    assert offers(response) == [b"NTLM", b'Basic realm="ucupdates", charset="UTF-8"']


def test_the_handshake_runs_on_one_connection_with_the_body_on_each_leg(
    site: GuardedSite,
) -> None:
    conn = connect(site)
    client = spnego.client(USER, PASSWORD, protocol="ntlm")
    first = conn.send(post(ntlm(client.step() or b""), sample_check()))
    assert status(first) == 401 and b"Connection: close" not in first
    (challenge,) = offers(first)
    assert challenge.startswith(b"NTLM ")
    second = conn.send(
        post(ntlm(client.step(base64.b64decode(challenge[5:])) or b""), sample_check())
    )
    assert status(second) == 200 and b"<Response" in second
    third = conn.send(post(None, sample_check()))  # the connection stays authorised
    assert status(third) == 200
    assert connect(site).send(post(None, sample_check())).startswith(b"HTTP/1.1 401")


def test_a_big_body_on_the_first_leg_is_not_read(site: GuardedSite) -> None:
    conn = connect(site)
    client = spnego.client(USER, PASSWORD, protocol="ntlm")
    head = post(ntlm(client.step() or b""), b"")
    head = head.replace(b"Content-Length: 0", b"Content-Length: 10000000")
    response = conn.send(head)
    assert status(response) == 413  # over the check's limit: refused from the headers
    assert conn.transport.disconnecting


def test_an_anonymous_type_3_is_a_failure(auth: Authenticator, events: list[LogEvent]) -> None:
    from appliance.phones.ntlm import NtlmResponse

    assert NtlmResponse("", "", "", b"x" * 8, b"", b"\x00", 0).anonymous
    client = spnego.client(USER, PASSWORD, protocol="ntlm")
    session = NtlmSession()
    challenged = fired(auth.authenticate(ntlm(client.step() or b""), "192.0.2.77", session))
    assert challenged.challenge is not None
    # An anonymous AUTHENTICATE_MESSAGE: empty user, LM response Z(1), no NT response.
    header = b"NTLMSSP\x00\x03\x00\x00\x00"
    offset = 64
    fields = b"\x01\x00\x01\x00" + offset.to_bytes(4, "little")  # LM: 1 byte at 64
    fields += b"\x00\x00\x00\x00" + (offset + 1).to_bytes(4, "little")  # NT: empty
    for _ in range(4):  # domain, user, workstation, session key: empty
        fields += b"\x00\x00\x00\x00" + (offset + 1).to_bytes(4, "little")
    token = header + fields + (0x00000201).to_bytes(4, "little") + b"\x00"
    assert len(token) == offset + 1
    refused = fired(auth.authenticate(ntlm(token), "192.0.2.77", session))
    assert (refused.status, refused.reason) == (401, "bad credentials")
    assert named(events, "auth.failure")
