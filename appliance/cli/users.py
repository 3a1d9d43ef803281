"""`ucupdates user add|passwd|remove|list`: phone users for HTTP Basic and NTLM (external).

The password is asked twice at a terminal, or read from the first line of standard
input with `--password-stdin`. With `auth.ntlm` on (the default), add and passwd also
store the password's NT hash, which NTLM needs; `list` shows who has one.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from appliance.catalogue import add_user, remove_user, set_password
from appliance.cli.exits import EX_USAGE, Failure
from appliance.cli.table import write_table
from appliance.config import Config
from appliance.store import Store


def add_user_parser(sub: Any) -> None:
    p = sub.add_parser("user", help="phone users for HTTP Basic and NTLM (external zone)")
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


def run_user(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    if args.user_command == "add":
        name = add_user(store, args.name, _read_password(args), actor, config.auth.ntlm)
        print(f"user {name} added")
    elif args.user_command == "passwd":
        if store.user(args.name) is None:
            raise Failure(f"no user {args.name!r}")
        set_password(store, args.name, _read_password(args), actor, config.auth.ntlm)
        print(f"password of {args.name} changed")
    elif args.user_command == "remove":
        remove_user(store, args.name, actor)
        print(f"user {args.name} removed")
    else:
        _list_users(args, store)
    return 0


def _list_users(args: argparse.Namespace, store: Store) -> None:
    users = store.users()
    if args.json:
        rows = [
            {
                "name": u.name,
                "created_at": u.created_at,
                "updated_at": u.updated_at,
                "disabled": u.disabled,
                "ntlm": u.ntlm,
            }
            for u in users
        ]
        print(json.dumps(rows, indent=2))
    elif users:
        write_table(
            [[u.name, u.created_at, u.updated_at, _yes(u.disabled), _yes(u.ntlm)] for u in users],
            ("NAME", "ADDED", "CHANGED", "DISABLED", "NTLM"),
            sys.stdout,
        )
        if any(not u.ntlm for u in users):
            print("NTLM no: the password was set before NT hashes were kept (or with auth.ntlm")
            print("off); Basic works, NTLM after `ucupdates user passwd NAME`.")
    else:
        print("no users")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


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
