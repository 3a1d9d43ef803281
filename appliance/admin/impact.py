"""The impact of a rule action before it is taken: which known devices will be offered what.

A pure function: the catalogue as it is, the same catalogue as it would be after the
action, and the decision (`choose_update`) run for every device in the inventory against
both. No I/O; the API passes the store's snapshot in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from appliance.catalogue import (
    Action,
    LifecycleError,
    Reason,
    choose_update,
    matching_rules,
    rule_after,
)
from appliance.model import Catalog, Device, DeviceRequest, Rule


@dataclass(frozen=True)
class Offered:
    version: str
    devices: int


@dataclass(frozen=True)
class Impact:
    action: Action
    rule_ids: tuple[int, ...]  # the rules the action changes
    skipped: tuple[tuple[int, str], ...]  # (rule id, why the action does not apply)
    devices: int  # known devices that the selected rules apply to
    before: tuple[Offered, ...]  # what they are offered now, by version
    after: tuple[Offered, ...]  # what they will be offered after the action
    up_to_date_after: int  # devices that will already run what their rule names
    changed: int  # devices whose offer changes

    def summary(self) -> str:
        """One sentence for a confirmation dialog."""
        if not self.rule_ids:
            return f"{self.action.value.capitalize()} applies to none of the selected rules."
        if not self.devices:
            return "No known device is affected: none of them matches the selected rules."
        offered = ", ".join(f"{o.devices} offered {o.version}" for o in self.after)
        parts = [offered or "none offered an update"]
        if self.up_to_date_after:
            parts.append(f"{self.up_to_date_after} already up to date")
        return (
            f"Of {self.devices} known device(s): " + "; ".join(parts) + f" ({self.changed} change)."
        )


def device_request(device: Device) -> DeviceRequest | None:
    """The update check a device in the inventory sent, as far as the inventory knows it."""
    fields = (device.device_type, device.brand, device.model, device.revision, device.locale)
    if any(f is None for f in fields):
        return None
    device_type, brand, model, revision, locale = (str(f) for f in fields)
    return DeviceRequest(
        device_type=device_type,
        brand=brand,
        model=model,
        revision=revision,
        locale=locale,
        mac=device.mac,
        serial=device.serial,
        version=device.version,
    )


def catalog_after(
    catalog: Catalog, action: Action, selected: Iterable[Rule]
) -> tuple[Catalog, list[int], list[tuple[int, str]]]:
    """The catalogue after `action` on `selected`, the ids changed, and the ids skipped."""
    replaced: dict[int, Rule | None] = {}
    changed: list[int] = []
    skipped: list[tuple[int, str]] = []
    for rule in selected:
        try:
            replaced[rule.id] = rule_after(action, rule)
            changed.append(rule.id)
        except LifecycleError as e:
            skipped.append((rule.id, str(e)))
    rules = []
    for rule in catalog.rules:
        if rule.id in replaced:
            after = replaced[rule.id]
            if after is not None:
                rules.append(after)
        else:
            rules.append(rule)
    after_catalog = Catalog(
        rules=tuple(rules),
        files=catalog.files,
        test_macs=catalog.test_macs,
        test_serials=catalog.test_serials,
    )
    return after_catalog, changed, skipped


def preview(
    action: Action, selected: Sequence[Rule], catalog: Catalog, devices: Iterable[Device]
) -> Impact:
    after_catalog, changed_ids, skipped = catalog_after(catalog, action, selected)
    ids = {r.id for r in selected}
    before_count: Counter[str] = Counter()
    after_count: Counter[str] = Counter()
    matched = up_to_date = changed = 0
    for device in devices:
        request = device_request(device)
        if request is None:
            continue
        if not any(r.id in ids for r in matching_rules(request, catalog)):
            continue
        matched += 1
        now = _offers(request, catalog, ids)
        then = _offers(request, after_catalog, ids)
        before_count.update(now)
        after_count.update(then)
        if now != then:
            changed += 1
        if not then and choose_update(request, after_catalog).reason is Reason.UP_TO_DATE:
            up_to_date += 1
    return Impact(
        action=action,
        rule_ids=tuple(changed_ids),
        skipped=tuple(skipped),
        devices=matched,
        before=_sorted(before_count),
        after=_sorted(after_count),
        up_to_date_after=up_to_date,
        changed=changed,
    )


def _offers(request: DeviceRequest, catalog: Catalog, ids: set[int]) -> tuple[str, ...]:
    decision = choose_update(request, catalog)
    return tuple(sorted(o.version for o in decision.offers if o.rule.id in ids))


def _sorted(counts: Counter[str]) -> tuple[Offered, ...]:
    return tuple(Offered(v, n) for v, n in sorted(counts.items(), key=lambda i: (-i[1], i[0])))
