"""The phone's HTTP side: connections as an LPE phone makes them, the check with its
credentials, and image downloads that verify and resume.

HTTPS is TLS 1.0 with the RSA suites and no SNI by default, as the phones speak it
(docs/protocol.md §10); the certificate is checked against a CA file, and its name
against the URL's host among the certificate's DNS names, exactly (the phones accept no
wildcard, §3). Every connection goes to `connect` when given (the address discovery
found, or one the user names), whatever the URL's host, which stays the Host header.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from appliance.phonesim.ntlm import authenticate, negotiate

PHONE_CIPHERS = "AES128-SHA:AES256-SHA:@SECLEVEL=0"
CHECK_PATH = "/RequestHandler/ucdevice.upx"
EXTERNAL_CHECK_PATH = "/RequestHandlerExt/ucdevice.upx"
USER_AGENT = "OCPhone/4.0 (ucupdates phone-sim)"  # §5: nothing public shows the real one


class Failure(Exception):
    """A step that failed, with its cause: a short fixed word the summary counts by."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause


def phone_tls(cafile: str | None, tls: str = "1.0") -> ssl.SSLContext:
    """The phone's TLS: `tls` "1.0" (TLS 1.0 only, RSA suites, as LPE) or "any"; the
    chain verified against `cafile`, or nothing verified when it is None (--insecure)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # no SNI, so the name is checked by `check_name`
    if cafile is None:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile)
    if tls == "1.0":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers(PHONE_CIPHERS)
    return context


def check_name(sock: ssl.SSLSocket, host: str) -> None:
    """The certificate names `host` among its DNS names (no wildcards), or Failure."""
    cert = sock.getpeercert() or {}
    pairs = cert.get("subjectAltName", ())
    names = [str(v).lower() for k, v in pairs if k == "DNS"]  # type: ignore[str-unpack]
    if host.lower() not in names:
        raise Failure("tls", f"the certificate does not name {host} (it names {names})")


@dataclass(frozen=True)
class Net:
    """How this phone reaches servers."""

    tls: ssl.SSLContext
    verify: bool
    timeout: float = 10.0
    connect: str | None = None  # every connection to this address
    source: str | None = None  # from this local address
    resolve: Callable[[str], str] | None = None  # a host name to an address (discovery)


def _connect(address: str, port: int, net: Net) -> socket.socket:
    """A TCP connection with Nagle off, as curl does: with Nagle on, TLS 1.0's split
    records wait for the server's delayed ACK (about 40 ms a check here)."""
    sock = socket.create_connection((address, port), net.timeout, (net.source or "", 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Https(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, net: Net, address: str) -> None:
        super().__init__(host, port, timeout=net.timeout, context=net.tls)
        self._net, self._address = net, address

    def connect(self) -> None:
        raw = _connect(self._address, self.port, self._net)
        try:
            self.sock = self._net.tls.wrap_socket(raw)  # no server_hostname: no SNI
            if self._net.verify:
                check_name(self.sock, self.host)
        except BaseException:
            raw.close()
            raise


class _Http(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, net: Net, address: str) -> None:
        super().__init__(host, port, timeout=net.timeout)
        self._net, self._address = net, address

    def connect(self) -> None:
        self.sock = _connect(self._address, self.port, self._net)


def open_connection(url: str, net: Net) -> tuple[http.client.HTTPConnection, str]:
    """A new connection for `url` (not yet connected) and the URL's path and query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise Failure("bad-url", f"cannot fetch {url!r}")
    address = net.connect or (net.resolve(host) if net.resolve else host)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    kind = _Https if parts.scheme == "https" else _Http
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return kind(host, port, net, address), path


class Connections:
    """The connections of one round: a new one for every request (as the phones do), or
    with `keep_alive` one per scheme, host and port, reused while it stays usable."""

    def __init__(self, net: Net, keep_alive: bool = False) -> None:
        self.net, self.keep_alive = net, keep_alive
        self._open: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}

    def get(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        if not self.keep_alive:
            return open_connection(url, self.net)
        parts = urlsplit(url)
        key = (parts.scheme, (parts.hostname or "").lower(), parts.port)
        conn, path = open_connection(url, self.net)
        return self._open.setdefault(key, conn), path

    def release(self, conn: http.client.HTTPConnection, broken: bool) -> None:
        """Done with `conn` for now; closed unless kept alive and not `broken`."""
        if self.keep_alive and not broken:
            return
        conn.close()
        for key, kept in list(self._open.items()):
            if kept is conn:
                del self._open[key]

    def close(self) -> None:
        for conn in self._open.values():
            conn.close()
        self._open.clear()


def classify(error: BaseException) -> Failure:
    """A network error as a Failure with its cause."""
    if isinstance(error, Failure):
        return error
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return Failure("tls", str(error))
    if isinstance(error, TimeoutError | socket.timeout):
        return Failure("timeout", str(error) or "timed out")
    if isinstance(error, ConnectionRefusedError):
        return Failure("connect", str(error))
    if isinstance(error, http.client.HTTPException | ConnectionError):
        return Failure("cut", f"{type(error).__name__}: {error}")
    if isinstance(error, OSError):
        return Failure("connect", str(error))
    return Failure("error", f"{type(error).__name__}: {error}")


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    scheme: str = "auto"  # auto: NTLM when offered, else Basic; or "ntlm" or "basic"


def _offered(response: http.client.HTTPResponse) -> list[str]:
    return [v.split(None, 1)[0].lower() for v in response.headers.get_all("WWW-Authenticate", [])]


def _send(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    auth: str | None,
) -> http.client.HTTPResponse:
    sent = {"User-Agent": USER_AGENT, **headers}
    if body is not None:
        sent["Content-Type"] = "text/xml"
    if auth is not None:
        sent["Authorization"] = auth
    conn.request(method, path, body=body, headers=sent)
    return conn.getresponse()


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None,
    credentials: Credentials | None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, str | None]:
    """Send a request on `conn`; a 401 is answered with `credentials`: Basic, or NTLM's
    three legs on this connection (docs/protocol.md §2). The final response, its body not
    yet read, and the scheme used (None when no 401 came)."""
    headers = headers or {}
    response = _send(conn, method, path, body, headers, None)
    if response.status != 401 or credentials is None:
        return response, None
    response.read()
    offered = _offered(response)
    if "ntlm" in offered and credentials.scheme in ("auto", "ntlm"):
        token = base64.b64encode(negotiate()).decode()
        response = _send(conn, method, path, body, headers, f"NTLM {token}")
        response.read()
        challenge = next(
            (
                v.split(None, 1)[1]
                for v in response.headers.get_all("WWW-Authenticate", [])
                if v.lower().startswith("ntlm ")
            ),
            None,
        )
        if response.status != 401 or challenge is None:
            raise Failure("auth", f"no NTLM challenge (status {response.status})")
        type3 = authenticate(base64.b64decode(challenge), credentials.user, credentials.password)
        auth, scheme = "NTLM " + base64.b64encode(type3).decode(), "ntlm"
    elif "basic" in offered and credentials.scheme in ("auto", "basic"):
        pair = f"{credentials.user}:{credentials.password}".encode()
        auth, scheme = "Basic " + base64.b64encode(pair).decode(), "basic"
    else:
        raise Failure("auth", f"the server offers {offered}, not what the phone speaks")
    return _send(conn, method, path, body, headers, auth), scheme


def post_check(
    conn: http.client.HTTPConnection, path: str, body: bytes, credentials: Credentials | None
) -> tuple[bytes, str | None]:
    """POST the check on `conn`, answering a 401 with `credentials`; the answer's body and
    the scheme that was used (None when none was asked for)."""
    response, scheme = request(conn, "POST", path, body, credentials)
    answer = response.read()
    if response.status == 401:
        raise Failure("refused-401", "the check was refused: 401")
    if response.status != 200:
        raise Failure(f"http-{response.status}", answer[:200].decode("utf-8", "replace"))
    return answer, scheme


@dataclass
class Fetched:
    """A downloaded file: its size, SHA-256 and what it took."""

    size: int
    sha256: str
    sent_sha256: str | None  # the X-Content-SHA256 header, if any
    resumed: int  # how many times it went on with Range after a cut
    wire_bytes: int


def download(
    url: str,
    connections: Connections,
    credentials: Credentials | None,
    retries: int,
    sleep: Callable[[float], None],
) -> Fetched:
    """GET `url` whole; after a cut, GET the rest with `Range: bytes=N-` and `If-Range` (at
    most `retries` times), hashing as the bytes come. A 503 (busy) is retried after its
    Retry-After (capped at 5 s), within the same budget. Failure when it cannot finish."""
    digest = hashlib.sha256()
    have = 0
    total: int | None = None
    etag: str | None = None
    sent: str | None = None
    resumed = attempts = wire = 0
    wait = 0.0  # a 503's Retry-After, waited once the connection is let go
    while True:
        if wait:
            sleep(wait)
            wait = 0.0
        conn, path = connections.get(url)
        broken = True
        try:
            headers = {}
            if have:
                headers["Range"] = f"bytes={have}-"
                if etag:
                    headers["If-Range"] = etag
            response, _ = request(conn, "GET", path, None, credentials, headers)
            if response.status == 503 and attempts < retries:
                response.read()
                broken = False
                attempts += 1
                wait = min(float(response.getheader("Retry-After", "1") or 1), 5.0)
                continue
            if response.status == 200 and have:  # the file changed: start again
                digest, have = hashlib.sha256(), 0
            elif response.status not in (200, 206) or (response.status == 206 and not have):
                raise Failure(f"http-{response.status}", f"GET {path}")
            etag = response.getheader("ETag") or etag
            sent = response.getheader("X-Content-SHA256") or sent
            if total is None:
                length = response.getheader("Content-Length")
                total = int(length) if length is not None else None
            while chunk := response.read1(65536):  # what came, even before a stall
                digest.update(chunk)
                have += len(chunk)
                wire += len(chunk)
            if total is not None and have < total:
                raise http.client.IncompleteRead(b"", total - have)
            response.read()  # read1 leaves a finished response open: this ends it
            broken = False
            return Fetched(have, digest.hexdigest(), sent, resumed, wire)
        except Exception as e:
            failure = classify(e)
            if failure.cause not in ("cut", "timeout") or attempts >= retries:
                raise failure from e
            attempts += 1
            resumed += 1
        finally:
            connections.release(conn, broken)
