"""A writer to kill, and what a killed one must leave whole (the failover tests').

`python -m appliance.testing.churn DSN DATA_DIR ACKS [--pause-at import|approve]` imports
a sample package of a new version (small images), then approves each pending rule in a
transaction of its own (a rule with an odd id to the first of staged shares, with its
staging), over and over, against the PostgreSQL store `DSN`. After each
call returns it appends a line to ACKS (`import <version>`, `approve <rule> <version>`):
what the store told the writer it committed. `--pause-at` stops inside the transaction
(`import`: after the rows, before COMMIT; `approve`: after the rule's write, before its
staging and event), says `paused <where>` in ACKS, and waits there to be killed.

`half_applied(store, store_dir)` lists what a crash must never leave: an update without
both its files, a file whose bytes are not on disk with their hash (or, on PostgreSQL, not
in the blobs), a rule naming a version without its update, a rule whose versions and state
are not what its event log replays to, a staged approval without its staging of that
version (or a staging without its approval), an import event naming an update that is not
there, and a catalogue version that is not one move per committed change.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from appliance.catalogue import (
    Action,
    apply_action,
    approve_staged,
    file_sha256,
    import_package,
    make_sample_package,
    rule_summary,
)
from appliance.config import Config, load_config
from appliance.model import FileRole, Rule, StageSchedule
from appliance.store import RuleFilter, Store

FIRST = 5000  # the first version's last part: 4.0.7577.5000
IMAGE_SIZE = 4096  # small: the database's work is what is tested, not the extraction
CHANGES = ("import", "approve")  # the events of a transaction that moves the version once
PAUSE_SECONDS = 300  # how long a paused writer waits to be killed
STAGES = (25.0, 100.0)
SUMMARY = ("approved", "pending", "restore", "state")  # what rule_summary records


def version(n: int) -> str:
    return f"4.0.7577.{FIRST + n}"


class _PausingStore(Store):
    """A store that stops, inside the approval's transaction, after the rule's write."""

    pause_approval = False

    def save_rule(self, rule: Rule) -> Rule:
        saved = super().save_rule(rule)
        if self.pause_approval and self._in_transaction:
            _pause(f"approve {saved.id} {saved.approved_version}")
        return saved


def _pause(where: str) -> None:
    _ACKS.ack(f"paused {where}")
    time.sleep(PAUSE_SECONDS)
    raise SystemExit(f"not killed within {PAUSE_SECONDS} s")


class _Acks:
    path: Path | None = None

    def ack(self, line: str) -> None:
        assert self.path is not None
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


_ACKS = _Acks()


def churn(store: Store, config: Config, pause_at: str | None = None) -> None:
    """Import and approve until the store fails (the server killed): never returns."""
    work = config.data_dir / "churn"
    work.mkdir(parents=True, exist_ok=True)
    while True:
        n = len({v for _, v in store.updates()})
        cab = work / f"UCUpdates-{version(n)}.cab"
        make_sample_package(cab, version(n), image_size=IMAGE_SIZE)

        def checkpoint(at: str, importing: str = version(n)) -> None:
            if pause_at == "import" and at == "committing":  # inside the transaction
                _pause(f"import {importing}")

        import_package(store, config, cab, "churn", checkpoint=checkpoint)
        _ACKS.ack(f"import {version(n)}")
        cab.unlink()
        if pause_at == "approve" and isinstance(store, _PausingStore):
            store.pause_approval = True
        for rule in store.rules(RuleFilter(pending_only=True)):
            if rule.id % 2:
                approve_staged(store, rule.id, STAGES, StageSchedule(), "churn")
            else:
                apply_action(store, Action.APPROVE, RuleFilter(ids=(rule.id,)), "churn")
            _ACKS.ack(f"approve {rule.id} {rule.pending_version}")


def half_applied(store: Store, store_dir: Path, base: int) -> list[str]:
    """What is not whole in `store` (empty: nothing), whose catalogue version was `base`
    before the churn began; see the module's docstring."""
    problems: list[str] = []
    updates = {(k.folded(), v) for k, v in store.updates()}
    named = {f"{k} {v}" for k, v in store.updates()}
    for key, ver in store.updates():
        files = store.update_files(key, ver)
        if sorted(f.role for f in files) != [FileRole.IMAGE, FileRole.SIGNATURE]:
            problems.append(f"update {key} {ver}: files {[f.path for f in files]}")
        for f in files:
            path = store_dir / f.path
            if not path.is_file() or file_sha256(path) != f.sha256:
                problems.append(f"{f.path}: not on disk with its hash")
            if store.keeps_blobs and store.blob_size(f.sha256) != f.size:
                problems.append(f"{f.path}: no blob of its size")
    replayed: dict[int, dict[str, Any]] = {}
    events = sorted(store.events(limit=1_000_000), key=lambda e: e.id)
    changes = stage_sets = 0
    staged: set[int] = set()
    for e in events:
        changes += e.action in CHANGES
        stage_sets += e.action == "rollout.stage.set"
        if e.action == "approve" and "staged" in e.after:
            staged.add(int(e.target.split()[1]))
        if e.action == "import":
            for line in e.after["updates"]:
                text, _ = line.rsplit(": ", 1)
                problems += [] if text in named else [f"import event names {text}"]
        if e.target.startswith("rule ") and e.action in ("rule.create", "rule.pending", "approve"):
            replayed[int(e.target.split()[1])] = {k: e.after[k] for k in SUMMARY}
    rules = store.rules()
    for rule in rules:
        for named_version in (rule.approved_version, rule.pending_version, rule.restore_version):
            if named_version is not None and (rule.key.folded(), named_version) not in updates:
                problems.append(f"rule {rule.id} names {named_version} without its update")
        if replayed.get(rule.id) != rule_summary(rule):
            said = replayed.get(rule.id)
            problems.append(f"rule {rule.id}: {rule_summary(rule)}, its events say {said}")
    stagings = {s.rule_id: s.approval.version for s in store.stagings()}
    approved = {r.id: r.approved_version for r in rules if r.id in staged}
    staged_approvals = sum(e.action == "approve" and "staged" in e.after for e in events)
    if stagings != approved or stage_sets != staged_approvals:
        problems.append(f"stagings {stagings}, staged approvals {approved}, {stage_sets} set")
    if sorted(replayed) != sorted(r.id for r in rules):
        problems.append(f"events of rules {sorted(replayed)}, rules {[r.id for r in rules]}")
    moved = store.data_version() - base
    if moved != changes:
        problems.append(f"catalogue version moved {moved} times for {changes} changes")
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="churn")
    parser.add_argument("dsn")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("acks", type=Path)
    parser.add_argument("--pause-at", choices=("import", "approve"))
    args = parser.parse_args(argv)
    _ACKS.path = args.acks
    config = load_config(None, args.data_dir)
    store = _PausingStore.open_postgresql(args.dsn)
    _ACKS.ack("ready")
    churn(store, config, args.pause_at)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
