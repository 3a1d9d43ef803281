"""The API's rollouts: staged approvals, upgrade paths, networks, the external zone, pins,
what each device was offered, and `explain`.

    GET  /api/rollouts                          staged approvals with their health
    POST /api/rollouts                          approve (staged, guarded) or stage
    GET  /api/rollouts/{rule_id}                one, with what its devices are answered
    POST /api/rollouts/{rule_id}/{move}         advance, pause {"reason"}, resume
    DELETE /api/rollouts/{rule_id}              drop the staging
    GET|POST /api/upgrade-paths, POST /api/upgrade-paths/remove
    GET|POST /api/networks, DELETE /api/networks/{network}
    GET|POST|DELETE /api/external-policy
    GET|POST /api/pins, POST /api/pins/remove
    GET  /api/offers?rule_id=&device=&outcome=&version=&limit=, GET /api/offer-counts?rule_id=
    GET  /api/explain?brand=&model=&mac=&reported_version=&address=&zone=&at=

Each route is an operation by name (`OPERATIONS`); the command line runs the same
operations on a local store (`rollout_operation`), so both check and answer alike. The work
is `rollout_ops`, `rollout_views` and `rollout_explain`, which call the catalogue's
actions, each with its event. Statuses by exception type: bad input 400, unknown rule or
nothing to remove 404, refused in the current state (a downgrade without the flag, the
soak gate, paused already) 409.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from appliance.admin import rollout_explain, rollout_ops
from appliance.admin import rollout_views as views
from appliance.admin.call import Call, Handler
from appliance.admin.rollout_ops import Body, InputError, Missing
from appliance.admin.web import ApiError, Reply
from appliance.catalogue import CatalogueError, LifecycleError, UnknownRule
from appliance.store import Store

Operation = Callable[[Store, datetime, str, Body, Mapping[str, str]], dict[str, Any]]

OPERATIONS: dict[str, Operation] = {
    "rollouts": lambda s, now, who, b, p: views.list_rollouts(s, now),
    "approve": lambda s, now, who, b, p: views.approve_rollout(s, now, who, b),
    "rollout": lambda s, now, who, b, p: views.show_rollout(s, now, _id(p)),
    "move": lambda s, now, who, b, p: views.move_rollout(s, now, who, _id(p), p["move"], b),
    "drop": lambda s, now, who, b, p: views.drop_rollout(s, who, _id(p)),
    "paths": lambda s, now, who, b, p: rollout_ops.list_paths(s),
    "add_path": lambda s, now, who, b, p: rollout_ops.add_path(s, who, b),
    "remove_path": lambda s, now, who, b, p: rollout_ops.remove_path(s, who, b),
    "networks": lambda s, now, who, b, p: rollout_ops.list_networks(s),
    "set_network": lambda s, now, who, b, p: rollout_ops.set_network_policy(s, who, b),
    "drop_network": lambda s, now, who, b, p: rollout_ops.remove_network_policy(
        s, who, p["network"]
    ),
    "external": lambda s, now, who, b, p: rollout_ops.show_external(s),
    "set_external": lambda s, now, who, b, p: rollout_ops.set_external_policy(s, who, b),
    "clear_external": lambda s, now, who, b, p: rollout_ops.clear_external_policy(s, who),
    "pins": lambda s, now, who, b, p: rollout_ops.list_pins(s),
    "add_pin": lambda s, now, who, b, p: rollout_ops.add_pin(s, who, b),
    "remove_pin": lambda s, now, who, b, p: rollout_ops.remove_pin(s, who, b),
    "offers": lambda s, now, who, b, p: rollout_ops.list_offers(s, b),
    "offer_counts": lambda s, now, who, b, p: rollout_ops.offer_counts(s, b),
    "explain": lambda s, now, who, b, p: rollout_explain.explain(s, now, b),
}

_RULE = r"/api/rollouts/(?P<rule_id>[0-9]{1,12})"
_NETWORK = r"(?P<network>[0-9A-Fa-f:.]{2,45}/[0-9]{1,3})"
# (method, path pattern, operation, status when done); a GET changes nothing
_ROUTES = (
    (b"GET", r"/api/rollouts", "rollouts", 200),
    (b"POST", r"/api/rollouts", "approve", 201),
    (b"GET", _RULE, "rollout", 200),
    (b"POST", _RULE + r"/(?P<move>[a-z]+)", "move", 200),
    (b"DELETE", _RULE, "drop", 200),
    (b"GET", r"/api/upgrade-paths", "paths", 200),
    (b"POST", r"/api/upgrade-paths", "add_path", 200),
    (b"POST", r"/api/upgrade-paths/remove", "remove_path", 200),
    (b"GET", r"/api/networks", "networks", 200),
    (b"POST", r"/api/networks", "set_network", 200),
    (b"DELETE", r"/api/networks/" + _NETWORK, "drop_network", 200),
    (b"GET", r"/api/external-policy", "external", 200),
    (b"POST", r"/api/external-policy", "set_external", 200),
    (b"DELETE", r"/api/external-policy", "clear_external", 200),
    (b"GET", r"/api/pins", "pins", 200),
    (b"POST", r"/api/pins", "add_pin", 200),
    (b"POST", r"/api/pins/remove", "remove_pin", 200),
    (b"GET", r"/api/offers", "offers", 200),
    (b"GET", r"/api/offer-counts", "offer_counts", 200),
    (b"GET", r"/api/explain", "explain", 200),
)


def _id(params: Mapping[str, str]) -> int:
    try:
        return int(params["rule_id"])
    except ValueError:
        raise InputError(f"a rule id is a whole number, not {params['rule_id']!r}") from None


def rollout_operation(
    store: Store, actor: str, name: str, body: Body, params: Mapping[str, str]
) -> dict[str, Any]:
    """Run the operation `name` on `store` now, as its route would (the command line's
    way in). Raises InputError, Missing, CatalogueError or LifecycleError."""
    return OPERATIONS[name](store, rollout_ops.now_of(store), actor, body, params)


class RolloutsApi:
    """The rollout endpoints."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    def routes(self) -> list[tuple[bytes, str, Handler, bool]]:
        """(method, pattern, handler, whether it changes anything), for api.py."""
        return [
            (method, pattern, self._handler(method, name, status), method != b"GET")
            for method, pattern, name, status in _ROUTES
        ]

    def _handler(self, method: bytes, name: str, status: int) -> Handler:
        operation = OPERATIONS[name]

        def handle(call: Call) -> Reply:
            if method == b"GET":
                body: Body = {k.decode(): v for k in call.args if (v := call.query(k.decode()))}
            elif method == b"POST" and not (name == "move" and call.params["move"] != "pause"):
                body = call.json()
            else:
                body = {}
            try:
                return Reply(
                    status, operation(self.store, self.clock(), call.actor, body, call.params)
                )
            except (Missing, UnknownRule) as e:
                raise ApiError(404, str(e)) from e
            except InputError as e:
                raise ApiError(400, str(e)) from e
            except (CatalogueError, LifecycleError) as e:  # a refused downgrade, the soak gate
                raise ApiError(409, str(e)) from e

        return handle
