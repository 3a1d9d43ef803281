"""`make bench-serve`: the phone-facing HTTPS service beside nginx, on the same machine.

Both servers run in the same run with one worker process each, pinned to CPU 1 (the load
generator gets CPU 0), with the same certificate and key (the ones `ucupdates serve`
generates into `<data_dir>/tls/`), TLS 1.2/1.3, and serve the same things: the exact bytes
ucupdates answers to the sample update check (nginx: `return 200 '...'` with the same
content type) and the same 40 MiB image at the same path. Traffic goes to 127.0.0.1 only.

Measures (wrk, 1 thread, `--latency`, bench/serve.lua):
  1. update checks, TLS keep-alive, 16 and 256 connections: requests/s, p50/p99 latency;
  2. update checks with a new TLS connection per request (`Connection: close`);
  3. download throughput of the image, 4 connections: bytes/s;
  4. server RSS while 1,000 TLS clients download the image slowly (asyncio, here).
Reports ratios (ucupdates/nginx) and writes bench/out/serve.json; it asserts nothing.
Also recorded: each server's and wrk's CPU share during each run, and a CPU check (busy
loops on both CPUs at once): on a VM whose two vCPUs do not give two cores' worth, the
load generator takes CPU from the server, which costs nginx (the faster one) the most.
`--profile` afterwards samples ucupdates under the same loads with py-spy (install it
into .venv yourself; it is not a project dependency): bench/out/serve-profile-*.txt.
Aims: checks >= 0.15x nginx, p99 < 25 ms at 256 connections, downloads >= 0.8x
nginx, RSS flat with 1,000 slow downloads.

The bench config sets `service.max_downloads = 2000` and `max_connections = 4000`: the
default of 256 simultaneous downloads answers the 257th with 503 (by design).
Everything started here is stopped on the way out, also on failure and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
sys.path.insert(0, str(REPO))

from appliance.catalogue.sample import sample_check  # noqa: E402

CHECK_PATH = "/RequestHandler/ucdevice.upx"
SERVER_CPU, CLIENT_CPU = 1, 0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes -------------------------------------------------------------------------


_CPUS = frozenset(os.sched_getaffinity(0))  # before main() pins this process to CLIENT_CPU


def _pin(cpu: int) -> list[str]:
    """`taskset -c cpu` when this process may use both CPUs and taskset exists; else
    nothing (then the servers and the load generator share whatever CPUs there are)."""
    if shutil.which("taskset") and {SERVER_CPU, CLIENT_CPU} <= _CPUS:
        return ["taskset", "-c", str(cpu)]
    return []


def _status_field(pid: int, name: str) -> int | None:
    """A `kB` field of /proc/PID/status (VmRSS...) in bytes; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Server:
    """A server process group started here; `pid` is the process that does the work."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    pid: int
    extra_pids: list[int] = field(default_factory=list)  # nginx's master

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self) -> int:
        return _status_field(self.pid, "VmRSS") or 0

    def rss_all(self) -> int:
        return sum(_status_field(p, "VmRSS") or 0 for p in [self.pid, *self.extra_pids])

    def stop(self) -> None:
        """SIGTERM to the group this script started; SIGKILL after 10 s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # nginx's worker may outlive the master for a moment
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {seconds:.0f} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Fleet:
    """Every server this run started, stopped together at the end."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.servers: list[Server] = []

    def start_ucupdates(self, config: Path, port: int, tag: str) -> Server:
        out = self.work / f"ucupdates-{tag}.out"
        err = self.work / f"ucupdates-{tag}.err"  # a file, not a pipe: it logs every check
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                [
                    *_pin(SERVER_CPU),
                    sys.executable,
                    "-m",
                    "appliance",
                    "--config",
                    str(config),
                    "serve",
                ],
                cwd=REPO,
                stdout=o,
                stderr=e,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        server = Server("ucupdates", port, proc, proc.pid)
        self.servers.append(server)
        _wait_for_port(port, proc, err, 60)
        return server

    def start_nginx(self, conf: Path, port: int, tag: str) -> Server:
        err = self.work / f"nginx-{tag}.err"
        with err.open("wb") as e:
            proc = subprocess.Popen(
                [
                    *_pin(SERVER_CPU),
                    "nginx",
                    "-p",
                    str(self.work),
                    "-c",
                    str(conf),
                    "-e",
                    str(self.work / "nginx-error.log"),
                    "-g",
                    "daemon off;",
                ],
                stdout=e,
                stderr=e,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        server = Server("nginx", port, proc, proc.pid, [proc.pid])
        self.servers.append(server)
        _wait_for_port(port, proc, self.work / "nginx-error.log", 30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            workers = _children(proc.pid)
            if workers:
                server.pid = workers[0]
                break
            time.sleep(0.1)
        else:
            raise SystemExit("nginx started no worker process")
        return server

    def stop(self, server: Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        for server in list(self.servers):
            try:
                self.stop(server)
            except Exception as e:  # keep stopping the others
                print(f"could not stop {server.name} ({server.proc.pid}): {e}", file=sys.stderr)


_SPIN = (
    "import time\nend = time.perf_counter() + {seconds}\nn = 0\n"
    "while time.perf_counter() < end:\n    n += 1\nprint(n)"
)


def cpu_check(seconds: float = 1.5) -> dict[str, Any]:
    """A busy loop on the server's CPU alone, then on both CPUs at once. On two
    independent cores each keeps its pace (1.0); on hyperthreads of one core, or vCPUs
    the host does not back with two cores, the server and the load generator slow each
    other down, and the reference's figures suffer most."""

    def spin(cpus: list[int]) -> list[int]:
        procs = [
            subprocess.Popen(
                [*_pin(c), sys.executable, "-c", _SPIN.format(seconds=seconds)],
                stdout=subprocess.PIPE,
            )
            for c in cpus
        ]
        return [int(p.communicate(timeout=60)[0]) for p in procs]

    alone = spin([SERVER_CPU])[0]
    both = spin([CLIENT_CPU, SERVER_CPU])
    return {
        "loops_alone": alone,
        "loops_both_busy": both,
        "pace_when_both_busy": [round(b / alone, 2) for b in both],
    }


# -- set-up ------------------------------------------------------------------------------


def _run(argv: list[str], timeout: float = 300) -> str:
    proc = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed:\n{proc.stderr.strip()}")
    return proc.stdout


def make_data(work: Path, image_size: int, ports: dict[str, int], *, many: bool) -> Path:
    """A config with free ports and its own data folder: the sample package imported and
    every rule approved, through the command line."""
    config = work / "ucupdates.toml"
    limits = "max_downloads = 2000\nmax_connections = 4000\n" if many else ""
    config.write_text(
        'data_dir = "data"\n'
        "[listeners]\n"
        + "".join(f'{name} = "127.0.0.1:{port}"\n' for name, port in ports.items())
        + "[service]\n"
        + limits
    )
    cli = [sys.executable, "-m", "appliance", "--config", str(config)]
    package = work / "UCUpdates.cab"
    _run([*cli, "make-sample-package", str(package), "--image-size", str(image_size)])
    _run([*cli, "import", str(package)])
    package.unlink()  # the images now live in the store
    _run([*cli, "approve", "--all-pending"])
    return config


def tls_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def fetch(
    port: int,
    ctx: ssl.SSLContext,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes, str]:
    """Status, headers (lower-case names), body and 'version cipher' of one request."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        sock: Any = conn.sock
        tls = f"{sock.version()} {sock.cipher()[0]}"
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data, tls
    finally:
        conn.close()


def closes_after(port: int, ctx: ssl.SSLContext, body: bytes) -> dict[str, Any]:
    """Send one check with `Connection: close` on a fresh TLS connection: does the server
    say so and close the connection itself (EOF within 3 s)?"""
    request = (
        f"POST {CHECK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    data, closed = b"", False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=3) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        s.sendall(request)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(data) < 1 << 20:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except (ssl.SSLError, ConnectionError):
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    return {
        "status": int(head.split(b" ", 2)[1]) if head.startswith(b"http/") else None,
        "says_connection_close": b"\r\nconnection: close" in head,
        "server_closed": closed,
    }


def tcp_opens() -> dict[str, int]:
    """The machine's TCP passive opens (connections accepted by some server here) and
    active opens, from /proc/net/snmp."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    values = dict(zip(rows[0][1:], rows[1][1:], strict=True))
    return {"passive": int(values["PassiveOpens"]), "active": int(values["ActiveOpens"])}


def established(port: int) -> int:
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def nginx_config(
    work: Path, port: int, cert: Path, key: Path, store: Path, response: bytes, content_type: str
) -> Path:
    text = response.decode("utf-8")
    if "$" in text:  # nginx would read it as a variable
        raise SystemExit("the check response holds a '$': nginx cannot return it verbatim")
    quoted = (
        text.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    user = ""
    if os.geteuid() == 0:  # nginx's workers would run as nobody, who cannot read the store
        import pwd

        user = f"user {pwd.getpwuid(0).pw_name};"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    conf = (BENCH / "nginx.conf.in").read_text()
    for name, value in {
        "USER": user,
        "WORK": str(work),
        "PORT": str(port),
        "CERT": str(cert),
        "KEY": str(key),
        "STORE": str(store),
        "CONTENT_TYPE": content_type.replace('"', '\\"'),
        "CHECK_RESPONSE": quoted,
    }.items():
        conf = conf.replace(f"@{name}@", value)
    path = work / "nginx.conf"
    path.write_text(conf)
    return path


# -- wrk ---------------------------------------------------------------------------------


def wrk(
    server: Server,
    url_path: str,
    connections: int,
    seconds: int,
    *,
    body: Path | None = None,
    close: bool = False,
) -> dict[str, Any]:
    argv = [
        *_pin(CLIENT_CPU),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(BENCH / "serve.lua"),
    ]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"https://127.0.0.1:{server.port}{url_path}")
    env = {**os.environ, "BENCH_WRK_BODY": str(body) if body else ""}
    opens_before = tcp_opens()
    cpu_before = _cpu_seconds(server.pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
    )
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = _cpu_seconds(server.pid) - cpu_before
    opens_after = tcp_opens()
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(line[len("BENCH ") :])
    seconds_run = result["duration_us"] / 1e6
    result["requests_per_s"] = result["requests"] / seconds_run
    result["bytes_per_s"] = result["bytes"] / seconds_run
    result["non_2xx"] = _non_2xx(proc.stdout)
    result["server_cpu_share"] = server_cpu / seconds_run  # of one core
    result["wrk_cpu_share"] = (
        children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime
    ) / seconds_run
    # TCP connections accepted on this machine during the run (wrk's, give or take others')
    result["tcp_connections_accepted"] = opens_after["passive"] - opens_before["passive"]
    result["wrk_output"] = [x for x in proc.stdout.splitlines() if not x.startswith("BENCH ")]
    return result


def _non_2xx(output: str) -> int:
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return int(m.group(1)) if m else 0


# -- slow downloads ----------------------------------------------------------------------


async def slow_downloads(
    servers: list[Server],
    target: Server,
    path: str,
    ctx: ssl.SSLContext,
    *,
    clients: int,
    rate: int,
    seconds: int,
    connect_limit: float = 60.0,
) -> dict[str, Any]:
    """`clients` TLS connections each GET the image and read `rate` bytes a second for
    `seconds`; the RSS of every server is sampled each second before, during and after."""
    loop = asyncio.get_running_loop()
    samples: list[dict[str, Any]] = []
    phase = "before"
    started = loop.time()
    statuses: collections.Counter[str] = collections.Counter()
    connected = 0
    early_eof = 0
    read_bytes = 0
    settled = 0
    all_settled = asyncio.Event()
    go = asyncio.Event()
    gate = asyncio.Semaphore(64)  # Twisted listens with a backlog of 50
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n\r\n".encode()

    def sample() -> None:
        samples.append(
            {
                "t": round(loop.time() - started, 2),
                "phase": phase,
                "established": established(target.port),
                **{s.name: s.rss() for s in servers},
                **{f"{s.name}_all": s.rss_all() for s in servers if s.extra_pids},
            }
        )

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled >= clients:
            all_settled.set()

    async def one() -> None:
        nonlocal connected, early_eof, read_bytes
        writer = None
        waiting = True

        def done_connecting() -> None:
            nonlocal waiting
            if waiting:
                waiting = False
                settle()

        try:
            async with gate:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, ("127.0.0.1", target.port))
                    reader, writer = await asyncio.open_connection(
                        sock=sock,
                        ssl=ctx,
                        server_hostname="localhost",
                        limit=rate,
                        ssl_handshake_timeout=30,
                    )
                    writer.write(request)
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as e:
                    sock.close()
                    statuses[type(e).__name__] += 1
                    return
            status = head.split(b" ", 2)[1].decode()
            statuses[status] += 1
            if status != "200":
                return
            connected += 1
            done_connecting()
            await go.wait()
            begin = loop.time()
            for tick in range(seconds):
                end = begin + tick + 1
                got = 0
                while got < rate and (left := end - loop.time()) > 0:
                    try:
                        chunk = await asyncio.wait_for(reader.read(rate - got), left)
                    except TimeoutError:
                        break
                    if not chunk:
                        early_eof += 1
                        return
                    got += len(chunk)
                read_bytes += got
                await asyncio.sleep(max(0.0, end - loop.time()))
        finally:
            done_connecting()
            if writer is not None:
                writer.transport.abort()

    async def sampler() -> None:
        for _ in range(int(connect_limit) + seconds + 60):
            sample()
            await asyncio.sleep(1.0)

    sampling = asyncio.create_task(sampler())
    await asyncio.sleep(2.5)  # baseline: three samples
    phase = "connecting"
    tasks = [asyncio.create_task(one()) for _ in range(clients)]
    connect_started = loop.time()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_settled.wait(), connect_limit)
    connect_seconds = loop.time() - connect_started
    phase = "reading"
    go.set()
    sample()
    _, pending = await asyncio.wait(tasks, timeout=seconds + 15)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    phase = "after"
    await asyncio.sleep(3.0)
    sample()
    sampling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampling
    return {
        "clients": clients,
        "connected_200": connected,
        "statuses": dict(statuses),
        "connect_seconds": round(connect_seconds, 2),
        "closed_early_by_server": early_eof,
        "bytes_read_by_clients": read_bytes,
        "samples": samples,
    }


def rss_summary(result: dict[str, Any], name: str) -> dict[str, Any]:
    samples = result["samples"]
    before = [s[name] for s in samples if s["phase"] == "before"]
    during = [s[name] for s in samples if s["phase"] in ("connecting", "reading")]
    after = [s[name] for s in samples if s["phase"] == "after"]
    reading = [s[name] for s in samples if s["phase"] == "reading"]
    baseline = min(before) if before else 0
    peak = max(during) if during else 0
    connections = max(result["connected_200"], 1)
    return {
        "baseline_bytes": baseline,
        "all_connected_bytes": reading[0] if reading else None,
        "peak_bytes": peak,
        # flat: no growth once every connection is open and the clients only read slowly
        "growth_while_reading_bytes": max(reading) - reading[0] if reading else None,
        "after_bytes": after[-1] if after else None,
        "peak_per_connection_bytes": (peak - baseline) / connections,
        "peak_established": max((s["established"] for s in samples), default=0),
    }


# -- profile -----------------------------------------------------------------------------


def profile(pid: int, seconds: int, out: Path, load: Callable[[], Any]) -> list[str]:
    """py-spy (not a project dependency) records `pid` while `load()` runs; returns the
    summary lines and keeps the collapsed stacks in `out`."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return ["py-spy is not installed: .venv/bin/pip install py-spy"]
    rec = subprocess.Popen(
        [
            *_pin(CLIENT_CPU),
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "250",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        load()
        _, err = rec.communicate(timeout=seconds + 30)
    finally:
        if rec.poll() is None:
            os.killpg(rec.pid, signal.SIGKILL)
            rec.wait(timeout=10)
    if not out.exists():
        return [f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}"]
    return summarise_stacks(out)


def _where(frame: str) -> str:
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    function, path = m.groups()
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{function} ({path})"


def summarise_stacks(path: Path, top: int = 18) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_where(f) for f in stack.split(";")[1:]]  # [0] names the process
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return ["no samples"]
    lines = [f"{total} samples; self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("inclusive time:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top + 12)]
    return lines


# -- the run -----------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _ms(us: float) -> str:
    return f"{us / 1000:.1f} ms"


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="wrk runs per server and measure, alternating servers; the best one counts",
    )
    parser.add_argument("--image-size", type=int, default=40 * 1024 * 1024)
    parser.add_argument("--slow-clients", type=int, default=1000)
    parser.add_argument("--slow-rate", type=int, default=16 * 1024, help="bytes/s per client")
    parser.add_argument("--slow-seconds", type=int, default=10)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, profile ucupdates under load with py-spy (bench/out/serve-profile-*)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, data)")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (make bench-serve installs it)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * args.slow_clients + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    if _pin(CLIENT_CPU):
        os.sched_setaffinity(0, {CLIENT_CPU})  # the slow-download client runs here

    out_dir = BENCH / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-", dir=out_dir))
    fleet = Fleet(work)
    began = time.monotonic()
    try:
        with _terminate_on_sigterm():
            report = run(args, work, fleet)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the servers", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        fleet.stop_all()
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["bench_seconds"] = round(time.monotonic() - began, 1)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    (out_dir / "serve.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote bench/out/serve.json ({report['bench_seconds']:.0f} s)")


def run(args: argparse.Namespace, work: Path, fleet: Fleet) -> dict[str, Any]:
    seconds, rounds = args.seconds, args.rounds
    load_at_start = os.getloadavg()
    names = ("dns", "internal_https", "internal_http", "external_https", "admin", "nginx")
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    nginx_port = ports.pop("nginx")
    t0 = time.monotonic()
    config = make_data(work, args.image_size, ports, many=True)
    setup_seconds = time.monotonic() - t0
    data = work / "data"
    body_file = work / "check.xml"
    body_file.write_bytes(sample_check())

    uc = fleet.start_ucupdates(config, ports["internal_https"], "wrk")
    tls_dir = data / "tls"
    ctx = tls_context(tls_dir / "ca.pem")
    status, headers, response, uc_tls = fetch(
        uc.port, ctx, "POST", CHECK_PATH, sample_check(), {"Content-Type": "text/xml"}
    )
    if status != 200:
        raise SystemExit(f"ucupdates answered the sample check with {status}: {response!r}")
    content_type = headers["content-type"]
    base = re.search(rb"<BaseURL>([^<]+)</BaseURL>", response)
    name = re.search(rb"<FileName>([^<]+)</FileName>", response)
    if base is None or name is None:
        raise SystemExit(f"no download offered for the sample check: {response!r}")
    image_path = urlsplit(base.group(1).decode()).path + "/" + name.group(1).decode()
    store = data / "DeviceUpdateStore"
    image_file = store / image_path.split("/", 2)[2]
    if not image_file.is_file():
        raise SystemExit(f"{image_file} does not exist: where does {image_path} point?")

    conf = nginx_config(
        work,
        nginx_port,
        tls_dir / "server.pem",
        tls_dir / "server.key",
        store,
        response,
        content_type,
    )
    ngx = fleet.start_nginx(conf, nginx_port, "wrk")
    servers = [uc, ngx]

    # Both serve the same bytes, with the same certificate.
    parity: dict[str, Any] = {}
    for s in servers:
        st, hd, body, tls = fetch(
            s.port, ctx, "POST", CHECK_PATH, sample_check(), {"Content-Type": "text/xml"}
        )
        st2, _, image, _ = fetch(s.port, ctx, "GET", image_path)
        parity[s.name] = {
            "check_status": st,
            "check_identical": body == response,
            "content_type": hd.get("content-type"),
            "image_status": st2,
            "image_bytes": len(image),
            "image_sha256": hashlib.sha256(image).hexdigest(),
            "tls": tls,
            "connection_close": closes_after(s.port, ctx, sample_check()),
        }
        del image
    for s in servers:
        p = parity[s.name]
        if not (p["check_status"] == 200 and p["check_identical"] and p["image_status"] == 200):
            raise SystemExit(f"{s.name} does not serve the same things: {p}")
        if p["image_sha256"] != parity["ucupdates"]["image_sha256"]:
            raise SystemExit("the two servers return different images")
        if p["content_type"] != content_type:
            raise SystemExit(f"{s.name} answers with content type {p['content_type']}")

    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "pinned": bool(_pin(SERVER_CPU)),
            "server_cpu": SERVER_CPU,
            "client_cpu": CLIENT_CPU,
            "load_average_at_start": load_at_start,
            "kernel": platform.release(),
            "python": platform.python_version(),
            "nginx": subprocess.run(
                ["nginx", "-v"], capture_output=True, text=True, check=False
            ).stderr.strip(),
            "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
            .stdout.split("\n")[0]
            .strip(),
            "client_openssl": ssl.OPENSSL_VERSION,
            "cpu_check": cpu_check() if _pin(SERVER_CPU) else None,
        },
        "setup": {
            "image_bytes": args.image_size,
            "image_path": image_path,
            "check_response_bytes": len(response),
            "content_type": content_type,
            "config": {"service.max_downloads": 2000, "service.max_connections": 4000},
            "setup_seconds": round(setup_seconds, 1),
            "servers": parity,
        },
        "seconds_per_run": seconds,
        "rounds": rounds,
    }

    print(
        "## ucupdates beside nginx (1 worker each, server on CPU "
        f"{SERVER_CPU}, wrk on CPU {CLIENT_CPU}; best of {rounds} runs of {seconds} s, "
        "servers alternating)\n"
    )
    print(
        f"image {args.image_size} bytes at {image_path}; check answer {len(response)} bytes "
        f"({content_type}); TLS: ucupdates {uc_tls}, nginx {parity['nginx']['tls']}"
    )
    check = report["machine"]["cpu_check"]
    if check:
        pace = check["pace_when_both_busy"]
        print(
            f"CPU check: busy loops on CPU {CLIENT_CPU} and CPU {SERVER_CPU} at once keep "
            f"{pace[0]:.0%} and {pace[1]:.0%} of the pace of one alone (two independent "
            f"cores: 100%); load average at start {load_at_start[0]:.2f}"
        )
    print()

    def compare(key: str, title: str, runs: list[tuple[str, dict[str, Any]]]) -> None:
        results: dict[str, Any] = {}
        print(f"### {title}\n")
        print(
            "| run | ucupdates req/s | nginx req/s | ratio | ucupdates p50 / p99 "
            "| nginx p50 / p99 | p99 ratio | errors (uc / nginx) | server CPU (uc / nginx) "
            "| wrk CPU (uc / nginx) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, kwargs in runs:
            r = best_of(
                rounds,
                servers,
                "requests_per_s",
                functools.partial(
                    wrk, url_path=CHECK_PATH, body=body_file, seconds=seconds, **kwargs
                ),
            )
            u, n = r["ucupdates"], r["nginx"]
            r["ratio_requests_per_s"] = _ratio(u["requests_per_s"], n["requests_per_s"])
            r["ratio_p99"] = _ratio(u["latency_p99_us"], n["latency_p99_us"])
            results[label] = r
            print(
                f"| {label} | {u['requests_per_s']:,.0f} | {n['requests_per_s']:,.0f} "
                f"| {_fmt_ratio(r['ratio_requests_per_s'])} "
                f"| {_ms(u['latency_p50_us'])} / {_ms(u['latency_p99_us'])} "
                f"| {_ms(n['latency_p50_us'])} / {_ms(n['latency_p99_us'])} "
                f"| {_fmt_ratio(r['ratio_p99'])} | {_errors(u)} / {_errors(n)} "
                f"| {u['server_cpu_share']:.0%} / {n['server_cpu_share']:.0%} "
                f"| {u['wrk_cpu_share']:.0%} / {n['wrk_cpu_share']:.0%} |"
            )
        report[key] = results
        if rounds > 1:
            print(f"\nreq/s of each round: {_rounds_line(results, 'requests_per_s', '{:,.0f}')}")
        print()

    compare(
        "checks_keepalive",
        "1. update checks, TLS keep-alive",
        [(f"{c} connections", {"connections": c}) for c in (16, 256)],
    )
    compare(
        "checks_new_connection",
        "2. update checks, a new TLS connection per request",
        [("16 connections, Connection: close", {"connections": 16, "close": True})],
    )
    fresh = report["checks_new_connection"]["16 connections, Connection: close"]
    for s in servers:
        r, cc = fresh[s.name], parity[s.name]["connection_close"]
        print(
            f"- {s.name}: answers `Connection: close` with that header: "
            f"{cc['says_connection_close']}, closes the connection itself: "
            f"{cc['server_closed']}; during the run the machine accepted "
            f"{r['tcp_connections_accepted']:,} TCP connections for {r['requests']:,} "
            "requests"
        )
    print()

    print("### 3. image download, 4 connections\n")
    print("| | ucupdates | nginx | ratio |")
    print("|---|---|---|---|")
    dl = best_of(
        rounds, servers, "bytes_per_s", lambda s: wrk(s, image_path, connections=4, seconds=seconds)
    )
    u, n = dl["ucupdates"], dl["nginx"]
    dl["ratio_bytes_per_s"] = _ratio(u["bytes_per_s"], n["bytes_per_s"])
    report["download"] = dl
    print(
        f"| bytes/s | {u['bytes_per_s'] / 1e6:,.0f} MB/s | {n['bytes_per_s'] / 1e6:,.0f} MB/s "
        f"| {_fmt_ratio(dl['ratio_bytes_per_s'])} |"
    )
    print(f"| downloads/s | {u['requests_per_s']:.1f} | {n['requests_per_s']:.1f} | |")
    print(f"| server CPU | {u['server_cpu_share']:.0%} | {n['server_cpu_share']:.0%} | |")
    print(f"| wrk CPU | {u['wrk_cpu_share']:.0%} | {n['wrk_cpu_share']:.0%} | |")
    print(f"| errors | {_errors(u)} | {_errors(n)} | |\n")
    if rounds > 1:
        scaled = {"": {k: dl[k] for k in ("ucupdates", "nginx")}}
        print(f"MB/s of each round: {_rounds_line(scaled, 'bytes_per_s', '{:,.0f}', 1e6)}\n")

    # 4. fresh servers, one loaded at a time
    fleet.stop(uc)
    fleet.stop(ngx)
    print(
        f"### 4. server RSS with {args.slow_clients:,} slow downloads "
        f"({args.slow_rate // 1024} KiB/s each for {args.slow_seconds} s), fresh servers\n"
    )
    slow: dict[str, Any] = {}
    for which in ("ucupdates", "nginx"):
        if which == "ucupdates":
            server = fleet.start_ucupdates(config, ports["internal_https"], "slow")
        else:
            server = fleet.start_nginx(conf, nginx_port, "slow")
        result = asyncio.run(
            asyncio.wait_for(
                slow_downloads(
                    [server],
                    server,
                    image_path,
                    ctx,
                    clients=args.slow_clients,
                    rate=args.slow_rate,
                    seconds=args.slow_seconds,
                ),
                timeout=60 + args.slow_seconds + 45,
            )
        )
        result["rss"] = rss_summary(result, server.name)
        if server.extra_pids:
            result["rss_with_master"] = rss_summary(result, f"{server.name}_all")
        slow[which] = result
        fleet.stop(server)
    u, n = slow["ucupdates"]["rss"], slow["nginx"]["rss"]
    slow["ratio_peak_per_connection"] = _ratio(
        u["peak_per_connection_bytes"], n["peak_per_connection_bytes"]
    )
    report["slow_downloads"] = slow
    print("| | ucupdates | nginx (worker) | ratio |")
    print("|---|---|---|---|")
    for label, k in (
        ("baseline RSS", "baseline_bytes"),
        ("RSS when all are connected", "all_connected_bytes"),
        ("peak RSS", "peak_bytes"),
        ("growth while the clients read", "growth_while_reading_bytes"),
        ("RSS after they closed", "after_bytes"),
    ):
        print(
            f"| {label} | {u[k] / 2**20:.1f} MiB | {n[k] / 2**20:.1f} MiB "
            f"| {_fmt_ratio(_ratio(u[k], n[k]))} |"
        )
    print(
        f"| peak - baseline per connection | {u['peak_per_connection_bytes'] / 1024:.1f} KiB "
        f"| {n['peak_per_connection_bytes'] / 1024:.1f} KiB "
        f"| {_fmt_ratio(slow['ratio_peak_per_connection'])} |"
    )
    for label, k in (
        ("connected (200)", "connected_200"),
        ("connect time", "connect_seconds"),
        ("closed early by server", "closed_early_by_server"),
        ("bytes the clients read", "bytes_read_by_clients"),
    ):
        print(f"| {label} | {slow['ucupdates'][k]} | {slow['nginx'][k]} | |")
    print(f"| peak established connections | {u['peak_established']} | {n['peak_established']} | |")
    print(f"| statuses | {slow['ucupdates']['statuses']} | {slow['nginx']['statuses']} | |\n")

    keep = report["checks_keepalive"]
    report["aims"] = {
        "checks_ratio_min_0.15": keep["16 connections"]["ratio_requests_per_s"],
        "checks_ratio_min_0.15_at_256": keep["256 connections"]["ratio_requests_per_s"],
        "p99_ms_at_256_under_25": keep["256 connections"]["ucupdates"]["latency_p99_us"] / 1000,
        "download_ratio_min_0.8": dl["ratio_bytes_per_s"],
        "rss_per_slow_download_kib": u["peak_per_connection_bytes"] / 1024,
    }
    a = report["aims"]
    print("### aims (reported, not asserted)\n")
    print(
        f"- checks >= 0.15x nginx: {a['checks_ratio_min_0.15']:.3f}x at 16 connections, "
        f"{a['checks_ratio_min_0.15_at_256']:.3f}x at 256"
    )
    print(
        f"- p99 < 25 ms at 256 connections: {a['p99_ms_at_256_under_25']:.1f} ms (wrk keeps 256 "
        "requests in flight: the mean latency is 256 / rate, so this needs > 10,240 checks/s)"
    )
    print(f"- downloads >= 0.8x nginx: {a['download_ratio_min_0.8']:.2f}x")
    grown = u["peak_bytes"] - u["baseline_bytes"]
    print(
        f"- RSS with {args.slow_clients:,} slow downloads: +{grown / 2**20:.1f} MiB at peak"
        f" over the baseline ({a['rss_per_slow_download_kib']:.1f} KiB per connection; "
        f"nginx {n['peak_per_connection_bytes'] / 1024:.1f} KiB)"
    )
    log_bytes = sum(p.stat().st_size for p in work.glob("ucupdates-wrk.err"))
    report["ucupdates_stderr_bytes"] = log_bytes

    if args.profile:
        report["profile"] = run_profile(fleet, config, ports, ctx, body_file, image_path, seconds)
    return report


def best_of(
    rounds: int, servers: list[Server], key: str, run_one: Callable[[Server], dict[str, Any]]
) -> dict[str, Any]:
    """`rounds` runs per server, alternating which goes first (ABBA...); each server's
    figure is its best round by `key` (other processes on a shared machine only ever slow
    a run down), with every round kept under "rounds"."""
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
    for i in range(rounds):
        for s in servers if i % 2 == 0 else servers[::-1]:
            runs[s.name].append(run_one(s))
    return {
        name: {**max(results, key=lambda r: float(r[key])), "rounds": results}
        for name, results in runs.items()
    }


def _rounds_line(results: dict[str, Any], key: str, form: str, scale: float = 1.0) -> str:
    parts = []
    for label, r in results.items():
        each = "; ".join(
            f"{name} " + ", ".join(form.format(x[key] / scale) for x in r[name]["rounds"])
            for name in ("ucupdates", "nginx")
        )
        parts.append(f"{label}: {each}" if label else each)
    return " | ".join(parts)


def _errors(r: dict[str, Any]) -> str:
    n = r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"] + r["non_2xx"]
    return str(n)


def run_profile(
    fleet: Fleet,
    config: Path,
    ports: dict[str, int],
    ctx: ssl.SSLContext,
    body: Path,
    image_path: str,
    seconds: int,
) -> dict[str, list[str]]:
    out_dir = BENCH / "out"
    server = fleet.start_ucupdates(config, ports["internal_https"], "profile")
    summaries: dict[str, list[str]] = {}
    try:
        for label, load in {
            "check-keepalive-16": lambda: wrk(server, CHECK_PATH, 16, seconds, body=body),
            "check-close-16": lambda: wrk(server, CHECK_PATH, 16, seconds, body=body, close=True),
            "download-4": lambda: wrk(server, image_path, 4, seconds),
        }.items():
            lines = profile(server.pid, seconds, out_dir / f"serve-profile-{label}.txt", load)
            summaries[label] = lines
            print(f"\n### profile of ucupdates: {label} (py-spy)\n")
            print("\n".join(lines))
    finally:
        fleet.stop(server)
    return summaries


if __name__ == "__main__":
    main()
