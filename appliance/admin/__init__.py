"""The Control Panel: the admin listener's web UI and JSON API (issue 5).

`make_admin_site(config, store, clock, reactor)` builds the listener's site; the
composition root wraps it in TLS (profile `modern`). `cli` has the `admin` command and
`remote` drives a remote appliance through the API (`--server URL`).
"""

# Nothing is imported here: `ucupdates` commands import `admin.cli` and `admin.remote`
# without loading the web site (`admin.site`), which only `serve` needs.
