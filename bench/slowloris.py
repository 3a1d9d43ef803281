"""Slowloris on the internal HTTPS listener while a phone's real update checks go on.

A real `ucupdates serve` (bench/soak.py's setup: the sample package approved, 127.0.0.1,
port 0) runs with `service.max_connections` = 64 and request and idle timeouts of 5 s.
A phone sends update checks at 20 a second, each on a new TLS connection (as phones do),
first alone (the baseline), then while attackers hold `max_connections` - 8 connections
open and reopen each one as soon as the appliance closes it. The attackers come in three
kinds, in turn:

- `headers`: a TLS handshake, then an update check's headers one byte every 2 s (the
  classic slowloris): the guard's `request_timeout` must answer 408 and close;
- `silent`: a TLS handshake, then nothing: `idle_timeout` must close it;
- `handshake`: a TCP connection that sends a TLS ClientHello one byte every 2 s: it
  never reaches HTTP, and `idle_timeout` must close it.

The run passes when every check, in both phases, is answered 200 with the approved
version offered, and every attack connection that ended before the attack phase did was
closed by the appliance (the `headers` ones with a 408). The checks' p50/p99 in both
phases and their ratio are reported as figures (the issue's aim is a p99 within 2x of the
baseline): timing is recorded, not asserted, since a loaded machine moves it.

Writes bench/out/slowloris-<UTC time>.json (or into --out), prints a summary line; exits 1
on failure. `tests/test_load.py` runs it. Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from soak import (
    CHECK_PATH,
    FQDN,
    HOST,
    REPO,
    Tally,
    Target,
    percentile,
    phone_mac,
    prepare,
    running,
    update_check,
)

MAX_CONNECTIONS = 64
MARGIN = 8
TIMEOUT = 5.0  # service.request_timeout and service.idle_timeout
TRICKLE_SECONDS = 2.0
CHECKS_PER_SECOND = 20.0
BASELINE_SECONDS = 20.0
ATTACK_SECONDS = 40.0
GIVE_UP_SECONDS = 60.0  # an attack connection still open after this is a failure
REFUSED_WITHIN = 1.0  # closed by the appliance this soon, without waiting: refused
KINDS = ("headers", "silent", "handshake")
HEADERS = (
    f"POST {CHECK_PATH} HTTP/1.1\r\nHost: {FQDN}\r\nContent-Type: text/xml\r\n"
    "Content-Length: 400\r\nX-Padding: " + "a" * 400
).encode()


@dataclass
class Ended:
    """One attack connection, once it ended."""

    kind: str
    held_s: float
    by_server: bool  # the appliance closed it (else: the attacker, at the end or give-up)
    first_line: str  # what the appliance sent before closing, if anything


def client_hello() -> bytes:
    """The bytes of a real TLS ClientHello for FQDN (from a memory BIO, sent nowhere)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=FQDN)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


class Attacker(threading.Thread):
    """Keeps one connection of its kind open, reopening it whenever it is closed."""

    def __init__(
        self, target: Target, kind: str, stop: threading.Event, hello: bytes, delay: float
    ) -> None:
        super().__init__(daemon=True)
        self.target, self.kind, self.stop, self.hello = target, kind, stop, hello
        self.delay = delay
        self.ended: list[Ended] = []
        self.open = False
        self.refused = 0

    def run(self) -> None:
        self.stop.wait(self.delay)
        while not self.stop.is_set():
            try:
                ended = self.one()
            except OSError:
                ended = None
            if ended is None or (ended.by_server and ended.held_s < REFUSED_WITHIN):
                # Refused (the appliance was at max_connections): try again in a moment,
                # as slowloris tools do, rather than in a tight loop.
                self.refused += 1
                self.stop.wait(1.0)
            else:
                self.ended.append(ended)

    def one(self) -> Ended:
        port = self.target.ports["internal-https"]
        sock: socket.socket = socket.create_connection((HOST, port), 10)
        started = time.monotonic()
        try:
            if self.kind != "handshake":
                sock = self.target.tls.wrap_socket(sock, server_hostname=FQDN)
            payload = {"headers": HEADERS, "handshake": self.hello}.get(self.kind, b"")
            self.open = True
            received = b""
            sent = 0
            while time.monotonic() - started < GIVE_UP_SECONDS and not self.stop.is_set():
                if sent < len(payload):
                    sock.sendall(payload[sent : sent + 1])
                    sent += 1
                sock.settimeout(TRICKLE_SECONDS)
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                except (ssl.SSLError, ConnectionError):  # reset, or cut without close_notify
                    return self.end(started, True, received)
                if not chunk:
                    return self.end(started, True, received)
                received += chunk
            return self.end(started, False, received)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return self.end(started, True, b"")
        finally:
            self.open = False
            sock.close()

    def end(self, started: float, by_server: bool, received: bytes) -> Ended:
        first = received.split(b"\r\n", 1)[0].decode("latin-1") if self.kind != "handshake" else ""
        return Ended(self.kind, round(time.monotonic() - started, 2), by_server, first)


def checks(target: Target, tally: Tally, kind: str, seconds: float, first: int) -> int:
    """Update checks at CHECKS_PER_SECOND for `seconds`, a new TLS connection each."""
    started = time.monotonic()
    n = 0
    while (now := time.monotonic()) - started < seconds:
        due = started + n / CHECKS_PER_SECOND
        if due > now:
            time.sleep(due - now)
        tally.timed(kind, lambda n=n: update_check(target, phone_mac(first + n)))
        n += 1
    return n


def attack(target: Target, attackers: int) -> dict[str, Any]:
    tally = Tally()
    baseline = checks(target, tally, "baseline", BASELINE_SECONDS, 0)
    stop = threading.Event()
    hello = client_hello()
    # The attackers start spread over one timeout, as a ramping attack does.
    pool = [
        Attacker(target, KINDS[i % len(KINDS)], stop, hello, i * TIMEOUT / attackers)
        for i in range(attackers)
    ]
    for a in pool:
        a.start()
    ramp_deadline = time.monotonic() + 30
    while sum(a.open for a in pool) < attackers and time.monotonic() < ramp_deadline:
        time.sleep(0.1)
    held_at_start = sum(a.open for a in pool)
    concurrent: list[int] = []
    sampler_stop = threading.Event()

    def sample() -> None:
        while not sampler_stop.wait(0.5):
            concurrent.append(sum(a.open for a in pool))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    under_attack = checks(target, tally, "under_attack", ATTACK_SECONDS, baseline)
    sampler_stop.set()
    stop.set()
    for a in [sampler, *pool]:
        a.join(timeout=GIVE_UP_SECONDS + 10)
    ended = [e for a in pool for e in a.ended]
    return {
        "tally": tally,
        "checks": {"baseline": baseline, "under_attack": under_attack},
        "attackers": attackers,
        "held_when_checks_began": held_at_start,
        "concurrent_min_max": [min(concurrent, default=0), max(concurrent, default=0)],
        "refused_attack_connections": sum(a.refused for a in pool),
        "ended": ended,
    }


def run(out: Path, work: Path, margin: int = MARGIN) -> tuple[bool, dict[str, Any]]:
    service = {
        "max_connections": MAX_CONNECTIONS,
        "request_timeout": TIMEOUT,
        "idle_timeout": TIMEOUT,
    }
    config = prepare(work, service)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ended_badly = None
    result: dict[str, Any] = {}
    try:
        with running(work, config) as target:
            result = attack(target, MAX_CONNECTIONS - margin)
    except AssertionError as e:
        ended_badly = str(e)[-2000:]
    tally: Tally = result.pop("tally", Tally())
    ended: list[Ended] = result.pop("ended", [])
    by_kind: dict[str, Any] = {}
    for kind in KINDS:
        mine = [e for e in ended if e.kind == kind]
        closed = [e for e in mine if e.by_server]
        by_kind[kind] = {
            "closed_by_appliance": len(closed),
            "cut_by_attacker_at_end": sum(1 for e in mine if not e.by_server),
            "held_s_min_max": [
                min((e.held_s for e in closed), default=0),
                max((e.held_s for e in closed), default=0),
            ],
            "answers": sorted({e.first_line for e in closed}),
        }
    # Connections the attacker cut itself are the ones still open when the attack ended
    # (at most one per attacker) or held past GIVE_UP_SECONDS (a failure).
    held_too_long = [e for e in ended if not e.by_server and e.held_s >= GIVE_UP_SECONDS]
    wrong_answer = [
        e for e in ended if e.by_server and e.kind == "headers" and "408" not in e.first_line
    ]
    base = tally.latencies.get("baseline", [])
    under = tally.latencies.get("under_attack", [])
    p99_ratio = percentile(under, 99) / percentile(base, 99) if base and under else None
    errors = sum(tally.errors.values())
    passed = (
        ended_badly is None
        and bool(result)
        and errors == 0
        and tally.done.get("baseline", 0) == result["checks"]["baseline"]
        and tally.done.get("under_attack", 0) == result["checks"]["under_attack"]
        and not held_too_long
        and not wrong_answer
        and all(by_kind[k]["closed_by_appliance"] > 0 for k in KINDS)
    )
    report = {
        "started": stamp,
        "max_connections": MAX_CONNECTIONS,
        "request_timeout_s": TIMEOUT,
        "idle_timeout_s": TIMEOUT,
        "trickle_s": TRICKLE_SECONDS,
        "checks_per_s": CHECKS_PER_SECOND,
        "phases_s": {"baseline": BASELINE_SECONDS, "under_attack": ATTACK_SECONDS},
        **result,
        "requests": tally.summary(),
        "errors": errors,
        "first_errors": tally.first_errors,
        "attack_connections": by_kind,
        "held_past_give_up": len(held_too_long),
        "headers_closed_without_408": len(wrong_answer),
        "p99_ratio": round(p99_ratio, 2) if p99_ratio else None,
        "serve_ended_badly": ended_badly,
        "passed": passed,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"slowloris-{stamp}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    report["report"] = str(path)
    return passed, report


def summary_line(report: dict[str, Any]) -> str:
    r = report["requests"]
    b, u = r.get("baseline", {}), r.get("under_attack", {})
    closed = {k: v["closed_by_appliance"] for k, v in report["attack_connections"].items()}
    return (
        f"slowloris: {report.get('attackers')} of {report['max_connections']} connections held "
        f"({closed} closed by the appliance); checks baseline {b.get('ok', 0)} ok "
        f"p50/p99 {b.get('p50_ms')}/{b.get('p99_ms')} ms, under attack {u.get('ok', 0)} ok "
        f"p50/p99 {u.get('p50_ms')}/{u.get('p99_ms')} ms, p99 ratio {report['p99_ratio']}; "
        f"{report['errors']} errors: {'PASS' if report['passed'] else 'FAIL'}; {report['report']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument(
        "--margin", type=int, default=MARGIN, help="connections left free of max_connections"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="slowloris-") as work:
        passed, report = run(args.out, Path(work), args.margin)
    for line in report["first_errors"]:
        print("  " + line)
    if report["serve_ended_badly"]:
        print("  serve: " + report["serve_ended_badly"])
    print(summary_line(report), flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
