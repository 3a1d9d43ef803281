"""`ucupdates serve` end to end: the real entry point as a process, real sockets, real TLS.

One serve process is shared by the whole module. Before it starts, the admin commands
(real processes too) build its data folder: the sample package in two versions, the older
approved and the newer pending, one test device and two phone users. Every test then talks
to it as a phone or an admin would, with an HTTPS client that trusts the generated test CA
and checks the name `ucupdates-r2.example.com` while connecting to 127.0.0.1, or with raw
TLS sockets for what a well-behaved client never sends.

Tests that must not share a client address with the others (wrong passwords count per
address) connect from other loopback addresses (127.0.0.N), as separate phones would.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET
from base64 import b64encode
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from appliance.catalogue.sample import SAMPLE_PHONE_MAC, sample_check
from appliance.model import Device
from appliance.store.database import Store
from appliance.testing import run_cli, serving

FQDN = "ucupdates-r2.example.com"
HOST = "127.0.0.1"
RUNNING = "4.0.7577.4366"  # what the phones in these tests run
APPROVED = "4.0.7577.4387"
PENDING = "4.0.7577.4400"
IMAGE_SIZE = 6000
TEST_MAC = SAMPLE_PHONE_MAC  # listed as a test device: gets the pending version
ORDINARY_MAC = "00-04-F2-00-00-02"
USER, PASSWORD = "alice@example.com", "correct horse battery staple"
GUESSED_USER, GUESSED_PASSWORD = "bob@example.com", "bob's real password"
REQUEST_TIMEOUT = 2.0
MAX_CHECK_BYTES = 4096
MAX_HEADER_BYTES = 4096
MAX_LOG_BYTES = 20_000
MAX_FAILURES = 3
MAX_CONNECTIONS = 8  # per listener
CHECK_PATH = "/RequestHandler/ucdevice.upx"
EXT_CHECK_PATH = "/RequestHandlerExt/ucdevice.upx"
XML = {"Content-Type": "text/xml"}
STARTUP_SECONDS = 20.0
IO_SECONDS = 10.0  # any one request or response


# -- the service process ----------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def xml(self) -> ET.Element:
        assert self.headers.get("Content-Type", "").startswith("text/xml"), self
        return ET.fromstring(self.body)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 that sends SNI and Host of FQDN and checks the certificate's name."""

    def __init__(self, port: int, context: ssl.SSLContext, source: str) -> None:
        super().__init__(FQDN, port, timeout=IO_SECONDS, context=context)
        self._tls = context
        self._source = source

    def connect(self) -> None:
        raw = socket.create_connection((HOST, self.port), IO_SECONDS, (self._source, 0))
        self.sock = self._tls.wrap_socket(raw, server_hostname=FQDN)


@dataclass
class Served:
    """The running `ucupdates serve` and how to reach it."""

    data: Path
    ports: dict[str, int]
    tls: ssl.SSLContext
    process: subprocess.Popen[bytes]
    log: Path

    def connection(
        self, listener: str = "internal-https", source: str = HOST
    ) -> http.client.HTTPConnection:
        if listener == "internal-http":
            return http.client.HTTPConnection(
                HOST, self.ports[listener], timeout=IO_SECONDS, source_address=(source, 0)
            )
        return _PinnedHTTPSConnection(self.ports[listener], self.tls, source)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        listener: str = "internal-https",
        source: str = HOST,
        auth: tuple[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if auth is not None:
            sent["Authorization"] = basic(*auth)
        conn = self.connection(listener, source)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def check(
        self,
        body: bytes,
        *,
        path: str = CHECK_PATH,
        listener: str = "internal-https",
        source: str = HOST,
        auth: tuple[str, str] | None = None,
    ) -> Reply:
        return self.call("POST", path, body, XML, listener=listener, source=source, auth=auth)

    def raw(self, listener: str = "internal-https") -> ssl.SSLSocket:
        """A TLS socket to the listener, for requests no HTTP library would send."""
        sock = socket.create_connection((HOST, self.ports[listener]), IO_SECONDS)
        return self.tls.wrap_socket(sock, server_hostname=FQDN)

    def stored(self, url_path: str) -> bytes:
        """The stored file an image URL path names, read from the data folder."""
        relative = url_path.split("/", 2)[2]
        return (self.data / "DeviceUpdateStore" / relative).read_bytes()


def basic(user: str, password: str) -> str:
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()


def basic_offered(reply: Reply) -> bool:
    """Whether a 401 offers Basic (beside NTLM, each in its own header line)."""
    return any(v.startswith("Basic ") for v in reply.headers.get_all("WWW-Authenticate") or [])


def check_body(
    version: str = RUNNING,
    mac: str = ORDINARY_MAC,
    *,
    brand: str = "Polycom",
    model: str = "CX600",
    locale: str = "ENU",
) -> bytes:
    """An update check as the sample phone sends it, for another device if asked."""
    body = sample_check(version, mac)
    body = body.replace(b"<Vendor>Polycom</Vendor>", f"<Vendor>{brand}</Vendor>".encode())
    body = body.replace(b"<Model>CX600</Model>", f"<Model>{model}</Model>".encode())
    return body.replace(b"<Locale>ENU</Locale>", f"<Locale>{locale}</Locale>".encode())


def cli(data: Path, *args: str, stdin: str | None = None) -> str:
    result = run_cli(data, *args, stdin=stdin)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def add_user(data: Path, name: str, password: str) -> None:
    """`ucupdates user add NAME --password-stdin`, or the store directly where the installed
    command line has no `user` command yet."""
    usage = run_cli(data, "--help").stdout
    if re.search(r"^\s+user\s", usage, re.MULTILINE):
        cli(data, "user", "add", name, "--password-stdin", stdin=password + "\n")
        return
    from appliance.passwords import hash_password

    store = Store.open(data / "ucupdates.sqlite3")
    try:
        store.add_user(name, hash_password(password))
    finally:
        store.close()


def _write_config(base: Path, data: Path) -> Path:
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
        f"request_timeout = {REQUEST_TIMEOUT}\n"
        f"max_check_bytes = {MAX_CHECK_BYTES}\n"
        f"max_header_bytes = {MAX_HEADER_BYTES}\n"
        f"max_connections = {MAX_CONNECTIONS}\n"
        "[auth]\n"
        f"max_failures = {MAX_FAILURES}\n"
        "[device_logs]\n"
        f"max_file_bytes = {MAX_LOG_BYTES}\n"
    )
    return config


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("serve")
    data = base / "data"
    for version in (APPROVED, PENDING):
        package = base / f"UCUpdates-{version}.cab"
        size = str(IMAGE_SIZE)
        cli(data, "make-sample-package", str(package), "--version", version, "--image-size", size)
        cli(data, "import", str(package))
        if version == APPROVED:
            cli(data, "approve", "--all-pending")
    cli(data, "test-device", "add", "lab-phone", "--mac", TEST_MAC)
    add_user(data, USER, PASSWORD)
    add_user(data, GUESSED_USER, GUESSED_PASSWORD)
    config = _write_config(base, data)

    with serving(config, base / "serve.log") as running:
        tls = ssl.create_default_context(cafile=str(data / "tls" / "ca.pem"))
        yield Served(data, running.ports, tls, running.process, running.log)


# -- raw sockets ----------------------------------------------------------------------------


def next_phone_check(served: Served, seconds: float = 5.0) -> Reply:
    """The next phone's check, once the server has let go of the connections a test
    refused or dropped: a refused connection keeps its slot until the server sees it
    closed, or for up to `web.guard.LINGER_SECONDS` (1 s) when it stopped reading it, so
    with `MAX_CONNECTIONS` 8 a new connection may be turned away meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return served.check(check_body())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection (True) or `seconds` pass."""
    deadline = time.monotonic() + seconds
    received = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:  # reset, or a TLS connection cut without close_notify
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def status_of(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    assert m, response[:200]
    return int(m.group(1))


def send_raw(served: Served, head: bytes, *parts: bytes) -> tuple[bytes, bool]:
    """Send `head` and then each part (as separate writes), and read until closed."""
    with served.raw() as sock:
        sock.sendall(head)
        for part in parts:
            sock.sendall(part)
        return read_until_closed(sock, IO_SECONDS)


def offered(reply: Reply) -> tuple[str, str, str, ET.Element]:
    """Version, BaseURL, ExternalBaseURL and the module of an answer offering an update."""
    assert reply.status == 200, reply
    root = reply.xml()
    assert root.findtext("Downloads") == "1"
    (module,) = root.findall("Modules/Module")
    return (
        module.findtext("Version") or "",
        root.findtext("BaseURL") or "",
        root.findtext("ExternalBaseURL") or "",
        module,
    )


def image_path(base_url: str) -> str:
    return urlsplit(base_url).path + "/CPE.nbt"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- 1. the update check --------------------------------------------------------------------


def test_test_device_gets_pending_and_ordinary_phone_gets_approved(served: Served) -> None:
    folder = "UCPhone/Polycom/CX600/A/ENU/{}/CPE"
    internal = f"http://{FQDN}:{served.ports['internal-http']}/DeviceUpdateFiles_Int/"
    external = f"https://{FQDN}:{served.ports['external-https']}/DeviceUpdateFiles_Ext/"
    for mac, version in ((TEST_MAC, PENDING), (ORDINARY_MAC, APPROVED)):
        reply = served.check(check_body(mac=mac))
        assert reply.headers["Content-Type"] == "text/xml; charset=utf-8"
        got, base_url, external_url, module = offered(reply)
        assert got == version, mac
        assert base_url == internal + folder.format(version)
        assert external_url == external + folder.format(version)
        assert module.findtext("FileName") == "CPE.nbt"
        assert module.findtext("SignatureFileName") == "CPE.cat"
        image = served.stored(urlsplit(base_url).path + "/CPE.nbt")
        assert module.findtext("Size") == str(len(image)) == str(IMAGE_SIZE)
        assert module.findtext("SHA256") == sha256(image)


def test_phone_already_on_the_approved_version_gets_no_download(served: Served) -> None:
    reply = served.check(check_body(APPROVED, ORDINARY_MAC))
    assert reply.status == 200
    root = reply.xml()
    assert root.findtext("Downloads") == "0"
    assert root.find("BaseURL") is None
    # The test device on the pending version is up to date too.
    assert served.check(check_body(PENDING, TEST_MAC)).xml().findtext("Downloads") == "0"


# -- 2. external phones need credentials ----------------------------------------------------

EXTERNAL_ROUTES = [
    # A separate client address per route: wrong passwords count per address.
    pytest.param("external-https", CHECK_PATH, "127.0.0.11", id="external-listener"),
    pytest.param("external-https", EXT_CHECK_PATH, "127.0.0.12", id="external-listener-ext-path"),
    pytest.param("internal-https", EXT_CHECK_PATH, "127.0.0.13", id="internal-listener-ext-path"),
]


@pytest.mark.parametrize(("listener", "path", "source"), EXTERNAL_ROUTES)
def test_external_check_needs_the_right_password(
    served: Served, listener: str, path: str, source: str
) -> None:
    body = check_body()
    anonymous = served.check(body, path=path, listener=listener, source=source)
    assert anonymous.status == 401
    assert basic_offered(anonymous)
    assert b"<Response" not in anonymous.body

    wrong = served.check(
        body, path=path, listener=listener, source=source, auth=(USER, PASSWORD + "x")
    )
    assert wrong.status == 401
    assert basic_offered(wrong)
    assert b"<Response" not in wrong.body

    right = served.check(body, path=path, listener=listener, source=source, auth=(USER, PASSWORD))
    version, base_url, external_url, _ = offered(right)
    assert version == APPROVED
    assert external_url.startswith(f"https://{FQDN}:{served.ports['external-https']}/")


def test_repeated_wrong_passwords_lock_out_the_guesser_not_the_phone(served: Served) -> None:
    source = "127.0.0.99"
    body = check_body()
    statuses = []
    for _ in range(MAX_FAILURES + 2):
        reply = served.check(
            body, listener="external-https", source=source, auth=(GUESSED_USER, "guess")
        )
        statuses.append(reply.status)
        if reply.status == 429:
            break
    assert statuses == [401] * MAX_FAILURES + [429]
    assert int(reply.headers["Retry-After"]) > 0
    # Locked out: from that address no password is checked until its next turn (Retry-After,
    # auth.lockout_check_seconds), the right one included (this address never signed in)...
    locked = served.check(
        body, listener="external-https", source=source, auth=(GUESSED_USER, GUESSED_PASSWORD)
    )
    assert locked.status == 429
    assert int(locked.headers["Retry-After"]) > 0
    # ...but the phone with the right password elsewhere, and other users behind the
    # guesser's address, get in at once (defect 5).
    other = served.check(
        body, listener="external-https", source="127.0.0.98", auth=(GUESSED_USER, GUESSED_PASSWORD)
    )
    assert other.status == 200
    nat = served.check(body, listener="external-https", source=source, auth=(USER, PASSWORD))
    assert nat.status == 200
    assert int(locked.headers["Retry-After"]) <= 60  # the next turn, not the lockout's end


# -- 3. image downloads ---------------------------------------------------------------------


def test_download_head_range_and_etag(served: Served) -> None:
    _, base_url, _, module = offered(served.check(check_body()))
    path = image_path(base_url)
    announced = module.findtext("SHA256")

    whole = served.call("GET", path)
    assert whole.status == 200
    assert sha256(whole.body) == announced
    assert len(whole.body) == IMAGE_SIZE
    etag = whole.headers["ETag"]
    assert etag

    conn = served.connection()
    try:
        conn.request("HEAD", path)
        head = conn.getresponse()
        assert head.status == 200
        assert head.getheader("Content-Length") == str(IMAGE_SIZE)
        assert head.read() == b""
        # Resume: the same connection goes on with the next response, so HEAD sent no body.
        conn.request("GET", path, headers={"Range": "bytes=1000-"})
        rest = conn.getresponse()
        assert rest.status == 206
        assert rest.getheader("Content-Range") == f"bytes 1000-{IMAGE_SIZE - 1}/{IMAGE_SIZE}"
        tail = rest.read()
    finally:
        conn.close()
    first = served.call("GET", path, headers={"Range": "bytes=0-999"})
    assert first.status == 206
    assert sha256(first.body + tail) == announced

    unchanged = served.call("GET", path, headers={"If-None-Match": etag})
    assert unchanged.status == 304
    assert unchanged.body == b""


def test_files_of_a_removed_rule_are_not_served(served: Served) -> None:
    body = check_body(brand="HP", model="4120")
    _, base_url, _, module = offered(served.check(body))
    path = image_path(base_url)
    assert sha256(served.call("GET", path).body) == module.findtext("SHA256")

    cli(served.data, "remove", "--brand", "HP", "--model", "4120")

    assert served.call("GET", path).status == 404
    assert served.check(body).xml().findtext("Downloads") == "0"
    assert (served.data / "DeviceUpdateStore" / path.split("/", 2)[2]).exists()


@pytest.mark.parametrize(
    "path",
    [
        "/DeviceUpdateFiles_Int/../ucupdates.sqlite3",
        "/DeviceUpdateFiles_Int/%2e%2e/ucupdates.sqlite3",
        "/DeviceUpdateFiles_Int/UCPhone/%2E%2E/%2e%2e/tls/server.key",
        f"/DeviceUpdateFiles_Int/UCPhone/Polycom/CX600/A/ENU/{APPROVED}/CPE/"
        + "..%2f" * 8
        + "ucupdates.sqlite3",
        "/DeviceUpdateFiles_Int/..%5c..%5cucupdates.sqlite3",
        "/DeviceUpdateFiles_Int//etc/passwd",
        "/DeviceUpdateFiles_Int/%2fetc%2fpasswd",
    ],
)
def test_paths_out_of_the_store_are_not_found(served: Served, path: str) -> None:
    reply = served.call("GET", path)
    assert reply.status == 404
    for secret in (b"SQLite format", b"PRIVATE KEY", b"root:"):
        assert secret not in reply.body


def test_external_downloads_need_credentials(served: Served) -> None:
    _, _, external_url, module = offered(served.check(check_body()))
    path = image_path(external_url)
    assert path.startswith("/DeviceUpdateFiles_Ext/")
    for listener in ("internal-https", "external-https"):
        refused = served.call("GET", path, listener=listener)
        assert refused.status == 401
        assert basic_offered(refused)
        assert len(refused.body) < 100
        got = served.call("GET", path, listener=listener, auth=(USER, PASSWORD))
        assert got.status == 200
        assert sha256(got.body) == module.findtext("SHA256")
    # The internal path on the external listener is external all the same.
    internal_path = path.replace("/DeviceUpdateFiles_Ext/", "/DeviceUpdateFiles_Int/")
    assert served.call("GET", internal_path, listener="external-https").status == 401


# -- 4. device log uploads ------------------------------------------------------------------

UPLOAD = "/RequestHandler/Files?filename={}&mac=00-04-F2-00-00-01"


def _logs(served: Served) -> set[Path]:
    folder = served.data / "Logs" / "Client"
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_device_log_upload_is_stored(served: Served, method: str) -> None:
    before = _logs(served)
    body = f"CE log via {method}\n".encode() * 100
    reply = served.call(method, UPLOAD.format("x.clg"), body)
    assert reply.status == 201
    (new,) = _logs(served) - before
    assert new.parent == served.data / "Logs" / "Client" / "CELog"
    assert new.name.startswith("00-04-F2-00-00-01_")
    assert new.name.endswith("x.clg")
    assert new.read_bytes() == body


def test_device_log_with_a_bad_extension_or_too_big_is_refused(served: Served) -> None:
    before = _logs(served)
    reply = served.call("PUT", UPLOAD.format("x.exe"), b"MZ" * 50)
    assert reply.status == 415

    # Declared too big: refused from the headers, before any of the body is sent.
    head = (
        f"PUT {UPLOAD.format('big.clg')} HTTP/1.1\r\nHost: {FQDN}\r\n"
        f"Content-Length: {MAX_LOG_BYTES + 1}\r\n\r\n"
    ).encode()
    response, closed = send_raw(served, head)
    assert status_of(response) == 413
    assert closed
    assert _logs(served) == before


# -- 5. bad input ---------------------------------------------------------------------------

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Request [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Request><Vendor>&xxe;</Vendor><Model>CX600</Model><Locale>ENU</Locale></Request>
"""


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        pytest.param("POST", CHECK_PATH, b"<Request><Vendor>Polycom</Request", 400, id="malformed"),
        pytest.param("POST", CHECK_PATH, XXE, 400, id="xxe"),
        pytest.param("GET", CHECK_PATH, None, 405, id="get-check"),
        pytest.param("POST", "/RequestHandler/other.upx", check_body(), 404, id="unknown-path"),
        pytest.param("GET", "/", None, 404, id="root"),
    ],
)
def test_bad_requests_get_a_status_and_the_service_goes_on(
    served: Served, method: str, path: str, body: bytes | None, status: int
) -> None:
    reply = served.call(method, path, body, XML)
    assert reply.status == status
    assert b"root:" not in reply.body and b"Traceback" not in reply.body
    assert len(reply.body) < 300
    if status == 405:
        assert reply.headers["Allow"] == "POST"
    assert offered(next_phone_check(served))[0] == APPROVED


def _check_head(**headers: str) -> bytes:
    lines = [f"POST {CHECK_PATH} HTTP/1.1", f"Host: {FQDN}", "Content-Type: text/xml"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_oversized_check_is_refused_from_its_headers(served: Served) -> None:
    response, closed = send_raw(served, _check_head(Content_Length=str(10**9)))
    assert status_of(response) == 413
    assert closed
    assert offered(next_phone_check(served))[0] == APPROVED


def test_chunked_check_growing_over_the_limit_is_refused(served: Served) -> None:
    chunk = b"%x\r\n%s\r\n" % (3000, b"<" * 3000)
    # Two chunks of 3000 bytes and no end: the limit is crossed while the body streams.
    response, closed = send_raw(served, _check_head(Transfer_Encoding="chunked"), chunk, chunk)
    assert status_of(response) == 413
    assert closed
    assert offered(next_phone_check(served))[0] == APPROVED


def test_headers_over_the_limit_close_the_connection(served: Served) -> None:
    head = f"POST {CHECK_PATH} HTTP/1.1\r\nHost: {FQDN}\r\n".encode()
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(45))
    assert len(head + padding) > MAX_HEADER_BYTES
    # The blank line never comes: a refusal can only be for the size, not the time (408).
    response, closed = send_raw(served, head + padding)
    assert status_of(response) in (400, 431)
    assert closed
    assert offered(next_phone_check(served))[0] == APPROVED


@pytest.mark.parametrize("end", [b"", b"\r\n"], ids=["no-crlf", "crlf"])
def test_an_over_long_header_line_gets_431_at_once(served: Served, end: bytes) -> None:
    # Before: no answer, and the connection closed only by the idle timeout (15 s).
    head = f"POST {CHECK_PATH} HTTP/1.1\r\nHost: {FQDN}\r\n".encode()
    line = b"X-Long: " + b"a" * (2 * MAX_HEADER_BYTES) + end
    started = time.monotonic()
    with served.raw() as sock:
        sock.sendall(head + line)
        response, closed = read_until_closed(sock, IO_SECONDS)
    assert status_of(response) == 431
    assert closed and time.monotonic() - started < 2
    assert offered(next_phone_check(served))[0] == APPROVED


@pytest.mark.parametrize("listener", ["internal-https", "external-https", "admin"])
def test_options_star_and_health_name_no_software_or_path(served: Served, listener: str) -> None:
    # Before: `Server: TwistedWeb/26.10.0`, and /health's checks (folders, listeners) to anyone.
    with served.raw(listener) as sock:
        sock.sendall(f"OPTIONS * HTTP/1.1\r\nHost: {FQDN}\r\n\r\n".encode())
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {FQDN}\r\nConnection: close\r\n\r\n".encode())
        response, _ = read_until_closed(sock, IO_SECONDS)
    assert status_of(response) == 204
    assert b"twisted" not in response.lower()
    assert response.count(b"\r\nServer: ucupdates\r\n") == 2
    assert str(served.data).encode() not in response
    assert b"listening" not in response
    if listener == "admin":
        assert b'"status"' in response and b'"checks"' not in response


def test_a_refused_request_streaming_an_endless_body_is_cut_off(served: Served) -> None:
    """An external check without credentials (401 from its headers) whose chunked body
    never ends, sent by a client that ignores the answer and the TLS close_notify."""
    # Before: read (and decrypted) for 30 s, about 7 GB on loopback.
    head = f"POST {EXT_CHECK_PATH} HTTP/1.1\r\nHost: {FQDN}\r\nContent-Type: text/xml\r\n"
    chunk = b"4000\r\n" + b"<" * 0x4000 + b"\r\n"
    sent, response = 0, b""
    started = time.monotonic()
    with served.raw("external-https") as sock:
        sock.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        while time.monotonic() - started < IO_SECONDS:
            try:
                sock.settimeout(0)
                response += sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError, ssl.SSLZeroReturnError):
                pass
            except OSError:
                break
            try:
                sock.settimeout(2)
                sock.sendall(chunk)
            except OSError:  # reset, or the TLS stream cut
                break
            sent += len(chunk)
    elapsed = time.monotonic() - started
    assert status_of(response) == 401
    assert elapsed < 3, f"still sending after {elapsed:.1f} s ({sent / 1e6:.0f} MB)"
    assert sent < 64 * 2**20  # what the kernel's socket buffers hold, not what was read
    assert offered(next_phone_check(served))[0] == APPROVED


def test_stalled_client_is_disconnected(served: Served) -> None:
    with served.raw() as sock:
        sock.sendall(b"POST /RequestHandler/ucdev")
        response, closed = read_until_closed(sock, REQUEST_TIMEOUT + 3)
    assert closed, "a half request line kept the connection open"
    assert response == b"" or status_of(response) == 408
    assert offered(next_phone_check(served))[0] == APPROVED


def test_connections_over_the_limit_are_refused(served: Served) -> None:
    held: list[ssl.SSLSocket] = []
    refused: OSError | None = None
    try:
        for _ in range(MAX_CONNECTIONS + 1):
            try:
                held.append(served.raw())  # returns once the TLS handshake is done
            except OSError as e:
                refused = e
                break
        assert refused is not None, f"{len(held)} connections open at once"
        assert len(held) <= MAX_CONNECTIONS
    finally:
        for sock in held:
            sock.close()
    # The connections are closed: the next phone gets through again.
    assert offered(next_phone_check(served))[0] == APPROVED


# -- 6. record keeping ----------------------------------------------------------------------


def _devices(served: Served) -> dict[str, Device]:
    store = Store.open(served.data / "ucupdates.sqlite3")
    try:
        return {d.identity: d for d in store.devices()}
    finally:
        store.close()


def test_checks_are_audited_and_devices_recorded(served: Served) -> None:
    day = datetime.now(UTC).strftime("%Y%m%d")
    mac, external_mac = "00-04-F2-00-00-61", "00-04-F2-00-00-62"
    for _ in range(3):
        assert offered(served.check(check_body(mac=mac)))[0] == APPROVED
    reply = served.check(
        check_body(mac=external_mac), listener="external-https", auth=(USER, PASSWORD)
    )
    assert offered(reply)[0] == APPROVED

    days = {day, datetime.now(UTC).strftime("%Y%m%d")}
    audit = [
        p
        for d in days
        for p in (served.data / "Logs" / "Audit").glob(f"RequestHandlerAuditLog_*_{d}.log")
    ]
    assert audit
    lines = [line for p in audit for line in p.read_text().splitlines() if mac in line]
    assert len(lines) == 3
    for line in lines:
        fields = line.split(";")
        assert fields[1] == HOST
        assert fields[3] == mac
        assert fields[5:9] == ["Polycom", "CX600", "A", "ENU"]
        assert f"CPE.nbt;{RUNNING};" in line
        assert f"CPE.nbt;CPE.cat;{APPROVED};2013-04-02T00:00:00Z" in line

    deadline = time.monotonic() + 5
    while (
        not {mac, external_mac} <= (devices := _devices(served)).keys()
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert {mac, external_mac} <= devices.keys(), "the inventory was not written"
    device = devices[mac]
    assert (device.model, device.version, device.zone) == ("CX600", RUNNING, "internal")
    assert devices[external_mac].zone == "external"
    assert devices[external_mac].version == RUNNING


def _capture_of(served: Served, marker: bytes) -> dict[str, object]:
    """The one capture whose request body holds `marker`, as `capture show --json` has it."""
    listed = json.loads(cli(served.data, "capture", "list", "--json"))
    found = []
    for summary in listed:
        shown = json.loads(cli(served.data, "capture", "show", summary["id"], "--json"))
        if marker.decode() in shown["request"]["body"].get("text", ""):
            found.append(shown)
    assert len(found) == 1, f"{len(found)} captures hold {marker!r}"
    return found[0]


def test_unparsable_check_is_captured_without_credentials(served: Served) -> None:
    marker = b"<Request><Vendor>Polycom</Vendor><Model>capture-me"
    token = basic("carol", "secret-in-capture")
    cookie = "session=cookie-secret"
    reply = served.call(
        "POST", CHECK_PATH, marker, {**XML, "Authorization": token, "Cookie": cookie}
    )
    assert reply.status == 400
    capture = _capture_of(served, marker)
    assert ["Authorization", "Basic (credentials removed)"] in capture["request"]["headers"]
    assert ["Cookie", "session=…"] in capture["request"]["headers"]
    for path in (served.data / "capture").iterdir():
        assert token.split()[1].encode() not in path.read_bytes()
        assert b"cookie-secret" not in path.read_bytes()
    assert capture["answer"] == {
        "status": 400,
        "body": {"text": reply.body.decode(), "bytes": len(reply.body)},
    }
    assert (capture["client"], capture["zone"]) == (HOST, "internal")
    tls = capture["tls"]  # Python's client: TLS 1.2 or 1.3, with SNI
    assert tls["version"] in ("TLSv1.2", "TLSv1.3") and tls["cipher"], tls
    assert (tls["sni_sent"], tls["server_name"]) == (True, FQDN)
    shown = cli(served.data, "capture", "show", capture["id"])
    assert f"SNI {FQDN}" in shown and "Basic (credentials removed)" in shown


def test_a_capture_over_tls_1_0_without_sni_says_so(served: Served) -> None:
    marker = b"<Request><Model>old-phone-no-sni"
    request = (
        f"POST {CHECK_PATH} HTTP/1.1\r\nHost: {FQDN}\r\nContent-Type: text/xml\r\n"
        f"Connection: close\r\nContent-Length: {len(marker)}\r\n\r\n"
    ).encode() + marker
    result = subprocess.run(
        [
            "openssl", "s_client", "-connect", f"{HOST}:{served.ports['internal-https']}",
            "-tls1", "-cipher", "AES128-SHA@SECLEVEL=0", "-noservername", "-ign_eof", "-quiet",
        ],
        input=request,
        capture_output=True,
        timeout=IO_SECONDS,
    )  # fmt: skip
    assert b"HTTP/1.1 400" in result.stdout, result.stderr
    tls = _capture_of(served, marker)["tls"]
    assert tls == {
        "version": "TLSv1",
        "cipher": "AES128-SHA",
        "sni_sent": False,
        "server_name": None,
    }


def test_a_capture_over_plain_http_has_no_tls(served: Served) -> None:
    marker = b"<Request><Model>plain-http"
    assert served.call("POST", CHECK_PATH, marker, XML, listener="internal-http").status == 400
    assert _capture_of(served, marker)["tls"] is None


# -- 7. plain HTTP and TLS 1.0 --------------------------------------------------------------


def test_plain_http_listener_answers_a_check(served: Served) -> None:
    version, base_url, _, _ = offered(served.check(check_body(), listener="internal-http"))
    assert version == APPROVED
    assert base_url.startswith(f"http://{FQDN}:{served.ports['internal-http']}/")  # as Lync's


def test_tls_1_0_without_sni_handshakes_with_the_internal_listener(served: Served) -> None:
    request = (
        f"POST {CHECK_PATH} HTTP/1.1\r\nHost: {FQDN}\r\nContent-Type: text/xml\r\n"
        f"Connection: close\r\nContent-Length: {len(check_body())}\r\n\r\n"
    ).encode() + check_body()
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"{HOST}:{served.ports['internal-https']}",
            "-tls1",
            "-cipher",
            "AES128-SHA@SECLEVEL=0",
            "-noservername",
            "-CAfile",
            str(served.data / "tls" / "ca.pem"),
            "-verify_hostname",
            FQDN,
            "-verify_return_error",
            "-ign_eof",
        ],
        input=request,
        capture_output=True,
        timeout=IO_SECONDS,
    )
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, out + result.stderr.decode(errors="replace")
    assert re.search(r"Protocol\s*:\s*TLSv1\s*$", out, re.MULTILINE), out
    assert re.search(r"Cipher\s*:\s*AES128-SHA\s*$", out, re.MULTILINE), out
    assert "Verify return code: 0 (ok)" in out
    assert "HTTP/1.1 200 OK" in out
    assert f"<Version>{APPROVED}</Version>" in out


def test_the_same_process_answers_ucupdates_r2_and_reloads_on_request(served: Served) -> None:
    from dnslib import QTYPE, DNSRecord

    query = DNSRecord.question("ucupdates-r2.example.com", "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(IO_SECONDS)
        sock.sendto(query.pack(), (HOST, served.ports["dns-udp"]))
        reply = DNSRecord.parse(sock.recv(4096))
    assert [(str(r.rdata), r.rtype) for r in reply.rr] == [(HOST, QTYPE.A)]

    assert "asked process" in cli(served.data, "reload")
    deadline = time.monotonic() + IO_SECONDS
    while "configuration reloaded" not in served.log.read_text():
        assert time.monotonic() < deadline, served.log.read_text()
        time.sleep(0.1)
