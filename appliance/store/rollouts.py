"""The rollout policy's tables: upgrade paths, staged approvals, network windows and caps,
the external zone's policy, pins, the bucket salt.

A change to the policy counts as a catalogue change (`catalogue_generation`), so the phone
service reloads it with the catalogue at its next check. What was offered each device is
offers.py's.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from appliance.model import (
    AutoPause,
    DownloadWindows,
    Entry,
    ExternalPolicy,
    IdentifierKind,
    NetworkPolicy,
    Pin,
    PinAction,
    RolloutEntries,
    RolloutPolicy,
    RuleKey,
    StagedApproval,
    StageSchedule,
    Staging,
    TimeWindow,
    UpgradeStep,
    parse_network,
)
from appliance.store.connection import Connection

SALT = "bucket_salt"
_STEP_COLUMNS = "device_type, brand, model, revision, update_type, below, offer, set_by, set_at"
_STAGING_COLUMNS = (
    "s.rule_id, r.device_type, r.brand, r.model, r.revision, r.locale, r.update_type,"
    " s.version, s.stages, s.stage, s.entered_at, s.paused, s.paused_why, s.paused_at,"
    " s.soak_seconds, s.pause_percent, s.pause_min, s.set_by, s.set_at"
)
_NETWORK_COLUMNS = (
    "network, time_zone, windows, max_downloads, max_bytes_per_second, set_by, set_at"
)
_PIN_COLUMNS = "kind, identifier, action, version, update_type, reason, set_by, set_at"


def new_salt() -> str:
    return secrets.token_hex(16)


class RolloutTables(Connection):
    """The rollout policy."""

    # -- the whole policy -----------------------------------------------------------------

    def rollout_salt(self) -> str:
        """The bucket salt: written when the schema was created or upgraded."""
        row = self._conn.execute(
            "SELECT value FROM rollout_settings WHERE name = ?", (SALT,)
        ).fetchone()
        return str(row[0]) if row else ""

    def set_rollout_salt(self, salt: str) -> None:
        """Replace the bucket salt: every device changes bucket (a reshuffle)."""
        self._conn.execute("DELETE FROM rollout_settings WHERE name = ?", (SALT,))
        self._conn.execute("INSERT INTO rollout_settings VALUES (?, ?)", (SALT, salt))
        self._catalogue_changed()

    def rollout_entries(self) -> RolloutEntries:
        """Every policy entry, with who set it and when."""
        salt = self.rollout_salt()
        return RolloutEntries(
            paths=tuple(self.upgrade_steps()),
            stagings=tuple(self.stagings()),
            networks=tuple(self.networks()),
            external=self.external_policy(),
            pins=tuple(self.pins()),
            **({"salt": salt} if salt else {}),
        )

    def rollout_policy(self) -> RolloutPolicy:
        """What the rollout decision reads, in one call (the phone service's snapshot)."""
        return self.rollout_entries().policy()

    # -- upgrade paths --------------------------------------------------------------------

    def set_upgrade_step(self, step: UpgradeStep, by: str) -> Entry[UpgradeStep] | None:
        """Add a step, or replace the one with the same model, scope and threshold;
        returns the one replaced."""
        before = self.remove_upgrade_step(step)
        self._conn.execute(
            f"INSERT INTO upgrade_steps ({_STEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                step.device_type,
                step.brand,
                step.model,
                step.revision,
                step.update_type,
                step.below,
                step.offer,
                by,
                self.now(),
            ),
        )
        self._catalogue_changed()
        return before

    def remove_upgrade_step(self, step: UpgradeStep) -> Entry[UpgradeStep] | None:
        """Remove the step with `step`'s model, scope and threshold (its offer is not
        compared); returns it, or None when there was none."""
        found = next((e for e in self.upgrade_steps() if _same_step(e.value, step)), None)
        if found is not None:
            self._conn.execute(
                "DELETE FROM upgrade_steps WHERE lower(device_type) = lower(?)"
                " AND lower(brand) = lower(?) AND lower(model) = lower(?)"
                " AND lower(coalesce(revision, '')) = lower(?)"
                " AND lower(coalesce(update_type, '')) = lower(?) AND below = ?",
                (
                    step.device_type,
                    step.brand,
                    step.model,
                    step.revision or "",
                    step.update_type or "",
                    found.value.below,
                ),
            )
            self._catalogue_changed()
        return found

    def upgrade_steps(self) -> list[Entry[UpgradeStep]]:
        rows = self._conn.execute(
            f"SELECT {_STEP_COLUMNS} FROM upgrade_steps ORDER BY device_type, brand, model, id"
        )
        return [
            Entry(UpgradeStep(r[0], r[1], r[2], r[5], r[6], r[3], r[4]), r[7], r[8]) for r in rows
        ]

    # -- staged approvals -----------------------------------------------------------------

    def save_staging(self, staging: Staging) -> Staging:
        """Write a rule's staged approval (replacing any); returns it as stored."""
        a, sched = staging.approval, staging.schedule
        auto = sched.auto_pause
        self._conn.execute("DELETE FROM staged_approvals WHERE rule_id = ?", (staging.rule_id,))
        self._conn.execute(
            "INSERT INTO staged_approvals (rule_id, version, stages, stage, entered_at, paused,"
            " paused_why, paused_at, soak_seconds, pause_percent, pause_min, set_by, set_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                staging.rule_id,
                a.version,
                ",".join(f"{s:g}" for s in a.stages),
                a.stage,
                staging.entered_at,
                int(a.paused),
                staging.paused_why,
                staging.paused_at,
                None if sched.soak is None else int(sched.soak.total_seconds()),
                None if auto is None else auto.max_failing_percent,
                None if auto is None else auto.min_failing,
                staging.set_by,
                staging.set_at or self.now(),
            ),
        )
        self._catalogue_changed()
        saved = self.staging(staging.rule_id)
        assert saved is not None
        return saved

    def staging(self, rule_id: int) -> Staging | None:
        row = self._conn.execute(
            f"SELECT {_STAGING_COLUMNS} FROM staged_approvals s JOIN rules r ON r.id = s.rule_id"
            " WHERE s.rule_id = ?",
            (rule_id,),
        ).fetchone()
        return _staging(row) if row else None

    def stagings(self) -> list[Staging]:
        rows = self._conn.execute(
            f"SELECT {_STAGING_COLUMNS} FROM staged_approvals s JOIN rules r ON r.id = s.rule_id"
            " ORDER BY s.rule_id"
        )
        return [_staging(r) for r in rows]

    def remove_staging(self, rule_id: int) -> Staging | None:
        found = self.staging(rule_id)
        if found is not None:
            self._conn.execute("DELETE FROM staged_approvals WHERE rule_id = ?", (rule_id,))
            self._catalogue_changed()
        return found

    # -- networks and the external zone ---------------------------------------------------

    def set_network(self, policy: NetworkPolicy, by: str) -> Entry[NetworkPolicy] | None:
        """Add or replace a network's windows and caps; returns the entry replaced."""
        before = self.remove_network(str(policy.network))
        w = policy.windows
        self._conn.execute(
            f"INSERT INTO rollout_networks ({_NETWORK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                str(policy.network),
                w.zone,
                _windows_text(w),
                policy.max_downloads,
                policy.max_bytes_per_second,
                by,
                self.now(),
            ),
        )
        self._catalogue_changed()
        return before

    def remove_network(self, network: str) -> Entry[NetworkPolicy] | None:
        """Remove a network's entry (CIDR, as `parse_network` reads it)."""
        text = str(parse_network(network))
        found = next((e for e in self.networks() if str(e.value.network) == text), None)
        if found is not None:
            self._conn.execute("DELETE FROM rollout_networks WHERE network = ?", (text,))
            self._catalogue_changed()
        return found

    def networks(self) -> list[Entry[NetworkPolicy]]:
        rows = self._conn.execute(f"SELECT {_NETWORK_COLUMNS} FROM rollout_networks ORDER BY id")
        return [
            Entry(NetworkPolicy(parse_network(r[0]), _windows(r[1], r[2]), r[3], r[4]), r[5], r[6])
            for r in rows
        ]

    def set_external_policy(self, policy: ExternalPolicy, by: str) -> Entry[ExternalPolicy] | None:
        """Set the external zone's windows and caps; returns the entry replaced."""
        before = self.clear_external_policy()
        w = policy.windows or DownloadWindows("UTC")
        self._conn.execute(
            "INSERT INTO rollout_external (id, time_zone, windows, max_downloads,"
            " max_bytes_per_second, set_by, set_at) VALUES (1, ?, ?, ?, ?, ?, ?)",
            (
                w.zone,
                _windows_text(w),
                policy.max_downloads,
                policy.max_bytes_per_second,
                by,
                self.now(),
            ),
        )
        self._catalogue_changed()
        return before

    def clear_external_policy(self) -> Entry[ExternalPolicy] | None:
        found = self.external_policy()
        if found is not None:
            self._conn.execute("DELETE FROM rollout_external")
            self._catalogue_changed()
        return found

    def external_policy(self) -> Entry[ExternalPolicy] | None:
        row = self._conn.execute(
            "SELECT time_zone, windows, max_downloads, max_bytes_per_second, set_by, set_at"
            " FROM rollout_external"
        ).fetchone()
        if row is None:
            return None
        windows = _windows(row[0], row[1])
        policy = ExternalPolicy(windows if windows.windows else None, row[2], row[3])
        return Entry(policy, row[4], row[5])

    # -- pins -----------------------------------------------------------------------------

    def set_pin(self, pin: Pin, by: str) -> Entry[Pin] | None:
        """Add or replace the device's pin for the update type; returns the one replaced."""
        before = self.remove_pin(pin.kind, pin.identifier, pin.update_type)
        self._conn.execute(
            f"INSERT INTO device_pins ({_PIN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                pin.kind.value,
                pin.identifier,
                pin.action.value,
                pin.version,
                pin.update_type,
                pin.reason,
                by,
                self.now(),
            ),
        )
        self._catalogue_changed()
        return before

    def remove_pin(
        self, kind: IdentifierKind, identifier: str, update_type: str | None = None
    ) -> Entry[Pin] | None:
        """Remove the device's pin for `update_type` (None: the one for every type)."""
        wanted = (update_type or "").casefold()
        found = next(
            (
                e
                for e in self.pins()
                if e.value.kind is kind
                and e.value.identifier == identifier
                and (e.value.update_type or "").casefold() == wanted
            ),
            None,
        )
        if found is not None:
            self._conn.execute(
                "DELETE FROM device_pins WHERE kind = ? AND identifier = ?"
                " AND lower(coalesce(update_type, '')) = lower(?)",
                (kind.value, identifier, update_type or ""),
            )
            self._catalogue_changed()
        return found

    def pins(self) -> list[Entry[Pin]]:
        rows = self._conn.execute(f"SELECT {_PIN_COLUMNS} FROM device_pins ORDER BY id")
        return [
            Entry(Pin(IdentifierKind(r[0]), r[1], PinAction(r[2]), r[5], r[3], r[4]), r[6], r[7])
            for r in rows
        ]


def _same_step(a: UpgradeStep, b: UpgradeStep) -> bool:
    def fold(s: UpgradeStep) -> tuple[str, ...]:
        return tuple(
            (v or "").casefold()
            for v in (s.device_type, s.brand, s.model, s.revision, s.update_type)
        )

    return fold(a) == fold(b) and a.below.strip() == b.below.strip()


def _windows_text(w: DownloadWindows) -> str:
    return ",".join(str(t) for t in w.windows)


def _windows(zone: str, text: str) -> DownloadWindows:
    return DownloadWindows(zone, tuple(TimeWindow.parse(t) for t in text.split(",") if t))


def _staging(r: Sequence[Any]) -> Staging:
    approval = StagedApproval(
        RuleKey(*r[1:7]),
        r[7],
        tuple(float(s) for s in r[8].split(",")),
        r[9],
        bool(r[11]),
    )
    soak = None if r[14] is None else timedelta(seconds=r[14])
    auto = None if r[15] is None else AutoPause(r[15], r[16])
    return Staging(r[0], approval, StageSchedule(soak, auto), r[10], r[12], r[13], r[17], r[18])
