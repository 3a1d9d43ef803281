"""Stored files checked against their recorded SHA-256 before phones get them.

A byte changed on disk (a failing disk, a hand edit, a restore gone wrong) must not reach a
phone: it would refuse the image at best. `FileVerifier` hashes a file once and remembers
the answer with the file's size and modification time (a rewrite changes them, so it is
hashed again). `ucupdates serve` checks every referenced file at start-up in small steps
(`steps`: a chunk each, so the reactor keeps answering) and again when a file is
served and its size or time changed. An update with a file that fails (different bytes,
missing, unreadable) is *broken*: the decision does not offer it (`Reason.BROKEN_FILES`),
its downloads are refused, and `file.corrupt` is logged once; when the file is right again
(restored), `file.restored` is logged and it is offered again.

A file whose size and time are unchanged is not read again: corruption that keeps both
(bit rot under the file system) is found at the next start, or by `ucupdates check`.

On a pool node (`cached`: the store is PostgreSQL, docs/pool.md) files arrive after the
catalogue names them: `catalogue.NodeCache` fetches them from the store's blobs. There a
referenced file the verifier has not seen yet is looked for (a stat) at every reload
(`recheck_broken`), so that its version is held back from the first answer after the
change; a missing file is *awaited* (`file.awaited`, info), not corrupt, and is offered
once the cache has fetched and verified it (`vouch`). The verifier is shared by the
reactor and the cache's thread: its state changes under a lock.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from appliance.model import StoredFile

if TYPE_CHECKING:
    from twisted.logger import Logger


CHUNK = 1 << 20  # bytes read per step


@functools.cache
def _log() -> Logger:
    """The catalogue's logger, made on first use: Twisted's logging takes about 30 ms to
    load, which short commands such as `import` (which never log here) need not pay."""
    from twisted.logger import Logger

    return Logger(namespace="ucupdates.catalogue")


UpdateId = tuple[tuple[str, ...], str]  # a rule key (folded) and a version


@dataclass(frozen=True)
class _Seen:
    mtime_ns: int
    size: int
    problem: str | None  # None: the bytes match the recorded hash


def hash_steps(path: Path) -> Generator[None, None, str]:
    """Hash `path` a chunk at a time, yielding between chunks; the generator returns
    (its StopIteration value) the hex SHA-256. Raises OSError."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            yield
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read a chunk at a time. Raises OSError."""
    steps = hash_steps(path)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class FileVerifier:
    """Which stored files match their hash, remembered by size and modification time."""

    def __init__(self, store_dir: Path, cached: bool = False) -> None:
        self.store_dir = store_dir
        self.cached = cached  # a pool node: files come from the store's blobs
        self._seen: dict[PurePosixPath, _Seen] = {}
        self._broken: dict[UpdateId, set[PurePosixPath]] = {}
        self._lock = threading.Lock()
        self.generation = 0  # changes whenever the set of broken updates does
        self.on_broken: Callable[[], object] | None = None  # called when a file starts failing

    def broken_updates(self) -> frozenset[UpdateId]:
        with self._lock:
            return frozenset(self._broken)

    def intact(self, stored: StoredFile) -> bool:
        """Whether the file's bytes match its recorded hash (hashed now unless remembered)."""
        steps = self._verify(stored)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return bool(done.value)

    def recheck_broken(self, files: Iterable[StoredFile]) -> None:
        """Verify again those of `files` that are broken now, so that one put right (a
        re-import repairs it from the package) is offered again at once, not at its next
        download; one still as it was costs a stat (remembered by size and time)."""
        with self._lock:
            broken = {path for paths in self._broken.values() for path in paths}
        for stored in files:
            if stored.path in broken:
                self.intact(stored)
            elif self.cached and stored.path not in self._seen:
                self._look_for(stored)

    def _look_for(self, stored: StoredFile) -> None:
        """A file not seen yet on a pool node: awaited when it is not there (a stat);
        one that is there is hashed by the start-up check, the cache or its download."""
        try:
            os.stat(self.store_dir / stored.path)
        except FileNotFoundError:
            self._record(stored, None, "missing")
        except OSError:
            pass  # found wrong when it is hashed

    def vouch(self, stored: StoredFile, st: os.stat_result) -> None:
        """The file was just written with bytes whose SHA-256 the caller checked against
        the record (`NodeCache`): remembered as intact with its size and time `st`,
        without reading it again; its update is offered again if that was all it missed."""
        self._record(stored, _Seen(st.st_mtime_ns, st.st_size, None), None)

    def steps(self, files: Iterable[StoredFile]) -> Iterator[None]:
        """Verify `files` a chunk at a time (start-up): yields between chunks."""
        for stored in files:
            yield from self._verify(stored)

    def _verify(self, stored: StoredFile) -> Generator[None, None, bool]:
        path = self.store_dir / stored.path
        problem: str | None
        try:
            before = os.stat(path)
        except OSError as e:
            self._record(stored, None, "missing" if isinstance(e, FileNotFoundError) else str(e))
            return False
        seen = self._seen.get(stored.path)
        if seen is not None and (seen.mtime_ns, seen.size) == (before.st_mtime_ns, before.st_size):
            return seen.problem is None
        if before.st_size != stored.size:
            problem = f"{before.st_size} bytes, {stored.size} recorded"
        else:
            try:
                found = yield from hash_steps(path)
            except OSError as e:
                problem = f"unreadable: {e.strerror}"
            else:
                problem = None if found == stored.sha256 else f"SHA-256 {found}"
        self._record(stored, _Seen(before.st_mtime_ns, before.st_size, problem), problem)
        return problem is None

    def _record(self, stored: StoredFile, seen: _Seen | None, problem: str | None) -> None:
        with self._lock:
            was_broken = stored.path in self._broken.get((stored.key.folded(), stored.version), ())
            self._record_locked(stored, seen, problem)
        if problem is not None and not was_broken and self.on_broken is not None:
            self.on_broken()  # outside the lock: a pool node's cache fetches it again

    def _record_locked(self, stored: StoredFile, seen: _Seen | None, problem: str | None) -> None:
        if seen is None:
            self._seen.pop(stored.path, None)
        else:
            self._seen[stored.path] = seen
        update: UpdateId = (stored.key.folded(), stored.version)
        paths = self._broken.get(update, set())
        was_broken = stored.path in paths
        if problem is not None and not was_broken:
            self._broken.setdefault(update, set()).add(stored.path)
            self.generation += 1
            if self.cached and problem == "missing":
                _log().info(
                    "stored file {path} of {key} {version} is not on this node yet: that "
                    "version is offered once it is fetched from the store and verified",
                    path=stored.path.as_posix(),
                    key="/".join(stored.key.folded()),
                    version=stored.version,
                    event="file.awaited",
                )
                return
            _log().error(
                "stored file {path} of {key} {version} fails verification ({problem}): "
                "that version is not offered until the file is restored",
                path=stored.path.as_posix(),
                key="/".join(stored.key.folded()),
                version=stored.version,
                problem=problem,
                expected=stored.sha256,
                event="file.corrupt",
            )
        elif problem is None and was_broken:
            paths.discard(stored.path)
            if not paths:
                del self._broken[update]
            self.generation += 1
            _log().info(
                "stored file {path} of {key} {version} matches its hash again",
                path=stored.path.as_posix(),
                key="/".join(stored.key.folded()),
                version=stored.version,
                event="file.restored",
            )
