"""The server certificate: a configured one checked, or a test CA and leaf generated.

Without a configured certificate the appliance keeps a private test CA and a server
certificate in its TLS folder (`<data_dir>/tls/`): `ca.pem`/`ca.key`, generated once, and
`server.pem` (the leaf, then the CA) / `server.key`. The leaf carries every configured
name, so phones that send no SNI still get a certificate for `ucupdates-r2.<domain>`. Its
key is RSA 2048 because the phones' TLS 1.0 suites (AES128-SHA and friends) need RSA.

At later starts the files are reused. The leaf is issued again, from the same CA, when it
lacks a configured name, expires within 30 days, or no longer matches its key or the CA;
the CA is kept, since phones record the chain they saw at their first connection. Keys
are written 0600 through a temporary file and a rename, so a crash leaves either the old
file or the new one.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.logger import Logger

from appliance.config import Config

log = Logger()

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"

LEAF_DAYS = 825  # the longest validity clients such as Apple's still accept
CA_DAYS = 20 * 365  # phones pin the chain at first sight: the CA must outlive them
RENEW_BEFORE = timedelta(days=30)
BACKDATE = timedelta(hours=1)  # tolerate clocks a little behind
RSA_BITS = 2048
EXTRA_DNS = ("localhost",)
EXTRA_IPS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


class CertError(Exception):
    """A certificate or key that cannot be used; str() is the one line to show."""


@dataclass(frozen=True)
class ServerCredentials:
    cert_file: Path  # PEM: leaf, then chain
    key_file: Path
    ca_file: Path | None  # the CA phones must trust (set when we generated it)
    names: tuple[str, ...]  # DNS SANs of the leaf
    not_after: datetime


def days_left(creds: ServerCredentials, now: datetime) -> float:
    """Days until the leaf expires (negative once it has); `now` is timezone-aware."""
    return (creds.not_after - now).total_seconds() / 86400


def load_credentials(cert_file: Path, key_file: Path) -> ServerCredentials:
    """Check a configured certificate: both files readable, PEM, chain in order, and the
    key belonging to the first certificate."""
    chain = _read_chain(cert_file)
    key = _read_key(key_file)
    leaf = chain[0]
    if not _same_public_key(leaf, key):
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
        names=_dns_names(leaf),
        not_after=leaf.not_valid_after_utc,
    )


def ensure_test_certificates(
    tls_dir: Path, names: Sequence[str], *, now: datetime | None = None
) -> ServerCredentials:
    """The generated test CA and server certificate in `tls_dir`, created or renewed as
    needed (see the module docstring). `names[0]` becomes the leaf's common name."""
    now = now or datetime.now(UTC)
    wanted = _normalise(names)
    if not tls_dir.exists():
        tls_dir.mkdir(mode=0o700, parents=True)
        os.chmod(tls_dir, 0o700)
    ca_cert, ca_key = _ensure_ca(tls_dir, now)
    cert_file, key_file = tls_dir / SERVER_CERT, tls_dir / SERVER_KEY
    reason = _reissue_reason(cert_file, key_file, ca_cert, wanted, now)
    if reason is not None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        leaf = _issue_leaf(key, ca_cert, ca_key, wanted, now)
        # The key first: a crash between the two renames leaves a mismatched pair,
        # which the next start detects and issues again.
        _write_atomic(key_file, _key_pem(key), 0o600)
        _write_atomic(cert_file, _cert_pem(leaf) + _cert_pem(ca_cert), 0o644)
        log.info(
            "issued server certificate {path} for {names} ({reason})",
            path=str(cert_file),
            names=", ".join(wanted),
            reason=reason,
        )
    else:
        leaf = _read_chain(cert_file)[0]
    return ServerCredentials(
        cert_file=cert_file,
        key_file=key_file,
        ca_file=tls_dir / CA_CERT,
        names=_dns_names(leaf),
        not_after=leaf.not_valid_after_utc,
    )


def _normalise(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise CertError("server names must be a list of names, not one string")
    out = tuple(dict.fromkeys(n.strip().rstrip(".").lower() for n in names))
    if not out or "" in out:
        raise CertError("the server certificate needs at least one non-empty DNS name")
    for n in out:
        if not n.isascii():
            raise CertError(f"server name {n!r} is not ASCII; give its IDNA (xn--) form")
    return out


def _ensure_ca(tls_dir: Path, now: datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert_file, key_file = tls_dir / CA_CERT, tls_dir / CA_KEY
    if not cert_file.exists() and not key_file.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        cert = _issue_ca(key, now)
        _write_atomic(key_file, _key_pem(key), 0o600)
        _write_atomic(cert_file, _cert_pem(cert), 0o644)
        log.info("generated test CA {path}: phones must trust it", path=str(cert_file))
        return cert, key
    # Never replace an existing CA silently: phones that trust it would stop connecting.
    cert = _read_chain(cert_file)[0]
    loaded = _read_key(key_file)
    if not isinstance(loaded, rsa.RSAPrivateKey) or not _same_public_key(cert, loaded):
        raise CertError(
            f"{key_file} does not belong to {cert_file}; restore the pair, or remove both "
            "to generate a new test CA (phones will then have to trust the new one)"
        )
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        raise CertError(
            f"the test CA {cert_file} expires on {cert.not_valid_after_utc:%Y-%m-%d}; remove "
            "ca.pem and ca.key to generate a new one (phones will have to trust it)"
        )
    return cert, loaded


def _reissue_reason(
    cert_file: Path,
    key_file: Path,
    ca_cert: x509.Certificate,
    names: tuple[str, ...],
    now: datetime,
) -> str | None:
    """Why the leaf must be issued again, or None when it can be reused."""
    if not cert_file.exists() or not key_file.exists():
        return "none yet"
    try:
        leaf = _read_chain(cert_file)[0]
        key = _read_key(key_file)
    except CertError as e:
        return f"unreadable: {e}"
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < RSA_BITS:
        return "key is not RSA 2048"
    if not _same_public_key(leaf, key):
        return "key does not match"
    if not _issued_by(leaf, ca_cert):
        return "not issued by the current CA"
    missing = set(names) - set(_dns_names(leaf))
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


def _read_chain(path: Path) -> list[x509.Certificate]:
    data = _read(path, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CertError(f"{path}: not a PEM certificate ({e})") from e
    if not chain:  # pragma: no cover - cryptography raises instead
        raise CertError(f"{path}: no certificate in the file")
    return chain


def _read_key(path: Path) -> PrivateKeyTypes:
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


def _same_public_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(
        cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)
    )


def _issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    ca_public = ca_cert.public_key()
    if cert.issuer != ca_cert.subject or not isinstance(ca_public, rsa.RSAPublicKey):
        return False
    if cert.signature_hash_algorithm is None:
        return False
    try:
        ca_public.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    except InvalidSignature:
        return False
    return True


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
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


# -- a certificate from an enterprise CA: a CSR now, the signed certificate later -----------
#
# `create_csr` writes a new key into the TLS folder (`pending.key`, 0600) and returns the
# CSR; `install_certificate` checks what the CA sent back against that key and the
# configured names, then writes `installed.pem` / `installed.key`. `existing_credentials`
# finds the certificate in use without creating anything: a configured pair first, then
# the installed pair, then the generated one.

PENDING_KEY = "pending.key"
INSTALLED_CERT = "installed.pem"
INSTALLED_KEY = "installed.key"


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


def describe_certificate(cert_file: Path) -> CertificateInfo:
    chain = _read_chain(cert_file)
    leaf = chain[0]
    return CertificateInfo(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        names=_dns_names(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        sha256=leaf.fingerprint(hashes.SHA256()).hex(":").upper(),
        chain_length=len(chain),
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


def create_csr(names: Sequence[str], key_file: Path, *, force: bool = False) -> bytes:
    """A new RSA 2048 key written to `key_file` (0600) and the PEM CSR for it, whose
    subject alternative names are `names` (`names[0]` is also the common name)."""
    wanted = _normalise(names)
    if key_file.exists() and not force:
        raise CertError(
            f"{key_file} exists: a CSR is pending already; install its certificate, or "
            "give --force to replace the key (the earlier CSR can then not be installed)"
        )
    if not key_file.parent.exists():
        key_file.parent.mkdir(mode=0o700, parents=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, wanted[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in wanted]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_atomic(key_file, _key_pem(key), 0o600)
    return csr.public_bytes(serialization.Encoding.PEM)


def install_certificate(
    tls_dir: Path,
    cert_file: Path,
    key_file: Path,
    names: Sequence[str],
    now: datetime,
    chain_file: Path | None = None,
) -> ServerCredentials:
    """Check a signed certificate and install it as `installed.pem` (the certificate, then
    its chain) and `installed.key` in `tls_dir`.

    It must belong to `key_file` (an RSA key of 2048 bits or more: the phones' TLS 1.0
    suites need RSA), carry every name of `names`, be valid at `now`, be meant for
    servers, and each certificate of the chain must have issued the one before it. The
    pending key is removed once both files are written.
    """
    chain = _read_chain(cert_file)
    if chain_file is not None:
        chain += _read_chain(chain_file)
    chain = [c for i, c in enumerate(chain) if i == 0 or c != chain[i - 1]]
    leaf, key = chain[0], _read_key(key_file)
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < RSA_BITS:
        raise CertError(f"{key_file}: the phones need an RSA key of {RSA_BITS} bits or more")
    if not _same_public_key(leaf, key):
        raise CertError(
            f"{cert_file} does not belong to the key {key_file}: was the CSR made with "
            "another key, or by another `certs csr`?"
        )
    missing = [n for n in _normalise(names) if n not in _dns_names(leaf)]
    if missing:
        raise CertError(f"{cert_file} lacks the name(s) {', '.join(missing)}")
    _check_server_use(leaf, cert_file)
    for i, cert in enumerate(chain):
        where = f"{chain_file or cert_file}: certificate {i + 1} ({cert.subject.rfc4514_string()})"
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            raise CertError(
                f"{where} is not valid now: from {cert.not_valid_before_utc:%Y-%m-%d} "
                f"to {cert.not_valid_after_utc:%Y-%m-%d}"
            )
        if i + 1 < len(chain) and not _directly_issued(cert, chain[i + 1]):
            raise CertError(
                f"{where} was not issued by the next one in the chain "
                f"({chain[i + 1].subject.rfc4514_string()}); give the chain in order"
            )
    if not tls_dir.exists():
        tls_dir.mkdir(mode=0o700, parents=True)
    installed_cert, installed_key = tls_dir / INSTALLED_CERT, tls_dir / INSTALLED_KEY
    # The key first: a crash before the certificate lands leaves a mismatched pair that
    # load_credentials refuses, and the pending key still there to install again.
    _write_atomic(installed_key, _key_pem(key), 0o600)
    _write_atomic(installed_cert, b"".join(_cert_pem(c) for c in chain), 0o644)
    if key_file == tls_dir / PENDING_KEY:
        key_file.unlink()
    log.info(
        "installed server certificate {path} for {names}, issued by {issuer}",
        path=str(installed_cert),
        names=", ".join(_dns_names(leaf)),
        issuer=leaf.issuer.rfc4514_string(),
        not_after=f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        event="cert.installed",
    )
    return load_credentials(installed_cert, installed_key)


def _check_server_use(leaf: x509.Certificate, cert_file: Path) -> None:
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise CertError(f"{cert_file}: the certificate is not for TLS servers (extended key use)")


def _directly_issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def certificate_problems(config: Config, names: tuple[str, ...], left: float) -> list[str]:
    """Why the certificate in use needs attention (empty: it does not)."""
    problems = []
    missing = [n for n in config.server_names() if n not in names]
    if missing:
        problems.append(f"lacks the configured name(s) {', '.join(missing)}")
    warn_days = config.syslog.cert_warn_days
    if left <= 0:
        problems.append("has expired")
    elif left < warn_days:
        problems.append(f"expires within {warn_days} days (syslog.cert_warn_days)")
    return problems
