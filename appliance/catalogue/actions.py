"""Admin actions on the catalogue: rule lifecycle, test devices, cleaning, recovery.

Each action runs in one store transaction together with its event-log entries. Actions
that touch the DeviceUpdateStore on disk hold the data folder's lock, so that an
import, a clean-up and the start-up sweep never run at the same time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.catalogue import lifecycle
from appliance.catalogue.durable import FETCHING
from appliance.catalogue.lifecycle import Action, LifecycleError, NeedsForce
from appliance.catalogue.rollout import kept_versions
from appliance.catalogue.rollout_paths import DowngradeRefused, check_approval
from appliance.identifiers import normalise_mac, normalise_serial
from appliance.model import IdentifierKind, Rule, TestDevice
from appliance.store import RuleFilter, Store


class CatalogueError(Exception):
    """An admin action that cannot be carried out; str() is the line to show."""


class UnknownRule(CatalogueError):
    """The rules an action names do not exist (an id unknown, or a filter matching none)."""


@dataclass(frozen=True)
class RuleChange:
    before: Rule
    after: Rule | None  # None: removed
    skipped: str | None = None  # why the action did not apply to this rule
    needs_force: bool = False  # skipped, but forcing the action would apply it
    forced: bool = False  # applied only because it was forced
    needs_downgrade: bool = False  # skipped: an approval that moves back, not asked for
    downgrade: bool = False  # applied as an approval that moves back (allow_downgrade)


def rule_json(r: Rule) -> dict[str, Any]:
    """A rule as `rules --json` and the Control Panel API show it."""
    return {
        "id": r.id,
        **asdict(r.key),
        "approved_version": r.approved_version,
        "pending_version": r.pending_version,
        "restore_version": r.restore_version,
        "state": r.state.value,
        "updated_at": r.updated_at,
        "guid": r.guid,
    }


def change_json(c: RuleChange) -> dict[str, Any]:
    return {
        "rule_id": c.before.id,
        "before": rule_json(c.before),
        "after": None if c.after is None else rule_json(c.after),
        "skipped": c.skipped,
        "needs_force": c.needs_force,
        "forced": c.forced,
        "needs_downgrade": c.needs_downgrade,
        "downgrade": c.downgrade,
    }


@contextmanager
def data_lock(lock_path: Path, what: str) -> Iterator[None]:
    """Hold the data folder's lock; refuse at once if another process holds it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CatalogueError(
                f"cannot {what}: another import or clean-up is running on this data folder"
            ) from None
        yield
    finally:
        os.close(fd)


def apply_action(
    store: Store,
    action: Action,
    flt: RuleFilter,
    actor: str,
    force: bool = False,
    allow_downgrade: bool = False,
    note: Mapping[str, Any] | None = None,
) -> list[RuleChange]:
    """Apply `action` to every rule `flt` selects, in one transaction.

    Rules the action does not apply to are reported as skipped; no rule selected is an
    error. Each change goes to the event log with the rule before and after; a change
    made only because of `force` (a restore to no approved version) says so there
    (`"forced": true` beside the rule after). An approval that would move a rule back to
    an older version (docs/rollouts.md, the downgrade guard) is skipped unless
    `allow_downgrade`, and then says `"downgrade": true`. `note` is added to every
    change's `after` in the event log (a soak gate's override, say).
    """
    if flt.is_empty():
        raise CatalogueError(f"{action.value}: name a rule id or a filter (or --all)")
    changes = []
    with store.transaction():
        rules = store.rules(flt)
        missing = sorted(set(flt.ids) - {r.id for r in rules})
        if missing:
            raise UnknownRule(f"no rule with id {', '.join(map(str, missing))}")
        if not rules:
            raise UnknownRule("no rule matches the filter")
        for rule in rules:
            forced = downgrade = False
            try:
                if action is Action.APPROVE and rule.pending_version is not None:
                    downgrade = check_approval(rule, rule.pending_version, allow_downgrade)
                after = lifecycle.apply(action, rule)
            except DowngradeRefused as e:
                changes.append(RuleChange(rule, rule, skipped=str(e), needs_downgrade=True))
                continue
            except NeedsForce as e:
                if not force:
                    changes.append(RuleChange(rule, rule, skipped=str(e), needs_force=True))
                    continue
                after, forced = lifecycle.apply(action, rule, force=True), True
            except LifecycleError as e:
                changes.append(RuleChange(rule, rule, skipped=str(e)))
                continue
            if after is None:
                store.delete_rule(rule.id)
            else:
                after = store.save_rule(after)
            summary: dict[str, Any] | None = None
            if after is not None:
                summary = dict(lifecycle.rule_summary(after))
            if forced:
                summary = {**(summary or {}), "forced": True}
            if downgrade:
                summary = {**(summary or {}), "downgrade": True}
            if note:
                summary = {**(summary or {}), **note}
            store.append_event(
                actor,
                action.value,
                f"rule {rule.id} {rule.key}",
                lifecycle.rule_summary(rule),
                summary,
            )
            changes.append(RuleChange(rule, after, forced=forced, downgrade=downgrade))
    return changes


def parse_identifier(mac: str | None, serial: str | None) -> tuple[IdentifierKind, str]:
    """Exactly one of a MAC or a serial number, validated and normalised."""
    if (mac is None) == (serial is None):
        raise CatalogueError("give exactly one of --mac or --serial")
    if mac is not None:
        return IdentifierKind.MAC, normalise_mac(mac)
    assert serial is not None
    return IdentifierKind.SERIAL, normalise_serial(serial)


def add_test_device(
    store: Store, name: str, kind: IdentifierKind, identifier: str, actor: str
) -> TestDevice:
    name = name.strip()
    if not name or len(name) > 128 or not name.isprintable():
        raise CatalogueError("a test device needs a printable name of 1 to 128 characters")
    with store.transaction():
        device = store.add_test_device(name, kind, identifier)
        store.append_event(
            actor,
            "test-device.add",
            f"test device {device.id} {name}",
            None,
            {"kind": kind.value, "identifier": identifier, "scope": device.scope},
        )
    return device


def remove_test_device(store: Store, which: str, actor: str) -> TestDevice:
    """Remove by id, name, MAC or serial; ambiguous or unknown names are errors."""
    candidates = [d for d in store.test_devices() if _names_device(d, which)]
    if not candidates:
        raise CatalogueError(f"no test device {which!r}")
    if len(candidates) > 1:
        ids = ", ".join(str(d.id) for d in candidates)
        raise CatalogueError(f"{which!r} names several test devices ({ids}); give an id")
    device = candidates[0]
    with store.transaction():
        store.remove_test_device(device.id)
        store.append_event(
            actor,
            "test-device.remove",
            f"test device {device.id} {device.name}",
            {"kind": device.kind.value, "identifier": device.identifier},
            None,
        )
    return device


def _names_device(device: TestDevice, which: str) -> bool:
    if which.isdigit() and int(which) == device.id:
        return True
    if which == device.name:
        return True
    for normalise in (normalise_mac, normalise_serial):
        try:
            if normalise(which) == device.identifier:
                return True
        except ValueError:
            pass
    return False


@dataclass(frozen=True)
class CleanResult:
    updates: tuple[str, ...]  # "key version" of each update dropped from the catalogue
    files: tuple[Path, ...]  # files deleted from disk
    bytes: int
    blobs: int = 0  # PostgreSQL: blobs deleted from the store (no file lists them any more)


def clean_files(store: Store, store_dir: Path, lock_path: Path, actor: str) -> CleanResult:
    """Delete the updates no rule references any more, and their files (Lync's clean-up).
    Versions an upgrade path offers on the way, or a pin holds devices on, are kept. On
    PostgreSQL the blobs no stored file lists go in the same transaction (other nodes'
    copies of those files stay until their own clean-files)."""
    with data_lock(lock_path, "clean files"):
        with store.transaction():
            kept = kept_versions(store.rules(), store.rollout_policy())  # paths, pins too
            dropped = [(k, v) for k, v in store.updates() if (k.folded(), v) not in kept]
            for key, version in dropped:
                store.delete_update(key, version)
            names = tuple(sorted(f"{k} {v}" for k, v in dropped))
            blobs = store.unreferenced_blobs()  # none on SQLite
            for sha256, _ in blobs:
                store.delete_blob(sha256)
            if names or blobs:
                after: dict[str, object] = {"updates": list(names)}
                if blobs:
                    after["blobs"] = [sha256 for sha256, _ in blobs]
                store.append_event(actor, "clean-files", "DeviceUpdateStore", None, after)
        files, size = sweep_unreferenced(store, store_dir)
    return CleanResult(names, files, size, len(blobs))


def sweep_unreferenced(store: Store, store_dir: Path) -> tuple[tuple[Path, ...], int]:
    """Delete every file under the store that the catalogue does not list; prune folders.

    The caller holds the data lock. Files are listed before the walk, so nothing the
    catalogue references is ever touched.
    """
    referenced = {f.path.as_posix() for f in store.stored_files()}
    removed: list[Path] = []
    size = 0
    if not store_dir.is_dir():
        return (), 0
    for dirpath, _dirnames, filenames in os.walk(store_dir, topdown=False):
        here = Path(dirpath)
        for name in filenames:
            path = here / name
            if path.relative_to(store_dir).as_posix() not in referenced:
                size += path.lstat().st_size
                path.unlink()
                removed.append(path)
        if here != store_dir and not any(here.iterdir()):
            here.rmdir()
    return tuple(sorted(removed)), size


def recover(store: Store, store_dir: Path, staging_dir: Path, lock_path: Path) -> tuple[Path, ...]:
    """Finish what an interrupted import left: sweep orphan files and staging folders.

    Cheap when there is nothing to do (no staging folder). Returns what it deleted.
    """
    if not _leftovers(staging_dir):
        return ()
    try:
        with data_lock(lock_path, "recover"):
            return recover_locked(store, store_dir, staging_dir)
    except CatalogueError:
        return ()  # an import is running right now; it cleans up after itself


def recover_locked(store: Store, store_dir: Path, staging_dir: Path) -> tuple[Path, ...]:
    """`recover` for a caller that holds the data lock already."""
    leftovers = _leftovers(staging_dir)
    if not leftovers:
        return ()
    removed, _ = sweep_unreferenced(store, store_dir)
    for entry in leftovers:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += (entry,)
    return removed


def _leftovers(staging_dir: Path) -> list[Path]:
    """What the staging folder holds, but the temporary files a pool node's cache is
    fetching into (`FETCHING`: the cache's own to clean, under its fetch lock), sorted."""
    if not staging_dir.is_dir():
        return []
    return sorted(e for e in staging_dir.iterdir() if not e.name.startswith(FETCHING))


# -- phone users (HTTP Basic on the external zone) ---------------------------------------


def add_user(store: Store, name: str, password: str, actor: str, ntlm: bool = True) -> str:
    """A new phone user; with `ntlm`, its NT hash is stored too (for NTLM sign-in)."""
    from appliance.passwords import hash_password, nt_hash, validate_password, validate_user_name

    name = validate_user_name(name)
    password_hash = hash_password(validate_password(password))
    with store.transaction():
        store.add_user(name, password_hash, nt_hash(password) if ntlm else None)
        store.append_event(actor, "user.add", f"user {name}", None, {"name": name, "ntlm": ntlm})
    return name


def set_password(store: Store, name: str, password: str, actor: str, ntlm: bool = True) -> None:
    """A new password; with `ntlm` its NT hash replaces the old one, else none is kept."""
    from appliance.passwords import hash_password, nt_hash, validate_password

    password_hash = hash_password(validate_password(password))
    with store.transaction():
        store.set_user_password(name, password_hash, nt_hash(password) if ntlm else None)
        store.append_event(actor, "user.passwd", f"user {name}", None, {"ntlm": ntlm})


def remove_user(store: Store, name: str, actor: str) -> None:
    with store.transaction():
        if store.user(name) is None:
            raise CatalogueError(f"no user {name!r}")
        store.remove_user(name)
        store.append_event(actor, "user.remove", f"user {name}", {"name": name}, None)
