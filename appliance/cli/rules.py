"""The update rules from the command line: list, change their state, explain a decision.

    rules [filters] [--state S] [--json]
    approve | reset | restore | remove [ID ...] [filters] [--all-pending] [--all] [--json]
    restore ... --force
    explain --brand B --model M [--mac MAC | --serial S] [--reported-version V] (its run:
            rollouts.py, the rollout decision)

Filters: --device-type, --brand, --model, --revision, --locale, --update-type. A rule
action exits 1 when it changed no rule (each skipped rule says why).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from appliance.catalogue import (
    Action,
    RuleChange,
    apply_action,
    change_json,
    rule_json,
)
from appliance.cli.exits import EX_FAILED
from appliance.cli.table import write_table
from appliance.config import Config
from appliance.model import Rule, RuleState
from appliance.store import RuleFilter, Store

_RULE_HEADERS = (
    "ID",
    "DEVICE",
    "BRAND",
    "MODEL",
    "REV",
    "LOCALE",
    "TYPE",
    "APPROVED",
    "PENDING",
    "RESTORE",
    "STATE",
)

_HELP = {
    Action.APPROVE: "approve the pending version (the approved one becomes the restore one)",
    Action.RESET: "reject the pending version",
    Action.RESTORE: "roll back to the restore version",
    Action.REMOVE: "delete rules (their files stay until clean-files)",
}
_DONE = {Action.APPROVE: "approved", Action.RESET: "reset", Action.RESTORE: "restored"}


def add_rules_parsers(sub: Any) -> None:
    """`rules`, then one command per rule action (`approve`, `reset`, `restore`, `remove`)."""
    p = sub.add_parser("rules", help="list the update rules")
    _add_filters(p)
    p.add_argument("--state", choices=[s.value for s in RuleState])
    p.add_argument("--json", action="store_true")
    for action, text in _HELP.items():
        p = sub.add_parser(action.value, help=text)
        p.add_argument("ids", type=int, nargs="*", metavar="ID", help="rule ids")
        _add_filters(p)
        p.add_argument(
            "--all-pending", action="store_true", help="every rule with a pending version"
        )
        p.add_argument("--all", action="store_true", help="every rule")
        p.add_argument("--json", action="store_true")
        if action is Action.RESTORE:
            p.add_argument(
                "--force",
                action="store_true",
                help="also roll back rules without a restore version: they are left with no "
                "approved version, and phones are offered no update for them",
            )


def add_explain_parser(sub: Any) -> None:
    p = sub.add_parser("explain", help="which update a device would get now, and why")
    p.add_argument("--device-type", default="UCPhone")
    p.add_argument("--brand", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--revision", default="A")
    p.add_argument("--locale", default="ENU")
    p.add_argument("--mac")
    p.add_argument("--serial")
    p.add_argument("--reported-version", metavar="VERSION", help="the version the device runs now")


def _add_filters(p: argparse.ArgumentParser) -> None:
    for name in ("device-type", "brand", "model", "revision", "locale", "update-type"):
        p.add_argument(f"--{name}", metavar=name.split("-")[-1].upper())


def _rule_filter(args: argparse.Namespace) -> RuleFilter:
    """The rules the command line names: ids, filters, --state, --all-pending, --all."""
    return RuleFilter(
        ids=tuple(getattr(args, "ids", ()) or ()),
        device_type=args.device_type,
        brand=args.brand,
        model=args.model,
        revision=args.revision,
        locale=args.locale,
        update_type=args.update_type,
        state=RuleState(args.state) if getattr(args, "state", None) else None,
        pending_only=getattr(args, "all_pending", False),
        everything=getattr(args, "all", False),
    )


def _rule_row(r: Rule) -> list[object]:
    k = r.key
    return [
        r.id,
        k.device_type,
        k.brand,
        k.model,
        k.revision,
        k.locale,
        k.update_type,
        r.approved_version,
        r.pending_version,
        r.restore_version,
        r.state.value,
    ]


def run_rules(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    rules = store.rules(_rule_filter(args))
    if args.json:
        print(json.dumps([rule_json(r) for r in rules], indent=2))
    elif any(r.guid for r in rules):  # the GUID column only where a package named one
        rows = [[*_rule_row(r), r.guid] for r in rules]
        write_table(rows, (*_RULE_HEADERS, "GUID"), sys.stdout)
    elif rules:
        write_table([_rule_row(r) for r in rules], _RULE_HEADERS, sys.stdout)
    else:
        print("no rules" + (" match the filter" if not _rule_filter(args).is_empty() else ""))
    return 0


def rule_action(action: Action) -> Callable[[argparse.Namespace, Config, Store, str], int]:
    """The command of `action`: apply it to the rules named, print one line a rule."""

    def run(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
        force = bool(getattr(args, "force", False))
        downgrade = bool(getattr(args, "allow_downgrade", False))
        flt = _rule_filter(args)
        changes = apply_action(store, action, flt, actor, force=force, allow_downgrade=downgrade)
        if args.json:
            print(json.dumps([change_json(c) for c in changes], indent=2))
        else:
            for c in changes:
                print(_change_line(action, c))
            held = sum(c.needs_force for c in changes)
            if held:
                print(
                    f"{held} rule(s) not restored: with no restore version, phones would be "
                    "offered no update for them; give --force to do that anyway",
                    file=sys.stderr,
                )
            if any(c.needs_downgrade for c in changes):
                print(
                    "to approve a version older than the approved one, give --allow-downgrade"
                    " (restore is the one-step rollback)",
                    file=sys.stderr,
                )
        return 0 if any(c.skipped is None for c in changes) else EX_FAILED

    return run


def _change_line(action: Action, c: RuleChange) -> str:
    """`rule 3 <key>: approved: pending 2 -> -, ..., state approved` (or skipped, removed)."""
    head = f"rule {c.before.id} {c.before.key}"
    if c.skipped is not None:
        return f"{head}: skipped, {c.skipped}"
    if c.after is None:
        return f"{head}: removed"
    b, a = c.before, c.after
    parts = [
        f"{name} {x or '-'} -> {y or '-'}"
        for name, x, y in (
            ("approved", b.approved_version, a.approved_version),
            ("pending", b.pending_version, a.pending_version),
            ("restore", b.restore_version, a.restore_version),
        )
        if x != y
    ]
    forced = " (forced)" if c.forced else ""
    return f"{head}: {_DONE[action]}{forced}: " + ", ".join(parts + [f"state {a.state.value}"])
