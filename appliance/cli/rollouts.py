"""The rollout commands: upgrade paths, staged approvals, download windows, pins, offers.

    path add|remove|list            --brand B --model M [--revision R] --below X --offer Y
    rollout list|show|advance|pause|resume|remove|stage RULE
    approve ... --stages 5,25,100 [--soak-hours H] [--no-auto-pause] [--allow-downgrade]
            [--soak-gate N:HOURS [--override-soak REASON]]
    network add|remove|list         CIDR --zone Europe/Berlin --window 22:00-05:00 ...
    external-policy set|clear|show
    pin add|remove|list             --mac|--serial ID (--hold VERSION | --exclude) --reason
    offers [--rule N] [--device MAC] [--outcome stuck] [--json]
    explain ... [--address A] [--external] [--at TIME] [--json]

Each command builds the API's JSON body and runs it through a backend (rollout_calls.py):
this data folder, or `--server URL`. Listings take `--json` (the API's answer as it is).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, TextIO

from appliance.cli.exits import EX_FAILED, Failure
from appliance.cli.rollout_calls import Answer, Backend
from appliance.cli.rollout_show import (
    print_explain,
    print_external,
    print_networks,
    print_offers,
    print_paths,
    print_pins,
    print_rollout,
    print_rollouts,
)

RuleIds = Callable[[argparse.Namespace], list[int]]


def add_rollout_parsers(sub: Any) -> None:
    """The rollout command groups, and their options on `approve` and `explain`."""
    group = _group(sub, "path", "upgrade paths: a model below version X is first offered Y")
    p = group.add_parser("add", help="add a step (or replace the one with its threshold)")
    _model(p)
    p.add_argument("--offer", required=True, metavar="VERSION", help="offered first")
    p = group.add_parser("remove", help="remove a step")
    _model(p)
    _listing(group, "list the steps")

    group = _group(sub, "rollout", "staged approvals: list, show, advance, pause, resume")
    _listing(group, "staged approvals, their stage and health")
    p = group.add_parser("show", help="one staged approval and what its devices wait for")
    _rule(p, json_flag=True)
    for name, text in (
        ("advance", "the next stage, by hand (refused while paused)"),
        ("resume", "resume a paused stage (its soak time starts again)"),
        ("remove", "drop the staging: the approved version goes to every device"),
    ):
        _rule(group.add_parser(name, help=text))
    p = group.add_parser("pause", help="pause: no device is newly offered the version")
    _rule(p)
    p.add_argument("--reason", required=True, help="why, for the event log")
    p = group.add_parser("stage", help="stage the approved version as it is")
    _rule(p, json_flag=True)
    _stage_options(p, required=True)

    group = _group(sub, "network", "download windows and caps per internal network")
    p = group.add_parser("add", help="set a network's windows and caps (add or replace)")
    p.add_argument("network", metavar="CIDR")
    _window_options(p)
    p = group.add_parser("remove", help="remove a network's policy")
    p.add_argument("network", metavar="CIDR")
    _listing(group, "the networks")

    group = _group(sub, "external-policy", "download windows and caps of external phones")
    _window_options(group.add_parser("set", help="set the external zone's windows and caps"))
    group.add_parser("clear", help="clear them: external phones are not restricted")
    _listing(group, "the external zone's policy", "show")

    group = _group(sub, "pin", "hold a device on a version, or exclude it from updates")
    p = group.add_parser("add", help="pin a device, with a reason")
    _device(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--hold", metavar="VERSION", help="offer this version and no other")
    what.add_argument("--exclude", action="store_true", help="offer nothing")
    p.add_argument("--reason", required=True)
    p = group.add_parser("remove", help="remove a device's pin")
    _device(p)
    _listing(group, "the pins")

    p = sub.add_parser("offers", help="what each device was offered, and its outcome")
    p.add_argument("--rule", type=int, metavar="ID")
    p.add_argument("--device", metavar="MAC|SERIAL")
    p.add_argument("--outcome", choices=("pending", "updated", "stuck", "reverted", "silent"))
    p.add_argument("--version")
    p.add_argument("--limit", type=int, metavar="N", help="at most N (default 1000)")
    p.add_argument("--json", action="store_true")

    approve = sub.choices["approve"]
    _stage_options(approve, required=False)
    approve.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="also approve a version older than the approved one",
    )
    approve.add_argument(
        "--soak-gate",
        metavar="N:HOURS",
        help="refuse unless N test devices of the model ran the pending version for HOURS",
    )
    approve.add_argument("--override-soak", metavar="REASON", help="approve despite the soak gate")

    explain = sub.choices["explain"]
    explain.add_argument("--address", help="the client address of its checks (its network)")
    explain.add_argument("--external", action="store_true", help="it checks from outside")
    explain.add_argument("--at", metavar="TIME", help="at this time (2026-01-10T21:00:00Z)")
    explain.add_argument("--json", action="store_true")


def _group(sub: Any, name: str, text: str) -> Any:
    p = sub.add_parser(name, help=text)
    return p.add_subparsers(dest="action", required=True, metavar="ACTION")


def _listing(group: Any, text: str, name: str = "list") -> None:
    group.add_parser(name, help=text).add_argument("--json", action="store_true")


def _rule(p: argparse.ArgumentParser, json_flag: bool = False) -> None:
    p.add_argument("rule_id", type=int, metavar="RULE", help="the rule's id")
    if json_flag:
        p.add_argument("--json", action="store_true")


def _model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device-type", default="UCPhone")
    p.add_argument("--brand", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--revision", help="one revision only (default: every revision)")
    p.add_argument("--update-type", help="one update type only (default: every one)")
    p.add_argument("--below", required=True, metavar="VERSION", help="devices below this")


def _device(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--mac")
    which.add_argument("--serial")
    p.add_argument("--update-type", help="one update type only (default: every one)")


def _window_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zone", metavar="TIME_ZONE", help="of the windows, e.g. Europe/Berlin")
    p.add_argument(
        "--window", action="append", default=[], metavar="HH:MM-HH:MM", help="repeatable"
    )
    p.add_argument("--max-downloads", type=int, metavar="N", help="concurrent downloads")
    p.add_argument("--max-bytes-per-second", type=int, metavar="B", help="for all its phones")


def _stage_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "--stages", required=required, metavar="P,P,...", help="rising percentages: 5,25,100"
    )
    p.add_argument("--soak-hours", type=float, metavar="H", help="advance each stage after H hours")
    p.add_argument("--no-auto-pause", action="store_true", help="never pause on its own")
    p.add_argument("--pause-percent", type=float, metavar="P", help="pause at P %% failing (5)")
    p.add_argument("--pause-min", type=int, metavar="N", help="and at least N devices (3)")


# -- the commands ----------------------------------------------------------------------------


def _print_json(answer: Any, out: TextIO) -> None:
    print(json.dumps(answer, indent=2), file=out)


def run_path(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    if args.action == "list":
        answer = backend.call("paths")
        _print_json(answer["paths"], out) if args.json else print_paths(answer["paths"], out)
        return 0
    body = {
        "device_type": args.device_type,
        "brand": args.brand,
        "model": args.model,
        "revision": args.revision,
        "update_type": args.update_type,
        "below": args.below,
    }
    if args.action == "add":
        answer = backend.call("add_path", {**body, "offer": args.offer})
        verb = "replaced" if answer["replaced"] else "added"
        print_paths([answer["path"]], out, f"{verb}: ")
    else:
        print_paths([backend.call("remove_path", body)["removed"]], out, "removed: ")
    return 0


def stage_body(args: argparse.Namespace) -> dict[str, Any]:
    """The staging options as the API's body."""
    body: dict[str, Any] = {}
    if args.stages:
        try:
            body["stages"] = [float(s) for s in args.stages.split(",")]
        except ValueError:
            stages = args.stages
            raise Failure(
                f"--stages takes rising percentages like 5,25,100, not {stages!r}"
            ) from None
    body["soak_hours"] = args.soak_hours
    body["auto_pause"] = not args.no_auto_pause
    if args.pause_percent is not None:
        body["pause_percent"] = args.pause_percent
    if args.pause_min is not None:
        body["pause_min"] = args.pause_min
    return body


def run_rollout(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    if args.action == "list":
        rollouts = backend.call("rollouts")["rollouts"]
        _print_json(rollouts, out) if args.json else print_rollouts(rollouts, out)
        return 0
    rule = str(args.rule_id)
    if args.action == "show":
        answer = backend.call("rollout", rule_id=rule)
        _print_json(answer, out) if args.json else print_rollout(answer, out)
    elif args.action == "stage":
        body = {"rule_id": args.rule_id, "approve": False, **stage_body(args)}
        answer = backend.call("approve", body)["rollout"]
        _print_json(answer, out) if args.json else print_rollout(answer, out)
    elif args.action == "remove":
        removed = backend.call("drop", rule_id=rule)["removed"]
        print(f"rule {rule} {removed['rule']}: staging of {removed['version']} removed", file=out)
    else:
        body = {"reason": args.reason} if args.action == "pause" else {}
        print_rollout(backend.call("move", body, rule_id=rule, move=args.action), out)
    return 0


def wants_rollout(args: argparse.Namespace) -> bool:
    """Whether `approve` was given a rollout option (else it is the plain rule action)."""
    return bool(args.stages or args.soak_gate or args.override_soak)


def run_approve(backend: Backend, args: argparse.Namespace, out: TextIO, rule_ids: RuleIds) -> int:
    """`approve` with stages or the soak gate: rule by rule through the rollout operation
    (each in its own transaction; the first refused rule ends the command)."""
    if args.override_soak and not args.soak_gate:
        raise Failure("--override-soak overrides --soak-gate N:HOURS: give both")
    body: dict[str, Any] = {"allow_downgrade": args.allow_downgrade, **stage_body(args)}
    if args.soak_gate:
        devices, _, hours = args.soak_gate.partition(":")
        try:
            body["soak_gate"] = {"devices": int(devices), "hours": float(hours)}
        except ValueError:
            raise Failure(f"--soak-gate takes N:HOURS (2:24), not {args.soak_gate!r}") from None
        body["override_soak"] = args.override_soak
    answers: list[Answer] = []
    for rule_id in rule_ids(args):
        answer = backend.call("approve", {"rule_id": rule_id, **body})
        answers.append(answer)
        if not args.json:
            _approved_line(answer, out)
    if args.json:
        _print_json(answers, out)
    return 0 if answers else EX_FAILED


def _approved_line(answer: Answer, out: TextIO) -> None:
    change, rollout = answer["change"], answer["rollout"]
    before, after = change["before"], change["after"]
    head = f"rule {change['rule_id']} " + "/".join(
        before[f] for f in ("device_type", "brand", "model", "revision", "locale", "update_type")
    )
    text = f"{head}: approved {before['approved_version'] or '-'} -> {after['approved_version']}"
    if change.get("downgrade"):
        text += " (a downgrade)"
    if rollout is not None:
        stages = "/".join(f"{s:g}" for s in rollout["stages"])
        text += f", staged {stages} %: stage {rollout['stage']} ({rollout['share']:g} %)"
    print(text, file=out)
    if answer["soak_override"]:
        print(f"  soak gate overridden: {'; '.join(answer['soak_override'])}", file=out)


def _window_body(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "time_zone": args.zone,
        "windows": list(args.window),
        "max_downloads": args.max_downloads,
        "max_bytes_per_second": args.max_bytes_per_second,
    }


def run_network(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    if args.action == "list":
        networks = backend.call("networks")["networks"]
        _print_json(networks, out) if args.json else print_networks(networks, out)
    elif args.action == "add":
        answer = backend.call("set_network", {"network": args.network, **_window_body(args)})
        verb = "replaced" if answer["replaced"] else "added"
        print_networks([answer["network"]], out, f"{verb}: ")
    else:
        removed = backend.call("drop_network", network=args.network)["removed"]
        print_networks([removed], out, "removed: ")
    return 0


def run_external(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    if args.action == "show":
        external = backend.call("external")["external"]
        _print_json(external, out) if args.json else print_external(external, out)
    elif args.action == "set":
        print_external(backend.call("set_external", _window_body(args))["external"], out)
    else:
        backend.call("clear_external")
        print("external zone: policy cleared, external phones are not restricted", file=out)
    return 0


def run_pin(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    if args.action == "list":
        pins = backend.call("pins")["pins"]
        _print_json(pins, out) if args.json else print_pins(pins, out)
        return 0
    body = {"mac": args.mac, "serial": args.serial, "update_type": args.update_type}
    if args.action == "add":
        action = "exclude" if args.exclude else "hold"
        body.update(action=action, version=args.hold, reason=args.reason)
        answer = backend.call("add_pin", body)
        print_pins([answer["pin"]], out, "replaced: " if answer["replaced"] else "pinned: ")
    else:
        print_pins([backend.call("remove_pin", body)["removed"]], out, "removed: ")
    return 0


def run_offers(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    query = {
        "rule_id": args.rule,
        "device": args.device,
        "outcome": args.outcome,
        "version": args.version,
        "limit": args.limit,
    }
    offers = backend.call("offers", {k: v for k, v in query.items() if v is not None})["offers"]
    _print_json(offers, out) if args.json else print_offers(offers, out)
    return 0


def run_explain(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    query = {
        "device_type": args.device_type,
        "brand": args.brand,
        "model": args.model,
        "revision": args.revision,
        "locale": args.locale,
        "mac": args.mac,
        "serial": args.serial,
        "reported_version": args.reported_version,
        "address": args.address,
        "zone": "external" if args.external else None,
        "at": args.at,
    }
    answer = backend.call("explain", {k: v for k, v in query.items() if v is not None})
    _print_json(answer, out) if args.json else print_explain(answer, out)
    return 0
