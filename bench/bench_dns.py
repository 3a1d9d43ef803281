"""`make bench-dns`: the discovery responder of `ucupdates serve` beside dnsmasq.

The realistic mix (a building of phones booting): 80 % `ucupdates-r2.example.com A`, 10 %
its AAAA, 10 % ten other names (Lync's discovery names, SRV records, NTP and CRL hosts),
which neither server forwards (no upstreams: both answer REFUSED). dnsmasq answers the
name with --address and --local (so its AAAA is NODATA, as ours, not REFUSED). dnsperf
(one client, at most 100 queries in flight, no EDNS) on the client CPU, each server on the
server CPU, taking turns --reps times for --seconds. Reported: queries/s, loss, and each
server's CPU time per query (/proc), median ratio and range; aim at least 0.8x, no loss.

Then a rate-limiting check (--rrl-rate answers/s per /24, slip 2): one client floods
from 127.0.0.1 while another prefix (127.0.1.1) asks ten times a second; answers counted
on the client side. Writes bench/out/dns.json.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import time
from typing import Any

import harness as h
from dnslib import DNSRecord

NAME = f"ucupdates-r2.{h.DOMAIN}"
OTHERS = [
    "lyncdiscoverinternal.example.com A",
    "lyncdiscover.example.com A",
    "_sipinternaltls._tcp.example.com SRV",
    "_sip._tls.example.com SRV",
    "sipinternal.example.com A",
    "time.windows.com A",
    "www.example.com A",
    "pool.ntp.org A",
    "crl.microsoft.com A",
    "example.com SOA",
]


def mix() -> list[str]:
    """100 lines, dnsperf's input, asked in order over and over."""
    lines = []
    for other in OTHERS:
        lines += [f"{NAME} A"] * 4 + [f"{NAME} AAAA"] + [f"{NAME} A"] * 4 + [other]
    return lines


def ask(port: int, line: str, source: str = "127.0.0.1") -> str:
    """rcode and answer count of one query, or "no answer"."""
    name, qtype = line.split()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(2)
        s.sendto(DNSRecord.question(name, qtype).pack(), ("127.0.0.1", port))
        try:
            reply = DNSRecord.parse(s.recv(4096))
        except TimeoutError:
            return "no answer"
    return f"{reply.header.rcode} {len(reply.rr)} answers"


def query(ident: int) -> bytes:
    packet = DNSRecord.question(NAME, "A")
    packet.header.id = ident
    return bytes(packet.pack())


def rrl_check(port: int, rate: int, seconds: float, flood_qps: int) -> dict[str, Any]:
    """A flood from 127.0.0.1 (paced at `flood_qps`), ten queries a second from another
    /24; full answers, truncated slips and silence counted here."""
    counts = {"sent": 0, "answers": 0, "slipped": 0, "other_sent": 0, "other_answers": 0}
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
    ):
        flood.bind(("127.0.0.1", 0))
        other.bind(("127.0.1.1", 0))
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

        def receive(wait: float) -> None:
            for sock in select.select([flood, other], [], [], wait)[0]:
                reply = DNSRecord.parse(sock.recv(4096))
                if sock is other:
                    counts["other_answers"] += bool(reply.rr)
                elif reply.rr:
                    counts["answers"] += 1
                elif reply.header.tc:
                    counts["slipped"] += 1

        began = time.monotonic()
        for n in range(int(seconds * flood_qps)):
            while time.monotonic() - began < n / flood_qps:
                receive(0.0005)
            flood.sendto(query(n & 0xFFFF), ("127.0.0.1", port))
            counts["sent"] += 1
            if n % (flood_qps // 10) == 0:
                other.sendto(query(n & 0xFFFF), ("127.0.0.1", port))
                counts["other_sent"] += 1
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            receive(0.05)
    return {**counts, "rate_limit": rate, "seconds": seconds, "budget": int(rate * (seconds + 1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each dnsperf run")
    parser.add_argument("--reps", type=int, default=3, help="A B pairs")
    parser.add_argument("--rrl-rate", type=int, default=100, help="answers/s in the RRL check")
    parser.add_argument("--flood-qps", type=int, default=5000, help="the flooding client's rate")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    machine = h.machine_check()
    h.pin_self()
    report: dict[str, Any] = {"machine": machine, "args": vars(args)}
    with h.workdir("dns", args.keep) as work:
        queries = work / "queries.txt"
        queries.write_text("\n".join(mix()) + "\n")

        def config(rrl: int) -> Any:
            dns = f'[dns]\ninternal_address = "127.0.0.1"\nrrl_responses_per_second = {rrl}\n'
            return h.prepare_appliance(work, None, dns)

        with h.Fleet(work) as fleet:
            uc = fleet.ucupdates(config(100_000_000))
            ref = fleet.dnsmasq(h.free_port(), f"--address=/{NAME}/127.0.0.1", f"--local=/{NAME}/")
            ports = {"ucupdates": uc.ports["dns-udp"], "dnsmasq": ref.ports["dns"]}
            servers = {"ucupdates": uc, "dnsmasq": ref}
            distinct = list(dict.fromkeys(mix()))
            report["answers"] = {n: {q: ask(p, q) for q in distinct} for n, p in ports.items()}
            for q in distinct:
                print(f"  {q}: " + "; ".join(f"{n} {a[q]}" for n, a in report["answers"].items()))
            print("\n## DNS, realistic mix")
            runs = h.interleave(
                list(ports),
                args.reps,
                lambda n, _: h.measured(
                    servers[n], lambda: h.dnsperf(ports[n], queries, args.seconds)
                ),
            )
            report["mix"] = h.compare(runs, "ucupdates", "dnsmasq")
        print(f"\n## RRL: {args.rrl_rate} answers/s per /24, a {args.flood_qps} q/s flood")
        with h.Fleet(work) as fleet:
            uc = fleet.ucupdates(config(args.rrl_rate))
            report["rrl"] = rrl_check(uc.ports["dns-udp"], args.rrl_rate, 3.0, args.flood_qps)
    report["machine_after"] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
    print_table(report)
    h.write_report("dns", report)


def print_table(report: dict[str, Any]) -> None:
    r = report["mix"]
    cells = []
    for name in ("ucupdates", "dnsmasq"):
        runs = r["runs"][name]
        cpu = statistics.median(x["server_cpu_per_request_us"] for x in runs)
        lost = sum(x["lost"] for x in runs)
        sent = sum(x["sent"] for x in runs)
        cells.append(
            f"{r['rate'][name]:,.0f} q/s, {cpu:.1f} µs CPU per query, lost {lost} of {sent:,}"
        )
    print("\n| work | ucupdates | dnsmasq | ratio, rate | ratio, CPU per query | aim |")
    print("|---|---|---|---|---|---|")
    print(
        f"| DNS, 80 % A / 10 % AAAA / 10 % other | {cells[0]} | {cells[1]} "
        f"| {h.fmt_ratio(r['ratio_rate'])} | {h.fmt_ratio(r['ratio_server_cpu_per_request_us'])} "
        "| ≥ 0.8x, no loss |"
    )
    q = report["rrl"]
    silent = q["sent"] - q["answers"] - q["slipped"]
    print(
        f"\nRRL: the flood sent {q['sent']:,}: {q['answers']} full answers (budget "
        f"{q['budget']}), {q['slipped']:,} truncated, {silent:,} unanswered; another prefix: "
        f"{q['other_answers']} of {q['other_sent']} answered"
    )


if __name__ == "__main__":
    main()
