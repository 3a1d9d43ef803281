"""Driving a remote appliance through the Control Panel's API: `ucupdates --server URL ...`.

The commands that change the catalogue (`rules`, `approve`, `reset`, `restore`, `remove`,
`import`, `clean-files`, `test-device`, `events`; the `drift` report, `cli/drift.py`; the
rollout commands and `explain`, `cli/rollout_table.py`)
then run on the appliance at URL instead of a local data folder, as the admin account
`--server-user` (default: the login name), whose password comes from
`UCUPDATES_ADMIN_PASSWORD` or is asked at the terminal; or with an API token (`ucupdates
admin token create`), read from `--server-token-file FILE` or `UCUPDATES_TOKEN`, sent as
`Authorization: Bearer` (no login). A token is never an argument: the process list would
show it. `--server-ca FILE` names the CA certificate to trust (the appliance's generated
`tls/ca.pem`, say); without it the system's trust store is used. Packages are streamed
from disk, never read whole.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote, urlencode, urlsplit

from appliance.cli.drift import remote_drift
from appliance.cli.exits import EX_DATAERR, EX_FAILED, EX_USAGE
from appliance.cli.rollout_table import REMOTE_COMMANDS as ROLLOUT_COMMANDS
from appliance.cli.rollout_table import remote_approve
from appliance.identifiers import InvalidIdentifier, normalise_mac, normalise_serial

if TYPE_CHECKING:
    import http.client

COOKIE = "__Host-ucupdates-session"
PASSWORD_VARIABLE = "UCUPDATES_ADMIN_PASSWORD"  # noqa: S105 - its name, not a password
TOKEN_VARIABLE = "UCUPDATES_TOKEN"  # noqa: S105 - its name, not a token


class RemoteError(Exception):
    """The appliance refused or could not be reached; str() is the line to show."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    """The global options of remote driving (they go before the command name)."""
    parser.add_argument(
        "--server",
        metavar="URL",
        help="drive the appliance at URL (https://host:9443) through its Control Panel API",
    )
    parser.add_argument("--server-ca", type=Path, metavar="FILE", help="CA certificate to trust")
    parser.add_argument("--server-user", metavar="NAME", help="the admin account to log in as")
    parser.add_argument(
        "--server-token-file",
        type=Path,
        metavar="FILE",
        help=f"an API token to use instead of logging in (or set {TOKEN_VARIABLE})",
    )


@dataclass
class RemoteClient:
    url: str
    ca_file: Path | None = None
    timeout: float = 600.0
    cookie: str | None = None
    csrf: str | None = None
    token: str | None = None  # an API token: sent as Authorization: Bearer, no login
    _parts: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._parts = urlsplit(self.url.rstrip("/"))
        if self._parts.scheme != "https" or not self._parts.hostname:
            raise RemoteError(f"--server takes an https:// URL, not {self.url!r}")

    def _connection(self) -> http.client.HTTPSConnection:
        import http.client  # HTTPS loads only when an appliance is driven: a faster start
        import ssl

        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        return http.client.HTTPSConnection(
            self._parts.hostname, self._parts.port or 443, context=context, timeout=self.timeout
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        upload: Path | None = None,
    ) -> Any:
        import http.client

        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.cookie:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        if self.csrf and method != "GET":
            headers["X-CSRF-Token"] = self.csrf
        conn = self._connection()
        try:
            if upload is not None:
                headers["Content-Type"] = "application/octet-stream"
                headers["Content-Length"] = str(upload.stat().st_size)
                with upload.open("rb") as f:
                    conn.request(method, path, body=f, headers=headers)
                    response = conn.getresponse()
            else:
                data = None
                if body is not None:
                    data = json.dumps(body).encode()
                    headers["Content-Type"] = "application/json"
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise RemoteError(f"cannot reach {self.url}: {e}") from e
        finally:
            conn.close()
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            if name == COOKIE:
                self.cookie = rest.split(";", 1)[0] or None
        ctype = response.headers.get("Content-Type", "")
        parsed: Any = json.loads(raw) if ctype.startswith("application/json") and raw else raw
        if response.status >= 400:
            message = parsed.get("error") if isinstance(parsed, dict) else None
            raise RemoteError(
                f"{self.url}: {message or response.reason} ({response.status})",
                response.status,
                parsed,
            )
        return parsed

    def login(self, name: str, password: str) -> dict[str, Any]:
        session: dict[str, Any] = self.request(
            "POST", "/api/login", {"name": name, "password": password}
        )
        self.csrf = session["csrf_token"]
        return session

    def logout(self) -> None:
        if self.cookie:
            self.request("POST", "/api/logout")


def credentials(
    args: argparse.Namespace, environ: Mapping[str, str], login_name: str
) -> tuple[str, str]:
    """The account and password to log in with: `--server-user` (else the login name), and
    the password from `environ[PASSWORD_VARIABLE]`, else asked at the terminal."""
    user = getattr(args, "server_user", None) or login_name
    password = environ.get(PASSWORD_VARIABLE)
    if password is None:
        if not sys.stdin.isatty():
            raise RemoteError(f"no terminal to ask for the password: set {PASSWORD_VARIABLE}")
        password = getpass.getpass(f"password of {user} at {args.server}: ")
    return user, password


def server_token(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """The API token to drive the appliance with: the first line of `--server-token-file`,
    else `environ[TOKEN_VARIABLE]`; None: log in with a password instead."""
    path: Path | None = getattr(args, "server_token_file", None)
    if path is not None:
        try:
            with path.open(encoding="ascii") as f:
                token = f.readline().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise RemoteError(f"cannot read the token file {path}: {e}") from e
        if not token:
            raise RemoteError(f"the token file {path} is empty")
        if path.stat().st_mode & 0o077:
            print(f"ucupdates: warning: {path} can be read by others (chmod 600)", file=sys.stderr)
        return token
    return environ.get(TOKEN_VARIABLE) or None


def run_remote(
    args: argparse.Namespace,
    user: str,
    password: str,
    out: TextIO | None = None,
    *,
    token: str | None = None,
) -> int:
    """Run the parsed command on the appliance at `args.server`, logged in as `user`, or
    with `token` when given; returns the exit status."""
    out = out or sys.stdout
    if args.command not in REMOTE_COMMANDS:
        print(f"ucupdates: {args.command} is not available with --server", file=sys.stderr)
        return EX_USAGE
    try:
        client = RemoteClient(args.server, getattr(args, "server_ca", None), token=token)
        if token is None:
            client.login(user, password)
        try:
            return _COMMANDS[args.command](client, args, out)
        finally:
            client.logout()
    except RemoteError as e:
        print(f"ucupdates: {e}", file=sys.stderr)
        if args.command == "import" and e.status == 400:
            return EX_DATAERR
        return EX_FAILED


# -- the commands --------------------------------------------------------------------------

_FILTERS = ("device_type", "brand", "model", "revision", "locale", "update_type")
_RULE_COLUMNS = (
    ("ID", "id"),
    ("DEVICE", "device_type"),
    ("BRAND", "brand"),
    ("MODEL", "model"),
    ("REV", "revision"),
    ("LOCALE", "locale"),
    ("TYPE", "update_type"),
    ("APPROVED", "approved_version"),
    ("PENDING", "pending_version"),
    ("RESTORE", "restore_version"),
    ("STATE", "state"),
)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], out: TextIO) -> None:
    cells = [[h for h, _ in columns]]
    cells += [["-" if r.get(k) is None else str(r.get(k)) for _, k in columns] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def _rules(client: RemoteClient, args: argparse.Namespace, out: TextIO) -> int:
    params = {f: getattr(args, f) for f in _FILTERS if getattr(args, f, None)}
    if getattr(args, "state", None):
        params["state"] = args.state
    rules = client.request("GET", "/api/rules" + _query(params))["rules"]
    if args.json:
        print(json.dumps(rules, indent=2), file=out)
    elif rules:
        _table(rules, _RULE_COLUMNS, out)
    else:
        print("no rules" + (" match the filter" if params else ""), file=out)
    return 0


def _action(client: RemoteClient, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {
        "ids": list(args.ids or []),
        "filter": {f: getattr(args, f) for f in _FILTERS if getattr(args, f, None)},
        "all_pending": bool(args.all_pending),
        "all": bool(args.all),
    }
    if getattr(args, "force", False):
        body["force"] = True  # restore --force
    if getattr(args, "allow_downgrade", False):
        body["allow_downgrade"] = True  # approve --allow-downgrade
    try:
        result = client.request("POST", f"/api/rules/{args.command}", body)
    except RemoteError as e:
        if e.status != 409 or not isinstance(e.body, dict):
            raise
        result = e.body  # every selected rule skipped: still say which and why
    changes = result["changes"]
    if args.json:
        print(json.dumps(changes, indent=2), file=out)
    else:
        for c in changes:
            head = f"rule {c['rule_id']} " + "/".join(c["before"][f] for f in _FILTERS)
            if c["skipped"]:
                print(f"{head}: skipped, {c['skipped']}", file=out)
            elif c["after"] is None:
                print(f"{head}: removed", file=out)
            else:
                a = c["after"]
                print(
                    f"{head}: approved {a['approved_version'] or '-'}, pending "
                    f"{a['pending_version'] or '-'}, restore {a['restore_version'] or '-'}, "
                    f"state {a['state']}",
                    file=out,
                )
    return 0 if any(c["skipped"] is None for c in changes) else EX_FAILED


def _import(client: RemoteClient, args: argparse.Namespace, out: TextIO) -> int:
    path: Path = args.package
    if not path.is_file():
        raise RemoteError(f"{path}: no such file")
    result = client.request("POST", "/api/packages?name=" + quote(path.name), upload=path)
    if args.json:
        print(json.dumps(result, indent=2), file=out)
        return 0
    print(
        f"{result['package']}: {len(result['updates'])} device update(s), {result['size']} bytes,"
        f" sha256 {result['sha256']}",
        file=out,
    )
    for u in result["updates"]:
        key = "/".join(u[f] for f in _FILTERS)
        print(f"  rule {u['rule_id']}  {key}  {u['version']}  {u['outcome']}", file=out)
    for r in result.get("repaired", []):
        print(f"repaired {r['path']} from the package: it was damaged ({r['problem']})", file=out)
    if result["changed"]:
        print(f"imported: {result['written_bytes']} bytes written", file=out)
    else:
        print("nothing changed: this package was imported already", file=out)
    return 0


def _clean_files(client: RemoteClient, args: argparse.Namespace, out: TextIO) -> int:
    result = client.request("POST", "/api/clean-files")
    for name in result["updates"]:
        print(f"dropped {name}", file=out)
    print(f"deleted {result['files']} file(s), {result['bytes']} bytes", file=out)
    return 0


def _test_device(client: RemoteClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.test_command == "add":
        body = {"name": args.name, "mac": args.mac, "serial": args.serial}
        d = client.request("POST", "/api/test-devices", {k: v for k, v in body.items() if v})
        print(f"test device {d['id']} {d['name']}: {d['kind']} {d['identifier']}", file=out)
        return 0
    devices = client.request("GET", "/api/test-devices")["test_devices"]
    if args.test_command == "remove":
        found = [d for d in devices if _names(d, args.which)]
        if len(found) != 1:
            why = "no test device" if not found else "several test devices match"
            raise RemoteError(f"{why} {args.which!r}")
        d = client.request("DELETE", f"/api/test-devices/{found[0]['id']}")
        print(f"removed test device {d['id']} {d['name']} ({d['identifier']})", file=out)
        return 0
    if args.json:
        print(json.dumps(devices, indent=2), file=out)
    elif devices:
        columns = (("ID", "id"), ("NAME", "name"), ("KIND", "kind"), ("IDENTIFIER", "identifier"))
        _table(devices, columns, out)
    else:
        print("no test devices", file=out)
    return 0


def _names(device: dict[str, Any], which: str) -> bool:
    if which == str(device["id"]) or which == device["name"]:
        return True
    for normalise in (normalise_mac, normalise_serial):
        try:
            if normalise(which) == device["identifier"]:
                return True
        except InvalidIdentifier:
            pass
    return False


def _events(client: RemoteClient, args: argparse.Namespace, out: TextIO) -> int:
    events = client.request("GET", "/api/events" + _query({"limit": str(args.limit)}))["events"]
    if args.json:
        print(json.dumps(events, indent=2), file=out)
        return 0
    for e in events:
        change = ""
        if e["before"] is not None or e["after"] is not None:
            change = f" {json.dumps(e['before'])} -> {json.dumps(e['after'])}"
        print(f"{e['at']} {e['actor']} {e['action']} {e['target']}{change}", file=out)
    return 0


def _query(params: dict[str, str]) -> str:
    return "?" + urlencode(params) if params else ""


_COMMANDS = {
    "rules": _rules,
    "approve": remote_approve(_action),  # --stages, --soak-gate: rollout_table.py
    "reset": _action,
    "restore": _action,
    "remove": _action,
    "import": _import,
    "clean-files": _clean_files,
    "test-device": _test_device,
    "events": _events,
    "drift": remote_drift,
    **ROLLOUT_COMMANDS,  # path, rollout, network, external-policy, pin, offers, explain
}
REMOTE_COMMANDS = tuple(_COMMANDS)
