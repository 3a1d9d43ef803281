"""Every schema version on a real PostgreSQL (the dialect's translation) and on SQLite (the
scripts as shipped, through Store.open): the same tables, columns (normalised types,
NOT NULL, defaults, primary keys), indexes (names, uniqueness, keys), foreign keys and
append-only guards.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from appliance.store.database import _AFTER, Store, _schema_scripts
from appliance.store.dialect import to_postgresql
from appliance.testing import Postgres

# declared type -> the kind both engines agree on; PostgreSQL's 32-bit integer and 4-byte
# real have none (SQLite's INTEGER is 64-bit, its REAL 8 bytes)
_SQLITE_KINDS = {"integer": "integer", "text": "text", "real": "real", "blob": "bytes"}
_POSTGRES_KINDS = {
    "bigint": "integer",
    "text": "text",
    "double precision": "real",
    "bytea": "bytes",
}


def _default(value: str | None) -> str | None:
    return None if value is None else value.replace("::text", "")


def _keys(text: str) -> tuple[str, ...]:
    """An index's key list, comparable across engines: no spaces, casts or case."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        current += ch
    parts.append(current)
    return tuple(re.sub(r"\s+", "", p.replace("::text", "")).lower() for p in parts)


def sqlite_schema(conn: sqlite3.Connection) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for table in names:
        columns = [
            (
                name,
                _SQLITE_KINDS[kind.lower()],
                bool(notnull) or bool(pk),
                _default(default),
                bool(pk),
            )
            for _, name, kind, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})")
        ]
        indexes, unique = set(), set()
        for _, name, is_unique, origin, _ in conn.execute(f"PRAGMA index_list({table})"):
            if origin == "pk":
                continue
            if origin == "u":
                cols = [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]
                unique.add(tuple(cols))
                continue
            sql = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
            ).fetchone()[0]
            inside = sql[sql.index("(", sql.upper().index(" ON ")) + 1 : sql.rindex(")")]
            indexes.add((name, bool(is_unique), _keys(inside)))
        foreign = {
            (r[3], r[2], r[4], r[6]) for r in conn.execute(f"PRAGMA foreign_key_list({table})")
        }
        tables[table] = {
            "columns": columns,
            "indexes": indexes,
            "unique": unique,
            "foreign": foreign,
        }
    triggers = {
        (r[0], r[1])
        for r in conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'")
    }
    return {"tables": tables, "triggers": triggers}


def postgres_schema(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    names = [
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    ]
    for table in names:
        pk = {
            r[0]
            for r in conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
                (table,),
            )
        }
        columns = [
            (name, _POSTGRES_KINDS[kind], nullable == "NO", _default(default), name in pk)
            for name, kind, nullable, default in conn.execute(
                "SELECT column_name, data_type, is_nullable, column_default"
                " FROM information_schema.columns WHERE table_schema = 'public'"
                " AND table_name = %s ORDER BY ordinal_position",
                (table,),
            )
        ]
        indexes, unique = set(), set()
        for name, is_unique, constraint, nkeys, oid in conn.execute(
            "SELECT c.relname, i.indisunique, EXISTS (SELECT 1 FROM pg_constraint k"
            " WHERE k.conindid = i.indexrelid AND k.contype = 'u'), i.indnkeyatts, i.indexrelid"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass AND NOT i.indisprimary",
            (table,),
        ).fetchall():
            keys = [
                conn.execute("SELECT pg_get_indexdef(%s, %s, true)", (oid, k)).fetchone()[0]
                for k in range(1, nkeys + 1)
            ]
            if constraint:
                unique.add(tuple(keys))
            else:
                indexes.add((name, bool(is_unique), _keys(",".join(keys))))
        foreign = {
            (column, target, target_column, rule)
            for column, target, target_column, rule in conn.execute(
                "SELECT kcu.column_name, ccu.table_name, ccu.column_name, rc.delete_rule"
                " FROM information_schema.referential_constraints rc"
                " JOIN information_schema.key_column_usage kcu"
                "  ON kcu.constraint_name = rc.constraint_name"
                " JOIN information_schema.constraint_column_usage ccu"
                "  ON ccu.constraint_name = rc.unique_constraint_name"
                " WHERE kcu.table_name = %s",
                (table,),
            )
        }
        tables[table] = {
            "columns": columns,
            "indexes": indexes,
            "unique": unique,
            "foreign": foreign,
        }
    triggers = {
        (r[0], r[1])
        for r in conn.execute(
            "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE NOT t.tgisinternal"
        )
    }
    return {"tables": tables, "triggers": triggers}


def apply_postgresql(conn: psycopg.Connection[Any], now: str) -> None:
    """Every schema version as Store._migrate applies it to SQLite, one transaction each."""
    for version, sql in _schema_scripts():
        with conn.transaction():
            conn.execute(
                to_postgresql(
                    "CREATE TABLE IF NOT EXISTS schema_version "
                    "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);\n"
                    f"{sql}\n"
                    f"INSERT INTO schema_version VALUES ({version}, '{now}');\n"
                    f"{_AFTER[version]() if version in _AFTER else ''}"
                )
            )


def test_every_schema_version_makes_the_same_tables_on_postgresql_as_on_sqlite(
    postgres: Postgres, tmp_path: Path
) -> None:
    store = Store.open(tmp_path / "ucupdates.db")
    try:
        expected = sqlite_schema(store._conn)
        versions = store._conn.execute("SELECT version FROM schema_version").fetchall()
    finally:
        store.close()
    with psycopg.connect(postgres.conninfo, autocommit=True) as conn:
        apply_postgresql(conn, "2026-12-06T08:00:00Z")
        found = postgres_schema(conn)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == versions
        assert conn.execute("SELECT count(*) FROM rollout_settings").fetchone() == (1,)
    assert sorted(found["tables"]) == sorted(expected["tables"])
    for table, shape in expected["tables"].items():
        assert found["tables"][table] == shape, table
    assert found["triggers"] == expected["triggers"]


def test_the_event_log_is_append_only_on_postgresql(postgres: Postgres) -> None:
    with psycopg.connect(postgres.conninfo, autocommit=True) as conn:
        apply_postgresql(conn, "2026-12-06T08:00:00Z")
        conn.execute("INSERT INTO events (at, actor, action, target) VALUES ('t', 'a', 'b', 'c')")
        for statement in ("UPDATE events SET actor = 'x'", "DELETE FROM events"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT actor FROM events").fetchall() == [("a",)]
        rule = conn.execute(
            "INSERT INTO rules (device_type, brand, model, revision, locale, update_type,"
            " state, created_at, updated_at) VALUES"
            " ('UCPhone', 'Polycom', 'CX600', 'Rev1', 'ENU', 'UCPhone', 'pending', 't', 't')"
            " RETURNING id"
        ).fetchone()
        assert rule is not None and rule[0] >= 1  # numbered like SQLite's rowid keys
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE rules SET state = 'bogus'")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO rules (device_type, brand, model, revision, locale, update_type,"
                " state, created_at, updated_at) VALUES"
                " ('ucphone', 'POLYCOM', 'cx600', 'rev1', 'enu', 'ucphone', 'pending', 't', 't')"
            )
