"""`make bench-fleet`: a fleet of phones against `ucupdates serve`, with its pictures.

1. **The morning storm.** Every phone makes its boot check within ten minutes, scaled
   down: the window is --window seconds (60: 1:10), each phone's moment uniform at random
   in it. A check is a new TLS 1.0 connection (AES128-SHA, no SNI) from the phone's own
   loopback address (127.1.x.y), as phone-sim's phones make them; the phones already run
   the approved version, so each answer is `Downloads` 0. Run at --sizes phones (1,000,
   3,000, 10,000), each against a freshly started serve: the per-check CPU and the memory
   are compared across sizes (the aim: flat per check, flat in the number of phones).
2. **A rollout.** --rollout phones (1,000, CX600 ENU) run the old version; the approved
   one has a --image-mib MiB image (30). They check within --rollout-window seconds and
   download the image over the BaseURL (plain HTTP inside, as Lync announces it) under
   `service.max_downloads` (--cap, 50): beyond the cap a phone gets 503 and Retry-After and
   tries again (phone-sim waits at most 5 s), so every phone gets its image in the end.
   The cap is lowered from the shipped 256 so that it binds: one client core reading and
   hashing (SHA-256) about 0.7 GB/s keeps only 60-70 bodies going at once.

The phones are phone-sim's fleet (appliance/phonesim: `run_fleet`, `run_round`), run by
--procs client processes on the client CPU, each with a share of the MACs and the same
start; serve runs on the server CPU (bench/harness.py). The parent samples serve's RSS,
open descriptors and CPU time from /proc/<pid> every --sample seconds. Reported: checks/s,
check latency p50/p99/max, failures by cause (aim 0), download MB/s, serve's CPU per
check, peak RSS and descriptors, and the growth from the smallest to the largest run.
Writes bench/out/fleet.json (totals and per-second series) and the charts
docs/fleet-storm.svg and docs/fleet-rollout.svg (bench/chart.py). FLEET=N scales it down.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import chart
import fleet_series as fs
import harness as h
from bench_downloads import make_package

from appliance.catalogue.sample import DEFAULT_VERSION as APPROVED

MIB = 1 << 20
OLD = "4.0.7577.4366"  # what the rollout's phones run before it
ROLLOUT_MODEL = ("Polycom", "CX600", "A")  # the model whose image is --image-mib (ENU)


def address(n: int) -> str:
    """Phone n's own loopback address: 127.1.0.1 ... (250 a /24, no .0 or .255)."""
    return f"127.{1 + n // 64000}.{n // 250 % 256}.{n % 250 + 1}"


# -- the client process --------------------------------------------------------------------


def client(spec: dict[str, Any]) -> None:
    """Run spec["count"] phones from spec["first"] through phone-sim's fleet engine, the
    first round due at spec["start"] (CLOCK_MONOTONIC, shared by the processes); write
    every round and every image body, times from that start, to spec["out"]."""
    import appliance.phonesim.phone as phone_module
    from appliance.phonesim import FleetSpec, Net, Schedule, Settings, fleet, phone_tls, run_fleet

    start = float(spec["start"])
    rounds: list[list[Any]] = []
    downloads: list[list[Any]] = []
    fetch = getattr(phone_module, "download", None)  # what run_round fetches a file with

    def download(url: str, connections: Any, credentials: Any, retries: int, sleep: Any) -> Any:
        mark, refused = [time.monotonic()], [0]

        def slept(seconds: float) -> None:  # called only after a 503: the body starts later
            refused[0] += 1
            sleep(seconds)
            mark[0] = time.monotonic()

        got = fetch(url, connections, credentials, retries, slept)
        downloads.append([mark[0] - start, time.monotonic() - start, got.wire_bytes, refused[0]])
        return got

    if fetch is not None:  # the body's own time, without the 503 waits
        phone_module.download = download

    def timed(phone: Any, state: Any, settings: Any) -> Any:
        t0 = time.monotonic()
        r = phone_module.run_round(phone, state, settings)
        check = r.seconds.get("check")
        rounds.append([t0 - start, time.monotonic() - start, r.outcome, r.cause, check, r.bytes])
        return r

    first, count = int(spec["first"]), int(spec["count"])
    models = tuple(tuple(m) for m in spec["models"]) if spec.get("models") else None
    fleet_spec = FleetSpec(
        sources=tuple(address(first + i) for i in range(count)), first_number=first,
        seed=first, **({"models": models} if models else {}),
    )  # fmt: skip
    phones = fleet(count, fleet_spec)
    net = Net(phone_tls(None, "1.0"), False, float(spec["timeout"]), "127.0.0.1")
    settings = Settings(net=net, server=spec["server"], retries=int(spec["retries"]))
    schedule = Schedule(
        concurrency=int(spec["concurrency"]), jitter=float(spec["window"]), rounds=1,
        deadline=float(spec["window"]) + float(spec["timeout"]) * 4 + 120, seed=first,
    )  # fmt: skip
    time.sleep(max(0.0, start - time.monotonic()))
    cpu0 = os.times()
    run_fleet(phones, settings, schedule, start_version=spec["version"], round_runner=timed)
    cpu1 = os.times()
    used = cpu1.user + cpu1.system - cpu0.user - cpu0.system
    Path(spec["out"]).write_text(
        json.dumps({"rounds": rounds, "downloads": downloads, "cpu_seconds": round(used, 3)})
    )


# -- the parent: serve, the clients, the samples -------------------------------------------


class Sampler(threading.Thread):
    """serve's RSS, open descriptors and CPU seconds every `every` s, times from `start`."""

    def __init__(self, pid: int, start: float, every: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.start_at, self.every = pid, start, every
        self.samples: list[list[float]] = []
        self.halt = threading.Event()

    def sample(self) -> list[float]:
        try:
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            fds = 0
        t = time.monotonic() - self.start_at
        return [round(t, 3), h.rss(self.pid), fds, h.cpu_seconds(self.pid)]

    def run(self) -> None:
        while not self.halt.wait(self.every):
            self.samples.append(self.sample())


def settle(pid: int, limit: float = 60.0) -> None:
    """Wait until serve has done its start-up work (it hashes the stored images): its CPU
    time still for half a second, or `limit` seconds."""
    deadline, last = time.monotonic() + limit, -1.0
    while time.monotonic() < deadline:
        now = h.cpu_seconds(pid)
        if now - last < 0.01:
            return
        last = now
        time.sleep(0.5)


def run_phones(
    args: argparse.Namespace, work: Path, config: Path, name: str, phones: int,
    window: float, **spec: Any,
) -> dict[str, Any]:  # fmt: skip
    """A fresh serve, `phones` phones split over the client processes, the samples."""
    with h.Fleet(work) as servers:
        server = servers.ucupdates(config)
        settle(server.pid)
        port = server.ports["internal-https"]
        procs = max(1, min(args.procs, phones))
        start = time.monotonic() + 2.0  # time for the clients to start and build phones
        sampler = Sampler(server.pid, start, args.sample)
        before = sampler.sample()
        sampler.start()
        children, outs = [], []
        for n in range(procs):
            share = range(n * phones // procs, (n + 1) * phones // procs)
            out = work / f"{name}-{n}.json"
            outs.append(out)
            job = {
                "first": 1 + share.start, "count": len(share), "start": start,
                "window": window, "out": str(out), "timeout": args.timeout,
                "server": f"https://ucupdates-r2.{h.DOMAIN}:{port}",
                "concurrency": max(1, args.concurrency // procs), **spec,
            }  # fmt: skip
            argv = [sys.executable, __file__, "client", json.dumps(job)]
            children.append(subprocess.Popen(h.pinned(h.CLIENT_CPU, argv), cwd=h.REPO))
        for child in children:
            if child.wait(timeout=window + 900) != 0:
                raise SystemExit(f"a client process failed ({child.returncode})")
        time.sleep(args.sample * 2)  # a last sample or two after the end
        sampler.halt.set()
        sampler.join()
    merged = fs.merge([json.loads(p.read_text()) for p in outs])
    t = fs.totals(merged)
    samples = sampler.samples
    used = (samples[-1][3] if samples else before[3]) - before[3]
    idle = [s for s in samples if s[0] <= 0]  # the lead-in: serve with nothing to do
    idle_share = (idle[-1][3] - before[3]) / (idle[-1][0] - before[0]) if len(idle) > 1 else 0.0
    span = (samples[-1][0] - before[0]) if samples else 0.0
    t.update({
        "name": name, "phones": phones, "window_seconds": window,
        "server_cpu_seconds": round(used, 2),
        "server_cpu_per_check_us": round(1e6 * used / max(t["checks"], 1)),
        "server_idle_cpu_share": round(idle_share, 4),
        "server_cpu_per_check_net_us": round(
            1e6 * max(used - idle_share * span, 0.0) / max(t["checks"], 1)),
        "client_cpu_seconds": merged["cpu_seconds"], "client_processes": procs,
        "rss_before_mib": round(before[1] / MIB, 1), "fds_before": before[2],
        "rss_peak_mib": round(max((s[1] for s in samples), default=0) / MIB, 1),
        "fds_peak": max((s[2] for s in samples), default=0),
    })  # fmt: skip
    t["rss_growth_mib"] = round(t["rss_peak_mib"] - t["rss_before_mib"], 1)
    seconds = fs.seconds_of(merged, samples)
    series = {**fs.check_series(merged, seconds), **fs.server_series(samples, seconds)}
    if merged["downloads"]:
        series.update(fs.download_series(merged, seconds))
        span = max(d[1] for d in merged["downloads"]) - min(d[0] for d in merged["downloads"])
        t["download_mb_per_s"] = round(t["download_bytes"] / max(span, 1e-9) / 1e6, 1)
        t["server_cpu_s_per_gb"] = round(used / max(t["download_bytes"] / 1e9, 1e-9), 3)
    print(f"  {brief(t)}", flush=True)
    return {"totals": t, "series": series}


def brief(t: dict[str, Any]) -> str:
    line = (
        f"{t['name']}: {t['phones']:,} phones, {t['checks']:,} checks in {t['span_seconds']:.0f}"
        f" s ({t['checks_per_s']:,.0f}/s), p50 {t['check_ms']['p50']:.1f} ms, p99 "
        f"{t['check_ms']['p99']:.1f} ms, failed {t['failed']} {t['failures'] or ''}, serve "
        f"{t['server_cpu_per_check_us']:,} us CPU a check, RSS {t['rss_before_mib']:.0f} -> "
        f"{t['rss_peak_mib']:.0f} MiB, fds {t['fds_before']} -> {t['fds_peak']}"
    )
    if t.get("download_mb_per_s"):
        line += (
            f", {t['downloads']:,} files, {t['download_bytes'] / 1e9:.1f} GB at "
            f"{t['download_mb_per_s']:,.0f} MB/s, {t['refused_503']:,} x 503, serve "
            f"{t['server_cpu_s_per_gb']:.2f} CPU s a GB (checks included)"
        )
    return line


# -- pictures and the report ---------------------------------------------------------------


def points(values: list[float | None]) -> list[tuple[float, float]]:
    """A per-second series as points at each second's middle (a None left out)."""
    return [(i + 0.5, v) for i, v in enumerate(values) if v is not None]


def storm_chart(storms: list[dict[str, Any]], window: float) -> str:
    panels = [chart.Panel(label) for label in ("checks/s", "check p99 (ms)", "serve RSS (MiB)",
                                               "serve open fds")]  # fmt: skip
    for n, run in enumerate(storms):
        name, colour = f"{run['totals']['phones']:,} phones", chart.COLOURS[n]
        for panel, key in zip(panels, ("checks_per_s", "p99_ms", "rss_mib", "fds"), strict=True):
            panel.series.append(chart.Series(name, points(run["series"][key]), colour))
    sub = (f"every phone's boot check (new TLS 1.0 connection) within {window:g} s, "
           f"10 minutes scaled 1:{600 / window:g}; serve on one core")  # fmt: skip
    return chart.svg_chart("The morning storm", sub, panels)


def rollout_chart(run: dict[str, Any], cap: int, image_mib: int) -> str:
    s, t = run["series"], run["totals"]
    flight = chart.Panel("downloads in flight", [
        chart.Series("downloads in flight", points(s["downloads_in_flight"]), chart.COLOURS[0]),
        chart.Series("max_downloads", [(0, cap), (len(s["fds"]), cap)], "#777777", dashed=True),
    ])  # fmt: skip
    panels = [
        flight,
        chart.Panel("MB/s", [chart.Series("MB/s", points(s["mb_per_s"]), chart.COLOURS[2])]),
        chart.Panel("serve RSS (MiB)",
                    [chart.Series("RSS", points(s["rss_mib"]), chart.COLOURS[3])]),
        chart.Panel("serve open fds", [chart.Series("fds", points(s["fds"]), chart.COLOURS[4])]),
    ]  # fmt: skip
    sub = (
        f"{t['phones']:,} phones fetch a {image_mib} MiB image over HTTP, max_downloads "
        f"{cap}; in flight: GET to last byte, as the clients see it"
    )
    return chart.svg_chart("A rollout", sub, panels)


def draw(report: dict[str, Any], folder: Path) -> None:
    """The storm's and the rollout's charts, from a report as fleet.json holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    options = report["options"]
    if report["storm"]:
        svg = storm_chart(report["storm"], float(options["window"]))
        (folder / "fleet-storm.svg").write_text(svg)
    if "rollout" in report:
        svg = rollout_chart(report["rollout"], int(options["cap"]), int(options["image_mib"]))
        (folder / "fleet-rollout.svg").write_text(svg)
    print(f"charts: {folder}/fleet-storm.svg, fleet-rollout.svg")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "client":
        client(json.loads(sys.argv[2]))
        return
    fleet = int(os.environ.get("FLEET", "10000"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=f"{fleet // 10},{fleet * 3 // 10},{fleet}",
                   help="storm sizes, comma-separated (FLEET=N: N/10, 3N/10, N)")  # fmt: skip
    p.add_argument("--window", type=float, default=max(6.0, 60.0 * fleet / 10000),
                   help="the storm's window in seconds (60 at 10,000 phones: 1:10)")  # fmt: skip
    p.add_argument("--rollout", type=int, default=fleet // 10, help="phones in the rollout")
    p.add_argument("--rollout-window", type=float, default=10.0)
    p.add_argument("--image-mib", type=int, default=30)
    p.add_argument("--cap", type=int, default=50, help="service.max_downloads (256 ships)")
    p.add_argument("--procs", type=int, default=2, help="client processes")
    p.add_argument("--concurrency", type=int, default=600, help="rounds at once, all clients")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--sample", type=float, default=0.25, help="seconds between /proc samples")
    p.add_argument("--charts", type=Path, default=h.REPO / "docs", help="where the SVGs go")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--redraw", action="store_true", help="only draw the charts of fleet.json")
    args = p.parse_args()
    if args.redraw:
        draw(json.loads((h.OUT / "fleet.json").read_text()), args.charts)
        return
    sizes = sorted(int(x) for x in args.sizes.split(",") if x.strip())
    machine = h.machine_check()
    h.pin_self(h.CLIENT_CPU)
    report: dict[str, Any] = {"machine": machine, "options": vars(args), "storm": []}
    with h.workdir("fleet", args.keep) as work:
        package = work / "UCUpdates.cab"
        make_package(package, args.image_mib * MIB)
        config = h.prepare_appliance(work, package, max_downloads=args.cap)
        print(f"the morning storm, window {args.window:g} s (10 minutes at 1:"
              f"{600 / args.window:g}), {args.procs} client processes", flush=True)  # fmt: skip
        for n in sizes:
            report["storm"].append(run_phones(
                args, work, config, f"storm-{n}", n, args.window, version=APPROVED,
                retries=3, models=None,
            ))  # fmt: skip
        if args.rollout > 0:
            print(f"a rollout: {args.rollout:,} phones, a {args.image_mib} MiB image, "
                  f"max_downloads {args.cap}", flush=True)  # fmt: skip
            report["rollout"] = run_phones(
                args, work, config, "rollout", args.rollout, args.rollout_window, version=OLD,
                retries=10_000, models=[list(ROLLOUT_MODEL)],
                concurrency=args.rollout // max(1, args.procs) + 1,  # every phone at once
            )  # fmt: skip
    runs = [r["totals"] for r in report["storm"]]
    report["growth"] = {k: fs.growth(runs, k) for k in (
        "phones", "server_cpu_per_check_us", "rss_peak_mib", "rss_growth_mib", "fds_peak",
        "check_ms")}  # fmt: skip
    report["growth"].pop("check_ms")
    print_table(report)
    h.write_report("fleet", report)
    draw(report, args.charts)
    failed = sum(r["failed"] for r in runs) + report.get("rollout", {}).get("totals", {}).get(
        "failed", 0
    )
    if failed:
        print(f"FAILED ROUNDS: {failed}", file=sys.stderr)


def print_table(report: dict[str, Any]) -> None:
    print("\n| phones | checks/s | p50 ms | p99 ms | failed | serve CPU/check | RSS MiB | fds |")
    print("|---|---|---|---|---|---|---|---|")
    for run in report["storm"]:
        t = run["totals"]
        print(f"| {t['phones']:,} | {t['checks_per_s']:,.0f} (peak "
              f"{max(run['series']['checks_per_s'], default=0):,.0f}) | {t['check_ms']['p50']:.1f} "
              f"| {t['check_ms']['p99']:.1f} | {t['failed']} | {t['server_cpu_per_check_us']:,} µs "
              f"| {t['rss_before_mib']:.0f} -> {t['rss_peak_mib']:.0f} | {t['fds_before']} -> "
              f"{t['fds_peak']} |")  # fmt: skip
    g = report["growth"]
    if len(report["storm"]) > 1:
        print(f"\ngrowth, largest over smallest storm: phones {g['phones']}x, CPU per check "
              f"{g['server_cpu_per_check_us']}x, peak RSS {g['rss_peak_mib']}x, peak fds "
              f"{g['fds_peak']}x")  # fmt: skip
    if "rollout" in report:
        print(brief(report["rollout"]["totals"]))


if __name__ == "__main__":
    main()
