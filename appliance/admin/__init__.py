"""The Control Panel: the admin listener's web UI and JSON API.

`make_admin_site(config, store, clock, reactor)` builds the listener's site; the
composition root wraps it in TLS (profile `modern`). The `admin` command group and remote
driving (`--server URL`) live in `appliance.cli`.
"""

from appliance.admin.accounts import AccountError
from appliance.admin.site import make_admin_site

__all__ = [
    "AccountError",
    "make_admin_site",
]
