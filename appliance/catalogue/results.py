"""What an import found: each device update's outcome, and the files it repaired.

`import_json` is the shape `import --json` and the Control Panel API show.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from appliance.model import RuleKey


class Outcome(StrEnum):
    NEW_RULE = "new rule"
    PENDING = "now pending"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class UpdateReport:
    key: RuleKey
    version: str
    outcome: Outcome
    rule_id: int | None
    files: int
    bytes: int
    previous_pending: str | None = None
    guid: str | None = None  # the rule GUID updateInfo.xml names for this update


@dataclass(frozen=True)
class ImportResult:
    package: str
    sha256: str
    size: int
    updates: tuple[UpdateReport, ...]
    ignored: tuple[str, ...]  # members no update refers to
    written_bytes: int
    repaired: tuple[tuple[str, str], ...] = ()  # (stored path, the damage found) rewritten

    @property
    def changed(self) -> bool:
        return any(u.outcome is not Outcome.UNCHANGED for u in self.updates)


def import_json(result: ImportResult) -> dict[str, Any]:
    """An import's result as `import --json` and the Control Panel API show it."""
    return {
        "package": result.package,
        "sha256": result.sha256,
        "size": result.size,
        "changed": result.changed,
        "written_bytes": result.written_bytes,
        "ignored": list(result.ignored),
        "repaired": [{"path": path, "problem": problem} for path, problem in result.repaired],
        "updates": [
            {
                "rule_id": u.rule_id,
                **dataclasses.asdict(u.key),
                "version": u.version,
                "files": u.files,
                "bytes": u.bytes,
                "outcome": u.outcome.value,
                "previous_pending": u.previous_pending,
                "guid": u.guid,
            }
            for u in result.updates
        ],
    }
