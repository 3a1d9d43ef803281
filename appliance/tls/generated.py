"""The generated test CA and its server certificate.

Without a configured or installed certificate the appliance keeps a private test CA and
a server certificate in its TLS folder (`<data_dir>/tls/`): `ca.pem`/`ca.key`, generated
once, and `server.pem` (the leaf, then the CA) / `server.key`. The leaf carries every
configured name, so phones that send no SNI still get a certificate for
`ucupdates-r2.<domain>` and `ucupdates.<domain>`. Its key is RSA 2048 because the phones'
TLS 1.0 suites (AES128-SHA and friends) need RSA (docs/protocol.md §10).

Both are signed with SHA-256, or with SHA-1 (`tls.generated_signature = "sha1"`) for
Tanjay-family phones on old firmware, which do not support SHA-2 (docs/protocol.md §3;
appliance.tls.sha1 makes the signature).

At later starts the files are reused. The leaf is issued again, from the same CA, when it
lacks a configured name, expires within 30 days, is signed with another hash than the one
asked for, or no longer matches its key or the CA; the CA is kept, since phones record the
chain they saw at their first connection (a CA signed with another hash than the one asked
for is an error that says how to start a new one). Keys
are written 0600 through a temporary file and a rename, so a crash leaves either the old
file or the new one.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.logger import Logger

from appliance.config import CertSignature
from appliance.tls.certificates import (
    CA_CERT,
    CA_KEY,
    MODERN_CERT,
    MODERN_KEY,
    RSA_BITS,
    SERVER_CERT,
    SERVER_KEY,
    CertError,
    ServerCredentials,
    cert_pem,
    dns_names,
    issued_by,
    key_pem,
    normalise_names,
    read_chain,
    read_key,
    same_public_key,
    write_atomic,
)
from appliance.tls.review import signature_hash
from appliance.tls.sha1 import resign_sha1

log = Logger()

LEAF_DAYS = 825  # the longest validity clients such as Apple's still accept
CA_DAYS = 20 * 365  # phones pin the chain at first sight: the CA must outlive them
RENEW_BEFORE = timedelta(days=30)
BACKDATE = timedelta(hours=1)  # tolerate clocks a little behind
EXTRA_DNS = ("localhost",)
EXTRA_IPS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


def ensure_test_certificates(
    tls_dir: Path,
    names: Sequence[str],
    *,
    now: datetime | None = None,
    signature: CertSignature = CertSignature.SHA256,
) -> ServerCredentials:
    """The generated test CA and server certificate in `tls_dir`, created or renewed as
    needed (see the module docstring), both signed with `signature`. `names[0]` becomes
    the leaf's common name."""
    now = now or datetime.now(UTC)
    wanted = normalise_names(names)
    if not tls_dir.exists():
        tls_dir.mkdir(mode=0o700, parents=True)
        os.chmod(tls_dir, 0o700)
    ca_cert, ca_key = _ensure_ca(tls_dir, now, signature)
    cert_file, key_file = tls_dir / SERVER_CERT, tls_dir / SERVER_KEY
    leaf = _ensure_leaf(cert_file, key_file, (ca_cert, ca_key), wanted, now, signature)
    modern = None
    if signature is not CertSignature.SHA256:  # browsers refuse SHA-1: the admin listener's
        modern = (tls_dir / MODERN_CERT, tls_dir / MODERN_KEY)
        _ensure_leaf(*modern, (ca_cert, ca_key), wanted, now, CertSignature.SHA256)
    return ServerCredentials(
        cert_file=cert_file,
        key_file=key_file,
        ca_file=tls_dir / CA_CERT,
        names=dns_names(leaf),
        not_after=leaf.not_valid_after_utc,
        modern_pair=modern,
    )


def _ensure_leaf(
    cert_file: Path,
    key_file: Path,
    ca: tuple[x509.Certificate, rsa.RSAPrivateKey],
    wanted: tuple[str, ...],
    now: datetime,
    signature: CertSignature,
) -> x509.Certificate:
    """The leaf in `cert_file`, issued (again) when `_reissue_reason` says so."""
    ca_cert, ca_key = ca
    reason = _reissue_reason(cert_file, key_file, ca_cert, wanted, now, signature)
    if reason is not None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        leaf = _signed(_issue_leaf(key, ca_cert, ca_key, wanted, now), ca_key, signature)
        # The key first: a crash between the two renames leaves a mismatched pair,
        # which the next start detects and issues again.
        write_atomic(key_file, key_pem(key), 0o600)
        write_atomic(cert_file, cert_pem(leaf) + cert_pem(ca_cert), 0o644)
        log.info(
            "issued server certificate {path} for {names} ({reason})",
            path=str(cert_file),
            names=", ".join(wanted),
            reason=reason,
            signature=signature.value,
        )
        return leaf
    return read_chain(cert_file)[0]


def _signed(
    cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey, signature: CertSignature
) -> x509.Certificate:
    """`cert` (signed SHA-256 by the builder) signed again with SHA-1 when asked."""
    return resign_sha1(cert, issuer_key) if signature is CertSignature.SHA1 else cert


def _ensure_ca(
    tls_dir: Path, now: datetime, signature: CertSignature
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert_file, key_file = tls_dir / CA_CERT, tls_dir / CA_KEY
    if not cert_file.exists() and not key_file.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        cert = _signed(_issue_ca(key, now), key, signature)
        write_atomic(key_file, key_pem(key), 0o600)
        write_atomic(cert_file, cert_pem(cert), 0o644)
        log.info("generated test CA {path}: phones must trust it", path=str(cert_file))
        return cert, key
    # Never replace an existing CA silently: phones that trust it would stop connecting.
    cert = read_chain(cert_file)[0]
    loaded = read_key(key_file)
    if not isinstance(loaded, rsa.RSAPrivateKey) or not same_public_key(cert, loaded):
        raise CertError(
            f"{key_file} does not belong to {cert_file}; restore the pair, or remove both "
            "to generate a new test CA (phones will then have to trust the new one)"
        )
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        raise CertError(
            f"the test CA {cert_file} expires on {cert.not_valid_after_utc:%Y-%m-%d}; remove "
            "ca.pem and ca.key to generate a new one (phones will have to trust it)"
        )
    if signature_hash(cert) != signature.value:
        raise CertError(
            f"the test CA {cert_file} is signed with {signature_hash(cert)}, but "
            f"tls.generated_signature is {signature.value}: remove ca.pem and ca.key to "
            "generate a new test CA (phones will have to trust it), or set it back"
        )
    return cert, loaded


def _reissue_reason(
    cert_file: Path,
    key_file: Path,
    ca_cert: x509.Certificate,
    names: tuple[str, ...],
    now: datetime,
    signature: CertSignature,
) -> str | None:
    """Why the leaf must be issued again, or None when it can be reused."""
    if not cert_file.exists() or not key_file.exists():
        return "none yet"
    try:
        leaf = read_chain(cert_file)[0]
        key = read_key(key_file)
    except CertError as e:
        return f"unreadable: {e}"
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < RSA_BITS:
        return "key is not RSA 2048"
    if not same_public_key(leaf, key):
        return "key does not match"
    if not issued_by(leaf, ca_cert):
        return "not issued by the current CA"
    if signature_hash(leaf) != signature.value:
        return f"signed with {signature_hash(leaf)}, {signature.value} asked for"
    missing = set(names) - set(dns_names(leaf))
    if missing:
        return "lacks " + ", ".join(sorted(missing))
    if leaf.not_valid_after_utc - now < RENEW_BEFORE:
        return f"expires {leaf.not_valid_after_utc:%Y-%m-%d}"
    if leaf.not_valid_before_utc > now:
        return "not valid yet"
    return None


def _issue_ca(key: rsa.RSAPrivateKey, now: datetime) -> x509.Certificate:
    # A random tag in the name tells appliances' CAs apart in a phone's or browser's list.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ucupdates appliance"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"ucupdates test CA {x509.random_serial_number() % 10**8:08d}"
            ),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now - BACKDATE + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )


def _issue_leaf(
    key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    names: tuple[str, ...],
    now: datetime,
) -> x509.Certificate:
    dns = tuple(dict.fromkeys(names + EXTRA_DNS))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [x509.IPAddress(ip) for ip in EXTRA_IPS]
    not_before = now - BACKDATE
    not_after = min(not_before + timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,  # RSA key exchange: the phones' AES128-SHA
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
