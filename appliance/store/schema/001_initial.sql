-- ucupdates schema, version 1. Portable SQL: the same tables will live in PostgreSQL.

CREATE TABLE packages (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    imported_at   TEXT NOT NULL,
    imported_by   TEXT NOT NULL
);
CREATE INDEX packages_sha256 ON packages (sha256);

CREATE TABLE rules (
    id                INTEGER PRIMARY KEY,
    device_type       TEXT NOT NULL,
    brand             TEXT NOT NULL,
    model             TEXT NOT NULL,
    revision          TEXT NOT NULL,
    locale            TEXT NOT NULL,
    update_type       TEXT NOT NULL,
    approved_version  TEXT,
    pending_version   TEXT,
    restore_version   TEXT,
    state             TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'restored', 'reset')),
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE UNIQUE INDEX rules_key ON rules (
    lower(device_type), lower(brand), lower(model), lower(revision), lower(locale),
    lower(update_type)
);

-- One row per device update (rule key + version) that the store holds files for.
CREATE TABLE updates (
    id           INTEGER PRIMARY KEY,
    device_type  TEXT NOT NULL,
    brand        TEXT NOT NULL,
    model        TEXT NOT NULL,
    revision     TEXT NOT NULL,
    locale       TEXT NOT NULL,
    update_type  TEXT NOT NULL,
    version      TEXT NOT NULL,
    timestamp    TEXT,
    package_id   INTEGER REFERENCES packages (id),
    created_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX updates_key ON updates (
    lower(device_type), lower(brand), lower(model), lower(revision), lower(locale),
    lower(update_type), version
);

-- Every stored file: images (role 'image', with the name of their signature file) and
-- signature files (role 'signature'). path is relative to the DeviceUpdateStore.
CREATE TABLE files (
    id              INTEGER PRIMARY KEY,
    update_id       INTEGER NOT NULL REFERENCES updates (id) ON DELETE CASCADE,
    role            TEXT NOT NULL CHECK (role IN ('image', 'signature')),
    file_name       TEXT NOT NULL,
    signature_name  TEXT,
    path            TEXT NOT NULL UNIQUE,
    size            INTEGER NOT NULL,
    sha256          TEXT NOT NULL
);
CREATE INDEX files_update ON files (update_id);

CREATE TABLE test_devices (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('mac', 'serial')),
    identifier  TEXT NOT NULL,
    scope       TEXT NOT NULL DEFAULT 'global',
    created_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX test_devices_identifier ON test_devices (kind, identifier, scope);

-- The device inventory: every phone seen, by its best identity (MAC, else serial).
CREATE TABLE devices (
    id            INTEGER PRIMARY KEY,
    identity      TEXT NOT NULL UNIQUE,
    mac           TEXT,
    serial        TEXT,
    device_type   TEXT,
    brand         TEXT,
    model         TEXT,
    revision      TEXT,
    locale        TEXT,
    version       TEXT,
    zone          TEXT,
    address       TEXT,
    user_id       TEXT,
    first_seen    TEXT NOT NULL,
    last_seen     TEXT NOT NULL
);

-- Append-only log of every admin action.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    before  TEXT,
    after   TEXT
);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
