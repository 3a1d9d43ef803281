"""`make bench-check`: update checks, ucupdates beside nginx, as the phones make them.

Three works, each run by both servers in turn (A B A B, --reps times, --seconds each):

1. keep-alive: wrk, 16 connections, TLS as wrk negotiates it (1.3), POSTing the sample
   check over and over;
2. a new TLS 1.0 connection per check, AES128-SHA (RSA key exchange), no SNI, no
   resumption, `Connection: close`: what a Lync Phone Edition phone does;
3. the same with TLS session resumption (the session id from the worker's first
   connection offered on every later one; both servers keep a session cache and issue no
   tickets).

For 2 and 3 the client is this script: --clients processes on the client CPU, each making
one check after another with Python's ssl (wrk cannot force TLS 1.0 and reuses
connections). A Python client saturates its core before nginx does, so the rate ratio
there is the client's, not the servers'; the figure the aim is about is the server's CPU
time per check, read from /proc. The report says how busy the client was and how many
checks per CPU-second it can make (its own ceiling).

Both servers answer with the same bytes (checked first) and the same certificate, key
and cipher list. Writes bench/out/checks.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import resource
import socket
import ssl
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any

import harness as h

from appliance.catalogue.sample import make_sample_package, sample_check

TLS10_CIPHER = "AES128-SHA:@SECLEVEL=0"


def tls10_context() -> ssl.SSLContext:
    """A client that speaks TLS 1.0 with AES128-SHA only, verifies nothing, sends no SNI."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():  # deprecated, and exactly what the phones speak
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers(TLS10_CIPHER)
    return ctx


@dataclass
class Answer:
    data: bytes
    tls: str
    reused: bool
    session: ssl.SSLSession | None


def one_check(
    ctx: ssl.SSLContext,
    port: int,
    request: bytes,
    session: ssl.SSLSession | None,
    keep_session: bool = False,
) -> Answer:
    """One check on a new connection, offering `session`: the whole answer."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    # the request follows the handshake's last flight at once: without this, Nagle holds
    # it for the server's delayed ACK (40 ms) on a resumed handshake
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with ctx.wrap_socket(raw, server_hostname=None, session=session) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    (
                        int(x.split(b":")[1])
                        for x in head.lower().split(b"\r\n")
                        if x.startswith(b"content-length:")
                    ),
                    None,
                )
                if length is not None and len(body) >= length:
                    break
        cipher = s.cipher()
        tls = f"{s.version()} {cipher[0] if cipher else '?'}"
        # (reading s.session costs the client about 0.2 ms: only when it is to be kept)
        return Answer(data, tls, s.session_reused, s.session if keep_session else None)


def _worker(
    port: int, seconds: float, resume: bool, request: bytes, start: float
) -> dict[str, Any]:
    """Checks one after another until `start + seconds`; latencies in microseconds."""
    ctx = tls10_context()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    session = None
    latencies: list[float] = []
    errors = reused = 0
    while time.time() < start:
        time.sleep(0.001)
    end = time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        try:
            answer = one_check(ctx, port, request, session, resume and session is None)
        except (OSError, ssl.SSLError):
            errors += 1
            continue
        if not answer.data.startswith(b"HTTP/1.1 200"):
            errors += 1
            continue
        latencies.append((time.perf_counter() - t0) * 1e6)
        reused += answer.reused
        if resume and session is None:
            session = answer.session
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    return {"latencies": latencies, "errors": errors, "reused": reused, "cpu": cpu}


def check_request(port: int) -> bytes:
    body = sample_check()
    return (
        f"POST {h.CHECK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def tls10_checks(port: int, seconds: float, clients: int, resume: bool) -> dict[str, Any]:
    """--clients processes (forked, on the client CPU) making checks on new connections."""
    request = check_request(port)
    start = time.time() + 0.3
    fork = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(clients, mp_context=fork) as pool:
        futures = [
            pool.submit(_worker, port, seconds, resume, request, start) for _ in range(clients)
        ]
        parts = [f.result(timeout=seconds + 60) for f in futures]
    latencies = sorted(x for p in parts for x in p["latencies"])
    n = len(latencies)
    client_cpu = sum(p["cpu"] for p in parts)
    return {
        "requests": n,
        "seconds": seconds,
        "errors": sum(p["errors"] for p in parts),
        "resumed": sum(p["reused"] for p in parts),
        "p50_us": latencies[n // 2] if n else None,
        "p99_us": latencies[min(n - 1, n * 99 // 100)] if n else None,
        "client_cpu_share": round(client_cpu / seconds, 3),
        "client_checks_per_cpu_s": round(n / client_cpu, 1) if client_cpu else None,
    }


def handshake(port: int) -> str:
    """Version and cipher of one TLS 1.0 check (proves both servers speak it)."""
    return one_check(tls10_context(), port, check_request(port), None).tls


WORKS = {
    "keepalive": "checks, TLS keep-alive, 16 connections (wrk)",
    "tls10_new": "checks, new TLS 1.0 connection each, AES128-SHA, no resumption",
    "tls10_resumed": "checks, new TLS 1.0 connection each, with session resumption",
}
AIMS = {"keepalive": 0.25, "tls10_new": 0.7, "tls10_resumed": 0.3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--reps", type=int, default=3, help="A B pairs per work")
    parser.add_argument("--clients", type=int, default=8, help="TLS 1.0 client processes")
    parser.add_argument("--works", nargs="*", default=list(WORKS), choices=list(WORKS))
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    machine = h.machine_check()
    h.pin_self()
    with h.workdir("checks", args.keep) as work, h.Fleet(work) as fleet:
        make_sample_package(work / "UCUpdates.cab")
        config = h.prepare_appliance(work, work / "UCUpdates.cab")
        uc = fleet.ucupdates(config)
        answer = h.check_answer(uc)
        conf, https, _ = h.nginx_config(work, config, answer)
        ngx = fleet.nginx(conf)
        ports = {"ucupdates": uc.ports["internal-https"], "nginx": https}
        servers = {"ucupdates": uc, "nginx": ngx}
        parity = {}
        for name, port in ports.items():
            status, _, body = h.fetch(port, "POST", h.CHECK_PATH, sample_check())
            parity[name] = {
                "status": status,
                "same_answer": body == answer[1],
                "tls10": handshake(port),
            }
            if status != 200 or body != answer[1]:
                raise SystemExit(f"{name} does not give ucupdates' answer: {status} {body!r}")
        print(f"servers: {parity}")
        report: dict[str, Any] = {"machine": machine, "parity": parity, "args": vars(args)}

        def run(work_name: str, name: str) -> dict[str, Any]:
            port, server = ports[name], servers[name]
            if work_name == "keepalive":
                return h.measured(
                    server,
                    lambda: h.wrk(
                        f"https://127.0.0.1:{port}{h.CHECK_PATH}", 16, args.seconds, sample_check()
                    ),
                )
            resume = work_name == "tls10_resumed"
            return h.measured(
                server, lambda: tls10_checks(port, args.seconds, args.clients, resume)
            )

        for work_name in args.works:
            print(f"\n## {WORKS[work_name]}")
            runs = h.interleave(list(ports), args.reps, lambda n, _, w=work_name: run(w, n))
            report[work_name] = h.compare(runs, "ucupdates", "nginx")
        report["machine_after"] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
    print_table(report)
    h.write_report("checks", report)


def print_table(report: dict[str, Any]) -> None:
    print("\n| work | ucupdates | nginx | ratio, rate | ratio, CPU per check | aim |")
    print("|---|---|---|---|---|---|")
    for key, title in WORKS.items():
        if key not in report:
            continue
        r = report[key]
        cells = []
        for name in ("ucupdates", "nginx"):
            runs = r["runs"][name]
            cpu = statistics.median(x["server_cpu_per_request_us"] for x in runs)
            share = statistics.median(x["server_cpu_share"] for x in runs)
            p50 = statistics.median(x["p50_us"] or 0 for x in runs) / 1000
            p99 = statistics.median(x["p99_us"] or 0 for x in runs) / 1000
            cells.append(
                f"{r['rate'][name]:,.0f}/s, p50 {p50:.1f} / p99 {p99:.1f} ms, "
                f"{cpu:,.0f} µs CPU per check (server at {share:.0%})"
            )
        aim = f"≥ {AIMS[key]}x" + (" (CPU per check)" if key == "tls10_new" else "")
        print(
            f"| {title} | {cells[0]} | {cells[1]} | {h.fmt_ratio(r['ratio_rate'])} "
            f"| {h.fmt_ratio(r['ratio_server_cpu_per_request_us'])} | {aim} |"
        )
    for key in WORKS:
        for name, runs in report.get(key, {}).get("runs", {}).items():
            share = statistics.median(x["client_cpu_share"] for x in runs)
            line = f"- {key}, against {name}: the client used {share:.0%} of its CPU"
            if key != "keepalive":
                ceiling = statistics.median(x["client_checks_per_cpu_s"] or 0 for x in runs)
                resumed = sum(x["resumed"] for x in runs)
                total = sum(x["requests"] for x in runs)
                line += (
                    f", {ceiling:,.0f} checks per client CPU-second (its ceiling on one core), "
                    f"{resumed:,} of {total:,} resumed"
                )
            print(f"{line}, {sum(x['errors'] for x in runs)} errors")

if __name__ == "__main__":
    main()
