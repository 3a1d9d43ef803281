"""Image bytes content-addressed: one blob per SHA-256, in chunks of `BLOB_CHUNK` bytes.

On PostgreSQL (pool mode, docs/pool.md) an import stores every image and signature file
here, in the transaction that records its rules, so that every node of the pool can fetch
the bytes it serves; each node keeps its own copy on local disk (`catalogue.NodeCache`).
On SQLite the tables stay empty: the files on disk are the truth there.

A blob is written in one transaction (the caller's, or its own): its `blobs` row and its
chunks land together or not at all, so a listed blob is complete. Its SHA-256 is computed
while it is written and compared before the transaction can commit: bytes that do not
match are refused with StoreError and nothing of them stays.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from appliance.store.connection import Connection
from appliance.store.errors import StoreError

BLOB_CHUNK = 1 << 20  # bytes per stored chunk (the last one of a blob may be shorter)

_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_sha256(sha256: str) -> str:
    """`sha256` if it is a SHA-256 in the stored form (64 lowercase hex digits)."""
    if not _SHA256.fullmatch(sha256):
        raise StoreError(f"not a SHA-256 in lowercase hex: {sha256[:80]!r}")
    return sha256


def rechunked(chunks: Iterable[bytes], size: int = BLOB_CHUNK) -> Iterator[bytes]:
    """The bytes of `chunks` again, cut into pieces of exactly `size` (the last shorter)."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


class BlobTables(Connection):
    """Blobs and their chunks (schema version 8)."""

    if TYPE_CHECKING:

        def transaction(self) -> AbstractContextManager[None]: ...  # Store's

    @property
    def keeps_blobs(self) -> bool:
        """Whether stored files' bytes live in this store (PostgreSQL: pool mode); on
        SQLite the files on disk are the truth and the blob tables stay empty."""
        return self.backend == "postgresql"

    def put_blob(self, sha256: str, chunks: Iterable[bytes]) -> int:
        """Store the bytes of `chunks` as the blob `sha256`; return its size in bytes.

        Runs in the caller's transaction when there is one (an import, migrate-store),
        else in its own. A blob already stored is not written again (`chunks` is not
        read). Bytes whose SHA-256 is not `sha256` raise StoreError, and what was written
        of them is deleted first, so nothing of them stays even if the caller goes on.
        """
        check_sha256(sha256)
        if self._in_transaction:
            return self._put_blob(sha256, chunks)
        with self.transaction():
            return self._put_blob(sha256, chunks)

    def _put_blob(self, sha256: str, chunks: Iterable[bytes]) -> int:
        found = self._conn.execute("SELECT size FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        if found is not None:
            return int(found[0])
        self._conn.execute(
            "INSERT INTO blobs (sha256, size, chunks, created_at) VALUES (?, 0, 0, ?)",
            (sha256, self.now()),
        )
        digest = hashlib.sha256()
        size = seq = 0
        try:
            for seq, data in enumerate(rechunked(chunks), start=1):
                digest.update(data)
                size += len(data)
                self._conn.execute(
                    "INSERT INTO blob_chunks (sha256, seq, data) VALUES (?, ?, ?)",
                    (sha256, seq - 1, data),
                )
            if digest.hexdigest() != sha256:
                raise StoreError(
                    f"blob {sha256}: the {size} bytes given have SHA-256 "
                    f"{digest.hexdigest()}; nothing was stored"
                )
        except StoreError:
            self._conn.execute("DELETE FROM blobs WHERE sha256 = ?", (sha256,))
            raise
        self._conn.execute(
            "UPDATE blobs SET size = ?, chunks = ? WHERE sha256 = ?", (size, seq, sha256)
        )
        self._catalogue_changed()  # nodes waiting for these bytes look again
        return size

    def has_blob(self, sha256: str) -> bool:
        """Whether the blob is stored (a listed blob is complete)."""
        row = self._conn.execute("SELECT 1 FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        return row is not None

    def blob_size(self, sha256: str) -> int | None:
        """The stored blob's size in bytes; None when it is not stored."""
        row = self._conn.execute("SELECT size FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else int(row[0])

    def blob_chunks(self, sha256: str) -> Iterator[bytes]:
        """The blob's bytes, one chunk (`BLOB_CHUNK` bytes) per query, in order: a large blob is
        never in memory whole. Raises StoreError when the blob is not stored, or when a
        chunk is gone before it is read (the blob was removed meanwhile)."""
        row = self._conn.execute("SELECT chunks FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            raise StoreError(f"blob {sha256} is not in the store")
        return self._chunks(sha256, int(row[0]))

    def _chunks(self, sha256: str, count: int) -> Iterator[bytes]:
        for seq in range(count):
            found = self._conn.execute(
                "SELECT data FROM blob_chunks WHERE sha256 = ? AND seq = ?", (sha256, seq)
            ).fetchone()
            if found is None:
                raise StoreError(f"blob {sha256}: chunk {seq} of {count} is gone")
            yield bytes(found[0])

    def blob_hashes(self) -> set[str]:
        """The SHA-256 of every stored blob."""
        return {r[0] for r in self._conn.execute("SELECT sha256 FROM blobs")}

    def unreferenced_blobs(self) -> list[tuple[str, int]]:
        """The blobs no stored file lists (its SHA-256 and size), by hash."""
        rows = self._conn.execute(
            "SELECT sha256, size FROM blobs WHERE sha256 NOT IN (SELECT sha256 FROM files)"
            " ORDER BY sha256"
        )
        return [(r[0], int(r[1])) for r in rows]

    def delete_blob(self, sha256: str) -> None:
        """Remove a blob and its chunks (clean-files, for blobs no file lists)."""
        self._conn.execute("DELETE FROM blob_chunks WHERE sha256 = ?", (sha256,))
        self._conn.execute("DELETE FROM blobs WHERE sha256 = ?", (sha256,))
        self._catalogue_changed()
