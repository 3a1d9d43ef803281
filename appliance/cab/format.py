"""The MS-CAB format: the types, struct layouts, limits and checksum shared by the reader.

The lowest of the cabinet modules (`appliance.cab` and its `_cab_*` helpers, and
`appliance.cabwriter`): it imports none of them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO


class CabError(Exception):
    """One clear line, without the package's name (the caller prefixes it)."""


@dataclass(frozen=True)
class CabLimits:
    max_entries: int = 10_000
    max_total_bytes: int = 8 * 1024**3  # sum of uncompressed member sizes
    max_ratio: float = 200.0  # total uncompressed bytes / cabinet bytes
    max_name_bytes: int = 255  # per path component


@dataclass(frozen=True)
class CabMember:
    name: str  # sanitised, '/'-separated relative path
    size: int
    folder: int
    offset: int  # uoffFolderStart
    mtime: datetime | None


@dataclass(frozen=True)
class ExtractedMember:
    name: str
    size: int
    sha256: str  # hex
    path: Path | None  # where it was written (None when only hashed)


# --- the format (MS-CAB) -------------------------------------------------------------

_HEADER = struct.Struct("<4sIIIIIBBHHHHH")  # CFHEADER without the optional fields
_RESERVE = struct.Struct("<HBB")  # cbCFHeader, cbCFFolder, cbCFData
_FOLDER = struct.Struct("<IHH")  # coffCabStart, cCFData, typeCompress
_FILE = struct.Struct("<IIHHHH")  # cbFile, uoffFolderStart, iFolder, date, time, attribs
_DATA = struct.Struct("<IHH")  # csum, cbData, cbUncomp

FLAG_PREV_CABINET = 0x0001
FLAG_NEXT_CABINET = 0x0002
FLAG_RESERVE_PRESENT = 0x0004
ATTR_NAME_IS_UTF = 0x80
_SPANNED_FOLDERS = frozenset({0xFFFD, 0xFFFE, 0xFFFF})  # ifoldCONTINUED_*
_COMPRESSION = {0: "none", 1: "mszip", 2: "quantum", 3: "lzx"}
_BLOCK_MAX = 32768  # CAB_BLOCKMAX: uncompressed bytes per CFDATA
_INPUT_MAX = 32768 + 6144  # CAB_INPUTMAX: compressed bytes per CFDATA (libmspack)
_MAX_NAME_FIELD = 1024  # longest NUL-terminated szName we look for

_SCAN_CHUNK = 1 << 20
_READ_BUFFER = 1 << 20
_BATCH = 1 << 20  # bytes handed to the output thread at once
_QUEUE_DEPTH = 8  # batches queued per helper thread: about 8 MiB in flight


# --- checksum -------------------------------------------------------------------------

_FOLD_MASKS: dict[int, int] = {}


def checksum(data: bytes | bytearray | memoryview, seed: int = 0) -> int:
    """The MS-CAB checksum: XOR of the little-endian 32-bit words, libmspack's tail rule.

    The words are XOR-folded as one big integer (halving it until 32 bits remain), so a
    32 KiB block costs a few big-integer operations instead of 8192 Python-level steps.
    """
    view = memoryview(data).cast("B")
    n_words = len(view) >> 2
    folded = 0
    if n_words:
        width = 1  # a power of two >= n_words: the fold masks repeat from block to block
        while width < n_words:
            width <<= 1
        half = width >> 1 if width > 1 else 1
        split = min(half, n_words) * 4
        folded = int.from_bytes(view[:split], "little") ^ int.from_bytes(
            view[split : n_words * 4], "little"
        )
        width = half
        while width > 1:
            width >>= 1
            bits = width * 32
            mask = _FOLD_MASKS.get(bits)
            if mask is None:
                mask = _FOLD_MASKS.setdefault(bits, (1 << bits) - 1)
            folded = (folded & mask) ^ (folded >> bits)
    tail = 0
    for byte in view[n_words * 4 :]:  # 3 bytes: b0<<16 | b1<<8 | b2, as libmspack
        tail = (tail << 8) | byte
    return seed ^ folded ^ tail


def _verify_checksum(csum: int, header: bytes, data: bytes, n: int, folder: int) -> None:
    body = checksum(data)
    if checksum(header[4:8], body) == csum:
        return
    # MS-CAB's text puts abReserve inside the checksummed range; libmspack leaves it out.
    if len(header) > _DATA.size and checksum(header[4:], body) == csum:
        return
    raise CabError(f"corrupt archive: bad checksum in data block {n} of folder {folder}")


def _read_at(f: IO[bytes], offset: int, size: int, what: str) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise CabError(f"truncated archive: {what} is cut short")
    return data


# --- the tables, as read -------------------------------------------------------------


@dataclass(frozen=True)
class _Folder:
    index: int
    kind: str  # 'none' | 'mszip' | 'quantum' | 'lzx'
    type_compress: int
    data_offset: int  # absolute offset of the first CFDATA in the file
    blocks: int
    uncompressed: int  # sum of cbUncomp


@dataclass(frozen=True)
class _Layout:
    folder_reserve: int
    data_reserve: int
    folders: tuple[_Folder, ...]
