"""Image downloads from a real `ucupdates serve`: curl's resume, stalled readers, drops.

The download defects of docs/security.md: overlapping ranges, stalled readers holding
slots, dropped multi-range answers. The appliance runs as a process with every listener
on a free loopback port, 16 MiB images, 4 download slots (2 per client address)
and a 2 s stall limit. Stalled readers are raw sockets with a 4 KiB receive buffer that
send a GET and never read, so the server's buffers fill and the body stops moving. Each
phone is a loopback address of its own (127.0.0.N, all internal). Events are read from
the process's JSON log; file descriptors from /proc/<pid>/fd.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.catalogue.sample import sample_check
from appliance.testing import run_cli, serving

FQDN = "ucupdates-r2.example.com"
RUNNING, APPROVED = "4.0.7577.4366", "4.0.7577.4400"
IMAGE_SIZE = 16 * 1024 * 1024  # more than the kernel's and Twisted's buffers together
MAX_DOWNLOADS, PER_CLIENT, STALL_SECONDS = 4, 2, 2.0
CURL_SECONDS = 20
WAIT_SECONDS = 20.0  # for anything the server does on its own (stall aborts, closes)
SMALL_RCVBUF = 4096


@dataclass
class Served:
    data: Path
    ports: dict[str, int]
    log: Path
    pid: int
    path: str  # the image's path, as the check offers it
    sha256: str

    def url(self, listener: str = "internal-http") -> str:
        scheme = "https" if listener.endswith("https") else "http"
        return f"{scheme}://{FQDN}:{self.ports[listener]}{self.path}"

    def curl(
        self, *args: str, source: str = "127.0.0.1", listener: str = "internal-http"
    ) -> tuple[int, dict[str, str], bytes]:
        """curl the image from `source`: status, headers (lower-case) and body."""
        port = self.ports[listener]
        argv = ["curl", "-sS", "--max-time", str(CURL_SECONDS), "--interface", source]
        argv += ["--resolve", f"{FQDN}:{port}:127.0.0.1", "--cacert", str(self.ca)]
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "body"
            argv += ["-D", "-", "-o", str(target), *args, self.url(listener)]
            done = subprocess.run(argv, capture_output=True, timeout=CURL_SECONDS + 5)
            assert done.returncode == 0, done.stderr
            body = target.read_bytes() if target.exists() else b""
        out = done.stdout
        head = out.decode("latin-1").split("\r\n\r\n")[-2].split("\r\n")
        status = int(head[0].split()[1])
        headers = dict(
            (k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in head[1:])
        )
        return status, headers, body

    @property
    def ca(self) -> Path:
        return self.data / "tls" / "ca.pem"

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for record in self.log.read_text().split("\x1e"):
            if record.strip():
                event = json.loads(record)
                if event.get("event") == name:
                    found.append(event)
        return found

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def _cli(data: Path, *args: str) -> None:
    done = run_cli(data, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("downloads")
    data = base / "data"
    package = base / "UCUpdates.cab"
    size = str(IMAGE_SIZE)
    _cli(data, "make-sample-package", str(package), "--version", APPROVED, "--image-size", size)
    _cli(data, "import", str(package))
    _cli(data, "approve", "--all-pending")
    config = base / "ucupdates.toml"
    config.write_text(
        f"data_dir = {json.dumps(str(data))}\n"
        "[listeners]\n"
        + "".join(
            f'{name} = "127.0.0.1:0"\n'
            for name in ("dns", "admin", "internal_https", "external_https", "internal_http")
        )
        + "[service]\n"
        + f"max_downloads = {MAX_DOWNLOADS}\n"
        + f"max_downloads_per_client = {PER_CLIENT}\n"
        + f"download_stall_seconds = {STALL_SECONDS}\n"
    )
    with serving(config, base / "serve.json", "--log-format", "json") as running:
        port = running.ports["internal-http"]
        check = subprocess.run(
            ["curl", "-sS", "--max-time", str(CURL_SECONDS), "--data-binary", "@-"]
            + [
                "-H",
                "Content-Type: text/xml",
                f"http://127.0.0.1:{port}/RequestHandler/ucdevice.upx",
            ],
            input=sample_check(RUNNING),
            capture_output=True,
            timeout=CURL_SECONDS + 5,
            check=True,
        )
        fields = {e.tag: e.text or "" for e in ET.fromstring(check.stdout).iter()}
        base_url = fields["BaseURL"].split(f":{port}", 1)[1]
        path = f"{base_url}/{fields['FileName']}"
        yield Served(data, running.ports, running.log, running.process.pid, path, fields["SHA256"])


def wait_for(what: str, done: Callable[[], bool], seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def stalled_reader(served: Served, source: str) -> socket.socket:
    """A client that asks for the image and never reads (a tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", served.ports["internal-http"]))
    sock.sendall(f"GET {served.path} HTTP/1.1\r\nHost: {FQDN}\r\n\r\n".encode())
    return sock


def settled(served: Served, baseline: int) -> None:
    """Every download over and the process's file descriptors back to `baseline`."""
    wait_for(f"file descriptors back to {baseline}", lambda: served.fds() <= baseline)


# -- defect 1: ranges -----------------------------------------------------------------------


@pytest.mark.parametrize("listener", ["internal-http", "internal-https"])
def test_curl_resumes_a_cut_download_with_a_range(served: Served, listener: str) -> None:
    status, headers, first = served.curl("-r", "0-999999", listener=listener)
    assert (status, len(first)) == (206, 1_000_000)
    assert headers["content-range"] == f"bytes 0-999999/{IMAGE_SIZE}"
    status, headers, rest = served.curl("-r", "1000000-", listener=listener)
    assert status == 206
    assert headers["content-length"] == str(IMAGE_SIZE - 1_000_000)
    assert hashlib.sha256(first + rest).hexdigest() == served.sha256


def test_five_thousand_whole_file_ranges_get_the_file_once(served: Served) -> None:
    # Before: 206 announcing 5,000 times the file (80 GiB here), streamed until cut.
    ranges = ",".join(["0-"] * 5000)
    status, headers, body = served.curl("-H", f"Range: bytes={ranges}")
    assert status == 200
    assert headers["content-length"] == str(IMAGE_SIZE)
    assert hashlib.sha256(body).hexdigest() == served.sha256


# -- defect 2: clients that stop reading ----------------------------------------------------


def test_stalled_readers_are_cut_and_a_phone_then_downloads(served: Served) -> None:
    baseline = served.fds()
    stalled_before = len(served.events("download.stalled"))
    readers = [stalled_reader(served, f"127.0.0.{n}") for n in (11, 11, 12, 12)]
    try:
        # Every slot is taken: a phone is told to come back later...
        wait_for(
            "a phone refused while the slots are held",
            lambda: served.curl("-r", "0-0", source="127.0.0.13")[0] == 503,
        )
        # ...until the stalled bodies have made no progress for the stall time.
        wait_for(
            "the stalled downloads aborted",
            lambda: len(served.events("download.stalled")) - stalled_before == 4,
            STALL_SECONDS + WAIT_SECONDS,
        )
        status, _, body = served.curl(source="127.0.0.13")
        assert status == 200
        assert hashlib.sha256(body).hexdigest() == served.sha256
    finally:
        for reader in readers:
            reader.close()
    settled(served, baseline)
    interrupted = [
        e for e in served.events("image.download") if e["client"] in ("127.0.0.11", "127.0.0.12")
    ]
    assert len(interrupted) == 4
    assert all(e["partial"] == " (interrupted)" for e in interrupted)


def test_one_address_gets_only_its_share_of_the_slots(served: Served) -> None:
    baseline = served.fds()
    refused_before = len(served.events("download.refused"))
    readers = [stalled_reader(served, "127.0.0.21") for _ in range(PER_CLIENT)]
    try:
        extra = stalled_reader(served, "127.0.0.21")
        readers.append(extra)
        answer = b""
        for _ in range(100):
            chunk = extra.recv(4096)
            answer += chunk
            if not chunk or b"\r\n\r\n" in answer:
                break
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"\r\nRetry-After: " in answer
        refused = served.events("download.refused")[refused_before:]
        assert [(e["client"], e["limit"]) for e in refused] == [
            ("127.0.0.21", "max_downloads_per_client")
        ]
        status, _, body = served.curl(source="127.0.0.22")  # another address is served
        assert (status, len(body)) == (200, IMAGE_SIZE)
    finally:
        for reader in readers:
            reader.close()
    settled(served, baseline)


# -- defect 7: a client that drops a multi-range response ------------------------------------


def _drop(served: Served, tls: bool, ranges: str, read: int, reset: bool) -> None:
    listener = "internal-https" if tls else "internal-http"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)  # before connecting
    sock.settimeout(5)
    sock.connect(("127.0.0.1", served.ports[listener]))
    if tls:
        context = ssl.create_default_context(cafile=str(served.ca))
        sock = context.wrap_socket(sock, server_hostname=FQDN)
    try:
        sock.sendall(
            f"GET {served.path} HTTP/1.1\r\nHost: {FQDN}\r\nRange: bytes={ranges}\r\n\r\n".encode()
        )
        got = 0
        for _ in range(10_000):
            if got >= read:
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


def test_clients_dropping_multi_range_responses_leave_one_line_and_no_traceback(
    served: Served,
) -> None:
    baseline = served.fds()
    before = len(served.events("image.download"))
    cases = [
        (tls, ranges, read, reset)
        for tls in (False, True)
        for ranges in ("0-9,100-199,5000000-", "0-999,2000-2999,3000-", "100-")
        for read in (1, 300_000, 3_000_000)  # 1: the answer has begun
        for reset in (False, True)
    ]
    for case in cases:
        _drop(served, *case)
    wait_for(
        "a line for each dropped download",
        lambda: len(served.events("image.download")) - before == len(cases),
    )
    settled(served, baseline)
    text = served.log.read_text()
    assert "Traceback" not in text
    assert "Unhandled" not in text
    levels = {json.dumps(json.loads(r).get("log_level")) for r in text.split("\x1e") if r.strip()}
    assert not [level for level in levels if "critical" in level or "error" in level], levels
    dropped = served.events("image.download")[before:]
    assert {(e["client"], e["partial"]) for e in dropped} == {("127.0.0.1", " (interrupted)")}
