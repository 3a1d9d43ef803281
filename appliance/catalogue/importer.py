"""`ucupdates import`: a vendor package into the DeviceUpdateStore, whole or not at all.

The import runs under the data folder's lock: members are extracted into a staging
folder (each file fsynced), renamed into `DeviceUpdateStore/<DeviceType>/<Brand>/
<Model>/<Revision>/<Locale>/<Version>/<UpdateType>/`, the folders fsynced, and then one
store transaction records the files, the rules and the event. The transaction is the
commit point: a process killed before it leaves only files the catalogue does not list,
which `catalogue.recover` sweeps at the next start, together with the staging folder
(`durable` gives the argument in full: what is fsynced when, and what a crash leaves).

The stored files of a version the package carries again are read back against their
recorded SHA-256 first; damaged ones are written back from the package when its copy
has the recorded hash, and the import is refused when it does not (`stored`).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from appliance.cab import CabError, Cabinet, CabLimits, ExtractedMember, Scan, open_package
from appliance.catalogue import lifecycle
from appliance.catalogue.actions import data_lock, recover_locked
from appliance.catalogue.durable import fsync_folders, store_blobs
from appliance.catalogue.package_format import (
    UPDATE_INFO,
    PackageFormatError,
    PackageUpdate,
    parse_update_info,
)
from appliance.catalogue.progress import ImportProgress, Phase, Staged
from appliance.catalogue.results import ImportResult, Outcome, UpdateReport
from appliance.catalogue.stored import Damage, damaged_files, refusal, write_back
from appliance.config import Config
from appliance.model import FileRole, NewFile
from appliance.store import Store

Checkpoint = Callable[[str], None]


class PackageError(Exception):
    """A package that cannot be imported; str() names the package and the problem."""


def _no_checkpoint(_: str) -> None:
    pass


def import_package(
    store: Store,
    config: Config,
    path: Path,
    actor: str,
    checkpoint: Checkpoint = _no_checkpoint,
    progress: ImportProgress | None = None,
) -> ImportResult:
    """Import the package at `path`; raise PackageError and change nothing when it can't.

    `checkpoint(phase)` is called between phases (tests use it to kill the process there);
    `progress` follows the import for a page that polls it.
    """
    progress = progress or ImportProgress()
    try:
        with data_lock(config.lock_path, "import"):
            recover_locked(store, config.store_dir, config.staging_dir)
            result = _Import(store, config, path, actor, checkpoint, progress).run()
            progress.enter(Phase.DONE)
            return result
    except (CabError, PackageFormatError) as e:
        raise PackageError(f"{path.name}: {e}") from e
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise PackageError(f"{path.name}: {e.strerror or e}{where}") from e
    finally:
        if progress.phase is not Phase.DONE:
            progress.enter(Phase.FAILED)


@dataclass(frozen=True)
class _Placed:
    """A member and where it goes in the store, with the record the store keeps."""

    member: str
    record: NewFile


class _Import:
    def __init__(
        self,
        store: Store,
        config: Config,
        path: Path,
        actor: str,
        checkpoint: Checkpoint,
        progress: ImportProgress,
    ) -> None:
        self.store, self.config, self.path = store, config, path
        self.actor, self.checkpoint, self.progress = actor, checkpoint, progress

    def run(self) -> ImportResult:
        limits = self.config.imports
        self.progress.enter(Phase.SCANNING)
        # Alone: the tables' walk makes a system call per data block, and each one would
        # wait for the GIL behind another thread (seconds for a 1 GB package, loaded).
        cab = open_package(
            self.path,
            CabLimits(limits.max_entries, limits.max_total_bytes, limits.max_ratio),
        )
        # A second process verifies every block's checksum and hashes the package beside
        # the extraction; its verdict is awaited only where it is needed.
        scan = cab.scan()
        try:
            return self._run(cab, scan)
        finally:
            scan.close()

    def _run(self, cab: Cabinet, scan: Scan) -> ImportResult:
        limits = self.config.imports
        try:
            xml = cab.read_small(UPDATE_INFO, limits.max_xml_bytes)
        except KeyError:
            raise PackageFormatError(f"no {UPDATE_INFO} at the package root") from None
        updates = parse_update_info(xml, [m.name for m in cab.members])
        used = {m.casefold() for u in updates for m in u.members()}
        ignored = tuple(
            m.name
            for m in cab.members
            if m.name.casefold() not in used and m.name.casefold() != UPDATE_INFO.casefold()
        )
        placed = {u: self._place(u, cab) for u in updates}
        new = [u for u in updates if not self.store.has_update(u.key, u.version)]
        old = [u for u in updates if u not in new]
        # The store's copy of a version the package carries again is read back first.
        files = [f for u in old for f in self.store.update_files(u.key, u.version)]
        self.progress.enter(Phase.VERIFYING if files else Phase.SCANNING)
        damaged = damaged_files(self.config.store_dir, files)
        if old and not self.store.has_package(scan.digest()[0]):
            self._verify_existing(cab, old, placed, scan, damaged)
        repaired = self._repair(cab, scan, placed, damaged) if damaged else ()

        reports = self._plan(updates, placed)
        if (
            not new
            and all(r.outcome is Outcome.UNCHANGED for r in reports)
            and not self._new_guids(reports)
        ):
            sha256, size = scan.digest()
            return ImportResult(self.path.name, sha256, size, tuple(reports), ignored, 0, repaired)

        to_write = [p for u in new for p in placed[u]]
        written = sum(p.record.size for p in to_write)
        free = shutil.disk_usage(self.config.data_dir).free
        needed = written + limits.min_free_bytes
        if needed > free:
            raise PackageFormatError(
                f"not enough free space in {self.config.data_dir}: the import needs "
                f"{_mib(written)} and keeps {_mib(limits.min_free_bytes)} free; "
                f"{_mib(free)} free"
            )
        staging = self.config.staging_dir / f"import-{os.getpid()}-{secrets.token_hex(4)}"
        staging.mkdir(parents=True)
        moved: list[Path] = []
        committed = False
        try:
            members = staging / "members"
            staged = [Staged(members / p.member, p.record.size, i) for i, u in enumerate(new)
                      for p in placed[u]]  # fmt: skip
            self.progress.extracting(tuple(staged), len(new))
            self.checkpoint("staged")
            extracted = cab.extract({p.member for p in to_write}, members, scan=scan)
            self.checkpoint("extracted")
            self.progress.enter(Phase.COMMITTING)
            records = self._records(to_write, extracted)
            moved = self._move(to_write, staging / "members")
            self.checkpoint("moved")
            sha256, size = scan.digest()
            reports = self._commit(reports, new, records, sha256, size, ignored)
            committed = True
            self.checkpoint("committed")
        finally:
            if not committed:
                for target in moved:
                    target.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
        return ImportResult(
            self.path.name, sha256, size, tuple(reports), ignored, written, repaired
        )

    def _place(self, update: PackageUpdate, cab: Cabinet) -> list[_Placed]:
        """Where each member of `update` goes; the sizes come from the cabinet's tables."""
        folder = update.key.store_dir(update.version)
        placed: dict[PurePosixPath, _Placed] = {}
        for module in update.modules:
            entries = [(module.member, FileRole.IMAGE, module.file_name)]
            if module.signature_member:
                sig_name = PurePosixPath(module.signature_member).name
                entries.append((module.signature_member, FileRole.SIGNATURE, sig_name))
            for member, role, name in entries:
                target = folder / name
                signature = (
                    PurePosixPath(module.signature_member).name
                    if role is FileRole.IMAGE and module.signature_member
                    else None
                )
                record = NewFile(role, name, signature, target, cab.member(member).size, "")
                known = placed.get(target)
                if known is not None and known.member != member:
                    raise PackageFormatError(
                        f"{update.key} {update.version}: {known.member} and {member} "
                        f"would both be stored as {name}"
                    )
                placed[target] = _Placed(cab.member(member).name, record)
        return list(placed.values())

    def _verify_existing(
        self,
        cab: Cabinet,
        updates: list[PackageUpdate],
        placed: dict[PackageUpdate, list[_Placed]],
        scan: Scan,
        damaged: list[Damage],
    ) -> None:
        """A version already in the store must come with the same bytes (the damaged
        files' copies are checked by `_repair`, which extracts them)."""
        skip = {d.stored.path for d in damaged}
        members = {p.member for u in updates for p in placed[u] if p.record.path not in skip}
        digests = cab.extract(members, self.config.staging_dir, write=False, scan=scan)
        for update in updates:
            stored = {f.path: f.sha256 for f in self.store.update_files(update.key, update.version)}
            for p in placed[update]:
                if p.member in digests and stored.get(p.record.path) != digests[p.member].sha256:
                    also = "; ".join(d.line() for d in damaged)
                    raise PackageFormatError(
                        f"{update.key} {update.version}: {p.record.file_name} differs from the "
                        "copy already in the store (remove the rule and run clean-files first)"
                        + (f"; damaged in the store as well: {also}" if also else "")
                    )

    def _repair(
        self,
        cab: Cabinet,
        scan: Scan,
        placed: dict[PackageUpdate, list[_Placed]],
        damaged: list[Damage],
    ) -> tuple[tuple[str, str], ...]:
        """Write the damaged stored files back from this package's verified copies."""
        by_path = {p.record.path: p.member for ps in placed.values() for p in ps}
        missing = [d.stored.path.as_posix() for d in damaged if d.stored.path not in by_path]
        if missing:
            raise PackageFormatError(refusal(damaged, missing))
        staging = self.config.staging_dir / f"repair-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            got = cab.extract({by_path[d.stored.path] for d in damaged}, staging, scan=scan)
            differing = [
                d.stored.path.as_posix()
                for d in damaged
                if got[by_path[d.stored.path]].sha256 != d.stored.sha256
            ]
            if differing:
                raise PackageFormatError(refusal(damaged, differing))
            copies = [(d, staging / by_path[d.stored.path]) for d in damaged]
            write_back(self.store, self.config.store_dir, copies, self.path.name, self.actor)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return tuple((d.stored.path.as_posix(), d.problem) for d in damaged)

    def _plan(
        self, updates: Iterable[PackageUpdate], placed: dict[PackageUpdate, list[_Placed]]
    ) -> list[UpdateReport]:
        reports = []
        for u in updates:
            files = placed[u]
            count, total = len(files), sum(p.record.size for p in files)
            rule = self.store.rule_by_key(u.key)
            if rule is None:
                outcome, rule_id, previous = Outcome.NEW_RULE, None, None
            elif lifecycle.with_pending(rule, u.version) is None:
                outcome, rule_id, previous = Outcome.UNCHANGED, rule.id, None
            else:
                outcome, rule_id, previous = Outcome.PENDING, rule.id, rule.pending_version
            reports.append(
                UpdateReport(u.key, u.version, outcome, rule_id, count, total, previous, u.guid)
            )
        return reports

    def _new_guids(self, reports: list[UpdateReport]) -> bool:
        """Whether the package names a rule GUID the store does not hold yet."""
        for r in reports:
            rule = self.store.rule(r.rule_id) if r.rule_id is not None else None
            if rule is not None and r.guid is not None and r.guid != rule.guid:
                return True
        return False

    @staticmethod
    def _records(
        to_write: list[_Placed], extracted: dict[str, ExtractedMember]
    ) -> dict[PurePosixPath, NewFile]:
        records = {}
        for p in to_write:
            got = extracted[p.member]
            r = p.record
            records[r.path] = NewFile(
                r.role, r.file_name, r.signature_name, r.path, got.size, got.sha256
            )
        return records

    def _move(self, to_write: list[_Placed], members_dir: Path) -> list[Path]:
        """Rename the extracted members into the store; fsync every folder touched."""
        store_dir = self.config.store_dir
        moved: list[Path] = []
        touched: set[Path] = set()
        for p in to_write:
            target = store_dir / p.record.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(members_dir / p.member, target)
            moved.append(target)
            parent = target.parent
            while parent != store_dir.parent and parent not in touched:
                touched.add(parent)
                parent = parent.parent
        fsync_folders(sorted(touched, key=lambda d: len(d.parts), reverse=True))
        return moved

    def _commit(
        self,
        reports: list[UpdateReport],
        new: list[PackageUpdate],
        records: dict[PurePosixPath, NewFile],
        sha256: str,
        size: int,
        ignored: tuple[str, ...],
    ) -> list[UpdateReport]:
        """One transaction: the package, its updates, files (and blobs), rules and events."""
        store, actor = self.store, self.actor
        with store.transaction():
            package_id = store.add_package(self.path.name, sha256, size, actor)
            for u in new:
                folder = u.key.store_dir(u.version)
                files = [r for path, r in records.items() if path.parent == folder]
                store_blobs(store, self.config.store_dir, files)  # PostgreSQL: the bytes too
                store.add_update(u.key, u.version, u.timestamp, package_id, files)
            done = []
            for report in reports:
                before = store.rule_by_key(report.key)
                if before is None:
                    after = store.insert_rule(report.key, report.version, report.guid)
                    done.append(dataclasses.replace(report, rule_id=after.id))
                    store.append_event(
                        actor,
                        "rule.create",
                        f"rule {after.id} {after.key}",
                        None,
                        lifecycle.rule_summary(after),
                    )
                    continue
                done.append(report)
                if report.guid is not None and report.guid != before.guid:
                    store.set_rule_guid(before.id, report.guid)
                    store.append_event(
                        actor,
                        "rule.guid",
                        f"rule {before.id} {before.key}",
                        {"guid": before.guid},
                        {"guid": report.guid},
                    )
                pending = lifecycle.with_pending(before, report.version)
                if pending is not None:
                    after = store.save_rule(pending)
                    store.append_event(
                        actor,
                        "rule.pending",
                        f"rule {before.id} {before.key}",
                        lifecycle.rule_summary(before),
                        lifecycle.rule_summary(after),
                    )
            store.append_event(
                actor,
                "import",
                self.path.name,
                None,
                {
                    "sha256": sha256,
                    "size": size,
                    "updates": [f"{r.key} {r.version}: {r.outcome.value}" for r in done],
                    "ignored": list(ignored),
                },
            )
            self.checkpoint("committing")
        return done


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"
