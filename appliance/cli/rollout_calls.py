"""Where the rollout commands send their requests: the local store, or an appliance's API.

Each rollout command builds the JSON body the API takes and hands it to a backend by the
operation's name. `Local` calls the same functions the API's handlers call
(`appliance.admin`'s rollout operations, each a catalogue action with its event), so a
command does and says the same with or without `--server`; `Remote` sends the request to
`--server URL` (`cli/remote.py`'s client). Errors become one line and exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TextIO
from urllib.parse import quote, urlencode

from appliance.catalogue import CatalogueError, LifecycleError
from appliance.cli.exits import Failure
from appliance.store import Store

Answer = dict[str, Any]
# operation -> (method, path with {fields} from params); a GET's body goes in the query
ROUTES: dict[str, tuple[str, str]] = {
    "rollouts": ("GET", "/api/rollouts"),
    "rollout": ("GET", "/api/rollouts/{rule_id}"),
    "approve": ("POST", "/api/rollouts"),
    "move": ("POST", "/api/rollouts/{rule_id}/{move}"),
    "drop": ("DELETE", "/api/rollouts/{rule_id}"),
    "paths": ("GET", "/api/upgrade-paths"),
    "add_path": ("POST", "/api/upgrade-paths"),
    "remove_path": ("POST", "/api/upgrade-paths/remove"),
    "networks": ("GET", "/api/networks"),
    "set_network": ("POST", "/api/networks"),
    "drop_network": ("DELETE", "/api/networks/{network}"),
    "external": ("GET", "/api/external-policy"),
    "set_external": ("POST", "/api/external-policy"),
    "clear_external": ("DELETE", "/api/external-policy"),
    "pins": ("GET", "/api/pins"),
    "add_pin": ("POST", "/api/pins"),
    "remove_pin": ("POST", "/api/pins/remove"),
    "offers": ("GET", "/api/offers"),
    "explain": ("GET", "/api/explain"),
}


class Backend(Protocol):
    def call(self, op: str, body: Mapping[str, Any] | None = None, **params: str) -> Answer: ...


class Client(Protocol):
    """What `cli/remote.py`'s RemoteClient offers."""

    def request(self, method: str, path: str, body: Any = None) -> Any: ...


class Remote:
    """The operations through the API of the appliance at `--server`."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def call(self, op: str, body: Mapping[str, Any] | None = None, **params: str) -> Answer:
        method, template = ROUTES[op]
        path = template.format(**{k: quote(v, safe="") for k, v in params.items()})
        if method == "GET":
            query = {k: str(v) for k, v in (body or {}).items() if v is not None}
            answer: Answer = self.client.request(
                "GET", path + ("?" + urlencode(query) if query else "")
            )
            return answer
        sent = dict(body) if body is not None else ({} if op == "move" else None)
        result: Answer = self.client.request(method, path, sent)
        return result


class Local:
    """The operations on this data folder's store, as the API's handlers run them."""

    def __init__(self, store: Store, actor: str) -> None:
        self.store = store
        self.actor = actor

    def call(self, op: str, body: Mapping[str, Any] | None = None, **params: str) -> Answer:
        from appliance.admin import rollout_operation  # the Control Panel's: loaded on use

        try:
            return rollout_operation(self.store, self.actor, op, dict(body or {}), params)
        except (ValueError, CatalogueError, LifecycleError) as e:  # bad input, refused
            raise Failure(str(e)) from e


Command = Callable[[Backend, Any, TextIO], int]


def local(command: Command) -> Callable[[Any, Any, Store, str], int]:
    """A rollout command as `cli/main.py`'s table runs it: on the local store."""
    return lambda args, config, store, actor: command(Local(store, actor), args, sys.stdout)


def remote(command: Command) -> Callable[[Client, Any, TextIO], int]:
    """A rollout command as `cli/remote.py`'s table runs it: through the API (its errors
    are the client's; a refusal of the command's own is one line here)."""

    def run(client: Client, args: Any, out: TextIO) -> int:
        try:
            return command(Remote(client), args, out)
        except Failure as e:
            print(f"ucupdates: {e}", file=sys.stderr)
            return e.status

    return run
