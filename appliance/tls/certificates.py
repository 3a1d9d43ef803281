"""The server certificate: which one is in use, reading and checking it, its expiry.

The TLS folder (`<data_dir>/tls/`) holds up to three certificates: a generated test CA
and its leaf (`appliance.tls.generated`), and one an enterprise CA signed from a CSR
(`appliance.tls.install`). A certificate configured in `[tls]` comes first, then the
installed pair, then the generated one. The helpers here (reading PEM files, matching a
key, writing a key 0600 through a temporary file and a rename) are shared by both.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from appliance.config import Config
from appliance.model import Device
from appliance.tls.review import describe_signatures, name_findings, signature_warnings

# The files of the TLS folder.
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
PENDING_KEY = "pending.key"
INSTALLED_CERT = "installed.pem"
INSTALLED_KEY = "installed.key"
MODERN_CERT = "server-modern.pem"  # with a SHA-1 test CA: a SHA-256 leaf for TLS 1.2+ only
MODERN_KEY = "server-modern.key"

RSA_BITS = 2048  # the phones' TLS 1.0 suites (AES128-SHA and friends) need RSA


class CertError(Exception):
    """A certificate or key that cannot be used; str() is the one line to show."""


@dataclass(frozen=True)
class ServerCredentials:
    cert_file: Path  # PEM: leaf, then chain
    key_file: Path
    ca_file: Path | None  # the CA phones must trust (set when we generated it)
    names: tuple[str, ...]  # DNS SANs of the leaf
    not_after: datetime
    # With a SHA-1 signed test certificate: a SHA-256 leaf of the same CA and names for
    # the listeners of the modern profile (the Control Panel), which browsers accept.
    modern_pair: tuple[Path, Path] | None = None


def days_left(creds: ServerCredentials, now: datetime) -> float:
    """Days until the leaf expires (negative once it has); `now` is timezone-aware."""
    return (creds.not_after - now).total_seconds() / 86400


def load_credentials(cert_file: Path, key_file: Path) -> ServerCredentials:
    """Check a configured certificate: both files readable, PEM, chain in order, and the
    key belonging to the first certificate."""
    chain = read_chain(cert_file)
    key = read_key(key_file)
    leaf = chain[0]
    if not same_public_key(leaf, key):
        raise CertError(f"{key_file}: the key does not belong to the certificate in {cert_file}")
    for i, (cert, issuer) in enumerate(zip(chain, chain[1:], strict=False), start=1):
        if cert.issuer != issuer.subject:
            raise CertError(
                f"{cert_file}: certificate {i + 1} ({issuer.subject.rfc4514_string()}) did not "
                f"issue certificate {i}; put the leaf first, then each issuer in order"
            )
    return ServerCredentials(
        cert_file=cert_file,
        key_file=key_file,
        ca_file=None,
        names=dns_names(leaf),
        not_after=leaf.not_valid_after_utc,
    )


def normalise_names(names: Sequence[str]) -> tuple[str, ...]:
    """The names lower-cased, without a trailing dot or duplicates; CertError for none,
    an empty one, or a non-ASCII one (give the IDNA form)."""
    if isinstance(names, str):
        raise CertError("server names must be a list of names, not one string")
    out = tuple(dict.fromkeys(n.strip().rstrip(".").lower() for n in names))
    if not out or "" in out:
        raise CertError("the server certificate needs at least one non-empty DNS name")
    for n in out:
        if not n.isascii():
            raise CertError(f"server name {n!r} is not ASCII; give its IDNA (xn--) form")
    return out


def read_chain(path: Path) -> list[x509.Certificate]:
    """The PEM certificates of `path`, in file order; CertError when there are none."""
    data = _read(path, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CertError(f"{path}: not a PEM certificate ({e})") from e
    if not chain:  # pragma: no cover - cryptography raises instead
        raise CertError(f"{path}: no certificate in the file")
    return chain


def read_key(path: Path) -> PrivateKeyTypes:
    """The unencrypted PEM private key of `path`; CertError otherwise."""
    data = _read(path, "key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as e:
        raise CertError(f"{path}: the key is encrypted; give it without a passphrase") from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CertError(f"{path}: not a PEM private key ({e})") from e


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise CertError(f"{path}: {what} file not found") from e
    except OSError as e:
        raise CertError(f"{path}: cannot read the {what} file ({e.strerror})") from e


def same_public_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """Whether `key` is the private half of the certificate's public key."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(
        cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)
    )


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names of the certificate's subject alternative names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer` signed `cert` (names and signature). RSA signatures are checked
    here, so SHA-1 ones too, which cryptography's `verify_directly_issued_by` refuses."""
    if cert.issuer != issuer.subject:
        return False
    public = issuer.public_key()
    try:
        if not isinstance(public, rsa.RSAPublicKey):
            cert.verify_directly_issued_by(issuer)
            return True
        algorithm, scheme = cert.signature_hash_algorithm, cert.signature_algorithm_parameters
        if algorithm is None or not isinstance(scheme, padding.PKCS1v15 | padding.PSS):
            return False
        public.verify(cert.signature, cert.tbs_certificate_bytes, scheme, algorithm)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write `path` with `mode` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True)
class CertificateInfo:
    """What an admin wants to see of a certificate file (its first certificate)."""

    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    sha256: str  # fingerprint, colon-separated hex
    chain_length: int  # certificates in the file
    signature: str  # the hash it is signed with (sha256, sha1...), and the chain's if others


def describe_certificate(cert_file: Path) -> CertificateInfo:
    chain = read_chain(cert_file)
    leaf = chain[0]
    return CertificateInfo(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        names=dns_names(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        sha256=leaf.fingerprint(hashes.SHA256()).hex(":").upper(),
        chain_length=len(chain),
        signature=describe_signatures(chain),
    )


def check_expiry(creds: ServerCredentials, now: datetime, warn_days: int) -> str | None:
    """A one-line warning when the certificate expires within `warn_days` (or has)."""
    left = days_left(creds, now)
    day = f"{creds.not_after:%Y-%m-%d %H:%M} UTC"
    if left <= 0:
        return f"the server certificate {creds.cert_file} expired on {day}"
    if left < warn_days:
        return (
            f"the server certificate {creds.cert_file} expires on {day}, in {left:.0f} "
            f"day{'' if round(left) == 1 else 's'}"
        )
    return None


def installed_pair(tls_dir: Path) -> tuple[Path, Path] | None:
    """`installed.pem` and `installed.key` in `tls_dir`, when both are there."""
    cert_file, key_file = tls_dir / INSTALLED_CERT, tls_dir / INSTALLED_KEY
    return (cert_file, key_file) if cert_file.exists() and key_file.exists() else None


def existing_credentials(
    cert_file: Path | None, key_file: Path | None, tls_dir: Path
) -> tuple[str, ServerCredentials] | None:
    """The certificate in use and where it comes from ("configured", "installed" or
    "generated"), without creating anything; None before the first start. Raises
    CertError for files that are there but unusable."""
    if cert_file is not None and key_file is not None:
        return "configured", load_credentials(cert_file, key_file)
    pair = installed_pair(tls_dir)
    if pair is not None:
        return "installed", load_credentials(*pair)
    generated, generated_key = tls_dir / SERVER_CERT, tls_dir / SERVER_KEY
    if generated.exists() or generated_key.exists():
        creds = load_credentials(generated, generated_key)
        ca_file = tls_dir / CA_CERT
        return "generated", ServerCredentials(
            cert_file=creds.cert_file,
            key_file=creds.key_file,
            ca_file=ca_file if ca_file.exists() else None,
            names=creds.names,
            not_after=creds.not_after,
        )
    return None


def certificate_problems(config: Config, names: tuple[str, ...], left: float) -> list[str]:
    """Why the certificate in use must be replaced (empty: it need not)."""
    problems, _ = name_findings(config, names)
    warn_days = config.syslog.cert_warn_days
    if left <= 0:
        problems.append("has expired")
    elif left < warn_days:
        problems.append(f"expires within {warn_days} days (syslog.cert_warn_days)")
    return problems


def certificate_warnings(
    config: Config, cert_file: Path, devices: Sequence[Device] = ()
) -> list[str]:
    """What may keep some phones away, short of a problem: a discovery name missing beside
    another of its domain, a SHA-2 signature with old Tanjay-family phones in `devices`
    (appliance.tls.review)."""
    chain = read_chain(cert_file)
    _, warnings = name_findings(config, dns_names(chain[0]))
    return warnings + signature_warnings(chain, devices)
