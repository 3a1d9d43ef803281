"""A folder's data blocks: read, checksummed on a helper thread, inflated on the caller's.

The CFDATA checksum is a XOR of 32-bit words, computed with Python integers: it holds the
GIL, while zlib releases it. So the checksums run on a helper thread (`_Checker`) at the
same time as the inflating on the caller's, a few blocks at a time, in block order.
Nothing a block yields counts until the checksums have caught up: `folder_blocks` waits
for them at the end of the folder (and on any error, so that a bad checksum, the likelier
cause, is the error reported), and the caller keeps its output uncommitted until then. A
bad block is refused all the same; only the moment it is noticed moves, by at most twice
`_CHECK_AHEAD` blocks.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from queue import SimpleQueue
from typing import IO

from appliance.cab.format import _DATA, CabError, _Folder, _verify_checksum

_CHECK_BATCH = 8  # blocks handed to the checker at once
_CHECK_AHEAD = 64  # blocks handed to the checker before waiting for the ones before them
_WINDOW = 32768  # the MSZIP history each block may refer to

_Block = tuple[int, bytes, bytes, int, int]  # csum, header, data, block, folder
_Job = list[_Block] | threading.Event | None


class _Checker:
    """Verifies CFDATA checksums, in the order handed over, on a helper thread.

    Blocks are handed over `_CHECK_BATCH` at a time: each hand-over wakes the thread and
    makes it wait for the GIL, which cost as much CPU as the checksums themselves when it
    happened for every block."""

    def __init__(self) -> None:
        self._jobs: SimpleQueue[_Job] = SimpleQueue()
        self._batch: list[_Block] = []
        self._thread = threading.Thread(target=self._work, name="cab-checksum", daemon=True)
        self.failure: Exception | None = None  # the first bad block's error

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    def check(self, csum: int, header: bytes, data: bytes, n: int, folder: int) -> None:
        self._batch.append((csum, header, data, n, folder))
        if len(self._batch) >= _CHECK_BATCH:
            self._jobs.put(self._batch)
            self._batch = []

    def mark(self) -> threading.Event:
        """An event set once every block handed over before it has been checked."""
        if self._batch:
            self._jobs.put(self._batch)
            self._batch = []
        reached = threading.Event()
        self._jobs.put(reached)
        return reached

    def settle(self) -> None:
        """Wait for every block handed over so far; raise the first bad one's error."""
        self.mark().wait()
        self.raise_failure()

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if isinstance(job, threading.Event):
                job.set()
                continue
            for block in job:
                if self.failure is not None:
                    break
                try:
                    _verify_checksum(*block)
                except Exception as e:  # handed to the caller's thread; the loop goes on
                    self.failure = e


def folder_blocks(
    f: IO[bytes], folder: _Folder, data_reserve: int, need: int, checker: _Checker
) -> Iterator[bytes]:
    """The folder's uncompressed data, one CFDATA block at a time, until `need` bytes.

    Every block yielded has had its checksum verified, or will have by the time this
    generator finishes: a caller must not rely on the data before it has run to its end.
    """
    reached: threading.Event | None = None
    try:
        f.seek(folder.data_offset)
        header_size = _DATA.size + data_reserve
        mszip = folder.kind != "none"
        history = b""
        produced = 0
        for n in range(folder.blocks):
            if produced >= need:
                break
            if n % _CHECK_AHEAD == 0:  # keep the checker close: memory, and an early stop
                if reached is not None:
                    reached.wait()
                checker.raise_failure()
                reached = checker.mark()
            header = f.read(header_size)
            if len(header) != header_size:
                raise CabError(f"truncated archive: data block {n} of folder {folder.index}")
            csum, cb_data, cb_uncomp = _DATA.unpack_from(header)
            data = f.read(cb_data)
            if len(data) != cb_data:
                raise CabError(f"truncated archive: data block {n} of folder {folder.index}")
            if csum:
                checker.check(csum, header, data, n, folder.index)
            if mszip:
                out = _inflate(data, history, cb_uncomp, n, folder.index)
                history = out if len(out) >= _WINDOW else (history + out)[-_WINDOW:]
            else:
                out = data
            if len(out) != cb_uncomp:
                raise CabError(
                    f"corrupt archive: data block {n} of folder {folder.index} "
                    f"gives {len(out)} bytes instead of {cb_uncomp}"
                )
            produced += cb_uncomp
            yield out
    except Exception:
        checker.settle()  # a bad checksum up to this block explains the error better
        raise
    checker.settle()


def _inflate(data: bytes, history: bytes, cb_uncomp: int, n: int, folder: int) -> bytes:
    """One MSZIP block: "CK" and a deflate stream that may refer to the previous 32 KiB."""
    if data[:2] != b"CK":
        raise CabError(f"corrupt archive: data block {n} of folder {folder} has no MSZIP signature")
    inflate = zlib.decompressobj(-15, zdict=history) if history else zlib.decompressobj(-15)
    try:
        # at most cbUncomp (zlib then hands its buffer over without a copy); 0 means no limit
        out = inflate.decompress(memoryview(data)[2:], cb_uncomp or 1)
        if not inflate.eof and (inflate.unconsumed_tail or inflate.decompress(b"", 1)):
            raise CabError(
                f"corrupt archive: data block {n} of folder {folder} "
                f"gives more than {cb_uncomp} bytes"
            )
    except zlib.error as e:
        raise CabError(
            f"corrupt archive: data block {n} of folder {folder} does not inflate ({e})"
        ) from e
    return out
