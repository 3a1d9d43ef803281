"""Capture mode's captures from the command line (docs/phones.md, "Capture mode").

capture list [--json]         every capture, oldest first
capture show ID [--json]      one capture: the request as sent, TLS, the answer
capture export FILE           one JSON file with them all, the version and the settings
                              (FILE `-`: standard output), to attach to a bug report
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.cli.exits import Failure
from appliance.cli.table import write_table
from appliance.config import Config


def add_capture_parser(sub: Any) -> None:
    p = sub.add_parser("capture", help="requests kept by capture mode: list, show, export")
    actions = p.add_subparsers(dest="capture_action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every capture, oldest first")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one capture: request, TLS, answer")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true")
    export = actions.add_parser("export", help="one file with every capture, for a bug report")
    export.add_argument("file", metavar="FILE", help="where to write (- for standard output)")


def run_capture(args: argparse.Namespace, config: Config) -> int:
    from appliance.ops import (
        CaptureError,
        CaptureFolder,
        capture_json,
        capture_text,
        export_bytes,
        summary_json,
    )

    folder = CaptureFolder.of(config)
    if args.capture_action == "list":
        summaries = [summary_json(c) for c in folder.captures()]
        if args.json:
            print(json.dumps(summaries, indent=2, ensure_ascii=False))
        elif summaries:
            headers = ("ID", "AT", "CLIENT", "ZONE", "MODEL", "TLS", "STATUS", "REASON")
            keys = ("id", "captured_at", "client", "zone", "model", "tls", "status", "reason")
            write_table([[s[k] for k in keys] for s in summaries], headers, sys.stdout)
        else:
            state = "on" if config.service.capture else "off (service.capture)"
            print(f"no captures in {folder.folder}; capture mode is {state}")
        return 0
    if args.capture_action == "show":
        try:
            capture = folder.read(args.id)
        except CaptureError as e:
            raise Failure(str(e)) from e
        if args.json:
            print(json.dumps(capture_json(capture), indent=2, ensure_ascii=False))
        else:
            sys.stdout.write(capture_text(capture))
        return 0
    data = export_bytes(folder, config, __version__, datetime.now(UTC))
    if args.file == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    target = Path(args.file)
    temporary = target.with_name(f".{target.name}.part")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, target)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        raise Failure(f"cannot write {target}: {e.strerror}") from e
    count = json.loads(data)["count"]
    print(f"{count} capture(s) written to {target} ({len(data)} bytes)")
    return 0
