"""Certificates the phones accept (docs/protocol.md §3): both discovery names, a SHA-1
chain for Tanjay-family phones on old firmware, no wildcards, and what `check` warns of.

openssl is the independent judge of the generated files, as in test_certs.py.
"""

from __future__ import annotations

import dataclasses
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from OpenSSL import SSL

from appliance.config import (
    CertSignature,
    Config,
    DiscoveryName,
    DnsSettings,
    TlsProfile,
    TlsSettings,
)
from appliance.model import Device
from appliance.ops.checks import check_certificate
from appliance.testing import NOW as T0
from appliance.tls.certificates import CertError, dns_names, issued_by, read_chain
from appliance.tls.contexts import ProfileContextFactory
from appliance.tls.generated import ensure_test_certificates
from appliance.tls.review import (
    before_sha2,
    describe_signatures,
    is_tanjay,
    missing_names,
    name_findings,
    signature_warnings,
    wildcard_covers,
)
from appliance.tls.sha1 import SignatureError, resign_sha1

SHA1 = CertSignature.SHA1


def openssl(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *argv], capture_output=True, text=True, timeout=10)


def device(model: str | None, version: str | None, identity: str = "00-11-22-33-44-55") -> Device:
    return Device(
        identity, None, None, "UCPhone", "Polycom", model, "A", "ENU", version,
        None, None, None, "2026-01-01", "2026-01-01",
    )  # fmt: skip


# -- both names in the generated certificate ---------------------------------------------------


def test_generated_certificate_carries_both_discovery_names(tmp_path: Path) -> None:
    config = dataclasses.replace(Config(), data_dir=tmp_path, domains=("example.com", "c.net"))
    assert config.server_names() == (
        "ucupdates-r2.example.com",
        "ucupdates.example.com",
        "ucupdates-r2.c.net",
        "ucupdates.c.net",
    )
    creds = ensure_test_certificates(config.tls_dir, config.server_names())
    text = openssl("x509", "-in", str(creds.cert_file), "-noout", "-text").stdout
    assert (
        "DNS:ucupdates-r2.example.com, DNS:ucupdates.example.com, "
        "DNS:ucupdates-r2.c.net, DNS:ucupdates.c.net, DNS:localhost"
    ) in text
    for name in config.server_names():
        assert (
            openssl(
                "verify",
                "-CAfile",
                str(creds.ca_file),
                "-verify_hostname",
                name,
                str(creds.cert_file),
            ).returncode
            == 0
        )


def test_dns_names_switch_narrows_the_names_the_certificate_needs() -> None:
    only_r2 = dataclasses.replace(Config(), dns=DnsSettings(names=(DiscoveryName.R2,)))
    assert only_r2.server_names() == ("ucupdates-r2.example.com",)
    only_lync = dataclasses.replace(Config(), dns=DnsSettings(names=(DiscoveryName.LYNC2010,)))
    assert only_lync.server_names() == ("ucupdates.example.com",)
    assert only_lync.internal_fqdn == "ucupdates.example.com"


# -- SHA-1 for Tanjay-family phones --------------------------------------------------------------


def test_sha1_ca_and_leaf_that_openssl_verifies(tmp_path: Path) -> None:
    names = ("ucupdates-r2.example.com", "ucupdates.example.com")
    creds = ensure_test_certificates(tmp_path, names, signature=SHA1)
    assert creds.ca_file is not None
    leaf, ca = read_chain(creds.cert_file)
    for cert in (leaf, ca):
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA1)
        public = cert.public_key()
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    assert issued_by(leaf, ca) and issued_by(ca, ca)
    text = openssl("x509", "-in", str(creds.cert_file), "-noout", "-text").stdout
    assert "Signature Algorithm: sha1WithRSAEncryption" in text
    assert "DNS:ucupdates-r2.example.com, DNS:ucupdates.example.com" in text
    ca_text = openssl("x509", "-in", str(creds.ca_file), "-noout", "-text").stdout
    assert "Signature Algorithm: sha1WithRSAEncryption" in ca_text
    # `openssl verify` sets no security level of its own: it accepts the chain...
    plain = openssl("verify", "-CAfile", str(creds.ca_file), str(creds.cert_file))
    assert plain.returncode == 0 and plain.stdout.strip().endswith(": OK"), plain.stderr
    level0 = openssl(
        "verify", "-auth_level", "0", "-CAfile", str(creds.ca_file), str(creds.cert_file)
    )
    assert level0.returncode == 0, level0.stderr
    # ...while at security level 1 (a TLS client's default or more) SHA-1 is too weak.
    level1 = openssl(
        "verify", "-auth_level", "1", "-CAfile", str(creds.ca_file), str(creds.cert_file)
    )
    assert level1.returncode != 0
    assert "CA signature digest algorithm too weak" in level1.stdout + level1.stderr


def test_resigning_keeps_every_field_but_the_algorithm(tmp_path: Path) -> None:
    creds = ensure_test_certificates(tmp_path, ["ucupdates-r2.example.com"], now=T0)
    leaf, ca = read_chain(creds.cert_file)
    ca_key = ca_private_key(tmp_path)
    again = resign_sha1(leaf, ca_key)
    for field in ("subject", "issuer", "serial_number", "not_valid_before_utc"):
        assert getattr(again, field) == getattr(leaf, field)
    assert list(again.extensions) == list(leaf.extensions)
    assert again.public_key() == leaf.public_key()
    ca_public = ca.public_key()
    assert isinstance(ca_public, rsa.RSAPublicKey)
    ca_public.verify(
        again.signature, again.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1()
    )
    with pytest.raises(SignatureError):
        resign_sha1(again, ca_key)  # SHA-1 already: not the builder's output


def ca_private_key(tls_dir: Path) -> rsa.RSAPrivateKey:
    from appliance.tls.certificates import read_key

    key = read_key(tls_dir / "ca.key")
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def test_signature_change_reissues_the_leaf_but_never_the_ca_silently(tmp_path: Path) -> None:
    names = ["ucupdates-r2.example.com"]
    ensure_test_certificates(tmp_path, names, now=T0, signature=SHA1)
    ca_before = (tmp_path / "ca.pem").read_bytes()
    (tmp_path / "server.pem").unlink()  # issued again, from the same CA
    ensure_test_certificates(tmp_path, names, now=T0, signature=SHA1)
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    # Asking for SHA-256 now: the SHA-1 CA stays, and the error says how to start anew.
    with pytest.raises(CertError, match=r"signed with sha1, but tls.generated_signature is sha256"):
        ensure_test_certificates(tmp_path, names, now=T0)
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    for name in ("ca.pem", "ca.key"):
        (tmp_path / name).unlink()
    fresh = ensure_test_certificates(tmp_path, names, now=T0)
    assert all(
        isinstance(c.signature_hash_algorithm, hashes.SHA256) for c in read_chain(fresh.cert_file)
    )


def test_leaf_of_the_wrong_hash_is_reissued(tmp_path: Path) -> None:
    names = ["ucupdates-r2.example.com"]
    ensure_test_certificates(tmp_path, names, now=T0, signature=SHA1)
    _, ca = read_chain(tmp_path / "server.pem")
    # Forge the state an interrupted change leaves: a SHA-256 leaf from the SHA-1 CA.
    from appliance.tls.generated import _issue_leaf

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sha256_leaf = _issue_leaf(key, ca, ca_private_key(tmp_path), tuple(names), T0)
    from appliance.tls.certificates import cert_pem, key_pem

    (tmp_path / "server.pem").write_bytes(cert_pem(sha256_leaf) + cert_pem(ca))
    (tmp_path / "server.key").write_bytes(key_pem(key))
    again = ensure_test_certificates(tmp_path, names, now=T0, signature=SHA1)
    assert isinstance(read_chain(again.cert_file)[0].signature_hash_algorithm, hashes.SHA1)


# -- names: wildcards and the missing Lync 2010 name ----------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "covers"),
    [
        ("*.example.com", "ucupdates.example.com", True),
        ("*.Example.COM", "ucupdates-r2.example.com", True),
        ("*.example.com", "a.b.example.com", False),  # one label only
        ("*.example.com", "example.com", False),
        ("ucupdates.example.com", "ucupdates.example.com", False),  # not a wildcard
    ],
)
def test_wildcard_covers(pattern: str, name: str, covers: bool) -> None:
    assert wildcard_covers(pattern, name) is covers


def test_missing_names_say_which_wildcard_would_have_covered_them() -> None:
    assert missing_names(
        ["a.example.com", "b.example.com", "c.net"], ["*.example.com", "b.example.com"]
    ) == [
        "a.example.com (only *.example.com)",
        "c.net",
    ]


def test_name_findings_fail_without_a_domain_and_warn_without_its_second_name() -> None:
    config = dataclasses.replace(Config(), domains=("example.com", "contoso.com"))
    problems, warnings = name_findings(
        config, ["ucupdates-r2.example.com", "ucupdates.example.com"]
    )
    assert problems == [
        "lacks the configured name(s) ucupdates-r2.contoso.com, ucupdates.contoso.com"
    ]
    problems, warnings = name_findings(
        config, ["ucupdates-r2.example.com", "ucupdates-r2.contoso.com", "*.contoso.com"]
    )
    assert problems == []
    [warning] = warnings
    assert warning.startswith(
        "lacks the configured name(s) ucupdates.example.com, "
        "ucupdates.contoso.com (only *.contoso.com): LPE phones do not accept wildcard"
    )


# -- the signature and the phones of the inventory -------------------------------------------------


@pytest.mark.parametrize(
    ("model", "version", "tanjay", "old"),
    [
        ("CX700", "1.0.522.101", True, True),
        ("CX700", "3.5.6907.37", True, True),
        ("cx700", "4.0.7577.4363", True, False),
        ("IP8540", "1.0.522.101", True, True),
        ("LIP-8540", None, True, True),  # no version reported: assume the worst
        ("CX600", "1.0.522.101", False, False),  # Aries family
        (None, None, False, False),
    ],
)
def test_tanjay_family_on_old_firmware(
    model: str | None, version: str | None, tanjay: bool, old: bool
) -> None:
    d = device(model, version)
    assert is_tanjay(d) is tanjay and before_sha2(d) is old


def test_check_reports_the_signature_and_warns_of_old_tanjay_phones(tmp_path: Path) -> None:
    config = dataclasses.replace(Config(), data_dir=tmp_path)
    ensure_test_certificates(config.tls_dir, config.server_names(), now=T0)
    result = check_certificate(config, T0, [device("CX600", "1.0.522.101")])
    assert result.ok and not result.warning and result.detail.endswith("signed sha256")
    old = [device("CX700", "1.0.522.101"), device("IP8540", "3.5.6907.37", "aa")]
    result = check_certificate(config, T0, old)
    assert result.ok and result.warning
    assert "is signed with sha256, but 2 Tanjay-family phone(s) on firmware before 4.0" in (
        result.detail
    )
    assert "CX700 1.0.522.101" in result.detail and 'generated_signature = "sha1"' in result.detail

    sha1 = dataclasses.replace(
        config, tls=TlsSettings(generated_signature=SHA1), data_dir=tmp_path / "sha1"
    )
    ensure_test_certificates(sha1.tls_dir, sha1.server_names(), now=T0, signature=SHA1)
    result = check_certificate(sha1, T0, old)
    assert result.ok and not result.warning and result.detail.endswith("signed sha1")


def test_signature_warnings_count_every_certificate_of_the_chain(tmp_path: Path) -> None:
    creds = ensure_test_certificates(tmp_path, ["ucupdates-r2.example.com"], signature=SHA1)
    leaf, ca = read_chain(creds.cert_file)
    old = [device("CX700", "1.0.522.101")]
    assert signature_warnings([leaf, ca], old) == []
    ec_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "EC root")])
    ec_root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ec_key.public_key())
        .serial_number(1)
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(days=1))
        .sign(ec_key, hashes.SHA384())
    )
    assert describe_signatures([leaf, ec_root]) == "sha1 (chain: sha384)"
    [warning] = signature_warnings([leaf, ec_root], old)
    assert warning.startswith("is signed with sha384, but 1 Tanjay-family phone(s)")


def test_sha1_chain_keeps_a_sha256_leaf_for_the_modern_listeners(tmp_path: Path) -> None:
    """Browsers refuse SHA-1: the Control Panel (modern profile) presents a SHA-256 leaf
    of the same SHA-1 CA, which OpenSSL accepts even at security level 2 (a trust
    anchor's own signature is not checked); the phone listeners present the SHA-1 one."""
    names = ("ucupdates-r2.example.com", "ucupdates.example.com")
    creds = ensure_test_certificates(tmp_path, names, now=T0, signature=SHA1)
    assert creds.modern_pair == (tmp_path / "server-modern.pem", tmp_path / "server-modern.key")
    modern_leaf, ca = read_chain(creds.modern_pair[0])
    assert isinstance(modern_leaf.signature_hash_algorithm, hashes.SHA256)
    assert issued_by(modern_leaf, ca) and dns_names(modern_leaf) == (*names, "localhost")
    assert ca == read_chain(creds.cert_file)[1]
    presented = {
        profile: SSL.Connection(ProfileContextFactory(creds, profile).getContext(), None)
        .get_certificate()
        .to_cryptography()  # type: ignore[union-attr]
        for profile in TlsProfile
    }
    assert presented[TlsProfile.MODERN] == modern_leaf
    assert presented[TlsProfile.LPE_LEGACY] == read_chain(creds.cert_file)[0]
    assert ensure_test_certificates(tmp_path, names, now=T0, signature=SHA1) == creds  # reused
    real = ensure_test_certificates(tmp_path / "now", names, signature=SHA1)  # openssl's clock
    assert real.ca_file is not None and real.modern_pair is not None
    strict = openssl(
        "verify", "-auth_level", "2", "-CAfile", str(real.ca_file), str(real.modern_pair[0])
    )
    assert strict.returncode == 0, strict.stdout + strict.stderr
    assert ensure_test_certificates(tmp_path / "sha256", names, now=T0).modern_pair is None
