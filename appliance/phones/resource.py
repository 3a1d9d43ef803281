"""The phones' HTTP side: update checks, image downloads, device log uploads.

`PhoneService` holds what every listener shares: the answers (`answers.py`), the records
(`records.py`) and the download slots. `PhoneRoutes` is one listener's routes for the
lean HTTP server (`appliance.web.LeanFactory`): `admit` runs when a request's headers are
in (`admission.py`: zone, body limit, credentials, before any body), `handle` answers a
whole request. A check's answer goes out as bytes remembered whole for the second
(`appliance.web`'s `Rendered`): the same answer body costs one look-up.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import PurePosixPath
from urllib.parse import parse_qs, unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from appliance.catalogue import FileVerifier
from appliance.config import Config
from appliance.phones.admission import Admission, Admit, auth_headers, fired, make_admitter
from appliance.phones.answers import Answers, RouteKind
from appliance.phones.auth import Authenticator, AuthResult
from appliance.phones.codec import CONTENT_TYPE, BaseUrls, CheckError, parse_check
from appliance.phones.confirmations import rollout_tick
from appliance.phones.downloads import Downloads
from appliance.phones.image_body import Download
from appliance.phones.records import DeviceLogError, Offload, Records, store_device_log
from appliance.store import Store
from appliance.web import LeanRequest, Rejection
from appliance.web import text_answer as plain

log = Logger(namespace="ucupdates.phone")

_METHODS: dict[RouteKind, tuple[bytes, ...]] = {
    RouteKind.CHECK: (b"POST",),
    RouteKind.UPLOAD: (b"PUT", b"POST"),
    RouteKind.FILES: (b"GET", b"HEAD"),
}
_LOG_TYPE_BY_EXTENSION = {
    ".dmp": "Watson",
    ".kdmp": "Watson",
    ".clg": "CELog",
    ".clg2": "CELog",
    ".xml": "Config",
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
CHECK_HEADERS = (b"Content-Type: " + CONTENT_TYPE, b"Cache-Control: no-store")

Handler = Callable[[LeanRequest, Admission], None]


class PhoneService:
    """State the phone-facing listeners share. Use from the reactor thread."""

    def __init__(
        self,
        config: Config,
        store: Store,
        authenticator: Authenticator,
        now: Callable[[], datetime],
        offload: Offload | None = None,
    ) -> None:
        """`offload` (PostgreSQL): the store's work runs through it, in a thread; the
        answers' snapshot is then installed by a `CatalogueWatcher`, never read by a check."""
        self.config = config
        self.store = store
        self.authenticator = authenticator
        self.now = now
        self.offload = offload
        self.answers = Answers(
            store,
            BaseUrls.from_config(config),
            # a pool node's files come from the store's blobs (catalogue.NodeCache)
            FileVerifier(config.store_dir, cached=store.backend == "postgresql"),
            now=now,
            watched=offload is not None,
        )
        self.records = Records(config, store, now, offload)
        self.downloads = Downloads(config.service)

    def set_urls(self, urls: BaseUrls) -> None:
        """The base URLs answers carry (known once the listeners have their ports)."""
        self.answers.set_urls(urls)

    def flush_inventory(self) -> int | Deferred[int]:
        """Write the buffered sightings in one transaction (called every second)."""
        return self.records.flush_inventory()

    def rollout_tick(self) -> Deferred[None] | None:
        """Silent devices found, staged approvals advanced or paused (every
        `rollouts.timer_seconds`, by one process)."""
        now, settings = self.now(), self.config.rollouts
        if self.offload is None:
            rollout_tick(self.store, now, settings)
            return None
        ticking: Deferred[None] = self.offload(lambda: rollout_tick(self.store, now, settings))
        return ticking.addErrback(lambda f: log.failure("the rollout timer failed", f))

    def close(self) -> Deferred[int] | None:
        return self.records.close()

    def admitter(self, external_listener: bool, plain_http: bool = False) -> Admit:
        """The admission of one listener (`admission.make_admitter`)."""
        return make_admitter(self.config, self.authenticator, external_listener, plain_http)

    def routes(self, external_listener: bool, plain_http: bool = False) -> PhoneRoutes:
        """One listener's routes, for `appliance.web.LeanFactory`."""
        return PhoneRoutes(self, self.admitter(external_listener, plain_http))


class PhoneRoutes:
    """Every path of one phone-facing listener."""

    def __init__(self, service: PhoneService, admit: Admit) -> None:
        self.service = service
        self._admit = admit
        self._handlers: dict[RouteKind, Handler] = {
            RouteKind.CHECK: self._check,
            RouteKind.UPLOAD: self._upload,
            RouteKind.FILES: self._file,
        }

    def admit(self, request: LeanRequest, length: int | None) -> Rejection | None:
        return self._admit(request, length)

    def handle(self, request: LeanRequest) -> None:
        admission: Admission = request.admission
        if admission.kind is None:
            plain(request, 404, "not found")
            return
        allowed = _METHODS[admission.kind]
        if request.method not in allowed:
            plain(request, 405, "method not allowed", [b"Allow: " + b", ".join(allowed)])
            return
        handler = self._handlers[admission.kind]
        if admission.auth is None:
            handler(request, admission)
            return
        done = fired(admission.auth)
        if done is not None:
            self._authorised(request, admission, handler, done)
            return

        def later(result: AuthResult) -> None:
            if not request.channel.gone:
                self._authorised(request, admission, handler, result)

        def failed(failure: Failure) -> None:
            log.failure("authentication failed unexpectedly", failure)
            if not request.channel.gone:
                plain(request, 500, "internal error")

        admission.auth.addCallbacks(later, failed)

    def _authorised(
        self, request: LeanRequest, admission: Admission, handler: Handler, result: AuthResult
    ) -> None:
        if not result.ok:
            ntlm = self.service.authenticator.ntlm_enabled
            headers = auth_headers(result, self.service.config.auth.realm, ntlm)
            plain(request, result.status, result.reason, [n + b": " + v for n, v in headers])
            return
        handler(request, admission)

    # -- POST ucdevice.upx ------------------------------------------------------------------

    def _check(self, request: LeanRequest, admission: Admission) -> None:
        service = self.service
        body = request.body
        try:
            device = parse_check(body, admission.zone, admission.client)
        except CheckError as e:
            log.info(
                "bad update check from {client}: {reason}", client=admission.client, reason=e.reason
            )
            refusal = plain(request, e.status, e.reason)
            service.records.captures.keep(
                request, e.status, body, refusal, admission.client, admission.zone,
                f"unparsable: {e.reason}",
            )  # fmt: skip
            return
        decision, answer = service.answers.answer(device)
        service.records.record_check(device, decision, admission.client)
        channel = request.channel
        channel.complete(
            request,
            channel.rendered.cached(
                200, CHECK_HEADERS, answer, not request.keep_alive, request.http10
            ),
        )
        captures = service.records.captures  # capture mode's hook (phones/capture.py)
        if captures.wants(device):
            why = decision.reason.value
            client, zone = admission.client, admission.zone
            captures.keep(request, 200, body, answer, client, zone, why, device)

    # -- GET /DeviceUpdateFiles_*/ --------------------------------------------------------

    def _file(self, request: LeanRequest, admission: Admission) -> None:
        path = request.path
        raw = path.split(b"/", 2)[2] if path.count(b"/") >= 2 else b""
        relative = unquote_to_bytes(raw).decode("utf-8", "replace")
        parts = PurePosixPath(relative).parts
        if not parts or any(p in ("..", ".") or "\\" in p or "\0" in p for p in parts):
            plain(request, 404, "not found")
            return
        answers = self.service.answers
        stored = answers.referenced_file("/".join(parts))
        if stored is None:
            plain(request, 404, "not found")
            return
        store_dir = self.service.config.store_dir
        found = store_dir / stored.path
        if not os.path.realpath(found).startswith(os.path.realpath(store_dir) + os.sep):
            plain(request, 404, "not found")
            return
        if not answers.intact(stored):  # its hash, once per size and time
            plain(request, 503, "this file fails verification; not served")
            return
        # Found and inside the store: slots, Range and the body are downloads.py's.
        self.service.downloads.serve(
            request,
            found,
            Download(stored, admission.client, admission.zone),
            answers.download_caps(admission.client, admission.zone),
        )

    # -- PUT/POST Files -------------------------------------------------------------------

    def _upload(self, request: LeanRequest, admission: Admission) -> None:
        service = self.service
        settings = service.config.device_logs
        body = request.body
        query = request.target.split(b"?", 1)
        args = parse_qs(query[1], keep_blank_values=True) if len(query) == 2 else {}
        name = _arg(args, b"filename", b"name", b"file") or _disposition_name(request)
        if not name:
            plain(request, 400, "no file name (query parameter 'filename')")
            return
        base = _SAFE_NAME.sub("_", PurePosixPath(name.replace("\\", "/")).name).strip("._")[:96]
        extension = os.path.splitext(base)[1].lower()
        if extension not in settings.valid_extensions:
            plain(request, 415, f"file extension {extension or '(none)'} is not accepted")
            return
        log_type = _arg(args, b"type", b"logtype") or _LOG_TYPE_BY_EXTENSION.get(
            extension, "Diaglog"
        )
        valid = {t.casefold(): t for t in settings.valid_types}
        if log_type.casefold() not in valid:
            plain(request, 400, f"log type {log_type!r} is not accepted")
            return
        if not body:
            plain(request, 400, "empty upload")
            return
        device = _arg(args, b"mac", b"serial", b"device") or admission.client
        stamp = service.now().strftime("%Y%m%dT%H%M%S")
        safe_device = _SAFE_NAME.sub("_", device)[:64]
        folder = service.config.logs_dir / "Client" / valid[log_type.casefold()]
        name = f"{safe_device}_{stamp}_{secrets.token_hex(3)}_{base}"
        try:
            target = store_device_log(folder, name, body)
        except DeviceLogError as e:  # a full disk: refused, nothing left half-written
            log.error("cannot store device log {name}: {error}", name=name, error=str(e))
            retry = b"Retry-After: " + str(service.config.service.retry_after).encode()
            plain(request, 507, "cannot store the log now", [retry])
            return
        log.info(
            "device log {name} ({type}, {size} bytes) from {client}",
            name=target.name,
            type=valid[log_type.casefold()],
            size=len(body),
            client=admission.client,
            event="device.log",
        )
        channel = request.channel
        channel.complete(request, channel.render(request, 201, (), b""))


def _arg(args: dict[bytes, list[bytes]], *names: bytes) -> str | None:
    lowered = {k.lower(): v for k, v in args.items()}
    for name in names:
        values = lowered.get(name)
        if values and values[0].strip():
            return values[0].decode("utf-8", "replace").strip()
    return None


def _disposition_name(request: LeanRequest) -> str | None:
    header = request.headers.get(b"content-disposition")
    if not header:
        return None
    m = re.search(r'filename="?([^";]+)"?', header.decode("latin-1"))
    return m.group(1) if m else None
