"""The API's test devices: `GET` and `POST /api/test-devices`, `DELETE /api/test-devices/{id}`.

Test devices get a rule's pending version before everyone else; adding and removing them
are the catalogue's own actions, recorded in the event log.
"""

from __future__ import annotations

from typing import Any

from appliance.admin.call import Call
from appliance.admin.web import ApiError, Reply
from appliance.catalogue import (
    CatalogueError,
    add_test_device,
    parse_identifier,
    remove_test_device,
)
from appliance.identifiers import InvalidIdentifier
from appliance.model import TestDevice
from appliance.store import DuplicateError, Store


class TestDevicesApi:
    """Listing, adding and removing test devices."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def listing(self, call: Call) -> Reply:
        return Reply(
            body={"test_devices": [test_device_json(d) for d in self.store.test_devices()]}
        )

    def add(self, call: Call) -> Reply:
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
            # the catalogue words it for the command line; here they are JSON fields
            message = str(e).replace("--mac or --serial", "mac or serial")
            raise ApiError(400, message) from e
        except DuplicateError as e:
            raise ApiError(409, str(e)) from e
        return Reply(201, test_device_json(device))

    def remove(self, call: Call) -> Reply:
        device_id = int(call.params["id"])
        if self.store.test_device(device_id) is None:
            raise ApiError(404, f"no test device {device_id}")
        try:
            device = remove_test_device(self.store, str(device_id), call.actor)
        except CatalogueError as e:
            raise ApiError(409, str(e)) from e
        return Reply(body=test_device_json(device))


def test_device_json(d: TestDevice) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "kind": d.kind.value,
        "identifier": d.identifier,
        "scope": d.scope,
        "created_at": d.created_at,
    }
