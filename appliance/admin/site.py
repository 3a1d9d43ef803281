"""The admin listener's site: guarded requests, package uploads streamed to disk, routing.

`make_admin_site(config, store, clock, reactor)` is what the composition root wraps in
TLS (profile `modern`). Requests go through `appliance.web`'s guard like the phones'
(header size, slowloris deadline, connection cap), and are admitted when their headers
are in: a JSON request may carry `AdminSettings.max_json_bytes`; a package upload
(`POST /api/packages`) must come from an admin's session with the CSRF token *before* a
byte of its body is read, may carry `max_upload_bytes`, and is written straight into
`<data_dir>/uploads/` as it arrives (never a temporary copy, never whole in memory). The
import then runs in a thread with its own store connection.

Uploads are not staged in `<data_dir>/staging/`: the importer sweeps that folder clean
under the data lock before each import (crash recovery), which would delete the upload.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from appliance.admin import pages
from appliance.admin.api import Access, Api
from appliance.admin.api_packages import UPLOAD_PATH, ImportObserver
from appliance.admin.directory_logins import AdminDirectory
from appliance.admin.request import AdminRequest
from appliance.admin.tokens import bearer_secret
from appliance.admin.web import ApiError, Reply, error_reply, finish, send
from appliance.config import AdminSettings, Config
from appliance.ops import (
    HealthResource,
    admin_log,
    emit_store_events,
    events_after,
    newest_event_id,
)
from appliance.store import Store
from appliance.web import GuardedChannel, GuardedRequest, GuardedSite, Limits, Rejection

log = Logger(namespace="ucupdates.admin")

UPLOADS = "uploads"


class AdminChannel(GuardedChannel):
    site: AdminSite

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()
        request = self.requests[-1] if self.requests else None
        uploading = isinstance(request, AdminRequest) and request.upload_path is not None
        if uploading and not self._rejected and self._deadline is not None:
            # a large package may take longer than a JSON request to arrive
            self._deadline.reset(self.site.settings.upload_timeout_seconds)

    def reject(self, rejection: Rejection) -> None:
        """As GuardedChannel.reject; a refused upload leaves nothing on disk."""
        if not self._rejected:
            for request in self.requests:
                if isinstance(request, AdminRequest):
                    request.discard_upload()
        super().reject(rejection)

    def rejection_body(self, rejection: Rejection) -> tuple[bytes, bytes, list[bytes]]:
        """The API's JSON error body (an upload refused for its Bearer token says so, as
        the API's own 401 does)."""
        body = json.dumps({"error": rejection.reason}).encode() + b"\n"
        headers = [b"Cache-Control: no-store"]
        request = self.requests[-1] if self.requests else None
        sent = request.getHeader(b"authorization") if request is not None else None
        if rejection.status == 401 and bearer_secret(sent) is not None:
            headers.append(b'WWW-Authenticate: Bearer error="invalid_token"')
        return b"application/json", body, headers


class AdminSite(GuardedSite):
    protocol = AdminChannel
    requestFactory = AdminRequest

    def __init__(
        self, resource: Any, admit: Any, limits: Limits, settings: AdminSettings, **kwargs: Any
    ) -> None:
        super().__init__(resource, admit, limits, **kwargs)
        self.settings = settings


class ControlPanel(resource.Resource):
    """Every path of the admin listener but /health: the API, the pages, the static files."""

    isLeaf = True

    def __init__(self, api: Api, pages_: pages.Pages) -> None:
        super().__init__()
        self.api = api
        self.pages = pages_

    def render(self, request: server.Request) -> bytes | int:
        path = request.path.split(b"?", 1)[0]
        if request.method in (b"POST", b"DELETE"):
            since = newest_event_id(self.api.store)
            request.notifyFinish().addBoth(lambda _: self._forward(since))
        try:
            if path == b"/api" or path.startswith(b"/api/"):
                outcome = self.api.handle(request)
            else:
                outcome = self.pages.handle(request)
        except ApiError as e:
            return send(request, error_reply(e))
        except Exception:
            log.failure("admin request {path} failed", path=path.decode("latin-1"))
            return send(request, Reply(500, {"error": "internal error (see the service log)"}))
        if isinstance(outcome, Reply):
            return send(request, outcome)
        outcome.addCallbacks(lambda reply: finish(request, reply), lambda f: _failed(request, f))
        return server.NOT_DONE_YET

    def _forward(self, since: int) -> None:
        """The event-log entries a change added, as log events (so syslog gets them too)."""
        try:
            emit_store_events(admin_log, events_after(self.api.store, since))
        except Exception:
            log.failure("could not forward admin events")


def _failed(request: server.Request, failure: Failure) -> None:
    if isinstance(failure.value, ApiError):
        finish(request, error_reply(failure.value))
        return
    log.failure("admin request failed", failure)
    finish(request, Reply(500, {"error": "internal error (see the service log)"}))


class _Root(resource.Resource):
    def __init__(self, panel: ControlPanel) -> None:
        super().__init__()
        self.panel = panel

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        return self.panel


def make_admin_site(
    config: Config,
    store: Store,
    clock: Callable[[], datetime],
    reactor: Any,
    *,
    settings: AdminSettings | None = None,
    service: Any = None,
    directory: AdminDirectory | None = None,
    observe_import: ImportObserver | None = None,
) -> AdminSite:
    """The admin listener's `twisted.web.server.Site` (a protocol factory): the Control
    Panel's pages and JSON API, and `/health`. Wrap it in TLS with profile `modern`.
    `service` (the ApplianceService) lets /health report on it. Directory logins
    (`[admin.ldap]`, or `directory`) are checked here: unusable settings raise
    AuthError. `observe_import` is told how each uploaded package's import went
    (/metrics)."""
    settings = settings or config.admin
    openapi = resources.files(__package__).joinpath("openapi.json").read_bytes()
    directory = directory or AdminDirectory.of(settings.ldap, config.auth.ldap)
    api = Api(config, store, clock, reactor, settings, openapi, directory)
    api.packages.observe = observe_import
    panel = ControlPanel(api, pages.Pages(api))
    root = _Root(panel)

    def signed_in(request: server.Request) -> bool:  # the checks' details are for admins
        return api.login_of(request) is not None or api.token_of(request) is not None

    health: Any = HealthResource(config, store, clock, service, authorised=signed_in)
    root.putChild(b"health", health)
    uploads = config.data_dir / UPLOADS
    _sweep_uploads(uploads)
    limits = Limits.of(config.service, settings.max_connections)
    site = AdminSite(root, _admitter(api, settings, uploads), limits, settings, reactor=reactor)
    return site


def _sweep_uploads(folder: Path) -> None:
    """Uploads that a stopped process left behind. Each upload's name starts with the id of
    the process receiving it; those of other live processes (serve workers) are theirs."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        owner = entry.name.split("-", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and _alive(int(owner)):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir():
                for inner in entry.iterdir():
                    inner.unlink()
                entry.rmdir()
            else:
                entry.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _admitter(api: Api, settings: AdminSettings, uploads: Path) -> Any:
    def admit(
        request: GuardedRequest, method: bytes, path: bytes, length: int | None
    ) -> Rejection | None:
        assert isinstance(request, AdminRequest)
        if method == b"POST" and path.split(b"?", 1)[0] == UPLOAD_PATH:
            # Authorised before any of the body is read: a stranger's upload costs nothing.
            request.method = method  # authorise() reads it
            login, problem = api.authorise(request, Access.CHANGE)
            if problem is not None:
                return Rejection(problem.status, problem.message)
            limit = settings.max_upload_bytes
            if length is not None and length > limit:
                return Rejection(413, f"the package is over the upload limit of {limit} bytes")
            request.max_body = limit
            request.upload_path = uploads / f"{os.getpid()}-{secrets.token_hex(12)}.part"
            request.admission = login
            return None
        limit = settings.max_json_bytes
        if length is not None and length > limit:
            return Rejection(413, f"request body over {limit} bytes")
        request.max_body = limit
        return None

    return admit
