"""Extraction output: the files created, and the helper threads that hash and write."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from appliance.cab.format import _QUEUE_DEPTH, CabError, CabMember

if TYPE_CHECKING:
    from _hashlib import HASH


class _Cleanup:
    """What an extraction created, so a failure can take it all back."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.dirs: list[Path] = []
        self.sinks: list[_Sink] = []

    def make_dirs(self, path: Path) -> None:
        missing: list[Path] = []
        p = path
        while not p.is_dir():
            missing.append(p)
            if p.parent == p:
                break
            p = p.parent
        for d in reversed(missing):
            d.mkdir()
            self.dirs.append(d)

    def open(self, sink: _Sink) -> None:
        """Create the member's file (exclusively), if it is to be written."""
        if sink.path is None:
            return
        self.make_dirs(sink.path.parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        sink.fd = os.open(sink.path, flags, 0o644)
        self.files.append(sink.path)
        self.sinks.append(sink)

    def close_all(self) -> None:
        """Close what the output threads have not (they close each file after its fsync)."""
        for sink in self.sinks:
            if sink.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(sink.fd)
                sink.fd = -1
        self.sinks.clear()

    def undo(self) -> None:
        self.close_all()
        for path in self.files:
            with contextlib.suppress(OSError):
                path.unlink()
        for d in reversed(self.dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
        self.files.clear()
        self.dirs.clear()


class _Sink:
    """One member on its way out: a file descriptor or a buffer, and its hash."""

    def __init__(self, member: CabMember, path: Path | None, buffer: bytearray | None) -> None:
        self.member = member
        self.end = member.offset + member.size
        self.path = path
        self.fd = -1
        self.buffer = buffer
        self.hash: HASH = hashlib.sha256()
        self.pieces: list[memoryview] = []
        self.pending_bytes = 0
        self.written = 0
        self.digest = ""
        self.written_to = 0  # bytes written to fd (on the writing thread)
        self.flushed_to = 0  # bytes whose write-back has been started

    def add(self, piece: memoryview) -> None:
        self.pieces.append(piece)
        self.pending_bytes += len(piece)

    def take(self) -> list[memoryview]:
        """The pending pieces, as they are: the helper threads hash and write them without
        joining them first (a copy of every byte on the reading thread)."""
        pieces = self.pieces
        self.pieces, self.pending_bytes = [], 0
        return pieces

    # on the hashing thread
    def hash_pieces(self, pieces: list[memoryview] | None) -> None:
        if pieces is not None:
            for piece in pieces:
                self.hash.update(piece)
                self.written += len(piece)
            return
        if self.written != self.member.size:
            raise CabError(
                f"corrupt archive: {self.member.name!r} came out as {self.written} "
                f"bytes instead of {self.member.size}"
            )
        self.digest = self.hash.hexdigest()

    # on the writing thread
    def write_pieces(self, pieces: list[memoryview]) -> None:
        if self.fd >= 0:
            self.flushed_to = _write_all(self.fd, pieces, self.written_to, self.flushed_to)
            self.written_to += sum(len(p) for p in pieces)
        if self.buffer is not None:
            for piece in pieces:
                self.buffer += piece

    def hand_over(self) -> int:
        """The finished file's descriptor, now the caller's to fsync and close (-1: none)."""
        fd, self.fd = self.fd, -1
        return fd


def _write_all(fd: int, pieces: list[memoryview], at: int, flushed: int) -> int:
    """Write `pieces` at offset `at`; start the write-back of what is written once a few
    MiB have gathered, and return where it has been started to.

    The disk then works while the rest is inflated, and the fsync that closes each file
    finds little left to do (about 0.12 s a 256 MiB file here otherwise, while the queue
    behind it fills). POSIX_FADV_DONTNEED is how Python can ask Linux for it (as
    sync_file_range would): it starts write-back of the dirty pages in the range, and
    drops only pages already clean (none, just after writing them). Durability still
    rests on the fsync alone."""
    total = sum(len(p) for p in pieces)
    written = os.writev(fd, pieces) if len(pieces) <= 512 else 0
    if written < total:
        rest = memoryview(b"".join(pieces))[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]
    end = at + total
    if end - flushed >= _WRITE_BACK and _FADVISE is not None:
        with contextlib.suppress(OSError):
            _FADVISE(fd, flushed, end - flushed, os.POSIX_FADV_DONTNEED)
        return end
    return flushed


_WRITE_BACK = 8 << 20  # bytes written before their write-back is started
_FADVISE = getattr(os, "posix_fadvise", None)


_T = TypeVar("_T")


class _Worker(Generic[_T]):
    """A thread that applies `step` to queued jobs; its first error is kept for the caller."""

    def __init__(self, name: str, step: Callable[[_T], None]) -> None:
        self._step = step
        self._queue: queue.Queue[_T | None] = queue.Queue(_QUEUE_DEPTH)
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._stopped = False
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def put(self, job: _T) -> None:
        self._queue.put(job)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self._step(job)
                except BaseException as e:  # handed to the caller's thread
                    self.error = e


class _Syncer:
    """fsyncs and closes finished files, a few at a time, on threads of its own.

    The writing thread goes on with the next file meanwhile, and the disk cache flushes
    that several fsyncs wait for at once are merged into fewer. Every file is fsynced
    before `stop` returns; after an error the rest are only closed."""

    def __init__(self, threads: int = 4) -> None:
        self._queue: queue.Queue[int | None] = queue.Queue(_QUEUE_DEPTH)
        self._threads = [
            threading.Thread(target=self._work, name="cab-fsync", daemon=True)
            for _ in range(threads)
        ]
        self._stopped = False
        self.error: OSError | None = None

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def put(self, fd: int) -> None:
        self._queue.put(fd)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            for _ in self._threads:
                self._queue.put(None)
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (fd := self._queue.get()) is not None:
            try:
                if self.error is None:
                    os.fsync(fd)
            except OSError as e:  # handed to the caller's thread
                self.error = self.error or e
            finally:
                os.close(fd)


_Job = tuple[_Sink, list[memoryview] | None]


class _Output:
    """Hashes on one helper thread and writes on another: hashlib and os.writev release
    the GIL, so both overlap with reading, checksumming and inflating on the caller's;
    finished files are fsynced on the `_Syncer`'s."""

    def __init__(self) -> None:
        self._hasher = _Worker[_Job]("cab-hash", lambda job: job[0].hash_pieces(job[1]))
        self._writer = _Worker[_Job]("cab-write", self._write)
        self._syncer = _Syncer()

    def start(self) -> None:
        self._hasher.start()
        self._writer.start()
        self._syncer.start()

    def _write(self, job: _Job) -> None:
        sink, pieces = job
        if pieces is not None:
            sink.write_pieces(pieces)
        elif (fd := sink.hand_over()) >= 0:
            self._syncer.put(fd)

    def send(self, sink: _Sink) -> None:
        if sink.pieces:
            self._put((sink, sink.take()))

    def finish(self, sink: _Sink) -> None:
        self._put((sink, None))

    def stop(self) -> None:
        self._hasher.stop()
        self._writer.stop()
        self._syncer.stop()  # after the writer, which hands it the files

    def raise_error(self) -> None:
        # an OSError from writing wins: it says why the data went missing
        for error in (self._writer.error, self._syncer.error, self._hasher.error):
            if error is not None:
                raise error

    def _put(self, job: _Job) -> None:
        self.raise_error()
        self._hasher.put(job)
        self._writer.put(job)
