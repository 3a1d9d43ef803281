"""A whole store copied into another, row for row, and the two compared (`migrate-store`).

Generic over the schema: the tables, their columns, primary keys and foreign keys are
read from the source, an SQLite database (its catalogue says what the numbered scripts
made), so a new schema version needs nothing here. The target is a store at the same
schema version, normally PostgreSQL (pool mode, docs/pool.md); an SQLite target works
too (the tests' fast tier).

- Rows keep their ids, so every reference holds; tables are filled in foreign-key order
  (a table after those it references). On PostgreSQL each identity column's sequence is
  then set past the copied ids (`setval`), so the next row a node inserts gets a new id.
- `schema_version` is not copied: each database records its own upgrades. The rows a
  schema upgrade writes itself (`rollout_settings`: the bucket salt, random per database)
  are replaced by the source's, so every device keeps its rollout bucket.
- The blobs' tables (image bytes by SHA-256, PostgreSQL) are filled from the stored files
  by the catalogue, not from rows, and compared by hash there.
- The pool's live state (POOL_STATE: each running node's heartbeat, the lockouts in force;
  nothing writes them on SQLite) is neither copied nor compared, and rows there do not
  make a target non-empty: nodes started on the empty database first do not block it.

The caller holds the target's `Store.transaction()` around `copy_rows` (all or nothing)
and checks `occupied_tables` first: rows are only ever copied into an empty store.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.store.connection import UniqueRowError
from appliance.store.database import Store
from appliance.store.errors import StoreError

NOT_COPIED = frozenset({"schema_version"})  # each database records its own upgrades
REPLACED = frozenset({"rollout_settings"})  # written by a schema upgrade: the source's win
BLOB_PREFIX = "blob"  # the blobs' tables: filled from the stored files, compared by hash
POOL_STATE = frozenset({"lockouts", "pool_nodes"})  # the running nodes' own: left alone
BATCH = 1000  # rows read and written at a time
SHOWN = 20  # differences listed per table, then a count of the rest
_NAME = re.compile(r"^\w+$")
_SECRET = re.compile(r"hash|token|password", re.IGNORECASE)  # never printed

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Table:
    """One table of the source: its columns in order, primary key and referenced tables."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # the primary key's columns (every column when it has none)
    references: frozenset[str]


def is_blob_table(name: str) -> bool:
    return name.lower().startswith(BLOB_PREFIX)


def _q(name: str) -> str:
    if not _NAME.match(name):
        raise StoreError(f"unexpected table or column name {name!r}")
    return f'"{name}"'


def _sqlite_of(store: Store) -> sqlite3.Connection:
    return store._sqlite()


def source_tables(source: Store) -> list[Table]:
    """The tables `copy_rows` copies from the SQLite store `source`, in foreign-key order
    (ties by name): neither `schema_version`, the pool's live state nor the blobs' tables."""
    db = _sqlite_of(source)
    names = [
        str(r[0])
        for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        if not str(r[0]).startswith("sqlite_")
    ]
    tables: dict[str, Table] = {}
    for name in names:
        if name in NOT_COPIED or name in POOL_STATE or is_blob_table(name):
            continue
        info = db.execute(f"PRAGMA table_info({_q(name)})").fetchall()
        columns = tuple(str(c[1]) for c in info)
        key = tuple(str(c[1]) for c in sorted((c for c in info if c[5]), key=lambda c: c[5]))
        refs = frozenset(
            str(r[2]) for r in db.execute(f"PRAGMA foreign_key_list({_q(name)})") if r[2] != name
        )
        tables[name] = Table(name, columns, key or columns, refs)
    return _foreign_key_order(tables)


def _foreign_key_order(tables: dict[str, Table]) -> list[Table]:
    ordered: list[Table] = []
    placed: set[str] = set()
    while len(ordered) < len(tables):
        ready = [
            t
            for n, t in sorted(tables.items())
            if n not in placed and all(r in placed or r not in tables for r in t.references)
        ]
        if not ready:
            raise StoreError("the tables' foreign keys form a cycle: no order to copy them in")
        ordered.extend(ready)
        placed.update(t.name for t in ready)
    return ordered


def _target_columns(target: Store, table: str) -> tuple[str, ...]:
    if target.backend == "postgresql":
        rows = target._conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        ).fetchall()
    else:
        rows = [(r[1],) for r in _sqlite_of(target).execute(f"PRAGMA table_info({_q(table)})")]
    return tuple(str(r[0]) for r in rows)


def _count(store: Store, table: str) -> int:
    return int(store._conn.execute(f"SELECT count(*) FROM {_q(table)}").fetchone()[0])


def check_same_schema(source: Store, target: Store) -> list[Table]:
    """The source's tables, after checking that the target is at the same schema version
    and has each of them with the same columns; StoreError saying what differs."""
    if source.schema_version != target.schema_version:
        raise StoreError(
            f"the source's schema is version {source.schema_version}, the target's "
            f"{target.schema_version}: open both with this version of ucupdates first"
        )
    tables = source_tables(source)
    for t in tables:
        found = _target_columns(target, t.name)
        if set(found) != set(t.columns):
            raise StoreError(
                f"table {t.name} has columns {', '.join(t.columns)} in the source but "
                f"{', '.join(found) or 'none'} in the target"
            )
    return tables


def occupied_tables(source: Store, target: Store) -> list[tuple[str, int]]:
    """The tables of the target that hold rows (name, count): a store to copy into must
    have none. The rows its own schema upgrade wrote (REPLACED) do not count."""
    return [
        (t.name, n)
        for t in check_same_schema(source, target)
        if t.name not in REPLACED and (n := _count(target, t.name))
    ]


def _rows(store: Store, table: Table) -> Iterator[Sequence[Any]]:
    """Every row of `table` in `store`, in the source's column order, a batch at a time."""
    sql = f"SELECT {', '.join(map(_q, table.columns))} FROM {_q(table.name)}"
    if store.backend == "postgresql":
        yield from store._conn.execute(sql).fetchall()
        return
    cursor = _sqlite_of(store).execute(sql)
    while batch := cursor.fetchmany(BATCH):
        yield from batch


def copy_rows(source: Store, target: Store, progress: Progress = lambda _: None) -> dict[str, int]:
    """Copy every row of every table of `source` into the empty store `target`, ids kept,
    inside the target's open transaction (StoreError without one, or when the target holds
    rows or differs in schema). Returns the rows copied per table."""
    if not target._in_transaction:
        raise StoreError("copy_rows needs the target's transaction: all rows or none")
    tables = check_same_schema(source, target)
    occupied = [t.name for t in tables if t.name not in REPLACED and _count(target, t.name)]
    if occupied:
        raise StoreError(f"the target store is not empty: {', '.join(occupied)} hold rows")
    copied: dict[str, int] = {}
    for t in tables:
        try:
            copied[t.name] = _copy_table(source, target, t)
        except _database_errors(target) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise StoreError(f"copying table {t.name} failed: {first}") from e
        progress(f"copied {t.name}: {copied[t.name]} row(s)")
    target._catalogue_changed()  # every node reloads its catalogue
    return copied


def _copy_table(source: Store, target: Store, t: Table) -> int:
    if t.name in REPLACED:
        target._conn.execute(f"DELETE FROM {_q(t.name)}")
    insert = (
        f"INSERT INTO {_q(t.name)} ({', '.join(map(_q, t.columns))})"
        f" VALUES ({', '.join('?' * len(t.columns))})"
    )
    count = 0
    batch: list[Sequence[Any]] = []
    for row in _rows(source, t):
        batch.append(tuple(row))
        if len(batch) >= BATCH:
            target._conn.executemany(insert, batch)
            count += len(batch)
            batch = []
    if batch:
        target._conn.executemany(insert, batch)
        count += len(batch)
    _set_identity(target, t)
    return count


def _database_errors(store: Store) -> tuple[type[Exception], ...]:
    """What the store's engine raises for a statement it refuses (a constraint, a
    read-only server, a lost connection): turned into StoreError with the table named."""
    if store.backend == "postgresql":
        import psycopg  # only when it is used

        return (psycopg.Error, UniqueRowError, sqlite3.Error)
    return (sqlite3.Error,)


def _set_identity(target: Store, table: Table) -> None:
    """PostgreSQL: the table's identity sequence set past its highest id (SQLite numbers
    the next row from the highest rowid by itself)."""
    if target.backend != "postgresql" or "id" not in table.columns:
        return
    row = target._conn.execute("SELECT pg_get_serial_sequence(?, 'id')", (table.name,)).fetchone()
    if row is None or row[0] is None:
        return
    target._conn.execute(
        f"SELECT setval(?, (SELECT coalesce(max(id), 0) + 1 FROM {_q(table.name)}), false)",
        (row[0],),
    )


# -- comparing ------------------------------------------------------------------------------


def _shown(column: str, value: Any) -> str:
    return "(hidden)" if _SECRET.search(column) else repr(value)


def _key_text(table: Table, key: tuple[Any, ...]) -> str:
    return ", ".join(f"{c} {_shown(c, v)}" for c, v in zip(table.key, key, strict=True))


def _by_id(store: Store, table: Table) -> Iterator[tuple[Any, ...]]:
    """The rows of a table keyed by an integer `id`, in id order, a page at a time (both
    engines order integers alike), so that a large inventory is never held whole."""
    sql = f"SELECT {', '.join(map(_q, table.columns))} FROM {_q(table.name)}"
    at = table.columns.index("id")
    last: int | None = None
    while True:
        after = "" if last is None else " WHERE id > ?"
        rows = store._conn.execute(
            f"{sql}{after} ORDER BY id LIMIT {BATCH}", () if last is None else (last,)
        ).fetchall()
        yield from (tuple(r) for r in rows)
        if len(rows) < BATCH:
            return
        last = int(rows[-1][at])


def _pairs(
    source: Store, target: Store, table: Table
) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None, tuple[Any, ...] | None]]:
    """(key, source row, target row) for every key on either side, in key order."""
    at = [table.columns.index(c) for c in table.key]
    if table.key == ("id",):  # merged as read: both sides in id order
        left, right = _by_id(source, table), _by_id(target, table)
        a, b = next(left, None), next(right, None)
        i = at[0]
        while a is not None or b is not None:
            if a is not None and (b is None or a[i] < b[i]):
                yield (a[i],), a, None
                a = next(left, None)
            elif b is not None and (a is None or b[i] < a[i]):
                yield (b[i],), None, b
                b = next(right, None)
            elif a is not None and b is not None:  # the same id on both sides
                yield (a[i],), a, b
                a, b = next(left, None), next(right, None)
        return
    lefts = {tuple(r[i] for i in at): tuple(r) for r in _rows(source, table)}
    rights = {tuple(r[i] for i in at): tuple(r) for r in _rows(target, table)}
    for key in sorted(lefts.keys() | rights.keys(), key=repr):
        yield key, lefts.get(key), rights.get(key)


def row_differences(source: Store, target: Store) -> list[str]:
    """Every row of every copied table compared between the two stores, by primary key:
    one line per row missing from the target, found only there, or with a column that
    differs (at most SHOWN a table, then how many more). Secrets (hashes, tokens) are
    never printed. Empty: the same rows."""
    problems: list[str] = []
    for t in check_same_schema(source, target):
        found = 0
        for key, a, b in _pairs(source, target, t):
            where = f"{t.name} {_key_text(t, key)}"
            if b is None:
                lines = [f"{where}: missing in the target"]
            elif a is None:
                lines = [f"{where}: only in the target"]
            else:
                lines = [
                    f"{where}: {c} is {_shown(c, x)} in the source, {_shown(c, y)} in the target"
                    for c, x, y in zip(t.columns, a, b, strict=True)
                    if x != y
                ]
            problems.extend(lines[: max(0, SHOWN - found)])
            found += len(lines)
        if found > SHOWN:
            problems.append(f"{t.name}: {found - SHOWN} more difference(s)")
    return problems
