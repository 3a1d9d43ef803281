"""A branch node's inventory flush: written to the primary, or kept in the spool.

On a branch node (docs/pool.md) the flush's batch of sightings (devices seen, what their
checks offered and confirmed) goes to the pool's primary across the WAN. While the
primary does not answer (`PrimaryUnavailable`, at once), `BranchWriter` keeps the batch in
the node's spool (`store.Spool`, a local SQLite file) as JSON, and writes the kept batches
to the primary when it answers again, oldest first and before any newer batch, each
through the same write step, in one primary transaction, exactly once (`store.ship_spool`).
The confirmations are worked out then, on the primary, in the order the checks came: as
if the WAN had never gone.

The JSON form is made from the records' own type hints (dataclasses, named tuples, enums,
times, paths), so the spool follows the records as they change; a batch that can no
longer be read (kept by another version), or that the primary refuses, is set aside in the
spool after a few tries rather than holding back the ones after it (`store.ship_spool`).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from pathlib import PurePath
from typing import Any, Union

from twisted.logger import Logger

from appliance.phones.confirmations import log_outcomes
from appliance.phones.records import Records, Sighting, write_sightings
from appliance.store import (
    PrimaryUnavailable,
    Spool,
    Store,
    branch_spool,
    iso_utc,
    ship_spool,
    utc_now,
)

log = Logger(namespace="ucupdates.pool")

SIGHTINGS = "sightings"  # the spool's kind for the flush's batches
SHIP_SECONDS = 5.0  # how often serve's timer ships what waits (the flush ships too)

# the write step of the flush: one batch, in the caller's transaction; its changes
Write = Callable[[Store, Mapping[str, Any]], list[Any]]


class BranchWriter:
    """The flush's write step on a branch node: `writer(pending)` writes the batch to the
    primary (after the spool's older batches), or keeps it in the spool; it returns what
    the batch changed (nothing when kept). `ship()` (a timer, off the reactor) writes what
    waits. `log_changes` is given what shipped batches changed."""

    def __init__(
        self,
        store: Store,
        spool: Spool,
        write: Write,
        sighting: type[Any],
        log_changes: Callable[[list[Any]], None] = lambda changes: None,
    ) -> None:
        self.store = store
        self.spool = spool
        self._write = write
        self._sighting = sighting
        self._log_changes = log_changes
        self._lock = threading.Lock()  # one batch at a time, in order

    def __call__(self, pending: Mapping[str, Any]) -> list[Any]:
        with self._lock:
            self._ship_quietly()
            if self.spool.records() == 0:
                try:
                    with self.store.transaction():
                        return self._write(self.store, pending)
                except PrimaryUnavailable:
                    pass
            self._keep(pending)
            return []

    def ship(self) -> int:
        """Write the spool's batches to the primary; the records shipped (0 while it is
        away). Never raises: serve's timer goes on."""
        with self._lock:
            return self._ship_quietly()

    def _ship_quietly(self) -> int:
        try:
            return self._ship()
        except PrimaryUnavailable:
            return 0
        except Exception:
            log.failure("could not ship the buffered records to the primary")
            return 0

    def _ship(self) -> int:
        if self.spool.records() == 0:
            return 0
        changes: list[Any] = []  # of the batches whose transaction committed

        def sightings(store: Store, payload: str) -> list[Any]:
            return self._write(store, self._decode(payload))

        def landed(result: object) -> None:
            if isinstance(result, list):
                changes.extend(result)

        try:
            shipped = ship_spool(self.store, self.spool, {SIGHTINGS: sightings}, landed=landed)
        finally:
            self._log_changes(changes)
        if shipped:
            log.info(
                "shipped {records} buffered records to the primary ({left} still waiting)",
                records=shipped,
                left=self.spool.records(),
                event="pool.spool.shipped",
            )
        return shipped

    def _keep(self, pending: Mapping[str, Any]) -> None:
        payload = json.dumps({k: to_json(v) for k, v in pending.items()})
        if self.spool.add(SIGHTINGS, payload, len(pending), iso_utc(utc_now())):
            return
        log.error(
            "the branch spool {path} is full ({limit} records): {count} device sightings are lost",
            path=str(self.spool.path),
            limit=self.spool.limit,
            count=len(pending),
            event="pool.spool.full",
        )

    def _decode(self, payload: str) -> dict[str, Any]:
        return {k: from_json(self._sighting, v) for k, v in json.loads(payload).items()}


def branch_writer(records: Records, store: Store) -> BranchWriter | None:
    """On a branch node, make `records`' flush write through a BranchWriter (returned:
    serve's timer calls its `ship` off the reactor every SHIP_SECONDS); None elsewhere."""
    spool = branch_spool(store)
    if spool is None:
        return None
    settings = records.config.rollouts

    def write(target: Store, pending: Mapping[str, Any]) -> list[Any]:
        return write_sightings(target, pending, settings)

    writer = BranchWriter(store, spool, write, Sighting, log_outcomes)
    records.write_batch = writer
    return writer


def to_json(value: Any) -> Any:
    """A record (dataclass, named tuple) and what it holds, as JSON's types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
        }
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: to_json(v) for k, v in value._asdict().items()}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, tuple | list | frozenset | set):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def from_json(hint: Any, data: Any) -> Any:
    """`to_json`'s output back as the type `hint` names."""
    if data is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return from_json(next(a for a in args if a is not type(None)), data)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(args[0], v) for v in data)
        return tuple(from_json(a, v) for a, v in zip(args, data, strict=True))
    if origin in (frozenset, set):
        return origin(from_json(args[0], v) for v in data)
    if origin in (dict, Mapping):
        return {k: from_json(args[1], v) for k, v in data.items()}
    if not isinstance(hint, type):
        return data
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        fields = [f for f in dataclasses.fields(hint) if f.init and f.name in data]
        return hint(**{f.name: from_json(hints[f.name], data[f.name]) for f in fields})
    if issubclass(hint, tuple) and hasattr(hint, "_fields"):
        hints = typing.get_type_hints(hint)
        return hint(**{k: from_json(hints[k], v) for k, v in data.items() if k in hints})
    if issubclass(hint, Enum):
        return hint(data)
    if issubclass(hint, datetime):
        return datetime.fromisoformat(data)
    if issubclass(hint, PurePath):
        return hint(data)
    return data
