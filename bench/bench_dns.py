"""`make bench-dns`: the DNS responder under dnsperf, beside dnsmasq answering the same name.

Both servers run on the same machine in the same run, pinned to one core (taskset -c 0),
while dnsperf runs on another (-c 1), asking `ucupdates-r2.example.com A` for the same
number of seconds; with --rounds N they take turns N times and the best round of each
counts. Reports queries/s, loss and latency, the ratio (aim: at least 0.8x dnsmasq with
no loss), and an RRL check: one client floods from one /24 at a fixed rate while
another prefix asks now and then; answers are counted on the client's side.
Writes bench/out/dns.json. Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.testing import free_port

REPO = Path(__file__).resolve().parent.parent
DNSMASQ = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin") or "dnsmasq"
NAME = "ucupdates-r2.example.com"
HOST = "127.0.0.1"

RUNNER = """\
import json, sys
from pathlib import Path
from twisted.internet import reactor, stdio
from twisted.protocols.basic import LineReceiver
from appliance.config import load_config
from appliance.discovery import make_dns_service

service = make_dns_service(load_config(Path(sys.argv[1])), reactor)
service.startService()

class Control(LineReceiver):
    delimiter = b"\\n"

    def lineReceived(self, line):
        self.sendLine(json.dumps(dict(service.responder.counters)).encode())

    def connectionLost(self, reason):
        reactor.stop()

print(json.dumps(service.ports), flush=True)
stdio.StandardIO(Control())
reactor.run()
"""


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if shutil.which("taskset") else argv


def query(ident: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in NAME.split("."))
    return struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


class Responder:
    """`make_dns_service` in its own process, pinned to core 0."""

    def __init__(self, work: Path, rrl: int, slip: int = 2) -> None:
        config = work / f"dns-{rrl}.toml"
        config.write_text(
            f'data_dir = "data"\n[listeners]\ndns = "{HOST}:0"\n'
            f'[dns]\ninternal_address = "127.0.0.1"\nrrl_responses_per_second = {rrl}\n'
            f"rrl_slip = {slip}\n"
        )
        (work / "runner.py").write_text(RUNNER)
        argv = pinned(0, [sys.executable, str(work / "runner.py"), str(config)])
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, text=True
        )
        assert self.process.stdout is not None
        self.port = int(json.loads(self.process.stdout.readline())["dns-udp"][1])

    def counters(self) -> dict[str, int]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("counters\n")
        self.process.stdin.flush()
        return dict(json.loads(self.process.stdout.readline()))

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


class Dnsmasq:
    def __init__(self) -> None:
        self.port = free_port(socket.SOCK_DGRAM, HOST)
        argv = [
            DNSMASQ,
            "--conf-file=/dev/null",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            f"--listen-address={HOST}",
            f"--port={self.port}",
            "--pid-file=",
            f"--address=/{NAME}/127.0.0.1",
        ]
        self.process = subprocess.Popen(pinned(0, argv), stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def dnsperf(port: int, seconds: int, queries: Path) -> dict[str, float]:
    argv = ["dnsperf", "-s", HOST, "-p", str(port), "-d", str(queries), "-l", str(seconds)]
    text = subprocess.run(
        pinned(1, [*argv, "-c", "1", "-q", "100"]),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout

    def number(label: str) -> float:
        m = re.search(rf"{label}:\s+([\d.]+)", text)
        if not m:
            raise SystemExit(f"dnsperf printed no '{label}':\n{text}")
        return float(m.group(1))

    return {
        "qps": number("Queries per second"),
        "sent": number("Queries sent"),
        "lost": number("Queries lost"),
        "latency_ms": number(r"Average Latency \(s\)") * 1000,
        "latency_stddev_ms": number(r"Latency StdDev \(s\)") * 1000,
    }


def rrl_check(work: Path, rate: int, seconds: float, flood_qps: int) -> dict[str, float]:
    """One client floods from 127.0.0.1 (127.0.0.0/24); another asks from 127.0.1.1."""
    responder = Responder(work, rrl=rate)
    counts = {"sent": 0, "answers": 0, "slipped": 0, "other_sent": 0, "other_answers": 0}
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
        ):
            flood.bind((HOST, 0))
            other.bind(("127.0.1.1", 0))
            flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            _flood(flood, other, responder.port, seconds, flood_qps, counts)
        server = responder.counters()
    finally:
        responder.stop()
    budget = rate * seconds + rate  # a second's worth of burst
    return {
        **counts,
        "seconds": seconds,
        "rate_limit": rate,
        "budget": budget,
        "rrl_dropped": server["rrl_dropped"],
        "rrl_slipped": server["rrl_slipped"],
    }


def _flood(
    flood: socket.socket,
    other: socket.socket,
    port: int,
    seconds: float,
    qps: int,
    counts: dict[str, int],
) -> None:
    began = time.monotonic()
    total = int(seconds * qps)
    for n in range(total):  # paced: query n leaves at n / qps seconds
        while time.monotonic() - began < n / qps:
            _receive(flood, other, counts, 0.0005)
        flood.sendto(query(n & 0xFFFF), (HOST, port))
        counts["sent"] += 1
        if n % (qps // 10) == 0:  # ten times a second from the other prefix
            other.sendto(query(n & 0xFFFF), (HOST, port))
            counts["other_sent"] += 1
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        _receive(flood, other, counts, 0.05)


def _receive(
    flood: socket.socket, other: socket.socket, counts: dict[str, int], wait: float
) -> None:
    ready, _, _ = select.select([flood, other], [], [], wait)
    for sock in ready:
        reply = sock.recv(4096)
        ancount, flags = (
            struct.unpack_from("!H", reply, 6)[0],
            struct.unpack_from("!H", reply, 2)[0],
        )
        if sock is other:
            counts["other_answers"] += int(ancount > 0)
        elif ancount:
            counts["answers"] += 1
        elif flags & 0x0200:
            counts["slipped"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="dnsperf run length")
    parser.add_argument("--rounds", type=int, default=2, help="turns each server takes")
    parser.add_argument("--rrl-rate", type=int, default=100, help="responses/s in the RRL check")
    parser.add_argument("--flood-qps", type=int, default=5000, help="the flooding client's rate")
    args = parser.parse_args()
    for tool, package in (("dnsperf", "dnsperf"), (DNSMASQ, "dnsmasq-base")):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (Debian package {package})")
    out_dir = REPO / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-dns-") as tmp:
        work = Path(tmp)
        queries = work / "queries.txt"
        queries.write_text(f"{NAME} A\n")
        runs: dict[str, list[dict[str, float]]] = {"dnsmasq": [], "ucupdates": []}
        for _ in range(args.rounds):
            dnsmasq = Dnsmasq()
            try:
                runs["dnsmasq"].append(dnsperf(dnsmasq.port, args.seconds, queries))
            finally:
                dnsmasq.stop()
            ours = Responder(work, rrl=100_000_000)
            try:
                runs["ucupdates"].append(dnsperf(ours.port, args.seconds, queries))
                counters = ours.counters()
            finally:
                ours.stop()
        rrl = rrl_check(work, args.rrl_rate, 3.0, args.flood_qps)
    best = {name: max(results, key=lambda r: r["qps"]) for name, results in runs.items()}
    report = {
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
        "seconds": args.seconds,
        "rounds": runs,
        "best": best,
        "ratio": best["ucupdates"]["qps"] / best["dnsmasq"]["qps"],
        "ucupdates_counters": counters,
        "rrl": rrl,
    }
    print_report(report)
    (out_dir / "dns.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {out_dir / 'dns.json'}")


def print_report(report: dict[str, object]) -> None:
    best: dict[str, dict[str, float]] = report["best"]  # type: ignore[assignment]
    machine: dict[str, object] = report["machine"]  # type: ignore[assignment]
    load = ", ".join(f"{x:.1f}" for x in machine["load"])  # type: ignore[attr-defined]
    print(f"\n### dnsperf, {report['seconds']} s, server on core 0, dnsperf on core 1\n")
    print(f"{machine['cpus']} CPUs, load average {load} at the end; best round of each\n")
    print("| server | queries/s | lost | avg latency | latency stddev |")
    print("|---|---|---|---|---|")
    for name, r in best.items():
        print(
            f"| {name} | {r['qps']:,.0f} | {r['lost']:.0f} of {r['sent']:.0f} "
            f"| {r['latency_ms']:.3f} ms | {r['latency_stddev_ms']:.3f} ms |"
        )
    print(f"\nratio ucupdates / dnsmasq: {report['ratio']:.2f}x (aim: at least 0.8x, no loss)")
    rrl: dict[str, float] = report["rrl"]  # type: ignore[assignment]
    print(
        f"\n### RRL: {rrl['rate_limit']:.0f} responses/s per /24, slip 2, "
        f"{rrl['seconds']:.0f} s flood\n"
    )
    print("| flooding client | sent | full answers | budget | slipped (TC) | no reply |")
    print("|---|---|---|---|---|---|")
    none = rrl["sent"] - rrl["answers"] - rrl["slipped"]
    print(
        f"| 127.0.0.1 (127.0.0.0/24) | {rrl['sent']:.0f} | {rrl['answers']:.0f} "
        f"| {rrl['budget']:.0f} | {rrl['slipped']:.0f} | {none:.0f} |"
    )
    print(
        f"\nanother prefix (127.0.1.1) during the flood: {rrl['other_answers']:.0f} of "
        f"{rrl['other_sent']:.0f} answered; server counters: {rrl['rrl_dropped']:.0f} dropped, "
        f"{rrl['rrl_slipped']:.0f} slipped"
    )


if __name__ == "__main__":
    main()
