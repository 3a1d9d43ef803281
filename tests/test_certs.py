"""The generated test CA and server certificate, and checks on configured ones."""

from __future__ import annotations

import ipaddress
import stat
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from appliance.testing import NOW as T0
from appliance.tls.certificates import (
    CertError,
    ServerCredentials,
    days_left,
    load_credentials,
)
from appliance.tls.generated import ensure_test_certificates

NAMES = ("ucupdates-r2.example.com", "ucupdates-r2.contoso.com", "updates.contoso.com")
FILES = ["ca.key", "ca.pem", "server.key", "server.pem"]


def read_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def snapshot(tls_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(tls_dir.iterdir())}


def verify(leaf: x509.Certificate, ca: x509.Certificate, name: str, when: datetime) -> None:
    verifier = (
        PolicyBuilder().store(Store([ca])).time(when).build_server_verifier(x509.DNSName(name))
    )
    verifier.verify(leaf, [])


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "tls"


@pytest.fixture
def creds(tls_dir: Path) -> ServerCredentials:
    return ensure_test_certificates(tls_dir, NAMES, now=T0)


def test_first_start_creates_a_private_ca_and_a_leaf_for_every_name(
    tls_dir: Path, creds: ServerCredentials
) -> None:
    assert sorted(p.name for p in tls_dir.iterdir()) == FILES  # no temporary files left
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((tls_dir / key).stat().st_mode) == 0o600
    assert creds.cert_file == tls_dir / "server.pem"
    assert creds.key_file == tls_dir / "server.key"
    assert creds.ca_file == tls_dir / "ca.pem"

    (ca,) = read_chain(tls_dir / "ca.pem")
    leaf, chained_ca = read_chain(creds.cert_file)
    assert chained_ca == ca  # server.pem: the leaf, then its chain
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [*NAMES, "localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert creds.names == (*NAMES, "localhost")
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NAMES[0]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    # The phones' TLS 1.0 suites need an RSA server key.
    public = leaf.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=825)
    assert leaf.not_valid_before_utc <= T0 < leaf.not_valid_after_utc
    assert creds.not_after == leaf.not_valid_after_utc

    for name in NAMES:
        verify(leaf, ca, name, T0)
    with pytest.raises(VerificationError):
        verify(leaf, ca, "ucupdates-r2.other.example", T0)


def test_openssl_verifies_the_leaf_against_the_ca(tls_dir: Path) -> None:
    creds = ensure_test_certificates(tls_dir, NAMES)  # now: openssl checks the real clock
    assert creds.ca_file is not None
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", str(creds.ca_file), str(creds.cert_file)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(": OK")


def test_second_start_reuses_every_file(tls_dir: Path, creds: ServerCredentials) -> None:
    before = snapshot(tls_dir)
    again = ensure_test_certificates(tls_dir, NAMES, now=T0 + timedelta(days=10))
    assert snapshot(tls_dir) == before
    assert again == creds


def test_a_new_name_reissues_the_leaf_from_the_same_ca(
    tls_dir: Path, creds: ServerCredentials
) -> None:
    before = snapshot(tls_dir)
    names = (*NAMES, "ucupdates-r2.fabrikam.com")
    again = ensure_test_certificates(tls_dir, names, now=T0 + timedelta(days=1))
    after = snapshot(tls_dir)
    assert after["ca.pem"] == before["ca.pem"] and after["ca.key"] == before["ca.key"]
    assert after["server.pem"] != before["server.pem"]
    assert after["server.key"] != before["server.key"]
    assert "ucupdates-r2.fabrikam.com" in again.names
    (ca,) = read_chain(tls_dir / "ca.pem")
    verify(read_chain(again.cert_file)[0], ca, "ucupdates-r2.fabrikam.com", T0 + timedelta(days=1))
    # A name dropped from the config is no reason to issue again.
    assert ensure_test_certificates(tls_dir, NAMES[:1], now=T0 + timedelta(days=2)) == again
    assert snapshot(tls_dir) == after


def test_names_compare_without_case_or_trailing_dot(
    tls_dir: Path, creds: ServerCredentials
) -> None:
    before = snapshot(tls_dir)
    ensure_test_certificates(tls_dir, ["UCUPDATES-R2.Example.COM."], now=T0)
    assert snapshot(tls_dir) == before


def test_a_leaf_near_expiry_is_reissued_and_the_ca_kept(
    tls_dir: Path, creds: ServerCredentials
) -> None:
    before = snapshot(tls_dir)
    # 31 days left: still reused.
    ensure_test_certificates(tls_dir, NAMES, now=creds.not_after - timedelta(days=31))
    assert snapshot(tls_dir) == before
    # 29 days left: issued again, valid 825 days from then, by the same CA.
    later = creds.not_after - timedelta(days=29)
    renewed = ensure_test_certificates(tls_dir, NAMES, now=later)
    after = snapshot(tls_dir)
    assert after["server.pem"] != before["server.pem"]
    assert after["ca.pem"] == before["ca.pem"] and after["ca.key"] == before["ca.key"]
    assert days_left(renewed, later) == pytest.approx(825 - 1 / 24)
    (ca,) = read_chain(tls_dir / "ca.pem")
    verify(read_chain(renewed.cert_file)[0], ca, NAMES[0], later)


def test_a_leaf_that_lost_its_key_is_reissued(tls_dir: Path, creds: ServerCredentials) -> None:
    """A crash between writing server.key and server.pem leaves a mismatched pair."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tls_dir / "server.key").write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    again = ensure_test_certificates(tls_dir, NAMES, now=T0)
    load_credentials(again.cert_file, again.key_file)  # the pair matches again


def test_a_ca_whose_key_is_gone_is_not_replaced_silently(
    tls_dir: Path, creds: ServerCredentials
) -> None:
    (tls_dir / "ca.key").unlink()
    before = snapshot(tls_dir)
    with pytest.raises(CertError, match=r"ca\.key: key file not found"):
        ensure_test_certificates(tls_dir, NAMES, now=T0)
    assert snapshot(tls_dir) == before


def test_no_names_is_an_error(tls_dir: Path) -> None:
    with pytest.raises(CertError, match="at least one"):
        ensure_test_certificates(tls_dir, [], now=T0)
    assert not tls_dir.exists()


def test_days_left(creds: ServerCredentials) -> None:
    assert days_left(creds, creds.not_after - timedelta(days=3, hours=12)) == 3.5
    assert days_left(creds, creds.not_after + timedelta(days=1)) == -1


# --- configured certificates -------------------------------------------------


def test_load_credentials_reads_a_configured_certificate(creds: ServerCredentials) -> None:
    loaded = load_credentials(creds.cert_file, creds.key_file)
    assert loaded == ServerCredentials(
        cert_file=creds.cert_file,
        key_file=creds.key_file,
        ca_file=None,
        names=creds.names,
        not_after=creds.not_after,
    )


def test_load_credentials_missing_files(tmp_path: Path, creds: ServerCredentials) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(CertError, match=r"nope\.pem: certificate file not found"):
        load_credentials(missing, creds.key_file)
    with pytest.raises(CertError, match=r"nope\.pem: key file not found"):
        load_credentials(creds.cert_file, missing)


def test_load_credentials_key_of_another_certificate(
    tmp_path: Path, creds: ServerCredentials
) -> None:
    assert creds.ca_file is not None
    with pytest.raises(CertError, match=r"ca\.key: the key does not belong to the certificate"):
        load_credentials(creds.cert_file, creds.ca_file.with_name("ca.key"))
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CertError, match="does not belong"):
        load_credentials(creds.cert_file, ec_key)


def test_load_credentials_garbage(tmp_path: Path, creds: ServerCredentials) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(CertError, match=r"garbage\.pem: not a PEM certificate"):
        load_credentials(garbage, creds.key_file)
    with pytest.raises(CertError, match=r"garbage\.pem: not a PEM private key"):
        load_credentials(creds.cert_file, garbage)
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    with pytest.raises(CertError, match=r"empty\.pem: not a PEM certificate"):
        load_credentials(empty, creds.key_file)


def test_load_credentials_encrypted_key(tmp_path: Path, creds: ServerCredentials) -> None:
    key = serialization.load_pem_private_key(creds.key_file.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(CertError, match="encrypted; give it without a passphrase"):
        load_credentials(creds.cert_file, locked)


def test_load_credentials_chain_out_of_order(tmp_path: Path, creds: ServerCredentials) -> None:
    leaf, ca = read_chain(creds.cert_file)
    other_ca = ensure_test_certificates(tmp_path / "other", ["x.example.com"], now=T0).ca_file
    assert other_ca is not None
    wrong = tmp_path / "wrong-chain.pem"
    wrong.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + other_ca.read_bytes())
    with pytest.raises(CertError, match="did not issue certificate 1; put the leaf first"):
        load_credentials(wrong, creds.key_file)
