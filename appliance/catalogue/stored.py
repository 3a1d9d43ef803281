"""The stored files of versions a package carries again: read back, and repaired from it.

The importer trusts a version already in the store only after reading its files back:
each one is compared with the size and SHA-256 recorded when it was imported. A file
that was edited, truncated or deleted since is *damaged*. A mature package tool repairs
from a verified source rather than refusing: when the package being imported has that
member with the recorded SHA-256 (the extraction hashes it), the member is extracted to
the staging folder, renamed over the damaged file and its folder fsynced, and the event
log records `file.repair` with the problem found. When the package's copy differs too,
nothing is written and the import is refused with the damaged files named.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from appliance.catalogue.durable import fsync_folders, store_blobs
from appliance.catalogue.verify import file_sha256
from appliance.model import StoredFile
from appliance.store import Store


@dataclass(frozen=True)
class Damage:
    """A stored file whose bytes are not the ones recorded, and how they differ."""

    stored: StoredFile
    problem: str  # "missing", "truncated: 100 of 262144 bytes", "its SHA-256 differs", ...

    def line(self) -> str:
        return f"{self.stored.path.as_posix()} ({self.problem})"


def damaged_files(store_dir: Path, files: Iterable[StoredFile]) -> list[Damage]:
    """The files of `files` whose bytes on disk differ from their record (size, then hash)."""
    damaged = []
    for stored in files:
        problem = _problem(store_dir / stored.path, stored)
        if problem is not None:
            damaged.append(Damage(stored, problem))
    return damaged


def _problem(path: Path, stored: StoredFile) -> str | None:
    try:
        size = os.stat(path).st_size
        if size < stored.size:
            return f"truncated: {size} of {stored.size} bytes"
        if size > stored.size:
            return f"{size} bytes, {stored.size} recorded"
        found = file_sha256(path)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    return None if found == stored.sha256 else "its SHA-256 differs from the recorded one"


def write_back(
    store: Store, store_dir: Path, repairs: list[tuple[Damage, Path]], package: str, actor: str
) -> None:
    """Rename each verified copy (staging path) over its damaged file; fsync; log each.

    The caller holds the data lock and has checked every copy's SHA-256 against the record.
    """
    for damage, copy in repairs:
        target = store_dir / damage.stored.path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(copy, target)
    fsync_folders(sorted({(store_dir / d.stored.path).parent for d, _ in repairs}))
    with store.transaction():
        store_blobs(store, store_dir, [d.stored for d, _ in repairs])  # a blob lost too
        for damage, _ in repairs:
            store.append_event(
                actor,
                "file.repair",
                damage.stored.path.as_posix(),
                {"problem": damage.problem},
                {"sha256": damage.stored.sha256, "size": damage.stored.size, "from": package},
            )


def refusal(damaged: list[Damage], differing: list[str]) -> str:
    """Why an import with damaged stored files cannot repair them, and the way out."""
    files = ", ".join(d.line() for d in damaged)
    return (
        f"stored files are damaged: {files}; this package's copy of "
        f"{', '.join(differing)} differs from the recorded SHA-256 as well, so nothing was "
        "written: import the package these versions came from to repair them (or remove "
        "their rules and run clean-files)"
    )
