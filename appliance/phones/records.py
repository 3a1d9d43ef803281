"""What the phones leave behind: the audit file, the device inventory, captured checks.

Every check is logged, written as one line of Lync's audit file (docs/protocol.md §9)
and buffered as a sighting for the inventory, which `flush_inventory` writes in one
transaction (a device's last sighting of the second; its record is built then). With
`batch_audit`, the audit lines of one turn of the reactor are written together at its
end (before the answers written in that turn leave: transports write on the next turn),
and `flush_inventory` and `close` write any left. Device logs the phones upload are
stored by `store_device_log` and kept for a retention period.

Files here may hold what a local user should not read (client addresses, device logs):
they are created 0600 and their folders 0750 whatever the process umask. A write that
fails (a full disk) loses only that line or that upload, never what was there before.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from appliance.catalogue import AnyDecision, Offer
from appliance.config import Config, RolloutSettings
from appliance.model import Device, DeviceRequest, OfferRecord
from appliance.phones.capture import Captures
from appliance.phones.codec import audit_line
from appliance.phones.confirmations import log_outcomes, record_outcomes
from appliance.store import Store, iso_utc

log = Logger(namespace="ucupdates.phone")

CHECKS_KEPT = 8  # a device's checks within one flush that confirmations see
FILE_MODE = 0o600  # the audit file, device logs: created so, whatever the umask
FOLDER_MODE = 0o750


class DeviceLogError(Exception):
    """A device log that cannot be stored now (a full disk, a read-only folder...)."""


class Sighting(NamedTuple):
    """A check as the inventory keeps it until the next flush."""

    request: DeviceRequest
    client: str
    reported: str | None
    at: datetime
    offers: tuple[Offer, ...] = ()  # what the check offered: confirmed at the next one
    # the device's earlier checks since the last flush (request, offers, at), oldest first
    earlier: tuple[tuple[DeviceRequest, tuple[Offer, ...], datetime], ...] = ()

    def checks(self) -> tuple[tuple[DeviceRequest, tuple[Offer, ...], datetime], ...]:
        """Every check of the device since the last flush, oldest first (at most
        `CHECKS_KEPT`: of a device that checks many times a second, its first ones and
        its latest)."""
        return (*self.earlier, (self.request, self.offers, self.at))

    def device(self, identity: str) -> Device:
        request, stamp = self.request, iso_utc(self.at)
        return Device(
            identity=identity,
            mac=request.mac,
            serial=request.serial,
            device_type=request.device_type,
            brand=request.brand,
            model=request.model,
            revision=request.revision,
            locale=request.locale,
            version=self.reported,
            zone=request.zone,
            address=self.client,
            user_id=request.user_id,
            first_seen=stamp,
            last_seen=stamp,
        )


Changes = list[tuple[OfferRecord | None, OfferRecord]]  # offer records changed (before, after)
Offload = Callable[[Callable[[], Any]], "Deferred[Any]"]  # runs the work in a thread


def write_sightings(
    store: Store, pending: Mapping[str, Sighting], settings: RolloutSettings
) -> Changes:
    """Record the buffered sightings' devices, and confirm and record their checks'
    offers (the caller holds the store's transaction); returns the offer records changed."""
    checks = [(i, *check) for i, s in pending.items() for check in s.checks()]
    store.record_devices(sighting.device(identity) for identity, sighting in pending.items())
    return record_outcomes(store, checks, settings)


class Records:
    """The audit file, the inventory buffer and the captures. Use from the reactor."""

    def __init__(
        self,
        config: Config,
        store: Store,
        now: Callable[[], datetime],
        offload: Offload | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.now = now
        self._offload = offload  # PostgreSQL: the inventory's writes run in a thread
        self._flush_failing = False  # with offload: a failure was logged; a success says so
        # The inventory's write of one batch (in its own transaction); a branch node's
        # replaces it with one that keeps the batch locally while the primary is away.
        self.write_batch: Callable[[Mapping[str, Sighting]], Changes] = self._write_batch
        self._inventory: dict[str, Sighting] = {}
        self._audit: tuple[str, int] | None = None  # today's audit file name, its descriptor
        self._audit_failing = False  # an error was logged; the next success says so
        self._server = config.service.server_name or os.uname().nodename
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        self._lines: list[tuple[str, str]] = []  # audit lines to write: (file name, line)
        self.captures = Captures(config, now)
        # For /metrics (ops.metrics), read at scrape: plain counts, a dict increment each.
        self.checks: dict[tuple[str, str], int] = {}  # (zone, outcome) -> checks answered
        self.offers: dict[tuple[str, str], int] = {}  # (rule's model, version) -> offers
        self.last_check: datetime | None = None

    def batch_audit(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """Write the audit lines in batches: `schedule(write)` is called for the first
        line of a batch and must call `write()` soon, on this thread (`serve` passes
        `reactor.callLater(0, write)`: the end of the reactor's turn). Without it, each
        line is written as it comes."""
        self._schedule = schedule

    def record_check(self, request: DeviceRequest, decision: AnyDecision, client: str) -> None:
        now = self.now()
        offer = decision.offers[0] if decision.offers else None
        reported = (
            offer.reported
            if offer
            else (request.version or (request.modules[0].version if request.modules else None))
        )
        log.info(
            "update check {client} {zone} {mac} {serial} {brand} {model} {locale} reported "
            "{reported}: {reason} {version}",
            client=client,
            zone=request.zone.value,
            mac=request.mac,
            serial=request.serial,
            brand=request.brand,
            model=request.model,
            locale=request.locale,
            reported=reported,
            reason=decision.reason.value,
            version=offer.version if offer else None,
            event="update.check",
        )
        name = f"RequestHandlerAuditLog_{self._server}_{now.strftime('%Y%m%d')}.log"
        line = audit_line(now, client, request, decision)
        if self._schedule is None:
            self._write_audit(name, line + "\n")
        else:
            if not self._lines:
                self._schedule(self.write_audit)
            self._lines.append((name, line))
        identity = request.mac or (f"serial:{request.serial}" if request.serial else f"ip:{client}")
        previous = self._inventory.get(identity)
        earlier = () if previous is None else previous.checks()[: CHECKS_KEPT - 1]
        self._inventory[identity] = Sighting(
            request, client, reported, now, decision.offers, earlier
        )
        self._count(request, decision, now)

    def _count(self, request: DeviceRequest, decision: AnyDecision, now: datetime) -> None:
        """The metrics' counts: zones and reasons are closed sets (str enums: their own
        values as keys); offers are keyed by the catalogue's rules, never by what a
        phone sent."""
        key: tuple[str, str] = (request.zone, decision.reason)
        checks = self.checks
        checks[key] = checks.get(key, 0) + 1
        for offer in decision.offers:
            key = (offer.rule.key.model, offer.version)
            self.offers[key] = self.offers.get(key, 0) + 1
        self.last_check = now

    def write_audit(self) -> None:
        """Write the audit lines waiting (`batch_audit`): one write a file."""
        lines, self._lines = self._lines, []
        start = 0
        for end in range(1, len(lines) + 1):  # runs of lines for one file (one day)
            if end == len(lines) or lines[end][0] != lines[start][0]:
                text = "".join(line + "\n" for _, line in lines[start:end])
                self._write_audit(lines[start][0], text)
                start = end

    def flush_inventory(self) -> int | Deferred[int]:
        """Write the buffered sightings in one transaction (called every second), with
        what their checks offered and confirmed (confirmations.py), and the audit lines
        waiting. The buffer is taken, and put back after a failure, on this thread; the
        write (`write_batch`) runs here, or through `offload` in a thread (PostgreSQL),
        when the count comes in a Deferred."""
        self.write_audit()
        if not self._inventory:
            return 0
        pending, self._inventory = self._inventory, {}
        if self._offload is None:
            try:
                outcomes = self.write_batch(pending)
            except Exception:
                self._put_back(pending, Failure())
                return 0
            return self._written(outcomes, pending)
        writing: Deferred[Changes] = self._offload(lambda: self.write_batch(pending))
        done = writing.addCallback(self._written, pending)
        return done.addErrback(lambda failure: self._put_back(pending, failure))

    def _write_batch(self, pending: Mapping[str, Sighting]) -> Changes:
        with self.store.transaction():
            return write_sightings(self.store, pending, self.config.rollouts)

    def _written(self, outcomes: Changes, pending: Mapping[str, Sighting]) -> int:
        if self._flush_failing:
            self._flush_failing = False
            log.info("device sightings are recorded again", event="inventory.resumed")
        log_outcomes(outcomes)
        return len(pending)

    def _put_back(self, pending: Mapping[str, Sighting], failure: Failure) -> int:
        """The batch back in the buffer. The failure is logged each time on SQLite; with
        `offload` (a database away may fail every flush) once until a write works again."""
        if self._offload is None or not self._flush_failing:
            log.failure("could not record {count} device sightings", failure, count=len(pending))
        self._flush_failing = self._offload is not None
        for identity, sighting in pending.items():
            self._inventory.setdefault(identity, sighting)
        return 0

    def _write_audit(self, name: str, text: str) -> None:
        """Append whole lines to the day's file `name` (named by the check's time: after
        the clock goes back, an earlier day's file is appended to, never replaced). One
        unbuffered write (of a line, or of a batch), so a failed write leaves nothing
        queued to come out torn later; the first failure of a streak is logged, and the
        recovery."""
        data = text.encode("utf-8")
        try:
            if self._audit is None or self._audit[0] != name:
                self._close_audit()
                folder = self.config.logs_dir / "Audit"
                folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                self._audit = (name, os.open(folder / name, flags, FILE_MODE))
            if os.write(self._audit[1], data) != len(data):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
        except OSError as e:
            if not self._audit_failing:
                log.error(
                    "cannot write the audit file {name}: {error}",
                    name=name,
                    error=e.strerror,
                    event="audit.failed",
                )
            self._audit_failing = True
            return
        if self._audit_failing:
            self._audit_failing = False
            log.info("the audit file {name} is written again", name=name, event="audit.resumed")

    def _close_audit(self) -> None:
        if self._audit is not None:
            with contextlib.suppress(OSError):
                os.close(self._audit[1])
            self._audit = None

    def close(self) -> Deferred[int] | None:
        """Write what is buffered; with `offload`, the Deferred of the last write."""
        flushed = self.flush_inventory()  # and the audit lines waiting
        self._close_audit()
        return flushed if isinstance(flushed, Deferred) else None


def store_device_log(folder: Path, name: str, body: bytes) -> Path:
    """Write an uploaded device log as `folder/name` (0600): through a temporary file that
    is renamed when complete, so a failure (a full disk) leaves no partial file behind.
    Raises DeviceLogError."""
    target = folder / name
    temporary = folder / f".{name}.part"
    try:
        folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
    except OSError as e:
        raise DeviceLogError(e.strerror or str(e)) from e
    return target


def clean_device_logs(logs_dir: Path, retention_days: float, now: float) -> int:
    """Delete device logs older than the retention period; returns how many."""
    removed = 0
    cutoff = now - retention_days * 86400
    for path in (logs_dir / "Client").glob("*/*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
