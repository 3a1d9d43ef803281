"""A pool node's local copies of the stored files its rules reference (docs/pool.md).

On PostgreSQL the store holds every stored file's bytes as a blob (`store.put_blob`, in
the import's transaction); each node serves phones from its own files folder, as a single
appliance does. `NodeCache.fill` makes that folder hold every file the rules reference
(`kept_versions`: approved, pending and restore versions, upgrade steps, pins):

- a file already there whose bytes match the recorded SHA-256 is kept (the verifier
  remembers it by size and time, so a second fill costs a stat per file);
- a missing or damaged one is fetched from its blob into a temporary file in the staging
  folder, hashed as it is written, fsynced, renamed into place and its folder fsynced;
  only then does the verifier hear of it (`FileVerifier.vouch`), so its version is
  offered from the next answer on and never before its bytes are local and verified;
- a file whose blob the store does not hold (yet) stays missing: its version is not
  offered on this node (the verifier's broken set) and is fetched by a later fill, which
  the blob's arrival causes (it moves the catalogue version).

Serve calls `fill_soon` at start and after each catalogue change: the fill runs in a
thread of the cache's own, goes round again for a call made meanwhile (calls do not pile
up), and tries again later what it could not fetch. `fill` is the same pass, run in the
caller's thread. On SQLite there is nothing to fetch (the files on disk are the truth).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance.catalogue.durable import FETCHING, fsync_folders
from appliance.catalogue.rollout import kept_versions
from appliance.catalogue.verify import FileVerifier, _log
from appliance.model import StoredFile
from appliance.store import Store, StoreError


@dataclass(frozen=True)
class CacheFill:
    """What one fill found and did (paths relative to the files folder)."""

    present: int = 0  # referenced files already here and intact
    fetched: tuple[str, ...] = ()  # missing, fetched from their blobs
    repaired: tuple[str, ...] = ()  # damaged here, fetched again
    waiting: tuple[str, ...] = ()  # their blob is not in the store (yet): not offered
    failed: tuple[str, ...] = ()  # the fetch failed (store, disk or hash): tried again later
    bytes: int = 0  # bytes fetched

    @property
    def complete(self) -> bool:
        """Whether every referenced file is here and intact now."""
        return not self.waiting and not self.failed


FETCH_LOCK = "blob-cache.lock"  # in the data folder: one fetch at a time per node
RETRY_SECONDS = 5.0  # after a pass that could not fetch everything
RETRY_MAX_SECONDS = 300.0


class FetchError(Exception):
    """A blob could not be made a verified local file; str() says why."""


class NodeCache:
    """This node's files folder, filled from the store's blobs."""

    def __init__(
        self,
        store: Store,
        store_dir: Path,
        staging_dir: Path,
        verifier: FileVerifier | None = None,
    ) -> None:
        self.store, self.store_dir, self.staging_dir = store, store_dir, staging_dir
        self.verifier = verifier if verifier is not None else FileVerifier(store_dir, True)
        self._lock = threading.Lock()
        self._running = False
        self._again = False
        self._waiting: set[str] = set()  # paths logged as waiting for their blob
        self.last: CacheFill | None = None  # the last fill (fill_soon's: since it started)
        self._wake = threading.Event()  # fill_soon: a pass is wanted
        self._idle = threading.Event()  # fill_soon's thread has nothing left to do
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def fill_soon(self) -> None:
        """Fill in a thread of this cache's own, and return at once: what serve calls at
        start and after each catalogue change (never blocking the caller, so a large fetch
        does not hold back the next reload). A call while that thread runs makes it go
        round again. A pass that could not fetch everything (`failed`, or the store not
        answering) is tried again after `RETRY_SECONDS`, doubled each time up to
        `RETRY_MAX_SECONDS`, or at the next call."""
        with self._lock:
            if self._closed:
                return
            self.verifier.on_broken = self.fill_soon  # a copy found damaged: fetched again
            self._wake.set()
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._background, name="blob-cache", daemon=True
                )
                self._thread.start()

    def wait(self, timeout: float) -> bool:
        """Whether `fill_soon`'s thread became idle within `timeout` seconds (tests)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """No more passes: `fill_soon`'s thread ends after the pass it is in, if any."""
        with self._lock:
            self._closed = True
            self._wake.set()

    def _background(self) -> None:
        delay = RETRY_SECONDS
        done: CacheFill | None = None  # this thread's passes as one, until it idles
        while True:
            self._wake.clear()
            try:
                result = self.fill()  # None: a fill of another thread goes round again
                retry = result is not None and bool(result.failed)
                if result is not None:
                    done = result if done is None else _then(done, result)
                    self.last = done
            except Exception:
                _log().failure("the blob cache's fill failed; tried again later")
                retry = True
            with self._lock:
                if self._closed or (not retry and not self._wake.is_set()):
                    self._thread = None
                    self._idle.set()
                    return
            if not retry:
                continue
            woken = self._wake.wait(delay)
            delay = RETRY_SECONDS if woken else min(2 * delay, RETRY_MAX_SECONDS)

    def fill(self) -> CacheFill | None:
        """Fetch what the rules reference and this node lacks, in the caller's thread; what
        was done (with the rounds asked for meanwhile), or None when a fill was running
        already (it goes round again for this call)."""
        with self._lock:
            if self._running:
                self._again = True
                return None
            self._running = True
        try:
            result = self._pass()
            while True:
                with self._lock:
                    if not self._again:
                        self._running = False
                        self.last = result
                        return result
                    self._again = False
                result = _then(result, self._pass())
        except BaseException:
            with self._lock:
                self._running = self._again = False
            raise

    def _referenced(self) -> list[StoredFile]:
        kept = kept_versions(self.store.rules(), self.store.rollout_policy())
        return [f for f in self.store.stored_files() if (f.key.folded(), f.version) in kept]

    def _pass(self) -> CacheFill:
        if not self.store.keeps_blobs:
            return CacheFill()
        present, size = 0, 0
        fetched: list[str] = []
        repaired: list[str] = []
        waiting: list[str] = []
        failed: list[str] = []
        for stored in self._referenced():
            name = stored.path.as_posix()
            here = (self.store_dir / stored.path).exists()
            if here and self.verifier.intact(stored):
                present += 1
                continue
            if not here:
                self.verifier.intact(stored)  # held back (awaited) before the fetch
            if not self.store.has_blob(stored.sha256):
                waiting.append(name)
                self._log_waiting(stored)
                continue
            try:
                got = self._fetch(stored)
            except (FetchError, StoreError, OSError) as e:
                failed.append(name)
                _log().error(
                    "stored file {path} could not be fetched from the store: {problem}; "
                    "tried again at the next fill",
                    path=name,
                    problem=str(e),
                    event="file.fetch_failed",
                )
                continue
            if got is None:  # another worker of this node fetched it meanwhile
                present += 1
                continue
            size += got
            (repaired if here else fetched).append(name)
        self._waiting.intersection_update(waiting)
        return CacheFill(
            present, tuple(fetched), tuple(repaired), tuple(waiting), tuple(failed), size
        )

    def _log_waiting(self, stored: StoredFile) -> None:
        name = stored.path.as_posix()
        if name in self._waiting:
            return
        self._waiting.add(name)
        _log().warn(
            "stored file {path} of {key} {version}: the store holds no blob {sha256} yet; "
            "that version is not offered on this node until it does",
            path=name,
            key="/".join(stored.key.folded()),
            version=stored.version,
            sha256=stored.sha256,
            event="blob.missing",
        )

    def _fetch(self, stored: StoredFile) -> int | None:
        """The blob into a temporary file (hashed as written, fsynced), renamed into
        place, its folders fsynced; then vouched for to the verifier. Returns its size;
        None when another worker process of this node has fetched it meanwhile (the
        node's workers fetch one file at a time, under `FETCH_LOCK`)."""
        target = self.store_dir / stored.path
        with _exclusive(self.store_dir.parent / FETCH_LOCK):
            if target.exists() and self.verifier.intact(stored):
                return None
            self._remove_leftovers()
            return self._fetch_locked(stored, target)

    def _remove_leftovers(self) -> None:
        """What a fetch killed before its end left in the staging folder (no other fetch
        of this node runs while the lock is held)."""
        if self.staging_dir.is_dir():
            for entry in self.staging_dir.iterdir():
                if entry.name.startswith(FETCHING):
                    shutil.rmtree(entry, ignore_errors=True)

    def _fetch_locked(self, stored: StoredFile, target: Path) -> int:
        started = time.monotonic()
        folder = self.staging_dir / f"{FETCHING}{os.getpid()}-{secrets.token_hex(4)}"
        folder.mkdir(parents=True)
        try:
            temporary = folder / "blob"
            digest = hashlib.sha256()
            size = 0
            with temporary.open("xb") as out:
                for chunk in self.store.blob_chunks(stored.sha256):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if (digest.hexdigest(), size) != (stored.sha256, stored.size):
                raise FetchError(
                    f"the blob's {size} bytes have SHA-256 {digest.hexdigest()}, "
                    f"not the {stored.size} bytes of {stored.sha256} recorded"
                )
            made = _make_folders(target.parent, self.store_dir)
            os.replace(temporary, target)
            fsync_folders([target.parent, *made])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.verifier.vouch(stored, os.stat(target))
        _log().info(
            "stored file {path} fetched from the store ({size} bytes, {seconds:.2f} s)",
            path=stored.path.as_posix(),
            size=size,
            seconds=time.monotonic() - started,
            sha256=stored.sha256,
            event="file.fetched",
        )
        return size


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (made 0600 if missing), waited for."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _then(first: CacheFill, then: CacheFill) -> CacheFill:
    """Two passes of one fill as one: what both fetched, what the second still lacks."""
    return CacheFill(
        then.present,
        first.fetched + tuple(p for p in then.fetched if p not in first.fetched),
        first.repaired + tuple(p for p in then.repaired if p not in first.repaired),
        then.waiting,
        then.failed,
        first.bytes + then.bytes,
    )


def _make_folders(folder: Path, root: Path) -> list[Path]:
    """Make `folder` (under `root`) and its missing parents; return the parents of the
    folders made (their entries changed), deepest first."""
    missing: list[Path] = []
    at = folder
    while not at.exists() and at != root:
        missing.append(at)
        at = at.parent
    folder.mkdir(parents=True, exist_ok=True)
    return [m.parent for m in missing]
