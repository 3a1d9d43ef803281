"""`explain` under the rollout policy: which update a device would get, and why.

Shared by the JSON API (`GET /api/explain`) and `ucupdates explain`. Besides the
decision's reason, detail and offers, it shows per matching rule the path the device will
walk (`upgrade_path`) towards what it would get (a held version, the pending version for
a test device, else the approved one), the rule's staged approval and whether the
device's bucket is in the current stage, the pins naming the device, and its download
window (by the client address, or the external zone's) at the time asked about.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from appliance.admin.rollout_ops import Body, InputError, text
from appliance.catalogue import decide, is_test_device, matching_rules, pin_json, upgrade_path
from appliance.identifiers import InvalidIdentifier, normalise_mac, normalise_serial
from appliance.model import Catalog, DeviceRequest, RolloutPolicy, Rule, Zone
from appliance.store import Store, iso_utc


def explain(store: Store, now: datetime, query: Body) -> dict[str, Any]:
    """What a device gets now, and why, under the rollout policy: the decision, then per
    matching rule the path it will walk, its stage and pins, and its download window.

    Query: device_type, brand, model, revision, locale, mac, serial, reported_version,
    address (the client address of its checks), zone (internal or external), at (a time;
    default now)."""
    at = text(query, "at")
    if at is not None:
        try:
            now = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError as e:
            raise InputError(f"at is a time like 2026-01-10T21:00:00Z, not {at!r}") from e
        if now.utcoffset() is None:
            raise InputError("at needs its UTC offset (2026-01-10T21:00:00Z)")
    zone = text(query, "zone") or "internal"
    if zone not in {z.value for z in Zone}:
        raise InputError(f"zone is internal or external, not {zone!r}")
    try:
        mac, serial = text(query, "mac"), text(query, "serial")
        request = DeviceRequest(
            device_type=text(query, "device_type") or "UCPhone",
            brand=text(query, "brand", True) or "",
            model=text(query, "model", True) or "",
            revision=text(query, "revision") or "A",
            locale=text(query, "locale") or "ENU",
            mac=normalise_mac(mac) if mac else None,
            serial=normalise_serial(serial) if serial else None,
            version=text(query, "reported_version"),
            zone=Zone(zone),
            address=text(query, "address"),
        )
    except InvalidIdentifier as e:
        raise InputError(str(e)) from e
    catalog, policy = store.catalog(), store.rollout_policy()
    decision = decide(request, catalog, policy, now, request.address)
    return {
        "at": iso_utc(now),
        "reason": decision.reason.value,
        "detail": decision.detail,
        "offers": [
            {
                "rule_id": o.rule.id,
                "rule": str(o.rule.key),
                "guid": o.rule.guid,
                "version": o.version,
                "files": [
                    {"path": str(f.path), "size": f.size, "sha256": f.sha256} for f in o.files
                ],
            }
            for o in decision.offers
        ],
        "bucket": policy.bucket(request.mac, request.serial),
        "pins": [pin_json(p) for p in policy.pins_for(request.mac, request.serial)],
        "window": _window(policy, request, now),
        "rules": [
            _rule_path(store, r, request, catalog, policy, now)
            for r in matching_rules(request, catalog)
        ],
    }


def _window(policy: RolloutPolicy, request: DeviceRequest, now: datetime) -> dict[str, Any] | None:
    if request.zone is Zone.EXTERNAL:
        if policy.external is None:
            return None
        return {
            "network": "external",
            "label": policy.external_label,
            "open": policy.external.is_open(now),
        }
    network = policy.network_for(request.address)
    if network is None:
        return None
    return {
        "network": str(network.network),
        "label": network.label,
        "open": network.windows.is_open(now),
    }


def _rule_path(
    store: Store,
    rule: Rule,
    request: DeviceRequest,
    catalog: Catalog,
    policy: RolloutPolicy,
    now: datetime,
) -> dict[str, Any]:
    alone = decide(
        request, dataclasses.replace(catalog, rules=(rule,)), policy, now, request.address
    )
    held = next(
        (
            p.version
            for p in policy.pins_for(request.mac, request.serial)
            if p.version and p.covers(rule.key.update_type)
        ),
        None,
    )
    test = is_test_device(request, catalog)
    target = held or (rule.pending_version if test and rule.pending_version else None)
    target = target or rule.approved_version
    staging = store.staging(rule.id)
    stage = None
    if staging is not None and staging.approval.applies_to(rule.key, rule.approved_version):
        a = staging.approval
        stage = {
            "stage": a.stage,
            "share": a.share,
            "paused": a.paused,
            "in_stage": a.includes(policy.bucket(request.mac, request.serial)),
        }
    return {
        "rule_id": rule.id,
        "rule": str(rule.key),
        "reason": alone.reason.value,
        "target": target,
        "path": list(upgrade_path(policy, rule.key, request.version, target)) if target else [],
        "stage": stage,
    }
