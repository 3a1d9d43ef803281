"""`ucupdates admin ...`: the Control Panel's accounts, from the command line.

    ucupdates admin add NAME --role admin|viewer [--password-stdin | --password-hash-stdin]
                        [--update]
    ucupdates admin passwd NAME [--password-stdin]
    ucupdates admin role NAME admin|viewer
    ucupdates admin unlock NAME
    ucupdates admin remove NAME [--missing-ok]
    ucupdates admin list [--json]
    ucupdates admin token create|list|revoke ...   (API tokens: cli/tokens.py)

`add_admin_parser(sub)` adds the command to the `ucupdates` parser; `run_admin` runs it
(the signature of the other commands: args, config, store, actor -> exit status).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any, TextIO

from appliance.cli.exits import EX_FAILED, EX_USAGE
from appliance.cli.tokens import add_token_parser, missing_ok_option, run_token
from appliance.config import Config
from appliance.model import Role
from appliance.store import Store


def add_admin_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "admin", help="Control Panel accounts (admins change, viewers only look)"
    )
    asub = parser.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    a = asub.add_parser("add", help="add an account")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=[r.value for r in Role])
    _password_option(a)
    a.add_argument(
        "--password-hash-stdin",
        action="store_true",
        help="read an argon2id hash of the password from standard input instead",
    )
    a.add_argument(
        "--update",
        action="store_true",
        help="if the account exists, make its role and password match (for Ansible)",
    )
    a = asub.add_parser("passwd", help="set an account's password (ends its sessions)")
    a.add_argument("name")
    _password_option(a)
    a = asub.add_parser("role", help="change an account's role")
    a.add_argument("name")
    a.add_argument("role", choices=[r.value for r in Role])
    a = asub.add_parser("unlock", help="lift a lockout after wrong passwords")
    a.add_argument("name")
    a = asub.add_parser("remove", help="remove an account (and its sessions)")
    a.add_argument("name")
    missing_ok_option(a)
    a = asub.add_parser("list", help="list the accounts")
    a.add_argument("--json", action="store_true")
    add_token_parser(asub)
    return parser


def _password_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )


def run_admin(
    args: argparse.Namespace,
    config: Config,
    store: Store,
    actor: str,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
) -> int:
    from appliance.admin import AccountError  # the Control Panel loads only when asked for

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    try:
        return _run(args, store, actor, stdin, out)
    except AccountError as e:
        print(f"ucupdates: {e}", file=sys.stderr)
        return EX_FAILED
    except _Usage as e:
        print(f"ucupdates: {e}", file=sys.stderr)
        return EX_USAGE


class _Usage(Exception):
    pass


def _run(args: argparse.Namespace, store: Store, actor: str, stdin: TextIO, out: TextIO) -> int:
    from appliance.admin import (
        AccountError,
        add_account,
        ensure_account,
        remove_account,
        set_account_password,
        set_account_role,
        unlock_account,
    )

    command = args.admin_command
    if command == "token":
        return run_token(args, store, actor, stdin, out)
    if command == "add" and (args.update or args.password_hash_stdin):
        if args.password_hash_stdin and args.password_stdin:
            raise _Usage("give --password-stdin or --password-hash-stdin, not both")
        if not args.update and store.admin_account(args.name) is not None:
            raise AccountError(f"admin account {args.name!r} exists already")
        if args.password_hash_stdin:
            secret = {"password_hash": stdin.readline().strip()}
        else:
            secret = {"password": _password(args, stdin)}
        done = ensure_account(store, args.name, args.role, actor, **secret)
        print(f"admin account {args.name} {done} ({args.role})", file=out)
    elif command == "add":
        account = add_account(store, args.name, args.role, _password(args, stdin), actor)
        print(f"admin account {account.name} added ({account.role})", file=out)
    elif command == "passwd":
        if store.admin_account(args.name) is None:
            raise AccountError(f"no admin account {args.name!r}")
        set_account_password(store, args.name, _password(args, stdin), actor)
        print(f"password of {args.name} changed; its sessions have ended", file=out)
    elif command == "role":
        set_account_role(store, args.name, args.role, actor)
        print(f"{args.name} is now {args.role}", file=out)
    elif command == "unlock":
        unlock_account(store, args.name, actor)
        print(f"{args.name} unlocked", file=out)
    elif command == "remove" and args.missing_ok and store.admin_account(args.name) is None:
        print(f"no admin account {args.name}: nothing to remove", file=out)
    elif command == "remove":
        remove_account(store, args.name, actor)
        print(f"admin account {args.name} removed", file=out)
    else:
        rows = [
            {
                "name": a.name,
                "role": a.role,
                "created_at": a.created_at,
                "last_login_at": a.last_login_at,
                "locked_until": a.locked_until,
            }
            for a in store.admin_accounts()
        ]
        if args.json:
            print(json.dumps(rows, indent=2), file=out)
        elif not rows:
            print("no admin accounts (add one: ucupdates admin add NAME --role admin)", file=out)
        else:
            for r in rows:
                extra = f", locked until {r['locked_until']}" if r["locked_until"] else ""
                last = r["last_login_at"] or "never"
                print(f"{r['name']}  {r['role']}  last login {last}{extra}", file=out)
    return 0


def _password(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.password_stdin:
        line = stdin.readline()
        return line.removesuffix("\n").removesuffix("\r")
    if not stdin.isatty():
        raise _Usage("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        from appliance.admin import AccountError

        raise AccountError("the passwords differ; nothing changed")
    return first
