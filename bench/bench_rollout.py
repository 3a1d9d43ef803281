"""`make bench-rollout`: a staged approval under a fleet of phones, and what a policy costs.

1. **A staged rollout** (`staged`). --phones phones (1,500) run CU7 against one `ucupdates
   serve`; CU8 is then approved to the CX600 ENU rule in stages 5 % -> 25 % -> 100 %,
   advanced by hand between passes (no soak: the timer only watches for the auto-pause).
   --revert-share of the CX600 phones (1 %) revert after installing (phone-sim's quirk);
   --path-share of the fleet (20 %) are CX700 phones on OCS R2 firmware that walk the
   Tanjay upgrade path (3.5 -> 4.0.7577.4100 -> CU7). In each stage every phone checks
   (plain HTTP, phone-sim's engine, in this process on the client CPU), installs what it
   is offered and checks again after --idle seconds, so serve confirms the install (at
   most three checks a pass: a reverting phone's third reports the old version). A phone
   that reverted sits out the later passes, so that serve's record (its latest report)
   and phone-sim's count name the same thing.
   Reported per stage: phones offered CU8, updated, reverted (as serve recorded them:
   the store's offer records, what `ucupdates offers --json` prints), whether the stage
   paused itself, check latency p50/p99 and serve's CPU per check; and phone-sim's own
   count of the same phones, which must agree.
2. **The cost of a policy** (`cost`). serve with no rollout policy (A) against serve with
   one (B: a network window that is open, a pin for another device, the rule staged at
   100 %), A B A B (--pairs), each a fresh serve on the same data folder; keep-alive
   checks by wrk (the body of bench_checks.py's check) for --seconds. The ratio of checks/s
   and of CPU per check, median and range: ucupdates against itself.

Writes bench/out/rollout.json.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

import harness as h

from appliance import catalogue
from appliance.catalogue import Action, apply_action, import_package, make_sample_package
from appliance.catalogue.sample import sample_check
from appliance.config import load_config
from appliance.model import (
    AutoPause,
    DownloadWindows,
    NetworkPolicy,
    Pin,
    PinAction,
    StageSchedule,
    parse_network,
)
from appliance.phonesim import (
    Net,
    PhoneIdentity,
    PhoneState,
    Quirk,
    Schedule,
    Settings,
    mac_of,
    percentile,
    phone_tls,
    run_fleet,
    serial_of,
)
from appliance.store import RuleFilter, Store

OCS_R2, TANJAY_STEP = "3.5.6907.37", "4.0.7577.4100"
CU7, CU8 = "4.0.7577.4366", "4.0.7577.4387"
STAGES = (5.0, 25.0, 100.0)
IMAGE_SIZE = 4000


def prepare(work: Path, paths: bool = True) -> tuple[Path, Any]:
    """The data folder: Tanjay steps, CU7 approved everywhere, CU8 pending; the config.
    With `paths`, the Tanjay upgrade path too."""
    config_file = h.prepare_appliance(work, None, "[rollouts]\ntimer_seconds = 0.5\n")
    config = load_config(config_file)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(config.db_path)
    try:
        for version in (OCS_R2, TANJAY_STEP, CU7, CU8):
            package = work / f"{version}.cab"
            make_sample_package(package, version=version, image_size=IMAGE_SIZE)
            import_package(store, config, package, "bench")
            if version == CU7:
                apply_action(store, Action.APPROVE, RuleFilter(everything=True), "bench")
        for step in catalogue.TANJAY_STEPS if paths else ():
            catalogue.set_upgrade_step(store, step, "bench")
    finally:
        store.close()
    return config_file, config


def rule_id(store: Store, model: str) -> int:
    (rule,) = store.rules(RuleFilter(model=model, locale="ENU"))
    return rule.id


def make_fleet(count: int, path_share: float, revert_share: float) -> list[PhoneIdentity]:
    """CX600 phones (a seeded --revert-share of them reverting) and CX700 path walkers."""
    walkers = round(count * path_share)
    reverting = set(range(0, count - walkers, max(1, round(1 / revert_share))) if revert_share
                    else ())  # fmt: skip
    phones = []
    for i in range(count):
        model = "CX700" if i >= count - walkers else "CX600"
        quirk = Quirk.REVERT if i in reverting else Quirk.NONE
        phones.append(PhoneIdentity(
            "Polycom", model, "A", "ENU", mac_of(10_000 + i), serial_of(10_000 + i),
            source=h_address(i), quirk=quirk,
        ))  # fmt: skip
    return phones


def h_address(i: int) -> str:
    return f"127.{20 + i // 62500}.{i // 250 % 250}.{1 + i % 250}"


def rank(outcomes: list[str]) -> str:
    """What a phone's rounds so far say happened to it (phone-sim's fate order)."""
    for fate in ("reverted", "stuck", "updated"):
        if fate in outcomes:
            return fate
    return "unchanged"


def staged(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    config_file, config = prepare(work)
    phones = make_fleet(args.phones, args.path_share, args.revert_share)
    states = [PhoneState(OCS_R2 if p.model == "CX700" else CU7) for p in phones]
    history: dict[str, list[str]] = {p.mac: [] for p in phones}
    stages: list[dict[str, Any]] = []
    with h.Fleet(work) as servers:
        server = servers.ucupdates(config_file)
        net = Net(phone_tls(None), verify=False, timeout=30.0, connect="127.0.0.1")
        settings = Settings(net, server=f"http://ucupdates-r2.{h.DOMAIN}:"
                                        f"{server.ports['internal-http']}")  # fmt: skip
        store = Store.open(config.db_path)
        try:
            staged_rule, path_rule = rule_id(store, "CX600"), rule_id(store, "CX700")
            pause = None if args.no_auto_pause else AutoPause()
            schedule = StageSchedule(soak=None, auto_pause=pause)
            catalogue.approve_staged(store, staged_rule, STAGES, schedule, "bench")
        finally:
            store.close()
        time.sleep(1.0)  # serve looks at the database at a check, at most every half second
        for n, share in enumerate(STAGES):
            cpu0 = h.cpu_seconds(server.pid)
            sched = Schedule(concurrency=args.concurrency, jitter=args.jitter, idle=args.idle,
                             rounds=3, deadline=600.0, seed=n)  # fmt: skip
            going = [i for i, p in enumerate(phones) if "reverted" not in history[p.mac]]
            runs, stats = run_fleet([phones[i] for i in going], settings, sched,
                                    states=[states[i] for i in going])  # fmt: skip
            cpu = h.cpu_seconds(server.pid) - cpu0
            for r in runs:
                history[r.phone.mac] += [x.outcome for x in r.rounds]
            time.sleep(args.idle + 1.0)  # serve's inventory flush (once a second)
            store = Store.open(config.db_path)
            try:
                offers = store.offers(rule_id=staged_rule, version=CU8)
                walked = store.offers(rule_id=path_rule)
                staging = store.staging(staged_rule)
                assert staging is not None
                paused, why = staging.approval.paused, staging.paused_why
                if paused:  # by itself: say so, then go on by hand
                    catalogue.resume_staging(store, staged_rule, "bench")
                if n + 1 < len(STAGES):
                    catalogue.advance_staging(store, staged_rule, "bench")
            finally:
                store.close()
            time.sleep(1.0)
            own = Counter(rank(history[p.mac]) for p in phones if p.model == "CX600")
            walkers = Counter(r.state.version for r in runs if r.phone.model == "CX700")
            checks = stats.checks
            latency = stats.seconds["check"]
            record = {
                "stage": n, "share": share,
                "offered": len(offers),
                "updated": sum(o.outcome.value == "updated" for o in offers),
                "reverted": sum(o.outcome.value == "reverted" for o in offers),
                "stuck": sum(o.outcome.value == "stuck" for o in offers),
                "pending": sum(o.outcome.value == "pending" for o in offers),
                "paused_itself": paused, "paused_why": why,
                "phonesim": {"updated": own["updated"], "reverted": own["reverted"],
                             "stuck": own["stuck"]},
                "path": {"offers": dict(Counter(f"{o.version} {o.outcome.value}"
                                                for o in walked)),
                         "phones_on": dict(walkers)},
                "checks": checks, "failed": sum(stats.failures.values()),
                "check_ms": {"p50": round(1000 * percentile(latency, 50), 1),
                             "p99": round(1000 * percentile(latency, 99), 1)},
                "server_cpu_per_check_us": round(1e6 * cpu / max(checks, 1)),
                "seconds": round(stats.elapsed, 1),
            }  # fmt: skip
            stages.append(record)
            print(f"  stage {n} ({share:g} %): offered {record['offered']}, updated "
                  f"{record['updated']}, reverted {record['reverted']} (phone-sim: "
                  f"{record['phonesim']}), paused itself: {paused}, {checks} checks, p50 "
                  f"{record['check_ms']['p50']} ms, p99 {record['check_ms']['p99']} ms, serve "
                  f"{record['server_cpu_per_check_us']} us CPU a check, failed "
                  f"{record['failed']}", flush=True)  # fmt: skip
    return {"phones": args.phones, "path_share": args.path_share,
            "revert_share": args.revert_share, "stages": stages}  # fmt: skip


def set_policy(config: Any, on: bool) -> None:
    """B: an open network window (all day), a pin for a device not in the test, the rule
    staged at 100 %; A: none of it."""
    store = Store.open(config.db_path)
    try:
        rid = rule_id(store, "CX600")
        net = "127.0.0.0/8"
        if on:
            windows = DownloadWindows(zone="UTC", windows=())  # none listed: always open
            catalogue.set_network(store, NetworkPolicy(parse_network(net), windows), "bench")
            kind, ident = catalogue.parse_identifier("00-04-F2-FF-FF-01", None)
            pin = Pin(kind, ident, PinAction.EXCLUDE, "bench")
            catalogue.pin_device(store, pin, "bench")
            if store.staging(rid) is None:
                catalogue.stage_approved(store, rid, (100.0,), StageSchedule(), "bench")
        else:
            for staging in store.stagings():
                catalogue.remove_staging(store, staging.rule_id, "bench")
            for entry in store.networks():
                catalogue.remove_network(store, str(entry.value.network), "bench")
            for entry in store.pins():
                p = entry.value
                catalogue.unpin_device(store, p.kind, p.identifier, p.update_type, "bench")
    finally:
        store.close()


def cost(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    config_file, config = prepare(work, paths=False)
    runs: dict[str, list[dict[str, Any]]] = {"no policy": [], "policy": []}
    for _ in range(args.pairs):
        for name, on in (("no policy", False), ("policy", True)):
            set_policy(config, on)
            with h.Fleet(work) as servers:
                server = servers.ucupdates(config_file)
                port = server.ports["internal-https"]
                url = f"https://127.0.0.1:{port}{h.CHECK_PATH}"

                def one(url: str = url) -> dict[str, Any]:
                    return h.wrk(url, args.conns, args.seconds, sample_check())

                result = h.measured(server, one)
            runs[name].append(result)
            print(
                f"  {name}: {result['rate']:,.0f} checks/s, "
                f"{result['server_cpu_per_request_us']:,.0f} us CPU a check, errors "
                f"{result['errors']}",
                flush=True,
            )
    return {"runs": runs, "compare": h.compare(runs, "policy", "no policy")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", nargs="*", help="staged, cost (both when none is named)")
    p.add_argument("--phones", type=int, default=1500)
    p.add_argument("--path-share", type=float, default=0.2)
    p.add_argument("--revert-share", type=float, default=0.01)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--jitter", type=float, default=5.0, help="each pass's start spread (s)")
    p.add_argument("--idle", type=float, default=1.5, help="seconds between a phone's checks")
    p.add_argument("--no-auto-pause", action="store_true",
                   help="stages never pause themselves (the failures are counted still)")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0, help="each cost run's wrk time")
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--out", default="rollout")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    args.part = args.part or ["staged", "cost"]
    if set(args.part) - {"staged", "cost"}:
        p.error("the parts are staged and cost")
    machine = h.machine_check()
    h.pin_self(h.CLIENT_CPU)
    report: dict[str, Any] = {"machine": machine, "options": vars(args)}
    for part in args.part:
        with h.workdir(f"rollout-{part}", args.keep) as work:
            print(f"{part}:", flush=True)
            report[part] = staged(args, work) if part == "staged" else cost(args, work)
    h.write_report(args.out, report)
    if "cost" in report:
        c = report["cost"]["compare"]
        print(
            f"policy / no policy: checks/s {h.fmt_ratio(c.get('ratio_rate'))}, CPU a check "
            f"{h.fmt_ratio(c.get('ratio_server_cpu_per_request_us'))} (for CPU: no policy / "
            "policy, below 1 means the policy costs more)"
        )


if __name__ == "__main__":
    main()
