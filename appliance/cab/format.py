"""The MS-CAB format: the types, struct layouts, limits and checks shared by the reader.

Of the cabinet modules it imports only `scanner` (the checksum, standard library only);
the others import it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from appliance.cab.scanner import bad_checksum, block_ok


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


def _verify_checksum(csum: int, header: bytes, data: bytes, n: int, folder: int) -> None:
    if not block_ok(csum, header, data):
        raise CabError(bad_checksum(folder, n))


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
