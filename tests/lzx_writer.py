"""Test helpers: cabinets built byte by byte, and LZX cabinets without a Microsoft tool.

`build_cab` lays out CFHEADER / CFFOLDER / CFFILE / CFDATA exactly as given, so tests
can make archives that no well-behaved writer would (hostile names, reserved areas,
spanned flags, odd compression types, MSZIP blocks that use the previous block as
history).

`write_lzx_cab` writes a real LZX folder that only uses LZX *uncompressed* blocks
(block type 3), which cabextract (libmspack's lzxd.c) decodes:

- one 32 KiB frame per CFDATA block, one uncompressed block per frame;
- the bitstream is 16-bit little-endian words, read most significant bit first;
- the stream starts with 1 bit for E8 translation (0: off), then each block has a
  3-bit type (3) and a 24-bit size;
- an uncompressed block then aligns to 16 bits. libmspack discards the bits left in
  its buffer, and if none are left it still reads (and drops) one more 16-bit word:
  here the 28 or 27 header bits always leave some, so the header is two words;
- then R0, R1, R2 as little-endian uint32 (1, 1, 1), the raw bytes, and one pad byte
  when the block size is odd (libmspack skips it before the next block header).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FRAME = 32768
LZX_WINDOW_BITS = 16
TYPE_NONE, TYPE_MSZIP, TYPE_QUANTUM, TYPE_LZX = 0, 1, 2, 3
LZX_TYPE = TYPE_LZX | (LZX_WINDOW_BITS << 8)
DOS_DATE = ((2013 - 1980) << 9) | (4 << 5) | 2  # 2013-04-02
DOS_TIME = 12 << 11  # 12:00:00


def reference_checksum(data: bytes, seed: int = 0) -> int:
    """The MS-CAB checksum, word by word, as libmspack's cabd_checksum (slow, obvious)."""
    csum = seed
    n = len(data) // 4
    for (word,) in struct.iter_unpack("<I", data[: n * 4]):
        csum ^= word
    tail = 0
    for byte in data[n * 4 :]:
        tail = (tail << 8) | byte
    return csum ^ tail


@dataclass
class RawFile:
    name: bytes
    size: int
    offset: int = 0
    folder: int = 0
    attribs: int = 0x20
    date: int = DOS_DATE
    time: int = DOS_TIME


@dataclass
class RawFolder:
    type_compress: int
    blocks: list[tuple[bytes, int]]  # (CFDATA payload, cbUncomp)


def build_cab(
    files: Sequence[RawFile],
    folders: Sequence[RawFolder],
    *,
    flags: int = 0,
    header_reserve: bytes = b"",
    folder_reserve: int = 0,
    data_reserve: int = 0,
    checksums: bool = True,
    set_strings: bytes = b"",
) -> bytes:
    """A cabinet laid out as given. A reserve area is written when any reserve is asked
    for (flag 0x0004 is added); `set_strings` go after it (for PREV/NEXT flags)."""
    reserve = bool(header_reserve or folder_reserve or data_reserve)
    if reserve:
        flags |= 0x0004
    head_size = 36 + (4 + len(header_reserve) if reserve else 0) + len(set_strings)
    coff_files = head_size + len(folders) * (8 + folder_reserve)
    file_table = b"".join(
        struct.pack("<IIHHHH", f.size, f.offset, f.folder, f.date, f.time, f.attribs)
        + f.name
        + b"\0"
        for f in files
    )
    pos = coff_files + len(file_table)
    folder_table = b""
    data = b""
    for folder in folders:
        folder_table += struct.pack(
            "<IHH", pos + len(data), len(folder.blocks), folder.type_compress
        ) + bytes(folder_reserve)
        for payload, uncomp in folder.blocks:
            sizes = struct.pack("<HH", len(payload), uncomp)
            csum = reference_checksum(sizes, reference_checksum(payload)) if checksums else 0
            data += struct.pack("<I", csum) + sizes + bytes(data_reserve) + payload
    total = coff_files + len(file_table) + len(data)
    header = struct.pack(
        "<4sIIIIIBBHHHHH",
        b"MSCF",
        0,
        total,
        0,
        coff_files,
        0,
        3,
        1,
        len(folders),
        len(files),
        flags,
        0x1234,
        0,
    )
    if reserve:
        header += struct.pack("<HBB", len(header_reserve), folder_reserve, data_reserve)
        header += header_reserve
    return header + set_strings + folder_table + file_table + data


class _BitWriter:
    """LZX's bitstream: bits go most significant first into 16-bit little-endian words."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0
        self._n = 0

    def write(self, value: int, bits: int) -> None:
        for i in reversed(range(bits)):
            self._acc = (self._acc << 1) | ((value >> i) & 1)
            self._n += 1
            if self._n == 16:
                self._out += self._acc.to_bytes(2, "little")
                self._acc = self._n = 0

    def align(self) -> bytes:
        """Pad to a word; when already aligned, libmspack still drops one more word."""
        self.write(0, 16 - self._n)
        return bytes(self._out)


def lzx_blocks(data: bytes) -> list[tuple[bytes, int]]:
    """CFDATA payloads for `data`: one frame each, each one LZX uncompressed block."""
    blocks = []
    for start in range(0, len(data), FRAME):
        frame = data[start : start + FRAME]
        bits = _BitWriter()
        if start == 0:
            bits.write(0, 1)  # no E8 (call instruction) translation
        bits.write(3, 3)  # block type: uncompressed
        bits.write(len(frame), 24)
        payload = bits.align() + struct.pack("<III", 1, 1, 1) + frame
        if len(frame) & 1:
            payload += b"\0"
        blocks.append((payload, len(frame)))
    return blocks


def write_lzx_cab(out: Path, files: dict[str, bytes]) -> None:
    """An LZX-compressed cabinet (window 2^16) holding `files`, one folder."""
    raw_files = []
    offset = 0
    for name, data in files.items():
        raw_files.append(RawFile(name.replace("/", "\\").encode("ascii"), len(data), offset))
        offset += len(data)
    folder = RawFolder(LZX_TYPE, lzx_blocks(b"".join(files.values())))
    out.write_bytes(build_cab(raw_files, [folder]))
