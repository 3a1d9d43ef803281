"""`make bench-profile`: where `ucupdates serve` spends its time under update checks.

py-spy (in the venv) samples the serve process (pinned to the server CPU, sampled from
the client CPU) for --seconds while wrk makes keep-alive checks (16 connections), and,
with --tls10, while the TLS 1.0 client of bench_checks.py makes a new connection per
check. Idle samples, and those waiting in epoll, are left out. Reported: the top frames by
own time, and own time by area (by the file of the innermost frame: HTTP, XML, TLS,
reactor, logging, the appliance's handler...). Writes bench/out/profile-<load>.txt (the
summary), profile-<load>.raw (collapsed stacks, for a flame graph), bench/out/profile.json."""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import bench_checks
import harness as h

from appliance.catalogue.sample import make_sample_package, sample_check

# (area, pattern in the frame's file path), first match wins
AREAS = [
    ("XML (expat, defusedxml, ElementTree)", r"xml|expat"),
    ("HTTP (twisted.web, httptools, appliance/web)", r"twisted/web|httptools|appliance/web/"),
    ("TLS (pyOpenSSL, twisted TLS)", r"OpenSSL|twisted/protocols/tls|cryptography"),
    ("logging and events", r"twisted/logger|twisted/python/log|/logging/|appliance/ops/"),
    ("audit and inventory", r"appliance/phones/records|appliance/store|sqlite"),
    ("the check's handler (phones, catalogue)", r"appliance/phones|appliance/catalogue"),
    ("reactor (twisted.internet, selectors)", r"twisted/internet|selectors|epoll"),
    ("other appliance code", r"appliance/"),
]  # fmt: skip


def _where(frame: str) -> tuple[str, str]:
    """'function (file)' shortened, and the file."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame, ""
    function, path = m.groups()
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3/", "/work/main/"):
        path = path.split(marker, 1)[-1]
    return f"{function} ({path})", path


def summarise(raw: Path, top: int = 25) -> dict[str, Any]:
    """Own time per frame and per area from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]  # [0] names the process or thread
        if not count.isdigit() or not frames:
            continue
        frame, path = _where(frames[-1])
        if frame.startswith("EPollReactor.doPoll"):  # waiting in epoll: py-spy counts it
            idle += int(count)
            continue
        total += int(count)
        own[frame] += int(count)
        area = next((a for a, pattern in AREAS if re.search(pattern, path)), "other (Python)")
        areas[area] += int(count)
    share = lambda n: round(100 * n / max(total, 1), 1)  # noqa: E731
    return {
        "samples": total,
        "waiting_in_epoll_left_out_percent": round(100 * idle / max(total + idle, 1), 1),
        "own_time_by_area_percent": {a: share(n) for a, n in areas.most_common()},
        "top_frames_by_own_time_percent": {f: share(n) for f, n in own.most_common(top)},
    }


def profile(pid: int, seconds: float, raw: Path, load: Any) -> dict[str, Any]:
    """py-spy records `pid` while `load()` runs."""
    spy = Path(sys.executable).parent / "py-spy"
    argv = [str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate"]
    argv += ["200", "--nonblocking", "--format", "raw", "--output", str(raw)]
    rec = subprocess.Popen(h.pinned(h.CLIENT_CPU, argv), stdout=subprocess.DEVNULL)
    try:
        result = load()
        rec.wait(timeout=seconds + 60)
    finally:
        rec.kill()
    return {"load": result, **summarise(raw)}


def text(name: str, p: dict[str, Any]) -> str:
    lines = [
        f"# ucupdates serve under {name}: {p['samples']} samples, own time "
        f"({p['waiting_in_epoll_left_out_percent']}% waiting in epoll left out)",
        "",
        "by area:",
    ]
    lines += [f"  {v:5.1f}%  {k}" for k, v in p["own_time_by_area_percent"].items()]
    lines += ["", "top frames:"]
    lines += [f"  {v:5.1f}%  {k}" for k, v in p["top_frames_by_own_time_percent"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tls10", action="store_true", help="also a new TLS 1.0 connection each")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": h.machine_check(), "args": vars(args)}
    h.pin_self()
    with h.workdir("profile", args.keep) as work, h.Fleet(work) as fleet:
        make_sample_package(work / "UCUpdates.cab")
        uc = fleet.ucupdates(h.prepare_appliance(work, work / "UCUpdates.cab"))
        port = uc.ports["internal-https"]
        loads = {
            "keepalive": lambda: h.wrk(
                f"https://127.0.0.1:{port}{h.CHECK_PATH}", 16, args.seconds, sample_check()
            )
        }
        if args.tls10:
            loads["tls10_new"] = lambda: bench_checks.tls10_checks(port, args.seconds, 8, False)
        for name, load in loads.items():
            raw = h.OUT / f"profile-{name}.raw"
            report[name] = profile(
                uc.pid, args.seconds, raw, lambda load=load: h.measured(uc, load)
            )
            summary = text(name, report[name])
            (h.OUT / f"profile-{name}.txt").write_text(summary)
            print(summary)
    h.write_report("profile", report)


if __name__ == "__main__":
    main()
