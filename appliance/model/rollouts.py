"""The rollout policy: plain records of what an admin asked for around the rule lifecycle.

The records live here, beside the catalogue's, so that the store can keep and return
them; the rollout decision and the stage logic that read them are in `appliance.catalogue`.

`RolloutPolicy()` (everything empty) asks for nothing, and the rollout decision then gives
exactly `choose_update`'s answer (docs/rollouts.md). Each record checks itself when built
and raises `RolloutError` naming what is wrong, so a policy that exists is a valid one:

- `UpgradeStep`: per model (optionally revision and update type), "a device reporting a
  version below `below` is first offered `offer`". Steps chain: the device takes the
  lowest step it qualifies for, restarts, checks again and walks on. `offer` must not be
  below `below`, or a device would take it and qualify again forever.
- `StagedApproval`: the approval of `version` on one rule, given to a rising share of the
  fleet (5 -> 25 -> 100 %), with the current stage and a paused flag. It names the
  version it stages: once the rule's approved version is another one (a new approval, a
  restore), the record no longer applies, so a stale record can never hold devices back.
- `DownloadWindows` per internal network (`NetworkPolicy`, with the caps the download path
  will enforce) and for the external zone (windows.py).
- `Pin`: a device, by MAC or serial, held on a version or excluded, always with a reason.

Buckets: a device's place in a staged rollout is the SHA-256 of the policy's salt and its
normalised MAC (else its serial), read as a number and mapped to 0..9999. It is stable
(the same device always lands in the same bucket, and a device first seen after the
approval is placed by the same hash, so nothing misses the rollout), needs no stored
assignment, and is uniform enough that a 5 % stage holds about 5 % of any fleet. One salt
for all rules means the first 5 % is the same phones in every rollout, a known early
group as in update rings; changing the salt reshuffles everybody. A device with neither
MAC nor serial cannot be placed: it counts as being in the last bucket, so it gets the
version only when a stage reaches 100 %.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

from appliance.identifiers import (
    InvalidIdentifier,
    is_version,
    normalise_mac,
    normalise_serial,
    same_version,
    version_tuple,
)
from appliance.model.records import IdentifierKind, RuleKey
from appliance.model.windows import DownloadWindows, Network, parse_address

BUCKETS = 10_000  # a stage's share resolves to 0.01 %
NO_IDENTIFIER_BUCKET = BUCKETS - 1  # where a device without MAC or serial counts
DEFAULT_SALT = "ucupdates-rollout"
NETWORK_MEMO_SIZE = 4096  # client addresses whose network policy is remembered


class RolloutError(ValueError):
    """A policy record that does not make sense; str() says what and why."""


def _folded(text: str | None) -> str | None:
    return None if text is None else text.strip().casefold()


def _dotted(version: str, what: str) -> str:
    version = version.strip()
    if not is_version(version):
        raise RolloutError(f"{what} {version!r} is not a dotted version like 4.0.7577.4387")
    return version


@dataclass(frozen=True)
class UpgradeStep:
    """Devices of this model reporting a version below `below` are first offered `offer`."""

    device_type: str
    brand: str
    model: str
    below: str
    offer: str
    revision: str | None = None  # None: every revision of the model
    update_type: str | None = None  # None: every update type of the model

    def __post_init__(self) -> None:
        below = _dotted(self.below, "upgrade step threshold")
        offer = _dotted(self.offer, "upgrade step version")
        if version_tuple(offer) < version_tuple(below):
            raise RolloutError(
                f"upgrade step offers {offer} below its threshold {below}: a device would"
                " take it and be sent to it again"
            )

    def matches(self, key: RuleKey) -> bool:
        """Whether the step concerns devices of the rule `key` (case-insensitive)."""
        mine = (self.device_type, self.brand, self.model)
        return (
            tuple(_folded(v) for v in mine) == key.folded()[:3]
            and (self.revision is None or _folded(self.revision) == key.folded()[3])
            and (self.update_type is None or _folded(self.update_type) == key.folded()[5])
        )


@dataclass(frozen=True)
class StagedApproval:
    """The approval of `version` on rule `rule`, given to `stages[stage]` % of the devices."""

    rule: RuleKey
    version: str
    stages: tuple[float, ...] = (5.0, 25.0, 100.0)  # percent of devices, rising
    stage: int = 0  # index into stages: the current share
    paused: bool = False  # no device is newly offered the version while paused
    _threshold: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.stages:
            raise RolloutError("a staged approval needs at least one stage")
        if any(not 0 <= s <= 100 for s in self.stages):
            raise RolloutError(f"stage shares are percentages from 0 to 100, not {self.stages}")
        if any(b <= a for a, b in zip(self.stages, self.stages[1:], strict=False)):
            raise RolloutError(f"stage shares must rise from stage to stage, not {self.stages}")
        if not 0 <= self.stage < len(self.stages):
            raise RolloutError(f"stage {self.stage} is not one of the {len(self.stages)} stages")
        object.__setattr__(self, "_threshold", round(self.share * BUCKETS / 100))

    @property
    def share(self) -> float:
        return self.stages[self.stage]

    @property
    def threshold(self) -> int:
        """Buckets below this are in the current stage (0: nobody, BUCKETS: everybody)."""
        return self._threshold

    def includes(self, bucket: int) -> bool:
        return bucket < self._threshold

    def applies_to(self, key: RuleKey, approved: str | None) -> bool:
        """Whether this record stages the rule's current approval (not a stale one)."""
        return key.folded() == self.rule.folded() and same_version(approved, self.version)


@dataclass(frozen=True)
class NetworkPolicy:
    """What an internal network's phones may download, and when.

    The caps are read by the download path (concurrent downloads, bytes a second for the
    whole network), not by the decision: a phone past a cap is told to retry, not refused
    its update.
    """

    network: Network
    windows: DownloadWindows
    max_downloads: int | None = None
    max_bytes_per_second: int | None = None
    label: str = field(default="", init=False, compare=False)  # "10.1.0.0/16, 22:00-05:00 UTC"

    def __post_init__(self) -> None:
        for name in ("max_downloads", "max_bytes_per_second"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RolloutError(f"{name} of {self.network} must be at least 1, not {value}")
        object.__setattr__(self, "label", f"{self.network}, {self.windows}")


class PinAction(StrEnum):
    HOLD = "hold"  # offered this version and no other
    EXCLUDE = "exclude"  # offered nothing


@dataclass(frozen=True)
class Pin:
    """A device, by MAC or serial, held on a version or excluded from updates."""

    kind: IdentifierKind
    identifier: str  # normalised (identifiers.py)
    action: PinAction
    reason: str  # why, for the event log and the detail line; required
    version: str | None = None  # for HOLD
    update_type: str | None = None  # None: every update type the device has

    def __post_init__(self) -> None:
        normalise = normalise_mac if self.kind is IdentifierKind.MAC else normalise_serial
        try:
            normal = normalise(self.identifier)
        except InvalidIdentifier as e:
            raise RolloutError(str(e)) from e
        if normal != self.identifier:
            raise RolloutError(f"pin identifier {self.identifier!r} is not normalised ({normal})")
        if not self.reason.strip():
            raise RolloutError(f"a pin on {self.identifier} needs a reason")
        if (self.action is PinAction.HOLD) != (self.version is not None):
            raise RolloutError(
                f"a {self.action} pin on {self.identifier}: hold needs a version,"
                " exclude takes none"
            )
        if self.version is not None:
            _dotted(self.version, "pinned version")

    def covers(self, update_type: str) -> bool:
        return self.update_type is None or _folded(self.update_type) == _folded(update_type)


@dataclass(frozen=True)
class RolloutPolicy:
    """Everything a rollout decision reads besides the request and the catalogue."""

    paths: tuple[UpgradeStep, ...] = ()
    staged: tuple[StagedApproval, ...] = ()
    networks: tuple[NetworkPolicy, ...] = ()
    external: DownloadWindows | None = None  # None: external phones are always in a window
    # the external zone's caps, as a network's (read by the download path, not the decision)
    external_max_downloads: int | None = None
    external_max_bytes_per_second: int | None = None
    pins: tuple[Pin, ...] = ()
    salt: str = DEFAULT_SALT
    _pins: dict[tuple[IdentifierKind, str], tuple[Pin, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _networks: tuple[NetworkPolicy, ...] = field(default=(), init=False, repr=False, compare=False)
    external_label: str = field(default="", init=False, repr=False, compare=False)
    _seen: dict[str | None, NetworkPolicy | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        rules = [s.rule.folded() for s in self.staged]
        if len(set(rules)) != len(rules):
            raise RolloutError("two staged approvals name the same rule")
        nets = [n.network for n in self.networks]
        if len(set(nets)) != len(nets):
            raise RolloutError("two network policies name the same network")
        seen: set[tuple[IdentifierKind, str, str | None]] = set()
        for p in self.pins:
            spot = (p.kind, p.identifier, _folded(p.update_type))
            if spot in seen:
                raise RolloutError(f"two pins on {p.identifier} for the same update type")
            seen.add(spot)
            self._pins.setdefault((p.kind, p.identifier), ())
            self._pins[p.kind, p.identifier] += (p,)
        # most specific network first: a /24 inside a /16 has its own windows
        by_prefix = sorted(self.networks, key=lambda n: -n.network.prefixlen)
        object.__setattr__(self, "_networks", tuple(by_prefix))
        object.__setattr__(self, "external_label", f"external zone, {self.external}")

    @property
    def empty(self) -> bool:
        return not (self.paths or self.staged or self.networks or self.external or self.pins)

    def pins_for(self, mac: str | None, serial: str | None) -> tuple[Pin, ...]:
        """The pins naming a device: those by MAC first, then those by serial."""
        found: tuple[Pin, ...] = ()
        if mac is not None:
            found += self._pins.get((IdentifierKind.MAC, mac), ())
        if serial is not None:
            found += self._pins.get((IdentifierKind.SERIAL, serial), ())
        return found

    def network_for(self, address: str | None) -> NetworkPolicy | None:
        """The most specific network policy holding `address`; None for no address.

        Remembered per address (a bounded memo, not state: the answer depends on the
        address alone), as parsing one costs more than the rest of the rollout facts."""
        try:
            return self._seen[address]
        except KeyError:
            pass
        parsed = parse_address(address)
        found = None
        if parsed is not None:
            found = next((n for n in self._networks if parsed in n.network), None)
        if len(self._seen) >= NETWORK_MEMO_SIZE:
            self._seen.clear()
        self._seen[address] = found
        return found

    def bucket(self, mac: str | None, serial: str | None) -> int:
        return bucket(self.salt, mac, serial)


def bucket(salt: str, mac: str | None, serial: str | None) -> int:
    """A device's stable place 0..BUCKETS-1: SHA-256 of the salt and its MAC, else serial."""
    if mac is not None:
        name = f"mac:{mac}"
    elif serial is not None:
        name = f"serial:{serial}"
    else:
        return NO_IDENTIFIER_BUCKET
    digest = hashlib.sha256(f"{salt}\n{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS
