"""A second process that reads a package once more: every block's checksum, and its SHA-256.

The CFDATA checksum is a XOR of 32-bit words, computed with Python integers: it holds the
GIL. On a thread beside the inflating, it made the inflating wait for the GIL about as
long as it saved (measured); in a process of its own it runs truly beside it, and the
package's SHA-256 comes with it. `Cabinet.scan` starts one (`scanner`, run by its path:
the layout on stdin, one JSON line back). `Cabinet.extract`, given the scan, leaves the
checksums to it and waits for its verdict before returning: a bad block is refused all
the same, and is the error reported when it comes at or before the block where the
extraction met an error of its own. The child stops at the first bad block.

If the process cannot be started, the scan is done in this process instead: the digest
when it is asked for, and the checksums by the extraction itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from appliance.cab import scanner
from appliance.cab.format import CabError


class Scan:
    """A scan under way: `check()` its verdict on the blocks, `digest()` the package's,
    `close()` it when done (it is stopped if it still runs)."""

    def __init__(self, path: Path, data_reserve: int, folders: list[tuple[int, int]]) -> None:
        self._path = path
        self._result: dict[str, Any] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        spec = {"path": str(path), "reserve": data_reserve, "folders": folders}
        try:
            if not sys.executable or not os.path.isfile(scanner.__file__ or ""):
                raise OSError("no Python executable, or no scanner file, to run")
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", scanner.__file__],
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
                sha256, size = scanner.file_sha256(str(self._path))
                self._result = {"sha256": sha256, "size": size}
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
