"""What every benchmark (bench/bench_*.py) shares: machine check, servers, clients, pairing.

ucupdates and its reference (nginx, dnsmasq, cabextract) run on the same machine in the
same run, servers pinned to SERVER_CPU and clients to CLIENT_CPU, taking turns (A B A B)
for N repetitions; reported are the median of the per-repetition ratios and their range,
and each server's CPU time per request (utime + stime from /proc/PID/stat over the run /
requests answered), which does not depend on the client's speed as a rate does. Server
ratios read "ucupdates as a fraction of the reference, higher is better": rate / rate,
reference CPU / ucupdates CPU; import times read ucupdates / cabextract, as the aims do.
Traffic goes to 127.0.0.1 only; every process started here is stopped on the way out.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
OUT = BENCH / "out"
sys.path.insert(0, str(REPO))

from appliance.catalogue.sample import sample_check  # noqa: E402
from appliance.config import TlsProfile  # noqa: E402
from appliance.testing.processes import free_port as testing_free_port  # noqa: E402
from appliance.tls.contexts import cipher_list  # noqa: E402 - the listeners' own list

CHECK_PATH = "/RequestHandler/ucdevice.upx"
DOMAIN = "example.com"
Headers = dict[str, str]
SERVER_CPU, CLIENT_CPU = 1, 0
CLK_TCK = os.sysconf("SC_CLK_TCK")
_CPUS = frozenset(os.sched_getaffinity(0))
PINNED = bool(shutil.which("taskset")) and {SERVER_CPU, CLIENT_CPU} <= _CPUS


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    """`argv` under `taskset -c cpu` (every thread it starts inherits the CPU)."""
    return ["taskset", "-c", str(cpu), *argv] if PINNED and cpu is not None else argv


def pin_self(cpu: int = CLIENT_CPU) -> None:
    os.sched_setaffinity(0, {cpu} if PINNED else _CPUS)


def free_port() -> int:
    return testing_free_port()  # apart from other pytest-xdist workers' when under one


def machine_check(seconds: float = 1.0) -> dict[str, Any]:
    """Each CPU's idle share (/proc/stat) over `seconds` before anything starts (busy below
    90 %: noisy figures, said loudly and recorded), and the load average (recorded only: it
    still carries the previous benchmark)."""

    def idle_total() -> dict[str, tuple[int, int]]:
        with open("/proc/stat") as f:
            rows = [line.split() for line in f if line.startswith("cpu")]
        return {r[0]: (int(r[4]) + int(r[5]), sum(int(x) for x in r[1:9])) for r in rows}

    before = idle_total()
    time.sleep(seconds)
    after = idle_total()
    idle = {k: round((i - before[k][0]) / max(t - before[k][1], 1), 3) for k, (i, t) in after.items()}  # noqa: E501
    load = os.getloadavg()
    per_cpu = [v for k, v in idle.items() if k != "cpu"]
    busy = min(per_cpu, default=1.0) < 0.9
    if busy:
        print(
            f"{'!' * 72}\n!! THE MACHINE IS BUSY: load average {load[0]:.2f}, idle per CPU "
            f"{', '.join(f'{v:.0%}' for v in per_cpu)}.\n!! Figures from this run are noisy: "
            f"compare ratios, and rerun on a quiet machine.\n{'!' * 72}",
            file=sys.stderr,
        )
    return {
        "busy": busy, "load_average": [round(x, 2) for x in load], "idle_share": idle,
        "cpus": os.cpu_count(), "pinned": PINNED, "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU, "python": sys.version.split()[0], "openssl": ssl.OPENSSL_VERSION,
    }  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss(pid: int) -> int:
    """Resident set size in bytes (0 when the process is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


@dataclass
class Server:
    """A server started here. `pid` is the process that does the work (nginx's worker)."""

    name: str
    proc: subprocess.Popen[bytes]
    pid: int
    ports: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after 10 s (and to stragglers)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)


class Fleet(contextlib.ExitStack):
    """The servers of one benchmark, all stopped when the `with` block ends."""

    def __init__(self, work: Path) -> None:
        super().__init__()
        self.work = work

    def _popen(self, name: str, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        with (self.work / f"{name}.log").open("wb") as log:  # a fresh log per start
            return subprocess.Popen(
                pinned(SERVER_CPU, argv), stdin=subprocess.DEVNULL, stderr=log,
                stdout=kw.pop("stdout", log), start_new_session=True, **kw,
            )  # fmt: skip

    def ucupdates(self, config: Path, *options: str) -> Server:
        """`ucupdates serve` on `config`; its ports from the banner it prints."""
        argv = [sys.executable, "-m", "appliance", "--config", str(config), "serve", *options]
        proc = self._popen("ucupdates", argv, cwd=REPO)
        server = Server("ucupdates", proc, proc.pid)
        self.callback(server.stop)
        for _ in range(900):  # 90 s
            text = (self.work / "ucupdates.log").read_text(errors="replace")
            if "\npoint a phone at" in text:  # the banner's end: its listeners are above
                found = re.findall(r"(?m)^  (\S+) +127\.0\.0\.1:(\d+)$", text)
                server.ports = {name: int(port) for name, port in found}
                return server
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"serve did not start: {self.tail('ucupdates')}")

    def nginx(self, conf: Path) -> Server:
        proc = self._popen("nginx", ["nginx", "-p", str(self.work), "-c", str(conf)])
        server = Server("nginx", proc, proc.pid)
        self.callback(server.stop)
        for _ in range(100):
            with contextlib.suppress(OSError, ValueError):  # the worker, once it is there
                server.pid = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text())
                return server
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"nginx started no worker: {self.tail('nginx')}")

    def dnsmasq(self, port: int, *options: str) -> Server:
        binary = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
        argv = [str(binary), "--conf-file=/dev/null", "--keep-in-foreground", "--no-resolv"]
        argv += ["--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1"]
        argv += [f"--port={port}", "--pid-file=", "--cache-size=10000", *options]
        proc = self._popen("dnsmasq", argv)
        server = Server("dnsmasq", proc, proc.pid, {"dns": port})
        self.callback(server.stop)
        time.sleep(0.5)
        if proc.poll() is not None:
            raise SystemExit(f"dnsmasq exited: {self.tail('dnsmasq')}")
        return server

    def tail(self, name: str) -> str:
        return "\n".join((self.work / f"{name}.log").read_text(errors="replace").splitlines()[-20:])


def prepare_appliance(work: Path, package: Path | None, tables: str = "", **service: Any) -> Path:
    """A data folder with `package` imported and approved (if any), and a config for it:
    every listener on 127.0.0.1 port 0, `[service]` overrides, then `tables` (TOML)."""
    data = work / "data"
    for args in (("import", str(package)), ("approve", "--all-pending")) if package else ():
        cli = [sys.executable, "-m", "appliance", "--data-dir", str(data), *args]
        result = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"ucupdates {args[0]} failed: {result.stdout}{result.stderr}")
    names = ("dns", "admin", "internal_https", "external_https", "internal_http")
    config = work / "ucupdates.toml"
    config.write_text(
        f'data_dir = "{data}"\ndomains = ["{DOMAIN}"]\n[listeners]\n'
        + "".join(f'{n} = "127.0.0.1:0"\n' for n in names)
        + "[service]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in service.items())
        + tables
    )  # fmt: skip
    return config


def fetch(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, Headers, bytes]:
    """Status, headers (lower-case names) and body of one request over HTTPS."""
    ctx = ssl._create_unverified_context()  # the certificate is not what is measured
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
    try:
        headers = {"Content-Type": "text/xml"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def check_answer(server: Server) -> tuple[str, bytes, str]:
    """ucupdates' answer to the sample check: content type, body, and the image's path."""
    port = server.ports["internal-https"]
    status, headers, body = fetch(port, "POST", CHECK_PATH, sample_check())
    base = re.search(rb"<BaseURL>([^<]+)</BaseURL>", body)
    name = re.search(rb"<FileName>([^<]+)</FileName>", body)
    if status != 200 or base is None or name is None:
        raise SystemExit(f"no download offered for the sample check ({status}): {body!r}")
    path = re.sub(r"^\w+://[^/]+", "", base.group(1).decode()) + "/" + name.group(1).decode()
    return headers["content-type"], body, path


def nginx_config(
    work: Path, uc_config: Path, answer: tuple[str, bytes, str]
) -> tuple[Path, int, int]:
    """nginx with ucupdates' certificate and key, cipher list and session policy (server
    cache, no tickets), its exact check answer and its store at the same URL; one worker.
    Returns the config, the HTTPS port and the plain HTTP port."""
    content_type, body, image = answer
    text = body.decode()
    if "$" in text:
        raise SystemExit("the check answer holds a '$': nginx cannot return it verbatim")
    quoted = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    quoted = quoted.replace("\r", "\\r").replace("\t", "\\t")
    data = uc_config.parent / "data"
    store_url = image.rsplit("/", 1)[0].split("/")[1]  # DeviceUpdateFiles_Int
    user = "user root;" if os.geteuid() == 0 else ""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    https, plain = free_port(), free_port()
    values = {
        "USER": user, "WORK": str(work), "HTTPS_PORT": str(https), "HTTP_PORT": str(plain),
        "CERT": str(data / "tls" / "server.pem"), "KEY": str(data / "tls" / "server.key"),
        "CIPHERS": cipher_list(TlsProfile.LPE_LEGACY), "STORE_URL": store_url,
        "STORE": str(data / "DeviceUpdateStore"), "CHECK_RESPONSE": quoted,
        "CONTENT_TYPE": content_type.replace('"', '\\"'),
    }  # fmt: skip
    template = (BENCH / "nginx.conf.in").read_text()
    path = work / "nginx.conf"
    path.write_text(re.sub(r"@(\w+)@", lambda m: values[m.group(1)], template))
    return path, https, plain


def _run(argv: list[str], timeout: float, **kw: Any) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def wrk(url: str, conns: int, seconds: float, body: bytes = b"") -> dict[str, Any]:
    """wrk (1 thread, on the client CPU, bench/wrk.lua): exact counters, latency
    percentiles in microseconds; with `body`, every request is that POST."""
    body_file = OUT / ".wrk-body"
    body_file.write_bytes(body)
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency"]
    argv += ["--timeout", "10s", "-s", str(BENCH / "wrk.lua")]
    env = {**os.environ, "BENCH_WRK_BODY": str(body_file) if body else ""}
    out = _run(pinned(CLIENT_CPU, [*argv, url]), seconds + 60, env=env)
    r: dict[str, Any] = json.loads(next(x for x in out.splitlines() if x.startswith("BENCH "))[6:])
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["errors"] = sum(r.pop(k) for k in ("connect", "read", "write", "timeout"))
    r["errors"] += int(m.group(1)) if m else 0
    r["seconds"] = r.pop("duration_us") / 1e6
    return r


def dnsperf(port: int, queries: Path, seconds: float, clients: int = 1) -> dict[str, Any]:
    """dnsperf on the client CPU (at most 100 queries in flight): completed and lost
    queries, and the mean latency."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries)]
    argv += ["-l", str(seconds), "-c", str(clients), "-q", "100"]
    out = _run(pinned(CLIENT_CPU, argv), seconds + 60)

    def number(label: str) -> float:
        m = re.search(rf"{label}:\s+([\d.]+)", out)
        if not m:
            raise SystemExit(f"dnsperf printed no '{label}':\n{out}")
        return float(m.group(1))

    return {
        "requests": int(number("Queries completed")), "sent": int(number("Queries sent")),
        "lost": int(number("Queries lost")), "seconds": number(r"Run time \(s\)"),
        "latency_ms": round(number(r"Average Latency \(s\)") * 1000, 3),
    }  # fmt: skip


def timed(argv: list[str], cpu: int | None = SERVER_CPU, **kw: Any) -> dict[str, Any]:
    """Wall seconds, peak RSS and CPU seconds of a run of `argv` on `cpu`, by GNU time
    (wait4 from here would not do: Linux carries a parent's peak RSS across exec)."""
    out = _run(pinned(cpu, ["/usr/bin/time", "-f", "TIME %e %M %U %S", *argv]), 3600, **kw)
    seconds, kib, user, system = out.rsplit("TIME ", 1)[1].split()[:4]
    cpu_s = round(float(user) + float(system), 2)  # on all CPUs together
    return {"seconds": float(seconds), "peak_rss_bytes": int(kib) << 10, "cpu_seconds": cpu_s}


def measured(server: Server, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`run()` (a client run: "requests", "seconds") with the rate, the server's CPU share
    and CPU per request, and the client's CPU share (its processes): which one limits."""
    before, kids = cpu_seconds(server.pid), os.times()
    r = run()
    used, after = cpu_seconds(server.pid) - before, os.times()
    r["rate"] = r["requests"] / r["seconds"]
    r["server_cpu_share"] = round(used / r["seconds"], 3)
    r["server_cpu_per_request_us"] = round(1e6 * used / max(int(r["requests"]), 1), 2)
    client = after.children_user + after.children_system - kids.children_user - kids.children_system
    r.setdefault("client_cpu_share", round(client / r["seconds"], 3))
    return r


def interleave(
    names: list[str], reps: int, run_one: Callable[[str, int], dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """run_one(name, rep) for each rep, the names taking turns: A B A B ..."""
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for rep in range(reps):
        for name in names:
            runs[name].append(run_one(name, rep))
            print(f"  {name} rep {rep + 1}/{reps}: {_brief(runs[name][-1])}", flush=True)
    return runs


def _brief(r: dict[str, Any]) -> str:
    keys = ("rate", "server_cpu_per_request_us", "server_cpu_share", "client_cpu_share", "seconds")
    return ", ".join(f"{k} {r[k]:,.6g}" for k in keys if isinstance(r.get(k), (int, float)))


def ratio_summary(ours: list[float], ref: list[float], lower_is_better: bool) -> dict[str, Any]:
    """Per-repetition ratios (ucupdates / reference, or its inverse for costs), their
    median and range; each pair comes from adjacent runs."""
    pairs = [round(b / a, 3) if lower_is_better else round(a / b, 3)
             for a, b in zip(ours, ref, strict=True) if a and b]  # fmt: skip
    if not pairs:
        return {"median": None, "min": None, "max": None, "each": []}
    median = round(statistics.median(pairs), 3)
    return {"median": median, "min": min(pairs), "max": max(pairs), "each": pairs}


def compare(runs: dict[str, list[dict[str, Any]]], ours: str, ref: str) -> dict[str, Any]:
    """Medians of each side and the ratios of rate and of CPU per request."""
    out: dict[str, Any] = {"runs": runs}
    for key, lower in (("rate", False), ("server_cpu_per_request_us", True), ("p99_us", True)):
        a, b = [r.get(key) for r in runs[ours]], [r.get(key) for r in runs[ref]]
        if all(isinstance(x, (int, float)) for x in a + b):
            out[key] = {ours: statistics.median(a), ref: statistics.median(b)}
            out[f"ratio_{key}"] = ratio_summary(a, b, lower)
    return out


def fmt_ratio(s: dict[str, Any] | None) -> str:
    """"0.42x (0.40-0.45)": the median ratio and its range."""
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})" if s and s["median"] else "-"


def write_report(name: str, report: dict[str, Any]) -> Path:
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\nwritten: {path.relative_to(REPO)}")
    return path


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def workdir(name: str, keep: bool = False) -> Iterator[Path]:
    """A scratch folder under bench/out (same disk as the store), removed afterwards.
    SIGTERM ends the run like Ctrl-C, so the servers are stopped."""
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / f"work-{name}-{os.getpid()}"
    work.mkdir()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield work
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
