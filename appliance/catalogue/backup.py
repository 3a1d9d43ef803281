"""A backup of the appliance's data: one tar file that `restore` can bring back whole.

What it holds (docs/operations.md, Backup and restore):

- `ucupdates-backup.json`, the manifest, first: the backup format, the appliance's
  version, the database's schema version, when it was made, and every other member's
  name, size and SHA-256;
- `ucupdates.sqlite3`: a snapshot of the database taken through SQLite's online backup
  API (consistent, taken while `serve` answers and imports commit);
- `DeviceUpdateStore/...`: every stored file that snapshot lists, each hashed as it is
  read and compared with the SHA-256 the snapshot records: a damaged file fails the
  backup, naming the file, rather than being carried into it;
- `tls/...`: the generated test CA and certificates, and an installed enterprise
  certificate and key (phones trust that CA: a rebuilt appliance needs the same one).

Device logs, audit files and captures are not in it (syslog and the audit files'
rotation keep those). The tar is not compressed: firmware images are compressed already,
and gzip would spend the CPU the phones' TLS needs. It holds password hashes and private
keys: it is written 0600.

No lock is taken: files the catalogue lists are never changed in place (an import writes
new paths and commits after; only `clean-files` deletes listed files). A file the
snapshot lists that is gone when read (a clean-up committed meanwhile) makes the backup
start again from a new snapshot, a few times at most.

The file is written under a temporary name beside its target (`.NAME.tmp`, locked while
written), fsynced and renamed: a failure (a full disk) leaves no partial file.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import secrets
import sqlite3
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from appliance.catalogue.durable import fsync_folder
from appliance.catalogue.verify import CHUNK
from appliance.config import Config
from appliance.model import StoredFile
from appliance.store import Store, StoreError
from appliance.version import __version__

FORMAT = 1  # the backup format this version writes and the newest it reads
MANIFEST = "ucupdates-backup.json"
DATABASE = "ucupdates.sqlite3"
STORE = "DeviceUpdateStore"
TLS = "tls"
BACKUP_MODE = 0o600
NAME_PREFIX = "ucupdates-backup-"  # scheduled backups: ucupdates-backup-<UTC time>.tar
NAME_SUFFIX = ".tar"
_ATTEMPTS = 3  # snapshots taken when a listed file vanished under the backup


class BackupError(Exception):
    """A backup that cannot be made; str() is the line to show."""


class _Vanished(Exception):
    """A file the snapshot lists is not on disk: lost, or deleted since by a clean-up."""

    def __init__(self, stored: StoredFile) -> None:
        super().__init__(f"{STORE}/{stored.path.as_posix()}")
        self.stored = stored


@dataclass(frozen=True)
class Member:
    name: str  # in the tar: "ucupdates.sqlite3", "DeviceUpdateStore/...", "tls/..."
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    format: int
    appliance_version: str
    schema_version: int
    created_at: str
    members: tuple[Member, ...]

    def to_json(self) -> bytes:
        data = {
            "format": self.format,
            "appliance_version": self.appliance_version,
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "members": [{"name": m.name, "size": m.size, "sha256": m.sha256} for m in self.members],
        }
        return json.dumps(data, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Raises ValueError (or KeyError, TypeError) for anything but a manifest."""
        data = json.loads(raw)
        members = tuple(
            Member(str(m["name"]), int(m["size"]), str(m["sha256"])) for m in data["members"]
        )
        return cls(
            int(data["format"]),
            str(data["appliance_version"]),
            int(data["schema_version"]),
            str(data["created_at"]),
            members,
        )


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest
    bytes: int  # the tar file's size
    seconds: float


def _no_checkpoint(_: str) -> None:
    pass


def create_backup(
    store: Store,
    config: Config,
    target: Path,
    checkpoint: Callable[[str], None] = _no_checkpoint,
) -> BackupResult:
    """Write a backup of `store` and `config`'s data folder to `target` (replacing it).

    `checkpoint(phase)` is called at "snapshot" (the database copied) and "written"
    (the tar complete, before its rename): tests make a disk fill up there.
    """
    started = time.monotonic()
    folder = target.parent
    if not folder.is_dir():
        raise BackupError(f"cannot write the backup {target}: no folder {folder}")
    for attempt in range(_ATTEMPTS):
        try:
            manifest = _write(store, config, target, checkpoint)
        except _Vanished as e:
            if e.stored in store.stored_files():  # still listed: lost, not cleaned up
                raise BackupError(
                    f"stored file {e} is missing: a backup must not leave it out; nothing "
                    "was written (restore the file from an earlier backup, or import its "
                    "package again)"
                ) from None
            if attempt == _ATTEMPTS - 1:
                raise BackupError(
                    f"stored file {e} was deleted while being backed up, {_ATTEMPTS} times: "
                    "is a clean-up running in a loop? nothing was written"
                ) from None
            continue  # a clean-up deleted it after the snapshot: take a new one
        except OSError as e:
            raise BackupError(
                f"cannot write the backup {target}: {e.strerror or e}; nothing was written"
            ) from e
        return BackupResult(target, manifest, target.stat().st_size, time.monotonic() - started)
    raise AssertionError("unreachable")


def _write(
    store: Store, config: Config, target: Path, checkpoint: Callable[[str], None]
) -> Manifest:
    """One attempt: snapshot, manifest, tar under a temporary name, fsync, rename."""
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    partial = target.parent / f".{target.name}.{tag}.tmp"
    snapshot = target.parent / f".{target.name}.{tag}.db"  # stale when `partial` is
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, BACKUP_MODE)
        with os.fdopen(fd, "wb") as out:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)  # a live backup's file: not stale
            schema, files = _snapshot(store, snapshot)
            checkpoint("snapshot")
            tls = _tls_files(config.tls_dir)
            members = [Member(DATABASE, snapshot.stat().st_size, _sha256(snapshot))]
            members += [Member(f"{STORE}/{f.path.as_posix()}", f.size, f.sha256) for f in files]
            members += [
                Member(f"{TLS}/{name}", len(data), hashlib.sha256(data).hexdigest())
                for name, data in tls
            ]
            manifest = Manifest(FORMAT, __version__, schema, store.now(), tuple(members))
            with tarfile.TarFile(
                fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK
            ) as tar:
                mtime = time.time()
                _add_bytes(tar, MANIFEST, manifest.to_json(), mtime)
                with snapshot.open("rb") as db:
                    _add_stream(tar, members[0], db, mtime)
                for stored in files:
                    _add_stored(tar, config.store_dir, stored)
                for name, data in tls:
                    _add_bytes(tar, f"{TLS}/{name}", data, mtime)
            out.flush()
            os.fsync(out.fileno())
            checkpoint("written")
            os.replace(partial, target)
        fsync_folder(target.parent)
        return manifest
    finally:
        for leftover in (snapshot, partial):
            leftover.unlink(missing_ok=True)


def _snapshot(store: Store, path: Path) -> tuple[int, list[StoredFile]]:
    """Copy the database to `path`; its schema version and the stored files it lists."""
    try:
        store.backup_to(path)
        copy = Store.open_copy(path)
    except (StoreError, sqlite3.Error) as e:
        raise BackupError(f"cannot copy the database: {e}; nothing was written") from e
    try:
        return copy.schema_version, copy.stored_files()
    finally:
        copy.close()


def _tls_files(tls_dir: Path) -> list[tuple[str, bytes]]:
    """The TLS folder's regular files (small: certificates and keys), by name."""
    if not tls_dir.is_dir():
        return []
    found = []
    for entry in sorted(tls_dir.rglob("*")):
        if entry.is_file() and not entry.is_symlink():
            found.append((entry.relative_to(tls_dir).as_posix(), entry.read_bytes()))
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o600
    tar.addfile(info, io.BytesIO(data))


def _add_stream(tar: tarfile.TarFile, member: Member, source: BinaryIO, mtime: float) -> None:
    info = tarfile.TarInfo(member.name)
    info.size, info.mtime, info.mode = member.size, int(mtime), 0o600
    tar.addfile(info, source)


class _Hashing(io.RawIOBase):
    """A file read through, hashed on the way (tarfile copies `size` bytes from it)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.digest.update(data)
        return data


def _add_stored(tar: tarfile.TarFile, store_dir: Path, stored: StoredFile) -> None:
    """One stored file, hashed as it goes in; a mismatch fails the backup, naming it."""
    name = f"{STORE}/{stored.path.as_posix()}"
    try:
        source = (store_dir / stored.path).open("rb")
    except FileNotFoundError:
        raise _Vanished(stored) from None
    with source:
        size = os.fstat(source.fileno()).st_size
        if size != stored.size:
            raise BackupError(
                f"stored file {name} is damaged ({size} bytes, {stored.size} recorded): "
                "a backup must not carry it; nothing was written (restore the file from "
                "an earlier backup, or import its package again)"
            )
        reader = _Hashing(source)
        info = tarfile.TarInfo(name)
        info.size = stored.size
        info.mtime = int(os.fstat(source.fileno()).st_mtime)
        info.mode = 0o640
        tar.addfile(info, reader)
        found = reader.digest.hexdigest()
    if found != stored.sha256:
        raise BackupError(
            f"stored file {name} is damaged (SHA-256 {found}, {stored.sha256} recorded): "
            "a backup must not carry it; nothing was written (restore the file from an "
            "earlier backup, or import its package again)"
        )


# -- scheduled backups: a folder of timestamped files, the newest N kept ------------------


def scheduled_name(store: Store) -> str:
    """`ucupdates-backup-20260101T020000Z.tar`: names sort as their times do."""
    stamp = store.now().replace("-", "").replace(":", "")
    return f"{NAME_PREFIX}{stamp}{NAME_SUFFIX}"


def backups_in(folder: Path) -> list[Path]:
    """The scheduled backups in `folder`, oldest first."""
    return sorted(
        p
        for p in folder.glob(f"{NAME_PREFIX}*{NAME_SUFFIX}")
        if p.is_file() and not p.name.startswith(".")
    )


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` scheduled backups, and the temporary files of
    backups that were killed (unlocked); returns what was deleted."""
    removed = []
    for old in backups_in(folder)[: max(0, len(backups_in(folder)) - keep)]:
        old.unlink()
        removed.append(old)
    for stale in _stale_partials(folder):
        stale.unlink(missing_ok=True)
        removed.append(stale)
    if removed:
        fsync_folder(folder)
    return removed


def _stale_partials(folder: Path) -> list[Path]:
    """Temporary files of backups no process is writing: each `.tmp` is locked while its
    backup runs, and a `.db` snapshot belongs to the `.tmp` of the same name."""
    stale = [t for t in folder.glob(f".{NAME_PREFIX}*.tmp") if not _locked(t)]
    for snapshot in folder.glob(f".{NAME_PREFIX}*.db"):
        partial = snapshot.with_suffix(".tmp")
        if partial in stale or not partial.exists():
            stale.append(snapshot)
    return stale


def _locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True  # gone, or not ours: leave it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # another backup is writing it right now
    finally:
        os.close(fd)
    return False


def backup_summary(result: BackupResult) -> dict[str, Any]:
    """What `backup --json` prints."""
    m = result.manifest
    return {
        "path": str(result.path),
        "bytes": result.bytes,
        "seconds": round(result.seconds, 3),
        "format": m.format,
        "appliance_version": m.appliance_version,
        "schema_version": m.schema_version,
        "created_at": m.created_at,
        "stored_files": sum(1 for x in m.members if x.name.startswith(f"{STORE}/")),
    }
