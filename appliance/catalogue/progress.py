"""How far an import has got, for a page that polls it while the import runs.

The importing thread moves the phase on (`enter`) and, before the extraction, says which
members it will write where (`extracting`); the Control Panel's thread reads `snapshot()`.
The extraction itself is not interrupted to report: the snapshot counts the staged files
that have reached their size, so an update counts as extracted once all its files have.
Each attribute is replaced whole, never mutated, so a reader sees one state or the next.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any


class Phase(StrEnum):
    WAITING = "waiting"  # the upload has arrived; the import has not started
    SCANNING = "scanning"  # reading the package's tables and updateInfo.xml
    VERIFYING = "verifying"  # reading back the stored files of versions imported before
    EXTRACTING = "extracting"  # writing the new updates' files to the staging folder
    COMMITTING = "committing"  # moving them into the store, recording the rules
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Staged:
    """A member the extraction writes: its staged path, size, and the update it belongs to."""

    path: Path
    size: int
    update: int


class ImportProgress:
    """An import's phase, and how much of its extraction is on disk."""

    def __init__(self) -> None:
        self.phase = Phase.WAITING
        self._staged: tuple[Staged, ...] = ()
        self._updates = 0

    def enter(self, phase: Phase) -> None:
        self.phase = phase

    def extracting(self, staged: tuple[Staged, ...], updates: int) -> None:
        self._staged, self._updates = staged, updates
        self.phase = Phase.EXTRACTING

    def snapshot(self) -> dict[str, Any]:
        """`phase`, and the new updates and bytes extracted so far of how many."""
        phase, staged, updates = self.phase, self._staged, self._updates
        total = sum(s.size for s in staged)
        if phase is not Phase.EXTRACTING:
            past = phase in (Phase.COMMITTING, Phase.DONE)
            return {
                "phase": phase.value,
                "updates": updates,
                "updates_done": updates if past else 0,
                "bytes": total,
                "bytes_done": total if past else 0,
            }
        written = 0
        unfinished: set[int] = set()
        for s in staged:
            try:
                size = os.stat(s.path).st_size
            except OSError:
                size = 0
            written += min(size, s.size)
            if size < s.size:
                unfinished.add(s.update)
        return {
            "phase": phase.value,
            "updates": updates,
            "updates_done": updates - len(unfinished),
            "bytes": total,
            "bytes_done": written,
        }
