"""Faults against a real `ucupdates serve`: the modes of what it and the admin commands
create under umask 022, and clients that reset or drop a download half-way.

Slow (processes and sockets): listed in tests/conftest.py. The file descriptors and memory
of the serve process are read from /proc.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.catalogue import sample_check
from appliance.testing import Serving, run_cli, serving

HOST = "127.0.0.1"
IMAGE_SIZE = 4_000_000
RUNNING = "4.0.7577.4366"
VERSION = "4.0.7577.4400"
MAX_DOWNLOADS = 4
CLIENTS = 40  # of each kind: resets, abrupt closes
SETTLE_SECONDS = 15.0


def cli(data: Path, *args: str, stdin: str | None = None) -> None:
    result = run_cli(data, *args, stdin=stdin)
    assert result.returncode == 0, (args, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Serving]]:
    """A data folder built by the admin commands and a serve process, all under umask 022."""
    base = tmp_path_factory.mktemp("faults")
    data = base / "data"
    old = os.umask(0o022)
    try:
        package = base / "UCUpdates.cab"
        size = str(IMAGE_SIZE)
        cli(data, "make-sample-package", str(package), "--version", VERSION, "--image-size", size)
        cli(data, "import", str(package))
        cli(data, "approve", "--all-pending")
        cli(data, "user", "add", "phone1", "--password-stdin", stdin="a long password 1\n")
        config = base / "ucupdates.toml"
        config.write_text(
            f"data_dir = {json.dumps(str(data))}\n"
            "[listeners]\n"
            'dns = "127.0.0.1:0"\n'
            'admin = "127.0.0.1:0"\n'
            'internal_https = "127.0.0.1:0"\n'
            'external_https = "127.0.0.1:0"\n'
            'internal_http = "127.0.0.1:0"\n'
            "[service]\n"
            "capture = true\n"
            f"max_downloads = {MAX_DOWNLOADS}\n"
        )
        with serving(config, base / "serve.log") as running:
            yield data, running
    finally:
        os.umask(old)


def call(
    port: int, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes, http.client.HTTPMessage]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        headers = {"Content-Type": "text/xml"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.headers
    finally:
        conn.close()


def image_path(port: int) -> str:
    status, body, _ = call(port, "POST", "/RequestHandler/ucdevice.upx", sample_check(RUNNING))
    assert status == 200, body
    text = body.decode()
    base = text.split("<BaseURL>", 1)[1].split("</BaseURL>", 1)[0]
    name = text.split("<FileName>", 1)[1].split("</FileName>", 1)[0]
    return "/" + base.split("/", 3)[3] + "/" + name


def modes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): stat.S_IMODE(p.lstat().st_mode)
        for p in folder.rglob("*")
        if not p.is_symlink()
    }


def test_serve_and_the_admin_commands_create_private_files_under_umask_022(
    served: tuple[Path, Serving],
) -> None:
    data, running = served
    port = running.ports["internal-http"]
    image_path(port)  # an update check: the audit file, the inventory, a capture
    status, _, _ = call(port, "PUT", "/RequestHandler/Files?filename=boot.clg", b"a log\n")
    assert status == 201
    found = modes(data)
    secret = {
        name: mode
        for name, mode in found.items()
        if name.startswith(("ucupdates.sqlite3", "Logs/", "capture/"))
    }
    assert "ucupdates.sqlite3" in secret and any(n.startswith("Logs/Audit/") for n in secret)
    assert any(n.startswith("Logs/Client/CELog/") for n in secret), secret
    assert any(n.startswith("capture/") and n.endswith(".json") for n in secret), secret
    for name, mode in secret.items():
        is_dir = (data / name).is_dir()
        assert mode & 0o007 == 0, f"{name} is {mode:o}: others may read it"
        if not is_dir:
            assert mode == 0o600, f"{name} is {mode:o}"
    assert stat.S_IMODE(data.stat().st_mode) & 0o007 == 0


# -- clients that vanish mid-download -----------------------------------------------------


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


_TLS = ssl.create_default_context()
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE  # the certificate is not what these tests are about


def start_download(port: int, path: str, tls: bool = False) -> tuple[socket.socket, bytes]:
    """A GET whose response is read a little (the transfer under way), then left; retried
    while every download slot is still taken (the server has yet to see the last client
    go), for at most SETTLE_SECONDS."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        if tls:
            sock = _TLS.wrap_socket(sock, server_hostname="ucupdates-r2.example.com")
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: ucupdates\r\n\r\n".encode())
        got = sock.recv(16384)
        if got.startswith(b"HTTP/1.1 503") and time.monotonic() < deadline:
            sock.close()
            time.sleep(0.05)
            continue
        assert got.startswith(b"HTTP/1.1 200"), got[:100]
        return sock, got


def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a phone that loses power or network would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def settled(pid: int, baseline: int) -> int:
    deadline = time.monotonic() + SETTLE_SECONDS
    while (now := fds(pid)) > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    return now


@pytest.mark.parametrize("listener", ["internal-http", "internal-https"])
def test_downloads_reset_or_dropped_midway_leave_no_descriptor_memory_or_slot_behind(
    served: tuple[Path, Serving], listener: str
) -> None:
    _, running = served
    pid = running.process.pid
    port = running.ports[listener]
    tls = listener == "internal-https"
    path = image_path(running.ports["internal-http"])
    for _ in range(3):  # warm up: whole downloads, so the baseline has what they allocate
        sock, first = start_download(port, path, tls)
        received = first.split(b"\r\n\r\n", 1)[1]
        size = len(received)
        while size < IMAGE_SIZE and (chunk := sock.recv(65536)):  # bounded: a 10 s timeout
            size += len(chunk)
        assert size == IMAGE_SIZE
        sock.close()
    base_fds, base_rss = settled(pid, 10_000), rss_kib(pid)

    for kind in (reset, socket.socket.close):
        for _ in range(CLIENTS // MAX_DOWNLOADS):  # at most MAX_DOWNLOADS slots at once
            held = [start_download(port, path, tls)[0] for _ in range(MAX_DOWNLOADS)]
            for sock in held:
                kind(sock)
    after_fds = settled(pid, base_fds)
    grown = rss_kib(pid) - base_rss

    assert after_fds <= base_fds, f"{after_fds} descriptors open, {base_fds} before"
    assert grown < 20_000, f"RSS grew by {grown} KiB after {2 * CLIENTS} dropped downloads"
    # every slot came back: MAX_DOWNLOADS downloads at once all start
    held = [start_download(port, path, tls)[0] for _ in range(MAX_DOWNLOADS)]
    for sock in held:
        reset(sock)
    plain = running.ports["internal-http"]
    assert call(plain, "POST", "/RequestHandler/ucdevice.upx", sample_check(RUNNING))[0] == 200
    log = running.log.read_text()
    assert "Traceback" not in log and "Unhandled" not in log
    print(
        f"\n{listener}: {2 * CLIENTS} downloads dropped: fds {base_fds} -> {after_fds}, "
        f"RSS {base_rss} KiB -> {base_rss + grown} KiB"
    )
