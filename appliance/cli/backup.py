"""Backups from the command line (docs/operations.md, Backup and restore).

    backup FILE [--json]                  one backup, while serve runs
    backup --dir DIR [--keep N] [--json]  a timestamped backup in DIR, the newest N kept
    restore-backup FILE [--discard-previous]  serve stopped: the backup's data in place

(`restore` is the rule action that moves a rule back to its restore version.)
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from appliance.catalogue import (
    backup_summary,
    create_backup,
    prune,
    restore_backup,
    scheduled_name,
)
from appliance.cli.exits import EX_USAGE, Failure
from appliance.config import Config
from appliance.store import Store

DEFAULT_KEEP = 7


def add_backup_parsers(sub: Any) -> None:
    """`backup` and `restore`."""
    p = sub.add_parser(
        "backup",
        help="back up the database, stored files and TLS files into one file (serve may run)",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("file", nargs="?", type=Path, metavar="FILE", help="the backup to write")
    where.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="write ucupdates-backup-<UTC time>.tar into DIR (made 0700 if missing)",
    )
    p.add_argument(
        "--keep",
        type=int,
        default=DEFAULT_KEEP,
        metavar="N",
        help=f"with --dir: keep the newest N backups there, delete older ones (default "
        f"{DEFAULT_KEEP})",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    r = sub.add_parser(
        "restore-backup",
        help="replace the data with a backup's (serve stopped); the old data is kept aside",
    )
    r.add_argument(
        "archive", type=Path, metavar="FILE", help="the backup (- reads it from standard input)"
    )
    r.add_argument(
        "--discard-previous",
        action="store_true",
        help="delete the replaced data once the restore is done, instead of keeping it in "
        "<data_dir>/restore-previous-<time>/",
    )


def run_backup(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    if args.dir is not None:
        if args.keep < 1:
            raise Failure("--keep must be at least 1", EX_USAGE)
        try:
            args.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise Failure(f"cannot use backup folder {args.dir}: {e.strerror}") from e
        target = args.dir / scheduled_name(store)
    else:
        target = args.file
    result = create_backup(store, config, target)
    removed = prune(args.dir, args.keep) if args.dir is not None else []
    summary = backup_summary(result)
    if args.json:
        print(json.dumps({**summary, "removed": [str(p) for p in removed]}, indent=2))
        return 0
    print(
        f"wrote {result.path}: the database (schema {summary['schema_version']}) and "
        f"{summary['stored_files']} stored file(s), {result.bytes:,} bytes, "
        f"in {result.seconds:.1f} s"
    )
    for old in removed:
        print(f"deleted {old}")
    return 0


def run_restore(args: argparse.Namespace, config: Config) -> int:
    """Opens no store first: the database is the thing it replaces."""
    from_stdin = str(args.archive) == "-"
    name = Path("standard input") if from_stdin else args.archive
    result = restore_backup(
        name,
        config,
        args.actor or _login_name(),
        discard_previous=args.discard_previous,
        stream=sys.stdin.buffer if from_stdin else None,
    )
    m = result.manifest
    stored = sum(1 for x in m.members if x.name.startswith("DeviceUpdateStore/"))
    print(
        f"restored {name}: made {m.created_at} by ucupdates {m.appliance_version}, "
        f"the database (schema {m.schema_version}), {stored} stored file(s) and "
        f"{len(m.members) - 1 - stored} TLS file(s)"
    )
    if result.upgrade_backup is not None:
        print(
            "its database was upgraded to this version's schema; a copy from before: "
            f"{result.upgrade_backup}"
        )
    if result.previous is not None:
        print(
            f"the data it replaced is in {result.previous}: delete that folder once the "
            "restored appliance works"
        )
    sys.stdout.flush()
    return 0


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
