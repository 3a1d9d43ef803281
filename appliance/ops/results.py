"""What a health check returns, shared by `ucupdates check` and `/health`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.ops.perfdata import Perf


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # passed, but the detail says what needs attention
    perfdata: tuple[Perf, ...] = ()  # the figures `ucupdates check` reports with it


def guarded(name: str, check: Callable[[], CheckResult]) -> CheckResult:
    """A check that raises has failed; its error is the detail."""
    try:
        return check()
    except Exception as e:
        return CheckResult(name, False, f"{type(e).__name__}: {e}")


def report(results: Sequence[CheckResult]) -> dict[str, Any]:
    """`{"status": "ok"|"warn"|"fail", "checks": [{name, ok, detail, warning}, ...]}`."""
    warned = any(r.warning for r in results)
    return {
        "status": "fail" if not all(r.ok for r in results) else "warn" if warned else "ok",
        "checks": [
            {"name": r.name, "ok": r.ok, "detail": r.detail, "warning": r.warning} for r in results
        ],
    }
