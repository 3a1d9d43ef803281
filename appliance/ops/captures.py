"""Capture mode's folder: one JSON file per captured request, and the export of them all.

Files, not a table: a capture is written on the phone path (the reactor) and must never
contend with the store's transactions; each file is readable without the appliance
(`jq`, an editor), survives a damaged database, and the whole folder is what an admin
attaches to a bug report. Each is written to a temporary name, fsynced and renamed, so
a reader never sees half a capture; the folder is held to a number of files and of bytes
by removing the oldest (names sort by time).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.model import Capture, CapturedTls, Zone

FORMAT = "ucupdates-capture/1"
EXPORT_FORMAT = "ucupdates-captures-export/1"
_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9]{6}-[0-9]{1,10}-[0-9]{6}$")
_SECRET_NAMES = re.compile(r"password|secret|token|credential", re.IGNORECASE)


class CaptureError(Exception):
    """A capture that cannot be found or read; str() says which and why."""


class UnknownCapture(CaptureError):
    """No capture has that id."""


def capture_id(at: datetime, pid: int, count: int) -> str:
    """`YYYYmmddTHHMMSS-micro-pid-count`: sorts by time, unique within one folder."""
    return f"{at.strftime('%Y%m%dT%H%M%S')}-{at.microsecond:06d}-{pid}-{count % 1_000_000:06d}"


def _body_json(data: bytes) -> dict[str, Any]:
    try:
        return {"text": data.decode("utf-8"), "bytes": len(data)}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii"), "bytes": len(data)}


def _body_bytes(data: dict[str, Any]) -> bytes:
    if "base64" in data:
        return base64.b64decode(data["base64"])
    return str(data.get("text", "")).encode("utf-8")


def capture_json(c: Capture) -> dict[str, Any]:
    """A capture as its file, `capture show --json` and the API hold it."""
    return {
        "format": FORMAT,
        "id": c.id,
        "captured_at": c.captured_at,
        "reason": c.reason,
        "client": c.client,
        "zone": c.zone.value,
        "model": c.model,
        "request": {
            "method": c.method,
            "target": c.target,
            "http_version": c.http_version,
            "headers": [list(h) for h in c.headers],
            "body": _body_json(c.body),
        },
        "tls": None
        if c.tls is None
        else {
            "version": c.tls.version,
            "cipher": c.tls.cipher,
            "sni_sent": c.tls.server_name is not None,
            "server_name": c.tls.server_name,
        },
        "answer": {"status": c.status, "body": _body_json(c.answer)},
    }


def capture_from_json(data: dict[str, Any]) -> Capture:
    request, answer, tls = data["request"], data["answer"], data.get("tls")
    return Capture(
        id=str(data["id"]),
        captured_at=str(data["captured_at"]),
        reason=str(data["reason"]),
        client=str(data["client"]),
        zone=Zone(data["zone"]),
        model=data.get("model"),
        method=str(request["method"]),
        target=str(request["target"]),
        http_version=str(request["http_version"]),
        headers=tuple((str(n), str(v)) for n, v in request["headers"]),
        body=_body_bytes(request["body"]),
        tls=None
        if tls is None
        else CapturedTls(str(tls["version"]), tls.get("cipher"), tls.get("server_name")),
        status=int(answer["status"]),
        answer=_body_bytes(answer["body"]),
    )


def summary_json(c: Capture) -> dict[str, Any]:
    """One line of `capture list` and of the Control Panel's list."""
    return {
        "id": c.id,
        "captured_at": c.captured_at,
        "reason": c.reason,
        "client": c.client,
        "zone": c.zone.value,
        "model": c.model,
        "request": f"{c.method} {c.target} {c.http_version}",
        "tls": None if c.tls is None else c.tls.version,
        "status": c.status,
        "body_bytes": len(c.body),
    }


class CaptureFolder:
    """`<data_dir>/capture/`: write, list, read and export captures."""

    def __init__(self, folder: Path, max_files: int, max_bytes: int) -> None:
        self.folder = folder
        self.max_files = max_files
        self.max_bytes = max_bytes

    @classmethod
    def of(cls, config: Config) -> CaptureFolder:
        s = config.service
        return cls(config.capture_dir, s.capture_max_files, s.capture_max_bytes)

    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.folder.glob("*.json") if _ID.match(p.stem))
        except OSError:
            return []

    def write(self, capture: Capture) -> Path:
        """Write atomically (temporary file, fsync, then linked to its name, so an existing
        capture is never replaced), then drop the oldest over the limits. Raises OSError,
        FileExistsError when the id is taken."""
        data = json.dumps(capture_json(capture), indent=1, ensure_ascii=False).encode("utf-8")
        self.folder.mkdir(mode=0o750, parents=True, exist_ok=True)
        target = self.folder / f"{capture.id}.json"
        temporary = self.folder / f".{capture.id}.json.part"
        try:  # 0600 whatever the umask: a capture holds a phone's request
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            with os.fdopen(os.open(temporary, flags, 0o600), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        self.prune(keep=target)
        return target

    def prune(self, keep: Path | None = None) -> int:
        """Remove the oldest captures until at most max_files and max_bytes remain (the
        newest, `keep`, stays even alone over max_bytes); returns how many went."""
        files = self._files()
        sizes = {}
        for p in files:
            with contextlib.suppress(OSError):
                sizes[p] = p.stat().st_size
        files = [p for p in files if p in sizes]
        total, removed = sum(sizes.values()), 0
        while (
            files and files[0] != keep and (len(files) > self.max_files or total > self.max_bytes)
        ):
            oldest = files.pop(0)
            with contextlib.suppress(FileNotFoundError):
                oldest.unlink()
            total -= sizes[oldest]
            removed += 1
        return removed

    def captures(self) -> Iterator[Capture]:
        """Every capture, oldest first; files that cannot be read are skipped."""
        for path in self._files():
            with contextlib.suppress(CaptureError):
                yield self._read(path)

    def read(self, capture_id: str) -> Capture:
        if not _ID.match(capture_id):
            raise UnknownCapture(f"no capture {capture_id!r} (ids look like 20261206T093000-...)")
        path = self.folder / f"{capture_id}.json"
        if not path.is_file():
            raise UnknownCapture(f"no capture {capture_id} in {self.folder}")
        return self._read(path)

    @staticmethod
    def _read(path: Path) -> Capture:
        try:
            return capture_from_json(json.loads(path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CaptureError(f"{path.name}: cannot read the capture: {e}") from e

    def models(self) -> dict[str, int]:
        """How many captures each phone model (folded) already has."""
        counts: dict[str, int] = {}
        for c in self.captures():
            if c.model:
                counts[c.model.casefold()] = counts.get(c.model.casefold(), 0) + 1
        return counts


def config_summary(config: Config) -> dict[str, Any]:
    """The settings as loaded (defaults included), for a bug report: values only, never a
    field whose name says it holds a secret; paths and addresses as text."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: plain(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if not _SECRET_NAMES.search(f.name) and not f.metadata.get("internal")
            }
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, (list, tuple, frozenset, set)):
            return [plain(v) for v in value]
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        return str(value)

    result: dict[str, Any] = plain(config)
    return result


def export_document(
    captures: list[Capture], config: Config, version: str, now: datetime
) -> dict[str, Any]:
    """One JSON document with every capture, the appliance's version and its settings."""
    settings = config_summary(config)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return {
        "format": EXPORT_FORMAT,
        "exported_at": now.astimezone(UTC).isoformat(timespec="seconds"),
        "appliance_version": version,
        "config_sha256": digest,
        "config": settings,
        "count": len(captures),
        "captures": [capture_json(c) for c in captures],
    }


def export_bytes(folder: CaptureFolder, config: Config, version: str, now: datetime) -> bytes:
    document = export_document(list(folder.captures()), config, version, now)
    return json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"


def capture_text(c: Capture) -> str:
    """A capture as `capture show` prints it: what happened, then the exchange as on the wire."""
    if c.tls is None:
        tls = "plain HTTP (no TLS)"
    else:
        sni = f"SNI {c.tls.server_name}" if c.tls.server_name is not None else "no SNI sent"
        tls = f"{c.tls.version}, cipher {c.tls.cipher or '-'}, {sni}"
    lines = [
        f"capture {c.id}: {c.reason}",
        f"at {c.captured_at} from {c.client} ({c.zone.value}), model {c.model or '-'}",
        f"TLS: {tls}",
        "",
        f"{c.method} {c.target} {c.http_version}",
        *(f"{name}: {value}" for name, value in c.headers),
        "",
        _shown(c.body),
        "",
        f"answer: {c.status}",
        _shown(c.answer),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def _shown(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return f"({len(data)} bytes, not UTF-8; base64) " + base64.b64encode(data).decode()
