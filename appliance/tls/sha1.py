"""SHA-1 signatures for the generated test CA, for Tanjay-family phones (docs/protocol.md §3).

cryptography (50.0, installed here) refuses SHA-1 in its certificate builder, but signs and
verifies raw RSA PKCS#1 v1.5 with it. `resign_sha1` takes a certificate the builder made
(signed sha256WithRSAEncryption), swaps the algorithm identifier inside its TBS part for
sha1WithRSAEncryption (same length, so no DER length changes), signs that TBS with SHA-1
and assembles the DER certificate: everything but the signature is the builder's.

`openssl verify -CAfile ca.pem server.pem` accepts the result; clients at OpenSSL 3's
default security level (1 or more) refuse a SHA-1 signature ("CA signature digest
algorithm too weak") unless told `@SECLEVEL=0` or `-auth_level 0`.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# AlgorithmIdentifier DER: SEQUENCE { OID 1.2.840.113549.1.1.11 / .5, NULL }
SHA256_WITH_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
SHA1_WITH_RSA = bytes.fromhex("300d06092a864886f70d0101050500")


class SignatureError(ValueError):
    """The certificate is not one this module can re-sign (a programming error)."""


def resign_sha1(cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey) -> x509.Certificate:
    """`cert`, issued by the owner of `issuer_key` and signed sha256WithRSAEncryption, signed
    again with sha1WithRSAEncryption: the same TBS fields but the algorithm."""
    tbs = cert.tbs_certificate_bytes
    offset = _content_start(tbs, 0)  # inside TBSCertificate ::= SEQUENCE {
    if tbs[offset] == 0xA0:  # version [0] EXPLICIT
        offset = _next(tbs, offset)
    offset = _next(tbs, offset)  # serialNumber INTEGER; then signature AlgorithmIdentifier
    if tbs[offset : offset + len(SHA256_WITH_RSA)] != SHA256_WITH_RSA:
        raise SignatureError("the certificate is not signed sha256WithRSAEncryption")
    tbs = tbs[:offset] + SHA1_WITH_RSA + tbs[offset + len(SHA256_WITH_RSA) :]
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    bit_string = b"\x03" + _length(len(signature) + 1) + b"\x00" + signature
    body = tbs + SHA1_WITH_RSA + bit_string
    return x509.load_der_x509_certificate(b"\x30" + _length(len(body)) + body)


def _length(n: int) -> bytes:
    """A DER length."""
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _content_start(der: bytes, offset: int) -> int:
    """Where the content of the element at `offset` starts (one-byte tags only)."""
    first = der[offset + 1]
    return offset + 2 + (first & 0x7F if first & 0x80 else 0)


def _next(der: bytes, offset: int) -> int:
    """The offset just past the element at `offset`."""
    first = der[offset + 1]
    if not first & 0x80:
        return offset + 2 + first
    count = first & 0x7F
    return offset + 2 + count + int.from_bytes(der[offset + 2 : offset + 2 + count], "big")
