"""What the phones are answered: the routes, the catalogue snapshot and remembered answers.

The catalogue and the rollout policy (docs/rollouts.md) are reloaded when they changed
(a policy change counts as a catalogue change); until then devices that say the same things get
the same answer. No check queries the database to find out: a change this process commits
(an admin's action, an import, on any connection) moves the store's
`catalogue_generation`, and a stored file that fails (or passes again) verification moves
the `catalogue.FileVerifier`'s generation, both seen by the very next check; another
process's commit (the command line while `serve` runs, another worker) shows in the
store's `data_version`, looked at no more than every `LOOK_SECONDS`, so it is seen within
that time.

On PostgreSQL no check may wait on the database: the answers are `watched`. A watcher
(`phones.watcher`) loads the snapshot in its own thread (`load_snapshot`) when the
catalogue's version moves and swaps it in on the reactor thread (`install`); a check only
notices the file verifier's generation, which needs no query.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from appliance.catalogue import (
    AnyDecision,
    FileVerifier,
    answer_key,
    choose_update,
    decide_with,
    kept_versions,
    rollout_facts,
)
from appliance.model import Catalog, DeviceRequest, RolloutPolicy, StoredFile, Zone
from appliance.phones.codec import BaseUrls, render_response
from appliance.phones.slots import NetworkCaps
from appliance.store import Store

ANSWER_CACHE_SIZE = 4096  # distinct (model, locale, reported versions, test?) answers
LOOK_SECONDS = 0.1  # how often `data_version` is read, at most: another process's changes


class RouteKind(StrEnum):
    """What a phone-facing path is for."""

    CHECK = "check"  # POST ucdevice.upx: an update check
    UPLOAD = "upload"  # PUT/POST Files: a device log
    FILES = "files"  # GET /DeviceUpdateFiles_*/: an image or signature file


_ROUTES: tuple[tuple[bytes, RouteKind], ...] = (
    (b"/requesthandler/ucdevice.upx", RouteKind.CHECK),
    (b"/requesthandlerext/ucdevice.upx", RouteKind.CHECK),
    (b"/requesthandler/files", RouteKind.UPLOAD),
    (b"/requesthandlerext/files", RouteKind.UPLOAD),
)
_FILE_PREFIXES = (b"/deviceupdatefiles_int/", b"/deviceupdatefiles_ext/")


def route(path: bytes) -> RouteKind | None:
    """The kind of a request path (any case, query ignored); None for an unknown path."""
    lower = path.split(b"?", 1)[0].lower()
    for prefix, kind in _ROUTES:
        if lower == prefix:
            return kind
    if lower.startswith(_FILE_PREFIXES):
        return RouteKind.FILES
    return None


@dataclass(frozen=True)
class Snapshot:
    """What answers are given from, as loaded from the store: the catalogue, the rollout
    policy and the stored files a device may be offered (by folded relative path)."""

    catalog: Catalog
    policy: RolloutPolicy
    files: Mapping[str, StoredFile]
    data_version: int  # read before loading: a commit after it shows as a change
    generation: int  # this process's catalogue generation, read before loading


def load_snapshot(store: Store) -> Snapshot:
    """The snapshot from the store (blocking: on PostgreSQL, in a thread)."""
    generation = store.catalogue_generation()
    data_version = store.data_version()
    return _loaded(store, data_version, generation)


def _loaded(store: Store, data_version: int, generation: int) -> Snapshot:
    catalog = store.catalog()
    policy = store.rollout_policy()
    referenced = kept_versions(catalog.rules, policy)
    files = {
        f.path.as_posix().casefold(): f
        for f in store.stored_files()
        if (f.key.folded(), f.version) in referenced
    }
    return Snapshot(catalog, policy, files, data_version, generation)


class Answers:
    """The catalogue snapshot, the files it references and the answers given from it.
    `watched`: the snapshot comes only from `install` (PostgreSQL), never from a check."""

    def __init__(
        self,
        store: Store,
        urls: BaseUrls,
        verifier: FileVerifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        watched: bool = False,
    ) -> None:
        self.store = store
        self.urls = urls
        self.verifier = verifier
        self.clock = clock
        self.now = now  # the service's clock: download windows, only with a policy
        self.watched = watched
        self._generations: tuple[int, int] | None = None  # the store's, the verifier's
        self._data_version: int | None = None
        self._next_look = 0.0  # when `data_version` is read again (`clock`)
        self._loaded_catalog = Catalog()  # as loaded, before the verifier's broken updates
        self._catalog = Catalog()
        self._policy = RolloutPolicy()
        self._files: Mapping[str, StoredFile] = {}
        self._answers: dict[tuple[object, ...], tuple[AnyDecision, bytes]] = {}

    def _refresh(self) -> None:
        verified = self.verifier.generation if self.verifier is not None else 0
        if self.watched:
            if self._generations is not None and verified != self._generations[1]:
                self._verified(self._generations[0])  # a file failed, or passes again
            return
        generations = (self.store.catalogue_generation(), verified)
        now = self.clock()
        if generations == self._generations and now < self._next_look:
            return
        self._next_look = now + LOOK_SECONDS
        data_version = self.store.data_version()  # before loading: a later commit shows
        if generations == self._generations and data_version == self._data_version:
            return
        self.install(_loaded(self.store, data_version, generations[0]))

    def install(self, snapshot: Snapshot) -> None:
        """Answer from `snapshot` from now on (on the reactor thread)."""
        self._loaded_catalog = self._catalog = snapshot.catalog
        self._policy = snapshot.policy
        self._files = snapshot.files
        self._data_version = snapshot.data_version
        self._verified(snapshot.generation)

    @property
    def data_version(self) -> int | None:
        """The store's `data_version` the snapshot was loaded at (None: none loaded)."""
        return self._data_version

    def _verified(self, generation: int) -> None:
        """The loaded catalogue less the updates whose files fail verification; the answers
        remembered are forgotten."""
        self._answers.clear()
        self._catalog = self._loaded_catalog
        if self.verifier is not None:
            self.verifier.recheck_broken(self._files.values())  # repaired since?
            self._catalog = dataclasses.replace(
                self._loaded_catalog, broken=self.verifier.broken_updates()
            )
        verified = self.verifier.generation if self.verifier is not None else 0
        self._generations = (generation, verified)

    def catalog(self) -> Catalog:
        self._refresh()
        return self._catalog

    def policy(self) -> RolloutPolicy:
        """The rollout policy of the snapshot (loaded and reloaded with the catalogue)."""
        self._refresh()
        return self._policy

    def set_urls(self, urls: BaseUrls) -> None:
        """The base URLs answers carry (known once the listeners have their ports)."""
        self.urls = urls
        self._answers.clear()

    def answer(self, device: DeviceRequest) -> tuple[AnyDecision, bytes]:
        """The decision and the response bytes for a check.

        Devices that say the same things get the same answer until the catalogue changes,
        so answers are remembered by what the decision reads (`answer_key`). With a
        rollout policy, that is also the device's rollout facts (its pins, stages and
        whether its download window is shut now, from its address), computed once here.
        """
        catalog = self.catalog()
        policy = self._policy
        key = answer_key(device, catalog)
        if policy.empty:
            cached = self._answers.get(key)
            if cached is None:
                cached = self._remember(key, choose_update(device, catalog))
            return cached
        facts = rollout_facts(device, policy, self.now(), device.address)
        key = (*key, facts)
        cached = self._answers.get(key)
        if cached is None:
            cached = self._remember(key, decide_with(device, catalog, policy, facts))
        return cached

    def _remember(
        self, key: tuple[object, ...], decision: AnyDecision
    ) -> tuple[AnyDecision, bytes]:
        cached = (decision, render_response(decision, self.urls))
        if len(self._answers) >= ANSWER_CACHE_SIZE:
            self._answers.clear()
        self._answers[key] = cached
        return cached

    def referenced_file(self, relative: str) -> StoredFile | None:
        """The stored file at `relative` if a device may be offered its update now: a rule
        references it, an upgrade path's step offers it or a pin holds devices on it
        (case-insensitive)."""
        self._refresh()
        return self._files.get(relative.casefold())

    def download_caps(self, client: str, zone: Zone) -> NetworkCaps | None:
        """The caps of the client's rollout network (the external zone's for an external
        client): concurrent downloads and bytes a second; None without any."""
        policy = self._policy
        if policy.empty:
            return None
        if zone is Zone.EXTERNAL:
            most, rate = policy.external_max_downloads, policy.external_max_bytes_per_second
            group = "external zone"
        else:
            network = policy.network_for(client)
            if network is None:
                return None
            most, rate = network.max_downloads, network.max_bytes_per_second
            group = str(network.network)
        if most is None and rate is None:
            return None
        return NetworkCaps(group, most, rate)

    def intact(self, stored: StoredFile) -> bool:
        """Whether a file about to be served matches its hash (`FileVerifier.intact`)."""
        return self.verifier is None or self.verifier.intact(stored)

    def verification_steps(self) -> Iterator[None]:
        """Every referenced file verified a chunk at a time (at start-up)."""
        if self.verifier is None:
            return iter(())
        self._refresh()
        return self.verifier.steps(list(self._files.values()))
