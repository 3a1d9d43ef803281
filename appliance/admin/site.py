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
from dataclasses import dataclass
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
from appliance.admin.threads import Worker, resolved
from appliance.admin.tokens import bearer_secret
from appliance.admin.web import ApiError, Reply, error_reply, finish, primary_away, send
from appliance.config import AdminSettings, Config
from appliance.model import Event
from appliance.ops import (
    HealthResource,
    admin_log,
    emit_store_events,
    events_after,
    newest_event_id,
)
from appliance.store import PrimaryUnavailable, Store
from appliance.web import GuardedChannel, GuardedRequest, GuardedSite, Limits, Rejection

log = Logger(namespace="ucupdates.admin")

UPLOADS = "uploads"


class AdminChannel(GuardedChannel):
    site: AdminSite
    _awaiting = False  # an upload's caller is being looked up (PostgreSQL)
    _content_done = False  # its (empty) body ended meanwhile
    _lost = False

    def allHeadersReceived(self) -> None:
        request = self.requests[-1] if self.requests else None
        path: Any = self._path
        if (
            self.site.admit_upload is not None
            and isinstance(request, AdminRequest)
            and self._command == b"POST"
            and path.split(b"?", 1)[0] == UPLOAD_PATH
        ):
            # Read nothing more (the body's first bytes stay in the line buffer) until the
            # caller is known: a worker thread asks the store.
            self._awaiting = True
            self.paused = True
            transport: Any = self.transport
            transport.pauseProducing()
            looked_up = self.site.admit_upload(request)
            looked_up.addBoth(self._upload_authorised, request)
            return
        self._headers_admitted()

    def allContentReceived(self) -> None:
        if self._awaiting:
            self._content_done = True
            return
        super().allContentReceived()

    def _upload_authorised(self, outcome: Any, request: AdminRequest) -> None:
        self._awaiting = False
        if self._lost or self._rejected:
            return
        if isinstance(outcome, Failure):
            log.failure("looking up an upload's caller failed", outcome)
            outcome = Authorised(None, ApiError(500, "internal error (see the service log)"))
        request.admission = outcome
        self._headers_admitted()
        if self._rejected:
            return
        if self._content_done:
            self.allContentReceived()
        self.paused = False
        transport: Any = self.transport
        transport.resumeProducing()
        self.dataReceived(b"")  # what arrived with the headers

    def connectionLost(self, reason: Any = None) -> None:
        self._lost = True
        super().connectionLost(reason)

    def _headers_admitted(self) -> None:
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
        # PostgreSQL: an upload's caller looked up off the reactor (a Deferred of Authorised)
        self.admit_upload: Callable[[AdminRequest], Any] | None = None


class ControlPanel(resource.Resource):
    """Every path of the admin listener but /health: the API, the pages, the static files."""

    isLeaf = True

    def __init__(self, api: Api, pages_: pages.Pages, worker: Worker | None = None) -> None:
        super().__init__()
        self.api = api
        self.pages = pages_
        self.worker = worker or Worker(None, api.store)

    def render(self, request: server.Request) -> bytes | int:
        if self.worker.threaded:  # PostgreSQL: the store work in a worker thread
            answered = self.worker.run(self._answer, request)
            answered.addCallbacks(
                lambda done: self._deliver(request, *done), lambda f: _failed(request, f)
            )
            return server.NOT_DONE_YET
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
        except PrimaryUnavailable as e:
            return send(request, primary_away(e))
        except Exception:
            log.failure("admin request {path} failed", path=path.decode("latin-1"))
            return send(request, Reply(500, {"error": "internal error (see the service log)"}))
        if isinstance(outcome, Reply):
            return send(request, outcome)
        outcome.addCallbacks(lambda reply: finish(request, reply), lambda f: _failed(request, f))
        return server.NOT_DONE_YET

    def _answer(self, request: server.Request) -> tuple[Reply, list[Event]]:
        """In a worker thread: the reply, and the event-log entries the request added."""
        path = request.path.split(b"?", 1)[0]
        changes = request.method in (b"POST", b"DELETE")
        since = newest_event_id(self.api.store) if changes else 0
        try:
            if path == b"/api" or path.startswith(b"/api/"):
                reply = resolved(self.api.handle(request))
            else:
                reply = self.pages.handle(request)
        except ApiError as e:
            reply = error_reply(e)
        except PrimaryUnavailable as e:
            reply = primary_away(e)
        except Exception:
            log.failure("admin request {path} failed", path=path.decode("latin-1"))
            reply = Reply(500, {"error": "internal error (see the service log)"})
        events: list[Event] = []
        if changes:
            try:
                events = events_after(self.api.store, since)
            except Exception:
                log.failure("could not read the admin events to forward")
        return reply, events

    def _deliver(self, request: server.Request, reply: Reply, events: list[Event]) -> None:
        """On the reactor: the answer, then the request's events as log events."""
        finish(request, reply)
        emit_store_events(admin_log, events)

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
    if isinstance(failure.value, PrimaryUnavailable):
        finish(request, primary_away(failure.value))
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
    worker = Worker(reactor, store, config.store.pool_size)  # as many as connections
    panel = ControlPanel(api, pages.Pages(api), worker)
    root = _Root(panel)

    def signed_in(request: server.Request) -> bool:  # the checks' details are for admins
        return api.login_of(request) is not None or api.token_of(request) is not None

    health = HealthResource(config, store, clock, service, authorised=signed_in)
    health_page: Any = _Health(health, worker)
    root.putChild(b"health", health_page)
    uploads = config.data_dir / UPLOADS
    _sweep_uploads(uploads)
    limits = Limits.of(config.service, settings.max_connections)
    site = AdminSite(root, _admitter(api, settings, uploads), limits, settings, reactor=reactor)
    if worker.threaded:  # an upload's session is looked up in a worker thread
        site.admit_upload = _upload_admitter(api, worker)
    return site


class _Health(resource.Resource):
    """/health: answered in a worker thread on PostgreSQL, at once on SQLite."""

    isLeaf = True

    def __init__(self, health: HealthResource, worker: Worker) -> None:
        super().__init__()
        self.health = health
        self.worker = worker

    def render_GET(self, request: server.Request) -> bytes | int:
        if not self.worker.threaded:
            return self.health.render_GET(request)
        answered = self.worker.run(self.health.answer, request)

        def write(answer: tuple[int, bytes]) -> None:
            http_request: Any = request
            if http_request.finished or http_request._disconnected:
                return
            body = self.health.write(request, *answer)
            http_request.write(b"" if request.method == b"HEAD" else body)
            http_request.finish()

        answered.addCallbacks(write, lambda f: _failed(request, f))
        return server.NOT_DONE_YET


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
            if isinstance(request.admission, Authorised):  # looked up in a worker thread
                login, problem = request.admission.caller, request.admission.problem
            else:
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


@dataclass(frozen=True)
class Authorised:
    """An upload's caller (or why not), found in a worker thread before its body is read."""

    caller: Any
    problem: ApiError | None


def _upload_admitter(api: Api, worker: Worker) -> Callable[[AdminRequest], Any]:
    """On PostgreSQL: an upload's session or token, looked up in a worker thread while the
    connection reads nothing more (`AdminChannel`); a Deferred of `Authorised`."""

    def lookup(request: AdminRequest) -> Authorised:
        caller, problem = api.authorise(request, Access.CHANGE)
        return Authorised(caller, problem)

    def admit_upload(request: AdminRequest) -> Any:
        request.method = b"POST"  # authorise() reads it
        return worker.run(lookup, request)

    return admit_upload
