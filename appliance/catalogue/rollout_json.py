"""Rollout records as JSON objects: for the event log, the JSON API and `--json` output.

Times are the store's (`2026-12-06T07:30:00Z`); a timedelta is whole seconds; versions,
networks and windows are their text forms.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from appliance.model import (
    DownloadWindows,
    Entry,
    ExternalPolicy,
    NetworkPolicy,
    OfferCount,
    OfferRecord,
    Pin,
    Staging,
    UpgradeStep,
)


def step_json(step: UpgradeStep) -> dict[str, Any]:
    return asdict(step)


def windows_json(windows: DownloadWindows | None) -> dict[str, Any] | None:
    if windows is None:
        return None
    return {"time_zone": windows.zone, "windows": [str(w) for w in windows.windows]}


def network_json(policy: NetworkPolicy) -> dict[str, Any]:
    return {
        "network": str(policy.network),
        **(windows_json(policy.windows) or {}),
        "max_downloads": policy.max_downloads,
        "max_bytes_per_second": policy.max_bytes_per_second,
    }


def external_json(policy: ExternalPolicy) -> dict[str, Any]:
    return {
        **(windows_json(policy.windows) or {"time_zone": None, "windows": []}),
        "max_downloads": policy.max_downloads,
        "max_bytes_per_second": policy.max_bytes_per_second,
    }


def pin_json(pin: Pin) -> dict[str, Any]:
    return {
        "kind": pin.kind.value,
        "identifier": pin.identifier,
        "action": pin.action.value,
        "version": pin.version,
        "update_type": pin.update_type,
        "reason": pin.reason,
    }


def staging_json(staging: Staging) -> dict[str, Any]:
    a, sched = staging.approval, staging.schedule
    auto = sched.auto_pause
    return {
        "rule_id": staging.rule_id,
        "rule": str(a.rule),
        "version": a.version,
        "stages": list(a.stages),
        "stage": a.stage,
        "share": a.share,
        "entered_at": staging.entered_at,
        "paused": a.paused,
        "paused_why": staging.paused_why,
        "paused_at": staging.paused_at,
        "soak_seconds": None if sched.soak is None else int(sched.soak.total_seconds()),
        "pause_percent": None if auto is None else auto.max_failing_percent,
        "pause_min": None if auto is None else auto.min_failing,
        "set_by": staging.set_by,
        "set_at": staging.set_at,
    }


def entry_json(entry: Entry[Any]) -> dict[str, Any]:
    """A policy entry (an upgrade step, a network, the external zone, a pin) with who set it."""
    value = entry.value
    if isinstance(value, UpgradeStep):
        body = step_json(value)
    elif isinstance(value, NetworkPolicy):
        body = network_json(value)
    elif isinstance(value, ExternalPolicy):
        body = external_json(value)
    elif isinstance(value, Pin):
        body = pin_json(value)
    else:
        raise TypeError(f"not a rollout policy entry: {value!r}")
    return {**body, "set_by": entry.set_by, "set_at": entry.set_at}


def offer_json(record: OfferRecord) -> dict[str, Any]:
    body = asdict(record)
    body["outcome"] = record.outcome.value
    body["images"] = list(record.images)
    return body


def offer_count_json(count: OfferCount) -> dict[str, Any]:
    return {**asdict(count), "outcome": count.outcome.value}
