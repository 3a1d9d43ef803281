-- ucupdates schema, version 8: image bytes content-addressed (pool mode, docs/pool.md).
-- Portable SQL. Written on PostgreSQL only (an import there stores every image and
-- signature file here, in the transaction that records it); empty on SQLite, where the
-- files on disk are the truth.

-- One row per stored content: its SHA-256 (lowercase hex), its size in bytes and how many
-- chunks hold it. The row is written in the transaction that writes its chunks, so a
-- blob that is listed is complete.
CREATE TABLE blobs (
    sha256      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    chunks      INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);

-- The bytes, in order: chunk `seq` (from 0) holds bytes seq * 1 MiB onwards.
CREATE TABLE blob_chunks (
    sha256  TEXT NOT NULL REFERENCES blobs (sha256) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (sha256, seq)
);
