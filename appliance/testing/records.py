"""Records for the decision and the inventory: keys, rules, files, catalogues, requests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from appliance.model import (
    Catalog,
    Device,
    DeviceRequest,
    Rule,
    RuleKey,
    RuleState,
    UpdateFile,
    Zone,
)

STAMP = "2013-04-02T00:00:00Z"  # the timestamp of built rules, updates and files

# Versions of the Lync Phone Edition firmware, oldest first (cumulative updates 6-8).
CU6 = "4.0.7577.4100"
CU7 = "4.0.7577.4366"
CU8 = "4.0.7577.4387"

CX600 = RuleKey("UCPhone", "Polycom", "CX600", "A", "ENU", "CPE")
PHONE_MAC = "00-04-F2-A1-B2-C3"  # normalised, as a DeviceRequest holds it
PHONE_SERIAL = "64167F1234"


def rule_key(update_type: str = "CPE", **fields: str) -> RuleKey:
    """The CX600 ENU key with `fields` (device_type, brand, model, revision, locale) changed."""
    return dataclasses.replace(CX600, update_type=update_type, **fields)


def make_rule(
    approved: str | None = None,
    pending: str | None = None,
    restore: str | None = None,
    *,
    key: RuleKey = CX600,
    rule_id: int = 1,
    state: RuleState | None = None,
    updated_at: str = STAMP,
) -> Rule:
    """A rule as the store returns it; unless given, pending if it has a pending version."""
    if state is None:
        state = RuleState.PENDING if pending else RuleState.APPROVED
    return Rule(rule_id, key, approved, pending, restore, state, updated_at)


def update_files(version: str, *names: str, key: RuleKey = CX600) -> list[UpdateFile]:
    """The images (default CPE.nbt) of one update, each with its `.cat` signature named."""
    return [
        UpdateFile(
            key=key,
            version=version,
            file_name=name,
            signature_file_name=name.rsplit(".", 1)[0] + ".cat",
            size=1024,
            sha256="0" * 64,
            timestamp=STAMP,
            path=key.store_dir(version) / name,
        )
        for name in names or ("CPE.nbt",)
    ]


def catalog_of(
    *rules: Rule,
    files: Iterable[UpdateFile] | None = None,
    test_macs: Iterable[str] = (),
    test_serials: Iterable[str] = (),
) -> Catalog:
    """A catalogue of `rules`; unless given, every version a rule references has CPE.nbt."""
    if files is None:
        files = [f for r in rules for v in sorted(r.versions()) for f in update_files(v, key=r.key)]
    return Catalog(tuple(rules), tuple(files), frozenset(test_macs), frozenset(test_serials))


def device_request(**overrides: Any) -> DeviceRequest:
    """A Polycom CX600 (revision A, ENU) on CU7 asking for updates; fields as DeviceRequest's."""
    fields: dict[str, Any] = {
        "device_type": "UCPhone",
        "brand": "Polycom",
        "model": "CX600",
        "revision": "A",
        "locale": "ENU",
        "mac": PHONE_MAC,
        "serial": PHONE_SERIAL,
        "version": CU7,
    }
    fields.update(overrides)
    return DeviceRequest(**fields)


def seen_device(mac: str = PHONE_MAC, version: str | None = CU7, **overrides: Any) -> Device:
    """A CX600 in the inventory, as the store keeps it after its update checks."""
    fields: dict[str, Any] = {
        "identity": mac,
        "mac": mac,
        "serial": None,
        "device_type": "UCPhone",
        "brand": "Polycom",
        "model": "CX600",
        "revision": "A",
        "locale": "ENU",
        "version": version,
        "zone": Zone.INTERNAL,
        "address": "10.0.0.1",
        "user_id": None,
        "first_seen": "2026-01-01T00:00:00Z",
        "last_seen": "2026-01-02T00:00:00Z",
    }
    fields.update(overrides)
    return Device(**fields)
