-- ucupdates schema, version 9: what the nodes of a pool share besides the catalogue.

-- Lockouts one node started (too many wrong passwords) that every node holds: the scope
-- says whose (admin.address: a client address at the Control Panel's login; phone.user,
-- phone.pair, phone.source: the phones' authenticator), locked_until is in seconds since
-- the epoch. Failures are counted per node; only the lockouts they start are shared.
-- Rows past their end are deleted as new ones are written. SQLite (one node) has the
-- table and does not use it.
CREATE TABLE lockouts (
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    locked_until  REAL NOT NULL,
    node          TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX lockouts_until ON lockouts (locked_until);

-- The serve processes that use this store, each beating its row every few seconds: the
-- Control Panel's Pool page lists them (role: primary, or branch for a node reading a
-- local replica). Rows not seen for a day are deleted.
CREATE TABLE pool_nodes (
    name          TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('primary', 'branch')),
    version       TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL
);
