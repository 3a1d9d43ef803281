"""`ucupdates check` as a monitoring plugin, as the Monitoring Plugins Development
Guidelines describe one (Nagios, Icinga, Naemon, Checkmk run it alike):

    UCUPDATES WARNING - disk: 812.0 MiB free of ... | 'cert_days_left'=85;30:;7: ...
    OK config: loaded from /etc/ucupdates/ucupdates.toml; data in /var/lib/ucupdates
    WARNING disk: 812.0 MiB free of 9.8 GiB (8.1 %) in /var/lib/ucupdates: below 10 % ...
    CRITICAL listener admin: 127.0.0.1:9443: Connection refused

The first line is the status and a summary (what failed, then what warns), then `|` and
the performance data (`perfdata`); each further line is one check with its own status.
Exit status 0 OK, 1 WARNING (something is not yet broken), 2 CRITICAL (a check failed),
3 UNKNOWN (the check itself could not run: an unreadable config, or an error of its own).
No text but the perfdata separator holds a `|`. `--json` gives the same as one object.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, TextIO

from appliance.config import Config, ConfigError, StoreBackend
from appliance.ops.checks import TIMEOUT, checks
from appliance.ops.perfdata import Perf, perfdata
from appliance.ops.results import CheckResult, report
from appliance.store import Store, StoreError, open_configured

SERVICE = "UCUPDATES"
SUMMARY_DETAIL_CHARS = 100  # of each check named on the first line


class Status(IntEnum):
    """A plugin's states, as its exit status."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def status_of(result: CheckResult) -> Status:
    if not result.ok:
        return Status.CRITICAL
    return Status.WARNING if result.warning else Status.OK


def overall(results: Sequence[CheckResult]) -> Status:
    return max((status_of(r) for r in results), default=Status.UNKNOWN)


def one_line(text: str) -> str:
    """Text for a plugin's output: one line, no `|` (it would start performance data)."""
    return " ".join(text.replace("|", "/").split())


def summary(results: Sequence[CheckResult]) -> str:
    """What failed, then what warns, each with the start of its detail; or all passed."""
    status = overall(results)
    if status is Status.OK:
        return f"all {len(results)} checks passed"
    named = [r for r in results if status_of(r) is Status.CRITICAL] + [
        r for r in results if status_of(r) is Status.WARNING
    ]
    parts = []
    for r in named:
        detail = one_line(r.detail)
        if len(detail) > SUMMARY_DETAIL_CHARS:
            detail = detail[: SUMMARY_DETAIL_CHARS - 3].rstrip() + "..."
        parts.append(f"{r.name}: {detail}")
    return "; ".join(parts)


def figures(results: Sequence[CheckResult], seconds: float) -> list[Perf]:
    """Every check's performance data, then the check's own duration."""
    found = [figure for r in results for figure in r.perfdata]
    return [*found, Perf("check_duration", round(seconds, 3), "s", min=0)]


def plugin_text(results: Sequence[CheckResult], seconds: float) -> str:
    status = overall(results)
    head = f"{SERVICE} {status.name} - {one_line(summary(results))}"
    lines = [f"{head} | {perfdata(figures(results, seconds))}"]
    lines += [f"{status_of(r).name} {one_line(r.name)}: {one_line(r.detail)}" for r in results]
    return "\n".join(lines)


def plugin_json(results: Sequence[CheckResult], seconds: float) -> dict[str, Any]:
    """`status` ("ok", "warn", "fail") and `checks` as /health's, and the plugin's view:
    `plugin_status`, `exit_status`, `summary`, each check's `status`, and `perfdata`
    (label, value (None: unknown), uom, warn, crit, min, max)."""
    body = report(results)
    status = overall(results)
    for entry, r in zip(body["checks"], results, strict=True):
        entry["status"] = status_of(r).name
    return {
        "status": body["status"],
        "plugin_status": status.name,
        "exit_status": int(status),
        "summary": summary(results),
        "checks": body["checks"],
        "perfdata": [asdict(figure) for figure in figures(results, seconds)],
    }


def unknown_text(reason: str) -> str:
    """The whole output when the check cannot run."""
    return f"{SERVICE} {Status.UNKNOWN.name} - {one_line(reason)}"


def unknown_json(reason: str) -> dict[str, Any]:
    return {
        "status": "unknown",
        "plugin_status": Status.UNKNOWN.name,
        "exit_status": int(Status.UNKNOWN),
        "summary": reason,
        "checks": [],
        "perfdata": [],
    }


def report_unknown(reason: str, json_output: bool, out: TextIO | None = None) -> int:
    """Print UNKNOWN with `reason`; the exit status 3."""
    out = out or sys.stdout
    text = json.dumps(unknown_json(reason), indent=2) if json_output else unknown_text(reason)
    print(text, file=out)
    return int(Status.UNKNOWN)


def check_command(
    config: Config,
    store: Store | None,
    json_output: bool,
    out: TextIO | None = None,
    now: datetime | None = None,
    timeout: float = TIMEOUT,
    store_problem: str | None = None,
) -> int:
    """`ucupdates check`: every check, printed as a plugin (or JSON); the exit status is
    the worst check's (0 OK, 1 WARNING, 2 CRITICAL), 3 when the checks could not run."""
    out = out or sys.stdout
    started = time.monotonic()
    try:
        results = checks(config, store, now or datetime.now(UTC), timeout, store_problem)
    except Exception as e:  # a fault of the check itself, not of the appliance
        return report_unknown(
            f"the checks could not run: {type(e).__name__}: {e}", json_output, out
        )
    seconds = time.monotonic() - started
    if json_output:
        print(json.dumps(plugin_json(results, seconds), indent=2), file=out)
    else:
        print(plugin_text(results, seconds), file=out)
    return int(overall(results))


def run_check(config: Config, json_output: bool, out: TextIO | None = None) -> int:
    """`check_command` with the store opened here: a missing or unreadable database is a
    failed check (CRITICAL), not an error of the command (and no database is created).
    An older schema is reported, never upgraded: a monitoring run must not change the
    database under a service still running the previous version."""
    store: Store | None = None
    problem = None
    if config.store.backend is StoreBackend.POSTGRESQL or config.db_path.exists():
        try:
            store = open_configured(config.store, config.db_path, upgrade=False)
        except (StoreError, ConfigError, OSError) as e:
            problem = str(e)
    try:
        return check_command(config, store, json_output, out, store_problem=problem)
    finally:
        if store is not None:
            store.close()
