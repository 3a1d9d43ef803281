"""Rollouts end to end: simulated phones against a real `ucupdates serve` (docs/rollouts.md).

One serve process for the module, on loopback (every listener on port 0), its rollout
timer every half second. The catalogue: sample packages of the Tanjay steps (3.5.6907.37,
4.0.7577.4100), CU7 (approved everywhere) and CU8 (pending everywhere). The policy is set
the way the admin actions set it (`appliance.catalogue`, in this process, on the same
database: serve reloads it as soon as it changes); the phones are `appliance.phonesim`'s,
each from its own loopback address, checking over plain HTTP.

- A staged approval of CU8 (5 % -> 25 % -> 100 %) moved by serve's timer alone: after each
  stage, the phones that run CU8 are exactly those whose bucket (the store's salt and the
  MAC, as the decision computes it) is inside the stage, and serve recorded each one as
  first offered in the stage that let it in.
- A stage whose phones revert (phone-sim's revert quirk) pauses by itself: the event log
  and serve's log say why, and a phone of the stage that has not taken it yet is no
  longer offered it.
- A download window: serve has no clock a test can move, so the window is chosen against
  the real time: one that excludes now holds a phone at `Downloads` 0 (while a phone
  outside that network is offered the update), one that includes now lets it download.
- The Tanjay two-step: CX700 phones on OCS-era firmware take each step, restart, check
  again and end on CU8.

A stage's soak is four times what a check of every phone took before the approval, plus
two idle periods (at least 4 s), so that each stage's pass ends before the timer moves on;
a pass that outlasts it fails with a message saying so. Between a phone's checks it
waits 1.5 s, longer than serve's inventory flush (once a second), which records offers
and their confirmation. Every wait is bounded; nothing is timed.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from appliance import catalogue
from appliance.catalogue import Action, apply_action, import_package, make_sample_package
from appliance.config import Config, load_config
from appliance.model import (
    AutoPause,
    DownloadWindows,
    Event,
    NetworkPolicy,
    Outcome,
    StageSchedule,
    TimeWindow,
    Zone,
    bucket,
    parse_network,
)
from appliance.phones.answers import LOOK_SECONDS
from appliance.phones.codec import parse_check
from appliance.phonesim import (
    Net,
    PhoneIdentity,
    PhoneRun,
    PhoneState,
    Quirk,
    Schedule,
    Settings,
    Stats,
    check_body,
    mac_of,
    phone_tls,
    run_fleet,
    serial_of,
)
from appliance.store import RuleFilter, Store
from appliance.testing import serving

pytestmark = pytest.mark.slow  # a serving appliance

HOST = "127.0.0.1"
FQDN = "ucupdates-r2.example.com"
OCS_2007, OCS_R2, TANJAY_STEP = "1.0.522.101", "3.5.6907.37", "4.0.7577.4100"
CU7, CU8 = "4.0.7577.4366", "4.0.7577.4387"
IMAGE_SIZE = 4000
IDLE = 1.5  # between a phone's checks: more than serve's inventory flush (1 s)
WAIT = 30.0  # at most this long for serve to show something (its timer, its flush)
FLEET = 200
STAGES = (5.0, 25.0, 100.0)


@dataclass
class Served:
    data: Path
    config: Config
    ports: dict[str, int]
    log: Path

    def settings(self) -> Settings:
        net = Net(phone_tls(None), verify=False, timeout=10.0, connect=HOST)
        return Settings(net, server=f"http://{FQDN}:{self.ports['internal-http']}")

    def store(self) -> Store:
        return Store.open(self.config.db_path)

    def rule_id(self, model: str) -> int:
        with _opened(self) as store:
            (rule,) = store.rules(RuleFilter(model=model, locale="ENU"))
            return rule.id


class _opened:
    """A store of the served data folder, closed after the block."""

    def __init__(self, served: Served) -> None:
        self.store = served.store()

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("rollout")
    config_file = base / "ucupdates.toml"
    config_file.write_text(
        f"data_dir = {json.dumps(str(base / 'data'))}\n"
        "[listeners]\n"
        f'dns = "{HOST}:0"\nadmin = "{HOST}:0"\ninternal_https = "{HOST}:0"\n'
        f'external_https = "{HOST}:0"\ninternal_http = "{HOST}:0"\n'
        "[rollouts]\ntimer_seconds = 0.5\n"
    )
    config = load_config(config_file)
    config.data_dir.mkdir(parents=True)
    store = Store.open(config.db_path)
    try:
        for version in (OCS_R2, TANJAY_STEP, CU7, CU8):
            package = base / f"{version}.cab"
            make_sample_package(package, version=version, image_size=IMAGE_SIZE)
            import_package(store, config, package, "test")
            if version == CU7:  # CU7 approved everywhere; CU8 then pending everywhere
                apply_action(store, Action.APPROVE, RuleFilter(everything=True), "test")
    finally:
        store.close()
    with serving(config_file, base / "serve.log") as running:
        yield Served(config.data_dir, config, running.ports, running.log)


def phones(first: int, count: int, model: str = "CX600", subnet: int = 5) -> list[PhoneIdentity]:
    """`count` ENU phones of `model` (a Polycom) numbered from `first`, each from its own
    address in 127.<subnet>.0.0/16."""
    return [
        PhoneIdentity(
            "Polycom",
            model,
            "A",
            "ENU",
            mac_of(n),
            serial_of(n),
            source=f"127.{subnet}.{i // 250}.{1 + i % 250}",
        )  # fmt: skip
        for i, n in enumerate(range(first, first + count))
    ]


def identity(phone: PhoneIdentity) -> str:
    """The phone's identity in serve's records: the MAC as the appliance reads the check."""
    request = parse_check(check_body(phone, CU7), Zone.INTERNAL, HOST)
    assert request.mac is not None
    return request.mac


def buckets(served: Served, fleet: list[PhoneIdentity]) -> dict[str, int]:
    """Each phone's bucket (by MAC), as serve computes it: the store's salt and the MAC and
    serial the appliance reads from the phone's own check."""
    with _opened(served) as store:
        salt = store.rollout_salt()
    found = {}
    for phone in fleet:
        request = parse_check(check_body(phone, CU7), Zone.INTERNAL, HOST)
        found[phone.mac] = bucket(salt, request.mac, request.serial)
    return found


def run(
    served: Served,
    fleet: list[PhoneIdentity],
    states: list[PhoneState] | None = None,
    rounds: int = 5,
) -> tuple[list[PhoneRun], Stats]:
    """The fleet's rounds until each phone is told `Downloads` 0 (or `rounds` checks)."""
    schedule = Schedule(concurrency=20, idle=IDLE, rounds=rounds, deadline=120.0)
    runs, stats = run_fleet(fleet, served.settings(), schedule, states=states)
    failed = [x.detail for r in runs for x in r.rounds if x.outcome == "failed"]
    assert not failed, failed
    return runs, stats


def eventually(what: str, probe: Callable[[], object], seconds: float = WAIT) -> Any:
    """`probe()` once it is truthy, looked at every 0.1 s for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while not (found := probe()):
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.1)
    return found


def settle() -> None:
    """Let serve see a change this process committed: it looks at the database at most
    every LOOK_SECONDS, at a check, so any check that long after the commit sees it."""
    time.sleep(2 * LOOK_SECONDS)


def stage_of(served: Served, rule_id: int) -> tuple[int, bool]:
    """The staged approval's stage and whether it is paused."""
    with _opened(served) as store:
        staging = store.staging(rule_id)
    assert staging is not None
    return staging.approval.stage, staging.approval.paused


def events(served: Served, rule_id: int, action: str) -> list[Event]:
    with _opened(served) as store:
        found = store.events(1000)
    return [
        e for e in reversed(found) if e.action == action and e.target.startswith(f"rule {rule_id} ")
    ]


# -- a staged approval, moved by the timer --------------------------------------------------


def test_a_staged_approval_advances_by_the_timer_to_exactly_its_buckets(served: Served) -> None:
    fleet = phones(1, FLEET)
    placed = buckets(served, fleet)
    states = [PhoneState(CU7) for _ in fleet]
    started = time.monotonic()
    _, stats = run(served, fleet, states)  # before the approval: CU7, current everywhere
    soak = max(4.0, 4 * (time.monotonic() - started) + 2 * IDLE)
    assert stats.fates == {"unchanged": FLEET}
    rule_id = served.rule_id("CX600")
    schedule = StageSchedule(soak=timedelta(seconds=soak), auto_pause=AutoPause())
    with _opened(served) as store:
        catalogue.approve_staged(store, rule_id, STAGES, schedule, "e2e")
    settle()
    let_in: dict[str, int] = {}  # MAC -> the stage that let the phone in
    for stage, share in enumerate(STAGES):
        eventually(f"stage {stage}", lambda: stage_of(served, rule_id) == (stage, False))  # noqa: B023
        runs, stats = run(served, fleet, states)
        assert stage_of(served, rule_id) == (stage, False), (
            f"the timer moved on during stage {stage}'s pass: the soak ({soak:.1f} s) is too"
            " short for this machine"
        )
        inside = {p.mac for p in fleet if placed[p.mac] < round(share * 100)}
        newly = inside - let_in.keys()
        let_in.update(dict.fromkeys(newly, stage))
        assert {r.phone.mac for r in runs if r.state.version == CU8} == inside
        assert stats.fates == +Counter(updated=len(newly), unchanged=FLEET - len(newly))
        assert len(newly) > 0 and (share == 100) == (len(inside) == FLEET)
        print(f"stage {stage} ({share:g} %): {len(inside)} of {FLEET} phones run CU8")
    # serve recorded each phone as first offered CU8 in the stage that let it in, and its
    # next check (on CU8) as the confirmation: updated.
    by_identity = {identity(p): let_in[p.mac] for p in fleet}

    def recorded() -> dict[str, tuple[int | None, Outcome]] | None:
        with _opened(served) as store:
            offers = store.offers(rule_id=rule_id, version=CU8)
        found = {o.identity: (o.stage, o.outcome) for o in offers}
        done = len(found) == FLEET and all(o is Outcome.UPDATED for _, o in found.values())
        return found if done else None

    found = eventually("every offer confirmed", recorded)
    assert found == {i: (stage, Outcome.UPDATED) for i, stage in by_identity.items()}
    moves = [(e.actor, e.after["stage"]) for e in events(served, rule_id, "rollout.stage.advance")]
    assert moves == [("ucupdates", 1), ("ucupdates", 2)]


# -- a stage of reverting phones pauses itself ------------------------------------------------


def test_a_stage_whose_phones_revert_pauses_itself(served: Served) -> None:
    pool = phones(1001, 80, "CX500", subnet=6)
    placed = buckets(served, pool)
    inside = [p for p in pool if placed[p.mac] < 5000]  # the first stage: 50 %
    outside = [p for p in pool if placed[p.mac] >= 5000]
    assert len(inside) >= 12 and len(outside) >= 4
    reverting = [replace(p, quirk=Quirk.REVERT) for p in inside[:6]]
    steady, late = inside[6:10], inside[10]
    fleet = [*reverting, *steady, *outside[:4]]
    rule_id = served.rule_id("CX500")
    schedule = StageSchedule(soak=timedelta(hours=1), auto_pause=AutoPause())
    with _opened(served) as store:
        catalogue.approve_staged(store, rule_id, (50.0, 100.0), schedule, "e2e")
    settle()
    runs, stats = run(served, fleet, [PhoneState(CU7) for _ in fleet], rounds=3)
    assert stats.fates["reverted"] == 6 and stats.fates["updated"] == 4
    paused = eventually("the stage paused", lambda: stage_of(served, rule_id) == (0, True))
    assert paused
    (event,) = events(served, rule_id, "rollout.stage.pause")
    assert event.actor == "ucupdates" and event.after["paused"] is True
    assert "reverted" in event.after["why"] and "reverted" in event.after["paused_why"]
    log = eventually("the log line", lambda: "paused itself at stage 0" in served.log.read_text())
    assert log
    line = next(x for x in served.log.read_text().splitlines() if "paused itself" in x)
    print(line)
    # Paused: a phone of the stage that has not taken CU8 is no longer offered it.
    late_runs, _ = run(served, [late], [PhoneState(CU7)])
    assert [r.outcome for r in late_runs[0].rounds] == ["current"]


# -- a download window ---------------------------------------------------------------------------


def _window(start: datetime, hours: float) -> TimeWindow:
    end = start + timedelta(hours=hours)
    return TimeWindow.parse(f"{start:%H:%M}-{end:%H:%M}")


def test_a_download_window_holds_downloads_until_it_opens(served: Served) -> None:
    """serve's clock is the real one: the windows are chosen around the current time."""
    with _opened(served) as store:
        apply_action(store, Action.APPROVE, RuleFilter(model="4120"), "e2e")  # CU8, at once
    branch = "127.9.0.0/16"
    held = PhoneIdentity(
        "HP", "4120", "A", "ENU", mac_of(3001), serial_of(3001), source="127.9.0.1"
    )
    head_office = replace(held, mac=mac_of(3002), serial=serial_of(3002), source="127.5.9.1")
    now = datetime.now(UTC)
    shut = DownloadWindows("UTC", (_window(now + timedelta(hours=2), 1),))
    with _opened(served) as store:
        catalogue.set_network(store, NetworkPolicy(parse_network(branch), shut), "e2e")
    settle()
    state = PhoneState(CU7)
    runs, _ = run(served, [held], [state])
    assert [x.outcome for x in runs[0].rounds] == ["current"] and state.version == CU7
    held_line = f"update check 127.9.0.1 internal {held.mac} "
    assert any(
        line.endswith(f"reported {CU7}: outside-window -")
        for line in served.log.read_text().splitlines()
        if held_line in line
    ), served.log.read_text()[-2000:]
    runs, _ = run(served, [head_office], [PhoneState(CU7)])
    assert runs[0].state.version == CU8  # outside the branch: no window
    open_now = DownloadWindows("UTC", (_window(datetime.now(UTC) - timedelta(hours=1), 2),))
    with _opened(served) as store:
        catalogue.set_network(store, NetworkPolicy(parse_network(branch), open_now), "e2e")
    settle()
    runs, _ = run(served, [held], [state])
    assert [(x.outcome, x.offered) for x in runs[0].rounds] == [("updated", CU8), ("current", None)]
    assert state.last_update is not None


# -- the Tanjay two-step -------------------------------------------------------------------------


def test_tanjay_phones_walk_their_upgrade_path(served: Served) -> None:
    with _opened(served) as store:
        for step in catalogue.TANJAY_STEPS:
            catalogue.set_upgrade_step(store, step, "e2e")
        apply_action(store, Action.APPROVE, RuleFilter(model="CX700"), "e2e")  # CU8
    settle()
    fleet = phones(4001, 4, "CX700", subnet=7)
    states = [PhoneState(OCS_R2), PhoneState(OCS_R2), PhoneState(OCS_2007), PhoneState(CU7)]
    runs, stats = run(served, fleet, states)
    walked = [[x.offered for x in r.rounds] for r in runs]
    assert walked[0] == walked[1] == [TANJAY_STEP, CU8, None]  # two checks, two versions
    assert walked[2] == [OCS_R2, TANJAY_STEP, CU8, None]
    assert walked[3] == [CU8, None]  # already past the path
    assert [[x.reported for x in r.rounds] for r in runs][0] == [OCS_R2, TANJAY_STEP, CU8]
    assert stats.versions == {CU8: 4} and stats.fates == {"updated": 4}
