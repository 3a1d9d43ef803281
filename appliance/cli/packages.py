"""Vendor packages from the command line: import one, make a sample, clean unused files.

    import FILE [--json]
    make-sample-package OUT.cab [--version V] [--image-size BYTES] [--sample-check]
    clean-files

`make-sample-package --sample-check` also writes `<data_dir>/sample/check.xml`, the update
check of the sample phone; `serve` then prints a curl line that sends it (`make run`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from appliance.catalogue import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_VERSION,
    clean_files,
    import_json,
    import_package,
    make_sample_package,
    sample_check,
)
from appliance.cli.exits import EX_USAGE, Failure
from appliance.cli.table import write_table
from appliance.config import Config
from appliance.store import Store

SAMPLE_CHECK = Path("sample") / "check.xml"  # below the data folder


def add_import_parser(sub: Any) -> None:
    p = sub.add_parser("import", help="import a vendor package (UCUpdates.cab or .exe)")
    p.add_argument("package", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_clean_files_parser(sub: Any) -> None:
    sub.add_parser("clean-files", help="delete files that no rule references any more")


def add_make_sample_parser(sub: Any) -> None:
    p = sub.add_parser("make-sample-package", help="write a realistic sample package")
    p.add_argument("out", type=Path, metavar="OUT.cab")
    p.add_argument(
        "--version",
        dest="package_version",
        default=DEFAULT_VERSION,
        help=f"the firmware version every update in it carries (default {DEFAULT_VERSION}); "
        "give each sample its own: another one of a version already imported is refused "
        "(its images differ from the stored ones)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        metavar="BYTES",
        help="the size of each device update's image, before compression (one image per "
        f"update; default {DEFAULT_IMAGE_SIZE:,}): the images together are about 8 times it",
    )
    p.add_argument(
        "--sample-check",
        action="store_true",
        help=f"also write <data_dir>/{SAMPLE_CHECK.as_posix()}, the sample phone's update "
        "check, for the curl line serve prints",
    )


def run_make_sample(args: argparse.Namespace, config: Config) -> int:
    if args.image_size < 1:
        raise Failure("--image-size must be at least 1 byte", EX_USAGE)
    updates = make_sample_package(args.out, args.package_version, args.image_size)
    images = len(updates) * args.image_size
    print(
        f"wrote {args.out}: {len(updates)} device updates, version {args.package_version},"
        f" {images:,} bytes of images ({args.out.stat().st_size:,} bytes compressed)"
    )
    if args.sample_check:
        check = config.data_dir / SAMPLE_CHECK
        check.parent.mkdir(parents=True, exist_ok=True)
        check.write_bytes(sample_check())
        print(f"wrote {check}: an update check as the sample phone sends it")
    return 0


def run_import(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    result = import_package(store, config, args.package, actor)
    if args.json:
        print(json.dumps(import_json(result), indent=2))
        return 0
    print(
        f"{result.package}: {len(result.updates)} device update(s), "
        f"{result.size} bytes, sha256 {result.sha256}"
    )
    write_table(
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
    for path, problem in result.repaired:
        print(f"repaired {path} from the package: it was damaged ({problem})")
    if result.changed:
        print(
            f"imported: {result.written_bytes} bytes written; new versions are pending "
            "until approved"
        )
    elif result.repaired:
        print(f"repaired {len(result.repaired)} stored file(s); nothing else changed")
    else:
        print("nothing changed: this package was imported already (its stored files verified)")
    return 0


def run_clean_files(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    result = clean_files(store, config.store_dir, config.lock_path, actor)
    for name in result.updates:
        print(f"dropped {name}")
    print(f"deleted {len(result.files)} file(s), {result.bytes} bytes")
    if result.blobs:  # PostgreSQL: the pool's copies of files no update lists any more
        print(f"deleted {result.blobs} blob(s) from the store")
    return 0
