"""The phones' HTTP side (Twisted): update checks, image downloads, device log uploads.

`PhoneService` holds what every listener shares: the answers (`answers.py`), the records
(`records.py`) and the download slots. `PhoneResource` answers one listener's requests;
`admit` runs when a request's headers are in (`appliance.web`'s `GuardedSite`) and
decides zone, body limit and credentials before any body is read.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import PurePosixPath
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from appliance.catalogue import FileVerifier
from appliance.config import Config
from appliance.phones.admission import Admission, auth_headers, fired, make_admitter
from appliance.phones.answers import Answers, RouteKind
from appliance.phones.auth import Authenticator, AuthResult
from appliance.phones.codec import CONTENT_TYPE, BaseUrls, CheckError, parse_check
from appliance.phones.downloads import Downloads
from appliance.phones.image_body import Download
from appliance.phones.records import DeviceLogError, Records, store_device_log
from appliance.store import Store
from appliance.web import GuardedRequest, Rejection

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


class PhoneService:
    """State the phone-facing listeners share. Use from the reactor thread."""

    def __init__(
        self,
        config: Config,
        store: Store,
        authenticator: Authenticator,
        now: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.store = store
        self.authenticator = authenticator
        self.now = now
        self.answers = Answers(store, BaseUrls.from_config(config), FileVerifier(config.store_dir))
        self.records = Records(config, store, now)
        self.downloads = Downloads(config.service)

    def set_urls(self, urls: BaseUrls) -> None:
        """The base URLs answers carry (known once the listeners have their ports)."""
        self.answers.set_urls(urls)

    def flush_inventory(self) -> int:
        """Write the buffered sightings in one transaction (called every second)."""
        return self.records.flush_inventory()

    def close(self) -> None:
        self.records.close()

    # -- admission: when the headers are in -----------------------------------------------

    def admitter(
        self, external_listener: bool, plain_http: bool = False
    ) -> Callable[..., Rejection | None]:
        """The admission of one listener (`admission.make_admitter`)."""
        return make_admitter(self.config, self.authenticator, external_listener, plain_http)


class PhoneResource(resource.Resource):
    """Every path of one phone-facing listener."""

    isLeaf = True

    def __init__(self, service: PhoneService) -> None:
        super().__init__()
        self.service = service

    def render(self, request: server.Request) -> bytes | int:
        assert isinstance(request, GuardedRequest)
        admission: Admission = request.admission
        request.setHeader(b"server", b"ucupdates")
        if admission.kind is None:
            return _plain(request, 404, "not found")
        allowed = _METHODS[admission.kind]
        if request.method not in allowed:
            request.setHeader(b"allow", b", ".join(allowed))
            return _plain(request, 405, "method not allowed")
        handlers = {
            RouteKind.CHECK: self._check,
            RouteKind.UPLOAD: self._upload,
            RouteKind.FILES: self._file,
        }
        handler = handlers[admission.kind]
        if admission.auth is None:
            return handler(request, admission)
        done = fired(admission.auth)
        if done is not None:
            return self._authorised(request, admission, handler, done)

        def later(result: AuthResult) -> None:
            if request.finished or request._disconnected:
                return
            out = self._authorised(request, admission, handler, result)
            if isinstance(out, bytes):
                request.write(out)
                request.finish()

        def failed(failure: Failure) -> None:
            log.failure("authentication failed unexpectedly", failure)
            if not request.finished and not request._disconnected:
                request.write(_plain(request, 500, "internal error"))
                request.finish()

        admission.auth.addCallbacks(later, failed)
        return server.NOT_DONE_YET

    def _authorised(
        self,
        request: server.Request,
        admission: Admission,
        handler: Callable[[server.Request, Admission], bytes | int],
        result: AuthResult,
    ) -> bytes | int:
        if not result.ok:
            ntlm = self.service.authenticator.ntlm_enabled
            for name, value in auth_headers(result, self.service.config.auth.realm, ntlm):
                request.responseHeaders.addRawHeader(name, value)
            return _plain(request, result.status, result.reason)
        return handler(request, admission)

    # -- POST ucdevice.upx ------------------------------------------------------------------

    def _check(self, request: server.Request, admission: Admission) -> bytes | int:
        assert request.content is not None
        body = request.content.read()
        try:
            device = parse_check(body, admission.zone, admission.client)
        except CheckError as e:
            log.info(
                "bad update check from {client}: {reason}", client=admission.client, reason=e.reason
            )
            refusal = _plain(request, e.status, e.reason)
            self.service.records.captures.keep(
                request, body, refusal, admission.client, admission.zone, f"unparsable: {e.reason}"
            )
            return refusal
        decision, response = self.service.answers.answer(device)
        self.service.records.record_check(device, decision, admission.client)
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        captures = self.service.records.captures  # capture mode's hook (phones/capture.py)
        if captures.wants(device):
            why = decision.reason.value
            captures.keep(request, body, response, admission.client, admission.zone, why, device)
        return response

    # -- GET /DeviceUpdateFiles_*/ --------------------------------------------------------

    def _file(self, request: server.Request, admission: Admission) -> bytes | int:
        raw = request.path.split(b"/", 2)[2] if request.path.count(b"/") >= 2 else b""
        relative = unquote_to_bytes(raw).decode("utf-8", "replace")
        parts = PurePosixPath(relative).parts
        if not parts or any(p in ("..", ".") or "\\" in p or "\0" in p for p in parts):
            return _plain(request, 404, "not found")
        stored = self.service.answers.referenced_file("/".join(parts))
        if stored is None:
            return _plain(request, 404, "not found")
        store_dir = self.service.config.store_dir
        path = store_dir / stored.path
        if not os.path.realpath(path).startswith(os.path.realpath(store_dir) + os.sep):
            return _plain(request, 404, "not found")
        if not self.service.answers.intact(stored):  # its hash, once per size and time
            return _plain(request, 503, "this file fails verification; not served")
        # Found and inside the store: slots, Range and the body are downloads.py's.
        download = Download(stored, admission.client, admission.zone)
        return self.service.downloads.serve(request, path, download)

    # -- PUT/POST Files -------------------------------------------------------------------

    def _upload(self, request: server.Request, admission: Admission) -> bytes | int:
        settings = self.service.config.device_logs
        assert request.content is not None
        body = request.content.read()
        args = request.args or {}
        name = _arg(args, b"filename", b"name", b"file") or _disposition_name(request)
        if not name:
            return _plain(request, 400, "no file name (query parameter 'filename')")
        base = _SAFE_NAME.sub("_", PurePosixPath(name.replace("\\", "/")).name).strip("._")[:96]
        extension = os.path.splitext(base)[1].lower()
        if extension not in settings.valid_extensions:
            return _plain(request, 415, f"file extension {extension or '(none)'} is not accepted")
        log_type = _arg(args, b"type", b"logtype") or _LOG_TYPE_BY_EXTENSION.get(
            extension, "Diaglog"
        )
        valid = {t.casefold(): t for t in settings.valid_types}
        if log_type.casefold() not in valid:
            return _plain(request, 400, f"log type {log_type!r} is not accepted")
        if not body:
            return _plain(request, 400, "empty upload")
        device = _arg(args, b"mac", b"serial", b"device") or admission.client
        stamp = self.service.now().strftime("%Y%m%dT%H%M%S")
        safe_device = _SAFE_NAME.sub("_", device)[:64]
        folder = self.service.config.logs_dir / "Client" / valid[log_type.casefold()]
        name = f"{safe_device}_{stamp}_{secrets.token_hex(3)}_{base}"
        try:
            target = store_device_log(folder, name, body)
        except DeviceLogError as e:  # a full disk: refused, nothing left half-written
            log.error("cannot store device log {name}: {error}", name=name, error=str(e))
            request.setHeader(b"retry-after", str(self.service.config.service.retry_after).encode())
            return _plain(request, 507, "cannot store the log now")
        log.info(
            "device log {name} ({type}, {size} bytes) from {client}",
            name=target.name,
            type=valid[log_type.casefold()],
            size=len(body),
            client=admission.client,
            event="device.log",
        )
        request.setResponseCode(201)
        return b""


def _arg(args: dict[bytes, list[bytes]], *names: bytes) -> str | None:
    lowered = {k.lower(): v for k, v in args.items()}
    for name in names:
        values = lowered.get(name)
        if values and values[0].strip():
            return values[0].decode("utf-8", "replace").strip()
    return None


def _disposition_name(request: server.Request) -> str | None:
    header = request.getHeader(b"content-disposition")
    if not header:
        return None
    m = re.search(
        r'filename="?([^";]+)"?', header.decode("latin-1") if isinstance(header, bytes) else header
    )
    return m.group(1) if m else None


def _plain(request: server.Request, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode() + b"\n"
