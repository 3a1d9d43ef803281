"""Reading Microsoft Cabinet files (MS-CAB) without holding them in memory.

`open_package` finds the cabinet (in a `.cab`, or embedded in a self-extracting `.exe`),
reads its header tables and refuses anything over the limits or with an unsafe member
name before a single block is decompressed. `Cabinet.extract` then streams the members
out: MSZIP and stored folders are decoded here block by block (checksums, block sizes
and member sizes verified on the way, SHA-256 computed as the data goes to disk); LZX
and Quantum folders, which Python cannot decode, go through the `cabextract` program.

cabarchive is not used for reading: it holds the whole archive in memory and has no
limits (pitfalls §3).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from _hashlib import HASH

__all__ = [
    "CabError",
    "CabLimits",
    "CabMember",
    "Cabinet",
    "ExtractedMember",
    "checksum",
    "open_package",
]


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


# --- opening --------------------------------------------------------------------------


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


def open_package(path: Path, limits: CabLimits) -> Cabinet:
    """Open a `.cab`, or a file (such as a self-extracting `.exe`) that embeds one.

    Raises CabError for anything wrong with the archive; OSError if it cannot be read.
    """
    with open(path, "rb", buffering=0) as f:
        file_size = os.fstat(f.fileno()).st_size
        try:
            base, header = _find_cabinet(f, file_size)
            return _read_tables(f, Path(path), base, header, limits)
        except CabError:
            raise
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise CabError(f"corrupt archive: {e}") from e


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


def _read_at(f: IO[bytes], offset: int, size: int, what: str) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise CabError(f"truncated archive: {what} is cut short")
    return data


def _read_tables(f: IO[bytes], path: Path, base: int, header: bytes, limits: CabLimits) -> Cabinet:
    (_, _, cb_cabinet, _, coff_files, _, _, _, n_folders, n_files, flags, _, i_cabinet) = (
        _HEADER.unpack(header)
    )
    if flags & (FLAG_PREV_CABINET | FLAG_NEXT_CABINET) or i_cabinet:
        raise CabError("spanned cabinet sets are not supported")
    if n_files > limits.max_entries:
        raise CabError(f"too many entries: {n_files} (the limit is {limits.max_entries})")
    if n_folders > limits.max_entries:
        raise CabError(f"too many folders: {n_folders} (the limit is {limits.max_entries})")
    end = base + cb_cabinet

    pos = base + _HEADER.size
    header_reserve = folder_reserve = data_reserve = 0
    if flags & FLAG_RESERVE_PRESENT:
        header_reserve, folder_reserve, data_reserve = _RESERVE.unpack(
            _read_at(f, pos, _RESERVE.size, "the header")
        )
        pos += _RESERVE.size + header_reserve
    folder_size = _FOLDER.size + folder_reserve
    if pos + n_folders * folder_size > end:
        raise CabError("truncated archive: the folder table runs past the end of the cabinet")
    table = _read_at(f, pos, n_folders * folder_size, "the folder table")
    raw_folders = [_FOLDER.unpack_from(table, i * folder_size) for i in range(n_folders)]

    files_at = base + coff_files
    files_len = min(end - files_at, n_files * (_FILE.size + _MAX_NAME_FIELD))
    files_table = _read_at(f, files_at, files_len, "the file table")
    members = _parse_files(files_table, n_files, n_folders, limits)

    total = sum(m.size for m in members)
    _check_volume(total, cb_cabinet, limits)

    # each CFDATA takes at least its header: more than fit means folders share their data,
    # and walking them could take a very long time
    if sum(count for _, count, _ in raw_folders) * (_DATA.size + data_reserve) > cb_cabinet:
        raise CabError("corrupt archive: the folders declare more data blocks than fit")
    folders = tuple(
        _walk_folder(f, i, base, end, coff, count, tcomp, data_reserve)
        for i, (coff, count, tcomp) in enumerate(raw_folders)
    )
    needed = [0] * n_folders
    for m in members:
        folder = folders[m.folder]
        if m.offset + m.size > folder.uncompressed:
            raise CabError(
                f"corrupt archive: member {m.name!r} ends at byte {m.offset + m.size} of "
                f"folder {m.folder}, which holds only {folder.uncompressed} bytes"
            )
        needed[m.folder] = max(needed[m.folder], m.offset + m.size)
    _check_volume(sum(needed), cb_cabinet, limits)

    return Cabinet(
        path=path,
        base_offset=base,
        size=cb_cabinet,
        members=tuple(members),
        compression=tuple(folder.kind for folder in folders),
        layout=_Layout(folder_reserve, data_reserve, folders),
    )


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
            1980 + (date >> 9), (date >> 5) & 0xF, date & 0x1F,
            time >> 11, (time >> 5) & 0x3F, (time & 0x1F) * 2,
        )
    except ValueError:
        return None


def _walk_folder(
    f: IO[bytes], index: int, base: int, end: int, coff: int, count: int, type_compress: int,
    data_reserve: int,
) -> _Folder:
    """Sum a folder's cbUncomp by seeking from CFDATA header to CFDATA header."""
    kind = _COMPRESSION.get(type_compress & 0x000F)
    if kind is None:
        raise CabError(f"unknown compression type {type_compress:#06x} in folder {index}")
    pos = start = base + coff
    header_size = _DATA.size + data_reserve
    uncompressed = 0
    for n in range(count):
        if pos + header_size > end:
            raise CabError(f"truncated archive: data block {n} of folder {index} is missing")
        _, cb_data, cb_uncomp = _DATA.unpack(_read_at(f, pos, _DATA.size, "a data block"))
        if cb_uncomp > _BLOCK_MAX or cb_data > _INPUT_MAX:
            raise CabError(f"corrupt archive: data block {n} of folder {index} is too large")
        if kind == "none" and cb_data != cb_uncomp:
            raise CabError(f"corrupt archive: stored data block {n} of folder {index} has "
                           f"{cb_data} bytes but declares {cb_uncomp}")
        pos += header_size + cb_data
        if pos > end:
            raise CabError(f"truncated archive: data block {n} of folder {index} is cut short")
        uncompressed += cb_uncomp
    return _Folder(index, kind, type_compress, start, count, uncompressed)


# --- the cabinet ----------------------------------------------------------------------


class Cabinet:
    """An opened cabinet: its checked tables; data is read from `path` on demand."""

    def __init__(
        self, *, path: Path, base_offset: int, size: int, members: tuple[CabMember, ...],
        compression: tuple[str, ...], layout: _Layout,
    ) -> None:
        self.path = path
        self.base_offset = base_offset
        self.size = size
        self.members = members
        self.compression = compression
        self._layout = layout
        self._by_key = {m.name.casefold(): m for m in members}

    def member(self, name: str) -> CabMember:
        """Look a member up by name, ignoring case (`\\` or `/` separators); KeyError."""
        return self._by_key[name.replace("\\", "/").casefold()]

    def read_small(self, name: str, max_bytes: int) -> bytes:
        """A small member's bytes (e.g. updateInfo.xml); KeyError if absent."""
        member = self.member(name)
        if member.size > max_bytes:
            raise CabError(
                f"{member.name} is {member.size} bytes; at most {max_bytes} are accepted"
            )
        if self._layout.folders[member.folder].kind in ("lzx", "quantum"):
            with tempfile.TemporaryDirectory(prefix="ucupdates-cab-") as tmp:
                self.extract([member.name], Path(tmp))
                return (Path(tmp) / member.name).read_bytes()
        buffer = bytearray()
        cleanup = _Cleanup()
        self._run(self._streamed({member.folder: [_Sink(member, None, buffer)]}, cleanup), cleanup)
        return bytes(buffer)

    def extract(
        self, names: Iterable[str], dest_dir: Path, *, write: bool = True
    ) -> dict[str, ExtractedMember]:
        """Extract members to `dest_dir / member.name`, or only hash them (`write=False`).

        The result is keyed by the members' names as in `members`. A name not in the
        cabinet raises KeyError. On any failure every file and folder this call created
        is removed; OSError (e.g. a full disk) propagates as it is.
        """
        wanted: dict[str, CabMember] = {}
        for name in names:
            m = self.member(name)
            wanted[m.name] = m
        cleanup = _Cleanup()
        done: dict[str, ExtractedMember] = {}
        try:
            if write:
                cleanup.make_dirs(dest_dir)
            internal: dict[int, list[_Sink]] = {}
            external: dict[int, list[CabMember]] = {}
            for m in sorted(wanted.values(), key=lambda m: (m.folder, m.offset, m.size)):
                if m.size and self._layout.folders[m.folder].kind in ("lzx", "quantum"):
                    external.setdefault(m.folder, []).append(m)
                else:
                    path = dest_dir / m.name if write else None
                    internal.setdefault(m.folder, []).append(_Sink(m, path, None))
            self._run(self._streamed(internal, cleanup), cleanup)
            for sinks in internal.values():
                for s in sinks:
                    name = s.member.name
                    done[name] = ExtractedMember(name, s.written, s.digest, s.path)
            if external:
                done.update(self._external(external, dest_dir, write, cleanup))
        except BaseException:
            cleanup.undo()
            raise
        return done

    # -- the streaming path (stored and MSZIP folders) --

    def _run(self, work: Iterator[None], cleanup: _Cleanup) -> None:
        try:
            for _ in work:
                pass
        except (CabError, OSError):
            raise
        except (struct.error, zlib.error, IndexError, ValueError, OverflowError) as e:
            raise CabError(f"corrupt archive: {e}") from e
        finally:
            cleanup.close_all()

    def _streamed(self, by_folder: dict[int, list[_Sink]], cleanup: _Cleanup) -> Iterator[None]:
        if not by_folder:
            return
        output = _Output()
        output.start()
        try:
            with open(self.path, "rb", buffering=_READ_BUFFER) as f:
                if os.fstat(f.fileno()).st_size < self.base_offset + self.size:
                    raise CabError("truncated archive: the file shrank after it was opened")
                for index in sorted(by_folder):
                    folder = self._layout.folders[index]
                    self._stream_folder(f, folder, by_folder[index], output, cleanup)
                    yield None
        finally:
            output.stop()
        output.raise_error()

    def _stream_folder(
        self, f: IO[bytes], folder: _Folder, sinks: list[_Sink], output: _Output,
        cleanup: _Cleanup,
    ) -> None:
        sinks = sorted(sinks, key=lambda s: (s.member.offset, s.member.size))
        for s in sinks:
            if s.member.size == 0:
                cleanup.open(s)
                output.finish(s)
        pending = [s for s in sinks if s.member.size]
        need = max((s.end for s in pending), default=0)
        active: list[_Sink] = []
        next_up = 0
        pos = 0
        for block in self._blocks(f, folder, need):
            stop = pos + len(block)
            while next_up < len(pending) and pending[next_up].member.offset < stop:
                cleanup.open(pending[next_up])
                active.append(pending[next_up])
                next_up += 1
            if active:
                view = memoryview(block)
                still: list[_Sink] = []
                for s in active:
                    a = max(s.member.offset, pos) - pos
                    b = min(s.end, stop) - pos
                    s.add(view[a:b])
                    if s.end <= stop:
                        output.send(s)
                        output.finish(s)
                    else:
                        if s.pending_bytes >= _BATCH:
                            output.send(s)
                        still.append(s)
                active = still
            pos = stop
        if active or next_up < len(pending):
            raise CabError(f"corrupt archive: folder {folder.index} ends early")

    def _blocks(self, f: IO[bytes], folder: _Folder, need: int) -> Iterator[bytes]:
        """The folder's uncompressed data, one verified CFDATA block at a time.

        The checksum stays on this thread: it is the part of reading that holds the GIL,
        and on a helper thread it would stall this one (measured slower)."""
        f.seek(folder.data_offset)
        header_size = _DATA.size + self._layout.data_reserve
        history = b""
        produced = 0
        for n in range(folder.blocks):
            if produced >= need:
                return
            header = f.read(header_size)
            if len(header) != header_size:
                raise CabError(f"truncated archive: data block {n} of folder {folder.index}")
            csum, cb_data, cb_uncomp = _DATA.unpack_from(header)
            data = f.read(cb_data)
            if len(data) != cb_data:
                raise CabError(f"truncated archive: data block {n} of folder {folder.index}")
            if csum:
                _verify_checksum(csum, header, data, n, folder.index)
            if folder.kind == "none":
                out = data
            else:
                if data[:2] != b"CK":
                    raise CabError(f"corrupt archive: data block {n} of folder {folder.index} "
                                   "has no MSZIP signature")
                inflate = (zlib.decompressobj(-15, zdict=history) if history
                           else zlib.decompressobj(-15))
                try:
                    out = inflate.decompress(memoryview(data)[2:], cb_uncomp + 1)
                except zlib.error as e:
                    raise CabError(f"corrupt archive: data block {n} of folder {folder.index} "
                                   f"does not inflate ({e})") from e
                history = out if len(out) >= 32768 else (history + out)[-32768:]
            if len(out) != cb_uncomp:
                raise CabError(f"corrupt archive: data block {n} of folder {folder.index} "
                               f"gives {len(out)} bytes instead of {cb_uncomp}")
            produced += cb_uncomp
            yield out

    # -- the cabextract path (LZX and Quantum folders) --

    def _external(
        self, by_folder: dict[int, list[CabMember]], dest_dir: Path, write: bool,
        cleanup: _Cleanup,
    ) -> dict[str, ExtractedMember]:
        kinds = {self._layout.folders[i].kind for i in by_folder}
        program = shutil.which("cabextract")
        if program is None:
            kind = "LZX" if "lzx" in kinds else "Quantum"
            raise CabError(f"{kind}-compressed packages need the 'cabextract' program")
        parent = dest_dir if dest_dir.is_dir() else None
        tmp = Path(tempfile.mkdtemp(prefix=".cabextract-", dir=parent))
        try:
            order = [m for i in sorted(by_folder) for m in by_folder[i]]
            source = tmp / "input.cab"
            self._write_subset(source, by_folder)
            out_dir = tmp / "out"
            out_dir.mkdir()
            proc = subprocess.run(
                [program, "-q", "-d", str(out_dir), str(source)],
                stdin=subprocess.DEVNULL, capture_output=True, check=False,
            )
            # cabextract names the files it wrote to; put the members' names back
            text = proc.stderr.decode("utf-8", "replace").replace(f"{tmp}/", "")
            text = re.sub(r"\bout/(\d+)\b",
                          lambda g: repr(order[int(g[1])].name) if int(g[1]) < len(order)
                          else g[0], text)
            first = next((line.strip() for line in text.splitlines() if line.strip()), "")
            if proc.returncode != 0:
                raise CabError(f"cabextract failed: {first or f'exit status {proc.returncode}'}")
            done: dict[str, ExtractedMember] = {}
            for j, m in enumerate(order):
                src = out_dir / str(j)
                if not src.is_file():
                    raise CabError(f"cabextract did not produce {m.name!r}"
                                   + (f": {first}" if first else ""))
                digest, size = _hash_file(src, fsync=write)
                if size != m.size:
                    raise CabError(f"corrupt archive: {m.name!r} decompressed to {size} bytes "
                                   f"instead of {m.size}")
                path = None
                if write:
                    path = dest_dir / m.name
                    cleanup.make_dirs(path.parent)
                    os.link(src, path)
                    cleanup.files.append(path)
                done[m.name] = ExtractedMember(m.name, size, digest, path)
            return done
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _write_subset(self, out: Path, by_folder: dict[int, list[CabMember]]) -> None:
        """A cabinet for cabextract: only the folders and members wanted, named 0, 1, ...

        The member names are ours, so cabextract's own name handling cannot put a file
        anywhere unexpected, and a folder's data is copied only as far as it is needed.
        """
        layout = self._layout
        flags = FLAG_RESERVE_PRESENT if layout.folder_reserve or layout.data_reserve else 0
        header_size = _HEADER.size + (_RESERVE.size if flags else 0)
        folder_size = _FOLDER.size + layout.folder_reserve
        files = bytearray()
        j = 0
        spans: list[tuple[int, int, int, int]] = []  # data offset, length, blocks, type
        with open(self.path, "rb", buffering=0) as src:
            for new_index, index in enumerate(sorted(by_folder)):
                folder = layout.folders[index]
                need = max(m.offset + m.size for m in by_folder[index])
                length, blocks = self._span(src, folder, need)
                spans.append((folder.data_offset, length, blocks, folder.type_compress))
                for m in by_folder[index]:
                    files += _FILE.pack(m.size, m.offset, new_index, 0x21, 0, 0)
                    files += str(j).encode() + b"\0"
                    j += 1
            coff_files = header_size + len(spans) * folder_size
            pos = coff_files + len(files)
            table = bytearray()
            for _, length, blocks, type_compress in spans:
                table += _FOLDER.pack(pos, blocks, type_compress) + bytes(layout.folder_reserve)
                pos += length
            head = _HEADER.pack(b"MSCF", 0, pos, 0, coff_files, 0, 3, 1, len(spans), j, flags, 0, 0)
            if flags:
                head += _RESERVE.pack(0, layout.folder_reserve, layout.data_reserve)
            with open(out, "xb") as dst:
                dst.write(head + table + files)
                dst.flush()
                for offset, length, _, _ in spans:
                    _copy_range(src, dst, offset, length)

    def _span(self, f: IO[bytes], folder: _Folder, need: int) -> tuple[int, int]:
        """Bytes and CFDATA blocks from the folder's start that hold its first `need` bytes."""
        header_size = _DATA.size + self._layout.data_reserve
        pos = folder.data_offset
        produced = 0
        blocks = 0
        while produced < need and blocks < folder.blocks:
            _, cb_data, cb_uncomp = _DATA.unpack(_read_at(f, pos, _DATA.size, "a data block"))
            pos += header_size + cb_data
            produced += cb_uncomp
            blocks += 1
        return pos - folder.data_offset, blocks


def _verify_checksum(csum: int, header: bytes, data: bytes, n: int, folder: int) -> None:
    body = checksum(data)
    if checksum(header[4:8], body) == csum:
        return
    # MS-CAB's text puts abReserve inside the checksummed range; libmspack leaves it out.
    if len(header) > _DATA.size and checksum(header[4:], body) == csum:
        return
    raise CabError(f"corrupt archive: bad checksum in data block {n} of folder {folder}")


def _hash_file(path: Path, *, fsync: bool) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_READ_BUFFER):
            h.update(chunk)
            size += len(chunk)
        if fsync:
            os.fsync(f.fileno())
    return h.hexdigest(), size


def _copy_range(src: IO[bytes], dst: IO[bytes], offset: int, length: int) -> None:
    src_fd, dst_fd = src.fileno(), dst.fileno()
    dst_pos = os.lseek(dst_fd, 0, os.SEEK_END)
    while length > 0:
        try:
            n = os.copy_file_range(src_fd, dst_fd, length, offset, dst_pos)
        except (OSError, AttributeError):  # not on this system or file system
            n = 0
        if n <= 0:  # not supported here, or the source is shorter: copy by hand
            data = os.pread(src_fd, min(length, _READ_BUFFER), offset)
            if not data:
                raise CabError("truncated archive: data ends early")
            n = os.pwrite(dst_fd, data, dst_pos)
        offset += n
        dst_pos += n
        length -= n


# --- output: the files created, and the helper threads that hash and write -----------


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
        """Close what the output thread has not (it closes each file after its fsync)."""
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

    def add(self, piece: memoryview) -> None:
        self.pieces.append(piece)
        self.pending_bytes += len(piece)

    def take(self) -> list[memoryview]:
        """The pending pieces, joined: one call per batch on each helper thread means
        fewer hand-overs of the GIL than one per 32 KiB block."""
        pieces = self.pieces
        if len(pieces) > 1:
            pieces = [memoryview(b"".join(pieces))]
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
            raise CabError(f"corrupt archive: {self.member.name!r} came out as {self.written} "
                           f"bytes instead of {self.member.size}")
        self.digest = self.hash.hexdigest()

    # on the writing thread
    def write_pieces(self, pieces: list[memoryview] | None) -> None:
        if pieces is not None:
            if self.fd >= 0:
                _write_all(self.fd, pieces)
            if self.buffer is not None:
                for piece in pieces:
                    self.buffer += piece
        elif self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


def _write_all(fd: int, pieces: list[memoryview]) -> None:
    total = sum(len(p) for p in pieces)
    written = os.writev(fd, pieces) if len(pieces) <= 512 else 0
    if written < total:
        rest = memoryview(b"".join(pieces))[written:]
        while rest:
            rest = rest[os.write(fd, rest):]


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


_Job = tuple[_Sink, list[memoryview] | None]


class _Output:
    """Hashes on one helper thread and writes on another: hashlib and os.writev release
    the GIL, so both overlap with reading, checksumming and inflating on the caller's."""

    def __init__(self) -> None:
        self._hasher = _Worker[_Job]("cab-hash", lambda job: job[0].hash_pieces(job[1]))
        self._writer = _Worker[_Job]("cab-write", lambda job: job[0].write_pieces(job[1]))

    def start(self) -> None:
        self._hasher.start()
        self._writer.start()

    def send(self, sink: _Sink) -> None:
        if sink.pieces:
            self._put((sink, sink.take()))

    def finish(self, sink: _Sink) -> None:
        self._put((sink, None))

    def stop(self) -> None:
        self._hasher.stop()
        self._writer.stop()

    def raise_error(self) -> None:
        # an OSError from writing wins: it says why the data went missing
        for error in (self._writer.error, self._hasher.error):
            if error is not None:
                raise error

    def _put(self, job: _Job) -> None:
        self.raise_error()
        self._hasher.put(job)
        self._writer.put(job)
