"""Stores with rules and updates in them, in memory or as a user finds them on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from appliance.catalogue import Action, apply_action, import_package, make_sample_package
from appliance.config import Config, load_config
from appliance.model import FileRole, NewFile, Rule, RuleKey, RuleState
from appliance.store import RuleFilter, Store
from appliance.testing.clocks import FixedClock
from appliance.testing.records import CX600, STAMP, make_rule


def memory_store(clock: FixedClock | None = None) -> Store:
    """A store with the newest schema in memory, on `clock` (the real time without one)."""
    return Store.open(":memory:") if clock is None else Store.open(":memory:", clock=clock)


def image_file(key: RuleKey, version: str, name: str = "CPE.nbt", size: int = 1024) -> NewFile:
    stem = name.rsplit(".", 1)[0]
    return NewFile(
        FileRole.IMAGE, name, f"{stem}.cat", key.store_dir(version) / name, size, "a" * 64
    )


def signature_file(key: RuleKey, version: str, name: str = "CPE.cat") -> NewFile:
    return NewFile(FileRole.SIGNATURE, name, None, key.store_dir(version) / name, 64, "b" * 64)


def add_update(store: Store, key: RuleKey, version: str, *names: str) -> None:
    """An imported update (in a package of its own): each image, default CPE.nbt, and its .cat."""
    package = store.add_package("UCUpdates.cab", "c" * 64, 4096, "admin")
    files: list[NewFile] = []
    for name in names or ("CPE.nbt",):
        files.append(image_file(key, version, name))
        files.append(signature_file(key, version, name.rsplit(".", 1)[0] + ".cat"))
    store.add_update(key, version, STAMP, package, files)


def add_rule(
    store: Store,
    key: RuleKey = CX600,
    *,
    pending: str | None = None,
    approved: str | None = None,
    restore: str | None = None,
    state: RuleState | None = None,
) -> Rule:
    """A rule in `store` with an update (CPE.nbt) for each version it names.

    Without `state`, the rule is pending when it has a pending version, else approved.
    """
    versions = [v for v in (pending, approved, restore) if v]
    if not versions:
        raise ValueError("a rule names at least one version")
    for version in dict.fromkeys(versions):
        if not store.has_update(key, version):
            add_update(store, key, version)
    rule = store.insert_rule(key, versions[0])
    return store.save_rule(
        make_rule(approved, pending, restore, key=key, rule_id=rule.id, state=state)
    )


def file_tree(root: Path) -> dict[str, str]:
    """Every file below `root` with its SHA-256: what an admin would find on disk."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def config_from(folder: Path, text: str) -> Config:
    """The configuration `text` says, written to `folder/ucupdates.toml` and loaded."""
    path = folder / "ucupdates.toml"
    path.write_text(text)
    return load_config(path)


def catalogue_state(config: Config) -> tuple[object, ...]:
    """The catalogue as a user sees it: rules, files, test devices, events, store tree, staging."""
    store = Store.open(config.db_path)
    try:
        return (
            store.rules(),
            store.stored_files(),
            store.test_devices(),
            len(store.events(10_000)),
            file_tree(config.store_dir),
            sorted(p.name for p in config.staging_dir.iterdir())
            if config.staging_dir.exists()
            else [],
        )
    finally:
        store.close()


def approved_sample(config: Config, clock: FixedClock | None = None, **package: Any) -> Store:
    """The store of `config` with the sample package imported and every rule approved.

    `package` goes to `make_sample_package` (`version=`, `image_size=`, ...); the package
    itself is written beside the data folder.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(config.db_path) if clock is None else Store.open(config.db_path, clock=clock)
    path = config.data_dir.parent / "UCUpdates.cab"
    make_sample_package(path, **package)
    import_package(store, config, path, "test")
    apply_action(store, Action.APPROVE, RuleFilter(everything=True), "test")
    return store
