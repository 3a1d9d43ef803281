"""The Control Panel's own settings: sessions, lockout and request limits.

The config file has no `[admin]` table yet, so these are the defaults the composition
root passes (or a test overrides); every value has a unit in its name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdminSettings:
    # A session ends after this long without a request, and in any case this long after login.
    session_idle_seconds: float = 30 * 60
    session_max_seconds: float = 12 * 3600
    # A session's last-seen time is written at most this often (one write, not one a request).
    session_touch_seconds: float = 60
    # Lockout: this many wrong passwords within the window lock the account (and, counted
    # separately, the client address) for lockout_seconds.
    max_failures: int = 5
    failure_window_seconds: float = 15 * 60
    lockout_seconds: float = 15 * 60
    # Request bodies: JSON requests, and package uploads (streamed to disk).
    max_json_bytes: int = 64 * 1024
    max_upload_bytes: int = 1024 * 1024 * 1024
    # An upload may take this long to arrive (other requests: service.request_timeout).
    upload_timeout_seconds: float = 3600
    max_connections: int = 256
