"""A certificate from an enterprise CA: a CSR now, the signed certificate later.

`create_csr` writes a new key into the TLS folder (`pending.key`, 0600) and returns the
CSR; `install_certificate` checks what the CA sent back against that key and the
configured names, then writes `installed.pem` / `installed.key`, which
`appliance.tls.certificates.existing_credentials` then prefers to the generated pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.logger import Logger

from appliance.tls.certificates import (
    INSTALLED_CERT,
    INSTALLED_KEY,
    PENDING_KEY,
    RSA_BITS,
    CertError,
    ServerCredentials,
    cert_pem,
    dns_names,
    issued_by,
    key_pem,
    load_credentials,
    normalise_names,
    read_chain,
    read_key,
    same_public_key,
    write_atomic,
)
from appliance.tls.review import explain_missing, missing_names

log = Logger()


def create_csr(names: Sequence[str], key_file: Path, *, force: bool = False) -> bytes:
    """A new RSA 2048 key written to `key_file` (0600) and the PEM CSR for it, whose
    subject alternative names are `names` (`names[0]` is also the common name)."""
    wanted = normalise_names(names)
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
    write_atomic(key_file, key_pem(key), 0o600)
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
    suites need RSA), carry every name of `names` as it is (a wildcard does not do: LPE
    phones refuse wildcard certificates, docs/protocol.md §3), be valid at `now`, be meant for
    servers, and each certificate of the chain must have issued the one before it. The
    pending key is removed once both files are written.
    """
    chain = read_chain(cert_file)
    if chain_file is not None:
        chain += read_chain(chain_file)
    chain = [c for i, c in enumerate(chain) if i == 0 or c != chain[i - 1]]
    leaf, key = chain[0], read_key(key_file)
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < RSA_BITS:
        raise CertError(f"{key_file}: the phones need an RSA key of {RSA_BITS} bits or more")
    if not same_public_key(leaf, key):
        raise CertError(
            f"{cert_file} does not belong to the key {key_file}: was the CSR made with "
            "another key, or by another `certs csr`?"
        )
    missing = missing_names(normalise_names(names), dns_names(leaf))
    if missing:
        raise CertError(f"{cert_file} {explain_missing(missing)}")
    _check_server_use(leaf, cert_file)
    for i, cert in enumerate(chain):
        where = f"{chain_file or cert_file}: certificate {i + 1} ({cert.subject.rfc4514_string()})"
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            raise CertError(
                f"{where} is not valid now: from {cert.not_valid_before_utc:%Y-%m-%d} "
                f"to {cert.not_valid_after_utc:%Y-%m-%d}"
            )
        if i + 1 < len(chain) and not issued_by(cert, chain[i + 1]):
            raise CertError(
                f"{where} was not issued by the next one in the chain "
                f"({chain[i + 1].subject.rfc4514_string()}); give the chain in order"
            )
    if not tls_dir.exists():
        tls_dir.mkdir(mode=0o700, parents=True)
    installed_cert, installed_key = tls_dir / INSTALLED_CERT, tls_dir / INSTALLED_KEY
    # The key first: a crash before the certificate lands leaves a mismatched pair that
    # load_credentials refuses, and the pending key still there to install again.
    write_atomic(installed_key, key_pem(key), 0o600)
    write_atomic(installed_cert, b"".join(cert_pem(c) for c in chain), 0o644)
    if key_file == tls_dir / PENDING_KEY:
        key_file.unlink()
    log.info(
        "installed server certificate {path} for {names}, issued by {issuer}",
        path=str(installed_cert),
        names=", ".join(dns_names(leaf)),
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
