"""An SQLite appliance moved into a PostgreSQL store, and the two compared (docs/pool.md,
"Moving an appliance into a pool"; `ucupdates migrate-store`).

`migrate_store` runs in one transaction on the target, under the data folder's lock:

1. Refused unless the target holds no rows (`store.occupied_tables`), nothing written.
2. Every stored file the catalogue lists is read and hashed against its recorded SHA-256
   and size: a file missing or changed refuses the migration, naming each, before
   anything is written.
3. Every row of every table is copied, ids kept (`store.copy_rows`).
4. Every stored file goes into the target's blobs, by its SHA-256 (`_put_file`, the one
   place that writes a blob), hashed again as it is read: a file changed since step 2
   fails the migration.
5. The two stores are compared (`store_differences`): every rule, stored file and its
   SHA-256, each blob's hash recomputed from its chunks in the target, the test devices,
   users and rollout settings, then every row of every table. Any difference fails the
   migration with the list, and the transaction is rolled back.
6. Commit. The source is never written to.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from appliance.catalogue.actions import CatalogueError, data_lock
from appliance.catalogue.verify import CHUNK, file_sha256
from appliance.model import StoredFile
from appliance.store import Store, StoreError, copy_rows, occupied_tables, row_differences

Progress = Callable[[str], None]


class MigrationError(CatalogueError):
    """A migration refused or failed: nothing was committed to the target. `problems`
    lists what differs or is damaged (empty for a plain refusal)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Migration:
    """What a migration copied, all of it verified."""

    schema_version: int
    tables: dict[str, int]  # rows copied per table
    files: int  # stored files (catalogue rows)
    blobs: int  # distinct SHA-256 written as blobs
    blob_bytes: int
    seconds: float


def _postgresql(target: Store) -> Store:
    if target.backend != "postgresql":
        raise MigrationError("the target must be a PostgreSQL store")
    return target


def _nothing(_: str) -> None:
    pass


def migrate_store(
    source: Store, target: Store, store_dir: Path, lock_path: Path, progress: Progress = _nothing
) -> Migration:
    """Copy the SQLite store `source` (whose stored files are under `store_dir`) into the
    empty PostgreSQL store `target`, verify, commit: see the module's steps. Raises
    MigrationError (nothing committed)."""
    started = time.monotonic()
    _postgresql(target)
    with data_lock(lock_path, "migrate the store"):
        occupied = occupied_tables(source, target)
        if occupied:
            held = ", ".join(f"{name} ({n})" for name, n in occupied)
            raise MigrationError(
                f"the target store is not empty: it holds rows in {held}; migrate only "
                "into an empty database; nothing was written"
            )
        stored = source.stored_files()
        progress(f"checking {len(stored)} stored file(s) against their SHA-256")
        damaged = [p for s in stored if (p := _damage(store_dir, s)) is not None]
        if damaged:
            raise MigrationError(
                f"{len(damaged)} stored file(s) do not match the catalogue; nothing was written",
                damaged,
            )
        with target.transaction():
            tables = copy_rows(source, target, progress)
            written: dict[str, int] = {}
            for s in stored:
                if s.sha256 not in written:
                    written[s.sha256] = _put_file(target, store_dir, s)
            blob_bytes = sum(written.values())
            progress(f"stored {len(stored)} file(s) as {len(written)} blob(s), {blob_bytes} bytes")
            progress("comparing the two stores")
            problems = store_differences(source, target)
            if problems:
                raise MigrationError(
                    f"the PostgreSQL store differs from the SQLite one in {len(problems)} "
                    "place(s); nothing was committed",
                    problems,
                )
        progress("committed")
    return Migration(
        schema_version=target.schema_version,
        tables=tables,
        files=len(stored),
        blobs=len(written),
        blob_bytes=blob_bytes,
        seconds=time.monotonic() - started,
    )


def _damage(store_dir: Path, stored: StoredFile) -> str | None:
    """What is wrong with a stored file on disk (None: its recorded size and SHA-256)."""
    name = f"stored file DeviceUpdateStore/{stored.path}"
    path = store_dir / stored.path
    try:
        size = path.stat().st_size
        if size != stored.size:
            return f"{name}: {size} bytes, the catalogue records {stored.size}"
        digest = file_sha256(path)
    except OSError as e:
        return f"{name}: {e.strerror}"
    if digest != stored.sha256:
        return f"{name}: SHA-256 {digest}, the catalogue records {stored.sha256}"
    return None


class _Hashed:
    """A stored file's chunks, hashed as they are read (also those put_blob leaves)."""

    def __init__(self, path: Path) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self._file = path.open("rb")

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._file.read(CHUNK):
            self.digest.update(chunk)
            self.size += len(chunk)
            yield chunk

    def finish(self) -> None:
        for _ in self:
            pass
        self._file.close()


def _put_file(target: Store, store_dir: Path, stored: StoredFile) -> int:
    """The one place a stored file becomes a blob of the target: its bytes, by SHA-256.
    Raises MigrationError when they no longer have the recorded hash."""
    name = f"stored file DeviceUpdateStore/{stored.path}"
    try:
        chunks = _Hashed(store_dir / stored.path)
        try:
            target.put_blob(stored.sha256, chunks)
        finally:
            chunks.finish()
    except OSError as e:
        raise MigrationError(f"{name}: {e.strerror}; nothing was committed") from e
    except StoreError as e:  # put_blob's own check of the hash
        raise MigrationError(f"{name}: {e}; nothing was committed") from e
    if chunks.digest.hexdigest() != stored.sha256 or chunks.size != stored.size:
        raise MigrationError(
            f"{name} changed while it was copied (SHA-256 {chunks.digest.hexdigest()}, "
            f"the catalogue records {stored.sha256}); nothing was committed"
        )
    return chunks.size


# -- comparing ------------------------------------------------------------------------------


def _field_differences(what: str, a: Any, b: Any, hidden: Iterable[str] = ()) -> list[str]:
    if a == b:
        return []
    secret = set(hidden)
    return [
        f"{what}: {f.name} is "
        + (
            "different"
            if f.name in secret
            else f"{getattr(a, f.name)!r} in the source, {getattr(b, f.name)!r} in the target"
        )
        for f in fields(a)
        if getattr(a, f.name) != getattr(b, f.name)
    ]


def _by(
    kind: str,
    left: Iterable[Any],
    right: Iterable[Any],
    key: Callable[[Any], Any],
    name: Callable[[Any], str],
    hidden: Iterable[str] = (),
) -> list[str]:
    a = {key(x): x for x in left}
    b = {key(x): x for x in right}
    out: list[str] = []
    for k in sorted(a.keys() | b.keys(), key=repr):
        if k not in b:
            out.append(f"{kind} {name(a[k])}: missing in the target")
        elif k not in a:
            out.append(f"{kind} {name(b[k])}: only in the target")
        else:
            out.extend(_field_differences(f"{kind} {name(a[k])}", a[k], b[k], hidden))
    return out


def _blob_problem(target: Store, sha256: str, size: int) -> str | None:
    """A blob's hash and size recomputed from its chunks in the target."""
    if not target.has_blob(sha256):
        return f"blob {sha256}: missing in the target"
    digest = hashlib.sha256()
    length = 0
    for chunk in target.blob_chunks(sha256):
        digest.update(chunk)
        length += len(chunk)
    if digest.hexdigest() != sha256 or length != size:
        return (
            f"blob {sha256}: its chunks hash to {digest.hexdigest()} ({length} bytes), "
            f"not to its name ({size} bytes)"
        )
    return None


def store_differences(source: Store, target: Store) -> list[str]:
    """What differs between the SQLite store `source` and the PostgreSQL store `target`
    it was copied into: each rule (key, versions, state, GUID), each stored file (its
    update, names, size, SHA-256) and its blob's hash recomputed from the chunks, the test
    devices, users and rollout settings (bucket salt, paths, stagings, networks, external
    policy, pins), then every row of every table. Empty: the same. Secrets (password and
    NT hashes, the salt) are never printed."""
    _postgresql(target)
    problems: list[str] = []
    if source.schema_version != target.schema_version:
        return [
            f"schema version {source.schema_version} in the source, "
            f"{target.schema_version} in the target"
        ]
    problems += _by("rule", source.rules(), target.rules(), lambda r: r.id, _rule_name)
    files = source.stored_files()
    problems += _by(
        "stored file", files, target.stored_files(), lambda s: str(s.path), lambda s: str(s.path)
    )
    sizes = {s.sha256: s.size for s in files}
    problems += [p for h, n in sorted(sizes.items()) if (p := _blob_problem(target, h, n))]
    problems += _by(
        "test device", source.test_devices(), target.test_devices(), lambda d: d.id, _device_name
    )
    problems += _by(
        "user",
        source.users(),
        target.users(),
        lambda u: u.id,
        lambda u: repr(u.name),
        hidden=("password_hash", "nt_hash"),
    )
    a, b = source.rollout_entries(), target.rollout_entries()
    if a.salt != b.salt:
        problems.append("rollout settings: the bucket salt is different")
    for part in ("paths", "stagings", "networks", "pins"):
        if sorted(map(repr, getattr(a, part))) != sorted(map(repr, getattr(b, part))):
            problems.append(f"rollout settings: the {part} are different")
    if a.external != b.external:
        problems.append("rollout settings: the external zone's policy is different")
    return problems + row_differences(source, target)


def _rule_name(r: Any) -> str:
    return f"{r.id} {r.key}"


def _device_name(d: Any) -> str:
    return f"{d.id} {d.name!r} ({d.kind.value} {d.identifier})"


def verify_store(source: Store, target: Store, progress: Progress = _nothing) -> list[str]:
    """`migrate-store --verify-only`: the comparison alone, nothing written."""
    progress("comparing the two stores")
    return store_differences(source, target)
