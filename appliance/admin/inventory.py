"""The device inventory as the Control Panel shows it: rows, filters, CSV, chart data.

Pure functions over the store's records, plus two readers of the audit files that the
phone-facing service writes (`Logs/Audit/RequestHandlerAuditLog_<server>_<YYYYMMDD>.log`,
one line a check): check-ins per day, and the newest checks as device events.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path

from appliance.admin.impact import device_request
from appliance.catalogue import choose_update, matching_rules
from appliance.identifiers import is_version, same_version, version_tuple
from appliance.model import Catalog, Device


class Status(StrEnum):
    CURRENT = "current"  # runs the approved version
    OUTDATED = "outdated"  # runs another version than the approved one
    NO_APPROVED = "no-approved"  # its rule has no approved version
    NO_RULE = "no-rule"  # no rule for the device
    UNKNOWN = "unknown"  # the inventory does not know what it runs


@dataclass(frozen=True)
class DeviceRow(Device):
    """A device of the inventory, with what the catalogue says of it now."""

    approved_version: str | None
    offered_version: str | None  # what the device would be offered now
    status: Status

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "status": self.status.value}


def device_rows(devices: Iterable[Device], catalog: Catalog) -> list[DeviceRow]:
    rows = []
    for d in devices:
        approved: str | None = None
        offered: str | None = None
        request = device_request(d)
        if request is None:
            status = Status.NO_RULE
        else:
            rules = matching_rules(request, catalog)
            approved = next((r.approved_version for r in rules if r.approved_version), None)
            decision = choose_update(request, catalog)
            offered = decision.offers[0].version if decision.offers else None
            if not rules:
                status = Status.NO_RULE
            elif approved is None:
                status = Status.NO_APPROVED
            elif d.version is None:
                status = Status.UNKNOWN
            elif same_version(approved, d.version):
                status = Status.CURRENT
            else:
                status = Status.OUTDATED
        rows.append(
            DeviceRow(
                **asdict(d), approved_version=approved, offered_version=offered, status=status
            )
        )
    return sorted(rows, key=lambda r: r.last_seen, reverse=True)


@dataclass(frozen=True)
class DeviceFilter:
    """Every given field must match (case-insensitive); `q` is a substring of the
    identity, MAC, serial, address or user."""

    brand: str | None = None
    model: str | None = None
    locale: str | None = None
    version: str | None = None
    zone: str | None = None
    status: str | None = None
    q: str | None = None

    def matches(self, row: DeviceRow) -> bool:
        for name in ("brand", "model", "locale", "version", "zone"):
            wanted = getattr(self, name)
            if wanted and (getattr(row, name) or "").casefold() != wanted.casefold():
                return False
        if self.status and row.status.value != self.status:
            return False
        if self.q:
            needle = self.q.casefold()
            haystack = (row.identity, row.mac, row.serial, row.address, row.user_id)
            if not any(needle in (h or "").casefold() for h in haystack):
                return False
        return True


CSV_COLUMNS = (
    "identity",
    "mac",
    "serial",
    "device_type",
    "brand",
    "model",
    "revision",
    "locale",
    "version",
    "approved_version",
    "status",
    "offered_version",
    "zone",
    "address",
    "user_id",
    "first_seen",
    "last_seen",
)


def csv_bytes(rows: Iterable[DeviceRow]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = row.as_json()
        writer.writerow([_cell(values[c]) for c in CSV_COLUMNS])
    return out.getvalue().encode("utf-8")


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet must not run what a phone sent as a formula (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# -- chart data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersions:
    model: str  # "Brand Model"
    versions: tuple[tuple[str, int], ...]  # (version, devices), oldest version first

    @property
    def total(self) -> int:
        return sum(n for _, n in self.versions)


def versions_per_model(rows: Iterable[DeviceRow]) -> list[ModelVersions]:
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        model = f"{row.brand or '?'} {row.model or '?'}"
        counts.setdefault(model, Counter())[row.version or "unknown"] += 1
    return [
        ModelVersions(model, tuple(sorted(c.items(), key=lambda i: version_key(i[0]))))
        for model, c in sorted(counts.items())
    ]


def version_key(version: str) -> tuple[int, tuple[int, ...], str]:
    if is_version(version):
        return (0, version_tuple(version), version)
    return (1, (), version)


_AUDIT_DAY = re.compile(r"RequestHandlerAuditLog_.*_(\d{8})\.log$")


def checkins_per_day(logs_dir: Path, today: date, days: int = 14) -> list[tuple[date, int]]:
    """Update checks per day over the last `days` days (today included), from the audit
    files. Counting is by lines, in blocks: a day of a large fleet reads in milliseconds."""
    first = today - timedelta(days=days - 1)
    counts: Counter[date] = Counter()
    for path in _audit_files(logs_dir):
        m = _AUDIT_DAY.search(path.name)
        if not m:
            continue
        day = date(int(m.group(1)[:4]), int(m.group(1)[4:6]), int(m.group(1)[6:]))
        if first <= day <= today:
            counts[day] += _count_lines(path)
    return [(first + timedelta(days=i), counts[first + timedelta(days=i)]) for i in range(days)]


def _audit_files(logs_dir: Path) -> list[Path]:
    folder = logs_dir / "Audit"
    try:
        return sorted(p for p in folder.iterdir() if p.is_file())
    except OSError:
        return []


def _count_lines(path: Path) -> int:
    lines = 0
    try:
        with path.open("rb") as f:
            while block := f.read(1024 * 1024):
                lines += block.count(b"\n")
    except OSError:
        return 0
    return lines


@dataclass(frozen=True)
class DeviceEvent:
    """One update check as the audit file recorded it."""

    at: str
    address: str
    device_type: str
    mac: str
    serial: str
    brand: str
    model: str
    locale: str
    reported: str | None
    offered: str | None
    user_id: str


def recent_device_events(logs_dir: Path, limit: int = 50) -> list[DeviceEvent]:
    """The newest `limit` checks, newest first (read from the ends of the newest files)."""
    events: list[DeviceEvent] = []
    files = sorted(_audit_files(logs_dir), key=lambda p: _day_of(p.name), reverse=True)
    for path in files:
        lines = _tail_lines(path, limit - len(events))
        for line in reversed(lines):
            event = parse_audit_line(line)
            if event is not None:
                events.append(event)
        if len(events) >= limit:
            break
    return sorted(events, key=lambda e: e.at, reverse=True)[:limit]


def _day_of(name: str) -> str:
    m = _AUDIT_DAY.search(name)
    return m.group(1) if m else ""


def _tail_lines(path: Path, count: int, block: int = 64 * 1024) -> list[str]:
    if count <= 0:
        return []
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            end = f.tell()
            data = b""
            while end > 0 and data.count(b"\n") <= count:
                start = max(0, end - block)
                f.seek(start)
                data = f.read(end - start) + data
                end = start
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if end > 0:
        lines = lines[1:]  # the first may be cut
    return lines[-count:]


def parse_audit_line(line: str) -> DeviceEvent | None:
    """Fields: time;client;type;mac;serial;brand;model;revision;locale;ASKED;OFFERED;user,
    where ASKED is `file;version;timestamp` per module and OFFERED is
    `file;signature;version;timestamp` per file, modules joined by '#'."""
    head = line.split(";", 9)
    if len(head) < 10:
        return None
    at, address, device_type, mac, serial, brand, model, _revision, locale, rest = head
    rest, _, user_id = rest.rpartition(";")
    tokens = rest.split(";")
    reported: str | None = None
    i = 0
    if tokens and tokens[0] == "":
        i = 1  # no modules asked
    else:
        while i + 2 < len(tokens):
            if reported is None and tokens[i + 1]:
                reported = tokens[i + 1]
            more = tokens[i + 2].partition("#")
            if not more[1]:
                i += 3
                break
            tokens[i + 2] = more[2]
            i += 2
    offered_tokens = tokens[i:]
    offered = offered_tokens[2] if len(offered_tokens) >= 3 and offered_tokens[2] else None
    return DeviceEvent(
        at=at.replace(" ", "T") + "Z" if len(at) == 19 else at,
        address=address,
        device_type=device_type,
        mac=mac,
        serial=serial,
        brand=brand,
        model=model,
        locale=locale,
        reported=reported,
        offered=offered,
        user_id=user_id,
    )


def distinct(rows: Sequence[DeviceRow], field: str) -> list[str]:
    """The values of `field` in `rows`, for filter menus."""
    return sorted({str(getattr(r, field)) for r in rows if getattr(r, field)}, key=str.casefold)
