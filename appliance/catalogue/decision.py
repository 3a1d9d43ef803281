"""Which update a device gets: a pure function of its request and a catalogue snapshot.

docs/protocol.md §6. Ordinary devices get a rule's ApprovedVersion; test devices (by MAC
or serial) get its PendingVersion when there is one, else the approved one. The chosen
version is offered whenever it differs from what the device reports, even when it is older
(that is how a restore rolls devices back). No I/O, no clock: callers pass everything in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from appliance.identifiers import is_version, same_version, version_tuple
from appliance.model import Catalog, DeviceRequest, Rule, UpdateFile


class Reason(StrEnum):
    NO_RULE = "no-rule"  # no rule matches the device
    NO_VERSION = "no-version"  # a rule, but no approved version (nor pending, for a test device)
    UP_TO_DATE = "up-to-date"  # the device already runs the chosen version
    APPROVED = "approved"  # offered the approved version
    PENDING_TEST_DEVICE = "pending-test-device"  # a test device offered the pending version
    MISSING_FILES = "missing-files"  # the chosen version has no files: never offered
    BROKEN_FILES = "broken-files"  # a file of the chosen version fails its hash: not offered


# When nothing is offered, the overall reason is the most telling of the rules' reasons:
# an integrity problem first, then "already runs it", then "nothing approved".
_NO_OFFER_PRIORITY = (
    Reason.BROKEN_FILES,
    Reason.MISSING_FILES,
    Reason.UP_TO_DATE,
    Reason.NO_VERSION,
)


@dataclass(frozen=True)
class Offer:
    """One update (one rule, so one update type) offered to the device."""

    rule: Rule
    version: str
    files: tuple[UpdateFile, ...]
    reason: Reason  # APPROVED or PENDING_TEST_DEVICE
    reported: str | None  # what the device said it runs for this update; None if unknown
    rollback: bool  # the offered version is older than the reported one


@dataclass(frozen=True)
class Decision:
    offers: tuple[Offer, ...]  # one per matching rule that has something to offer
    reason: Reason  # the first offer's reason, else the most telling reason of the rules
    detail: str  # one human line, for logs and the audit trail

    @property
    def downloads(self) -> int:
        return len(self.offers)


@dataclass(frozen=True)
class _Outcome:
    offer: Offer | None
    reason: Reason
    detail: str


def is_test_device(request: DeviceRequest, catalog: Catalog) -> bool:
    """Listed as a test device by MAC or by serial number (both already normalised)."""
    return (request.mac is not None and request.mac in catalog.test_macs) or (
        request.serial is not None and request.serial in catalog.test_serials
    )


def matching_rules(request: DeviceRequest, catalog: Catalog) -> tuple[Rule, ...]:
    """Rules whose five device fields match the request, ignoring case; one per update type."""
    wanted = tuple(
        v.strip().casefold()
        for v in (
            request.device_type,
            request.brand,
            request.model,
            request.revision,
            request.locale,
        )
    )
    found = [r for r in catalog.rules if r.key.folded()[:5] == wanted]
    return tuple(sorted(found, key=lambda r: (r.key.folded(), r.id)))


def reported_version(request: DeviceRequest, image_names: frozenset[str]) -> str | None:
    """The version the device reports for an update whose images are `image_names` (folded).

    The module whose file name is one of the images; else the top-level version; else the
    only module's version; else None (unknown, so the update is offered).
    """
    for module in request.modules:
        if module.file_name.strip().casefold() in image_names and _given(module.version):
            return module.version
    if _given(request.version):
        return request.version
    if len(request.modules) == 1 and _given(request.modules[0].version):
        return request.modules[0].version
    return None


def answer_key(request: DeviceRequest, catalog: Catalog) -> tuple[object, ...]:
    """Everything of `request` that `choose_update` reads, for remembering answers.

    Requests with equal keys get the same offers and reason from the same catalogue; the
    MAC and serial count only as "is it a test device" (they, and the fields' spelling,
    show only in the `detail` line). A field the decision starts to read must join the key:
    tests/test_decision.py checks it.
    """
    return (
        request.device_type.casefold(),
        request.brand.casefold(),
        request.model.casefold(),
        request.revision.casefold(),
        request.locale.casefold(),
        request.modules,
        request.version,
        is_test_device(request, catalog),
    )


def choose_update(request: DeviceRequest, catalog: Catalog) -> Decision:
    test = is_test_device(request, catalog)
    who = describe_device(request, test)
    rules = matching_rules(request, catalog)
    if not rules:
        where = "/".join(
            (request.device_type, request.brand, request.model, request.revision, request.locale)
        )
        return Decision((), Reason.NO_RULE, f"{who}: no rule for {where}")
    outcomes = [_consider(rule, request, catalog, test, who) for rule in rules]
    offers = tuple(o.offer for o in outcomes if o.offer is not None)
    if offers:
        reason = offers[0].reason
    else:
        reason = next(r for r in _NO_OFFER_PRIORITY if any(o.reason is r for o in outcomes))
    return Decision(offers, reason, "; ".join(o.detail for o in outcomes))


def _consider(
    rule: Rule, request: DeviceRequest, catalog: Catalog, test: bool, who: str
) -> _Outcome:
    if test and rule.pending_version:
        version, label, reason = rule.pending_version, "pending", Reason.PENDING_TEST_DEVICE
    elif rule.approved_version:
        version, label, reason = rule.approved_version, "approved", Reason.APPROVED
    else:
        wanted = "pending or approved" if test else "approved"
        return _Outcome(None, Reason.NO_VERSION, f"{who}: rule {rule.key} has no {wanted} version")

    reported = reported_version(request, image_names(rule, version, catalog))
    if same_version(version, reported):
        return _Outcome(
            None, Reason.UP_TO_DATE, f"{who}: already runs {label} {version} (rule {rule.key})"
        )
    offer, problem, detail = offer_or_problem(
        rule, version, f"{label} {version}", reported, catalog, who, reason
    )
    return _Outcome(offer, problem or reason, detail)


def offer_or_problem(
    rule: Rule,
    version: str,
    what: str,
    reported: str | None,
    catalog: Catalog,
    who: str,
    reason: Reason,
) -> tuple[Offer | None, Reason | None, str]:
    """`version` of `rule` (described as `what`) offered with `reason`, or why it cannot be
    (its files missing or broken) and the detail line either way. The rollout decision
    words its offers with it too, so a policy that changes nothing changes no word."""
    files = catalog.files_for(rule.key, version)
    if not files:
        return (
            None,
            Reason.MISSING_FILES,
            f"{who}: {what} of rule {rule.key} has no files in the catalogue; not offered",
        )
    if (rule.key.folded(), version) in catalog.broken:
        return (
            None,
            Reason.BROKEN_FILES,
            f"{who}: {what} of rule {rule.key} has a stored file that fails verification;"
            " not offered",
        )
    rollback = is_older(version, reported)
    reported_text = f"reported {reported}" if reported is not None else "unknown reported version"
    change = "rolls back from" if rollback else "differs from"
    offer = Offer(rule, version, files, reason, reported, rollback)
    return offer, None, f"{who}: {what} {change} {reported_text} (rule {rule.key})"


def describe_device(request: DeviceRequest, test: bool) -> str:
    """How the detail lines name the device: its MAC, else its serial number."""
    kind = "test device" if test else "device"
    if request.mac:
        return f"{kind} {request.mac}"
    if request.serial:
        return f"{kind} serial {request.serial}"
    return f"{kind} without MAC or serial"


def image_names(rule: Rule, version: str, catalog: Catalog) -> frozenset[str]:
    """Folded image file names of the update: those of the chosen version and of the rule's
    other versions, so a device's module is still recognised when the chosen version's
    files are missing (then it can be reported up to date rather than missing files)."""
    return frozenset(
        f.file_name.strip().casefold()
        for v in rule.versions() | {version}
        for f in catalog.files_for(rule.key, v)
    )


def _given(version: str | None) -> bool:
    return version is not None and version.strip() != ""


def is_older(chosen: str, reported: str | None) -> bool:
    """`chosen` is an older version than the one reported (both dotted versions)."""
    if reported is None:
        return False
    a, b = chosen.strip(), reported.strip()
    return is_version(a) and is_version(b) and version_tuple(a) < version_tuple(b)
