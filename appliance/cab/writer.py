"""Writing Microsoft Cabinet files: one folder, MSZIP or stored, streamed to disk.

Used for the sample package and for tests. Each MSZIP block is an independent raw
deflate stream (no history), which every reader accepts. The file is written under a
temporary name beside `out` and renamed into place, so a crash never leaves half a
cabinet at `out`.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from appliance.cab.format import _FILE, _FOLDER, _HEADER, ATTR_NAME_IS_UTF
from appliance.cab.scanner import checksum

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["CabEntry", "CabWriteError", "write_cab"]

_BLOCK = 32768
_LEVEL = 6
_THREADS = min(4, os.cpu_count() or 1)  # zlib releases the GIL: blocks compress in parallel
_MAX_BLOCKS = 0xFFFF  # CFFOLDER.cCFData is 16 bits
_ATTR_ARCHIVE = 0x20
_TYPE = {"none": 0, "mszip": 1}
_Bytes = bytes | bytearray | memoryview


class CabWriteError(ValueError):
    """The entries cannot be written as a cabinet (bad name, wrong size, too big)."""


@dataclass(frozen=True)
class CabEntry:
    name: str  # '/'-separated; written with '\' separators
    size: int
    chunks: Callable[[], Iterable[bytes]]  # produces exactly `size` bytes, in any chunk sizes
    mtime: datetime


def write_cab(out: Path, entries: Sequence[CabEntry], *, compression: str = "mszip") -> None:
    """Write `entries` as a single-folder cabinet at `out` (replacing it atomically)."""
    if compression not in _TYPE:
        raise ValueError(f"compression must be 'mszip' or 'none', not {compression!r}")
    names = [_encode_name(e.name) for e in entries]
    total = sum(e.size for e in entries)
    if any(e.size < 0 for e in entries) or total > _MAX_BLOCKS * _BLOCK:
        raise CabWriteError(
            f"{total} bytes do not fit in one cabinet folder (at most {_MAX_BLOCKS * _BLOCK})"
        )

    folder_at = _HEADER.size
    coff_files = folder_at + _FOLDER.size
    files = bytearray()
    offset = 0
    for entry, (raw, attribs) in zip(entries, names, strict=True):
        date, time = _dos_time(entry.mtime)
        files += _FILE.pack(entry.size, offset, 0, date, time, attribs) + raw + b"\0"
        offset += entry.size
    data_at = coff_files + len(files)

    from concurrent.futures import ThreadPoolExecutor  # only here: `import` never needs it

    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb", buffering=1 << 20) as f,
            ThreadPoolExecutor(_THREADS, thread_name_prefix="cab-deflate") as pool,
        ):
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes it 0600
            # cbCabinet and cCFData are patched once the data is written
            f.write(_HEADER.pack(b"MSCF", 0, 0, 0, coff_files, 0, 3, 1, 1, len(entries), 0, 0, 0))
            f.write(_FOLDER.pack(data_at, 0, _TYPE[compression]))
            f.write(files)
            blocks = _Blocks(f, pool if compression == "mszip" else None)
            for entry in entries:
                produced = 0
                for chunk in entry.chunks():
                    produced += len(chunk)
                    if produced > entry.size:
                        break
                    blocks.feed(chunk)
                if produced > entry.size:
                    raise CabWriteError(
                        f"{entry.name!r} produced more than its size of {entry.size} bytes"
                    )
                if produced < entry.size:
                    raise CabWriteError(
                        f"{entry.name!r} produced {produced} bytes, but its size is {entry.size}"
                    )
            blocks.finish()
            size = f.tell()
            f.seek(8)
            f.write(struct.pack("<I", size))
            f.seek(folder_at + 4)
            f.write(struct.pack("<H", blocks.count))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _encode_name(name: str) -> tuple[bytes, int]:
    if not name or "\0" in name:
        raise CabWriteError(f"bad member name {name!r}")
    text = name.replace("/", "\\")
    if text.isascii():
        raw, attribs = text.encode("ascii"), _ATTR_ARCHIVE
    else:
        raw, attribs = text.encode("utf-8"), _ATTR_ARCHIVE | ATTR_NAME_IS_UTF
    if len(raw) > 255:
        raise CabWriteError(f"member name {name!r} is longer than 255 bytes")
    return raw, attribs


def _dos_time(mtime: datetime) -> tuple[int, int]:
    if mtime.year < 1980:
        return (1 << 5) | 1, 0
    if mtime.year > 2107:
        return (127 << 9) | (12 << 5) | 31, (23 << 11) | (59 << 5) | 29
    date = ((mtime.year - 1980) << 9) | (mtime.month << 5) | mtime.day
    time = (mtime.hour << 11) | (mtime.minute << 5) | (mtime.second // 2)
    return date, time


class _Blocks:
    """Cuts the folder's byte stream into 32 KiB CFDATA blocks and writes them in order,
    compressing up to a few blocks ahead on `pool` (None: stored, no compression)."""

    def __init__(self, f: IO[bytes], pool: ThreadPoolExecutor | None) -> None:
        self._f = f
        self._pool = pool
        self._pending = bytearray()
        self._in_flight: deque[Future[bytes]] = deque()
        self.count = 0

    def feed(self, chunk: _Bytes) -> None:
        view = memoryview(chunk).cast("B")
        if self._pending:
            take = _BLOCK - len(self._pending)
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < _BLOCK:
                return
            self._add(self._pending)
            self._pending = bytearray()
        while len(view) >= _BLOCK:
            self._add(view[:_BLOCK])
            view = view[_BLOCK:]
        self._pending += view

    def finish(self) -> None:
        if self._pending:
            self._add(self._pending)
            self._pending = bytearray()
        while self._in_flight:
            self._f.write(self._in_flight.popleft().result())

    def _add(self, block: bytearray | memoryview) -> None:
        if self.count >= _MAX_BLOCKS:
            raise CabWriteError("too much data for one cabinet folder")
        self.count += 1
        if self._pool is None:
            self._f.write(_cfdata(block, block))
            return
        # a copy: the producer may reuse its buffer once it has been fed
        self._in_flight.append(self._pool.submit(_deflate_block, bytes(block)))
        if len(self._in_flight) >= 4 * _THREADS:
            self._f.write(self._in_flight.popleft().result())


def _deflate_block(block: bytes) -> bytes:
    """An MSZIP block: 'CK' and an independent raw deflate stream, with its CFDATA header."""
    deflate = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
    return _cfdata(b"CK" + deflate.compress(block) + deflate.flush(), block)


def _cfdata(payload: _Bytes, block: _Bytes) -> bytes:
    sizes = struct.pack("<HH", len(payload), len(block))
    return struct.pack("<I", checksum(sizes, checksum(payload))) + sizes + payload
