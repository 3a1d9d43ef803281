"""Many phones at once: a scheduler of rounds, a bounded pool of workers, the summary.

Every phone is a queue entry due at a time (its start, jittered; then, after an update,
the end of its idle period). Due rounds go to at most `concurrency` worker threads; a
phone waiting out its idle period holds no thread, so thousands of phones need only as
many threads as rounds run at once. A phone stops when an answer says `Downloads` 0
(unless it checks again every `interval` seconds, as phones do once a day), when a round
fails, or after `rounds` rounds; the run stops when every phone has, or at the deadline
(rounds already running finish; none start). A stuck phone and a reverting one check
again after their idle period, as a restarted phone does; a silent one never checks
again after an install.

The summary also tells what became of each phone (`fate`): updated, unchanged, stuck,
reverted, silent or failed, and the versions the phones run at the end.
"""

from __future__ import annotations

import heapq
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from appliance.phonesim.identity import PhoneIdentity, PhoneState, Quirk
from appliance.phonesim.phone import STEPS, Round, Settings, run_round


@dataclass(frozen=True)
class Schedule:
    concurrency: int = 50
    jitter: float = 0.0  # each phone starts at a random time in [0, jitter) seconds
    idle: float = 300.0  # seconds between an update and the next check (§10)
    rounds: int = 3  # at most this many checks a phone
    deadline: float = 3600.0  # seconds for the whole run
    seed: int = 0
    interval: float | None = None  # after `Downloads` 0, check again this much later; None: stop


@dataclass
class PhoneRun:
    phone: PhoneIdentity
    state: PhoneState = field(default_factory=PhoneState)
    rounds: list[Round] = field(default_factory=list)
    done: bool = False
    started: str | None = None  # the version it ran when the run began

    @property
    def fate(self) -> str:
        """What became of the phone: updated (it runs a version it installed), unchanged
        (never offered anything, or only what it ran), stuck, reverted, silent (installed
        and never checked again), failed (its last round), unchecked (no round ran)."""
        outcomes = [r.outcome for r in self.rounds]
        if not outcomes:
            return "unchecked"
        if outcomes[-1] == "failed":
            return "failed"
        if "reverted" in outcomes:
            return "reverted"
        if "stuck" in outcomes:
            return "stuck"
        if "updated" in outcomes:
            return "silent" if self.phone.quirk is Quirk.SILENT else "updated"
        return "unchanged"


FATES = ("updated", "unchanged", "stuck", "reverted", "silent", "failed", "unchecked")


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of them at or below it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Stats:
    """Counts and latencies so far; one lock guards it (workers add, the printer reads)."""

    phones: int = 0
    checks: int = 0
    updates: int = 0
    current: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STEPS})
    bytes: int = 0
    files: int = 0
    resumed: int = 0
    quirks: Counter[str] = field(default_factory=Counter)  # rounds stuck, reverted
    fates: Counter[str] = field(default_factory=Counter)  # filled at the end of a run
    versions: Counter[str] = field(default_factory=Counter)  # what the phones run at the end
    finished: int = 0
    running: int = 0
    elapsed: float = 0.0
    over: bool = False  # the run has ended: the progress callback's last call

    def add(self, record: Round) -> None:
        if "check" in record.seconds:
            self.checks += 1
        if record.outcome == "updated":
            self.updates += 1
        elif record.outcome == "current":
            self.current += 1
        elif record.outcome in ("stuck", "reverted"):  # a quirk's round: not a failure
            self.quirks[record.outcome] += 1
        else:
            self.failures[record.cause or "error"] += 1
        for step, spent in record.seconds.items():
            self.seconds[step].append(spent)
        self.bytes += record.bytes
        self.files += record.files
        self.resumed += record.resumed

    def as_json(self) -> dict[str, Any]:
        return {
            "phones": self.phones,
            "checks": self.checks,
            "updates": self.updates,
            "current": self.current,
            "failures": dict(self.failures),
            "bytes": self.bytes,
            "files": self.files,
            "resumed": self.resumed,
            "quirk_rounds": dict(sorted(self.quirks.items())),
            "fates": {f: self.fates[f] for f in FATES if self.fates[f]},
            "versions": dict(sorted(self.versions.items())),
            "elapsed_seconds": round(self.elapsed, 3),
            "latency_ms": {
                step: {
                    "n": len(v),
                    "p50": round(percentile(v, 50) * 1000, 3),
                    "p99": round(percentile(v, 99) * 1000, 3),
                    "max": round(max(v, default=0.0) * 1000, 3),
                }
                for step, v in self.seconds.items()
                if v
            },
        }


def summary_text(stats: Stats) -> str:
    data = stats.as_json()
    failed = sum(stats.failures.values())
    lines = [
        f"phones {stats.phones}, checks {stats.checks}, updates {stats.updates}, "
        f"up to date {stats.current}, failed {failed}, in {stats.elapsed:.1f} s",
        "failures: " + (", ".join(f"{c} {n}" for c, n in sorted(stats.failures.items())) or "none"),
        f"downloaded {stats.bytes} bytes in {stats.files} files ({stats.resumed} resumed)",
        "phones: " + (", ".join(f"{f} {n}" for f, n in data["fates"].items()) or "none"),
        "versions: " + (", ".join(f"{v} {n}" for v, n in data["versions"].items()) or "none"),
        f"{'latency ms':<12}{'n':>8}{'p50':>10}{'p99':>10}{'max':>10}",
    ]
    for step, row in data["latency_ms"].items():
        lines.append(
            f"  {step:<10}{row['n']:>8}{row['p50']:>10.1f}{row['p99']:>10.1f}{row['max']:>10.1f}"
        )
    return "\n".join(lines) + "\n"


Progress = Callable[[Stats], None]


def run_fleet(
    phones: list[PhoneIdentity],
    settings: Settings,
    schedule: Schedule,
    progress: Progress | None = None,
    progress_every: float = 0.5,
    start_version: str | None = None,
    round_runner: Callable[[PhoneIdentity, PhoneState, Settings], Round] = run_round,
    states: list[PhoneState] | None = None,
) -> tuple[list[PhoneRun], Stats]:
    """Run every phone's rounds as `schedule` says; each phone's runs and the totals.

    `states` (one a phone) carries what the phones run from an earlier run: the same
    objects are updated, so a fleet can be run again after the appliance changed."""
    rng = random.Random(schedule.seed)  # noqa: S311 - start-time jitter
    if states is not None and len(states) != len(phones):
        raise ValueError(f"{len(states)} states for {len(phones)} phones")
    runs = [PhoneRun(p) if states is None else PhoneRun(p, states[i]) for i, p in enumerate(phones)]
    for run in runs:
        if start_version is not None and states is None:
            run.state.version = start_version
        run.started = run.state.version
    stats = Stats(phones=len(phones))
    start = time.monotonic()
    deadline = start + schedule.deadline
    due: list[tuple[float, int]] = [
        (start + (rng.uniform(0, schedule.jitter) if schedule.jitter > 0 else 0.0), i)
        for i in range(len(runs))
    ]
    heapq.heapify(due)
    changed = threading.Condition()

    def one_round(i: int) -> None:
        run = runs[i]
        try:
            record = round_runner(run.phone, run.state, settings)
        except Exception as e:  # a bug must not hang the run: count it
            record = Round(cause="error", detail=f"{type(e).__name__}: {e}")
        with changed:
            run.rounds.append(record)
            stats.add(record)
            stats.running -= 1
            wait = _next_check(run.phone, record, schedule)
            if wait is not None and len(run.rounds) < schedule.rounds:
                heapq.heappush(due, (time.monotonic() + wait, i))
            else:
                run.done = True
                stats.finished += 1
            changed.notify_all()

    last_progress = 0.0
    with ThreadPoolExecutor(max_workers=max(1, schedule.concurrency)) as pool, changed:
        while stats.finished < len(runs):
            now = time.monotonic()
            if now >= deadline:
                break
            while due and due[0][0] <= now and stats.running < schedule.concurrency:
                _, i = heapq.heappop(due)
                stats.running += 1
                pool.submit(one_round, i)
            if progress is not None and now - last_progress >= progress_every:
                stats.elapsed = now - start
                progress(stats)
                last_progress = now
            wait = deadline - now
            if due and stats.running < schedule.concurrency:
                wait = min(wait, max(due[0][0] - now, 0.0))
            if progress is not None:
                wait = min(wait, progress_every)
            changed.wait(max(wait, 0.001))
        while stats.running:  # the deadline passed: let running rounds end
            changed.wait(1.0)
    stats.elapsed = time.monotonic() - start
    stats.fates = Counter(r.fate for r in runs)
    stats.versions = Counter(r.state.version for r in runs)
    stats.over = True
    if progress is not None:
        progress(stats)
    return runs, stats


def _next_check(phone: PhoneIdentity, record: Round, schedule: Schedule) -> float | None:
    """Seconds until the phone checks again after `record`; None: it does not."""
    if record.outcome == "updated":
        return None if phone.quirk is Quirk.SILENT else schedule.idle
    if record.outcome in ("stuck", "reverted"):  # a restart, as after an install
        return schedule.idle
    if record.outcome == "current":
        return schedule.interval
    return None


def runs_json(runs: list[PhoneRun]) -> list[dict[str, Any]]:
    """Each phone: who it is, what it runs now, and each round."""
    return [
        {
            "mac": r.phone.mac,
            "serial": r.phone.serial,
            "vendor": r.phone.vendor,
            "model": r.phone.model,
            "revision": r.phone.revision,
            "locale": r.phone.locale,
            "zone": "external" if r.phone.external else "internal",
            "quirk": str(r.phone.quirk) or None,
            "started": r.started,
            "version": r.state.version,
            "fate": r.fate,
            "last_update": r.state.last_update.isoformat() if r.state.last_update else None,
            "finished": r.done,
            "rounds": [
                {
                    "outcome": x.outcome,
                    "cause": x.cause,
                    "detail": x.detail,
                    "reported": x.reported,
                    "offered": x.offered,
                    "auth": x.auth,
                    "seconds": {k: round(v, 6) for k, v in x.seconds.items()},
                    "bytes": x.bytes,
                    "files": x.files,
                    "resumed": x.resumed,
                }
                for x in r.rounds
            ],
        }
        for r in runs
    ]
