"""`ucupdates drift [--unseen-days N] [--json | --csv]`: the drift and compliance report.

Per model, revision, locale and update type: the approved version, how many devices run
it, are behind or ahead of it, cannot be compared, are stuck, reverted or silent on what
they were offered, or were not seen for N days (docs/rollouts.md, Drift and compliance).
With `--server URL` it is read from the appliance's API (`GET /api/reports/drift`).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlencode

from appliance.catalogue import COUNT_COLUMNS, drift_csv, read_drift
from appliance.cli.table import write_table
from appliance.config import Config
from appliance.store import Store

HEADERS = ("MODEL", "REV", "LOCALE", "TYPE", "APPROVED", *(c.upper() for c in COUNT_COLUMNS))


def add_drift_parser(sub: Any) -> None:
    p = sub.add_parser(
        "drift",
        help="drift and compliance: devices on, behind or ahead of the approved versions",
    )
    p.add_argument(
        "--unseen-days",
        type=_days,
        metavar="N",
        help="no check for N days counts as unseen (default: rollouts.drift_unseen_days)",
    )
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="the report as JSON")
    shape.add_argument("--csv", action="store_true", help="the rows as CSV with a header row")


def run_drift(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    days = args.unseen_days or config.rollouts.drift_unseen_days
    report = read_drift(store, datetime.now(UTC), days)
    if args.csv:
        sys.stdout.write(drift_csv(report))
    else:
        write_report(report.as_json(), args.json, sys.stdout)
    return 0


def remote_drift(client: Any, args: argparse.Namespace, out: TextIO) -> int:
    """The report from the appliance `client` (cli.remote's RemoteClient) drives."""
    query = "?" + urlencode({"unseen_days": args.unseen_days}) if args.unseen_days else ""
    if args.csv:
        body = client.request("GET", "/api/reports/drift.csv" + query)
        out.write(body.decode("utf-8") if isinstance(body, bytes) else str(body))
    else:
        write_report(client.request("GET", "/api/reports/drift" + query), args.json, out)
    return 0


def write_report(report: dict[str, Any], as_json: bool, out: TextIO) -> None:
    """The report's JSON form as JSON, or as a table with a totals line."""
    if as_json:
        print(json.dumps(report, indent=2), file=out)
        return
    rows = report["rows"]
    if not rows:
        print("no devices seen yet", file=out)
        return
    write_table(
        [
            [
                f"{r['brand']} {r['model']}",
                r["revision"],
                r["locale"],
                r["update_type"] or "(no rule)",
                r["approved_version"],
                *(r[c] for c in COUNT_COLUMNS),
            ]
            for r in rows
        ],
        HEADERS,
        out,
    )
    t = report["totals"]
    print(
        f"totals (a device counts once per update type): {t['devices']} devices,"
        f" {t['current']} current, {t['behind']} behind,"
        f" {t['ahead']} ahead, {t['unknown']} unknown, {t['stuck']} stuck,"
        f" {t['reverted']} reverted, {t['silent']} silent, {t['unseen']} unseen for"
        f" {report['unseen_days']} days",
        file=out,
    )


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if not 1 <= days <= 3650:
        raise argparse.ArgumentTypeError(f"unseen days go from 1 to 3650, not {days}")
    return days
