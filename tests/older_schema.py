"""A database as an older ucupdates left it: the schema upgrade tests' starting point."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from appliance.store import newest_schema_version
from appliance.store.database import _schema_scripts


def older_database(path: Path) -> int:
    """A database at the schema before the newest (the scripts applied up to N-1, as an
    older ucupdates left it), with one package row in it; returns N-1."""
    older = newest_schema_version() - 1
    conn = sqlite3.connect(path, isolation_level=None)
    for version, sql in _schema_scripts():
        if version > older:
            break
        conn.executescript(
            "BEGIN;\nCREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);\n"
            f"{sql}\nINSERT INTO schema_version VALUES ({version}, '2013-04-02T09:30:00Z');\n"
            "COMMIT;"
        )
    conn.execute(
        "INSERT INTO packages (name, sha256, size, imported_at, imported_by)"
        " VALUES ('UCUpdates.cab', 'ab', 1, '2013-04-02T09:30:00Z', 'alice')"
    )
    conn.close()
    return older
