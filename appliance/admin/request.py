"""The admin listener's request: a guarded request whose admitted upload goes to disk.

A package upload (`POST /api/packages`) is written straight into `<data_dir>/uploads/`
as it arrives (never a temporary copy, never whole in memory); the API handler then takes
the file over under a safe name. Lives below the site and the API so both can use it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from appliance.web import GuardedRequest


class AdminRequest(GuardedRequest):
    """A request whose body, for an admitted upload, is written to `upload_path`."""

    upload_path: Path | None = None

    def gotLength(self, length: int | None) -> None:
        if self.upload_path is None:
            super().gotLength(length)
            return
        self.upload_path.parent.mkdir(parents=True, exist_ok=True)
        self.content = self.upload_path.open("x+b")

    def take_upload(self, name: str | None) -> Path | None:
        """Move the received upload to a folder of its own under its (safe) name; the caller
        owns it from now on. None when nothing arrived."""
        path, self.upload_path = self.upload_path, None
        if path is None:
            return None
        content: Any = self.content
        if content is not None:
            content.close()
        if path.stat().st_size == 0:
            path.unlink(missing_ok=True)
            return None
        folder = path.with_suffix("")
        folder.mkdir()
        target = folder / staged_name(name)
        path.rename(target)
        return target

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.discard_upload()

    def discard_upload(self) -> None:
        if self.upload_path is not None:
            self.upload_path.unlink(missing_ok=True)
            self.upload_path = None


def staged_name(name: str | None) -> str:
    """A safe file name for an uploaded package (the import reports it by this name)."""
    base = Path((name or "").replace("\\", "/")).name
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:96]
    return safe or "package.cab"
