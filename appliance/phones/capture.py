"""Capture mode on the phone path: which checks to keep, and a `Capture` of one of them.

Kept (when `service.capture` is on): the first `service.capture_per_model` checks of each
phone model (DeviceType/Brand/Model, any case) and every check that fails to parse. A
capture holds the request line, the headers with credentials removed, the body, what TLS
negotiated and whether the client sent SNI, the client and its zone, and the answer.
The folder (`appliance.ops.CaptureFolder`) writes it; counts per model start from what
the folder already holds, so a restart does not capture the same models again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from OpenSSL import SSL
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from appliance.config import Config
from appliance.model import Capture, CapturedTls, DeviceRequest, Zone
from appliance.ops import CaptureFolder, capture_id
from appliance.store import iso_utc
from appliance.web import LeanRequest

log = Logger(namespace="ucupdates.phone")

_CREDENTIAL_HEADERS = frozenset({b"authorization", b"proxy-authorization"})


def safe_header(name: bytes, value: bytes) -> tuple[str, str]:
    """A header as captured: credentials never. `Authorization: NTLM TlRM...` keeps
    `NTLM (credentials removed)`; `Cookie: a=1; b=2` keeps `a=…; b=…`."""
    text_name = name.decode("latin-1")
    lowered = name.lower()
    if lowered in _CREDENTIAL_HEADERS:
        scheme = value.strip().split(b" ", 1)[0].decode("latin-1")
        return text_name, f"{scheme} (credentials removed)" if scheme else "(credentials removed)"
    if lowered == b"cookie":
        names = [p.split(b"=", 1)[0].strip().decode("latin-1") for p in value.split(b";")]
        return text_name, "; ".join(f"{n}=…" for n in names if n)
    return text_name, value.decode("latin-1")


def tls_of(transport: Any) -> CapturedTls | None:
    """What the connection's TLS negotiated: the pyOpenSSL connection behind Twisted's
    TLS transport (`getHandle()`); None over plain HTTP or when there is none."""
    for _ in range(4):  # the TLS transport, or a wrapper around it
        handle = getattr(transport, "getHandle", None)
        connection = handle() if callable(handle) else None
        if isinstance(connection, SSL.Connection):
            version = connection.get_protocol_version_name()
            sni = connection.get_servername()
            return CapturedTls(
                version=version,
                cipher=connection.get_cipher_name(),
                server_name=sni.decode("ascii", "replace") if sni is not None else None,
            )
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def model_of(request: DeviceRequest) -> str:
    return f"{request.device_type}/{request.brand}/{request.model}"


class Captures:
    """The capture folder and how many checks of each model it holds. Use from the reactor."""

    def __init__(self, config: Config, now: Callable[[], datetime]) -> None:
        self.settings = config.service
        self.folder = CaptureFolder.of(config)
        self.now = now
        self._per_model: dict[str, int] | None = None  # read from the folder at first use
        self._count = 0

    def _counts(self) -> dict[str, int]:
        if self._per_model is None:
            self._per_model = self.folder.models()
        return self._per_model

    def wants(self, device: DeviceRequest) -> bool:
        """Whether this parsed check is one of the first of its model."""
        if not self.settings.capture:
            return False
        return self._counts().get(model_of(device).casefold(), 0) < self.settings.capture_per_model

    def keep(
        self,
        request: LeanRequest,
        status: int,
        body: bytes,
        answer: bytes,
        client: str,
        zone: Zone,
        reason: str,
        device: DeviceRequest | None = None,
    ) -> Capture | None:
        """Write a capture of `request` and the `answer` it got (with `status`)."""
        if not self.settings.capture:
            return None
        now = self.now()
        model = model_of(device) if device is not None else None
        if model is not None:
            reason = f"one of the first checks of {model} (answer: {reason})"
        transport: Any = getattr(request.channel, "transport", None)
        grouped = Headers()  # names as Twisted spelled them, grouped in first-seen order
        for name, value in request.raw_headers:
            grouped.addRawHeader(name, value)
        headers = tuple(
            safe_header(name, value)
            for name, values in grouped.getAllRawHeaders()
            for value in values
        )
        capture = Capture(
            id="",
            captured_at=iso_utc(now),
            reason=reason,
            client=client,
            zone=zone,
            model=model,
            method=request.method.decode("latin-1"),
            target=request.target.decode("latin-1"),
            http_version="HTTP/1.0" if request.http10 else "HTTP/1.1",
            headers=headers,
            body=body,
            tls=tls_of(transport),
            status=status,
            answer=answer,
        )
        for _ in range(100):  # ids are taken only after a restart within the same second
            self._count += 1
            capture = replace(capture, id=capture_id(now, os.getpid(), self._count))
            try:
                self.folder.write(capture)
                break
            except FileExistsError:
                continue
            except OSError as e:
                log.error("cannot write a capture: {error}", error=e.strerror)
                return None
        else:
            return None
        if model is not None:
            counts = self._counts()
            counts[model.casefold()] = counts.get(model.casefold(), 0) + 1
        log.info(
            "captured {method} {target} from {client} ({reason}) as {id}",
            method=capture.method,
            target=capture.target,
            client=client,
            reason=reason,
            id=capture.id,
            event="capture",
        )
        return capture
