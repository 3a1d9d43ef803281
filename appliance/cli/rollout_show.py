"""How the rollout commands print the API's answers: tables for listings, lines for one.

The answers are the JSON the API returns (the catalogue's JSON forms), whether they came
from the local store or from `--server`: one printer for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from appliance.cli.table import write_table

Row = dict[str, Any]


def _scope(step: Row) -> str:
    parts = [step["device_type"], step["brand"], step["model"]]
    return "/".join(parts + ([step["revision"]] if step.get("revision") else []))


def print_paths(paths: Sequence[Row], out: TextIO, prefix: str = "") -> None:
    if prefix:  # one step, as a line
        for s in paths:
            kind = f" ({s['update_type']})" if s.get("update_type") else ""
            line = f"{prefix}{_scope(s)}{kind}: below {s['below']} first offered {s['offer']}"
            print(line, file=out)
        return
    if not paths:
        print("no upgrade paths", file=out)
        return
    rows = [
        [_scope(s), s["update_type"], s["below"], s["offer"], s["set_by"], s["set_at"]]
        for s in paths
    ]
    write_table(rows, ("MODEL", "TYPE", "BELOW", "OFFER", "SET BY", "SET AT"), out)


def _state(r: Row) -> str:
    if not r["current"]:
        return "stale"
    return "paused" if r["paused"] else "running"


def _stage(r: Row) -> str:
    return f"{r['stage']} ({r['share']:g} %)"  # stage 0 is the first, as docs/rollouts.md


def print_rollouts(rollouts: Sequence[Row], out: TextIO) -> None:
    if not rollouts:
        print("no staged approvals", file=out)
        return
    rows = []
    for r in rollouts:
        h = r["health"]
        counts = [h[k] for k in ("offered", "updated", "stuck", "reverted", "silent")]
        rows.append([r["rule_id"], r["rule"], r["version"], _stage(r), _state(r), *counts])
    headers = ("RULE", "KEY", "VERSION", "STAGE", "STATE", "OFFERED", "UPDATED", "STUCK")
    write_table(rows, (*headers, "REVERTED", "SILENT"), out)


def print_rollout(r: Row, out: TextIO) -> None:
    stages = " -> ".join(f"{s:g} %" for s in r["stages"])
    print(f"rule {r['rule_id']} {r['rule']}: {r['version']} staged {stages}", file=out)
    print(f"  stage {_stage(r)} since {r['entered_at']}, {_state(r)}", file=out)
    devices = r.get("devices")
    if devices is not None:  # test devices count as in every stage
        print(
            f"  in the stage: {devices['in_stage']} of {devices['known']} known devices", file=out
        )
    if r["paused"]:
        print(f"  paused at {r['paused_at']}: {r['paused_why']}", file=out)
    soak = "by hand" if r["soak_seconds"] is None else f"after {r['soak_seconds'] / 3600:g} hours"
    auto = (
        "never"
        if r["pause_percent"] is None
        else f"at {r['pause_percent']:g} % failing and at least {r['pause_min']} devices"
    )
    print(f"  advances {soak}; pauses on its own {auto}", file=out)
    if "health" in r:
        h = r["health"]
        print(
            f"  offered {h['offered']}: updated {h['updated']}, pending {h['pending']},"
            f" stuck {h['stuck']}, reverted {h['reverted']}, silent {h['silent']}",
            file=out,
        )
        print(f"  next: {r['next']['move']}, {r['next']['why']}", file=out)
    answers = r.get("answers")
    if answers is not None:
        waits = ("not-in-stage", "stage-paused", "outside-window")
        text = ", ".join(f"{answers[k]} {k}" for k in waits if answers.get(k)) or "none"
        print(f"  waiting: {text}", file=out)
        every = ", ".join(f"{n} {k}" for k, n in answers.items()) or "no known devices"
        print(f"  its known devices now: {every}", file=out)


def _windows(row: Row) -> str:
    if not row["windows"]:
        return "always"
    return ", ".join(row["windows"]) + f" {row['time_zone']}"


def _caps(row: Row) -> str:
    caps = []
    if row["max_downloads"] is not None:
        caps.append(f"at most {row['max_downloads']} downloads")
    if row["max_bytes_per_second"] is not None:
        caps.append(f"{row['max_bytes_per_second']} bytes/s")
    return ", ".join(caps) or "no caps"


def print_networks(networks: Sequence[Row], out: TextIO, prefix: str = "") -> None:
    if prefix:
        for n in networks:
            print(f"{prefix}{n['network']}: {_windows(n)}; {_caps(n)}", file=out)
        return
    if not networks:
        print("no network policies", file=out)
        return
    rows = [
        [n["network"], _windows(n), n["max_downloads"], n["max_bytes_per_second"], n["set_by"]]
        for n in networks
    ]
    write_table(rows, ("NETWORK", "WINDOWS", "MAX DOWNLOADS", "MAX BYTES/S", "SET BY"), out)


def print_external(external: Row | None, out: TextIO) -> None:
    if external is None:
        print("external zone: no policy, external phones are not restricted", file=out)
        return
    print(f"external zone: {_windows(external)}; {_caps(external)}", file=out)


def _device(p: Row) -> str:
    return f"{p['kind']} {p['identifier']}"


def _pin_what(p: Row) -> str:
    return f"held on {p['version']}" if p["action"] == "hold" else "excluded"


def print_pins(pins: Sequence[Row], out: TextIO, prefix: str = "") -> None:
    if prefix:
        for p in pins:
            scope = f" ({p['update_type']})" if p.get("update_type") else ""
            print(f"{prefix}{_device(p)}{scope} {_pin_what(p)}: {p['reason']}", file=out)
        return
    if not pins:
        print("no pins", file=out)
        return
    rows = [
        [_device(p), p["update_type"], _pin_what(p), p["reason"], p["set_by"], p["set_at"]]
        for p in pins
    ]
    write_table(rows, ("DEVICE", "TYPE", "PIN", "REASON", "SET BY", "SET AT"), out)


def print_offers(offers: Sequence[Row], out: TextIO) -> None:
    if not offers:
        print("no offers", file=out)
        return
    rows = [
        [
            o["identity"],
            o["rule_id"],
            o["version"],
            o["from_version"],
            o["offers"],
            o["outcome"],
            o["outcome_at"],
            o["last_seen_at"],
        ]
        for o in offers
    ]
    headers = ("DEVICE", "RULE", "OFFERED", "FROM", "OFFERS", "OUTCOME", "SINCE", "LAST SEEN")
    write_table(rows, headers, out)


def print_explain(answer: Row, out: TextIO) -> None:
    """The decision as `explain` always printed it, then the rollout's part."""
    print(f"{answer['reason']}: {answer['detail']}", file=out)
    for offer in answer["offers"]:
        if offer["guid"]:
            print(f"  rule {offer['rule_id']} {offer['rule']} guid {offer['guid']}", file=out)
        for f in offer["files"]:
            print(f"  {f['path']}  {f['size']} bytes  sha256 {f['sha256']}", file=out)
    for rule in answer["rules"]:
        walk = " -> ".join(rule["path"]) or "nothing"
        line = f"rule {rule['rule_id']} {rule['rule']}: {rule['reason']}; path {walk}"
        stage = rule["stage"]
        if stage is not None:
            where = "in it" if stage["in_stage"] else "not in it"
            paused = ", paused" if stage["paused"] else ""
            line += f"; stage {stage['stage']} ({stage['share']:g} %{paused}), {where}"
        print(line, file=out)
    for pin in answer["pins"]:
        print(f"pin: {_device(pin)} {_pin_what(pin)}: {pin['reason']}", file=out)
    window = answer["window"]
    if window is not None:
        state = "open" if window["open"] else "shut"
        print(f"window: {window['label']}: {state} at {answer['at']}", file=out)
    print(f"bucket: {answer['bucket']}", file=out)
