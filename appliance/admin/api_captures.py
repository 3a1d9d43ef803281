"""The API's captures: `GET /api/captures`, `GET /api/captures/{id}`, and
`GET /api/captures/export` (the same file `ucupdates capture export` writes).

Capture mode keeps requests from the phones with what the appliance answered
(docs/phones.md); any session may read them, as it may read the inventory. Credentials
never reach a capture, so nothing here needs hiding.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from appliance import __version__
from appliance.admin.call import Call
from appliance.admin.web import ApiError, Reply
from appliance.config import Config
from appliance.ops import (
    CaptureError,
    CaptureFolder,
    UnknownCapture,
    capture_json,
    capture_text,
    export_bytes,
    summary_json,
)


class CapturesApi:
    """Listing, reading and exporting the capture folder."""

    def __init__(self, config: Config, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.clock = clock
        self.folder = CaptureFolder.of(config)

    def listing(self, call: Call) -> Reply:
        captures = [summary_json(c) for c in self.folder.captures()]
        captures.reverse()  # newest first
        settings = self.config.service
        return Reply(
            body={
                "enabled": settings.capture,
                "per_model": settings.capture_per_model,
                "max_files": settings.capture_max_files,
                "captures": captures,
            }
        )

    def detail(self, call: Call) -> Reply:
        try:
            capture = self.folder.read(call.params["id"])
        except UnknownCapture as e:
            raise ApiError(404, str(e)) from e
        except CaptureError as e:
            raise ApiError(500, str(e)) from e
        return Reply(body={"capture": capture_json(capture), "text": capture_text(capture)})

    def export(self, call: Call) -> Reply:
        now = self.clock()
        return Reply(
            body=export_bytes(self.folder, self.config, __version__, now),
            content_type=b"application/json",
            headers=[
                (
                    b"content-disposition",
                    f'attachment; filename="ucupdates-captures-{now:%Y%m%d-%H%M%S}.json"'.encode(),
                )
            ],
        )
