"""`ucupdates admin token ...`: API tokens for automation (`Authorization: Bearer`).

    ucupdates admin token create NAME --role admin|viewer [--expires DAYS|DATE]
                                      [--secret-stdin] [--update]
    ucupdates admin token list [--json]
    ucupdates admin token revoke NAME [--missing-ok]

`create` prints a new token once, alone on standard output (the rest goes to standard
error), so that `TOKEN=$(ucupdates admin token create ci --role viewer)` keeps it. With
`--secret-stdin` the secret is read instead (an Ansible vault's) and never printed; with
`--update` an existing token of that name is brought in line rather than refused, and
"unchanged" says when it already was (so a second Ansible run changes nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from appliance.model import Role
from appliance.store import Store, utc_now


def add_token_parser(asub: Any) -> None:
    parser = asub.add_parser("token", help="API tokens for scripts (Authorization: Bearer)")
    tsub = parser.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    a = tsub.add_parser("create", help="make a token (printed once)")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=[r.value for r in Role])
    a.add_argument(
        "--expires",
        metavar="DAYS|DATE",
        help="days from now, or the last day (YYYY-MM-DD, UTC) it works; default: never",
    )
    a.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the token's secret from standard input instead of making one",
    )
    a.add_argument(
        "--update",
        action="store_true",
        help="if the token exists, make it match (prints 'unchanged' when it does)",
    )
    a = tsub.add_parser("list", help="list the tokens (never their secrets)")
    a.add_argument("--json", action="store_true")
    a = tsub.add_parser("revoke", help="revoke a token (it stops working at once)")
    a.add_argument("name")
    missing_ok_option(a)


def missing_ok_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--missing-ok",
        action="store_true",
        help="none of that name is no error (prints 'nothing to remove'; for Ansible)",
    )


def run_token(
    args: argparse.Namespace, store: Store, actor: str, stdin: TextIO, out: TextIO
) -> int:
    from appliance.admin import create_token, parse_expiry, revoke_token

    command = args.token_command
    if command == "create":
        expires = parse_expiry(args.expires, utc_now())
        secret = None
        if args.secret_stdin:
            secret = stdin.readline().removesuffix("\n").removesuffix("\r")
        made = create_token(
            store, args.name, args.role, expires, actor, secret=secret, update=args.update
        )
        token = made.token
        until = token.expires_at or "never"
        if made.secret is not None:
            print(
                f"API token {token.name} ({token.role}, expires {until}); it is shown only"
                " now, keep it safe:",
                file=sys.stderr,
            )
            print(made.secret, file=out)
        elif not made.changed:
            print(f"API token {token.name} unchanged ({token.role}, expires {until})", file=out)
        else:
            print(f"API token {token.name} set ({token.role}, expires {until})", file=out)
    elif command == "revoke" and args.missing_ok and store.api_token(args.name) is None:
        print(f"no API token {args.name}: nothing to remove", file=out)
    elif command == "revoke":
        revoke_token(store, args.name, actor)
        print(f"API token {args.name} revoked", file=out)
    else:
        rows = [
            {
                "name": t.name,
                "role": t.role.value,
                "created_at": t.created_at,
                "expires_at": t.expires_at,
                "last_used_at": t.last_used_at,
            }
            for t in store.api_tokens()
        ]
        if args.json:
            print(json.dumps(rows, indent=2), file=out)
        elif not rows:
            print(
                "no API tokens (make one: ucupdates admin token create NAME --role viewer)",
                file=out,
            )
        else:
            for r in rows:
                print(
                    f"{r['name']}  {r['role']}  created {r['created_at']}  expires"
                    f" {r['expires_at'] or 'never'}  last used {r['last_used_at'] or 'never'}",
                    file=out,
                )
    return 0
