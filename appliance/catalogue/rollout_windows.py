"""Download windows, as the catalogue's rollout modules name them.

The records are plain data and live in `appliance.model` (model/windows.py explains how a
window opens and closes in local time, across midnight and daylight-saving changes).
"""

from appliance.model import (
    DownloadWindows,
    Network,
    TimeWindow,
    WindowError,
    parse_address,
    parse_network,
)

__all__ = [
    "DownloadWindows",
    "Network",
    "TimeWindow",
    "WindowError",
    "parse_address",
    "parse_network",
]
