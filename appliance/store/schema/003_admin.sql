-- ucupdates schema, version 3: Control Panel accounts and their sessions.

-- Admin accounts are separate from the phone users of version 2. password_hash is an
-- argon2id PHC string. failures/first_failure_at/locked_until count wrong passwords
-- (lockout after repeated failures); last_login_at is the last successful login.
CREATE TABLE admin_accounts (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    password_hash     TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    failures          INTEGER NOT NULL DEFAULT 0,
    first_failure_at  TEXT,
    locked_until      TEXT,
    last_login_at     TEXT
);
CREATE UNIQUE INDEX admin_accounts_name ON admin_accounts (lower(name));

-- Server-side sessions. Only the SHA-256 of the cookie's token is kept, so a copy of the
-- database opens no session. csrf_token is the synchronizer token of the session.
-- A session ends at expires_at (absolute), or earlier when idle (last_seen_at).
CREATE TABLE admin_sessions (
    token_hash    TEXT PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES admin_accounts (id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    address       TEXT
);
CREATE INDEX admin_sessions_account ON admin_sessions (account_id);
