"""The JSON API under `/api/`: everything the Control Panel's pages do, for scripts too.

Documented in `openapi.json` (served at `/api/openapi.json`). Reading needs a session;
changing needs a session of an admin and the session's CSRF token in `X-CSRF-Token`. An
API token (`Authorization: Bearer`, `tokens`) stands in for a session: it acts with its
role and needs no CSRF token, as no browser adds that header to a request by itself. The
admin actions are the catalogue's own (`apply_action`, `add_test_device`, `clean_files`,
`import_package`...), so the event log records them exactly as it records the commands.

This module routes and authorises; the handlers live by area in the `api_*` modules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server

from appliance.admin.api_captures import CapturesApi
from appliance.admin.api_devices import DevicesApi
from appliance.admin.api_drift import DriftApi
from appliance.admin.api_packages import PackagesApi
from appliance.admin.api_rollouts import RolloutsApi
from appliance.admin.api_rules import RulesApi
from appliance.admin.api_sessions import SessionsApi
from appliance.admin.api_test_devices import TestDevicesApi
from appliance.admin.call import Call, Handler
from appliance.admin.directory_logins import AdminDirectory, is_directory_account
from appliance.admin.pool import PoolApi
from appliance.admin.sessions import CSRF_HEADER, Login, cookie_token, csrf_matches, find_session
from appliance.admin.tokens import bearer_secret, find_token
from appliance.admin.web import ApiError, Reply
from appliance.config import AdminSettings, Config
from appliance.model import ApiToken, Role
from appliance.store import Store

log = Logger(namespace="ucupdates.admin")

_UNSAFE = (b"POST", b"PUT", b"PATCH", b"DELETE")


class Access(Enum):
    """Who may call a route."""

    PUBLIC = "public"  # anyone
    READ = "read"  # any session (an unsafe method also needs the CSRF token)
    SESSION = "session"  # any session, with its CSRF token
    CHANGE = "change"  # an admin's session, with its CSRF token


@dataclass(frozen=True)
class Route:
    method: bytes
    pattern: re.Pattern[str]
    handler: Handler
    access: Access


class Api:
    """The `/api/` routes, who may call them, and the handlers they lead to."""

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Callable[[], datetime],
        reactor: Any,
        settings: AdminSettings,
        openapi: bytes,
        directory: AdminDirectory | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.openapi = openapi
        self.directory = directory
        self.sessions = SessionsApi(store, clock, reactor, settings, directory)
        self.rules = RulesApi(store)
        self.packages = PackagesApi(config, store, reactor)
        self.test_devices = TestDevicesApi(store)
        self.devices = DevicesApi(config, store, clock)
        self.captures = CapturesApi(config, clock)
        self.drift = DriftApi(config, store, clock)
        self.rollouts = RolloutsApi(store, clock)
        self.pool = PoolApi(config, store, clock)
        s, ru, p, t, d = self.sessions, self.rules, self.packages, self.test_devices, self.devices
        public, read, session, change = Access.PUBLIC, Access.READ, Access.SESSION, Access.CHANGE
        r = _route
        self.routes = [
            r(b"GET", r"/api/openapi\.json", self.openapi_document, public),
            r(b"POST", r"/api/login", s.login, public),
            r(b"POST", r"/api/logout", s.logout, session),
            r(b"GET", r"/api/session", s.session, read),
            r(b"GET", r"/api/rules", ru.rules, read),
            r(b"GET", r"/api/rules/preview", ru.preview, read),
            r(b"POST", r"/api/rules/(?P<action>[a-z]+)", ru.apply, change),
            r(b"POST", r"/api/packages", p.upload, change),
            r(b"GET", r"/api/packages/progress/(?P<job>[0-9a-f]{16,64})", p.progress, read),
            r(b"POST", r"/api/clean-files", p.clean_files, change),
            r(b"GET", r"/api/test-devices", t.listing, read),
            r(b"POST", r"/api/test-devices", t.add, change),
            r(b"DELETE", r"/api/test-devices/(?P<id>[0-9]{1,12})", t.remove, change),
            r(b"GET", r"/api/devices", d.devices, read),
            r(b"GET", r"/api/devices\.csv", d.devices_csv, read),
            r(b"GET", r"/api/events", d.events, read),
            r(b"GET", r"/api/activity", d.activity, read),
            r(b"GET", r"/api/charts", d.charts, read),
            r(b"GET", r"/api/charts/versions\.svg", d.versions_svg, read),
            r(b"GET", r"/api/charts/checkins\.svg", d.checkins_svg, read),
            r(b"GET", r"/api/captures", self.captures.listing, read),
            r(b"GET", r"/api/captures/export", self.captures.export, read),
            r(b"GET", r"/api/captures/(?P<id>[0-9T-]{20,60})", self.captures.detail, read),
            r(b"GET", r"/api/reports/drift", self.drift.report, read),
            r(b"GET", r"/api/reports/drift\.csv", self.drift.report_csv, read),
            r(b"GET", r"/api/pool", self.pool.pool, read),
        ]
        self.routes += [r(m, p, h, change if c else read) for m, p, h, c in self.rollouts.routes()]

    def login_of(self, request: server.Request) -> Login | None:
        """The open session the request's cookie names, if any (and if its kind of account
        may still log in: local accounts, directory logins)."""
        token = cookie_token(request.requestHeaders.getRawHeaders(b"cookie"))
        login = find_session(self.store, token, self.clock(), self.settings)
        if login is None:
            return None
        directory = is_directory_account(login.account.name)
        if (directory and self.directory is None) or (
            not directory and not self.settings.local_accounts
        ):
            return None
        return login

    def token_of(self, request: server.Request) -> ApiToken | None:
        """The live API token of an `Authorization: Bearer` header, if any."""
        secret = bearer_secret(request.getHeader(b"authorization"))
        if secret is None:
            return None
        return find_token(self.store, secret, self.clock())

    def authorise(
        self, request: server.Request, access: Access
    ) -> tuple[Login | ApiToken | None, ApiError | None]:
        """Who is asking, and why they may not (401: no session or a bad token; 403: CSRF
        or role). A Bearer header decides alone: the cookie is then not looked at."""
        if access is Access.PUBLIC:
            return None, None
        secret = bearer_secret(request.getHeader(b"authorization"))
        if secret is not None:
            return self._authorise_token(request, secret, access)
        login = self.login_of(request)
        if login is None:
            return None, ApiError(401, "log in first: no session, or it has expired")
        if access in (Access.SESSION, Access.CHANGE) or request.method in _UNSAFE:
            if not _same_origin(request):
                return login, ApiError(403, "the request comes from another origin")
            if not csrf_matches(login.session, request.getHeader(CSRF_HEADER)):
                return login, ApiError(403, "missing or wrong CSRF token (X-CSRF-Token header)")
        if access is Access.CHANGE and login.account.role is not Role.ADMIN:
            return login, ApiError(403, "a viewer cannot change anything; ask an admin")
        return login, None

    def _authorise_token(
        self, request: server.Request, secret: str, access: Access
    ) -> tuple[ApiToken | None, ApiError | None]:
        token = find_token(self.store, secret, self.clock())
        if token is None:
            log.warn(
                "API token refused from {address}: unknown, revoked or expired",
                address=str(getattr(request.getClientAddress(), "host", "?")),
                event="admin.token.refused",
            )
            error = ApiError(401, "the API token is unknown, revoked or expired")
            error.headers.append((b"www-authenticate", b'Bearer error="invalid_token"'))
            return None, error
        if access is Access.SESSION:
            return token, ApiError(403, "an API token has no session: this needs a login")
        if access is Access.CHANGE and token.role is not Role.ADMIN:
            return token, ApiError(403, "a viewer cannot change anything; ask an admin")
        return token, None

    def find(self, method: bytes, path: str) -> tuple[Route, dict[str, str]]:
        allowed = []
        for route in self.routes:
            m = route.pattern.match(path)
            if m is None:
                continue
            if route.method == method or (method == b"HEAD" and route.method == b"GET"):
                return route, m.groupdict()
            allowed.append(route.method)
        if allowed:
            error = ApiError(405, f"{method.decode('ascii', 'replace')} is not allowed here")
            error.headers.append((b"allow", b", ".join(sorted(set(allowed)))))
            raise error
        raise ApiError(404, f"no API endpoint {path}")

    def handle(self, request: server.Request) -> Reply | defer.Deferred[Reply]:
        path = unquote(request.path.decode("utf-8", "replace"))
        route, params = self.find(request.method, path)
        caller: Login | ApiToken | None = getattr(request, "admission", None)
        if not isinstance(caller, Login | ApiToken):  # an upload was authorised already,
            caller, problem = self.authorise(request, route.access)  # when its headers came
            if problem is not None:
                raise problem
        login = caller if isinstance(caller, Login) else None
        token = caller if isinstance(caller, ApiToken) else None
        call = Call(request, login, params, self.settings.max_json_bytes, request.args or {}, token)
        return route.handler(call)

    def openapi_document(self, call: Call) -> Reply:
        return Reply(body=self.openapi, content_type=b"application/json", cache=b"no-cache")


def _route(method: bytes, pattern: str, handler: Handler, access: Access) -> Route:
    return Route(method, re.compile(pattern + r"\Z"), handler, access)


def _same_origin(request: server.Request) -> bool:
    """An Origin header, when the browser sends one, must name this very host and port."""
    origin = request.getHeader(b"origin")
    if origin is None:
        return True
    host = request.getHeader(b"host")
    try:
        parts = urlsplit(origin.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return (
        parts.scheme == "https"
        and host is not None
        and parts.netloc == host.decode("ascii", "replace")
    )
