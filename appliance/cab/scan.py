"""A second process that reads a package once more: every block's checksum, and its SHA-256.

The CFDATA checksum is a XOR of 32-bit words, computed with Python integers: it holds the
GIL. On a thread beside the inflating, it made the inflating wait for the GIL about as
long as it saved (measured); in a process of its own it runs truly beside it, and the
package's SHA-256 comes with it. `Cabinet.scan` starts one (`_main`, given the package's
layout on stdin, answers one JSON line). `Cabinet.extract`, given the scan, leaves the
checksums to it and waits for its verdict before returning: a bad block is refused all
the same, and is the error reported when it comes at or before the block where the
extraction met an error of its own. The child stops at the first bad block.

If the process cannot be started, the scan is done in this process instead: the digest
when it is asked for, and the checksums by the extraction itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.cab.format import _DATA, _READ_BUFFER, CabError, _verify_checksum

if TYPE_CHECKING:
    from _hashlib import HASH

_CHUNK = 1 << 20


class Scan:
    """A scan under way: `check()` its verdict on the blocks, `digest()` the package's,
    `close()` it when done (it is stopped if it still runs)."""

    def __init__(self, path: Path, data_reserve: int, folders: list[tuple[int, int]]) -> None:
        self._path = path
        self._result: dict[str, Any] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        spec = {"path": str(path), "reserve": data_reserve, "folders": folders}
        try:
            if not sys.executable:
                raise OSError("no Python executable to run")
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from appliance.cab.scan import _main; _main()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError:
            self._proc = None  # done here instead
            return
        stdin, self._proc.stdin = self._proc.stdin, None  # communicate() must not touch it
        assert stdin is not None
        try:
            with stdin:
                stdin.write(json.dumps(spec).encode())
        except OSError:
            pass  # the child is gone: its exit status says why

    @property
    def checks_blocks(self) -> bool:
        """Whether the block checksums are verified by the scan (else by the extraction)."""
        return self._proc is not None

    def bad_block(self) -> tuple[int, int] | None:
        """The first block (folder, block) found bad so far, without waiting."""
        if self._proc is None or self._proc.poll() is None:
            return None
        bad = self._wait().get("bad")
        return (bad[0], bad[1]) if bad else None

    def check(self, upto: tuple[int, int] | None = None) -> None:
        """Wait for the scan; raise the bad block's error if it found one (at or before
        `upto`, a (folder, block) position, when given)."""
        if self._proc is None:
            return
        bad = self._wait().get("bad")
        if bad and (upto is None or (bad[0], bad[1]) <= upto):
            raise CabError(bad[2])

    def digest(self) -> tuple[str, int]:
        """The package's SHA-256 (hex) and size; CabError if a block is bad; OSError."""
        if self._proc is None:
            if self._result is None:
                self._result = dict(zip(("sha256", "size"), _sha256(self._path), strict=True))
            return self._result["sha256"], self._result["size"]
        result = self._wait()
        if result.get("bad"):
            raise CabError(result["bad"][2])
        return result["sha256"], result["size"]

    def close(self) -> None:
        """Stop the scan if it still runs (the import no longer needs it)."""
        if self._proc is not None and self._proc.returncode is None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.communicate()

    def _wait(self) -> dict[str, Any]:
        if self._result is None:
            assert self._proc is not None
            out, err = self._proc.communicate()
            if self._proc.returncode != 0:
                problem = err.decode(errors="replace").strip().splitlines()[-1:] or [
                    f"exit status {self._proc.returncode}"
                ]
                raise CabError(f"the package could not be scanned: {problem[0]}")
            try:
                self._result = json.loads(out)
            except ValueError as e:
                raise CabError(f"the package could not be scanned: {e}") from e
        if self._result.get("error"):
            raise CabError(f"the package could not be scanned: {self._result['error']}")
        return self._result


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    buffer = bytearray(_CHUNK)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(memoryview(buffer)[:n])
            size += n
    return digest.hexdigest(), size


def _scan(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: the checksums of every folder's blocks in order, and the digest.

    When the folders' data follow one another in the file, as cabinet writers lay them
    out, the file is read once: what lies before, between and after them is hashed as it
    is passed over. Otherwise it is read a second time for the digest."""
    path = Path(spec["path"])
    header_size = _DATA.size + spec["reserve"]
    digest: HASH | None = hashlib.sha256()
    at = 0  # how far the digest has come, reading in order
    with open(path, "rb", buffering=_READ_BUFFER) as f:
        for index, (offset, count) in enumerate(spec["folders"]):
            if digest is not None and offset >= at:
                while at < offset and (chunk := f.read(min(_CHUNK, offset - at))):
                    digest.update(chunk)  # the tables, or a gap
                    at += len(chunk)
            else:
                digest = None
            f.seek(offset)
            for n in range(count):
                header = f.read(header_size)
                if len(header) != header_size:
                    return {"bad": [index, n, _truncated(index, n)]}
                csum, cb_data, _ = _DATA.unpack_from(header)
                data = f.read(cb_data)
                if len(data) != cb_data:
                    return {"bad": [index, n, _truncated(index, n)]}
                if csum:
                    try:
                        _verify_checksum(csum, header, data, n, index)
                    except CabError as e:
                        return {"bad": [index, n, str(e)]}
                if digest is not None:
                    digest.update(header)
                    digest.update(data)
            at = f.tell()
        if digest is None:
            sha256, size = _sha256(path)
        else:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
            sha256, size = digest.hexdigest(), f.tell()
    return {"bad": None, "sha256": sha256, "size": size}


def _truncated(folder: int, n: int) -> str:
    return f"truncated archive: data block {n} of folder {folder}"


def _main() -> None:
    try:
        result = _scan(json.loads(sys.stdin.buffer.read()))
    except (OSError, ValueError) as e:
        result = {"error": str(e)}
    print(json.dumps(result), flush=True)
    os._exit(0)  # nothing to tidy: skip the interpreter's teardown
