"""The `ucupdates` command line: the composition root of the admin commands.

Global options come before the command: `ucupdates --data-dir /tmp/x import F`.
Exit status: 0 done; 1 the action failed (one line says why); 2 usage; 65 a package
that cannot be imported (EX_DATAERR); 78 a configuration error (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from appliance import __version__
from appliance.catalogue import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_VERSION,
    Action,
    CatalogueError,
    PackageError,
    RuleChange,
    add_test_device,
    add_user,
    apply_action,
    change_json,
    choose_update,
    clean_files,
    import_json,
    import_package,
    make_sample_package,
    parse_identifier,
    recover,
    remove_test_device,
    remove_user,
    rule_json,
    set_password,
)
from appliance.cli.admin import add_admin_parser, run_admin
from appliance.cli.exits import EX_CONFIG, EX_DATAERR, EX_FAILED, EX_USAGE, Failure
from appliance.cli.remote import RemoteError, add_remote_arguments, credentials, run_remote
from appliance.cli.serve import reload, serve
from appliance.config import Config, ConfigError, load_config
from appliance.identifiers import InvalidIdentifier, normalise_mac, normalise_serial
from appliance.model import DeviceRequest, Rule, RuleState
from appliance.passwords import AuthError
from appliance.store import RuleFilter, Store, StoreError


def _table(rows: Sequence[Sequence[object]], headers: Sequence[str], out: TextIO) -> None:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


_RULE_HEADERS = (
    "ID",
    "DEVICE",
    "BRAND",
    "MODEL",
    "REV",
    "LOCALE",
    "TYPE",
    "APPROVED",
    "PENDING",
    "RESTORE",
    "STATE",
)


def _rule_row(r: Rule) -> list[object]:
    k = r.key
    return [
        r.id,
        k.device_type,
        k.brand,
        k.model,
        k.revision,
        k.locale,
        k.update_type,
        r.approved_version,
        r.pending_version,
        r.restore_version,
        r.state.value,
    ]


def _add_filters(p: argparse.ArgumentParser) -> None:
    for name in ("device-type", "brand", "model", "revision", "locale", "update-type"):
        p.add_argument(f"--{name}", metavar=name.split("-")[-1].upper())


def _filter(args: argparse.Namespace) -> RuleFilter:
    return RuleFilter(
        ids=tuple(getattr(args, "ids", ()) or ()),
        device_type=args.device_type,
        brand=args.brand,
        model=args.model,
        revision=args.revision,
        locale=args.locale,
        update_type=args.update_type,
        state=RuleState(args.state) if getattr(args, "state", None) else None,
        pending_only=getattr(args, "all_pending", False),
        everything=getattr(args, "all", False),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ucupdates",
        description="Device updates for Lync Phone Edition phones, without a Lync Server.",
    )
    parser.add_argument("--version", action="version", version=f"ucupdates {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="configuration file (TOML); embedded defaults without it",
    )
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="data folder (overrides the config's data_dir)"
    )
    parser.add_argument(
        "--actor", metavar="NAME", help="who the event log names (default: the login name)"
    )
    add_remote_arguments(parser)  # --server URL, --server-ca FILE, --server-user NAME
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_admin_parser(sub)

    p = sub.add_parser("import", help="import a vendor package (UCUpdates.cab or .exe)")
    p.add_argument("package", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("rules", help="list the update rules")
    _add_filters(p)
    p.add_argument("--state", choices=[s.value for s in RuleState])
    p.add_argument("--json", action="store_true")

    helps = {
        Action.APPROVE: "approve the pending version (the approved one becomes the restore one)",
        Action.RESET: "reject the pending version",
        Action.RESTORE: "roll back to the restore version",
        Action.REMOVE: "delete rules (their files stay until clean-files)",
    }
    for action, text in helps.items():
        p = sub.add_parser(action.value, help=text)
        p.add_argument("ids", type=int, nargs="*", metavar="ID", help="rule ids")
        _add_filters(p)
        p.add_argument(
            "--all-pending", action="store_true", help="every rule with a pending version"
        )
        p.add_argument("--all", action="store_true", help="every rule")
        p.add_argument("--json", action="store_true")

    sub.add_parser("clean-files", help="delete files that no rule references any more")

    p = sub.add_parser("test-device", help="devices that get pending updates first")
    tsub = p.add_subparsers(dest="test_command", required=True, metavar="ACTION")
    a = tsub.add_parser("add", help="add a test device")
    a.add_argument("name")
    group = a.add_mutually_exclusive_group(required=True)
    group.add_argument("--mac", help="MAC address: six hex pairs, bare or joined by - or :")
    group.add_argument("--serial", help="serial number: letters, digits, - and _")
    a = tsub.add_parser("list", help="list the test devices")
    a.add_argument("--json", action="store_true")
    a = tsub.add_parser("remove", help="remove a test device")
    a.add_argument("which", help="its id, name, MAC or serial number")

    p = sub.add_parser("user", help="phone users for HTTP Basic (external zone)")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    for verb, text in (("add", "add a user"), ("passwd", "set a user's password")):
        a = usub.add_parser(verb, help=text)
        a.add_argument("name")
        a.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input",
        )
    a = usub.add_parser("remove", help="remove a user")
    a.add_argument("name")
    a = usub.add_parser("list", help="list the users")
    a.add_argument("--json", action="store_true")

    p = sub.add_parser("events", help="the admin event log, newest first")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("explain", help="which update a device would get now, and why")
    p.add_argument("--device-type", default="UCPhone")
    p.add_argument("--brand", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--revision", default="A")
    p.add_argument("--locale", default="ENU")
    p.add_argument("--mac")
    p.add_argument("--serial")
    p.add_argument("--reported-version", metavar="VERSION", help="the version the device runs now")

    p = sub.add_parser("serve", help="run the phone-facing service in the foreground")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the listening ports (default 1)",
    )
    p.add_argument("--bind", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="how events are written to standard error",
    )

    sub.add_parser("reload", help="make the running service re-read the DNS domains (SIGHUP)")

    from appliance.cli.certs import add_certs_parser

    add_certs_parser(sub)
    p = sub.add_parser("check", help="health checks like a Nagios plugin: exit 0 OK, 2 CRITICAL")
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    p = sub.add_parser(
        "dhcp-options",
        help="DHCP options 43 and 120 for the phones, with snippets for DHCP servers",
    )
    p.add_argument(
        "--sip-server",
        action="append",
        default=[],
        metavar="FQDN",
        help="the SIP server (pool) FQDN; repeatable",
    )
    p.add_argument("--web-fqdn", help="the web services FQDN (default: the first SIP server)")
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--vlan", type=int, help="voice VLAN for CPE-OCPHONE")
    p.add_argument("--decode", metavar="HEX", help="explain a captured option 43 or 120")

    p = sub.add_parser("make-sample-package", help="write a realistic sample package")
    p.add_argument("out", type=Path, metavar="OUT.cab")
    p.add_argument("--version", dest="package_version", default=DEFAULT_VERSION)
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, metavar="BYTES")
    return parser


def open_store(config: Config) -> Store:
    """The store of `config`'s data folder, after sweeping what a crash left behind."""
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store.open(config.db_path)
    except OSError as e:
        raise Failure(f"cannot use data folder {config.data_dir}: {e.strerror}") from e
    swept = recover(store, config.store_dir, config.staging_dir, config.lock_path)
    if swept:
        print(
            f"recovered from an interrupted import: removed {len(swept)} leftover "
            "file(s) and folder(s)",
            file=sys.stderr,
        )
    return store


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.server:  # drive a remote appliance through its API
        try:
            user, password = credentials(args, os.environ, _login_name())
        except RemoteError as e:
            print(f"ucupdates: {e}", file=sys.stderr)
            return EX_USAGE
        return run_remote(args, user, password)
    try:
        config = load_config(args.config, args.data_dir)
    except ConfigError as e:
        print(f"ucupdates: {e}", file=sys.stderr)
        return EX_CONFIG
    actor = args.actor or _login_name()
    try:
        if args.command == "make-sample-package":
            return _make_sample(args)
        if args.command == "dhcp-options":
            return _dhcp_options(args)
        if args.command == "certs":
            from appliance.cli.certs import certs_command

            return certs_command(config, args)
        if args.command == "check":
            from appliance.ops import run_check

            return run_check(config, args.json)
        store = open_store(config)
        since = None
        if config.syslog.enabled and args.command != "serve":
            from appliance.ops import newest_event_id

            since = newest_event_id(store)
        try:
            return _COMMANDS[args.command](args, config, store, actor)
        finally:
            if since is not None:  # what this command did goes to syslog too
                from appliance.ops import forward_new_events

                forward_new_events(config, store, since)
            store.close()
    except Failure as e:
        print(f"ucupdates: {e}", file=sys.stderr)
        return e.status
    except PackageError as e:
        print(f"ucupdates: {e}", file=sys.stderr)
        return EX_DATAERR
    except (CatalogueError, StoreError, InvalidIdentifier, AuthError) as e:
        print(f"ucupdates: {e}", file=sys.stderr)
        return EX_FAILED


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _dhcp_options(args: argparse.Namespace) -> int:
    from appliance.discovery import DhcpOptionError, dhcp_options_command

    if not args.decode and not args.sip_server:
        raise Failure("give --sip-server FQDN (repeatable), or --decode HEX", EX_USAGE)
    try:
        print(
            dhcp_options_command(args.sip_server, args.web_fqdn, args.port, args.vlan, args.decode),
            end="",
        )
    except DhcpOptionError as e:
        raise Failure(str(e)) from e
    return 0


def _make_sample(args: argparse.Namespace) -> int:
    if args.image_size < 1:
        raise Failure("--image-size must be at least 1 byte", EX_USAGE)
    updates = make_sample_package(args.out, args.package_version, args.image_size)
    print(f"wrote {args.out}: {len(updates)} device updates, version {args.package_version}")
    return 0


def _import(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    result = import_package(store, config, args.package, actor)
    if args.json:
        print(json.dumps(import_json(result), indent=2))
        return 0
    print(
        f"{result.package}: {len(result.updates)} device update(s), "
        f"{result.size} bytes, sha256 {result.sha256}"
    )
    _table(
        [
            [
                r.rule_id,
                str(r.key),
                r.version,
                r.files,
                r.bytes,
                r.outcome.value + (f" (was {r.previous_pending})" if r.previous_pending else ""),
            ]
            for r in result.updates
        ],
        ("RULE", "DEVICE UPDATE", "VERSION", "FILES", "BYTES", "RESULT"),
        sys.stdout,
    )
    for name in result.ignored:
        print(f"ignored member {name}: no update refers to it")
    if result.changed:
        print(
            f"imported: {result.written_bytes} bytes written; new versions are pending "
            "until approved"
        )
    else:
        print("nothing changed: this package was imported already")
    return 0


def _rules(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    rules = store.rules(_filter(args))
    if args.json:
        print(json.dumps([rule_json(r) for r in rules], indent=2))
    elif rules:
        _table([_rule_row(r) for r in rules], _RULE_HEADERS, sys.stdout)
    else:
        print("no rules" + (" match the filter" if not _filter(args).is_empty() else ""))
    return 0


def _rule_action(action: Action) -> Callable[[argparse.Namespace, Config, Store, str], int]:
    def run(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
        changes = apply_action(store, action, _filter(args), actor)
        if args.json:
            print(json.dumps([change_json(c) for c in changes], indent=2))
        else:
            for c in changes:
                print(_change_line(action, c))
        return 0 if any(c.skipped is None for c in changes) else EX_FAILED

    return run


def _change_line(action: Action, c: RuleChange) -> str:
    head = f"rule {c.before.id} {c.before.key}"
    if c.skipped is not None:
        return f"{head}: skipped, {c.skipped}"
    if c.after is None:
        return f"{head}: removed"
    b, a = c.before, c.after
    parts = [
        f"{name} {x or '-'} -> {y or '-'}"
        for name, x, y in (
            ("approved", b.approved_version, a.approved_version),
            ("pending", b.pending_version, a.pending_version),
            ("restore", b.restore_version, a.restore_version),
        )
        if x != y
    ]
    return f"{head}: {_DONE[action]}: " + ", ".join(parts + [f"state {a.state.value}"])


_DONE = {Action.APPROVE: "approved", Action.RESET: "reset", Action.RESTORE: "restored"}


def _clean_files(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    result = clean_files(store, config.store_dir, config.lock_path, actor)
    for name in result.updates:
        print(f"dropped {name}")
    print(f"deleted {len(result.files)} file(s), {result.bytes} bytes")
    return 0


def _test_device(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    if args.test_command == "add":
        kind, identifier = parse_identifier(args.mac, args.serial)
        device = add_test_device(store, args.name, kind, identifier, actor)
        print(f"test device {device.id} {device.name}: {device.kind.value} {device.identifier}")
    elif args.test_command == "remove":
        device = remove_test_device(store, args.which, actor)
        print(f"removed test device {device.id} {device.name} ({device.identifier})")
    else:
        devices = store.test_devices()
        if args.json:
            print(json.dumps([{**asdict(d), "kind": d.kind.value} for d in devices], indent=2))
        elif devices:
            _table(
                [
                    [d.id, d.name, d.kind.value, d.identifier, d.scope, d.created_at]
                    for d in devices
                ],
                ("ID", "NAME", "KIND", "IDENTIFIER", "SCOPE", "ADDED"),
                sys.stdout,
            )
        else:
            print("no test devices")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        return password.removesuffix("\r")
    if not sys.stdin.isatty():
        raise Failure("no terminal to ask for the password: use --password-stdin", EX_USAGE)
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise Failure("the passwords differ; nothing changed")
    return first


def _user(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    if args.user_command == "add":
        name = add_user(store, args.name, _read_password(args), actor)
        print(f"user {name} added")
    elif args.user_command == "passwd":
        if store.user(args.name) is None:
            raise Failure(f"no user {args.name!r}")
        set_password(store, args.name, _read_password(args), actor)
        print(f"password of {args.name} changed")
    elif args.user_command == "remove":
        remove_user(store, args.name, actor)
        print(f"user {args.name} removed")
    else:
        users = store.users()
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "name": u.name,
                            "created_at": u.created_at,
                            "updated_at": u.updated_at,
                            "disabled": u.disabled,
                        }
                        for u in users
                    ],
                    indent=2,
                )
            )
        elif users:
            _table(
                [
                    [u.name, u.created_at, u.updated_at, "yes" if u.disabled else "no"]
                    for u in users
                ],
                ("NAME", "ADDED", "CHANGED", "DISABLED"),
                sys.stdout,
            )
        else:
            print("no users")
    return 0


def _events(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    events = store.events(args.limit)
    if args.json:
        print(json.dumps([asdict(e) for e in events], indent=2))
        return 0
    for e in events:
        change = ""
        if e.before is not None or e.after is not None:
            change = f" {json.dumps(e.before)} -> {json.dumps(e.after)}"
        print(f"{e.at} {e.actor} {e.action} {e.target}{change}")
    return 0


def _explain(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    request = DeviceRequest(
        device_type=args.device_type,
        brand=args.brand,
        model=args.model,
        revision=args.revision,
        locale=args.locale,
        mac=normalise_mac(args.mac) if args.mac else None,
        serial=normalise_serial(args.serial) if args.serial else None,
        version=args.reported_version,
    )
    decision = choose_update(request, store.catalog())
    print(f"{decision.reason.value}: {decision.detail}")
    for offer in decision.offers:
        for f in offer.files:
            print(f"  {f.path}  {f.size} bytes  sha256 {f.sha256}")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace, Config, Store, str], int]] = {
    "serve": serve,
    "reload": reload,
    "import": _import,
    "rules": _rules,
    "clean-files": _clean_files,
    "test-device": _test_device,
    "user": _user,
    "admin": run_admin,
    "events": _events,
    "explain": _explain,
    **{a.value: _rule_action(a) for a in Action},
}
