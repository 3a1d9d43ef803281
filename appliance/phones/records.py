"""What the phones leave behind: the audit file, the device inventory, captured checks.

Every check is logged, written as one line of Lync's audit file (docs/protocol.md §9)
and buffered as a sighting for the inventory, which `flush_inventory` writes in one
transaction. Device logs the phones upload are kept for a retention period.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from appliance.catalogue import Decision
from appliance.config import Config
from appliance.model import Device, DeviceRequest
from appliance.phones.capture import Captures
from appliance.phones.codec import audit_line
from appliance.store import Store, iso_utc

log = Logger(namespace="ucupdates.phone")


class Records:
    """The audit file, the inventory buffer and the captures. Use from the reactor."""

    def __init__(self, config: Config, store: Store, now: Callable[[], datetime]) -> None:
        self.config = config
        self.store = store
        self.now = now
        self._inventory: dict[str, Device] = {}
        self._audit: tuple[str, Any] | None = None
        self._server = config.service.server_name or os.uname().nodename
        self.captures = Captures(config, now)

    def record_check(self, request: DeviceRequest, decision: Decision, client: str) -> None:
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
        self._write_audit(now, audit_line(now, client, request, decision))
        identity = request.mac or (f"serial:{request.serial}" if request.serial else f"ip:{client}")
        stamp = iso_utc(now)
        self._inventory[identity] = Device(
            identity=identity,
            mac=request.mac,
            serial=request.serial,
            device_type=request.device_type,
            brand=request.brand,
            model=request.model,
            revision=request.revision,
            locale=request.locale,
            version=reported,
            zone=request.zone,
            address=client,
            user_id=request.user_id,
            first_seen=stamp,
            last_seen=stamp,
        )

    def flush_inventory(self) -> int:
        """Write the buffered sightings in one transaction (called every second)."""
        if not self._inventory:
            return 0
        pending, self._inventory = self._inventory, {}
        try:
            with self.store.transaction():
                for device in pending.values():
                    self.store.record_device(device)
        except Exception:
            log.failure("could not record {count} device sightings", count=len(pending))
            for identity, device in pending.items():
                self._inventory.setdefault(identity, device)
            return 0
        return len(pending)

    def _write_audit(self, now: datetime, line: str) -> None:
        name = f"RequestHandlerAuditLog_{self._server}_{now.strftime('%Y%m%d')}.log"
        try:
            if self._audit is None or self._audit[0] != name:
                if self._audit is not None:
                    self._audit[1].close()
                folder = self.config.logs_dir / "Audit"
                folder.mkdir(parents=True, exist_ok=True)
                self._audit = (name, (folder / name).open("a", encoding="utf-8"))
            self._audit[1].write(line + "\n")
            self._audit[1].flush()
        except OSError as e:
            log.error("cannot write the audit file {name}: {error}", name=name, error=e.strerror)

    def close(self) -> None:
        self.flush_inventory()
        if self._audit is not None:
            self._audit[1].close()
            self._audit = None


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
