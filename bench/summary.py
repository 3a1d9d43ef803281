"""`make bench` ends here: one table of every benchmark's last run, from bench/out/*.json.

Columns: the work, ucupdates' figure, the reference's, the ratios (median of the
per-repetition ratios, and their range), the aim. Two ratios for servers: by rate (what
the client managed against each) and by server CPU time per request (per core, whatever
the client's speed). For import and memory the ratio is ucupdates' over the reference's
(lower is better), as the aims put it. The machine's state at each
benchmark's start is listed below the table. Prints Markdown (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

import harness as h

KIB, MIB = 1024, 2**20


def load(name: str) -> dict[str, Any] | None:
    path = h.OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def med(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs if r.get(key) is not None))


def server_cell(runs: list[dict[str, Any]], unit: str) -> str:
    """rate, p99 where there is one, CPU per request."""
    rate = f"{med(runs, 'rate'):,.0f} {unit}"
    p99 = f", p99 {med(runs, 'p99_us') / 1000:.1f} ms" if runs[0].get("p99_us") else ""
    cpu = med(runs, "server_cpu_per_request_us")
    return f"{rate}{p99}, {cpu:,.1f} µs CPU each"


def rows() -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    if checks := load("checks"):
        from bench_checks import AIMS, WORKS

        for key, title in WORKS.items():
            if r := checks.get(key):
                out.append((
                    title, server_cell(r["runs"]["ucupdates"], "checks/s"),
                    "nginx " + server_cell(r["runs"]["nginx"], "checks/s"),
                    h.fmt_ratio(r["ratio_rate"]), h.fmt_ratio(r["ratio_server_cpu_per_request_us"]),
                    f"≥ {AIMS[key]}x",
                ))  # fmt: skip
    if dl := load("downloads"):
        mib = dl["args"]["image_mib"]
        for kind, aim in (("tls", "≥ 0.8x"), ("plain", "≥ 0.9x")):
            r = dl[kind]
            cells = [
                f"{med(r['runs'][n], 'bytes_per_s') / 1e6:,.0f} MB/s, "
                f"{med(r['runs'][n], 'server_cpu_s_per_gib'):.2f} CPU s per GiB"
                for n in ("ucupdates", "nginx")
            ]
            what = "TLS" if kind == "tls" else "plain HTTP"
            out.append((
                f"{mib} MiB image, one connection, {what}", cells[0], "nginx " + cells[1],
                h.fmt_ratio(r["ratio_rate"]), h.fmt_ratio(r["ratio_server_cpu_per_request_us"]),
                aim,
            ))  # fmt: skip
        u, n = dl["slow"]["ucupdates"], dl["slow"]["nginx"]
        per = u["rss_per_connection"] / max(n["rss_per_connection"], 1)
        out.append((
            f"memory per slow download ({u['connected']:,} TLS connections)",
            f"{u['rss_per_connection'] / KIB:.0f} KiB each, "
            f"{u['growth_while_reading'] / MIB:+.1f} MiB while reading",
            f"nginx {n['rss_per_connection'] / KIB:.0f} KiB each, "
            f"{n['growth_while_reading'] / MIB:+.1f} MiB while reading",
            f"{per:.2f}x nginx's RSS per connection (lower is better)", "", "≤ 1.2x, flat",
        ))  # fmt: skip
    if dns := load("dns"):
        r = dns["mix"]
        lost = {n: sum(x["lost"] for x in r["runs"][n]) for n in r["runs"]}
        out.append((
            "DNS, 80 % A / 10 % AAAA / 10 % other",
            server_cell(r["runs"]["ucupdates"], "q/s") + f", {lost['ucupdates']} lost",
            "dnsmasq " + server_cell(r["runs"]["dnsmasq"], "q/s") + f", {lost['dnsmasq']} lost",
            h.fmt_ratio(r["ratio_rate"]), h.fmt_ratio(r["ratio_server_cpu_per_request_us"]),
            "≥ 0.8x, no loss",
        ))  # fmt: skip
    if imp := load("import"):
        for mb in imp["args"]["sizes"]:
            r = imp[f"{mb}MB"]
            cells = [
                f"{med(r['runs'][n], 'seconds'):.2f} s "
                f"({med(r['runs'][n], 'cpu_seconds'):.2f} CPU s), peak RSS "
                f"{max(x['peak_rss_bytes'] for x in r['runs'][n]) / MIB:.0f} MiB"
                for n in ("ucupdates", "cabextract")
            ]
            out.append((
                f"import, {mb} MB of images ({imp['args']['corpus']})", cells[0],
                "cabextract " + cells[1], h.fmt_ratio(r["ratio_time"]) + " the time", "",
                "≤ 1.5x, memory flat",
            ))  # fmt: skip
    return out


def main() -> None:
    head = ("work", "ucupdates", "reference", "ratio (rate; time, memory)", "ratio, CPU", "aim")
    print("\n| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|---|")
    for row in rows():
        print("| " + " | ".join(row) + " |")
    print()
    for name in ("checks", "downloads", "dns", "import", "profile"):
        if report := load(name):
            m = report["machine"]
            state = "BUSY" if m["busy"] else "quiet"
            idle = ", ".join(f"{v:.0%}" for k, v in m["idle_share"].items() if k != "cpu")
            load_1 = m["load_average"][0]
            print(f"- {name}: machine {state} at the start (load {load_1}, idle {idle})")
    if profile := load("profile"):
        for load_name in ("keepalive", "tls10_new"):
            if p := profile.get(load_name):
                print(f"\nprofile, {load_name}: own time by area")
                for area, share in p["own_time_by_area_percent"].items():
                    print(f"  {share:5.1f}%  {area}")


if __name__ == "__main__":
    sys.exit(main())
