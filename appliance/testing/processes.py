"""The appliance as a process: the checkout it runs from, the CLI, `serve`, free ports."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The folder that holds the `appliance` package: the checkout, when run from one.
REPO = Path(__file__).resolve().parent.parent.parent


def run_cli(
    data_dir: Path,
    *args: str,
    stdin: str | None = None,
    timeout: float = 120,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    """`python -m appliance --data-dir DATA ARGS...` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        cwd=cwd,
    )


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port nothing listens on just now (TCP unless `kind` says SOCK_DGRAM), and one this
    process was not given before: the kernel hands a port just released out again, so two
    listeners chosen one after the other could get the same one (and share it by
    SO_REUSEPORT). Under pytest-xdist each worker takes only the ports of its own remainder
    (port modulo the number of workers), so that two workers never pick the same one
    between its release here and its use."""
    share, shares = _worker_share()
    port = 0
    for _ in range(64 * shares):  # the kernel hands out ports scattered: a few tries each
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port % shares == share and port not in _GIVEN:
            break
    _GIVEN.add(port)
    return port


_GIVEN: set[int] = set()  # every port free_port handed out in this process


def _worker_share() -> tuple[int, int]:
    """This pytest-xdist worker's number and the count of workers; (0, 1) outside one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        number = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    except ValueError:
        return 0, 1
    return (number % count, count) if count > 1 else (0, 1)


STARTUP_SECONDS = 60.0  # a loaded 2-core machine starts serve in a few seconds


@dataclass
class Serving:
    """A `ucupdates serve` process the test started: its listeners' ports and its log."""

    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path


def banner_ports(text: str) -> dict[str, int] | None:
    """The listeners of serve's `ucupdates is serving:` banner (on any address), once it
    is complete."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == "ucupdates is serving:":
            ports: dict[str, int] = {}
            for entry in lines[i + 1 :]:
                if not entry.startswith("  "):
                    return ports if entry.endswith("\n") else None
                m = re.fullmatch(r"\s+(\S+)\s+\S+:(\d+)\s*", entry)
                if m is None:
                    raise AssertionError(f"unexpected listener line {entry!r}")
                ports[m.group(1)] = int(m.group(2))
    return None


@contextmanager
def serving(
    config: Path, log: Path, *options: str, startup: float = STARTUP_SECONDS
) -> Iterator[Serving]:
    """`python -m appliance --config CONFIG serve OPTIONS` until the block ends, then SIGTERM.

    Waits (at most `startup` seconds) for the banner; after the block, the process must
    stop on SIGTERM within 15 s with status 0 and no traceback in its log (standard error).
    """
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--config", str(config), "serve", *options],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        yield Serving(process, _wait_for_banner(process, log, startup), log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
            raise AssertionError(f"serve did not stop on SIGTERM: {log.read_text()}") from None
        finally:
            assert process.stdout is not None
            process.stdout.close()
    text = log.read_text()
    if status != 0 or "Traceback" in text or "Unhandled" in text:
        raise AssertionError(f"serve ended with status {status}: {text}")


def _wait_for_banner(process: subprocess.Popen[bytes], log: Path, startup: float) -> dict[str, int]:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + startup
    out = b""
    while (ports := banner_ports(out.decode(errors="replace"))) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"serve printed no listeners within {startup} s: {log.read_text()}"
            )
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"serve exited ({process.wait(5)}): {out!r} {log.read_text()}")
            out += chunk
    return ports
