"""The `ucupdates` command line: global options, the command table, the store, errors.

Global options come before the command: `ucupdates --data-dir /tmp/x import F`.
Each command group lives in its own module, which adds its parsers and runs its
commands; this one builds the parser from them, opens the config and the store, and
turns errors into one line and an exit status. A group loads what is heavy (the
Control Panel, Twisted, the discovery responders, TLS) only when its command runs.

Exit status: 0 done; 1 the action failed (one line says why); 2 usage (also input that
ended at a prompt); 65 a package that cannot be imported (EX_DATAERR); 78 a configuration
error (EX_CONFIG); 130 interrupted (Ctrl-C), as a shell reports it. `check` is a
monitoring plugin: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (its config unreadable too).
A reader of standard output that stops early (`| head -1`) ends a command quietly, with 1.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from appliance import __version__
from appliance.catalogue import Action, CatalogueError, PackageError, finish_restore, recover
from appliance.cli.admin import add_admin_parser, run_admin
from appliance.cli.backup import add_backup_parsers, run_backup, run_restore
from appliance.cli.captures import add_capture_parser, run_capture
from appliance.cli.certs import add_certs_parser, certs_command
from appliance.cli.devices import add_test_device_parser, run_test_device
from appliance.cli.discovery import add_dhcp_options_parser, run_dhcp_options
from appliance.cli.drift import add_drift_parser, run_drift
from appliance.cli.exits import (
    EX_CONFIG,
    EX_DATAERR,
    EX_FAILED,
    EX_INTERRUPTED,
    EX_USAGE,
    Failure,
)
from appliance.cli.migrate import add_migrate_parser, run_migrate_store
from appliance.cli.ops import (
    add_check_parser,
    add_events_parser,
    check_cannot_run,
    events_to_syslog,
    run_check,
    run_events,
)
from appliance.cli.packages import (
    add_clean_files_parser,
    add_import_parser,
    add_make_sample_parser,
    run_clean_files,
    run_import,
    run_make_sample,
)
from appliance.cli.phonesim import add_phone_sim_parser, run_phone_sim
from appliance.cli.remote import (
    RemoteError,
    add_remote_arguments,
    credentials,
    run_remote,
    server_token,
)
from appliance.cli.rollout_table import LOCAL_COMMANDS as ROLLOUT_COMMANDS
from appliance.cli.rollout_table import local_approve
from appliance.cli.rollouts import add_rollout_parsers
from appliance.cli.rules import (
    add_explain_parser,
    add_rules_parsers,
    rule_action,
    run_rules,
)
from appliance.cli.serve import add_serve_parsers, reload, serve
from appliance.cli.users import add_user_parser, run_user
from appliance.config import Config, ConfigError, StoreBackend, load_config
from appliance.identifiers import InvalidIdentifier
from appliance.passwords import AuthError
from appliance.store import Store, StoreError, open_configured

Command = Callable[[argparse.Namespace, Config, Store, str], int]

# The commands that need no store (make-sample-package, dhcp-options, certs, check, capture,
# phone-sim).
_WITHOUT_STORE: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "make-sample-package": run_make_sample,
    "dhcp-options": run_dhcp_options,
    "certs": lambda args, config: certs_command(config, args),
    "check": run_check,
    "capture": run_capture,
    "phone-sim": run_phone_sim,
    "restore-backup": run_restore,  # replaces the database: opens its own store after
    "migrate-store": run_migrate_store,  # opens the SQLite source and the PostgreSQL target
}
_COMMANDS: dict[str, Command] = {
    "serve": serve,
    "reload": reload,
    "import": run_import,
    "rules": run_rules,
    "clean-files": run_clean_files,
    "test-device": run_test_device,
    "user": run_user,
    "admin": run_admin,
    "events": run_events,
    "drift": run_drift,
    "backup": run_backup,
    **{a.value: rule_action(a) for a in Action},
    "approve": local_approve(rule_action(Action.APPROVE)),  # --stages, --soak-gate
    **ROLLOUT_COMMANDS,  # path, rollout, network, external-policy, pin, offers, explain
}


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
    add_remote_arguments(parser)  # --server URL, --server-ca, --server-user, --server-token-file
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # in the order `--help` lists them
    add_admin_parser(sub)
    add_import_parser(sub)
    add_rules_parsers(sub)  # rules, approve, reset, restore, remove
    add_clean_files_parser(sub)
    add_test_device_parser(sub)
    add_user_parser(sub)
    add_events_parser(sub)
    add_explain_parser(sub)
    add_rollout_parsers(sub)  # path, rollout, network, external-policy, pin, offers
    add_drift_parser(sub)
    add_serve_parsers(sub)  # serve, reload
    add_backup_parsers(sub)  # backup, restore-backup
    add_migrate_parser(sub)  # migrate-store
    add_certs_parser(sub)
    add_check_parser(sub)
    add_capture_parser(sub)
    add_dhcp_options_parser(sub)
    add_make_sample_parser(sub)
    add_phone_sim_parser(sub)
    return parser


# Commands that work on SQLite's database file itself: refused on a PostgreSQL store.
SQLITE_ONLY = {"backup", "restore-backup"}
POSTGRESQL_REFUSED = (
    "{command} works on the SQLite database only: back up a PostgreSQL store with "
    "pg_dump (docs/pool.md)"
)


def open_store(config: Config) -> Store:
    """The store of `config`'s data folder, after sweeping what a crash left behind."""
    try:
        config.data_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        if finish_restore(config):  # a restore interrupted after its commit point
            print("finished a restore that was interrupted", file=sys.stderr)
        store = open_configured(config.store, config.db_path)
    except OSError as e:
        raise Failure(f"cannot use data folder {config.data_dir}: {e.strerror}") from e
    if store.upgrade_backup is not None:
        print(
            f"upgraded the database's schema to version {store.schema_version}; "
            f"the database from before is in {store.upgrade_backup}",
            file=sys.stderr,
        )
    swept = recover(store, config.store_dir, config.staging_dir, config.lock_path)
    if swept:
        print(
            f"recovered from an interrupted import: removed {len(swept)} leftover "
            "file(s) and folder(s)",
            file=sys.stderr,
        )
    return store


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Ctrl-C, or the end of input at a prompt (Ctrl-D at a password),
    ends it with one line rather than a traceback: nothing was changed by then, as each
    action commits whole or not at all."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # here, so that a reader gone early is seen below
        return status
    except BrokenPipeError:
        # The reader of standard output stopped early (`ucupdates events | head -1`): end
        # quietly, as the signal module's documentation on SIGPIPE recommends; standard
        # output goes to /dev/null so that the interpreter's last flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EX_FAILED
    except KeyboardInterrupt:
        print("\nucupdates: interrupted; nothing changed", file=sys.stderr)
        return EX_INTERRUPTED
    except EOFError:
        print("\nucupdates: input ended before it was complete; nothing changed", file=sys.stderr)
        return EX_USAGE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if args.command == "check":  # a monitoring plugin's usage error: UNKNOWN, not 2
            return check_cannot_run(args, f"unrecognized arguments: {' '.join(unknown)}")
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.server:  # drive a remote appliance through its API
        try:
            token = server_token(args, os.environ)
            user, password = ("", "") if token else credentials(args, os.environ, _login_name())
        except RemoteError as e:
            print(f"ucupdates: {e}", file=sys.stderr)
            return EX_USAGE
        return run_remote(args, user, password, token=token)
    try:
        config = load_config(args.config, args.data_dir)
    except ConfigError as e:
        if args.command == "check":  # a monitoring plugin that cannot run: UNKNOWN
            return check_cannot_run(args, str(e))
        print(f"ucupdates: {e}", file=sys.stderr)
        return EX_CONFIG
    if config.store.backend is StoreBackend.POSTGRESQL and args.command in SQLITE_ONLY:
        print(f"ucupdates: {POSTGRESQL_REFUSED.format(command=args.command)}", file=sys.stderr)
        return EX_CONFIG
    actor = args.actor or _login_name()
    try:
        if args.command in _WITHOUT_STORE:
            return _WITHOUT_STORE[args.command](args, config)
        store = open_store(config)
        try:
            with events_to_syslog(config, store, args.command):
                return _COMMANDS[args.command](args, config, store, actor)
        finally:
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
    except ConfigError as e:  # the PostgreSQL connection string's settings, at the open
        print(f"ucupdates: {e}", file=sys.stderr)
        return EX_CONFIG


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
