"""The cabextract path: LZX and Quantum folders, which Python cannot decode.

The wanted folders and members are copied into a new cabinet with names of our own, which
`cabextract` unpacks into a temporary folder; the results are hashed, checked and linked
into place.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO

from appliance.cab.format import (
    _DATA,
    _FILE,
    _FOLDER,
    _HEADER,
    _READ_BUFFER,
    _RESERVE,
    FLAG_RESERVE_PRESENT,
    CabError,
    CabMember,
    ExtractedMember,
    _Folder,
    _Layout,
    _read_at,
)
from appliance.cab.output import _Cleanup


def _extract_external(
    cab_path: Path,
    layout: _Layout,
    by_folder: dict[int, list[CabMember]],
    dest_dir: Path,
    write: bool,
    cleanup: _Cleanup,
) -> dict[str, ExtractedMember]:
    kinds = {layout.folders[i].kind for i in by_folder}
    program = shutil.which("cabextract")
    if program is None:
        kind = "LZX" if "lzx" in kinds else "Quantum"
        raise CabError(f"{kind}-compressed packages need the 'cabextract' program")
    parent = dest_dir if dest_dir.is_dir() else None
    tmp = Path(tempfile.mkdtemp(prefix=".cabextract-", dir=parent))
    try:
        order = [m for i in sorted(by_folder) for m in by_folder[i]]
        source = tmp / "input.cab"
        _write_subset(cab_path, layout, source, by_folder)
        out_dir = tmp / "out"
        out_dir.mkdir()
        proc = subprocess.run(
            [program, "-q", "-d", str(out_dir), str(source)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        # cabextract names the files it wrote to; put the members' names back
        text = proc.stderr.decode("utf-8", "replace").replace(f"{tmp}/", "")
        text = re.sub(
            r"\bout/(\d+)\b",
            lambda g: repr(order[int(g[1])].name) if int(g[1]) < len(order) else g[0],
            text,
        )
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if proc.returncode != 0:
            raise CabError(f"cabextract failed: {first or f'exit status {proc.returncode}'}")
        done: dict[str, ExtractedMember] = {}
        for j, m in enumerate(order):
            src = out_dir / str(j)
            if not src.is_file():
                raise CabError(
                    f"cabextract did not produce {m.name!r}" + (f": {first}" if first else "")
                )
            digest, size = _hash_file(src, fsync=write)
            if size != m.size:
                raise CabError(
                    f"corrupt archive: {m.name!r} decompressed to {size} bytes instead of {m.size}"
                )
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


def _write_subset(
    cab_path: Path, layout: _Layout, out: Path, by_folder: dict[int, list[CabMember]]
) -> None:
    """A cabinet for cabextract: only the folders and members wanted, named 0, 1, ...

    The member names are ours, so cabextract's own name handling cannot put a file
    anywhere unexpected, and a folder's data is copied only as far as it is needed.
    """
    flags = FLAG_RESERVE_PRESENT if layout.folder_reserve or layout.data_reserve else 0
    header_size = _HEADER.size + (_RESERVE.size if flags else 0)
    folder_size = _FOLDER.size + layout.folder_reserve
    files = bytearray()
    j = 0
    spans: list[tuple[int, int, int, int]] = []  # data offset, length, blocks, type
    with open(cab_path, "rb", buffering=0) as src:
        for new_index, index in enumerate(sorted(by_folder)):
            folder = layout.folders[index]
            need = max(m.offset + m.size for m in by_folder[index])
            length, blocks = _span(layout, src, folder, need)
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


def _span(layout: _Layout, f: IO[bytes], folder: _Folder, need: int) -> tuple[int, int]:
    """Bytes and CFDATA blocks from the folder's start that hold its first `need` bytes."""
    header_size = _DATA.size + layout.data_reserve
    pos = folder.data_offset
    produced = 0
    blocks = 0
    while produced < need and blocks < folder.blocks:
        _, cb_data, cb_uncomp = _DATA.unpack(_read_at(f, pos, _DATA.size, "a data block"))
        pos += header_size + cb_data
        produced += cb_uncomp
        blocks += 1
    return pos - folder.data_offset, blocks


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
