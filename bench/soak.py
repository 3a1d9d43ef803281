"""`make soak`: the appliance under a steady fleet's traffic for SOAK_SECONDS, RSS and fds flat.

A real `ucupdates serve` (the sample package approved, listeners on 127.0.0.1, port 0) is
visited at a fixed rate by simulated phones. A visit is what a phone does at boot: it asks
DNS for both discovery names (`ucupdates-r2.<domain>`, `ucupdates.<domain>`, over UDP),
sends an update check over a new TLS connection (phones do not keep connections), and
downloads the image it was offered (every other visit over the internal plain-HTTP
listener, as the BaseURL says, the others over HTTPS), checking its size and SHA-256.
Each phone sends from its own loopback address (127.1.x.y), so per-address limits
(download slots per client, DNS response rate limiting) see a fleet, not one host.

The rate: the fleet benchmark that will set "twice the peak" does not exist yet, so the
default is derived from a fleet of 10,000 phones that all check within one hour after a
site-wide reboot, times two: 2 x 10,000 / 3,600 s = 5.6, rounded to 6 visits/s, i.e. 6
checks, 6 downloads and 12 DNS queries a second (`--rate` changes it).

Every few seconds the serve process's RSS (VmRSS) and open file descriptors
(/proc/PID/fd) are sampled. After a warm-up (20 % of the run, at least 30 s, at most
300 s) a least-squares line is fitted to each; the run FAILS when the fitted growth over
the rest of the run exceeds the tolerance (RSS 8 MiB, fds 8), when any check, download or
DNS query went wrong (status, offer, size, hash, timeout), or when serve ended badly
(status, traceback in its log). The rate achieved is reported, not judged: on a slow
machine the visits fall behind rather than fail.

Writes bench/out/soak-<UTC time>.json (or into --out) and prints one summary line; exits
1 on failure. `tests/test_load.py` runs it for 120 s in `make test`. Traffic goes only to
127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import socket
import ssl
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dnslib import QTYPE, RCODE, DNSRecord  # noqa: E402

from appliance.catalogue.sample import sample_check  # noqa: E402
from appliance.testing import run_cli, serving  # noqa: E402

HOST = "127.0.0.1"
DOMAIN = "example.com"
FQDN = f"ucupdates-r2.{DOMAIN}"
DNS_NAMES = (FQDN, f"ucupdates.{DOMAIN}")
CHECK_PATH = "/RequestHandler/ucdevice.upx"
RUNNING = "4.0.7577.4366"  # what the simulated phones run
OFFERED = "4.0.7577.4387"  # the sample package's version, approved
IMAGE_SIZE = 256 * 1024
FLEET = 10_000  # distinct phones (MAC addresses) the visits cycle through
DEFAULT_RATE = 6.0  # visits/s: 2 x 10,000 phones / 3,600 s, rounded up
IO_SECONDS = 10.0
SAMPLE_SECONDS = 2.0
RSS_TOLERANCE = 8 * 1024 * 1024  # fitted growth after warm-up, bytes
FD_TOLERANCE = 8.0  # fitted growth after warm-up, descriptors
WORKERS = 16
# OpenSSL's server session cache (SSL_SESSION_CACHE_MAX_SIZE_DEFAULT): the appliance keeps
# every TLS session (OP_NO_TICKET, timeout 7,200 s) up to this many per listener, about
# 1.1 KB each, so RSS grows by ~21 MiB until it is full (9 new TLS connections a second
# here fill it in 38 min). Longer runs fill it first with bare handshakes, so that what
# is measured after warm-up is the steady state, not a bounded cache filling up.
TLS_SESSION_CACHE = 20_480
FILL_FROM_SECONDS = 600  # runs at least this long fill the cache first


# -- the appliance --------------------------------------------------------------------------


def prepare(work: Path, service: dict[str, Any] | None = None) -> Path:
    """A data folder with the sample package approved, and a config for it (listeners on
    127.0.0.1 port 0, `[service]` overrides from `service`); returns the config's path."""
    data = work / "data"
    package = work / "UCUpdates.cab"
    for args in (
        ("make-sample-package", str(package), "--image-size", str(IMAGE_SIZE)),
        ("import", str(package)),
        ("approve", "--all-pending"),
    ):
        result = run_cli(data, *args)
        if result.returncode != 0:
            raise SystemExit(f"ucupdates {args[0]} failed: {result.stdout}{result.stderr}")
    lines = [
        f"data_dir = {json.dumps(str(data))}",
        f"domains = [{json.dumps(DOMAIN)}]",
        "[listeners]",
        *(
            f'{name} = "{HOST}:0"'
            for name in ("dns", "admin", "internal_https", "external_https", "internal_http")
        ),
        "[service]",
        *(f"{key} = {json.dumps(value)}" for key, value in (service or {}).items()),
    ]
    config = work / "ucupdates.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


@dataclass
class Target:
    """A running serve and what a correct visit gets from it."""

    pid: int
    ports: dict[str, int]
    tls: ssl.SSLContext


@contextmanager
def running(work: Path, config: Path) -> Iterator[Target]:
    """`ucupdates serve` on `config` for the block; raises AssertionError (from `serving`)
    when it does not stop cleanly or logged a traceback."""
    data = work / "data"
    with serving(config, work / "serve.log") as served:
        tls = ssl.create_default_context(cafile=str(data / "tls" / "ca.pem"))
        yield Target(served.process.pid, served.ports, tls)


# -- the clients ----------------------------------------------------------------------------


class PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 with SNI and Host of FQDN, the certificate checked against it,
    from the source address given (a phone's own)."""

    def __init__(self, port: int, context: ssl.SSLContext, source: str = HOST) -> None:
        super().__init__(FQDN, port, timeout=IO_SECONDS, context=context)
        self._tls = context
        self._source = source

    def connect(self) -> None:
        raw = socket.create_connection((HOST, self.port), IO_SECONDS, (self._source, 0))
        self.sock = self._tls.wrap_socket(raw, server_hostname=FQDN)


def phone_mac(n: int, fleet: int = FLEET) -> str:
    n %= fleet
    return f"00-04-F2-01-{n >> 8:02X}-{n & 0xFF:02X}"


def phone_address(n: int, fleet: int = FLEET) -> str:
    """Phone n's own loopback address (127.1.x.y: Linux routes all of 127/8 to lo), so
    that per-address limits (download slots, DNS rate limits) see a fleet, not one host."""
    n %= fleet
    return f"127.{1 + (n >> 16)}.{(n >> 8) & 0xFF}.{n & 0xFF}"


@dataclass(frozen=True)
class Offer:
    path: str  # the image's URL path (BaseURL's path and the file name)
    size: int
    sha256: str


def update_check(target: Target, mac: str, source: str = HOST) -> Offer:
    """One update check on a new TLS connection; the image offered, or raises `Wrong`
    naming what was wrong with the answer."""
    conn = PinnedHTTPS(target.ports["internal-https"], target.tls, source)
    try:
        conn.request("POST", CHECK_PATH, sample_check(RUNNING, mac), {"Content-Type": "text/xml"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise Wrong(f"check {mac}: status {response.status} {body[:200]!r}")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise Wrong(f"check {mac}: not XML: {body[:200]!r}") from e
    version = root.findtext("Modules/Module/Version")
    base = root.findtext("BaseURL") or ""
    name = root.findtext("Modules/Module/FileName")
    size = root.findtext("Modules/Module/Size")
    sha256 = root.findtext("Modules/Module/SHA256") or ""
    if version != OFFERED or not base or name != "CPE.nbt" or size != str(IMAGE_SIZE):
        raise Wrong(f"check {mac}: offered {version} at {base!r} {name!r}: {body[:300]!r}")
    return Offer(urlsplit(base).path + "/" + name, IMAGE_SIZE, sha256.lower())


def download(target: Target, offer: Offer, plain: bool, source: str = HOST) -> int:
    """GET the offered image over the internal plain-HTTP or HTTPS listener, its size and
    SHA-256 checked against the offer; its size, or `Wrong`."""
    conn: http.client.HTTPConnection
    if plain:
        port = target.ports["internal-http"]
        conn = http.client.HTTPConnection(HOST, port, IO_SECONDS, (source, 0))
    else:
        conn = PinnedHTTPS(target.ports["internal-https"], target.tls, source)
    try:
        conn.request("GET", offer.path, headers={"Host": FQDN})
        response = conn.getresponse()
        digest = hashlib.sha256()
        size = 0
        while chunk := response.read(65536):
            digest.update(chunk)
            size += len(chunk)
    finally:
        conn.close()
    scheme = "http" if plain else "https"
    if response.status != 200:
        raise Wrong(f"download {scheme} {offer.path}: status {response.status}")
    if size != offer.size or digest.hexdigest() != offer.sha256:
        raise Wrong(f"download {scheme} {offer.path}: {size} bytes, sha256 {digest.hexdigest()}")
    return size


def dns_query(port: int, name: str, source: str = HOST) -> None:
    """An A query over UDP; `Wrong` unless NOERROR with an address for `name`."""
    query = DNSRecord.question(name, "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(IO_SECONDS / 2)
        s.sendto(query.pack(), (HOST, port))
        for _ in range(10):  # bounded: a stray datagram is skipped
            reply = DNSRecord.parse(s.recv(4096))
            if reply.header.id == query.header.id:
                break
        else:
            raise Wrong(f"dns {name}: no reply with id {query.header.id}")
    addresses = [r for r in reply.rr if r.rtype == QTYPE.A]
    if reply.header.rcode != RCODE.NOERROR or not addresses:
        raise Wrong(f"dns {name}: {RCODE.get(reply.header.rcode)}, {len(addresses)} addresses")


class Wrong(Exception):
    """A reply that is not what a correct appliance sends."""


# -- counting -------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts, latencies and the first errors of each kind of request, thread-safe."""

    done: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, kind: str, call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            result = call()
        except Exception as e:  # any failure is an error of the run (a pool would hide it)
            self.error(kind, f"{type(e).__name__}: {e}")
            return None
        elapsed = time.monotonic() - started
        with self.lock:
            self.done[kind] = self.done.get(kind, 0) + 1
            self.latencies.setdefault(kind, []).append(elapsed)
        return result

    def error(self, kind: str, message: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if len(self.first_errors) < 20:
                self.first_errors.append(f"{kind}: {message}")

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {
                kind: {
                    "ok": self.done.get(kind, 0),
                    "errors": self.errors.get(kind, 0),
                    "p50_ms": round(percentile(self.latencies.get(kind, []), 50) * 1000, 2),
                    "p99_ms": round(percentile(self.latencies.get(kind, []), 99) * 1000, 2),
                }
                for kind in sorted(set(self.done) | set(self.errors))
            }


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


# -- sampling -------------------------------------------------------------------------------


def rss_and_fds(pid: int) -> tuple[int, int] | None:
    """VmRSS in bytes and the number of open descriptors of `pid`; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def warmup_seconds(seconds: float) -> float:
    return min(300.0, max(30.0, 0.2 * seconds))


def judge(samples: list[tuple[float, int, int]], seconds: float) -> dict[str, Any]:
    """RSS and fd growth after warm-up: fitted growth over the measured window, limits."""
    warm = warmup_seconds(seconds)
    after = [s for s in samples if s[0] >= warm]
    window = (after[-1][0] - after[0][0]) if len(after) > 1 else 0.0
    rss_growth = slope([(t, rss) for t, rss, _ in after]) * window
    fd_growth = slope([(t, fds) for t, _, fds in after]) * window
    return {
        "warmup_s": warm,
        "measured_s": round(window, 1),
        "samples_after_warmup": len(after),
        "rss_start_mib": round(after[0][1] / 2**20, 2) if after else None,
        "rss_end_mib": round(after[-1][1] / 2**20, 2) if after else None,
        "rss_fitted_growth_mib": round(rss_growth / 2**20, 3),
        "rss_tolerance_mib": RSS_TOLERANCE / 2**20,
        "fds_start": after[0][2] if after else None,
        "fds_end": after[-1][2] if after else None,
        "fds_max": max((s[2] for s in samples), default=None),
        "fds_fitted_growth": round(fd_growth, 2),
        "fds_tolerance": FD_TOLERANCE,
        "flat": len(after) >= 3 and rss_growth <= RSS_TOLERANCE and fd_growth <= FD_TOLERANCE,
    }


# -- the soak -------------------------------------------------------------------------------


def handshake(target: Target) -> None:
    """A TLS handshake with the internal HTTPS listener, then close (one cached session)."""
    raw = socket.create_connection((HOST, target.ports["internal-https"]), IO_SECONDS)
    with target.tls.wrap_socket(raw, server_hostname=FQDN):
        pass


def fill_tls_cache(target: Target, count: int = TLS_SESSION_CACHE) -> dict[str, Any]:
    """`count` bare handshakes (a tenth more), as fast as the listener takes them."""
    before = rss_and_fds(target.pid)
    started = time.monotonic()
    tally = Tally()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(count + count // 10):
            pool.submit(tally.timed, "handshake", lambda: handshake(target))
    after = rss_and_fds(target.pid)
    return {
        "handshakes": tally.done.get("handshake", 0),
        "errors": tally.errors.get("handshake", 0),
        "seconds": round(time.monotonic() - started, 1),
        "rss_before_mib": round(before[0] / 2**20, 2) if before else None,
        "rss_after_mib": round(after[0] / 2**20, 2) if after else None,
    }


def visit(target: Target, tally: Tally, n: int, fleet: int = FLEET) -> None:
    """What phone n does at boot: both DNS names, an update check, the download."""
    source = phone_address(n, fleet)
    for name in DNS_NAMES:
        tally.timed("dns", lambda name=name: dns_query(target.ports["dns-udp"], name, source))
    offer = tally.timed("check", lambda: update_check(target, phone_mac(n, fleet), source))
    if offer is not None:
        tally.timed("download", lambda: download(target, offer, n % 2 == 0, source))


def soak(
    target: Target, seconds: float, rate: float, fleet: int = FLEET
) -> tuple[Tally, dict[str, Any]]:
    """Visits at `rate` a second for `seconds`, sampling the serve process meanwhile."""
    tally = Tally()
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            got = rss_and_fds(target.pid)
            if got is None:
                tally.error("serve", "the serve process is gone")
                return
            samples.append((round(time.monotonic() - started, 2), *got))
            stop.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    planned = int(seconds * rate)
    behind = 0.0
    offset = random.randrange(fleet)
    with ThreadPoolExecutor(WORKERS) as pool:
        for n in range(planned):
            due = started + n / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                behind = max(behind, now - due)
            pool.submit(visit, target, tally, offset + n, fleet)
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join(timeout=10)
    run = {
        "visits": planned,
        "elapsed_s": round(elapsed, 1),
        "achieved_visits_per_s": round(planned / elapsed, 2),
        "most_behind_schedule_s": round(behind, 2),
        "samples": samples,
    }
    return tally, run


def run(
    seconds: float,
    rate: float,
    out: Path,
    work: Path,
    fleet: int = FLEET,
    fill: bool | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Prepare, serve, soak, judge; the report is written to `out`/soak-<time>.json."""
    config = prepare(work)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ended_badly = None
    tally = Tally()
    outcome: dict[str, Any] = {}
    filled: dict[str, Any] | None = None
    if fill is None:
        fill = seconds >= FILL_FROM_SECONDS
    try:
        with running(work, config) as target:
            if fill:
                filled = fill_tls_cache(target)
            tally, outcome = soak(target, seconds, rate, fleet)
    except AssertionError as e:  # serve's exit status or a traceback in its log
        ended_badly = str(e)[-2000:]
    requests = tally.summary()
    errors = (
        sum(tally.errors.values()) + (ended_badly is not None) + (filled or {}).get("errors", 0)
    )
    memory = judge(outcome.get("samples", []), seconds)
    passed = errors == 0 and memory["flat"] and bool(outcome)
    report = {
        "started": stamp,
        "seconds": seconds,
        "rate_visits_per_s": rate,
        "fleet": fleet,
        "tls_cache_fill": filled,
        "per_visit": {"dns": len(DNS_NAMES), "check": 1, "download": 1},
        "image_bytes": IMAGE_SIZE,
        "requests": requests,
        "errors": errors,
        "first_errors": tally.first_errors,
        "serve_ended_badly": ended_badly,
        "memory": memory,
        **{k: v for k, v in outcome.items() if k != "samples"},
        "samples_t_rss_fds": outcome.get("samples", []),
        "passed": passed,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"soak-{stamp}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    report["report"] = str(path)
    return passed, report


def summary_line(report: dict[str, Any]) -> str:
    r, m = report["requests"], report["memory"]

    def ok(kind: str) -> int:
        return int(r.get(kind, {}).get("ok", 0))

    return (
        f"soak {report['seconds']:.0f} s at {report['rate_visits_per_s']:g} visits/s "
        f"(achieved {report.get('achieved_visits_per_s', 0)}): {ok('check')} checks "
        f"(p99 {r.get('check', {}).get('p99_ms', 0)} ms), {ok('download')} downloads, "
        f"{ok('dns')} DNS queries, {report['errors']} errors; RSS {m['rss_start_mib']} -> "
        f"{m['rss_end_mib']} MiB after warm-up (fitted {m['rss_fitted_growth_mib']:+} MiB, "
        f"limit {m['rss_tolerance_mib']:g}), fds {m['fds_start']} -> {m['fds_end']} (fitted "
        f"{m['fds_fitted_growth']:+}, limit {m['fds_tolerance']:g}): "
        f"{'PASS' if report['passed'] else 'FAIL'}; {report['report']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 3600))
    )
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="visits per second")
    parser.add_argument("--fleet", type=int, default=FLEET, help="distinct phones (MACs)")
    parser.add_argument(
        "--fill-tls-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"fill the TLS session cache first (default: for runs of {FILL_FROM_SECONDS} s+)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="soak-") as work:
        passed, report = run(
            args.seconds, args.rate, args.out, Path(work), args.fleet, args.fill_tls_cache
        )
    for line in report["first_errors"]:
        print("  " + line)
    if report["serve_ended_badly"]:
        print("  serve: " + report["serve_ended_badly"])
    print(summary_line(report), flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
