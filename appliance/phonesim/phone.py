"""One phone's round, as a Lync Phone Edition phone runs it (docs/protocol.md §3-§5, §10):
discovery (DHCPINFORM, then DNS) unless the server is given, the update check, the
downloads of every offered module from BaseURL (inside) or ExternalBaseURL (outside),
each checked against its size and SHA-256, then the "restart" onto the new version.

Each step is timed; a round ends as `updated` (it installed a version), `current` (the
answer was `Downloads` 0) or `failed` with a cause the fleet summary counts by, or, for a
phone with a quirk, `stuck` (it fetched the offer and did not install it) or `reverted`
(it checked on the version it installed, then went back to the one before). The idle
wait between rounds is the caller's (the fleet's scheduler).
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from appliance.phonesim.dhcp import CLIENT_PORT, DhcpFailure, inform
from appliance.phonesim.dns import DnsFailure, discover, query_a
from appliance.phonesim.http import (
    CHECK_PATH,
    EXTERNAL_CHECK_PATH,
    Connections,
    Credentials,
    Failure,
    Net,
    classify,
    download,
    post_check,
)
from appliance.phonesim.identity import (
    Answer,
    BadAnswer,
    PhoneIdentity,
    PhoneState,
    Quirk,
    check_body,
    parse_answer,
)

STEPS = ("dhcp", "dns", "check", "download")


@dataclass(frozen=True)
class Settings:
    """What every phone of a run shares (the command's options)."""

    net: Net
    server: str | None = None  # scheme://host[:port] of the check: skips discovery
    scheme: str = "https"  # of a discovered server
    port: int | None = None  # of a discovered server; None: the scheme's
    dhcp: tuple[str, int] | None = None
    dhcp_client_port: int = CLIENT_PORT
    dns: tuple[str, int] | None = None
    domain: str | None = None
    credentials: Credentials | None = None
    retries: int = 3
    keep_alive: bool = False  # one connection per host for a round's requests
    external_server: str | None = None  # outside phones' scheme://host[:port]; else server
    external_port: int | None = None  # of a discovered server, for outside phones


@dataclass
class Round:
    """What one round did."""

    outcome: str = "failed"  # updated, current, failed; stuck, reverted (a quirk's)
    cause: str | None = None
    detail: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # step -> seconds
    bytes: int = 0
    files: int = 0
    resumed: int = 0
    offered: str | None = None  # the version the answer offered
    server: str | None = None  # the check URL used
    auth: str | None = None  # the scheme that answered the check's 401: ntlm or basic
    reported: str | None = None  # the version the check reported


def _timed(record: Round, step: str, clock: Callable[[], float]) -> _Timer:
    return _Timer(record, step, clock)


class _Timer:
    def __init__(self, record: Round, step: str, clock: Callable[[], float]) -> None:
        self.record, self.step, self.clock = record, step, clock

    def __enter__(self) -> None:
        self.start = self.clock()

    def __exit__(self, *exc: object) -> None:
        spent = self.clock() - self.start
        self.record.seconds[self.step] = self.record.seconds.get(self.step, 0.0) + spent


def _check_url(phone: PhoneIdentity, settings: Settings, record: Round) -> tuple[str, Net]:
    """The check URL and the Net to use for it: given, or found by DHCP and DNS."""
    net = settings.net
    if phone.source is not None:  # every connection from the phone's own address
        net = replace(net, source=phone.source)
    path = EXTERNAL_CHECK_PATH if phone.external else CHECK_PATH
    server = (settings.external_server or settings.server) if phone.external else settings.server
    if server:
        return server.rstrip("/") + path, net
    domain = settings.domain
    clock = time.monotonic
    if settings.dhcp is not None:
        with _timed(record, "dhcp", clock):
            try:
                info = inform(
                    settings.dhcp,
                    phone.mac,
                    phone.source,
                    settings.dhcp_client_port,
                    net.timeout,
                )
            except (DhcpFailure, OSError) as e:
                raise Failure("dhcp", str(e)) from e
        domain = domain or info.domain
    if domain is None or settings.dns is None:
        raise Failure("discovery", "no domain (from DHCP or --domain) or no --dns server")
    with _timed(record, "dns", clock):
        try:
            name, address = discover(domain, settings.dns, net.timeout, phone.source)
        except (DnsFailure, OSError) as e:
            raise Failure("dns", str(e)) from e
    port = (settings.external_port if phone.external else None) or settings.port
    port = port or (443 if settings.scheme == "https" else 80)
    default = (settings.scheme == "https" and port == 443) or port == 80
    url = f"{settings.scheme}://{name}" + ("" if default else f":{port}") + path
    dns_server, timeout = settings.dns, net.timeout
    found = {name.lower(): address}

    def resolve(host: str) -> str:  # BaseURL's host, through the same DNS server
        key = host.lower()
        if key not in found:
            try:
                found[key] = query_a(host, dns_server, timeout, phone.source)
            except (DnsFailure, OSError) as e:
                raise Failure("dns", str(e)) from e
        return found[key]

    if net.connect is None and net.resolve is None:
        net = replace(net, resolve=resolve)
    return url, net


def _download_all(
    phone: PhoneIdentity,
    answer: Answer,
    connections: Connections,
    settings: Settings,
    record: Round,
) -> None:
    base = answer.external_base_url if phone.external else answer.base_url
    if not base:
        raise Failure("bad-answer", "no " + ("ExternalBaseURL" if phone.external else "BaseURL"))
    # Each download is a new connection; outside, each answers its own 401.
    credentials = settings.credentials if phone.external else None
    for module in answer.modules:
        names = [(module.file_name, module.size, module.sha256)]
        if module.signature_file_name:
            names.append((module.signature_file_name, None, None))
        for name, size, sha256 in names:
            fetched = download(
                f"{base.rstrip('/')}/{name}", connections, credentials, settings.retries, time.sleep
            )
            record.bytes += fetched.wire_bytes
            record.files += 1
            record.resumed += fetched.resumed
            if size is not None and fetched.size != size:
                raise Failure("size", f"{name}: {fetched.size} bytes, the answer says {size}")
            expected = sha256 or fetched.sent_sha256
            if expected and fetched.sha256 != expected.lower():
                raise Failure("sha256", f"{name}: SHA-256 {fetched.sha256}, expected {expected}")


def run_round(phone: PhoneIdentity, state: PhoneState, settings: Settings) -> Round:
    """Discover, check, download and verify, restart: one round; `state` changes only
    when the phone installed a new version."""
    record = Round()
    clock = time.monotonic
    connections: Connections | None = None
    try:
        url, net = _check_url(phone, settings, record)
        record.server = url
        connections = Connections(net, settings.keep_alive)
        with _timed(record, "check", clock):
            conn, path = connections.get(url)
            broken = True
            try:
                record.reported = state.version
                body = check_body(phone, state.version)
                credentials = settings.credentials if phone.external else None
                text, record.auth = post_check(conn, path, body, credentials)
                answer = parse_answer(text)
                broken = False
            finally:
                connections.release(conn, broken)
        record.offered = answer.version
        if answer.downloads == 0 or answer.version is None or answer.version == state.version:
            record.outcome = "current"
            if phone.quirk is Quirk.REVERT and state.previous is not None:
                # It has been seen on what it installed; now it goes back to the old one.
                state.version, state.previous = state.previous, None
                record.outcome = "reverted"
            return record
        with _timed(record, "download", clock):
            _download_all(phone, answer, connections, settings, record)
        if phone.quirk is Quirk.STUCK:  # fetched, never installed: it still runs the old one
            record.outcome = "stuck"
            return record
        # The restart: the phone now runs what it fetched.
        state.previous, state.version = state.version, answer.version
        state.last_update = datetime.now(UTC).date()
        record.outcome = "updated"
    except BadAnswer as e:
        record.cause, record.detail = "bad-answer", str(e)
    except (Failure, OSError, http.client.HTTPException) as e:
        failure = classify(e)
        record.cause, record.detail = failure.cause, str(failure)
    finally:
        if connections is not None:
            connections.close()
    return record


def system_information(phone: PhoneIdentity, state: PhoneState) -> str:
    """The phone's System Information screen (§10)."""
    rows = (
        ("Model", f"{phone.vendor} {phone.model} (revision {phone.revision}, {phone.locale})"),
        ("MAC address", phone.mac),
        ("Serial number", phone.serial),
        ("Current version", state.version),
        ("Last update", state.last_update.isoformat() if state.last_update else "never"),
    )
    return "System Information\n" + "".join(f"  {k + ':':<17}{v}\n" for k, v in rows)
