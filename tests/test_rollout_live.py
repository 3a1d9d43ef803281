"""Rollouts through a serving appliance (slow tier: a `ucupdates serve` process).

The policy is changed in this process, on the same database file, through the store's
admin actions (as the command line will): the serving process picks it up within its
look-up interval. Checks go over plain HTTP with curl; what the flush and the rollout
timer write is read back from the database and from serve's JSON log.
"""

from __future__ import annotations

import json
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from appliance import catalogue
from appliance.catalogue.sample import sample_check
from appliance.config import load_config
from appliance.model import (
    AutoPause,
    DownloadWindows,
    NetworkPolicy,
    Outcome,
    StageSchedule,
    TimeWindow,
    parse_network,
)
from appliance.store import Store
from appliance.testing import approved_sample, serving

RUNNING, APPROVED = "4.0.7577.4366", "4.0.7577.4400"
MAC = "00-04-F2-00-00-21"
WAIT_SECONDS = 20.0


def wait_for(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_SECONDS} s: {what}")
        time.sleep(0.1)


def check(port: int, version: str) -> dict[str, str]:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--data-binary", "@-", "-H", "Content-Type: text/xml"]
        + [f"http://127.0.0.1:{port}/RequestHandler/ucdevice.upx"],
        input=sample_check(version, mac=MAC),
        capture_output=True,
        timeout=15,
        check=True,
    )
    return {e.tag: e.text or "" for e in ET.fromstring(done.stdout).iter()}


def events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for record in log.read_text().split("\x1e"):
        if record.strip():
            event = json.loads(record)
            if event.get("event") == name:
                found.append(event)
    return found


def shut_window() -> DownloadWindows:
    """A one-hour window that opens two hours from now (UTC): shut for this test."""
    start = datetime.now(UTC) + timedelta(hours=2)
    text = f"{start:%H}:00-{(start + timedelta(hours=1)):%H}:00"
    return DownloadWindows("UTC", (TimeWindow.parse(text),))


def test_live_offers_are_confirmed_windows_hold_and_a_stage_pauses_itself(tmp_path: Path) -> None:
    data = tmp_path / "data"
    approved_sample(load_config(None, data), version=APPROVED).close()
    config = tmp_path / "ucupdates.toml"
    config.write_text(
        f"data_dir = {json.dumps(str(data))}\n"
        "[listeners]\n"
        + "".join(
            f'{name} = "127.0.0.1:0"\n'
            for name in ("dns", "admin", "internal_https", "external_https", "internal_http")
        )
        + "[rollouts]\ntimer_seconds = 0.2\n"
    )
    admin = Store.open(data / "ucupdates.sqlite3")
    try:
        with serving(config, tmp_path / "serve.json", "--log-format", "json") as running:
            port, log = running.ports["internal-http"], running.log
            assert check(port, RUNNING)["Downloads"] == "1"
            wait_for("the offer recorded", lambda: len(admin.offers(identity=MAC)) == 1)
            (offer,) = admin.offers(identity=MAC)
            assert (offer.version, offer.from_version, offer.outcome) == (
                APPROVED,
                RUNNING,
                Outcome.PENDING,
            )
            assert check(port, APPROVED)["Downloads"] == "0"  # it took it
            wait_for("updated", lambda: admin.offers(identity=MAC)[0].outcome is Outcome.UPDATED)
            wait_for("the event", lambda: bool(events(log, "rollout.device.updated")))

            loopback = NetworkPolicy(parse_network("127.0.0.0/8"), shut_window())
            catalogue.set_network(admin, loopback, "test")
            wait_for("the window holds it", lambda: check(port, RUNNING)["Downloads"] == "0")
            catalogue.remove_network(admin, "127.0.0.0/8", "test")
            wait_for("the window gone", lambda: check(port, RUNNING)["Downloads"] == "1")
            wait_for(
                "reverted", lambda: admin.offers(identity=MAC)[0].outcome is Outcome.REVERTED
            )

            rule_id = admin.offers(identity=MAC)[0].rule_id
            strict = StageSchedule(timedelta(days=1), AutoPause(0.0, 1))
            catalogue.stage_approved(admin, rule_id, (100.0,), strict, "test")
            wait_for("the timer pauses", lambda: admin.stagings()[0].approval.paused)
            wait_for("the pause logged", lambda: bool(events(log, "rollout.stage.pause")))
            assert "1 reverted" in (admin.stagings()[0].paused_why or "")
            paused = next(e for e in admin.events() if e.action == "rollout.stage.pause")
            assert paused.actor == "ucupdates" and paused.after["paused"] is True
            assert check(port, RUNNING)["Downloads"] == "0"  # paused: nobody newly offered
    finally:
        admin.close()
