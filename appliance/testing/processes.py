"""The appliance as a process: the checkout it runs from, the CLI, free ports."""

from __future__ import annotations

import socket
import subprocess
import sys
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
    """A port nothing listens on just now (TCP unless `kind` says SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
