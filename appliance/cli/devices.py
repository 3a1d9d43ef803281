"""`ucupdates test-device add|list|remove`: the devices that get pending updates first."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from appliance.catalogue import add_test_device, parse_identifier, remove_test_device
from appliance.cli.table import write_table
from appliance.config import Config
from appliance.store import Store


def add_test_device_parser(sub: Any) -> None:
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


def run_test_device(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
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
            write_table(
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
