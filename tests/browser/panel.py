"""The Control Panel under test: a server process, and clients that talk to it over TLS.

`Client` checks every answer against `appliance/admin/openapi.json`: the status must be
documented for the operation, and a JSON body must validate against its schema (JSON
Schema 2020-12, as OpenAPI 3.1 has it). A test that gets an undocumented answer fails.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parent.parent.parent
OPENAPI_FILE = REPO / "appliance" / "admin" / "openapi.json"
OPENAPI: dict[str, Any] = json.loads(OPENAPI_FILE.read_text())
COOKIE = "__Host-ucupdates-session"
_REGISTRY = Registry().with_resource(
    "urn:openapi", Resource.from_contents(OPENAPI, default_specification=DRAFT202012)
)


class Undocumented(AssertionError):
    """An answer the OpenAPI file does not describe."""


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def operation_of(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """The documented path template and operation for a request, if any."""
    for template, item in OPENAPI["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    return None


def check_against_openapi(method: str, url: str, reply: Reply) -> None:
    path = urlsplit(url).path
    found = operation_of(method, path)
    if found is None:
        raise Undocumented(f"{method} {path} is not in the OpenAPI file")
    template, operation = found
    responses = operation["responses"]
    status = str(reply.status)
    if status not in responses:
        raise Undocumented(f"{method} {path}: status {status} is not documented ({reply.body!r})")
    response = responses[status]
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[1]
        response = OPENAPI["components"]["responses"][name]
        pointer = _pointer("components", "responses", name)
    else:
        pointer = _pointer("paths", template, method.lower(), "responses", status)
    ctype = reply.headers.get("Content-Type", "").split(";")[0].strip()
    content = response.get("content", {})
    if ctype not in content:
        raise Undocumented(f"{method} {path} {status}: content type {ctype!r} not documented")
    if ctype == "application/json":
        schema = {"$ref": "urn:openapi" + pointer + "/content/application~1json/schema"}
        validator = Draft202012Validator(schema, registry=_REGISTRY)
        errors = sorted(validator.iter_errors(reply.json()), key=lambda e: list(e.path))
        if errors:
            raise Undocumented(
                f"{method} {path} {status}: {errors[0].message} at {list(errors[0].path)}"
            )


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return str(self.json()["error"])


@dataclass
class Client:
    """One browser-like client: a cookie, a CSRF token, a source address."""

    port: int
    ca_file: Path
    fqdn: str
    source: str = "127.0.0.1"
    cookie: str | None = None
    csrf: str | None = None
    checked: list[str] = field(default_factory=list)

    def connection(self) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        conn = _PinnedConnection(
            self.fqdn, self.port, context=context, timeout=30, source_address=(self.source, 0)
        )
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        csrf: bool = True,
        check: bool = True,
    ) -> Reply:
        sent: dict[str, str] = {"Accept": "application/json"}
        if self.cookie:
            sent["Cookie"] = f"{COOKIE}={self.cookie}"
        if csrf and self.csrf and method in ("POST", "DELETE"):
            sent["X-CSRF-Token"] = self.csrf
        data: bytes | None = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        conn = self.connection()
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            conn.close()
        if check and path.startswith("/api/"):
            check_against_openapi(method, path, reply)
            self.checked.append(f"{method} {urlsplit(path).path} {reply.status}")
        for value in reply.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            if name == COOKIE:
                self.cookie = rest.split(";", 1)[0] or None
        return reply

    def login(self, name: str, password: str) -> Reply:
        reply = self.request("POST", "/api/login", {"name": name, "password": password})
        if reply.status == 200:
            self.csrf = reply.json()["csrf_token"]
        return reply


class _PinnedConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 that sends SNI and Host of the FQDN and checks the certificate."""

    def connect(self) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", self.port), self.timeout, self.source_address
        )
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)  # type: ignore[attr-defined]


class Panel:
    """`tests/browser/server.py` as a process."""

    def __init__(self, data_dir: Path, *options: str) -> None:
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests" / "browser" / "server.py"),
                "--data-dir",
                str(data_dir),
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=open(data_dir.parent / f"{data_dir.name}-server.log", "ab"),  # noqa: SIM115
            text=True,
            cwd=REPO,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            raise RuntimeError("the admin server did not start; see its log")
        info = json.loads(line)
        self.port: int = info["port"]
        self.ca_file = Path(info["ca"])
        self.cert_file = Path(info["cert"])
        self.fqdn: str = info["fqdn"]

    def log_text(self) -> str:
        """What the server logged so far (its standard error)."""
        return (self.data_dir.parent / f"{self.data_dir.name}-server.log").read_text()

    @property
    def url(self) -> str:
        return f"https://{self.fqdn}:{self.port}"

    def client(self, source: str = "127.0.0.1") -> Client:
        return Client(self.port, self.ca_file, self.fqdn, source)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def simulate_check(
    data_dir: Path,
    mac: str,
    *,
    brand: str = "Polycom",
    model: str = "CX600",
    locale: str = "ENU",
    version: str = "4.0.7577.4366",
    address: str = "10.1.2.3",
    zone: str = "internal",
) -> None:
    """What the phone-facing service records for one update check: the device in the
    inventory and a line in the day's audit file (the decision made as it would be now)."""
    from datetime import UTC, datetime

    from appliance.catalogue.decision import choose_update
    from appliance.config import load_config
    from appliance.model import Device, DeviceRequest, ReportedModule, Zone
    from appliance.phones.codec import audit_line
    from appliance.store.database import Store

    config = load_config(None, data_dir)
    now = datetime.now(UTC)
    stamp = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    request = DeviceRequest(
        "UCPhone",
        brand,
        model,
        "A",
        locale,
        mac=mac,
        modules=(ReportedModule("CPE.nbt", version),),
        zone=Zone(zone),
        address=address,
    )
    store = Store.open(config.db_path)
    try:
        decision = choose_update(request, store.catalog())
        with store.transaction():
            store.record_device(
                Device(
                    mac,
                    mac,
                    None,
                    "UCPhone",
                    brand,
                    model,
                    "A",
                    locale,
                    version,
                    zone,
                    address,
                    None,
                    stamp,
                    stamp,
                )
            )
    finally:
        store.close()
    audit = config.logs_dir / "Audit" / f"RequestHandlerAuditLog_test_{now:%Y%m%d}.log"
    audit.parent.mkdir(parents=True, exist_ok=True)
    with audit.open("a", encoding="utf-8") as f:
        f.write(audit_line(now, address, request, decision) + "\n")
