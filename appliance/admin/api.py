"""The JSON API under `/api/`: everything the Control Panel's pages do, for scripts too.

Documented in `openapi.json` (served at `/api/openapi.json`). Reading needs a session;
changing needs a session of an admin and the session's CSRF token in `X-CSRF-Token`. The
admin actions are the catalogue's own (`apply_action`, `add_test_device`, `clean_files`,
`import_package`...), so the event log records them exactly as it records the commands.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web import server

from appliance.admin import charts, inventory
from appliance.admin.accounts import AddressFailures, locked_until, password_matches, record_failure
from appliance.admin.impact import Impact, preview
from appliance.admin.sessions import (
    CSRF_HEADER,
    Login,
    clearing_cookie,
    close_session,
    cookie_token,
    csrf_matches,
    find_session,
    idle_expiry,
    open_session,
    session_cookie,
)
from appliance.admin.web import ApiError, Reply
from appliance.catalogue import (
    Action,
    CatalogueError,
    ImportResult,
    PackageError,
    add_test_device,
    apply_action,
    change_json,
    clean_files,
    import_json,
    import_package,
    parse_identifier,
    remove_test_device,
    rule_json,
)
from appliance.config import AdminSettings, Config
from appliance.identifiers import InvalidIdentifier
from appliance.model import Event, Role, Rule, RuleState, TestDevice
from appliance.store import DuplicateError, RuleFilter, Store, StoreError

log = Logger(namespace="ucupdates.admin")

PUBLIC, READ, SESSION, CHANGE = "public", "read", "session", "change"
_UNSAFE = (b"POST", b"PUT", b"PATCH", b"DELETE")
_RULE_FILTERS = ("device_type", "brand", "model", "revision", "locale", "update_type")
_DEVICE_FILTERS = ("brand", "model", "locale", "version", "zone", "status", "q")
UPLOAD_PATH = b"/api/packages"


@dataclass
class Call:
    """One API request as a handler sees it."""

    request: server.Request
    login: Login | None
    params: dict[str, str]
    max_json_bytes: int
    args: dict[bytes, list[bytes]] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        assert self.login is not None
        return f"web:{self.login.account.name}"

    def query(self, name: str) -> str | None:
        values = self.args.get(name.encode())
        if not values:
            return None
        text = values[0].decode("utf-8", "replace").strip()
        return text or None

    def queries(self, name: str) -> list[str]:
        return [v.decode("utf-8", "replace") for v in self.args.get(name.encode(), [])]

    def json(self) -> dict[str, Any]:
        ctype = (self.request.getHeader(b"content-type") or b"").split(b";")[0].strip()
        if ctype.lower() != b"application/json":
            raise ApiError(400, "send the request body as JSON (Content-Type: application/json)")
        content: Any = self.request.content
        raw = content.read(self.max_json_bytes + 1) if content is not None else b""
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body


Handler = Callable[[Call], "Reply | defer.Deferred[Reply]"]


@dataclass(frozen=True)
class Route:
    method: bytes
    pattern: re.Pattern[str]
    handler: Handler
    access: str


class Api:
    """The `/api/` routes and their handlers."""

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Callable[[], datetime],
        reactor: Any,
        settings: AdminSettings,
        openapi: bytes,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.reactor = reactor
        self.settings = settings
        self.openapi = openapi
        self.address_failures = AddressFailures(settings)
        r = self._route
        self.routes = [
            r(b"GET", r"/api/openapi\.json", self.openapi_document, PUBLIC),
            r(b"POST", r"/api/login", self.login, PUBLIC),
            r(b"POST", r"/api/logout", self.logout, SESSION),
            r(b"GET", r"/api/session", self.session, READ),
            r(b"GET", r"/api/rules", self.rules, READ),
            r(b"GET", r"/api/rules/preview", self.rules_preview, READ),
            r(b"POST", r"/api/rules/(?P<action>[a-z]+)", self.rules_action, CHANGE),
            r(b"POST", r"/api/packages", self.upload_package, CHANGE),
            r(b"POST", r"/api/clean-files", self.clean_files, CHANGE),
            r(b"GET", r"/api/test-devices", self.test_devices, READ),
            r(b"POST", r"/api/test-devices", self.add_test_device, CHANGE),
            r(b"DELETE", r"/api/test-devices/(?P<id>[0-9]{1,12})", self.remove_test_device, CHANGE),
            r(b"GET", r"/api/devices", self.devices, READ),
            r(b"GET", r"/api/devices\.csv", self.devices_csv, READ),
            r(b"GET", r"/api/events", self.events, READ),
            r(b"GET", r"/api/activity", self.activity, READ),
            r(b"GET", r"/api/charts", self.charts, READ),
            r(b"GET", r"/api/charts/versions\.svg", self.versions_svg, READ),
            r(b"GET", r"/api/charts/checkins\.svg", self.checkins_svg, READ),
        ]

    @staticmethod
    def _route(method: bytes, pattern: str, handler: Handler, access: str) -> Route:
        return Route(method, re.compile(pattern + r"\Z"), handler, access)

    # -- dispatch -----------------------------------------------------------------------------

    def login_of(self, request: server.Request) -> Login | None:
        token = cookie_token(request.requestHeaders.getRawHeaders(b"cookie"))
        return find_session(self.store, token, self.clock(), self.settings)

    def authorise(
        self, request: server.Request, access: str
    ) -> tuple[Login | None, ApiError | None]:
        """Who is asking, and why they may not (401: no session; 403: CSRF or role)."""
        if access == PUBLIC:
            return None, None
        login = self.login_of(request)
        if login is None:
            return None, ApiError(401, "log in first: no session, or it has expired")
        if access in (SESSION, CHANGE) or request.method in _UNSAFE:
            if not _same_origin(request):
                return login, ApiError(403, "the request comes from another origin")
            if not csrf_matches(login.session, request.getHeader(CSRF_HEADER)):
                return login, ApiError(403, "missing or wrong CSRF token (X-CSRF-Token header)")
        if access == CHANGE and login.account.role is not Role.ADMIN:
            return login, ApiError(403, "a viewer cannot change anything; ask an admin")
        return login, None

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
        login: Login | None = getattr(request, "admission", None)
        if not isinstance(login, Login):  # the upload was authorised when its headers came in
            login, problem = self.authorise(request, route.access)
            if problem is not None:
                raise problem
        call = Call(request, login, params, self.settings.max_json_bytes, request.args or {})
        return route.handler(call)

    # -- sessions -----------------------------------------------------------------------------

    def openapi_document(self, call: Call) -> Reply:
        return Reply(body=self.openapi, content_type=b"application/json", cache=b"no-cache")

    def login(self, call: Call) -> defer.Deferred[Reply]:
        body = call.json()
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
            raise ApiError(400, "give the account name and password")
        address = _client(call.request)
        left = self.address_failures.locked(address, self.reactor.seconds())
        if left is not None:
            raise _locked(left, "too many wrong passwords from this address")
        account = self.store.admin_account(name) if len(name) <= 64 else None
        if account is not None:
            until = locked_until(account, self.clock())
            if until is not None:
                seconds = (datetime.fromisoformat(until) - self.clock()).total_seconds()
                raise _locked(seconds, "too many wrong passwords for this account")
        pool = self.reactor.getThreadPool()
        checked = deferToThreadPool(self.reactor, pool, password_matches, account, password)

        def decided(ok: bool) -> Reply:
            if not ok or account is None:
                self.address_failures.fail(address, self.reactor.seconds())
                fresh = self.store.admin_account(name)
                until = None
                if fresh is not None:
                    until = record_failure(self.store, fresh, self.clock(), self.settings)
                log.warn(
                    "admin login failed for {name} from {address}{locked}",
                    name=name[:64],
                    address=address,
                    locked=f": locked until {until}" if until else "",
                    event="admin.login.failed",
                )
                raise ApiError(401, "wrong account name or password")
            self.address_failures.clear(address)
            login = open_session(self.store, account, address, self.clock(), self.settings)
            log.info(
                "admin login {name} ({role}) from {address}",
                name=account.name,
                role=account.role,
                address=address,
                event="admin.login",
            )
            return Reply(
                body=self._session_json(login),
                headers=[(b"set-cookie", session_cookie(login.token, self.settings))],
            )

        return checked.addCallback(decided)

    def logout(self, call: Call) -> Reply:
        assert call.login is not None
        close_session(self.store, call.login.token)
        log.info("admin logout {name}", name=call.login.account.name, event="admin.logout")
        return Reply(body={"ok": True}, headers=[(b"set-cookie", clearing_cookie())])

    def session(self, call: Call) -> Reply:
        assert call.login is not None
        return Reply(body=self._session_json(call.login))

    def _session_json(self, login: Login) -> dict[str, Any]:
        return {
            "name": login.account.name,
            "role": login.account.role,
            "csrf_token": login.session.csrf_token,
            "expires_at": idle_expiry(login, self.clock(), self.settings),
            "max_upload_bytes": self.settings.max_upload_bytes,
        }

    # -- rules ------------------------------------------------------------------------------

    def rules(self, call: Call) -> Reply:
        flt = self._rule_filter(call)
        every = self.store.rules()
        return Reply(
            body={
                "rules": [rule_json(r) for r in self.store.rules(flt)],
                "choices": {
                    name: sorted({getattr(r.key, name) for r in every}, key=str.casefold)
                    for name in _RULE_FILTERS
                },
            }
        )

    def _rule_filter(self, call: Call, allow_selection: bool = False) -> RuleFilter:
        state = call.query("state")
        if state is not None and state not in {s.value for s in RuleState}:
            raise ApiError(400, f"unknown state {state!r}: pending, approved, restored or reset")
        values = {name: call.query(name) for name in _RULE_FILTERS}
        ids: tuple[int, ...] = ()
        if allow_selection:
            try:
                ids = tuple(int(v) for v in call.queries("id"))
            except ValueError:
                raise ApiError(400, "rule ids are whole numbers") from None
        return RuleFilter(
            ids=ids,
            state=RuleState(state) if state else None,
            pending_only=allow_selection and call.query("all_pending") in ("1", "true"),
            everything=allow_selection and call.query("all") in ("1", "true"),
            **values,
        )

    def rules_preview(self, call: Call) -> Reply:
        action = _action(call.query("action") or "")
        flt = self._rule_filter(call, allow_selection=True)
        selected = self._select(flt)
        impact = preview(action, selected, self.store.catalog(), self.store.devices())
        return Reply(body=impact_json(impact))

    def _select(self, flt: RuleFilter) -> list[Rule]:
        if flt.is_empty():
            raise ApiError(400, "select rules: ids, a filter, all_pending or all")
        rules = self.store.rules(flt)
        missing = sorted(set(flt.ids) - {r.id for r in rules})
        if missing:
            raise ApiError(404, f"no rule with id {', '.join(map(str, missing))}")
        if not rules:
            raise ApiError(404, "no rule matches the filter")
        return rules

    def rules_action(self, call: Call) -> Reply:
        action = _action(call.params["action"])
        flt = _body_filter(call.json())
        try:
            changes = apply_action(self.store, action, flt, call.actor)
        except CatalogueError as e:
            raise ApiError(404 if "no rule" in str(e) else 400, str(e)) from e
        body = {"action": action.value, "changes": [change_json(c) for c in changes]}
        if all(c.skipped is not None for c in changes):
            reasons = "; ".join(f"rule {c.before.id} {c.skipped}" for c in changes)
            raise ApiError(409, f"{action.value} applies to none of them: {reasons}", **body)
        return Reply(body=body)

    # -- packages -----------------------------------------------------------------------------

    def upload_package(self, call: Call) -> defer.Deferred[Reply]:
        from appliance.admin.site import AdminRequest

        request = call.request
        assert isinstance(request, AdminRequest)
        staged = request.take_upload(call.query("name"))
        if staged is None:
            raise ApiError(400, "the upload is empty")
        config, actor = self.config, call.actor

        def run() -> ImportResult:
            store = Store.open(config.db_path)  # this thread's own connection
            try:
                return import_package(store, config, staged, actor)
            finally:
                store.close()

        def cleanup(result: Any) -> Any:
            shutil.rmtree(staged.parent, ignore_errors=True)
            return result

        def failed(failure: Any) -> Reply:
            error = failure.value
            if isinstance(error, PackageError):
                raise ApiError(400, str(error))
            if isinstance(error, CatalogueError):
                raise ApiError(409, str(error))
            if isinstance(error, StoreError):
                raise ApiError(409, str(error))
            return failure  # type: ignore[no-any-return]

        imported = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), run)
        imported.addBoth(cleanup)
        reply: Any = imported.addCallbacks(lambda result: Reply(body=import_json(result)), failed)
        return cast("defer.Deferred[Reply]", reply)

    def clean_files(self, call: Call) -> Reply:
        try:
            result = clean_files(
                self.store, self.config.store_dir, self.config.lock_path, call.actor
            )
        except CatalogueError as e:
            raise ApiError(409, str(e)) from e
        return Reply(
            body={
                "updates": list(result.updates),
                "files": len(result.files),
                "bytes": result.bytes,
            }
        )

    # -- test devices -------------------------------------------------------------------------

    def test_devices(self, call: Call) -> Reply:
        return Reply(
            body={"test_devices": [test_device_json(d) for d in self.store.test_devices()]}
        )

    def add_test_device(self, call: Call) -> Reply:
        body = call.json()
        name, mac, serial = body.get("name"), body.get("mac"), body.get("serial")
        if not isinstance(name, str):
            raise ApiError(400, "a test device needs a name")
        for value in (mac, serial):
            if value is not None and not isinstance(value, str):
                raise ApiError(400, "mac and serial are strings")
        mac = mac or None
        serial = serial or None
        try:
            kind, identifier = parse_identifier(mac, serial)
            device = add_test_device(self.store, name, kind, identifier, call.actor)
        except (CatalogueError, InvalidIdentifier) as e:
            message = str(e).replace("--mac or --serial", "mac or serial")
            raise ApiError(400, message) from e
        except DuplicateError as e:
            raise ApiError(409, str(e)) from e
        return Reply(201, test_device_json(device))

    def remove_test_device(self, call: Call) -> Reply:
        device_id = int(call.params["id"])
        if self.store.test_device(device_id) is None:
            raise ApiError(404, f"no test device {device_id}")
        try:
            device = remove_test_device(self.store, str(device_id), call.actor)
        except CatalogueError as e:
            raise ApiError(409, str(e)) from e
        return Reply(body=test_device_json(device))

    # -- devices, activity, charts ------------------------------------------------------------

    def _device_rows(self) -> list[inventory.DeviceRow]:
        return inventory.device_rows(self.store.devices(), self.store.catalog())

    def _device_filter(self, call: Call) -> inventory.DeviceFilter:
        status = call.query("status")
        if status is not None and status not in {s.value for s in inventory.Status}:
            choices = ", ".join(s.value for s in inventory.Status)
            raise ApiError(400, f"unknown status {status!r}: {choices}")
        return inventory.DeviceFilter(**{name: call.query(name) for name in _DEVICE_FILTERS})

    def devices(self, call: Call) -> Reply:
        flt = self._device_filter(call)
        limit = _int(call.query("limit"), 1000, 1, 100_000, "limit")
        offset = _int(call.query("offset"), 0, 0, 10**9, "offset")
        rows = self._device_rows()
        matched = [r for r in rows if flt.matches(r)]
        return Reply(
            body={
                "devices": [r.as_json() for r in matched[offset : offset + limit]],
                "total": len(rows),
                "matched": len(matched),
                "choices": {
                    name: inventory.distinct(rows, name)
                    for name in ("brand", "model", "locale", "version", "zone")
                },
            }
        )

    def devices_csv(self, call: Call) -> Reply:
        flt = self._device_filter(call)
        rows = [r for r in self._device_rows() if flt.matches(r)]
        stamp = self.clock().strftime("%Y%m%d-%H%M%S")
        return Reply(
            body=inventory.csv_bytes(rows),
            content_type=b"text/csv; charset=utf-8",
            headers=[
                (
                    b"content-disposition",
                    f'attachment; filename="ucupdates-devices-{stamp}.csv"'.encode(),
                )
            ],
        )

    def events(self, call: Call) -> Reply:
        limit = _int(call.query("limit"), 100, 1, 10_000, "limit")
        return Reply(body={"events": [event_json(e) for e in self.store.events(limit)]})

    def activity(self, call: Call) -> Reply:
        limit = _int(call.query("limit"), 50, 1, 1000, "limit")
        device_events = inventory.recent_device_events(self.config.logs_dir, limit)
        return Reply(
            body={
                "events": [event_json(e) for e in self.store.events(limit)],
                "device_events": [asdict(e) for e in device_events],
            }
        )

    def _checkins(self) -> list[tuple[Any, int]]:
        return inventory.checkins_per_day(self.config.logs_dir, self.clock().date())

    def charts(self, call: Call) -> Reply:
        per_model = inventory.versions_per_model(self._device_rows())
        return Reply(
            body={
                "versions_per_model": [
                    {
                        "model": m.model,
                        "total": m.total,
                        "versions": [{"version": v, "devices": n} for v, n in m.versions],
                    }
                    for m in per_model
                ],
                "checkins": [{"date": d.isoformat(), "checks": n} for d, n in self._checkins()],
            }
        )

    def versions_svg(self, call: Call) -> Reply:
        svg = charts.versions_chart(inventory.versions_per_model(self._device_rows()))
        return Reply(body=svg.encode(), content_type=b"image/svg+xml")

    def checkins_svg(self, call: Call) -> Reply:
        svg = charts.checkins_chart(self._checkins())
        return Reply(body=svg.encode(), content_type=b"image/svg+xml")


# -- JSON shapes (the schemas of openapi.json) ---------------------------------------------------


def impact_json(impact: Impact) -> dict[str, Any]:
    return {
        "action": impact.action.value,
        "rule_ids": list(impact.rule_ids),
        "skipped": [{"rule_id": i, "reason": why} for i, why in impact.skipped],
        "devices": impact.devices,
        "before": [{"version": o.version, "devices": o.devices} for o in impact.before],
        "after": [{"version": o.version, "devices": o.devices} for o in impact.after],
        "up_to_date_after": impact.up_to_date_after,
        "changed": impact.changed,
        "summary": impact.summary(),
    }


def test_device_json(d: TestDevice) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "kind": d.kind.value,
        "identifier": d.identifier,
        "scope": d.scope,
        "created_at": d.created_at,
    }


def event_json(e: Event) -> dict[str, Any]:
    return asdict(e)


# -- helpers ---------------------------------------------------------------------------------


def _action(text: str) -> Action:
    try:
        return Action(text)
    except ValueError:
        raise ApiError(404, f"unknown action {text!r}: approve, reset, restore or remove") from None


def _body_filter(body: dict[str, Any]) -> RuleFilter:
    """The rules an action names: {"ids": [...]}, {"filter": {...}}, {"all_pending": true}
    or {"all": true}, combinable as on the command line."""
    ids = body.get("ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, int) and i > 0 for i in ids):
        raise ApiError(400, "ids is a list of rule ids (whole numbers)")
    flt = body.get("filter", {})
    if not isinstance(flt, dict) or not all(
        k in (*_RULE_FILTERS, "state") and isinstance(v, str) for k, v in flt.items()
    ):
        raise ApiError(400, f"filter takes strings for {', '.join(_RULE_FILTERS)} and state")
    state = flt.pop("state", None)
    if state is not None and state not in {s.value for s in RuleState}:
        raise ApiError(400, f"unknown state {state!r}")
    for key in ("all_pending", "all"):
        if not isinstance(body.get(key, False), bool):
            raise ApiError(400, f"{key} is true or false")
    return RuleFilter(
        ids=tuple(ids),
        state=RuleState(state) if state else None,
        pending_only=bool(body.get("all_pending", False)),
        everything=bool(body.get("all", False)),
        **flt,
    )


def _int(text: str | None, default: int, low: int, high: int, name: str) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} is a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} is between {low} and {high}")
    return value


def _client(request: server.Request) -> str:
    address: Any = request.getClientAddress()
    return str(getattr(address, "host", "?"))


def _locked(seconds: float, why: str) -> ApiError:
    wait = max(1, int(seconds + 0.999))
    error = ApiError(429, f"{why}: try again in {wait} s")
    error.headers.append((b"retry-after", str(wait).encode()))
    return error


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


def staged_name(name: str | None) -> str:
    """A safe file name for an uploaded package (the import reports it by this name)."""
    base = Path((name or "").replace("\\", "/")).name
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:96]
    return safe or "package.cab"
