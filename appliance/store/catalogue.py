"""The catalogue's tables: rules, updates and their files, packages, test devices.

`catalog()` reads the snapshot the update decision works on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from appliance.model import (
    RULE_KEY_FIELDS,
    Catalog,
    FileRole,
    IdentifierKind,
    NewFile,
    Rule,
    RuleKey,
    RuleState,
    StoredFile,
    TestDevice,
    UpdateFile,
)
from appliance.store.connection import INTEGRITY_ERRORS, Connection
from appliance.store.errors import DuplicateError, StoreError


@dataclass(frozen=True)
class RuleFilter:
    """Which rules a command acts on; every given field must match (case-insensitive)."""

    ids: tuple[int, ...] = ()
    device_type: str | None = None
    brand: str | None = None
    model: str | None = None
    revision: str | None = None
    locale: str | None = None
    update_type: str | None = None
    state: RuleState | None = None
    pending_only: bool = False
    everything: bool = False  # an explicit "all rules", so that no filter is never all

    def is_empty(self) -> bool:
        return self == RuleFilter()


_KEY_COLUMNS = ", ".join(RULE_KEY_FIELDS)
_KEY_MATCH = " AND ".join(f"lower({c}) = lower(?)" for c in RULE_KEY_FIELDS)
_RULE_COLUMNS = (
    f"id, {_KEY_COLUMNS}, approved_version, pending_version, restore_version, state, updated_at,"
    " guid"
)
_FILE_COLUMNS = (
    "u.device_type, u.brand, u.model, u.revision, u.locale, u.update_type, u.version, "
    "f.role, f.file_name, f.signature_name, f.path, f.size, f.sha256, u.timestamp"
)


def _key(row: Sequence[Any], start: int = 0) -> RuleKey:
    return RuleKey(*row[start : start + len(RULE_KEY_FIELDS)])


def _rule(row: Sequence[Any]) -> Rule:
    return Rule(
        id=row[0],
        key=_key(row, 1),
        approved_version=row[7],
        pending_version=row[8],
        restore_version=row[9],
        state=RuleState(row[10]),
        updated_at=row[11],
        guid=row[12],
    )


def _stored_file(row: Sequence[Any]) -> StoredFile:
    return StoredFile(
        key=_key(row),
        version=row[6],
        role=FileRole(row[7]),
        file_name=row[8],
        signature_name=row[9],
        path=PurePosixPath(row[10]),
        size=row[11],
        sha256=row[12],
    )


def _test_device(row: Sequence[Any]) -> TestDevice:
    return TestDevice(row[0], row[1], IdentifierKind(row[2]), row[3], row[4], row[5])


def astuple_key(key: RuleKey) -> tuple[str, ...]:
    return tuple(getattr(key, c) for c in RULE_KEY_FIELDS)


class CatalogueTables(Connection):
    """Rules, updates, files, packages and test devices."""

    # -- rules --------------------------------------------------------------------------

    def rules(self, flt: RuleFilter = RuleFilter()) -> list[Rule]:
        where: list[str] = []
        args: list[Any] = []
        if flt.ids:
            where.append(f"id IN ({', '.join('?' * len(flt.ids))})")
            args.extend(flt.ids)
        for column in RULE_KEY_FIELDS:
            value = getattr(flt, column)
            if value is not None:
                where.append(f"lower({column}) = lower(?)")
                args.append(value)
        if flt.state is not None:
            where.append("state = ?")
            args.append(flt.state.value)
        if flt.pending_only:
            where.append("pending_version IS NOT NULL")
        sql = f"SELECT {_RULE_COLUMNS} FROM rules"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {_KEY_COLUMNS}"
        return [_rule(r) for r in self._conn.execute(sql, args)]

    def rule(self, rule_id: int) -> Rule | None:
        row = self._conn.execute(f"SELECT {_RULE_COLUMNS} FROM rules WHERE id = ?", (rule_id,))
        found = row.fetchone()
        return _rule(found) if found else None

    def rule_by_key(self, key: RuleKey) -> Rule | None:
        row = self._conn.execute(
            f"SELECT {_RULE_COLUMNS} FROM rules WHERE {_KEY_MATCH}", astuple_key(key)
        ).fetchone()
        return _rule(row) if row else None

    def insert_rule(self, key: RuleKey, pending_version: str, guid: str | None = None) -> Rule:
        now = self.now()
        cur = self._conn.execute(
            f"INSERT INTO rules ({_KEY_COLUMNS}, pending_version, state, created_at, updated_at,"
            " guid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*astuple_key(key), pending_version, RuleState.PENDING.value, now, now, guid),
        )
        self._catalogue_changed()
        rule = self.rule(int(cur.lastrowid or 0))
        assert rule is not None
        return rule

    def save_rule(self, rule: Rule) -> Rule:
        """Write a rule's versions and state (its key never changes)."""
        self._conn.execute(
            "UPDATE rules SET approved_version = ?, pending_version = ?, restore_version = ?,"
            " state = ?, updated_at = ? WHERE id = ?",
            (
                rule.approved_version,
                rule.pending_version,
                rule.restore_version,
                rule.state.value,
                self.now(),
                rule.id,
            ),
        )
        self._catalogue_changed()
        saved = self.rule(rule.id)
        if saved is None:
            raise StoreError(f"rule {rule.id} does not exist")
        return saved

    def set_rule_guid(self, rule_id: int, guid: str | None) -> None:
        """Record the GUID a package assigns to the rule (save_rule leaves it alone)."""
        self._conn.execute("UPDATE rules SET guid = ? WHERE id = ?", (guid, rule_id))
        self._catalogue_changed()

    def delete_rule(self, rule_id: int) -> None:
        self._conn.execute("DELETE FROM rules WHERE id = ?", (rule_id,))
        self._catalogue_changed()

    # -- updates and their files --------------------------------------------------------

    def update_files(self, key: RuleKey, version: str) -> list[StoredFile]:
        match = " AND ".join(f"lower(u.{c}) = lower(?)" for c in RULE_KEY_FIELDS)
        rows = self._conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM files f JOIN updates u ON u.id = f.update_id"
            f" WHERE {match} AND u.version = ? ORDER BY f.path",
            (*astuple_key(key), version),
        )
        return [_stored_file(r) for r in rows]

    def has_update(self, key: RuleKey, version: str) -> bool:
        row = self._conn.execute(
            f"SELECT 1 FROM updates WHERE {_KEY_MATCH} AND version = ?",
            (*astuple_key(key), version),
        ).fetchone()
        return row is not None

    def add_update(
        self,
        key: RuleKey,
        version: str,
        timestamp: str | None,
        package_id: int,
        files: Sequence[NewFile],
    ) -> None:
        cur = self._conn.execute(
            f"INSERT INTO updates ({_KEY_COLUMNS}, version, timestamp, package_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*astuple_key(key), version, timestamp, package_id, self.now()),
        )
        update_id = cur.lastrowid
        self._conn.executemany(
            "INSERT INTO files (update_id, role, file_name, signature_name, path, size, sha256)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    update_id,
                    f.role.value,
                    f.file_name,
                    f.signature_name,
                    f.path.as_posix(),
                    f.size,
                    f.sha256,
                )
                for f in files
            ],
        )
        self._catalogue_changed()

    def delete_update(self, key: RuleKey, version: str) -> None:
        self._conn.execute(
            f"DELETE FROM updates WHERE {_KEY_MATCH} AND version = ?", (*astuple_key(key), version)
        )
        self._catalogue_changed()

    def stored_files(self) -> list[StoredFile]:
        rows = self._conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM files f JOIN updates u ON u.id = f.update_id"
            " ORDER BY f.path"
        )
        return [_stored_file(r) for r in rows]

    def updates(self) -> list[tuple[RuleKey, str]]:
        rows = self._conn.execute(f"SELECT {_KEY_COLUMNS}, version FROM updates")
        return [(_key(r), r[6]) for r in rows]

    # -- packages -----------------------------------------------------------------------

    def add_package(self, name: str, sha256: str, size: int, actor: str) -> int:
        cur = self._conn.execute(
            "INSERT INTO packages (name, sha256, size, imported_at, imported_by)"
            " VALUES (?, ?, ?, ?, ?)",
            (name, sha256, size, self.now(), actor),
        )
        return int(cur.lastrowid or 0)

    def has_package(self, sha256: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM packages WHERE sha256 = ?", (sha256,))
        return row.fetchone() is not None

    # -- test devices -------------------------------------------------------------------

    def add_test_device(
        self, name: str, kind: IdentifierKind, identifier: str, scope: str = "global"
    ) -> TestDevice:
        try:
            cur = self._conn.execute(
                "INSERT INTO test_devices (name, kind, identifier, scope, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, kind.value, identifier, scope, self.now()),
            )
        except INTEGRITY_ERRORS:
            raise DuplicateError(
                f"a test device with {kind.value} {identifier} exists already"
            ) from None
        self._catalogue_changed()
        found = self.test_device(int(cur.lastrowid or 0))
        assert found is not None
        return found

    def test_devices(self) -> list[TestDevice]:
        rows = self._conn.execute(
            "SELECT id, name, kind, identifier, scope, created_at FROM test_devices"
            " ORDER BY name, identifier"
        )
        return [_test_device(r) for r in rows]

    def test_device(self, device_id: int) -> TestDevice | None:
        row = self._conn.execute(
            "SELECT id, name, kind, identifier, scope, created_at FROM test_devices WHERE id = ?",
            (device_id,),
        ).fetchone()
        return _test_device(row) if row else None

    def remove_test_device(self, device_id: int) -> None:
        self._conn.execute("DELETE FROM test_devices WHERE id = ?", (device_id,))
        self._catalogue_changed()

    # -- what the decision reads --------------------------------------------------------

    def catalog(self) -> Catalog:
        images = [
            UpdateFile(
                key=_key(r),
                version=r[6],
                file_name=r[8],
                signature_file_name=r[9],
                size=r[11],
                sha256=r[12],
                timestamp=r[13],
                path=PurePosixPath(r[10]),
            )
            for r in self._conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files f JOIN updates u ON u.id = f.update_id"
                " WHERE f.role = ?",
                (FileRole.IMAGE.value,),
            )
        ]
        macs: set[str] = set()
        serials: set[str] = set()
        for kind, identifier in self._conn.execute("SELECT kind, identifier FROM test_devices"):
            (macs if kind == IdentifierKind.MAC.value else serials).add(identifier)
        return Catalog(
            rules=tuple(self.rules()),
            files=tuple(images),
            test_macs=frozenset(macs),
            test_serials=frozenset(serials),
        )
