-- ucupdates schema, version 2: local phone users for HTTP Basic on the external zone.

-- password_hash is an argon2id PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash);
-- the parameters travel with each hash, so they can change without a migration.
CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);
CREATE UNIQUE INDEX users_name ON users (lower(name));
