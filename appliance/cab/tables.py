"""Finding a cabinet in a file and checking its header tables (names, sizes, blocks)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import IO

from appliance.cab.format import (
    _BLOCK_MAX,
    _COMPRESSION,
    _DATA,
    _FILE,
    _HEADER,
    _INPUT_MAX,
    _MAX_NAME_FIELD,
    _SCAN_CHUNK,
    _SPANNED_FOLDERS,
    ATTR_NAME_IS_UTF,
    CabError,
    CabLimits,
    CabMember,
    _Folder,
)


def _check_header(header: bytes, pos: int, file_size: int) -> str:
    """'ok', 'truncated' (plausible but does not fit in the file) or 'no'."""
    if len(header) < _HEADER.size:
        return "no"
    sig, res1, cb_cabinet, res2, coff_files, res3, minor, major = _HEADER.unpack(header)[:8]
    if sig != b"MSCF" or res1 or res2 or res3 or (major, minor) != (1, 3):
        return "no"
    if cb_cabinet < _HEADER.size or not _HEADER.size <= coff_files <= cb_cabinet:
        return "no"
    return "ok" if pos + cb_cabinet <= file_size else "truncated"


def _find_cabinet(f: IO[bytes], file_size: int) -> tuple[int, bytes]:
    """The offset and fixed header of the first plausible cabinet, reading in chunks."""
    truncated: tuple[int, int] | None = None
    carry = b""
    pos = 0
    while pos < file_size:
        f.seek(pos)
        chunk = f.read(_SCAN_CHUNK)
        if not chunk:
            break
        data = carry + chunk
        start = pos - len(carry)
        i = data.find(b"MSCF")
        while i >= 0:
            where = start + i
            header = data[i : i + _HEADER.size]
            if len(header) < _HEADER.size:
                f.seek(where)
                header = f.read(_HEADER.size)
            verdict = _check_header(header, where, file_size)
            if verdict == "ok":
                return where, header
            if verdict == "truncated" and truncated is None:
                truncated = (where, _HEADER.unpack(header)[2])
            i = data.find(b"MSCF", i + 1)
        carry = data[-3:]
        pos += len(chunk)
    if truncated is not None:
        where, declared = truncated
        raise CabError(
            f"truncated archive: the cabinet declares {declared} bytes "
            f"but only {file_size - where} are present"
        )
    raise CabError("not a cabinet: no MSCF header found")


def _check_volume(total: int, cb_cabinet: int, limits: CabLimits) -> None:
    if total > limits.max_total_bytes:
        raise CabError(
            f"too large: {total} bytes uncompressed (the limit is {limits.max_total_bytes})"
        )
    ratio = total / cb_cabinet
    if ratio > limits.max_ratio:
        raise CabError(
            f"compression ratio {ratio:.0f}:1 is over the limit of {limits.max_ratio:g}:1 "
            f"({total} bytes from a {cb_cabinet}-byte cabinet)"
        )


def _parse_files(table: bytes, n_files: int, n_folders: int, limits: CabLimits) -> list[CabMember]:
    members: list[CabMember] = []
    pos = 0
    for _ in range(n_files):
        if pos + _FILE.size > len(table):
            raise CabError("truncated archive: the file table is cut short")
        size, offset, folder, date, time, attribs = _FILE.unpack_from(table, pos)
        pos += _FILE.size
        nul = table.find(b"\0", pos, pos + _MAX_NAME_FIELD)
        if nul < 0:
            if len(table) - pos < _MAX_NAME_FIELD:
                raise CabError("truncated archive: the file table is cut short")
            raise CabError("corrupt archive: a member name is unterminated or too long")
        name = _clean_name(table[pos:nul], attribs, limits)
        pos = nul + 1
        if folder in _SPANNED_FOLDERS:
            raise CabError("spanned cabinet sets are not supported")
        if folder >= n_folders:
            raise CabError(
                f"corrupt archive: member {name!r} is in folder {folder}, "
                f"but the cabinet has {n_folders}"
            )
        members.append(CabMember(name, size, folder, offset, _dos_time(date, time)))
    _check_unique(members)
    return members


def _clean_name(raw: bytes, attribs: int, limits: CabLimits) -> str:
    if attribs & ATTR_NAME_IS_UTF:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CabError(f"corrupt archive: member name {raw!r} is not valid UTF-8") from e
    else:
        text = raw.decode("cp1252", errors="replace")
    problem = _name_problem(text, limits.max_name_bytes)
    if problem:
        raise CabError(f"unsafe member name {text!r}: {problem}")
    return text.replace("\\", "/")


def _name_problem(text: str, max_name_bytes: int) -> str | None:
    if not text:
        return "the name is empty"
    if not text.isprintable():  # C0/C1 controls, and invisible ones such as U+202E
        return "it contains a control or other non-printable character"
    if text[0] in "/\\":
        return "it is an absolute path"
    if ":" in text:
        return "it contains ':' (a drive or stream)"
    for part in text.replace("\\", "/").split("/"):
        if part == "":
            return "it has an empty path component"
        if part in (".", ".."):
            return f"it has a '{part}' component"
        if len(part.encode("utf-8")) > max_name_bytes:
            return f"a component is longer than {max_name_bytes} bytes"
    return None


def _check_unique(members: Sequence[CabMember]) -> None:
    files: dict[str, str] = {}
    dirs: dict[str, str] = {}
    for m in members:
        key = m.name.casefold()
        if key in files:
            other = files[key]
            if other == m.name:
                raise CabError(f"duplicate member name: {m.name!r} appears twice")
            raise CabError(f"duplicate member name: {other!r} and {m.name!r} differ only by case")
        files[key] = m.name
        parts = key.split("/")
        for i in range(1, len(parts)):
            dirs.setdefault("/".join(parts[:i]), m.name)
    for key, name in files.items():
        if key in dirs:
            raise CabError(f"member {name!r} is also the folder of {dirs[key]!r}")


def _dos_time(date: int, time: int) -> datetime | None:
    try:
        return datetime(
            1980 + (date >> 9),
            (date >> 5) & 0xF,
            date & 0x1F,
            time >> 11,
            (time >> 5) & 0x3F,
            (time & 0x1F) * 2,
        )
    except ValueError:
        return None


def _walk_folder(
    f: IO[bytes],
    index: int,
    base: int,
    end: int,
    coff: int,
    count: int,
    type_compress: int,
    data_reserve: int,
) -> _Folder:
    """Sum a folder's cbUncomp by reading each CFDATA header where the one before says.

    One pread a block (about 30,000 for a 1 GB package): a seek and a read through the
    file object cost twice the system calls and ten times the time."""
    kind = _COMPRESSION.get(type_compress & 0x000F)
    if kind is None:
        raise CabError(f"unknown compression type {type_compress:#06x} in folder {index}")
    pos = start = base + coff
    header_size = _DATA.size + data_reserve
    uncompressed = 0
    fd = f.fileno()
    for n in range(count):
        if pos + header_size > end:
            raise CabError(f"truncated archive: data block {n} of folder {index} is missing")
        raw = os.pread(fd, _DATA.size, pos)
        if len(raw) != _DATA.size:
            raise CabError("truncated archive: a data block is cut short")
        _, cb_data, cb_uncomp = _DATA.unpack(raw)
        if cb_uncomp > _BLOCK_MAX or cb_data > _INPUT_MAX:
            raise CabError(f"corrupt archive: data block {n} of folder {index} is too large")
        if kind == "none" and cb_data != cb_uncomp:
            raise CabError(
                f"corrupt archive: stored data block {n} of folder {index} has "
                f"{cb_data} bytes but declares {cb_uncomp}"
            )
        pos += header_size + cb_data
        if pos > end:
            raise CabError(f"truncated archive: data block {n} of folder {index} is cut short")
        uncompressed += cb_uncomp
    return _Folder(index, kind, type_compress, start, count, uncompressed)
