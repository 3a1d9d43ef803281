"""PostgreSQL only: the catalogue's version moves, and its notification goes, with the change.

Every node must learn of a catalogue change another node commits: nodes on the primary by
a notification on `CHANNEL`, nodes on a replica (which delivers none) by polling the
version row (`Store.data_version`). Both come from triggers on the catalogue's tables,
so they are part of the transaction that changes the catalogue: they commit with it, and
a transaction rolled back (or a primary killed before its commit) moves nothing.

- Before any statement on those tables, `pg_advisory_xact_lock(WRITER_LOCK)`: the one
  writer lock that `BEGIN IMMEDIATE` takes (`store.pgsql`), held to the end of the
  transaction. A catalogue write outside `Store.transaction()` therefore waits for a
  running write transaction as on SQLite, and, since the lock is taken before any row,
  two writers never hold each other's rows (no deadlock on the version row).
- After a statement that changed at least one row, the version row moves by one and
  `pg_notify(CHANNEL, <new version>)` is queued, once per transaction (a transaction-local
  setting remembers it; a savepoint rolled back forgets both). PostgreSQL delivers the
  notification to listeners only when the transaction commits.

Made beside the numbered schema on every open, idempotently: functions replaced, the
counter row and triggers only made when missing (no table lock once they are there).
Nothing is made on a hot standby, which replays the primary's.
"""

from __future__ import annotations

from appliance.store.pgsql import WRITER_LOCK, PgConnection

CHANNEL = "ucupdates_catalogue"

# The tables whose rows the update decision and the rollout policy read, and the blobs
# (a node waiting for a rule's bytes fills its cache when one arrives): a change to any
# of them is a catalogue change (the table groups also count it in-process).
CATALOGUE_TABLES = (
    "blobs",
    "rules",
    "updates",
    "files",
    "test_devices",
    "rollout_settings",
    "upgrade_steps",
    "staged_approvals",
    "rollout_networks",
    "rollout_external",
    "device_pins",
)

_MOVED = "ucupdates.catalogue_moved"  # transaction-local: the version moved already

_VERSION_ROW = """
CREATE TABLE IF NOT EXISTS catalogue_version (one BOOLEAN PRIMARY KEY DEFAULT TRUE
    CHECK (one), version BIGINT NOT NULL);
INSERT INTO catalogue_version (version) VALUES (0) ON CONFLICT DO NOTHING;
"""

_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION ucupdates_catalogue_lock() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    PERFORM pg_advisory_xact_lock({WRITER_LOCK});
    RETURN NULL;
END
$body$;
CREATE OR REPLACE FUNCTION ucupdates_catalogue_changed() RETURNS trigger
LANGUAGE plpgsql AS $body$
DECLARE
    moved BIGINT;
BEGIN
    IF TG_OP <> 'TRUNCATE' THEN
        IF NOT EXISTS (SELECT 1 FROM changed) THEN
            RETURN NULL;
        END IF;
    END IF;
    IF coalesce(current_setting('{_MOVED}', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    UPDATE catalogue_version SET version = version + 1 RETURNING version INTO moved;
    PERFORM set_config('{_MOVED}', 'on', true);
    PERFORM pg_notify('{CHANNEL}', moved::text);
    RETURN NULL;
END
$body$;
"""

# name suffix -> the trigger's timing, events and transition table
_TRIGGERS = {
    "lock": "BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE",
    "insert": "AFTER INSERT",
    "update": "AFTER UPDATE",
    "delete": "AFTER DELETE",
    "truncate": "AFTER TRUNCATE",
}
_TRANSITION = {
    "insert": "REFERENCING NEW TABLE AS changed",
    "update": "REFERENCING NEW TABLE AS changed",
    "delete": "REFERENCING OLD TABLE AS changed",
}


def trigger_name(table: str, suffix: str) -> str:
    return f"ucupdates_{table}_{suffix}"


def _triggers_sql(tables: list[str], present: set[tuple[str, str]]) -> str:
    statements = []
    for table in tables:
        for suffix, when in _TRIGGERS.items():
            name = trigger_name(table, suffix)
            if (table, name) in present:
                continue
            function = "lock" if suffix == "lock" else "changed"
            statements.append(
                f"CREATE TRIGGER {name} {when} ON {table} {_TRANSITION.get(suffix, '')}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION ucupdates_catalogue_{function}();"
            )
    return "\n".join(statements)


def install(conn: PgConnection) -> None:
    """Make the version row, the functions and the triggers of every catalogue table that
    exists (a store opened without upgrading may lack newer ones), in one transaction.
    Does nothing on a hot standby."""
    if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
        return
    tables = [
        t
        for t in CATALOGUE_TABLES
        if conn.execute("SELECT to_regclass(?)", (t,)).fetchone()[0] is not None
    ]
    present = {
        (str(table), str(name))
        for table, name in conn.execute(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE c.relnamespace = current_schema()::regnamespace"
            " AND t.tgname LIKE 'ucupdates\\_%' AND NOT t.tgisinternal"
        )
    }
    conn.script(f"BEGIN;\n{_VERSION_ROW}{_FUNCTIONS}{_triggers_sql(tables, present)}\nCOMMIT;")
