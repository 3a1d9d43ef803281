"""The rollout endpoints of the JSON API in process: the admin listener's real site over
treq's memory transport, every answer checked against `appliance/admin/openapi.json`.

Staged approvals (approve to 5 %, pause, advance, resume, drop), the downgrade guard, the
soak gate and its override, upgrade paths, networks, the external zone, pins, offers and
explain; viewers read and may not change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser.api import PASSWORD, Browser
from treq.testing import StubTreq

from appliance.admin import add_account, make_admin_site
from appliance.catalogue import add_test_device
from appliance.config import load_config
from appliance.model import IdentifierKind, OfferRecord, Outcome
from appliance.store import Store
from appliance.testing import FixedClock, InlineReactor, memory_client
from appliance.testing.records import CU6, CU7, CU8, CX600, rule_key, seen_device
from appliance.testing.stores import add_rule

CX700 = rule_key(model="CX700")
TEST_MAC = "00-04-F2-00-00-01"


@dataclass
class Site:
    store: Store
    clock: FixedClock
    stub: StubTreq
    rule: int  # CX600: CU7 approved, CU8 pending
    tanjay: int  # CX700: CU8 approved, CU6 and older versions known

    def admin(self) -> Browser:
        return Browser(self.stub).login("alice")

    def viewer(self) -> Browser:
        return Browser(self.stub).login("victor")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    clock = FixedClock()
    store = Store.open(config.db_path, clock=clock)
    rule = add_rule(store, CX600, approved=CU7, pending=CU8)
    tanjay = add_rule(store, CX700, approved=CU8, restore=CU6)
    add_account(store, "alice", "admin", PASSWORD, "test")
    add_account(store, "victor", "viewer", PASSWORD, "test")
    stub = memory_client(lambda _: make_admin_site(config, store, clock, InlineReactor()))
    yield Site(store, clock, stub, rule.id, tanjay.id)
    store.close()


def events(store: Store) -> list[str]:
    return [e.action for e in store.events()]


def test_a_staged_approval_pauses_advances_resumes_and_goes(site: Site) -> None:
    admin = site.admin()
    body = {"rule_id": site.rule, "stages": [5, 25, 100], "soak_hours": 24}
    reply = admin.request("POST", "/api/rollouts", body)
    assert reply.status == 201, reply.body
    rollout = reply.json()["rollout"]
    assert (rollout["version"], rollout["stage"], rollout["share"]) == (CU8, 0, 5)
    assert rollout["soak_seconds"] == 24 * 3600 and rollout["current"]
    assert reply.json()["change"]["after"]["approved_version"] == CU8
    assert events(site.store)[:2] == ["rollout.stage.set", "approve"]

    listed = site.viewer().request("GET", "/api/rollouts").json()["rollouts"]
    assert [r["rule_id"] for r in listed] == [site.rule]
    assert listed[0]["next"]["move"] == "stay" and "advances at" in listed[0]["next"]["why"]

    reply = admin.request("POST", f"/api/rollouts/{site.rule}/pause", {"reason": "desk phones"})
    assert reply.status == 200 and reply.json()["paused_why"] == "desk phones"
    reply = admin.request("POST", f"/api/rollouts/{site.rule}/advance")
    assert reply.status == 409 and "resume it first" in reply.error
    assert admin.request("POST", f"/api/rollouts/{site.rule}/resume").status == 200
    reply = admin.request("POST", f"/api/rollouts/{site.rule}/advance")
    assert reply.status == 200 and reply.json()["share"] == 25
    assert admin.request("POST", f"/api/rollouts/{site.rule}/jump").status == 404
    assert admin.request("DELETE", f"/api/rollouts/{site.rule}").status == 200
    assert admin.request("DELETE", f"/api/rollouts/{site.rule}").status == 404
    assert admin.request("GET", f"/api/rollouts/{site.rule}").status == 404
    assert admin.request("GET", "/api/rollouts/999").status == 404


def test_a_rollout_shows_its_health_and_what_waits(site: Site) -> None:
    admin = site.admin()
    admin.request("POST", "/api/rollouts", {"rule_id": site.rule, "stages": [50, 100]})
    for n in range(30):  # CX600s on CU7 in 10.20.0.0/16; the salt is random: about 15 in stage
        mac = f"00-04-F2-00-10-{n:02X}"
        site.store.record_device(seen_device(mac, CU7, address=f"10.20.0.{n + 1}"))
    stamp = "2026-11-27T11:00:00Z"
    stuck = OfferRecord(
        "00-04-F2-00-10-00", site.rule, CU8, CU7, stamp, stamp, 3, Outcome.STUCK, stamp, stamp
    )
    site.store.save_offers([stuck])
    shown = admin.request("GET", f"/api/rollouts/{site.rule}").json()
    assert shown["health"] == {
        "offered": 1,
        "pending": 0,
        "updated": 0,
        "stuck": 1,
        "reverted": 0,
        "silent": 0,
        "failing": 1,
    }
    answers = shown["answers"]
    assert sum(answers.values()) == 30 and answers["not-in-stage"] >= 3
    assert answers["approved"] >= 3
    # a window that is shut now (12:00 UTC) holds the devices in the stage
    window = {"network": "10.20.0.0/16", "time_zone": "UTC", "windows": ["22:00-05:00"]}
    assert admin.request("POST", "/api/networks", window).status == 200
    answers = admin.request("GET", f"/api/rollouts/{site.rule}").json()["answers"]
    assert "approved" not in answers and answers["outside-window"] >= 3

    offers = admin.request("GET", "/api/offers?outcome=stuck").json()["offers"]
    assert [(o["identity"], o["outcome"], o["rule"]) for o in offers] == [
        ("00-04-F2-00-10-00", "stuck", str(CX600))
    ]
    by_device = admin.request("GET", "/api/offers?device=00:04:f2:00:10:00").json()["offers"]
    assert len(by_device) == 1
    assert admin.request("GET", "/api/offers?outcome=lost").status == 400


def test_a_rollout_counts_the_known_devices_its_stage_holds(site: Site) -> None:
    """`devices`: the rule's devices in the inventory and those in the current stage,
    worked out here from the salt and the bucket's definition (SHA-256 of the salt and
    the MAC, first 8 bytes mod 10000, below 2500 at 25 %); a test device counts in the
    stage whatever its bucket; another model's device is not the rule's."""
    salt = site.store.rollout_salt()
    macs = [f"00-04-F2-00-20-{n:02X}" for n in range(40)]

    def place(mac: str) -> int:
        digest = hashlib.sha256(f"{salt}\nmac:{mac}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % 10000

    for mac in macs:
        site.store.record_device(seen_device(mac, CU7))
    site.store.record_device(seen_device("00-04-F2-00-21-00", CU8, model="CX700"))
    outside = next(m for m in macs if place(m) >= 2500)
    add_test_device(site.store, "desk", IdentifierKind.MAC, outside, "test")
    expected = sum(1 for m in macs if place(m) < 2500) + 1
    admin = site.admin()
    admin.request("POST", "/api/rollouts", {"rule_id": site.rule, "stages": [25, 100]})
    shown = admin.request("GET", f"/api/rollouts/{site.rule}").json()
    assert shown["devices"] == {"known": 40, "in_stage": expected}
    (listed,) = admin.request("GET", "/api/rollouts").json()["rollouts"]
    assert listed["devices"] == {"known": 40, "in_stage": expected}
    admin.request("POST", f"/api/rollouts/{site.rule}/advance")
    shown = admin.request("GET", f"/api/rollouts/{site.rule}").json()
    assert shown["devices"] == {"known": 40, "in_stage": 40}


def test_the_downgrade_guard_refuses_naming_both_versions(site: Site) -> None:
    older = add_rule(site.store, rule_key(model="CX500"), approved=CU8, pending=CU7)
    admin = site.admin()
    for stages in (None, [5, 100]):
        body: dict[str, Any] = {"rule_id": older.id}
        if stages:
            body["stages"] = stages
        reply = admin.request("POST", "/api/rollouts", body)
        assert reply.status == 409
        assert f"would move approved {CU8} back to {CU7}" in reply.error
    reply = admin.request("POST", "/api/rollouts", {"rule_id": older.id, "allow_downgrade": True})
    assert reply.status == 201, reply.body
    assert reply.json()["change"]["after"]["approved_version"] == CU7


def test_the_soak_gate_refuses_until_overridden_with_a_reason(site: Site) -> None:
    add_test_device(site.store, "lab", IdentifierKind.MAC, TEST_MAC, "test")
    admin = site.admin()
    gate = {"rule_id": site.rule, "soak_gate": {"devices": 1, "hours": 24}}
    reply = admin.request("POST", "/api/rollouts", gate)
    assert reply.status == 409
    assert "CX600: 0 of 1 test devices have run it for 24 hours" in reply.error
    for bad in ({"devices": 1}, {"hours": 24}, [1, 24]):
        assert admin.request("POST", "/api/rollouts", {**gate, "soak_gate": bad}).status == 400
    alone = {"rule_id": site.rule, "override_soak": "no gate"}
    assert admin.request("POST", "/api/rollouts", alone).status == 400
    # a test device that runs it since 23 hours: not yet
    since = "2026-11-26T13:00:00Z"
    ran = OfferRecord(TEST_MAC, site.rule, CU8, CU7, since, since, 1, Outcome.UPDATED, since, since)
    site.store.save_offers([ran])
    assert admin.request("POST", "/api/rollouts", gate).status == 409
    reply = admin.request("POST", "/api/rollouts", {**gate, "override_soak": "vendor hotfix"})
    assert reply.status == 201 and reply.json()["soak_override"]
    (approve,) = [e for e in site.store.events() if e.action == "approve"]
    assert approve.after["soak_override"] == "vendor hotfix"
    assert approve.after["soak_shortfall"] == [
        "CX600: 0 of 1 test devices have run it for 24 hours"
    ]


def test_the_soak_gate_passes_when_test_devices_ran_it_long_enough(site: Site) -> None:
    add_test_device(site.store, "lab", IdentifierKind.MAC, TEST_MAC, "test")
    since = "2026-11-26T11:00:00Z"  # 25 hours before the clock's 12:00
    ran = OfferRecord(TEST_MAC, site.rule, CU8, CU7, since, since, 1, Outcome.UPDATED, since, since)
    site.store.save_offers([ran])
    gate = {"rule_id": site.rule, "stages": [5, 100], "soak_gate": {"devices": 1, "hours": 24}}
    reply = site.admin().request("POST", "/api/rollouts", gate)
    assert reply.status == 201 and reply.json()["soak_override"] is None


def test_upgrade_paths_and_explain_show_the_walk(site: Site) -> None:
    admin = site.admin()
    step = {"brand": "Polycom", "model": "CX700", "below": "4.0", "offer": CU6}
    reply = admin.request("POST", "/api/upgrade-paths", step)
    assert reply.status == 200 and reply.json()["replaced"] is None
    assert reply.json()["path"]["set_by"] == "web:alice"
    bad = {**step, "offer": "3.5.6907.37"}
    assert admin.request("POST", "/api/upgrade-paths", bad).status == 400
    listed = site.viewer().request("GET", "/api/upgrade-paths").json()["paths"]
    assert [p["offer"] for p in listed] == [CU6]

    query = "brand=Polycom&model=CX700&mac=00-04-F2-00-00-42&reported_version=3.5.6907.37"
    explained = admin.request("GET", f"/api/explain?{query}").json()
    assert explained["reason"] == "upgrade-path"
    assert [o["version"] for o in explained["offers"]] == [CU6]
    (rule,) = explained["rules"]
    assert (rule["target"], rule["path"]) == (CU8, [CU6, CU8])
    assert admin.request("GET", "/api/explain?brand=Polycom").status == 400

    selector = {"brand": "Polycom", "model": "CX700", "below": "4.0"}
    assert admin.request("POST", "/api/upgrade-paths/remove", selector).status == 200
    assert admin.request("POST", "/api/upgrade-paths/remove", selector).status == 404


def test_networks_and_the_external_zone_set_their_windows(site: Site) -> None:
    admin = site.admin()
    net = {
        "network": "10.20.0.0/16",
        "time_zone": "Europe/Berlin",
        "windows": ["22:00-05:00"],
        "max_downloads": 20,
    }
    reply = admin.request("POST", "/api/networks", net)
    assert reply.status == 200, reply.body
    assert reply.json()["network"]["max_downloads"] == 20
    assert admin.request("POST", "/api/networks", {**net, "time_zone": "Mars/Base"}).status == 400
    assert admin.request("POST", "/api/networks", {**net, "windows": ["25:00-01:00"]}).status == 400
    query = "brand=Polycom&model=CX600&mac=00-04-F2-00-00-42&reported_version=4.0.7577.4100"
    window = admin.request("GET", f"/api/explain?{query}&address=10.20.1.2").json()["window"]
    assert window == {
        "network": "10.20.0.0/16",
        "label": "10.20.0.0/16, 22:00-05:00 Europe/Berlin",
        "open": False,
    }
    at_night = f"/api/explain?{query}&address=10.20.1.2&at=2026-11-27T22:30:00Z"
    assert admin.request("GET", at_night).json()["reason"] == "approved"
    assert [n["network"] for n in admin.request("GET", "/api/networks").json()["networks"]] == [
        "10.20.0.0/16"
    ]
    assert admin.request("DELETE", "/api/networks/10.20.0.0%2F16").status == 200
    assert admin.request("DELETE", "/api/networks/10.20.0.0%2F16").status == 404

    assert admin.request("GET", "/api/external-policy").json() == {"external": None}
    ext = {"time_zone": "UTC", "windows": ["01:00-04:00"], "max_bytes_per_second": 1_000_000}
    assert admin.request("POST", "/api/external-policy", ext).status == 200
    shown = admin.request("GET", "/api/external-policy").json()["external"]
    assert shown["windows"] == ["01:00-04:00"] and shown["max_bytes_per_second"] == 1_000_000
    assert admin.request("DELETE", "/api/external-policy").status == 200
    assert admin.request("DELETE", "/api/external-policy").status == 404


def test_pins_hold_and_exclude_devices_with_a_reason(site: Site) -> None:
    admin = site.admin()
    hold = {"mac": "00:04:f2:00:00:42", "action": "hold", "version": CU7, "reason": "reception"}
    reply = admin.request("POST", "/api/pins", hold)
    assert reply.status == 200, reply.body
    assert reply.json()["pin"]["identifier"] == "00-04-F2-00-00-42"
    exclude = {"serial": "64167f0666", "action": "exclude", "reason": "loan phone"}
    assert admin.request("POST", "/api/pins", exclude).status == 200
    assert admin.request("POST", "/api/pins", {**exclude, "reason": ""}).status == 400
    assert admin.request("POST", "/api/pins", {**hold, "version": None}).status == 400
    pins = admin.request("GET", "/api/pins").json()["pins"]
    assert {(p["identifier"], p["action"]) for p in pins} == {
        ("00-04-F2-00-00-42", "hold"),
        ("64167F0666", "exclude"),
    }
    query = "brand=Polycom&model=CX600&serial=64167F0666&reported_version=4.0.7577.4100"
    assert admin.request("GET", f"/api/explain?{query}").json()["reason"] == "excluded"
    assert admin.request("POST", "/api/pins/remove", {"serial": "64167F0666"}).status == 200
    assert admin.request("POST", "/api/pins/remove", {"serial": "64167F0666"}).status == 404


def test_a_viewer_reads_but_cannot_change_rollouts(site: Site) -> None:
    viewer = site.viewer()
    for path in ("/api/rollouts", "/api/upgrade-paths", "/api/networks", "/api/pins"):
        assert viewer.request("GET", path).status == 200
        assert viewer.request("POST", path, {}).status == 403
    assert viewer.request("DELETE", "/api/external-policy").status == 403
    assert not [e for e in site.store.events() if e.action.startswith("rollout.")]


def test_offer_counts_per_rule_version_stage_and_outcome(site: Site) -> None:
    stamp = "2026-11-27T11:00:00Z"
    records = [
        OfferRecord(
            f"00-04-F2-00-10-0{n}",
            site.rule,
            CU8,
            CU7,
            stamp,
            stamp,
            1,
            outcome,
            None,
            stamp,
            stage=0,
        )
        for n, outcome in enumerate((Outcome.UPDATED, Outcome.UPDATED, Outcome.REVERTED))
    ]
    site.store.save_offers(records)
    counts = site.viewer().request("GET", f"/api/offer-counts?rule_id={site.rule}").json()
    assert counts == {
        "counts": [
            {"rule_id": site.rule, "version": CU8, "stage": 0, "outcome": "reverted", "devices": 1},
            {"rule_id": site.rule, "version": CU8, "stage": 0, "outcome": "updated", "devices": 2},
        ]
    }
    assert site.viewer().request("GET", "/api/offer-counts?rule_id=x").status == 400


def test_the_rules_approve_and_its_preview_keep_the_downgrade_guard(site: Site) -> None:
    older = add_rule(site.store, rule_key(model="CX500"), approved=CU8, pending=CU7)
    admin = site.admin()
    preview = f"/api/rules/preview?action=approve&id={older.id}"
    impact = admin.request("GET", preview).json()
    assert impact["needs_downgrade"] == [older.id] and impact["rule_ids"] == []
    assert "would move approved" in impact["skipped"][0]["reason"]
    impact = admin.request("GET", preview + "&allow_downgrade=1").json()
    assert impact["needs_downgrade"] == [] and impact["rule_ids"] == [older.id]

    reply = admin.request("POST", "/api/rules/approve", {"ids": [older.id]})
    assert reply.status == 409 and reply.json()["changes"][0]["needs_downgrade"]
    body = {"ids": [older.id], "allow_downgrade": True}
    reply = admin.request("POST", "/api/rules/approve", body)
    assert reply.status == 200 and reply.json()["changes"][0]["downgrade"]
    assert admin.request("POST", "/api/rules/approve", {**body, "allow_downgrade": 1}).status == 400
