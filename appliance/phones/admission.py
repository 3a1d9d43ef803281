"""Admission: what is decided when a phone request's headers are in, before any body.

The zone (internal or external, after trusted proxies), the body limit, refusals of the
plain-HTTP listener to external clients, and the credentials (Basic, or NTLM bound to
the connection) of external requests. The listener's `appliance.web.Channel` calls the
admitter with the request as parsed so far (method, target, headers).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from appliance.config import Config
from appliance.model import Zone
from appliance.phones.answers import RouteKind, route
from appliance.phones.auth import Authenticator, AuthResult
from appliance.phones.ntlm import NtlmSession
from appliance.web import LeanRequest, Rejection
from appliance.zones import client_address, is_external_path, zone_of

log = Logger(namespace="ucupdates.phone")

PLACES = 4096  # (peer, X-Forwarded-For, path kind) -> (client, zone) remembered


@dataclass(frozen=True)
class Admission:
    """What was decided when the headers came in."""

    kind: RouteKind | None
    zone: Zone
    client: str
    auth: defer.Deferred[AuthResult] | None  # None: no credentials needed


def fired(d: defer.Deferred[AuthResult]) -> AuthResult | None:
    box: list[AuthResult] = []

    def keep(result: AuthResult) -> AuthResult:
        box.append(result)
        return result

    d.addCallback(keep)
    return box[0] if box else None


def auth_headers(result: AuthResult, realm: str, ntlm: bool = False) -> list[tuple[bytes, bytes]]:
    """The headers of a refusal: the NTLM challenge, or every scheme offered (NTLM first,
    as IIS listed them, then Basic), or Retry-After."""
    if result.status == 429 and result.retry_after is not None:
        return [(b"Retry-After", str(result.retry_after).encode())]
    if result.challenge is not None:
        return [(b"WWW-Authenticate", b"NTLM " + base64.b64encode(result.challenge))]
    basic = (b"WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"'.encode())
    return [(b"WWW-Authenticate", b"NTLM"), basic] if ntlm else [basic]


Admit = Callable[[LeanRequest, int | None], Rejection | None]


def make_admitter(
    config: Config, authenticator: Authenticator, external_listener: bool, plain_http: bool
) -> Admit:
    """The admission of one listener; on the plain-HTTP one (`plain_http`), nothing
    external is served: 403, and the event `http.external_refused`."""
    places: dict[tuple[str, tuple[bytes, ...], bool], tuple[str, Zone]] = {}

    def place(peer: str, forwarded: list[bytes], path: bytes) -> tuple[str, Zone]:
        """Client and zone, remembered (the same few peers ask again and again)."""
        key = (peer, tuple(forwarded), is_external_path(path))
        found = places.get(key)
        if found is None:
            client = client_address(peer, forwarded, config.zones)
            found = (client, zone_of(client, external_listener, path, config.zones))
            if len(places) >= PLACES:
                places.clear()
            places[key] = found
        return found

    def admit(request: LeanRequest, length: int | None) -> Rejection | None:
        path = request.target
        kind = route(path)
        peer = request.channel.peer
        forwarded = request.values(b"x-forwarded-for")
        client, zone = place(getattr(peer, "host", "?"), forwarded, path)
        if plain_http and zone is Zone.EXTERNAL:
            log.info(
                "plain HTTP refused to external {client} ({path})",
                client=client,
                path=repr(path[:200])[2:-1],
                event="http.external_refused",
            )
            return Rejection(403, "external requests need HTTPS")
        limit = (
            config.device_logs.max_file_bytes
            if kind is RouteKind.UPLOAD
            else config.service.max_check_bytes
        )
        if length is not None and length > limit:
            log.info(
                "request from {client} refused: body of {length} bytes",
                client=client,
                length=length,
            )
            return Rejection(413, f"request body over {limit} bytes")
        request.max_body = limit
        auth = None
        if zone is Zone.EXTERNAL and kind is not None:
            auth = authenticator.authenticate(
                request.first(b"authorization"),
                client,
                ntlm_session(authenticator, request),
            )
            result = fired(auth)
            check_limit = config.service.max_check_bytes
            # NTLM's challenge must reach the client on this connection: answered
            # after the body (at most a check's), not by closing (docs §2).
            challenge = result is not None and result.challenge is not None
            if challenge and (length is None or length <= check_limit):
                request.max_body = min(limit, check_limit)
                result = None
            if result is not None and not result.ok:
                return Rejection(
                    result.status,
                    result.reason,
                    auth_headers(result, config.auth.realm, authenticator.ntlm_enabled),
                )
        request.admission = Admission(kind, zone, client, auth)
        return None

    return admit


def ntlm_session(authenticator: Authenticator, request: LeanRequest) -> NtlmSession | None:
    """The NTLM state of the request's connection (made on its first request)."""
    if not authenticator.ntlm_enabled:
        return None
    channel: Any = request.channel
    session = getattr(channel, "auth_state", None)
    if not isinstance(session, NtlmSession):
        session = channel.auth_state = NtlmSession()
    return session
