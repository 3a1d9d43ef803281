"""Restore a backup (`catalogue.backup`) into the data folder, whole or not at all.

Refused while `serve` runs on the data folder (every serve process holds `serve.lock`
shared; a restore takes it exclusive, so no serve starts while it runs), while an import
or clean-up holds the data lock, for a backup of a newer format, and for a database of a
newer schema than this version knows.

1. Read the tar once, front to back: the manifest first; each member, whose name must
   be one a backup writes, is written under `<data>/.restore-<time>.partial/` while it is
   hashed, and must have the size and SHA-256 the manifest gives; every member the
   manifest lists must be there. The database's schema version and SQLite's quick check
   are read too. Anything wrong removes that folder: the current data is untouched.
2. Every file written is fsynced, then every folder; the folder is renamed
   `.restore-<time>.ready`, and the data folder fsynced. **This is the commit point.**
3. For each restored entry (`DeviceUpdateStore`, `tls`, the database with its `-wal` and
   `-shm`), the current one is renamed into `<data>/restore-previous-<time>/` and the
   new one into its place; then the empty `.ready` folder goes.

A crash before step 2 leaves the old data with a `.partial` folder beside it, which the
next command that opens the data folder deletes. A crash in step 3 leaves a `.ready`
folder: the next command that opens the data folder (`serve` included) finishes step 3
before it opens the database (`finish_restore`, under the data lock). Each entry's move
can be done again, so there is no state between the old data and the new.

The previous data is kept in `restore-previous-<time>/` (delete it once the restored
appliance works) unless the restore is told to discard it. Device logs, audit files,
captures and uploads are not part of a backup and stay as they are.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from appliance.catalogue.actions import CatalogueError, data_lock
from appliance.catalogue.backup import DATABASE, FORMAT, MANIFEST, STORE, TLS, Manifest
from appliance.catalogue.durable import fsync_folder, fsync_folders
from appliance.catalogue.verify import CHUNK
from appliance.config import Config
from appliance.store import Store, StoreError, inspect_database, newest_schema_version

SERVE_LOCK = "serve.lock"
PID_FILE = "ucupdates.pid"
PREVIOUS = "restore-previous-"
_BUILD = ".restore-"
_PARTIAL, _READY = ".partial", ".ready"
_ENTRIES = (STORE, TLS, DATABASE)  # what a restore replaces, in the order it does
_DATABASE_SIDES = ("-wal", "-shm", "-journal")  # go with the database they belong to
_MAX_MANIFEST = 64 << 20


class RestoreError(CatalogueError):
    """A restore that cannot be done; str() is the line to show (it says whether
    anything changed)."""


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest
    previous: Path | None  # where the replaced data is kept (None: discarded)
    upgrade_backup: Path | None  # the copy taken before the restored schema was upgraded


# -- serve holds the data folder ------------------------------------------------------------


def hold_serve_lock(data_dir: Path) -> int:
    """For `serve`: hold `serve.lock` shared (every worker does) until the process ends;
    refused while a restore runs. Returns the descriptor to keep open."""
    fd = os.open(data_dir / SERVE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CatalogueError(
            f"a restore is running on {data_dir}: start serve again when it has finished"
        ) from None
    return fd


@contextmanager
def no_serve(data_dir: Path, doing: str = "restore") -> Iterator[None]:
    """Hold `serve.lock` exclusive while `doing` (a verb: what the message asks to do
    between stopping serve and starting it again); refused while serve runs."""
    fd = os.open(data_dir / SERVE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = f" (process {int((data_dir / PID_FILE).read_text().strip())})"
            except (OSError, ValueError):
                pid = ""
            raise RestoreError(
                f"ucupdates serve is running on {data_dir}{pid}: stop it first "
                f"(systemctl stop ucupdates), {doing}, then start it again"
            ) from None
        yield
    finally:
        os.close(fd)


# -- restore --------------------------------------------------------------------------------


def _no_checkpoint(_: str) -> None:
    pass


def restore_backup(
    archive: Path,
    config: Config,
    actor: str,
    *,
    discard_previous: bool = False,
    stream: BinaryIO | None = None,
    checkpoint: Callable[[str], None] = _no_checkpoint,
) -> RestoreResult:
    """Replace the data folder's database, stored files and TLS files with the backup's:
    the file `archive`, or what `stream` gives (`archive` then only names it).

    `checkpoint(phase)` is called at "unpacked" (before the commit point), "ready" (after
    it) and "moved <entry>" (each entry in place): tests stop a restore there."""
    data_dir = config.data_dir
    try:
        data_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as e:
        raise RestoreError(f"cannot use data folder {data_dir}: {e.strerror}") from e
    with no_serve(data_dir), data_lock(config.lock_path, "restore"):
        _finish_locked(data_dir)
        _check_renamable(data_dir)
        stamp = _stamp()
        build = data_dir / f"{_BUILD}{stamp}{_PARTIAL}"
        try:
            manifest = _unpack(archive, stream, build, data_dir)
            checkpoint("unpacked")
            ready = build.with_name(f"{_BUILD}{stamp}{_READY}")
            os.rename(build, ready)
            fsync_folder(data_dir)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        checkpoint("ready")
        previous = _roll_forward(data_dir, ready, checkpoint)
        upgrade_backup = _record(config, archive, manifest, actor)
        if discard_previous:
            shutil.rmtree(previous)
        return RestoreResult(manifest, None if discard_previous else previous, upgrade_backup)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _unpack(archive: Path, stream: BinaryIO | None, build: Path, data_dir: Path) -> Manifest:
    """Steps 1 and 2 up to the rename: the backup, checked, in `build`."""
    if stream is None and not archive.is_file():
        raise RestoreError(f"{archive}: no such file")
    try:
        with tarfile.open(archive if stream is None else None, "r|*", fileobj=stream) as tar:
            manifest = _read_manifest(archive, tar)
            _check_space(manifest, data_dir)
            build.mkdir(mode=0o750)
            for entry in (STORE, TLS):
                (build / entry).mkdir(mode=0o750)
            written = _extract_members(archive, tar, manifest, build)
    except tarfile.TarError as e:
        raise RestoreError(f"{archive}: not a whole backup ({e}); nothing changed") from e
    except OSError as e:
        raise RestoreError(
            f"cannot restore {archive} into {data_dir}: {e.strerror or e}; nothing changed"
        ) from e
    version, problems = inspect_database(build / DATABASE)
    if version != manifest.schema_version or problems:
        why = "; ".join(problems[:3]) or f"schema {version}, {manifest.schema_version} listed"
        raise RestoreError(f"{archive}: its database is damaged ({why}); nothing changed")
    folders = {build} | {p.parent for p in written}
    fsync_folders(sorted(folders, key=lambda d: len(d.parts), reverse=True))
    return manifest


def _read_manifest(archive: Path, tar: tarfile.TarFile) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise RestoreError(f"{archive}: not a ucupdates backup (no {MANIFEST} first)")
    if first.size > _MAX_MANIFEST:
        raise RestoreError(f"{archive}: its manifest is too large ({first.size} bytes)")
    raw = tar.extractfile(first)
    assert raw is not None
    try:
        manifest = Manifest.from_json(raw.read())
    except (ValueError, KeyError, TypeError) as e:
        raise RestoreError(f"{archive}: its manifest cannot be read ({e})") from e
    if manifest.format > FORMAT:
        raise RestoreError(
            f"{archive} is in backup format {manifest.format}, newer than this ucupdates "
            f"reads ({FORMAT}; it was made by ucupdates {manifest.appliance_version}): "
            "restore it with that version or a newer one; nothing changed"
        )
    newest = newest_schema_version()
    if manifest.schema_version > newest:
        raise RestoreError(
            f"{archive} holds a database of schema version {manifest.schema_version} "
            f"(made by ucupdates {manifest.appliance_version}); this ucupdates knows schema "
            f"versions up to {newest}: upgrade ucupdates first; nothing changed"
        )
    names = [m.name for m in manifest.members]
    if DATABASE not in names or len(set(names)) != len(names):
        raise RestoreError(f"{archive}: its manifest lists no database, or a member twice")
    for name in names:
        _safe_name(archive, name)
    return manifest


def _safe_name(archive: Path, name: str) -> PurePosixPath:
    """A member name a backup writes: the database, or a file below the store or tls."""
    path = PurePosixPath(name)
    parts = path.parts
    if name == DATABASE:
        return path
    if (
        len(parts) >= 2
        and parts[0] in (STORE, TLS)
        and not path.is_absolute()
        and all(p not in ("", ".", "..") for p in parts)
        and "\\" not in name
        and "\0" not in name
    ):
        return path
    raise RestoreError(f"{archive}: member {name!r} is not one a backup holds; nothing changed")


def _check_renamable(data_dir: Path) -> None:
    """Each entry a restore replaces must be on the data folder's file system: a mount
    point cannot be renamed, and the swap is made of renames."""
    device = data_dir.stat().st_dev
    for entry in _ENTRIES:
        path = data_dir / entry
        if path.exists() and not path.is_symlink() and path.stat().st_dev != device:
            raise RestoreError(
                f"{path} is another file system (a mount point): a restore swaps it by "
                f"renaming, within {data_dir}'s file system; mount the disk at "
                f"{data_dir} instead; nothing changed"
            )


def _check_space(manifest: Manifest, data_dir: Path) -> None:
    needed = sum(m.size for m in manifest.members)
    free = shutil.disk_usage(data_dir).free
    if needed + (64 << 20) > free:
        raise RestoreError(
            f"not enough free space in {data_dir}: the restore needs {needed >> 20} MiB "
            f"and 64 MiB to spare beside the current data, {free >> 20} MiB free; "
            "nothing changed"
        )


def _extract_members(
    archive: Path, tar: tarfile.TarFile, manifest: Manifest, build: Path
) -> list[Path]:
    """Write each member into `build`, hashed on the way; check it against the manifest."""
    listed = {m.name: m for m in manifest.members}
    seen: list[Path] = []
    while (info := tar.next()) is not None:
        expected = listed.pop(info.name, None)
        if expected is None:
            raise RestoreError(
                f"{archive}: member {info.name!r} is not in its manifest (or twice in the "
                "backup); nothing changed"
            )
        if not info.isfile() or info.size != expected.size:
            raise RestoreError(
                f"{archive}: member {info.name} is not the {expected.size}-byte file its "
                "manifest lists; nothing changed"
            )
        target = build / _safe_name(archive, info.name)
        target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        source = tar.extractfile(info)
        assert source is not None
        mode = 0o640 if info.name.startswith(f"{STORE}/") else 0o600
        digest = hashlib.sha256()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected.sha256:
            raise RestoreError(
                f"{archive}: member {info.name} does not match its SHA-256 in the manifest "
                f"(found {digest.hexdigest()}): the backup is damaged; nothing changed"
            )
        seen.append(target)
    if listed:
        missing = ", ".join(sorted(listed)[:3])
        raise RestoreError(
            f"{archive}: {len(listed)} member(s) its manifest lists are missing ({missing}); "
            "the backup is cut short or damaged; nothing changed"
        )
    return seen


def _roll_forward(
    data_dir: Path, ready: Path, checkpoint: Callable[[str], None] = _no_checkpoint
) -> Path:
    """Step 3 (again, after a crash): each entry of `ready` into the data folder, the
    entry it replaces into the previous-data folder. Returns that folder."""
    stamp = ready.name[len(_BUILD) : -len(_READY)]
    previous = data_dir / f"{PREVIOUS}{stamp}"
    previous.mkdir(mode=0o750, exist_ok=True)
    for entry in _ENTRIES:
        new = ready / entry
        if not new.exists():
            continue  # moved in before a crash
        sides = _DATABASE_SIDES if entry == DATABASE else ()
        for name in (*(entry + side for side in sides), entry):
            current = data_dir / name
            if current.exists() or current.is_symlink():
                os.rename(current, previous / name)
        os.rename(new, data_dir / entry)
        checkpoint(f"moved {entry}")
    fsync_folder(previous)
    fsync_folder(data_dir)
    shutil.rmtree(ready)  # empty, or what SQLite left beside the database it checked
    fsync_folder(data_dir)
    return previous


def _record(config: Config, archive: Path, manifest: Manifest, actor: str) -> Path | None:
    """Open the restored database (an older schema is upgraded now, after its backup)
    and add the restore to its event log."""
    try:
        store = Store.open(config.db_path)
    except StoreError as e:
        raise RestoreError(f"restored, but the restored database cannot be opened: {e}") from e
    try:
        with store.transaction():
            store.append_event(
                actor,
                "backup.restore",
                archive.name,
                None,
                {
                    "created_at": manifest.created_at,
                    "appliance_version": manifest.appliance_version,
                    "schema_version": manifest.schema_version,
                },
            )
        return store.upgrade_backup
    finally:
        store.close()


# -- after a crash --------------------------------------------------------------------------


def finish_restore(config: Config) -> list[Path]:
    """Finish a restore that was committed but interrupted, and delete the folders of
    restores that were not: run before the database is opened. Does nothing while a
    restore, import or clean-up holds the data lock. Returns what it finished or deleted."""
    data_dir = config.data_dir
    if not data_dir.is_dir() or not any(data_dir.glob(f"{_BUILD}*")):
        return []
    try:
        with data_lock(config.lock_path, "finish a restore"):
            return _finish_locked(data_dir)
    except CatalogueError:
        return []


def _finish_locked(data_dir: Path) -> list[Path]:
    done = []
    for leftover in sorted(data_dir.glob(f"{_BUILD}*")):
        if leftover.name.endswith(_READY):
            _roll_forward(data_dir, leftover)
            done.append(leftover)
        elif leftover.name.endswith(_PARTIAL):
            shutil.rmtree(leftover)
            done.append(leftover)
    return done
