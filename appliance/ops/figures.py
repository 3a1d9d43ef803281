"""The checks of `ucupdates check` that watch figures rather than test a part: the data
folder's free space, the rules by state, and whether phones still check for updates.

Each returns a `CheckResult` carrying its performance data; the thresholds are the
`[check]` table's. Disk space is WARNING (CRITICAL) when the free share or the free bytes
fall below their limit, whichever comes first. Phones: the store keeps each device's last
check (`last_seen`, written within a second of the check by `serve`); when the newest is
older than `check.quiet_warning_hours` the check is WARNING, but only once some phone has
ever checked: a new appliance with no phones yet is not a fault.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta

from appliance.config import Config
from appliance.model import RuleState
from appliance.ops.perfdata import Perf, at_least, at_most
from appliance.ops.results import CheckResult
from appliance.store import Store

DAY = timedelta(days=1)


def check_disk(config: Config) -> CheckResult:
    """Free space for the service on the data folder's file system (statvfs: the blocks
    an unprivileged writer may use)."""
    limits = config.check
    folder = config.data_dir if config.data_dir.exists() else config.data_dir.parent
    st = os.statvfs(folder)
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    share = 100.0 * free / total if total else 0.0
    figures = (
        Perf(
            "data_free",
            free,
            "B",
            at_least(limits.disk_warning_bytes) if limits.disk_warning_bytes else "",
            at_least(limits.disk_critical_bytes) if limits.disk_critical_bytes else "",
            0,
            total,
        ),
        Perf(
            "data_free_pct",
            round(share, 1),
            "%",
            at_least(limits.disk_warning_percent) if limits.disk_warning_percent else "",
            at_least(limits.disk_critical_percent) if limits.disk_critical_percent else "",
            0,
            100,
        ),
    )
    detail = f"{_size(free)} free of {_size(total)} ({share:.1f} %) in {folder}"
    critical = free < limits.disk_critical_bytes or share < limits.disk_critical_percent
    warning = free < limits.disk_warning_bytes or share < limits.disk_warning_percent
    if critical:
        limit = f"{limits.disk_critical_percent} % or {_size(limits.disk_critical_bytes)}"
        return CheckResult("disk", False, f"{detail}: below {limit}", perfdata=figures)
    if warning:
        limit = f"{limits.disk_warning_percent} % or {_size(limits.disk_warning_bytes)}"
        return CheckResult("disk", True, f"{detail}: below {limit}", True, figures)
    return CheckResult("disk", True, detail, perfdata=figures)


def check_rules(store: Store) -> CheckResult:
    """The rules by state (a figure only: no state is a fault)."""
    counts = Counter(rule.state for rule in store.rules())
    figures = tuple(Perf(f"rules_{state.value}", counts[state], min=0) for state in RuleState)
    detail = ", ".join(f"{counts[state]} {state.value}" for state in RuleState)
    return CheckResult("rules", True, detail, perfdata=figures)


def check_phones(config: Config, store: Store, now: datetime) -> CheckResult:
    """Devices seen, those that checked in the last 24 h, and how long ago the last check
    was: WARNING after `check.quiet_warning_hours` without one (once any phone has checked)."""
    quiet = config.check.quiet_warning_hours * 3600
    seen = [_parse_time(d.last_seen) for d in store.devices()]
    recent = sum(1 for at in seen if now - at <= DAY)
    newest = max(seen, default=None)
    age = max((now - newest).total_seconds(), 0.0) if newest is not None else None
    figures = (
        Perf("devices_seen", len(seen), min=0),
        Perf("devices_checked_24h", recent, min=0),
        Perf("last_check_age", None if age is None else round(age), "s", at_most(quiet), "", 0),
    )
    if newest is None or age is None:
        return CheckResult("phones", True, "no phone has checked for updates yet", False, figures)
    detail = (
        f"{len(seen)} device(s) seen, {recent} checked in the last 24 h; the last check "
        f"{_ago(age)} ago ({newest:%Y-%m-%d %H:%M} UTC)"
    )
    if age > quiet:
        hours = f"{config.check.quiet_warning_hours:g}"
        return CheckResult("phones", True, f"{detail}: none for over {hours} h", True, figures)
    return CheckResult("phones", True, detail, perfdata=figures)


def _parse_time(stamp: str) -> datetime:
    """A stored time (`2013-04-02T09:30:00Z`) as an aware datetime; UTC when it has no
    offset (a date alone, as older records may have)."""
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"
