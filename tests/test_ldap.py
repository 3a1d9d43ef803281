"""LdapDirectory against a real OpenLDAP slapd started for these tests, on loopback.

Needs the Debian packages slapd and ldap-utils; without /usr/sbin/slapd the tests that
talk to a server are skipped.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json as json_module
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ldap3 import Connection, Server
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.logger import LogEvent

from appliance.admin import add_account, make_admin_site
from appliance.config import (
    AdminLdapSettings,
    AdminSettings,
    AuthSettings,
    LdapSettings,
    load_config,
)
from appliance.directory import LdapDirectory
from appliance.passwords import AuthError
from appliance.phones.auth import Authenticator, AuthResult
from appliance.store import Store
from appliance.testing import (
    CountingDirectory,
    InlineReactor,
    SecondsClock,
    basic_credentials,
    fired,
    free_port,
    memory_client,
    settle,
)

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
SLAPPASSWD = Path("/usr/sbin/slappasswd")
TEMPLATE = "uid={user},ou=people,dc=example,dc=com"
ALICE_PASSWORD = "wonderland-42"
SMITH_PASSWORD = "comma, in the name"
BOB_PASSWORD = "can we fix it"
CAROL_PASSWORD = "in no group of ours"
ADMINS = "cn=ucupdates-admins,ou=groups,dc=example,dc=com"


@dataclass(frozen=True)
class Slapd:
    port: int
    ldaps_port: int
    ca_file: Path  # signed the server certificate (names: ldap.test, 127.0.0.1)
    other_ca_file: Path  # a CA that signed nothing the server shows

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}/"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_ca(folder: Path, cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    (folder / f"{cn}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def write_server_cert(
    folder: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("ldap.test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("ldap.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def ssha(password: str) -> str:
    out = subprocess.run(
        [str(SLAPPASSWD), "-h", "{SSHA}", "-T", "/dev/stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.strip()


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            pytest.fail(f"slapd exited with {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"slapd did not answer on port {port} in {seconds} s: {log.read_text()}"
                )
            time.sleep(0.05)


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    if not all(p.exists() for p in (SLAPD, SLAPADD, SLAPPASSWD)):
        pytest.skip(
            "OpenLDAP is not installed: /usr/sbin/slapd, slapadd or slappasswd is missing "
            "(Debian packages slapd and ldap-utils)"
        )
    folder = tmp_path_factory.mktemp("slapd")
    (folder / "db").mkdir()
    ca, ca_key = write_ca(folder, "test-ca")
    write_ca(folder, "other-ca")
    write_server_cert(folder, ca, ca_key)
    conf = folder / "slapd.conf"
    conf.write_text(
        f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {folder}/slapd.pid
argsfile {folder}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {folder}/test-ca.pem
TLSCertificateFile {folder}/server.pem
TLSCertificateKeyFile {folder}/server.key

database mdb
maxsize 10485760
suffix "dc=example,dc=com"
rootdn "cn=admin,dc=example,dc=com"
directory {folder}/db
access to attrs=userPassword by anonymous auth by * none
access to * by * read
"""
    )
    smith_rdn = base64.b64encode(b"smith, john").decode()
    (folder / "data.ldif").write_text(
        f"""\
dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Liddell
userPassword: {ssha(ALICE_PASSWORD)}

dn: uid=smith\\2C john,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid:: {smith_rdn}
cn: John Smith
sn: Smith
userPassword: {ssha(SMITH_PASSWORD)}

dn: uid=bob,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Builder
userPassword: {ssha(BOB_PASSWORD)}

dn: uid=carol,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: Nogroup
userPassword: {ssha(CAROL_PASSWORD)}

dn: ou=groups,dc=example,dc=com
objectClass: organizationalUnit
ou: groups

dn: {ADMINS}
objectClass: groupOfNames
cn: ucupdates-admins
member: uid=alice,ou=people,dc=example,dc=com

dn: cn=helpdesk,ou=groups,dc=example,dc=com
objectClass: groupOfNames
cn: helpdesk
member: uid=alice,ou=people,dc=example,dc=com
member: uid=bob,ou=people,dc=example,dc=com

dn: cn=staff,ou=groups,dc=example,dc=com
objectClass: groupOfNames
cn: staff
member: uid=carol,ou=people,dc=example,dc=com
"""
    )
    subprocess.run(
        [str(SLAPADD), "-q", "-f", str(conf), "-l", str(folder / "data.ldif")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port, ldaps_port = free_port(), free_port()
    log = folder / "slapd.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                str(SLAPD),
                "-h",
                f"ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{ldaps_port}/",
                "-f",
                str(conf),
                "-d",
                "0",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, log, 20)
        wait_for_port(ldaps_port, proc, log, 20)
        yield Slapd(port, ldaps_port, folder / "test-ca.pem", folder / "other-ca.pem")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def directory(
    url: str,
    template: str = TEMPLATE,
    *,
    start_tls: bool = False,
    ca_file: Path | None = None,
    timeout: float = 2.0,
) -> LdapDirectory:
    settings = LdapSettings(url, template, start_tls=start_tls, ca_file=ca_file, timeout=timeout)
    return LdapDirectory(settings)


# -- binding ---------------------------------------------------------------------------


def test_alice_binds_with_her_password_only(slapd: Slapd) -> None:
    ldap = directory(slapd.url)
    assert ldap.verify("alice", ALICE_PASSWORD) is True
    assert ldap.verify("alice", ALICE_PASSWORD + "x") is False
    assert ldap.verify("alice", ALICE_PASSWORD.upper()) is False


def test_an_unknown_user_is_refused(slapd: Slapd, log_events: list[LogEvent]) -> None:
    assert directory(slapd.url).verify("mallory", ALICE_PASSWORD) is False
    refused = [e for e in log_events if e.get("description") == "invalidCredentials"]
    assert [e["user"] for e in refused] == ["mallory"]


def test_an_empty_password_is_not_an_anonymous_bind(slapd: Slapd) -> None:
    # The server does accept anonymous binds, which a naive check would take for success.
    anonymous = Connection(Server("127.0.0.1", port=slapd.port), user=None, password=None)
    assert anonymous.bind() is True
    anonymous.unbind()
    assert directory(slapd.url).verify("alice", "") is False


def test_the_user_name_is_escaped_into_the_dn(slapd: Slapd) -> None:
    ldap = directory(slapd.url)
    assert ldap.bind_name("smith, john") == "uid=smith\\, john,ou=people,dc=example,dc=com"
    assert ldap.verify("smith, john", SMITH_PASSWORD) is True
    assert ldap.verify("alice,ou=people", ALICE_PASSWORD) is False


def test_a_template_that_is_not_a_dn_passes_the_name_as_given(slapd: Slapd) -> None:
    ldap = directory(slapd.url, template="{user}")
    assert ldap.bind_name("CONTOSO\\alice") == "CONTOSO\\alice"
    assert ldap.verify("uid=alice,ou=people,dc=example,dc=com", ALICE_PASSWORD) is True


# -- TLS -------------------------------------------------------------------------------


def test_start_tls_with_the_servers_ca(slapd: Slapd) -> None:
    ldap = directory(slapd.url, start_tls=True, ca_file=slapd.ca_file)
    assert ldap.verify("alice", ALICE_PASSWORD) is True
    assert ldap.verify("alice", "wrong") is False


def test_start_tls_refuses_a_server_certificate_from_another_ca(
    slapd: Slapd, log_events: list[LogEvent]
) -> None:
    ldap = directory(slapd.url, start_tls=True, ca_file=slapd.other_ca_file)
    assert ldap.verify("alice", ALICE_PASSWORD) is False
    assert any("certificate" in str(e.get("error", "")).lower() for e in log_events)


def test_ldaps_with_the_servers_ca(slapd: Slapd) -> None:
    url = f"ldaps://127.0.0.1:{slapd.ldaps_port}"
    assert directory(url, ca_file=slapd.ca_file).verify("alice", ALICE_PASSWORD) is True
    assert directory(url, ca_file=slapd.other_ca_file).verify("alice", ALICE_PASSWORD) is False


def test_ldaps_refuses_a_certificate_for_another_name(slapd: Slapd) -> None:
    # The certificate names ldap.test and 127.0.0.1; "localhost" is neither.
    url = f"ldaps://localhost:{slapd.ldaps_port}"
    assert directory(url, ca_file=slapd.ca_file).verify("alice", ALICE_PASSWORD) is False


# -- a server that is not there --------------------------------------------------------


def test_a_closed_port_is_false_and_logged(log_events: list[LogEvent]) -> None:
    start = time.monotonic()
    assert directory(f"ldap://127.0.0.1:{free_port()}").verify("alice", "pw") is False
    assert time.monotonic() - start < 5
    errors = [e for e in log_events if "error" in e]
    assert len(errors) == 1
    assert errors[0]["user"] == "alice"
    assert "pw" not in repr(errors[0]["error"])


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts connections; nobody reads or answers
        url = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        assert directory(url, timeout=1.0).verify("alice", "pw") is False
        elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 5


def test_an_unreachable_address_is_false_within_the_timeout() -> None:
    start = time.monotonic()
    # 192.0.2.0/24 is TEST-NET-1: never routed, so the connection hangs or fails at once.
    assert directory("ldap://192.0.2.1", timeout=1.0).verify("alice", "pw") is False
    assert time.monotonic() - start < 5


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (LdapSettings(url=""), "is not ldap://host"),
        (LdapSettings(url="http://dc1"), "is not ldap://host"),
        (LdapSettings(url="ldap://dc1/dc=example"), "only scheme, host and port"),
        (LdapSettings(url="ldap://dc1:99999"), "out of range"),
        (LdapSettings(url="ldaps://dc1", start_tls=True), "ldaps:// is TLS already"),
        (LdapSettings(url="ldap://dc1", bind_template="uid=x"), "exactly once"),
        (LdapSettings(url="ldaps://dc1", ca_file=Path("/nonexistent/ca.pem")), "not a file"),
    ],
)
def test_unusable_settings_are_auth_errors(settings: LdapSettings, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        LdapDirectory(settings)


# -- end to end ------------------------------------------------------------------------


def test_authenticator_over_ldap(slapd: Slapd) -> None:
    clock = SecondsClock(1000.0)
    ldap = CountingDirectory(directory(slapd.url))
    auth = Authenticator(
        ldap,
        AuthSettings(max_failures=2, cache_seconds=60, lockout_seconds=600),
        clock,
        run_blocking=defer.maybeDeferred,
    )

    def check(user: str, password: str, source: str = "192.0.2.1") -> AuthResult:
        return fired(auth.authenticate(basic_credentials(user, password), source))

    assert check("alice", ALICE_PASSWORD) == AuthResult(True, 200, "ok", user="alice")
    assert check("alice", ALICE_PASSWORD).reason == "cached"
    assert len(ldap.calls) == 1
    assert [check("alice", f"guess{i}", f"198.51.100.{i}").status for i in range(3)] == [
        401,
        401,
        429,
    ]
    assert len(ldap.calls) == 4
    # Locked out, but not the right password: remembered, it passes...
    assert check("alice", ALICE_PASSWORD).reason == "cached"
    assert len(ldap.calls) == 4
    # ...and once the cache has expired, the user's last right password is checked at once,
    # while guesses wait for their turn (auth.lockout_check_seconds) without a bind.
    clock.advance(61)
    assert check("alice", ALICE_PASSWORD).reason == "ok"
    assert len(ldap.calls) == 5
    for guess in ("guess9", "guess10"):  # the first takes this minute's turn
        got = check("alice", guess, "198.51.100.2")
        assert (got.status, got.reason) == (429, "locked out")
    assert len(ldap.calls) == 6


# -- Control Panel logins against the directory ---------------------------------------


def admin_site(tmp_path: Path, url: str, groups: tuple[str, ...] = ()) -> tuple[StubTreq, Store]:
    """The admin listener's real site in process (its LDAP binds run inline), with
    directory logins from `url` and a local account for break-glass."""
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    store = Store.open(config.db_path)
    add_account(store, "breakglass", "admin", "local password", "test")
    ldap = AdminLdapSettings(
        enabled=True,
        url=url,
        bind_template=TEMPLATE,
        timeout=2.0,
        base_dn="dc=example,dc=com",
        admin_groups=(ADMINS,),
        viewer_groups=groups or ("helpdesk",),
    )
    settings = AdminSettings(ldap=ldap)
    site = memory_client(
        lambda _: make_admin_site(
            config,
            store,
            lambda: datetime.datetime.now(datetime.UTC),
            InlineReactor(),
            settings=settings,
        )
    )
    return site, store


def admin_login(site: StubTreq, name: str, password: str) -> tuple[int, dict[str, Any]]:
    body = json_module.dumps({"name": name, "password": password}).encode()
    headers = {"Content-Type": ["application/json"]}
    url = "https://ucupdates.test:9443/api/login"
    response = settle(site, site.request("POST", url, data=body, headers=headers))
    return response.code, json_module.loads(settle(site, response.content()))


def test_directory_groups_give_the_control_panel_role(slapd: Slapd, tmp_path: Path) -> None:
    site, store = admin_site(tmp_path, slapd.url)
    status, body = admin_login(site, "alice", ALICE_PASSWORD)  # admins and helpdesk: admin
    assert (status, body["name"], body["role"]) == (200, "ldap:alice", "admin")
    status, body = admin_login(site, "bob", BOB_PASSWORD)  # helpdesk, by its name: viewer
    assert (status, body["name"], body["role"]) == (200, "ldap:bob", "viewer")
    status, body = admin_login(site, "carol", CAROL_PASSWORD)  # staff only: no login
    assert status == 403 and "no group" in body["error"]
    assert admin_login(site, "alice", "wrong")[0] == 401
    assert admin_login(site, "mallory", ALICE_PASSWORD)[0] == 401
    assert [a.name for a in store.admin_accounts()] == ["breakglass", "ldap:alice", "ldap:bob"]
    store.close()


def test_a_directory_that_is_down_leaves_local_accounts_working(tmp_path: Path) -> None:
    site, store = admin_site(tmp_path, f"ldap://127.0.0.1:{free_port()}")
    status, body = admin_login(site, "alice", ALICE_PASSWORD)
    assert status == 503
    assert "cannot be asked" in body["error"] and "local accounts still work" in body["error"]
    assert admin_login(site, "breakglass", "local password")[0] == 200
    store.close()
