"""`ucupdates migrate-store`: this appliance's SQLite database and stored files moved into
a PostgreSQL store, verified (docs/pool.md, "Moving an appliance into a pool").

    migrate-store [--dsn-file FILE | --dsn-env NAME] [--json]
    migrate-store --verify-only [--dsn-file FILE | --dsn-env NAME] [--json]

The target's connection string comes from a file or an environment variable, or from the
configuration's [store] when it says postgresql (a branch node's: its primary); never from
an argument (it holds a
password, and the process list shows arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from appliance.catalogue import (
    MigrationError,
    finish_restore,
    migrate_store,
    no_serve,
    recover,
    verify_store,
)
from appliance.cli.exits import EX_CONFIG, EX_FAILED, EX_USAGE, Failure
from appliance.config import Config, ConfigError, StoreBackend
from appliance.store import Store


def add_migrate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "migrate-store",
        help="move this appliance's SQLite database and stored files into an empty "
        "PostgreSQL store (pool mode), verified",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--dsn-file",
        type=Path,
        metavar="FILE",
        help="a file holding the PostgreSQL connection string (default: the config's [store])",
    )
    where.add_argument(
        "--dsn-env",
        metavar="NAME",
        help="an environment variable holding the PostgreSQL connection string",
    )
    p.add_argument(
        "--verify-only",
        action="store_true",
        help="only compare the two stores (every rule, file hash, blob and row); write nothing",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _connection_string(args: argparse.Namespace, config: Config) -> str:
    text: str
    if args.dsn_file is not None:
        try:
            text = args.dsn_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise Failure(f"--dsn-file {args.dsn_file}: {e.strerror}", EX_CONFIG) from None
        where = f"--dsn-file {args.dsn_file}"
    elif args.dsn_env:
        text = os.environ.get(args.dsn_env, "").strip()
        where = f"--dsn-env {args.dsn_env}"
    elif config.store.backend is StoreBackend.POSTGRESQL:
        try:  # a branch node's configuration: its writes go to the primary, so does this
            primary = config.store.primary_connection_string(os.environ)
            return primary or config.store.connection_string(os.environ)
        except ConfigError as e:
            raise Failure(str(e), EX_CONFIG) from None
    else:
        raise Failure(
            "name the PostgreSQL store to migrate into: --dsn-file FILE, --dsn-env NAME, "
            'or [store] backend = "postgresql" in the configuration',
            EX_USAGE,
        )
    if not text:
        raise Failure(f"{where}: the connection string is empty", EX_CONFIG)
    return text


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_migrate_store(args: argparse.Namespace, config: Config) -> int:
    """Opens its own stores: the SQLite source in the data folder (upgraded first if its
    schema is older, as any command does) and the PostgreSQL target."""
    dsn = _connection_string(args, config)
    if not config.db_path.is_file():
        raise Failure(f"no database at {config.db_path}: nothing to migrate")
    if args.verify_only:
        return _with_stores(args, config, dsn)
    with no_serve(config.data_dir, "migrate"):
        return _with_stores(args, config, dsn)


def _with_stores(args: argparse.Namespace, config: Config, dsn: str) -> int:
    if finish_restore(config):
        _progress("finished a restore that was interrupted")
    source = Store.open(config.db_path)
    try:
        if source.upgrade_backup is not None:
            _progress(
                f"upgraded the SQLite database's schema to version {source.schema_version} "
                f"before migrating; the database from before is in {source.upgrade_backup}"
            )
        if recover(source, config.store_dir, config.staging_dir, config.lock_path):
            _progress("recovered from an interrupted import first")
        _progress(f"source: {config.db_path} (SQLite, schema {source.schema_version})")
        target = Store.open_postgresql(dsn, config.store.pool_size)
        try:
            _progress(f"target: the PostgreSQL store (schema {target.schema_version})")
            if args.verify_only:
                return _report_verify(args, config, verify_store(source, target, _progress))
            return _migrate(args, config, source, target)
        finally:
            target.close()
    finally:
        source.close()


def _migrate(args: argparse.Namespace, config: Config, source: Store, target: Store) -> int:
    try:
        done = migrate_store(source, target, config.store_dir, config.lock_path, _progress)
    except MigrationError as e:
        if args.json:
            print(json.dumps({"migrated": False, "error": str(e), "problems": list(e.problems)}))
        for line in e.problems:
            print(line, file=sys.stderr)
        raise Failure(str(e), EX_FAILED) from None
    rows = sum(done.tables.values())
    if args.json:
        summary = {
            "migrated": True,
            "verified": True,
            "source": str(config.db_path),
            "schema_version": done.schema_version,
            "tables": done.tables,
            "rows": rows,
            "files": done.files,
            "blobs": done.blobs,
            "blob_bytes": done.blob_bytes,
            "seconds": round(done.seconds, 3),
        }
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"migrated {config.db_path} into the PostgreSQL store: {rows} row(s) in "
        f"{len(done.tables)} table(s), {done.files} stored file(s) as {done.blobs} blob(s) "
        f"({done.blob_bytes:,} bytes), in {done.seconds:.1f} s; verified: every rule, "
        "file hash, blob and row the same"
    )
    print(
        'next: set [store] backend = "postgresql" (with dsn_file or dsn_env) in the '
        "configuration and start serve; the SQLite database stays as it was"
    )
    return 0


def _report_verify(args: argparse.Namespace, config: Config, problems: list[str]) -> int:
    if args.json:
        print(json.dumps({"same": not problems, "differences": problems}, indent=2))
    elif not problems:
        print(
            f"{config.db_path} and the PostgreSQL store hold the same rules, file hashes, "
            "blobs and rows"
        )
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        raise Failure(
            f"the PostgreSQL store differs from {config.db_path} in {len(problems)} place(s)"
        )
    return 0
