"""Rollout records the store keeps besides the policy: how staged approvals move, who set
each policy entry and when, and what each device was offered and what became of it.

`OfferRecord` is one device's latest offer for one rule with its outcome, the success
the next check confirms (docs/rollouts.md): *pending* until the device checks again,
*updated* when it runs the offered version (or a newer one), *stuck* when it still runs
the old one after a number of offers or hours, *reverted* when it went back below a
version it was seen running, *silent* when it was offered the version and then did not
check in for longer than its check interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Generic, TypeVar

from appliance.model.rollouts import (
    DEFAULT_SALT,
    NetworkPolicy,
    Pin,
    RolloutError,
    RolloutPolicy,
    StagedApproval,
    UpgradeStep,
)
from appliance.model.windows import DownloadWindows

T = TypeVar("T")


class Outcome(StrEnum):
    """What became of an offer, as the device's later checks tell it."""

    PENDING = "pending"  # offered; no later check has told yet
    UPDATED = "updated"  # runs the offered version (or a newer one)
    STUCK = "stuck"  # still on the old version after N offers or T hours
    REVERTED = "reverted"  # back below the offered version after having run it
    SILENT = "silent"  # offered, then no check for longer than its check interval


FAILING = frozenset({Outcome.STUCK, Outcome.REVERTED, Outcome.SILENT})


@dataclass(frozen=True)
class StageHealth:
    """The devices of the current stage offered the staged version, by what they did."""

    offered: int
    updated: int = 0  # run what they were offered
    stuck: int = 0  # still on the old version after N offers or T hours
    reverted: int = 0  # went back to an older version
    silent: int = 0  # took it, then stopped checking in for longer than their interval

    @property
    def failing(self) -> int:
        return self.stuck + self.reverted + self.silent


@dataclass(frozen=True)
class AutoPause:
    """Pause when at least `min_failing` devices and `max_failing_percent` % fail."""

    max_failing_percent: float = 5.0
    min_failing: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.max_failing_percent <= 100 or self.min_failing < 1:
            raise RolloutError(
                "auto-pause needs a share from 0 to 100 % and at least 1 failing device,"
                f" not {self.max_failing_percent} % and {self.min_failing}"
            )


@dataclass(frozen=True)
class StageSchedule:
    """How long each stage runs before the next (None: by hand only), and when to pause."""

    soak: timedelta | None = None
    auto_pause: AutoPause | None = AutoPause()

    def __post_init__(self) -> None:
        if self.soak is not None and self.soak <= timedelta(0):
            raise RolloutError(f"a stage's soak time must be positive, not {self.soak}")


@dataclass(frozen=True)
class Staging:
    """A staged approval as the store keeps it: the decision's record, how it moves, since
    when its current stage runs, and why it is paused."""

    rule_id: int
    approval: StagedApproval
    schedule: StageSchedule
    entered_at: str  # when the current stage began
    paused_why: str | None = None
    paused_at: str | None = None
    set_by: str = ""
    set_at: str = ""


@dataclass(frozen=True)
class ExternalPolicy:
    """The external zone's windows and caps (docs/protocol.md §2): its phones, whatever
    their address, follow these instead of a network's."""

    windows: DownloadWindows | None = None  # None: no window, always open
    max_downloads: int | None = None
    max_bytes_per_second: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_downloads", "max_bytes_per_second"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RolloutError(f"{name} of the external zone must be at least 1, not {value}")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A policy entry with who set it and when."""

    value: T
    set_by: str
    set_at: str


@dataclass(frozen=True)
class RolloutEntries:
    """The whole stored rollout policy, with who set what and when."""

    paths: tuple[Entry[UpgradeStep], ...] = ()
    stagings: tuple[Staging, ...] = ()
    networks: tuple[Entry[NetworkPolicy], ...] = ()
    external: Entry[ExternalPolicy] | None = None
    pins: tuple[Entry[Pin], ...] = ()
    salt: str = DEFAULT_SALT

    def policy(self) -> RolloutPolicy:
        """What the rollout decision reads."""
        external = self.external.value if self.external is not None else ExternalPolicy()
        windows = external.windows if external.windows and external.windows.windows else None
        return RolloutPolicy(
            paths=tuple(e.value for e in self.paths),
            staged=tuple(s.approval for s in self.stagings),
            networks=tuple(e.value for e in self.networks),
            external=windows,
            pins=tuple(e.value for e in self.pins),
            salt=self.salt,
            external_max_downloads=external.max_downloads,
            external_max_bytes_per_second=external.max_bytes_per_second,
        )


@dataclass(frozen=True)
class OfferRecord:
    """A device's latest offer for one rule, and what became of it."""

    identity: str  # as the inventory's: the MAC, else `serial:...`, else `ip:...`
    rule_id: int
    version: str  # offered
    from_version: str | None  # what the device reported when first offered it
    first_offered_at: str
    last_offered_at: str
    offers: int  # checks at which it was offered this version
    outcome: Outcome
    outcome_at: str | None  # when the outcome last changed (None: pending from the start)
    last_seen_at: str  # its last check that changed the record or found it pending/silent
    reported: str | None = None  # what it reported for the rule at its last check
    ran_it: bool = False  # seen running the offered version at least once
    stage: int | None = None  # the staged approval's stage when first offered (None: not staged)
    images: tuple[str, ...] = field(default=())  # folded image names: how reports are read


@dataclass(frozen=True)
class OfferCount:
    """How many devices offered `version` of rule `rule_id` (in `stage`) have `outcome`."""

    rule_id: int
    version: str
    stage: int | None
    outcome: Outcome
    devices: int
