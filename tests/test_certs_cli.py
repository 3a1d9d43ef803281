"""`ucupdates certs`: show, init, a CSR for an enterprise CA and installing what it signs;
the expiry warning; and no private key in the repository."""

from __future__ import annotations

import argparse
import dataclasses
import io
import re
import stat
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from appliance.cli.certs import add_certs_parser, certs_command
from appliance.config import CertSignature, Config, DiscoveryName, DnsSettings, TlsSettings
from appliance.ops.checks import check_certificate
from appliance.testing import NOW as T0
from appliance.testing import REPO
from appliance.tls.certificates import (
    ServerCredentials,
    check_expiry,
    existing_credentials,
    load_credentials,
)
from appliance.tls.generated import LEAF_DAYS, ensure_test_certificates
from appliance.tls.sha1 import resign_sha1

NAMES = ("ucupdates-r2.example.com", "ucupdates.example.com")


def certs(config: Config, *argv: str, now: datetime = T0) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="ucupdates")
    add_certs_parser(parser.add_subparsers(dest="command", required=True))
    out = io.StringIO()
    status = certs_command(config, parser.parse_args(["certs", *argv]), now=now, out=out)
    return status, out.getvalue()


# -- an enterprise CA: a root and an intermediate (ECDSA, as many are) -------------------------


@dataclasses.dataclass
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_ca(cn: str, parent: Authority | None = None) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = parent.cert.subject if parent else _name(cn)
    signer = parent.key if parent else key
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki_source = (
        parent.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        if parent
        else ski
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - timedelta(days=365))
        .not_valid_after(T0 + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(aki_source), False
        )
        .sign(signer, hashes.SHA256())
    )
    return Authority(cert, key)


@pytest.fixture(scope="module")
def root() -> Authority:
    return make_ca("Contoso Root CA")


@pytest.fixture(scope="module")
def issuing(root: Authority) -> Authority:
    return make_ca("Contoso Issuing CA 1", root)


def sign(
    csr_pem: bytes,
    ca: Authority,
    *,
    names: tuple[str, ...] | None = None,
    not_before: datetime = T0 - timedelta(hours=1),
    days: int = 397,
    eku: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
) -> bytes:
    """What the enterprise CA does with the request: a leaf with the requested names."""
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.is_signature_valid
    requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    sans = requested if names is None else x509.SubjectAlternativeName(map(x509.DNSName, names))
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(sans, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@pytest.fixture
def contoso(config: Config) -> Config:
    """Two domains, an external name of its own: six names in all (two discovery names
    in each domain, docs/protocol.md §3)."""
    return dataclasses.replace(
        config,
        domains=("example.com", "contoso.com"),
        service=dataclasses.replace(config.service, external_fqdn="updates.contoso.com"),
    )


def csr_for(config: Config, tmp_path: Path, *extra: str) -> bytes:
    argv = ["csr", "--out", str(tmp_path / "request.csr")]
    for name in extra:
        argv += ["--extra-name", name]
    status, _ = certs(config, *argv)
    assert status == 0
    return (tmp_path / "request.csr").read_bytes()


# -- show and init ------------------------------------------------------------------------------


def test_show_before_anything_exists_says_how_to_make_one(config: Config) -> None:
    status, out = certs(config, "show")
    assert status == 1 and "ucupdates certs init" in out
    assert not config.tls_dir.exists()  # show creates nothing


def test_init_makes_the_test_ca_and_show_describes_it(config: Config) -> None:
    status, out = certs(config, "init")
    assert status == 0
    ca_file = config.tls_dir / "ca.pem"
    assert f"phones must trust the CA certificate {ca_file}" in out
    assert "signed with sha256 (tls.generated_signature)" in out
    assert ca_file.exists() and (config.tls_dir / "server.pem").exists()

    status, out = certs(config, "show", now=T0 + timedelta(days=10))
    assert status == 0, out
    assert re.search(r"^certificate +\S+server\.pem \(generated\)$", out, re.M)
    assert re.search(r"^issuer +CN=ucupdates test CA \d{8},O=ucupdates appliance$", out, re.M)
    names = r"ucupdates-r2\.example\.com, ucupdates\.example\.com, localhost"
    assert re.search(rf"^names +{names}$", out, re.M)
    assert re.search(r"^signature +sha256$", out, re.M)
    assert re.search(r"^not after +\S+ \S+ UTC \(815 days left\)$", out, re.M)
    assert f"phones trust {ca_file}" in out
    assert "WARNING" not in out


@pytest.mark.parametrize(
    ("after_days", "warning"),
    [
        (LEAF_DAYS - 20, "WARNING: the certificate expires within 30 days"),
        (LEAF_DAYS + 5, "WARNING: the certificate has expired"),
    ],
)
def test_show_warns_when_the_certificate_expires_soon(
    config: Config, after_days: int, warning: str
) -> None:
    assert certs(config, "init")[0] == 0
    status, out = certs(config, "show", now=T0 + timedelta(days=after_days))
    assert status == 1 and warning in out


def test_show_warns_when_a_configured_name_is_missing(config: Config, contoso: Config) -> None:
    assert certs(config, "init")[0] == 0  # issued for example.com only
    status, out = certs(contoso, "show")
    assert status == 1
    assert (
        "WARNING: the certificate lacks the configured name(s) ucupdates-r2.contoso.com, "
        "ucupdates.contoso.com, updates.contoso.com"
    ) in out


def test_check_expiry_warns_within_the_window_only(tmp_path: Path) -> None:
    creds = ensure_test_certificates(tmp_path / "tls", NAMES, now=T0)
    assert check_expiry(creds, T0, 30) is None
    soon = check_expiry(creds, creds.not_after - timedelta(days=3), 30)
    assert soon is not None and soon.endswith("in 3 days")
    assert "expires on" in soon and str(creds.cert_file) in soon
    gone = check_expiry(creds, creds.not_after + timedelta(seconds=1), 30)
    assert gone is not None and "expired on" in gone


# -- a CSR for the enterprise CA, and installing what comes back -----------------------------


def test_csr_carries_every_configured_name_and_keeps_its_key_private(
    contoso: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    status, out = certs(contoso, "csr", "--out", "request.csr", "--extra-name", "uc.contoso.com")
    assert status == 0, out
    csr = x509.load_pem_x509_csr((work / "request.csr").read_bytes())
    assert csr.is_signature_valid
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "ucupdates-r2.example.com",
        "ucupdates.example.com",
        "ucupdates-r2.contoso.com",
        "ucupdates.contoso.com",
        "updates.contoso.com",
        "uc.contoso.com",
    ]
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "ucupdates-r2.example.com"
    )
    key_file = contoso.tls_dir / "pending.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(contoso.tls_dir.stat().st_mode) == 0o700
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert key.public_key().public_numbers() == csr.public_key().public_numbers()
    assert sorted(p.name for p in work.iterdir()) == ["request.csr"]  # no key here
    assert f"its private key is {key_file}" in out


def test_a_second_csr_needs_force_to_replace_the_pending_key(
    config: Config, tmp_path: Path
) -> None:
    csr_for(config, tmp_path)
    key_file = config.tls_dir / "pending.key"
    first = key_file.read_bytes()
    status, _ = certs(config, "csr", "--out", str(tmp_path / "again.csr"))
    assert status == 1 and key_file.read_bytes() == first
    assert not (tmp_path / "again.csr").exists()
    status, _ = certs(config, "csr", "--out", str(tmp_path / "again.csr"), "--force")
    assert status == 0 and key_file.read_bytes() != first


def test_install_checks_and_installs_the_signed_certificate(
    contoso: Config, tmp_path: Path, root: Authority, issuing: Authority
) -> None:
    signed = tmp_path / "signed.pem"
    signed.write_bytes(sign(csr_for(contoso, tmp_path), issuing))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pem(issuing.cert, root.cert))
    status, out = certs(contoso, "install", str(signed), "--chain", str(chain))
    assert status == 0, out

    tls = contoso.tls_dir
    installed, installed_key = tls / "installed.pem", tls / "installed.key"
    assert not (tls / "pending.key").exists()
    assert stat.S_IMODE(installed_key.stat().st_mode) == 0o600
    leaf, *rest = x509.load_pem_x509_certificates(installed.read_bytes())
    assert rest == [issuing.cert, root.cert]
    for name in contoso.server_names():  # a client trusting the root accepts it for each
        verifier = (
            PolicyBuilder()
            .store(Store([root.cert]))
            .time(T0)
            .build_server_verifier(x509.DNSName(name))
        )
        verifier.verify(leaf, rest)
    assert f'cert_file = "{installed.resolve()}"' in out
    assert f'key_file = "{installed_key.resolve()}"' in out
    assert load_credentials(installed, installed_key).names == contoso.server_names()

    found = existing_credentials(None, None, tls)
    assert found is not None and found[0] == "installed"
    status, out = certs(contoso, "show")
    assert status == 0, out
    assert "(installed)" in out and "CN=Contoso Issuing CA 1,O=Contoso" in out
    status, out = certs(contoso, "init")  # the installed pair is in use: no test CA
    assert status == 1 and not (tls / "ca.pem").exists()


def refuse(config: Config, tmp_path: Path, signed: bytes, *extra: str, now: datetime = T0) -> str:
    path = tmp_path / "signed.pem"
    path.write_bytes(signed)
    status, out = certs(config, "install", str(path), *extra, now=now)
    assert status == 1, out
    assert not (config.tls_dir / "installed.pem").exists()
    assert not (config.tls_dir / "installed.key").exists()
    return out


def test_install_refuses_a_certificate_for_another_key(
    config: Config, tmp_path: Path, issuing: Authority, capsys: pytest.CaptureFixture[str]
) -> None:
    other = csr_for(config, tmp_path)
    status, _ = certs(config, "csr", "--out", str(tmp_path / "b.csr"), "--force")  # a new key
    assert status == 0
    refuse(config, tmp_path, sign(other, issuing))
    assert "does not belong to the key" in capsys.readouterr().err
    assert (config.tls_dir / "pending.key").exists()  # still there for the right one


def test_install_refuses_a_certificate_lacking_a_name(
    contoso: Config, tmp_path: Path, issuing: Authority, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = sign(csr_for(contoso, tmp_path), issuing, names=NAMES)
    refuse(contoso, tmp_path, signed)
    err = capsys.readouterr().err
    assert (
        "lacks the name(s) ucupdates-r2.contoso.com, ucupdates.contoso.com, updates.contoso.com"
    ) in err
    assert "wildcard" not in err


def test_install_refuses_a_wildcard_only_certificate_and_says_why(
    contoso: Config, tmp_path: Path, issuing: Authority, capsys: pytest.CaptureFixture[str]
) -> None:
    """LPE phones accept no wildcard on any Lync role (docs/protocol.md §3, [K S50])."""
    wildcards = ("*.example.com", "*.contoso.com")
    request = csr_for(contoso, tmp_path)
    refuse(contoso, tmp_path, sign(request, issuing, names=wildcards))
    err = capsys.readouterr().err
    assert (
        "lacks the name(s) ucupdates-r2.example.com (only *.example.com), ucupdates.example.com "
        "(only *.example.com), ucupdates-r2.contoso.com (only *.contoso.com)"
    ) in err
    assert "LPE phones do not accept wildcard certificates on any Lync role" in err
    # A wildcard beside every name spelt out is no harm.
    every = (*wildcards, *contoso.server_names())
    path = tmp_path / "signed.pem"
    path.write_bytes(sign(request, issuing, names=every))  # the pending key is still there
    status, out = certs(contoso, "install", str(path))
    assert status == 0, out


def test_install_accepts_a_sha1_chain_and_show_reports_it(config: Config, tmp_path: Path) -> None:
    """An enterprise CA that signs with SHA-1 for Tanjay-family phones: the chain check
    verifies SHA-1 signatures itself (cryptography's own check refuses them)."""
    ca = ensure_test_certificates(tmp_path / "sha1-ca", NAMES, now=T0, signature=CertSignature.SHA1)
    assert ca.ca_file is not None
    ca_cert = x509.load_pem_x509_certificate(ca.ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(
        (tmp_path / "sha1-ca" / "ca.key").read_bytes(), None
    )
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    csr = x509.load_pem_x509_csr(csr_for(config, tmp_path))
    leaf = resign_sha1(
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - timedelta(hours=1))
        .not_valid_after(T0 + timedelta(days=397))
        .add_extension(
            csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, False
        )
        .sign(ca_key, hashes.SHA256()),
        ca_key,
    )
    (tmp_path / "signed.pem").write_bytes(pem(leaf))
    status, out = certs(config, "install", str(tmp_path / "signed.pem"), "--chain", str(ca.ca_file))
    assert status == 0, out
    assert "  signed   sha1" in out
    status, out = certs(config, "show")
    assert status == 0 and re.search(r"^signature +sha1$", out, re.M), out


def test_show_and_check_warn_when_the_lync_2010_name_is_missing(
    config: Config, tmp_path: Path
) -> None:
    creds = ensure_test_certificates(tmp_path / "elsewhere", NAMES[:1], now=T0)
    configured = dataclasses.replace(
        config, tls=TlsSettings(cert_file=creds.cert_file, key_file=creds.key_file)
    )
    status, out = certs(configured, "show")
    assert status == 1
    assert "WARNING: the certificate lacks the configured name(s) ucupdates.example.com" in out
    result = check_certificate(configured, T0)
    assert result.ok and result.warning and "ucupdates.example.com" in result.detail
    only_r2 = dataclasses.replace(configured, dns=DnsSettings(names=(DiscoveryName.R2,)))
    assert certs(only_r2, "show")[0] == 0
    assert not check_certificate(only_r2, T0).warning


@pytest.mark.parametrize("when", [T0 - timedelta(days=2), T0 + timedelta(days=400)])
def test_install_refuses_a_certificate_not_valid_now(
    config: Config,
    tmp_path: Path,
    issuing: Authority,
    when: datetime,
    capsys: pytest.CaptureFixture[str],
) -> None:
    refuse(config, tmp_path, sign(csr_for(config, tmp_path), issuing), now=when)
    assert "is not valid now" in capsys.readouterr().err


def test_install_refuses_a_client_certificate(
    config: Config, tmp_path: Path, issuing: Authority, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = sign(csr_for(config, tmp_path), issuing, eku=ExtendedKeyUsageOID.CLIENT_AUTH)
    refuse(config, tmp_path, signed)
    assert "not for TLS servers" in capsys.readouterr().err


def test_install_refuses_a_chain_that_did_not_issue_it(
    config: Config,
    tmp_path: Path,
    root: Authority,
    issuing: Authority,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stranger = make_ca("Fabrikam Issuing CA", make_ca("Fabrikam Root"))
    (tmp_path / "chain.pem").write_bytes(pem(stranger.cert))
    signed = sign(csr_for(config, tmp_path), issuing)
    refuse(config, tmp_path, signed, "--chain", str(tmp_path / "chain.pem"))
    assert "was not issued by the next one in the chain" in capsys.readouterr().err
    (tmp_path / "chain.pem").write_bytes(pem(root.cert, issuing.cert))  # out of order
    refuse(config, tmp_path, signed, "--chain", str(tmp_path / "chain.pem"))


def test_install_without_a_pending_key_says_to_make_a_request_first(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "signed.pem").write_bytes(b"")
    status, _ = certs(config, "install", str(tmp_path / "signed.pem"))
    assert status == 1 and "ucupdates certs csr" in capsys.readouterr().err


def test_init_with_a_configured_certificate_makes_no_test_ca(
    config: Config, tmp_path: Path
) -> None:
    creds: ServerCredentials = ensure_test_certificates(tmp_path / "elsewhere", NAMES, now=T0)
    configured = dataclasses.replace(
        config, tls=TlsSettings(cert_file=creds.cert_file, key_file=creds.key_file)
    )
    status, out = certs(configured, "init")
    assert status == 1 and "configured certificate" in out
    assert not config.tls_dir.exists()
    status, out = certs(configured, "show")
    assert status == 0 and "(configured)" in out


# -- the repository ---------------------------------------------------------------------------

PRIVATE_KEY = re.compile(rb"-----BEGIN ([A-Z0-9]+ )*" + rb"PRIVATE KEY-----")


def test_no_private_key_is_tracked_in_the_repository() -> None:
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, timeout=30
    )
    if listed.returncode != 0:
        pytest.skip("not a git work tree")
    files = [REPO / name.decode() for name in listed.stdout.split(b"\0") if name]
    assert files
    leaked = [
        str(path.relative_to(REPO))
        for path in files
        if path.is_file()
        and (path.suffix in (".key", ".pem") or path.stat().st_size < 1_000_000)
        and PRIVATE_KEY.search(path.read_bytes())
    ]
    assert leaked == []
