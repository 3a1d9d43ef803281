"""A folder's data blocks: read, checksummed (or left to a `Scan`), inflated.

The checksums are verified here, block by block before each is inflated, unless the
caller has a scan (`appliance.cab.scan`) verify them in a second process; then nothing a
block yields counts until the scan has said so, which the caller waits for.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import IO

from appliance.cab.format import _DATA, CabError, _Folder, _verify_checksum

_WINDOW = 32768  # the MSZIP history each block may refer to


def folder_blocks(
    f: IO[bytes], folder: _Folder, data_reserve: int, need: int, verify: bool, at: list[int]
) -> Iterator[bytes]:
    """The folder's uncompressed data, one CFDATA block at a time, until `need` bytes.

    With `verify`, each block's checksum is verified before it is inflated; without, the
    caller has them verified elsewhere and must not rely on the data before that is done.
    `at` is kept at [folder, block] of the block being read, for the caller's errors.
    """
    f.seek(folder.data_offset)
    header_size = _DATA.size + data_reserve
    mszip = folder.kind != "none"
    history = b""
    produced = 0
    at[0] = folder.index
    for n in range(folder.blocks):
        if produced >= need:
            return
        at[1] = n
        header = f.read(header_size)
        if len(header) != header_size:
            raise CabError(f"truncated archive: data block {n} of folder {folder.index}")
        csum, cb_data, cb_uncomp = _DATA.unpack_from(header)
        data = f.read(cb_data)
        if len(data) != cb_data:
            raise CabError(f"truncated archive: data block {n} of folder {folder.index}")
        if csum and verify:
            _verify_checksum(csum, header, data, n, folder.index)
        if mszip:
            out = _inflate(data, history, cb_uncomp, n, folder.index)
            history = out if len(out) >= _WINDOW else (history + out)[-_WINDOW:]
        else:
            out = data
        if len(out) != cb_uncomp:
            raise CabError(
                f"corrupt archive: data block {n} of folder {folder.index} "
                f"gives {len(out)} bytes instead of {cb_uncomp}"
            )
        produced += cb_uncomp
        yield out


def _inflate(data: bytes, history: bytes, cb_uncomp: int, n: int, folder: int) -> bytes:
    """One MSZIP block: "CK" and a deflate stream that may refer to the previous 32 KiB."""
    if data[:2] != b"CK":
        raise CabError(f"corrupt archive: data block {n} of folder {folder} has no MSZIP signature")
    inflate = zlib.decompressobj(-15, zdict=history) if history else zlib.decompressobj(-15)
    try:
        # at most cbUncomp (zlib then hands its buffer over without a copy); 0 means no limit
        out = inflate.decompress(memoryview(data)[2:], cb_uncomp or 1)
        if not inflate.eof and (inflate.unconsumed_tail or inflate.decompress(b"", 1)):
            raise CabError(
                f"corrupt archive: data block {n} of folder {folder} "
                f"gives more than {cb_uncomp} bytes"
            )
    except zlib.error as e:
        raise CabError(
            f"corrupt archive: data block {n} of folder {folder} does not inflate ({e})"
        ) from e
    return out
