"""Reading Microsoft Cabinet files (MS-CAB) without holding them in memory.

`open_package` finds the cabinet (in a `.cab`, or embedded in a self-extracting `.exe`),
reads its header tables and refuses anything over the limits or with an unsafe member
name before a single block is decompressed. `Cabinet.extract` then streams the members
out: MSZIP and stored folders are decoded block by block (`blocks`: checksums, block sizes
and member sizes verified on the way; `output`: SHA-256 computed as the data goes to
disk), each on its own thread; LZX and Quantum folders, which Python cannot decode, go
through the `cabextract` program.

cabarchive is not used for reading: it holds the whole archive in memory and has no
limits (measured: a 448 KiB cab of zeros took 385 MiB).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from appliance.cab.blocks import folder_blocks
from appliance.cab.format import (
    _BATCH,
    _DATA,
    _FILE,
    _FOLDER,
    _HEADER,
    _MAX_NAME_FIELD,
    _READ_BUFFER,
    _RESERVE,
    CabError,
    CabLimits,
    CabMember,
    ExtractedMember,
    _Folder,
    _Layout,
    _read_at,
)
from appliance.cab.format import ATTR_NAME_IS_UTF as ATTR_NAME_IS_UTF
from appliance.cab.format import FLAG_NEXT_CABINET as FLAG_NEXT_CABINET
from appliance.cab.format import FLAG_PREV_CABINET as FLAG_PREV_CABINET
from appliance.cab.format import FLAG_RESERVE_PRESENT as FLAG_RESERVE_PRESENT
from appliance.cab.output import _Cleanup, _Output, _Sink
from appliance.cab.scan import Scan
from appliance.cab.scanner import checksum
from appliance.cab.tables import _check_volume, _find_cabinet, _parse_files, _walk_folder

__all__ = [
    "CabError",
    "CabLimits",
    "CabMember",
    "Cabinet",
    "ExtractedMember",
    "checksum",
    "open_package",
]


# --- opening --------------------------------------------------------------------------


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


# --- the cabinet ----------------------------------------------------------------------


class Cabinet:
    """An opened cabinet: its checked tables; data is read from `path` on demand."""

    def __init__(
        self,
        *,
        path: Path,
        base_offset: int,
        size: int,
        members: tuple[CabMember, ...],
        compression: tuple[str, ...],
        layout: _Layout,
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
            import tempfile  # rare: load it then

            with tempfile.TemporaryDirectory(prefix="ucupdates-cab-") as tmp:
                self.extract([member.name], Path(tmp))
                return (Path(tmp) / member.name).read_bytes()
        buffer = bytearray()
        cleanup = _Cleanup()
        self._run(self._streamed({member.folder: [_Sink(member, None, buffer)]}, cleanup), cleanup)
        return bytes(buffer)

    def scan(self) -> Scan:
        """Start verifying every block's checksum, and hashing the package, in a second
        process (`appliance.cab.scan`); give it to `extract`, and `close` it when done."""
        folders = [(f.data_offset, f.blocks) for f in self._layout.folders]
        return Scan(self.path, self._layout.data_reserve, folders)

    def extract(
        self, names: Iterable[str], dest_dir: Path, *, write: bool = True, scan: Scan | None = None
    ) -> dict[str, ExtractedMember]:
        """Extract members to `dest_dir / member.name`, or only hash them (`write=False`).

        The result is keyed by the members' names as in `members`. A name not in the
        cabinet raises KeyError. On any failure every file and folder this call created
        is removed; OSError (e.g. a full disk) propagates as it is. With a `scan`, the
        block checksums are its to verify: this waits for its verdict before returning.
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
            at = [0, 0]  # the folder and block being read: a bad block before wins
            try:
                self._run(self._streamed(internal, cleanup, scan, at), cleanup)
            except CabError:
                if scan is not None:
                    scan.check(upto=(at[0], at[1]))
                raise
            for sinks in internal.values():
                for s in sinks:
                    name = s.member.name
                    done[name] = ExtractedMember(name, s.written, s.digest, s.path)
            if external:
                from appliance.cab.external import _extract_external  # rare: load it then

                done.update(
                    _extract_external(self.path, self._layout, external, dest_dir, write, cleanup)
                )
            if scan is not None:
                scan.check()
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

    def _streamed(
        self,
        by_folder: dict[int, list[_Sink]],
        cleanup: _Cleanup,
        scan: Scan | None = None,
        at: list[int] | None = None,
    ) -> Iterator[None]:
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
                    self._stream_folder(
                        f, folder, by_folder[index], output, cleanup, scan, at or [0, 0]
                    )
                    yield None
        finally:
            output.stop()
        output.raise_error()

    def _stream_folder(
        self,
        f: IO[bytes],
        folder: _Folder,
        sinks: list[_Sink],
        output: _Output,
        cleanup: _Cleanup,
        scan: Scan | None,
        at: list[int],
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
        verify = scan is None or not scan.checks_blocks
        blocks = folder_blocks(f, folder, self._layout.data_reserve, need, verify, at)
        for block in blocks:
            if scan is not None and at[1] % 256 == 255 and scan.bad_block() is not None:
                scan.check()  # stop early: the scan found a bad block
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
