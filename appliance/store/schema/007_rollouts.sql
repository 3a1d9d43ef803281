-- ucupdates schema, version 7: rollouts (docs/rollouts.md). Portable SQL.

-- Settings of the rollout machinery, one row each: bucket_salt (random, written when this
-- version is applied; changing it reshuffles every device's bucket).
CREATE TABLE rollout_settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- Upgrade paths: devices of the model (revision, update type: NULL for all) reporting a
-- version below `below` are first offered `offer`.
CREATE TABLE upgrade_steps (
    id           INTEGER PRIMARY KEY,
    device_type  TEXT NOT NULL,
    brand        TEXT NOT NULL,
    model        TEXT NOT NULL,
    revision     TEXT,
    update_type  TEXT,
    below        TEXT NOT NULL,
    offer        TEXT NOT NULL,
    set_by       TEXT NOT NULL,
    set_at       TEXT NOT NULL
);
CREATE UNIQUE INDEX upgrade_steps_key ON upgrade_steps (
    lower(device_type), lower(brand), lower(model), lower(coalesce(revision, '')),
    lower(coalesce(update_type, '')), below
);

-- Staged approvals: the approval of `version` on a rule given to a rising share of the
-- devices. stages: the shares in percent, comma-separated ("5,25,100"); stage: the index
-- of the current one, which began at entered_at. soak_seconds NULL: advances by hand;
-- pause_percent NULL: never pauses by itself.
CREATE TABLE staged_approvals (
    id             INTEGER PRIMARY KEY,
    rule_id        INTEGER NOT NULL UNIQUE REFERENCES rules (id) ON DELETE CASCADE,
    version        TEXT NOT NULL,
    stages         TEXT NOT NULL,
    stage          INTEGER NOT NULL,
    entered_at     TEXT NOT NULL,
    paused         INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    paused_why     TEXT,
    paused_at      TEXT,
    soak_seconds   INTEGER,
    pause_percent  REAL,
    pause_min      INTEGER,
    set_by         TEXT NOT NULL,
    set_at         TEXT NOT NULL
);

-- Internal networks (CIDR) with download windows in a time zone ("22:00-05:00,01:00-02:00";
-- empty: always open) and caps on concurrent downloads and bytes a second (NULL: none).
CREATE TABLE rollout_networks (
    id                    INTEGER PRIMARY KEY,
    network               TEXT NOT NULL UNIQUE,
    time_zone             TEXT NOT NULL,
    windows               TEXT NOT NULL,
    max_downloads         INTEGER,
    max_bytes_per_second  INTEGER,
    set_by                TEXT NOT NULL,
    set_at                TEXT NOT NULL
);

-- The external zone's windows and caps: at most one row.
CREATE TABLE rollout_external (
    id                    INTEGER PRIMARY KEY CHECK (id = 1),
    time_zone             TEXT NOT NULL,
    windows               TEXT NOT NULL,
    max_downloads         INTEGER,
    max_bytes_per_second  INTEGER,
    set_by                TEXT NOT NULL,
    set_at                TEXT NOT NULL
);

-- Pins: a device by MAC or serial held on a version or excluded, for one update type
-- (NULL: all of them), always with a reason.
CREATE TABLE device_pins (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('mac', 'serial')),
    identifier   TEXT NOT NULL,
    action       TEXT NOT NULL CHECK (action IN ('hold', 'exclude')),
    version      TEXT,
    update_type  TEXT,
    reason       TEXT NOT NULL,
    set_by       TEXT NOT NULL,
    set_at       TEXT NOT NULL
);
CREATE UNIQUE INDEX device_pins_key ON device_pins (
    kind, identifier, lower(coalesce(update_type, ''))
);

-- What each device (identity as in `devices`) was last offered for each rule, and what
-- became of it (outcome: pending, updated, stuck, reverted, silent). images: the offered
-- version's image file names (folded, space-separated), by which later reports are read.
CREATE TABLE rollout_offers (
    id                INTEGER PRIMARY KEY,
    identity          TEXT NOT NULL,
    rule_id           INTEGER NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    version           TEXT NOT NULL,
    from_version      TEXT,
    first_offered_at  TEXT NOT NULL,
    last_offered_at   TEXT NOT NULL,
    offers            INTEGER NOT NULL,
    outcome           TEXT NOT NULL
        CHECK (outcome IN ('pending', 'updated', 'stuck', 'reverted', 'silent')),
    outcome_at        TEXT,
    last_seen_at      TEXT NOT NULL,
    reported          TEXT,
    ran_it            INTEGER NOT NULL DEFAULT 0 CHECK (ran_it IN (0, 1)),
    stage             INTEGER,
    images            TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX rollout_offers_device_rule ON rollout_offers (identity, rule_id);
CREATE INDEX rollout_offers_rule ON rollout_offers (rule_id, version, outcome);
CREATE INDEX rollout_offers_outcome ON rollout_offers (outcome, last_seen_at);
