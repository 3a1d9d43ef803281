"""The block checks that need only the standard library, and the scan's second process.

`checksum` is the MS-CAB checksum, `block_ok` a CFDATA block's check against it. Run as a
script, by its path (`python -I -S scanner.py`, so that the child loads nothing but what
it uses), this module is the scan `appliance.cab.scan` starts: it reads the package's
layout as JSON on stdin, verifies every block's checksum in order, stopping at the first
bad one, hashes the whole file, and answers one JSON line. It imports nothing from the
appliance, and nothing in it may.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from typing import Any

_DATA = struct.Struct("<IHH")  # csum, cbData, cbUncomp
_CHUNK = 1 << 20


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


def block_ok(csum: int, header: bytes, data: bytes) -> bool:
    """Whether a CFDATA block (its header, reserve included, and data) matches `csum`."""
    body = checksum(data)
    if checksum(header[4:8], body) == csum:
        return True
    # MS-CAB's text puts abReserve inside the checksummed range; libmspack leaves it out.
    return len(header) > _DATA.size and checksum(header[4:], body) == csum


def bad_checksum(folder: int, n: int) -> str:
    return f"corrupt archive: bad checksum in data block {n} of folder {folder}"


def truncated(folder: int, n: int) -> str:
    return f"truncated archive: data block {n} of folder {folder}"


def file_sha256(path: str) -> tuple[str, int]:
    """A file's SHA-256 (hex) and size, read a MiB at a time into one buffer."""
    digest, size = hashlib.sha256(), 0
    buffer = bytearray(_CHUNK)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(memoryview(buffer)[:n])
            size += n
    return digest.hexdigest(), size


def scan(spec: dict[str, Any]) -> dict[str, Any]:
    """The checksums of every folder's blocks in order, and the file's digest.

    When the folders' data follow one another in the file, as cabinet writers lay them
    out, the file is read once: what lies before, between and after them is hashed as it
    is passed over. Otherwise it is read a second time for the digest."""
    path = spec["path"]
    header_size = _DATA.size + spec["reserve"]
    digest: Any = hashlib.sha256()  # None once the folders are found out of order
    at = 0  # how far the digest has come, reading in order
    with open(path, "rb", buffering=_CHUNK) as f:
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
                    return {"bad": [index, n, truncated(index, n)]}
                csum, cb_data, _ = _DATA.unpack_from(header)
                data = f.read(cb_data)
                if len(data) != cb_data:
                    return {"bad": [index, n, truncated(index, n)]}
                if csum and not block_ok(csum, header, data):
                    return {"bad": [index, n, bad_checksum(index, n)]}
                if digest is not None:
                    digest.update(header)
                    digest.update(data)
            at = f.tell()
        if digest is None:
            sha256, size = file_sha256(path)
        else:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
            sha256, size = digest.hexdigest(), f.tell()
    return {"bad": None, "sha256": sha256, "size": size}


def main() -> None:
    try:
        result = scan(json.loads(sys.stdin.buffer.read()))
    except (OSError, ValueError, struct.error) as e:
        result = {"error": str(e)}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # nothing to tidy: skip the interpreter's teardown


if __name__ == "__main__":
    main()
