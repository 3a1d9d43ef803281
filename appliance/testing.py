"""Fakes and builders for tests and bench scripts, shipped beside the real things.

Like txacme's `MemoryStore` next to `DirectoryStore`: clocks that move only when told,
an in-memory store with rules and updates in it, catalogues and device requests for the
decision, a phone-user directory that counts its checks, the memory syslog sender, and
the few process helpers (`run_cli`, `free_port`) that tests would otherwise rebuild.
Nothing here is used by the running appliance; nothing here imports pytest.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import socket
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

from appliance.config import Config, load_config
from appliance.model import (
    Catalog,
    Device,
    DeviceRequest,
    FileRole,
    NewFile,
    Rule,
    RuleKey,
    RuleState,
    UpdateFile,
)
from appliance.ops import MemorySender
from appliance.phones import Directory
from appliance.store import Store

__all__ = [
    "CU6",
    "CU7",
    "CU8",
    "CX600",
    "NOW",
    "PHONE_MAC",
    "PHONE_SERIAL",
    "REPO",
    "CountingDirectory",
    "FixedClock",
    "MemoryDirectory",
    "MemorySender",
    "SecondsClock",
    "add_rule",
    "add_update",
    "basic_credentials",
    "catalog_of",
    "catalogue_state",
    "config_from",
    "device_request",
    "file_tree",
    "fired",
    "free_port",
    "image_file",
    "make_rule",
    "memory_store",
    "rule_key",
    "run_cli",
    "seen_device",
    "signature_file",
    "update_files",
]

T = TypeVar("T")

# The folder that holds the `appliance` package: the checkout, when run from one.
REPO = Path(__file__).resolve().parent.parent

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # where a FixedClock starts unless told
STAMP = "2013-04-02T00:00:00Z"  # the timestamp of built rules, updates and files

# Versions of the Lync Phone Edition firmware, oldest first (cumulative updates 6-8).
CU6 = "4.0.7577.4100"
CU7 = "4.0.7577.4366"
CU8 = "4.0.7577.4387"

CX600 = RuleKey("UCPhone", "Polycom", "CX600", "A", "ENU", "CPE")
PHONE_MAC = "00-04-F2-A1-B2-C3"  # normalised, as a DeviceRequest holds it
PHONE_SERIAL = "64167F1234"


# -- clocks -----------------------------------------------------------------------------


class FixedClock:
    """A UTC clock that moves only when told: `clock()` is `clock.now`."""

    def __init__(self, start: datetime = NOW) -> None:
        if start.utcoffset() is None:
            raise ValueError(f"a FixedClock keeps UTC times, not {start!r}")
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when

    def advance(self, **delta: float) -> datetime:
        """Move on by `timedelta(**delta)` (`advance(hours=1)`); returns the new time."""
        self.now += timedelta(**delta)
        return self.now


class SecondsClock:
    """A clock in float seconds (the authenticator's, rate limits', retries') moved by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


# -- records for the decision ------------------------------------------------------------


def rule_key(update_type: str = "CPE", **fields: str) -> RuleKey:
    """The CX600 ENU key with `fields` (device_type, brand, model, revision, locale) changed."""
    return dataclasses.replace(CX600, update_type=update_type, **fields)


def make_rule(
    approved: str | None = None,
    pending: str | None = None,
    restore: str | None = None,
    *,
    key: RuleKey = CX600,
    rule_id: int = 1,
    state: RuleState | None = None,
    updated_at: str = STAMP,
) -> Rule:
    """A rule as the store returns it; unless given, pending if it has a pending version."""
    if state is None:
        state = RuleState.PENDING if pending else RuleState.APPROVED
    return Rule(rule_id, key, approved, pending, restore, state, updated_at)


def update_files(version: str, *names: str, key: RuleKey = CX600) -> list[UpdateFile]:
    """The images (default CPE.nbt) of one update, each with its `.cat` signature named."""
    return [
        UpdateFile(
            key=key,
            version=version,
            file_name=name,
            signature_file_name=name.rsplit(".", 1)[0] + ".cat",
            size=1024,
            sha256="0" * 64,
            timestamp=STAMP,
            path=key.store_dir(version) / name,
        )
        for name in names or ("CPE.nbt",)
    ]


def catalog_of(
    *rules: Rule,
    files: Iterable[UpdateFile] | None = None,
    test_macs: Iterable[str] = (),
    test_serials: Iterable[str] = (),
) -> Catalog:
    """A catalogue of `rules`; unless given, every version a rule references has CPE.nbt."""
    if files is None:
        files = [f for r in rules for v in sorted(r.versions()) for f in update_files(v, key=r.key)]
    return Catalog(tuple(rules), tuple(files), frozenset(test_macs), frozenset(test_serials))


def device_request(**overrides: Any) -> DeviceRequest:
    """A Polycom CX600 (revision A, ENU) on CU7 asking for updates; fields as DeviceRequest's."""
    fields: dict[str, Any] = {
        "device_type": "UCPhone",
        "brand": "Polycom",
        "model": "CX600",
        "revision": "A",
        "locale": "ENU",
        "mac": PHONE_MAC,
        "serial": PHONE_SERIAL,
        "version": CU7,
    }
    fields.update(overrides)
    return DeviceRequest(**fields)


def seen_device(mac: str = PHONE_MAC, version: str | None = CU7, **overrides: Any) -> Device:
    """A CX600 in the inventory, as the store keeps it after its update checks."""
    fields: dict[str, Any] = {
        "identity": mac,
        "mac": mac,
        "serial": None,
        "device_type": "UCPhone",
        "brand": "Polycom",
        "model": "CX600",
        "revision": "A",
        "locale": "ENU",
        "version": version,
        "zone": "internal",
        "address": "10.0.0.1",
        "user_id": None,
        "first_seen": "2026-01-01T00:00:00Z",
        "last_seen": "2026-01-02T00:00:00Z",
    }
    fields.update(overrides)
    return Device(**fields)


# -- the store ---------------------------------------------------------------------------


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


# -- phone users -------------------------------------------------------------------------


class MemoryDirectory:
    """Phone users and passwords in a dict; `calls` holds every check it was asked."""

    def __init__(self, **users: str) -> None:
        self.users = users
        self.calls: list[tuple[str, str]] = []

    def verify(self, username: str, password: str) -> bool:
        self.calls.append((username, password))
        return self.users.get(username) == password


class CountingDirectory:
    """Another directory (`LdapDirectory`, `LocalDirectory`), counting what it is asked."""

    def __init__(self, inner: Directory) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def verify(self, username: str, password: str) -> bool:
        self.calls.append((username, password))
        return self.inner.verify(username, password)


def basic_credentials(user: str, password: str, encoding: str = "utf-8") -> bytes:
    """An `Authorization` header value for HTTP Basic."""
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode(encoding))


def fired(d: Deferred[T]) -> T:
    """The result of a Deferred that has fired already."""
    got: list[T] = []
    d.addCallback(got.append)
    if not got:
        raise AssertionError("the Deferred has not fired")
    return got[0]


# -- files, processes, ports -------------------------------------------------------------


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


def run_cli(
    data_dir: Path,
    *args: str,
    stdin: str | None = None,
    timeout: float = 120,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    """`python -m appliance --data-dir DATA ARGS...` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        cwd=cwd,
    )


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port nothing listens on just now (TCP unless `kind` says SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
