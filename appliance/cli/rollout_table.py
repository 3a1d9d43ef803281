"""The rollout commands in the command tables: on the local store (`cli/main.py`) and
through `--server` (`cli/remote.py`). `approve` stays the rule action unless given a
rollout option (`--stages`, `--soak-gate`); `explain` shows the rollout decision."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import urlencode

from appliance.catalogue import UnknownRule
from appliance.cli import rollouts as run
from appliance.cli.exits import Failure
from appliance.cli.rollout_calls import Client, Local, Remote, local, remote
from appliance.cli.rules import _rule_filter
from appliance.config import Config
from appliance.store import Store

LocalCommand = Callable[[argparse.Namespace, Config, Store, str], int]
RemoteCommand = Callable[[Any, argparse.Namespace, TextIO], int]
_COMMANDS = {
    "path": run.run_path,
    "rollout": run.run_rollout,
    "network": run.run_network,
    "external-policy": run.run_external,
    "pin": run.run_pin,
    "offers": run.run_offers,
    "explain": run.run_explain,
}
LOCAL_COMMANDS: dict[str, LocalCommand] = {k: local(c) for k, c in _COMMANDS.items()}
REMOTE_COMMANDS: dict[str, RemoteCommand] = {k: remote(c) for k, c in _COMMANDS.items()}


def local_approve(plain: LocalCommand) -> LocalCommand:
    """`approve`: the rule action `plain`, or with rollout options rule by rule."""

    def approve(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
        if not run.wants_rollout(args):
            return plain(args, config, store, actor)

        def rule_ids(a: argparse.Namespace) -> list[int]:
            flt = _rule_filter(a)
            if flt.is_empty():
                raise Failure("approve: name a rule id or a filter (or --all-pending)")
            rules = store.rules(flt)
            missing = sorted(set(flt.ids) - {r.id for r in rules})
            if missing or not rules:
                raise UnknownRule(
                    f"no rule with id {', '.join(map(str, missing))}"
                    if missing
                    else "no rule matches the filter"
                )
            return [r.id for r in rules]

        return run.run_approve(Local(store, actor), args, sys.stdout, rule_ids)

    return approve


def remote_approve(plain: RemoteCommand) -> RemoteCommand:
    """`approve` through `--server`: as `local_approve`, the rules from `GET /api/rules`."""

    def approve(client: Client, args: argparse.Namespace, out: TextIO) -> int:
        if not run.wants_rollout(args):
            return plain(client, args, out)

        def rule_ids(a: argparse.Namespace) -> list[int]:
            names = ("device_type", "brand", "model", "revision", "locale", "update_type")
            query = {n: getattr(a, n) for n in names if getattr(a, n, None)}
            if not (a.ids or query or a.all_pending or a.all):
                raise Failure("approve: name a rule id or a filter (or --all-pending)")
            rules = client.request("GET", "/api/rules?" + urlencode(query))["rules"]
            known = {r["id"] for r in rules}
            missing = sorted(set(a.ids or ()) - known)
            if missing:
                raise Failure(f"no rule with id {', '.join(map(str, missing))}")
            chosen = [
                r["id"]
                for r in rules
                if (not a.ids or r["id"] in a.ids)
                and (not a.all_pending or r["pending_version"] is not None)
            ]
            if not chosen:
                raise Failure("no rule matches the filter")
            return chosen

        return remote(lambda backend, a, o: run.run_approve(backend, a, o, rule_ids))(
            client, args, out
        )

    return approve


__all__ = ["LOCAL_COMMANDS", "REMOTE_COMMANDS", "Remote", "local_approve", "remote_approve"]
