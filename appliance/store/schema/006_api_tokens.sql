-- ucupdates schema, version 6: API tokens for automation (`ucupdates admin token ...`).

-- A token is 256 random bits shown once when it is made; only its SHA-256 (hex) is kept,
-- so a copy of the database opens nothing. A token acts with its role; it stops working
-- at expires_at (NULL: never) or when it is revoked (its row deleted). last_used_at is
-- written at most once a minute.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    last_used_at  TEXT
);
CREATE UNIQUE INDEX api_tokens_name ON api_tokens (lower(name));
