"""Real handshakes against each TLS profile: a Twisted HTTPS server in a subprocess,
`openssl s_client` and Python's `ssl` as clients.

The client side's OpenSSL 3 refuses TLS 1.0/1.1 (and their SHA-1 based handshake) at its
default security level, so those handshakes are offered with `@SECLEVEL=0` on the client
too; a refusal then comes from the server (alert "protocol version").
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from OpenSSL import SSL

from appliance.config import TlsProfile
from appliance.tls.certificates import CertError
from appliance.tls.contexts import context_factory
from appliance.tls.generated import ensure_test_certificates

REPO = Path(__file__).resolve().parent.parent
NAME = "ucupdates-r2.example.com"
NAMES = [NAME, "ucupdates-r2.contoso.com"]
BODY = b"ucupdates ok\n"

SERVER = """
import json, sys
from pathlib import Path
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data
from appliance.tls.generated import ensure_test_certificates
from appliance.config import CertSignature, TlsProfile
from appliance.tls.contexts import context_factory

signature = CertSignature(sys.argv[2])
creds = ensure_test_certificates(Path(sys.argv[1]), sys.argv[3:], signature=signature)
root = Resource()
root.putChild(b"", Data(@BODY@, "text/plain"))
site = Site(root)
ports = {}
for profile in TlsProfile:
    port = reactor.listenSSL(0, site, context_factory(creds, profile), interface="127.0.0.1")
    ports[profile.value] = port.getHost().port
print(json.dumps(ports), flush=True)
reactor.run()
""".replace("@BODY@", repr(BODY))


@dataclass(frozen=True)
class Server:
    ports: dict[TlsProfile, int]
    ca_file: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(tmp_path_factory, "sha256")


@pytest.fixture(scope="module")
def sha1_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same with `tls.generated_signature = "sha1"` (docs/protocol.md §3)."""
    yield from _serve(tmp_path_factory, "sha1")


def _serve(tmp_path_factory: pytest.TempPathFactory, signature: str) -> Iterator[Server]:
    tls_dir = tmp_path_factory.mktemp("tls-server") / "tls"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(tls_dir), signature, *NAMES],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout=20)
        line = proc.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            pytest.fail(f"the TLS test server did not start: {proc.communicate(timeout=5)[1]}")
        ports = {TlsProfile(k): v for k, v in json.loads(line).items()}
        yield Server(ports, tls_dir / "ca.pem")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass(frozen=True)
class Handshake:
    returncode: int
    stdout: str
    stderr: str

    def field(self, name: str) -> str | None:
        """A field of s_client's SSL-Session block, e.g. Protocol or Cipher."""
        m = re.search(rf"^\s+{name}\s*: (.+)$", self.stdout, re.MULTILINE)
        return m.group(1).strip() if m else None

    @property
    def protocol(self) -> str | None:
        return self.field("Protocol") if self.returncode == 0 else None

    @property
    def cipher(self) -> str | None:
        return self.field("Cipher") if self.returncode == 0 else None


def s_client(server: Server, profile: TlsProfile, *args: str, name: str = NAME) -> Handshake:
    """One connection without SNI that verifies `name` against the test CA and sends
    `GET /` over HTTP/1.0, so the answer shows that data flows after the handshake."""
    out = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{server.ports[profile]}",
            "-noservername",
            "-CAfile",
            str(server.ca_file),
            "-verify_hostname",
            name,
            "-ign_eof",
            *args,
        ],
        input="GET / HTTP/1.0\r\n\r\n",
        capture_output=True,
        text=True,
        timeout=15,
    )
    return Handshake(out.returncode, out.stdout, out.stderr)


LPE, MODERN = TlsProfile.LPE_LEGACY, TlsProfile.MODERN


def old(version: str, ciphers: str) -> list[str]:
    """s_client arguments for TLS 1.0/1.1: the client's OpenSSL needs security level 0."""
    return [f"-{version}", "-cipher", f"{ciphers}@SECLEVEL=0"]


ACCEPTED = [
    # The phones: TLS 1.0 with AES128-SHA, no SNI.
    (LPE, old("tls1", "AES128-SHA"), "TLSv1", "AES128-SHA"),
    (LPE, old("tls1", "AES256-SHA"), "TLSv1", "AES256-SHA"),
    (LPE, old("tls1", "DEFAULT"), "TLSv1", "ECDHE-RSA-AES128-SHA"),
    (LPE, old("tls1_1", "DEFAULT"), "TLSv1.1", "ECDHE-RSA-AES128-SHA"),
    (LPE, ["-tls1_2"], "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"),
    (LPE, ["-tls1_3"], "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    (MODERN, ["-tls1_2"], "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"),
    (MODERN, ["-tls1_3"], "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
]


@pytest.mark.parametrize(("profile", "args", "protocol", "cipher"), ACCEPTED)
def test_accepted_handshakes(
    server: Server, profile: TlsProfile, args: list[str], protocol: str, cipher: str
) -> None:
    hs = s_client(server, profile, *args)
    assert hs.returncode == 0, hs.stderr
    assert (hs.protocol, hs.cipher) == (protocol, cipher)
    # Without SNI the one certificate still carries the phones' name and chains to the CA.
    assert "Verify return code: 0 (ok)" in hs.stdout
    assert f"Verified peername: {NAME}" in hs.stdout
    assert "Compression: NONE" in hs.stdout
    assert "HTTP/1.0 200 OK" in hs.stdout and BODY.decode() in hs.stdout


REFUSED = [
    (MODERN, old("tls1", "AES128-SHA"), "alert protocol version"),
    (MODERN, old("tls1", "DEFAULT"), "alert protocol version"),
    (MODERN, old("tls1_1", "DEFAULT"), "alert protocol version"),
    # Modern offers no CBC suite, not even over TLS 1.2.
    (MODERN, ["-tls1_2", "-cipher", "AES128-SHA:ECDHE-RSA-AES128-SHA"], "alert handshake failure"),
]


@pytest.mark.parametrize(("profile", "args", "alert"), REFUSED)
def test_refused_handshakes(
    server: Server, profile: TlsProfile, args: list[str], alert: str
) -> None:
    hs = s_client(server, profile, *args)
    assert hs.returncode != 0
    assert alert in hs.stderr
    assert "Cipher is (NONE)" in hs.stdout
    assert "HTTP/1.0" not in hs.stdout


@pytest.mark.parametrize("profile", list(TlsProfile))
def test_every_configured_name_verifies_without_sni(server: Server, profile: TlsProfile) -> None:
    hs = s_client(server, profile, "-tls1_2", name="ucupdates-r2.contoso.com")
    assert "Verify return code: 0 (ok)" in hs.stdout
    wrong = s_client(server, profile, "-tls1_2", name="ucupdates-r2.fabrikam.com")
    assert "Verify return code: 62 (hostname mismatch)" in wrong.stdout


@pytest.mark.parametrize(
    ("profile", "args", "temp_key"),
    [
        (MODERN, ["-tls1_3"], "X25519, 253 bits"),
        (MODERN, ["-tls1_3", "-groups", "P-256"], "ECDH, prime256v1, 256 bits"),
        (MODERN, ["-tls1_2", "-groups", "P-384"], "ECDH, secp384r1, 384 bits"),
        (LPE, [*old("tls1", "ECDHE-RSA-AES128-SHA"), "-groups", "P-256"], "ECDH, prime256v1"),
        (MODERN, ["-tls1_3", "-groups", "P-521:X448"], None),  # not in the server's list
    ],
)
def test_key_exchange_groups(
    server: Server, profile: TlsProfile, args: list[str], temp_key: str | None
) -> None:
    hs = s_client(server, profile, *args)
    if temp_key is None:
        assert hs.returncode != 0 and "alert handshake failure" in hs.stderr
    else:
        assert hs.returncode == 0, hs.stderr
        assert f"Server Temp Key: {temp_key}" in hs.stdout


def test_tls10_sessions_resume(server: Server, tmp_path: Path) -> None:
    """Phones reconnect often; the session cache (with its id context) lets them resume."""
    session = tmp_path / "session.pem"
    args = old("tls1", "AES128-SHA")
    first = s_client(server, LPE, *args, "-sess_out", str(session))
    assert first.stdout.count("\nNew, ") == 1, first.stderr
    second = s_client(server, LPE, *args, "-sess_in", str(session))
    assert "\nReused, " in second.stdout, second.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args", [["-tls1_2"], old("tls1", "AES128-SHA")], ids=["tls1.2", "tls1.0"])
def test_client_renegotiation_is_refused(server: Server, args: list[str]) -> None:
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.ports[LPE]}"]
        + ["-noservername", "-CAfile", str(server.ca_file), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for line in proc.stdout:  # wait for the handshake's session summary
            if line.strip().startswith("Extended master secret"):
                break
        proc.stdin.write("R\n")  # s_client: renegotiate
        proc.stdin.flush()
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert "RENEGOTIATING" in stderr
    assert "no renegotiation" in stderr
    assert proc.returncode != 0


@pytest.mark.parametrize("profile", list(TlsProfile))
@pytest.mark.parametrize(
    ("version", "cipher"),
    [
        (ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256"),
        (ssl.TLSVersion.TLSv1_3, "TLS_AES_256_GCM_SHA384"),
    ],
)
def test_python_https_get(
    server: Server, profile: TlsProfile, version: ssl.TLSVersion, cipher: str
) -> None:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    ctx.minimum_version = ctx.maximum_version = version
    with (
        socket.create_connection(("127.0.0.1", server.ports[profile]), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=NAME) as tls,
    ):
        assert tls.version() == version.name.replace("_", ".")
        negotiated = tls.cipher()
        assert negotiated is not None and negotiated[0] == cipher
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        deadline = time.monotonic() + 10
        while chunk := tls.recv(65536):
            response += chunk
            assert time.monotonic() < deadline
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == BODY


def test_the_context_is_built_once(tmp_path: Path) -> None:
    creds = ensure_test_certificates(tmp_path / "tls", NAMES)
    factory = context_factory(creds, LPE)
    assert factory.getContext() is factory.getContext()


@pytest.mark.parametrize("profile", [LPE, MODERN])
def test_idle_connections_give_their_buffers_back(tmp_path: Path, profile: TlsProfile) -> None:
    creds = ensure_test_certificates(tmp_path / "tls", NAMES)
    context = context_factory(creds, profile).getContext()
    assert context.set_mode(0) & SSL.MODE_RELEASE_BUFFERS  # set_mode(0) returns the mode


def test_a_key_that_does_not_fit_fails_at_start(tmp_path: Path) -> None:
    creds = ensure_test_certificates(tmp_path / "tls", NAMES)
    assert creds.ca_file is not None
    wrong = type(creds)(
        creds.cert_file, creds.ca_file.with_name("ca.key"), None, creds.names, creds.not_after
    )
    with pytest.raises(CertError, match=r"cannot use .*server\.pem with .*ca\.key for TLS"):
        context_factory(wrong, MODERN)


def test_sha1_chain_for_the_phones_and_sha256_for_the_modern_listener(sha1_server: Server) -> None:
    """A phone's handshake (TLS 1.0, AES128-SHA, no SNI) gets the SHA-1 chain and verifies
    it; a client at OpenSSL 3's default security level refuses that chain over TLS 1.2
    unless told @SECLEVEL=0; the modern listener presents a SHA-256 leaf of the same CA."""
    phone = s_client(sha1_server, LPE, *old("tls1", "AES128-SHA"))
    assert (phone.protocol, phone.cipher) == ("TLSv1", "AES128-SHA"), phone.stderr
    assert "sigalg: RSA-SHA1" in phone.stdout
    assert "Verify return code: 0 (ok)" in phone.stdout and "HTTP/1.0 200 OK" in phone.stdout
    strict = s_client(sha1_server, LPE, "-tls1_2")
    assert "Verify return code: 68 (CA signature digest algorithm too weak)" in strict.stdout
    lenient = s_client(sha1_server, LPE, "-tls1_2", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert "Verify return code: 0 (ok)" in lenient.stdout
    admin = s_client(sha1_server, MODERN, "-tls1_3")
    assert "Verify return code: 0 (ok)" in admin.stdout, admin.stdout
    assert re.search(r"^ 0 s:CN = .*\n.*\n.*sigalg: RSA-SHA256", admin.stdout, re.M)
