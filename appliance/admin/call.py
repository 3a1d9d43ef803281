"""One API request as a handler sees it: the request, who asks, the path's parameters.

Below the API's area modules (`api_*`) and the router (`api`), which all speak `Call`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.web import server

from appliance.admin.sessions import Login
from appliance.admin.web import ApiError, Reply
from appliance.model import ApiToken

# The API's bodies are flat (an object, its lists of ids). The parser recurses: 100,000
# nested `[` raised RecursionError (a 500 and a traceback); a few hundred levels parse.
MAX_JSON_DEPTH = 32
_TOO_DEEP = object()


def json_depth(value: Any) -> int:
    """How deep a parsed JSON value's arrays and objects nest (counted without recursing)."""
    depth = 0
    level = [value]
    while True:
        inner = [
            v
            for item in level
            if isinstance(item, (list, dict))
            for v in (item.values() if isinstance(item, dict) else item)
        ]
        if not any(isinstance(item, (list, dict)) for item in level):
            return depth
        depth += 1
        level = inner


@dataclass
class Call:
    """One API request as a handler sees it."""

    request: server.Request
    login: Login | None
    params: dict[str, str]
    max_json_bytes: int
    args: dict[bytes, list[bytes]] = field(default_factory=dict)
    token: ApiToken | None = None  # the API token the request came with, instead of a login

    @property
    def actor(self) -> str:
        """Who the event log names: `web:NAME` for a local account's session, the account
        (`ldap:NAME`) for a directory login's, `token:NAME` for an API token."""
        if self.token is not None:
            return f"token:{self.token.name}"
        assert self.login is not None
        name = self.login.account.name
        return name if ":" in name else f"web:{name}"

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
        if len(raw) > self.max_json_bytes:
            raise ApiError(413, f"request body over {self.max_json_bytes} bytes")
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the request body is not valid JSON") from None
        except RecursionError:
            body = _TOO_DEEP  # refused below
        if body is _TOO_DEEP or json_depth(body) > MAX_JSON_DEPTH:
            raise ApiError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body


Handler = Callable[[Call], "Reply | defer.Deferred[Reply]"]
