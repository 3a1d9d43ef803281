"""In `serve`: GET /health on the admin listener, and the daily certificate-expiry warning.

`/health` runs the checks about the process itself (`checks.process_checks`: config,
certificate, store and files) and says whether the service is running with its
listeners; `ucupdates check` (in `checks`) also goes to the listeners from outside.
Anyone who reaches the admin listener may ask /health, so without a Control Panel session
it says only the overall status: the details name files, folders and listeners, and the
version would tell a stranger which advisories apply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from twisted.application import internet
from twisted.logger import Logger
from twisted.web import resource, server

from appliance import __version__
from appliance.config import Config
from appliance.ops.checks import CheckResult, process_checks, report
from appliance.store import Store
from appliance.tls import ServerCredentials, check_expiry, days_left

log = Logger(namespace="ucupdates.health")

CACHE_SECONDS = 10.0  # /health answers from results this fresh


class HealthResource(resource.Resource):
    """GET /health: `{"status": "ok"|"warn"|"fail", "version": ..., "checks": [...]}`, 200
    or 503; the version and the checks only for a request that `authorised` accepts (a
    Control Panel session).

    The config, the certificate, the store and its files, and, given the service (an
    `ApplianceService`), that it is running with its listeners. Results are kept for
    `cache_seconds`, so a busy monitor does not run SQLite's integrity check each time.
    """

    isLeaf = True

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Callable[[], datetime],
        service: Any = None,
        cache_seconds: float = CACHE_SECONDS,
        authorised: Callable[[server.Request], bool] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted: unannotated
        self.config = config
        self.store = store
        self.clock = clock
        self.service = service
        self.cache_seconds = cache_seconds
        self.authorised = authorised or (lambda request: False)
        self._cached: tuple[datetime, list[CheckResult]] | None = None

    def results(self) -> list[CheckResult]:
        now = self.clock()
        if self._cached is not None:
            at, results = self._cached
            if 0 <= (now - at).total_seconds() < self.cache_seconds:
                return results
        results = [*process_checks(self.config, self.store, now), self._serving()]
        self._cached = (now, results)
        return results

    def _serving(self) -> CheckResult:
        if self.service is None:
            return CheckResult("serving", True, "answering /health")
        if not getattr(self.service, "running", False):
            return CheckResult("serving", False, "the service is not running")
        ports = getattr(self.service, "ports", {}) or {}
        listening = ", ".join(f"{n} {h}:{p}" for n, (h, p) in sorted(ports.items()))
        return CheckResult("serving", True, f"listening: {listening or 'nothing'}")

    def render_GET(self, request: server.Request) -> bytes:
        return self.write(request, *self.answer(request))

    def answer(self, request: server.Request) -> tuple[int, bytes]:
        """The status and body for `request`, without writing to it (on PostgreSQL the
        Control Panel asks for them in a worker thread, then `write`s on the reactor)."""
        results = self.results()
        full = report(results)
        body = {"status": full["status"]}
        if self.authorised(request):
            body |= {"version": __version__, "checks": full["checks"]}
        status = 200 if all(r.ok for r in results) else 503
        return status, json.dumps(body, indent=2).encode() + b"\n"

    def write(self, request: server.Request, status: int, body: bytes) -> bytes:
        """Set the answer's status and headers; returns the body."""
        http_request: Any = request  # Twisted's setHeader is unannotated
        http_request.setResponseCode(status)
        http_request.setHeader(b"content-type", b"application/json")
        http_request.setHeader(b"cache-control", b"no-store")
        return body


def log_certificate_expiry(creds: ServerCredentials, now: datetime, warn_days: int) -> str | None:
    """Log `cert.expiry` (warn) when the certificate expires within `warn_days`."""
    warning = check_expiry(creds, now, warn_days)
    if warning is not None:
        log.warn(
            "{warning}",
            warning=warning,
            path=str(creds.cert_file),
            not_after=f"{creds.not_after:%Y-%m-%dT%H:%M:%SZ}",
            days_left=round(days_left(creds, now)),
            event="cert.expiry",
        )
    return warning


def expiry_timer(
    creds: ServerCredentials, warn_days: int, clock: Callable[[], datetime], reactor: Any
) -> internet.TimerService:
    """A service that runs `log_certificate_expiry` when it starts, then once a day."""
    timer = internet.TimerService(  # type: ignore[no-untyped-call]  # Twisted: unannotated
        86400.0, lambda: log_certificate_expiry(creds, clock(), warn_days)
    )
    timer.clock = reactor
    return timer
