"""The rollout policy as JSON in and out: upgrade paths, networks, the external zone, pins,
and what each device was offered. Shared by the JSON API (`api_rollouts`) and the command
line, which builds the same bodies from its options, so both check input alike and say
the same things.

Every function takes the store, the time, the actor and a JSON body (or a query as a
dict of strings), calls the catalogue's own action (`set_upgrade_step`, `pin_device`...,
each with its event), and returns the JSON answer, built from the catalogue's JSON forms.
Input that does not make sense raises `InputError` (400 over the API); asking to remove
something that is not there raises `Missing` (404); the catalogue's `CatalogueError`
(refused in the current state) goes through.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from appliance.catalogue import (
    CatalogueError,
    clear_external,
    entry_json,
    offer_count_json,
    offer_json,
    parse_identifier,
    pin_device,
    remove_network,
    remove_upgrade_step,
    set_external,
    set_network,
    set_upgrade_step,
    unpin_device,
)
from appliance.identifiers import InvalidIdentifier, normalise_mac, normalise_serial
from appliance.model import (
    DownloadWindows,
    ExternalPolicy,
    IdentifierKind,
    NetworkPolicy,
    Outcome,
    Pin,
    PinAction,
    RolloutError,
    TimeWindow,
    UpgradeStep,
    WindowError,
    parse_network,
)
from appliance.store import Store

Body = Mapping[str, Any]
OFFERS_LIMIT = 1000  # records an offers listing returns unless it asks for fewer


class InputError(ValueError):
    """A body or query that does not make sense; str() says which field and why."""


class Missing(InputError):
    """What the request names to change or show is not there."""


# -- reading bodies ----------------------------------------------------------------------


def text(body: Body, name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InputError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InputError(f"{name} is a string")
    return value.strip()


def whole(body: Body, name: str, minimum: int = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():  # from a query string
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} is a whole number of at least {minimum}")
    return value


def number(body: Body, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InputError(f"{name} is a number of at least 0")
    return float(value)


def flag(body: Body, name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise InputError(f"{name} is true or false")
    return value


def _checked(build: Any, *args: Any, **kwargs: Any) -> Any:
    """A record built from input: its own checks become InputError."""
    try:
        return build(*args, **kwargs)
    except (RolloutError, WindowError, InvalidIdentifier) as e:
        raise InputError(str(e)) from e


# -- upgrade paths -----------------------------------------------------------------------


def step_of(body: Body, with_offer: bool = True) -> UpgradeStep:
    """{"device_type", "brand", "model", "revision", "update_type", "below", "offer"}; a
    removal needs no offer (a placeholder equal to `below` keeps the record valid)."""
    below = text(body, "below", True) or ""
    return _checked(  # type: ignore[no-any-return]
        UpgradeStep,
        device_type=text(body, "device_type") or "UCPhone",
        brand=text(body, "brand", True) or "",
        model=text(body, "model", True) or "",
        below=below,
        offer=(text(body, "offer", True) or "") if with_offer else below,
        revision=text(body, "revision"),
        update_type=text(body, "update_type"),
    )


def list_paths(store: Store) -> dict[str, Any]:
    return {"paths": [entry_json(e) for e in store.upgrade_steps()]}


def add_path(store: Store, actor: str, body: Body) -> dict[str, Any]:
    step = step_of(body)
    replaced = set_upgrade_step(store, step, actor)
    entry = next(e for e in store.upgrade_steps() if e.value == step)
    return {"path": entry_json(entry), "replaced": _maybe(replaced)}


def remove_path(store: Store, actor: str, body: Body) -> dict[str, Any]:
    try:
        removed = remove_upgrade_step(store, step_of(body, with_offer=False), actor)
    except CatalogueError as e:
        raise Missing(str(e)) from e
    return {"removed": entry_json(removed)}


# -- networks and the external zone --------------------------------------------------------


def windows_of(body: Body, default_zone: str | None = "UTC") -> DownloadWindows | None:
    """{"time_zone": "Europe/Berlin", "windows": ["22:00-05:00", ...]}."""
    raw = body.get("windows") or []
    if not isinstance(raw, list) or not all(isinstance(w, str) for w in raw):
        raise InputError('windows is a list of "HH:MM-HH:MM" strings')
    zone = text(body, "time_zone") or default_zone
    if zone is None:
        if raw:
            raise InputError("windows need a time_zone (an IANA name such as Europe/Berlin)")
        return None
    windows = tuple(_checked(TimeWindow.parse, w) for w in raw)
    return _checked(DownloadWindows, zone, windows)  # type: ignore[no-any-return]


def list_networks(store: Store) -> dict[str, Any]:
    return {"networks": [entry_json(e) for e in store.networks()]}


def set_network_policy(store: Store, actor: str, body: Body) -> dict[str, Any]:
    network = _checked(parse_network, text(body, "network", True) or "")
    windows = windows_of(body) or DownloadWindows("UTC")
    policy = _checked(
        NetworkPolicy,
        network,
        windows,
        whole(body, "max_downloads"),
        whole(body, "max_bytes_per_second"),
    )
    replaced = set_network(store, policy, actor)
    entry = next(e for e in store.networks() if e.value.network == network)
    return {"network": entry_json(entry), "replaced": _maybe(replaced)}


def remove_network_policy(store: Store, actor: str, network: str) -> dict[str, Any]:
    _checked(parse_network, network)
    try:
        removed = remove_network(store, network, actor)
    except CatalogueError as e:
        raise Missing(str(e)) from e
    return {"removed": entry_json(removed)}


def show_external(store: Store) -> dict[str, Any]:
    return {"external": _maybe(store.external_policy())}


def set_external_policy(store: Store, actor: str, body: Body) -> dict[str, Any]:
    policy = _checked(
        ExternalPolicy,
        windows_of(body, default_zone=None),
        whole(body, "max_downloads"),
        whole(body, "max_bytes_per_second"),
    )
    replaced = set_external(store, policy, actor)
    return {"external": _maybe(store.external_policy()), "replaced": _maybe(replaced)}


def clear_external_policy(store: Store, actor: str) -> dict[str, Any]:
    try:
        removed = clear_external(store, actor)
    except CatalogueError as e:
        raise Missing(str(e)) from e
    return {"removed": entry_json(removed)}


# -- pins ------------------------------------------------------------------------------------


def _device(body: Body) -> tuple[IdentifierKind, str]:
    mac, serial = text(body, "mac"), text(body, "serial")
    if (mac is None) == (serial is None):
        raise InputError("name the device by mac or by serial (one of them)")
    try:
        return parse_identifier(mac, serial)
    except (CatalogueError, InvalidIdentifier) as e:
        raise InputError(str(e)) from e


def list_pins(store: Store) -> dict[str, Any]:
    return {"pins": [entry_json(e) for e in store.pins()]}


def add_pin(store: Store, actor: str, body: Body) -> dict[str, Any]:
    kind, identifier = _device(body)
    action = text(body, "action", True)
    if action not in {a.value for a in PinAction}:
        raise InputError(f"action is hold or exclude, not {action!r}")
    pin = _checked(
        Pin,
        kind,
        identifier,
        PinAction(action),
        text(body, "reason") or "",
        version=text(body, "version"),
        update_type=text(body, "update_type"),
    )
    replaced = pin_device(store, pin, actor)
    entry = next(e for e in store.pins() if e.value == pin)
    return {"pin": entry_json(entry), "replaced": _maybe(replaced)}


def remove_pin(store: Store, actor: str, body: Body) -> dict[str, Any]:
    kind, identifier = _device(body)
    try:
        removed = unpin_device(store, kind, identifier, text(body, "update_type"), actor)
    except CatalogueError as e:
        raise Missing(str(e)) from e
    return {"removed": entry_json(removed)}


# -- what each device was offered ------------------------------------------------------------


def identity_of(store: Store, device: str) -> str:
    """The inventory identity of a device named by MAC or serial number (as the offers
    record it: the MAC when the device has one, else `serial:...`)."""
    try:
        return normalise_mac(device)
    except InvalidIdentifier:
        pass
    try:
        serial = normalise_serial(device)
    except InvalidIdentifier as e:
        raise InputError(f"device {device!r} is neither a MAC address nor a serial number") from e
    known = next((d.identity for d in store.devices() if d.serial == serial), None)
    return known or f"serial:{serial}"


def list_offers(store: Store, query: Body) -> dict[str, Any]:
    """Query: rule_id, device (MAC or serial), outcome, version, limit."""
    outcome = text(query, "outcome")
    if outcome is not None and outcome not in {o.value for o in Outcome}:
        choices = ", ".join(o.value for o in Outcome)
        raise InputError(f"outcome is one of {choices}, not {outcome!r}")
    device = text(query, "device")
    records = store.offers(
        rule_id=whole(query, "rule_id"),
        identity=identity_of(store, device) if device else None,
        outcome=Outcome(outcome) if outcome else None,
        version=text(query, "version"),
        limit=whole(query, "limit") or OFFERS_LIMIT,
    )
    keys = {r.id: str(r.key) for r in store.rules()}
    return {"offers": [{**offer_json(r), "rule": keys.get(r.rule_id)} for r in records]}


def offer_counts(store: Store, query: Body) -> dict[str, Any]:
    """Devices per rule, version, stage and outcome (query: rule_id)."""
    counts = store.offer_counts(whole(query, "rule_id"))
    return {"counts": [offer_count_json(c) for c in counts]}


def _maybe(entry: Any) -> dict[str, Any] | None:
    return None if entry is None else entry_json(entry)


def now_of(store: Store) -> datetime:
    """The store's clock as an aware datetime."""
    return datetime.fromisoformat(store.now())
