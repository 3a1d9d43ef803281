"""The Control Panel: the admin listener's web UI and JSON API.

`make_admin_site(config, store, clock, reactor)` builds the listener's site; the
composition root wraps it in TLS (profile `modern`). The `admin` command group and remote
driving (`--server URL`) live in `appliance.cli`; accounts (local, or from the directory:
`directory_logins`) and API tokens (`tokens`) are managed here, and the rollout operations
the API and the rollout commands share (`rollout_operation`).
"""

from appliance.admin.accounts import (
    AccountError,
    add_account,
    ensure_account,
    remove_account,
)
from appliance.admin.accounts import set_password as set_account_password
from appliance.admin.accounts import set_role as set_account_role
from appliance.admin.accounts import unlock as unlock_account
from appliance.admin.api_rollouts import rollout_operation
from appliance.admin.pool import heartbeat_service
from appliance.admin.site import make_admin_site
from appliance.admin.tokens import create_token, parse_expiry, revoke_token

__all__ = [
    "add_account",
    "create_token",
    "ensure_account",
    "heartbeat_service",
    "parse_expiry",
    "revoke_token",
    "rollout_operation",
    "remove_account",
    "set_account_password",
    "set_account_role",
    "unlock_account",
    "AccountError",
    "make_admin_site",
]
