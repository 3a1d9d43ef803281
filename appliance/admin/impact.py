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
    DowngradeRefused,
    LifecycleError,
    NeedsForce,
    Reason,
    check_approval,
    choose_update,
    is_test_device,
    matching_rules,
    rule_after,
)
from appliance.model import Catalog, Device, DeviceRequest, Rule


@dataclass(frozen=True)
class Offered:
    version: str
    devices: int
    test_devices: int = 0  # of them, test devices


@dataclass(frozen=True)
class RuleLine:
    """One rule the action changes, for the confirmation's list."""

    rule_id: int
    text: str  # "Polycom CX600 ENU: approved 4.0.7577.4366 → 4.0.7577.4398"


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
    current_after: tuple[Offered, ...] = ()  # the up-to-date ones, by the version they run
    left_after: Offered | None = None  # offered nothing, and not up to date (version "")
    lines: tuple[RuleLine, ...] = ()  # the rules changed, each as a line
    needs_force: tuple[int, ...] = ()  # skipped rules that forcing the action would change
    forced: bool = False  # worked out with force
    needs_downgrade: tuple[int, ...] = ()  # skipped: approvals that would move a rule back

    def summary(self) -> str:
        """What the action does to the known phones, as an admin would say it."""
        if not self.rule_ids:
            return f"{self.action.value.capitalize()} applies to none of the selected rules."
        if not self.devices:
            return (
                "No phone known to the appliance uses these rules yet: the change reaches "
                "phones as they check in."
            )
        parts = []
        if self.after:
            first, *rest = self.after
            text = f"{_who(first)} will be offered {first.version}"
            for o in rest:
                text += f", {_who(o)} {o.version}"
            whose = "its" if sum(o.devices for o in self.after) == 1 else "their"
            parts.append(text + f" at {whose} next check")
        for o in self.current_after:
            parts.append(f"{_who(o)} already {_s(o.devices, 'run')} {o.version}")
        left = self.left_after
        if left is not None and left.devices:
            n = left.devices
            parts.append(
                f"{_who(left)} will be offered no update and {_s(n, 'keep')} the firmware "
                f"{'it' if n == 1 else 'they'} {_s(n, 'run')}"
            )
        if not parts:
            return "Nothing changes for the known phones."
        text = "; ".join(parts)
        return text[0].upper() + text[1:] + "."


def _who(o: Offered) -> str:
    """`12 phones`, `3 test devices`, `12 phones (3 of them test devices)`."""
    n, tests = o.devices, o.test_devices
    if tests == n:
        return f"{n} test device" + ("" if n == 1 else "s")
    phones = f"{n} phone" + ("" if n == 1 else "s")
    if not tests:
        return phones
    return phones + (
        " (1 of them a test device)" if tests == 1 else f" ({tests} of them test devices)"
    )


def _s(n: int, verb: str) -> str:
    """The verb for n subjects: `runs` for one, `run` for several."""
    return verb + "s" if n == 1 else verb


def rule_label(rule: Rule) -> str:
    """A rule as an admin names it: brand, model, locale, and what else tells it apart."""
    k = rule.key
    label = f"{k.brand} {k.model} {k.locale}"
    if k.revision.upper() != "A":
        label += f" rev. {k.revision}"
    if k.update_type.upper() != "CPE":
        label += f" {k.update_type}"
    return label


def rule_line(action: Action, before: Rule, after: Rule | None) -> str:
    """What the action does to one rule, in a line: its approved version before → after."""
    head = f"{rule_label(before)}: "
    if after is None:
        had = [
            f"{name} {v}"
            for name, v in (
                ("approved", before.approved_version),
                ("pending", before.pending_version),
            )
            if v
        ]
        return head + "rule removed" + (f" ({', '.join(had)})" if had else "")
    if action is Action.RESET:
        stays = after.approved_version
        kept = f"{stays} stays approved" if stays else "no version approved"
        return head + f"pending {before.pending_version} rejected; {kept}"
    old, new = before.approved_version or "no version", after.approved_version or "no version"
    return head + f"{old} → {new}"


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


@dataclass(frozen=True)
class _After:
    catalog: Catalog
    replaced: dict[int, Rule | None]  # the rules changed: id -> after (None: removed)
    skipped: list[tuple[int, str]]
    needs_force: list[int]
    needs_downgrade: list[int]


def catalog_after(
    catalog: Catalog,
    action: Action,
    selected: Iterable[Rule],
    force: bool = False,
    allow_downgrade: bool = False,
) -> _After:
    """The catalogue after `action` on `selected`, the rules changed, and those skipped
    (an approval that would move a rule back too, unless `allow_downgrade`)."""
    replaced: dict[int, Rule | None] = {}
    skipped: list[tuple[int, str]] = []
    needs_force: list[int] = []
    needs_downgrade: list[int] = []
    for rule in selected:
        try:
            if action is Action.APPROVE and rule.pending_version is not None:
                check_approval(rule, rule.pending_version, allow_downgrade)
            replaced[rule.id] = rule_after(action, rule)
        except DowngradeRefused as e:
            needs_downgrade.append(rule.id)
            skipped.append((rule.id, str(e)))
        except NeedsForce as e:
            needs_force.append(rule.id)
            if force:
                replaced[rule.id] = rule_after(action, rule, force=True)
            else:
                skipped.append((rule.id, str(e)))
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
    return _After(after_catalog, replaced, skipped, needs_force, needs_downgrade)


def preview(
    action: Action,
    selected: Sequence[Rule],
    catalog: Catalog,
    devices: Iterable[Device],
    force: bool = False,
    allow_downgrade: bool = False,
) -> Impact:
    """What `action` on `selected` changes for the known devices (forced with `force`,
    approving downgrades with `allow_downgrade`)."""
    done = catalog_after(catalog, action, selected, force, allow_downgrade)
    after_catalog = done.catalog
    ids = {r.id for r in selected}
    before_count: Counter[str] = Counter()
    after_count: Counter[str] = Counter()
    current: Counter[str] = Counter()
    tests: Counter[tuple[str, str]] = Counter()  # (group, version) -> test devices
    matched = changed = 0
    for device in devices:
        request = device_request(device)
        if request is None:
            continue
        if not any(r.id in ids for r in matching_rules(request, catalog)):
            continue
        matched += 1
        test = is_test_device(request, catalog)
        now = _offers(request, catalog, ids)
        then = _offers(request, after_catalog, ids)
        before_count.update(now)
        after_count.update(then)
        if now != then:
            changed += 1
        group: tuple[str, str]
        if then:
            group = ("offered", then[0])
        elif choose_update(request, after_catalog).reason is Reason.UP_TO_DATE:
            group = ("current", request.version or "")
            current[group[1]] += 1
        else:
            group = ("left", "")
        tests.update([group] if test else [])
    left = matched - sum(after_count.values()) - sum(current.values())
    changed_ids = tuple(r.id for r in selected if r.id in done.replaced)
    return Impact(
        action=action,
        rule_ids=changed_ids,
        skipped=tuple(done.skipped),
        devices=matched,
        before=_sorted(before_count),
        after=_sorted(after_count, tests, "offered"),
        up_to_date_after=sum(current.values()),
        changed=changed,
        current_after=_sorted(current, tests, "current"),
        left_after=Offered("", left, tests[("left", "")]) if left > 0 else None,
        lines=tuple(
            RuleLine(r.id, rule_line(action, r, done.replaced[r.id]))
            for r in selected
            if r.id in done.replaced
        ),
        needs_force=tuple(done.needs_force),
        forced=force,
        needs_downgrade=tuple(done.needs_downgrade),
    )


def _offers(request: DeviceRequest, catalog: Catalog, ids: set[int]) -> tuple[str, ...]:
    decision = choose_update(request, catalog)
    return tuple(sorted(o.version for o in decision.offers if o.rule.id in ids))


def _sorted(
    counts: Counter[str], tests: Counter[tuple[str, str]] | None = None, group: str = ""
) -> tuple[Offered, ...]:
    ordered = sorted(counts.items(), key=lambda i: (-i[1], i[0]))
    return tuple(Offered(v, n, tests[(group, v)] if tests else 0) for v, n in ordered)
