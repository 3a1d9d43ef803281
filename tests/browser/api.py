"""The Control Panel's JSON API in process, as a browser's script calls it: the session
cookie, the CSRF token, the Origin, and every /api/ answer checked against openapi.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from treq.testing import StubTreq

from appliance.testing import settle
from browser.panel import check_against_openapi

PASSWORD = "correct horse battery"
BASE = "https://ucupdates.test:9443"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return str(self.json()["error"])


@dataclass
class Browser:
    stub: StubTreq
    cookie: str | None = None
    csrf: str | None = None

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        headers = {"Accept": ["application/json"], "Origin": [BASE]}
        if self.cookie:
            headers["Cookie"] = [f"__Host-ucupdates-session={self.cookie}"]
        if self.csrf and method in ("POST", "DELETE"):
            headers["X-CSRF-Token"] = [self.csrf]
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = ["application/json"]
        response = settle(
            self.stub, self.stub.request(method, BASE + path, data=data, headers=headers)
        )
        flat = {k.decode(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
        reply = Reply(response.code, flat, settle(self.stub, response.content()))
        for value in response.headers.getRawHeaders("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            if name == "__Host-ucupdates-session":
                self.cookie = rest.split(";", 1)[0] or None
        if path.startswith("/api/"):
            check_against_openapi(method, BASE + path, reply)  # type: ignore[arg-type]
        return reply

    def login(self, name: str) -> Browser:
        reply = self.request("POST", "/api/login", {"name": name, "password": PASSWORD})
        assert reply.status == 200, reply.body
        self.csrf = reply.json()["csrf_token"]
        return self
