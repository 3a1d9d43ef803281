"""TLS for the listeners: one OpenSSL context per (certificate, profile), built once.

`modern` is TLS 1.2 and 1.3 with the Mozilla "intermediate" ECDHE AEAD suites. `lpe-legacy`
is for the phone-facing listeners: Lync Phone Edition speaks TLS 1.0 only, so the same
listener also admits TLS 1.0/1.1 with the CBC-SHA suites, at OpenSSL security level 0
(needed for the SHA-1 based TLS 1.0 handshake), while TLS 1.2/1.3 clients still get the
modern suites, the server's order deciding. Twisted's `CertificateOptions` cannot express
this (it drops `@SECLEVEL=0`), so the context is built here directly.

Both profiles refuse SSLv3, compression and client-initiated renegotiation, and need no
SNI: the one certificate carries every name (docs/protocol.md §10). With a SHA-1 signed
test certificate (`tls.generated_signature`, for old Tanjay-family phones), `modern`
listeners present the SHA-256 leaf of the same CA (`ServerCredentials.modern_pair`):
browsers refuse SHA-1, and the phones never reach those listeners.
"""

from __future__ import annotations

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL
from twisted.internet.ssl import ContextFactory

from appliance.config import TlsProfile
from appliance.tls.certificates import CertError, ServerCredentials

# Mozilla "intermediate" (server side, TLS 1.2), without the DHE suites: no client we
# serve needs finite-field DH and it would need its own parameters file.
MODERN_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
# What TLS 1.0 clients such as the phones can use, after the modern suites.
LEGACY_CIPHERS = ":".join(
    [
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-RSA-AES256-SHA",
        "AES128-SHA",
        "AES256-SHA",
    ]
)
# Key exchange groups in preference order; the first list needs OpenSSL 3.5 or later.
GROUPS = (b"X25519MLKEM768:X25519:P-256:P-384", b"X25519:P-256:P-384")

_OPTIONS = (
    SSL.OP_NO_SSLv2
    | SSL.OP_NO_SSLv3
    | SSL.OP_NO_COMPRESSION
    | SSL.OP_CIPHER_SERVER_PREFERENCE
    | SSL.OP_NO_RENEGOTIATION
    | SSL.OP_SINGLE_ECDH_USE
    | SSL.OP_NO_TICKET  # resumption through the server's session cache instead
)


class ProfileContextFactory(ContextFactory):
    """A server context factory (Twisted's `IOpenSSLContextFactory`) for one profile. The
    context is built on construction, so a bad key fails at start-up, and every connection
    shares it (and its session cache)."""

    isClient = 0

    def __init__(self, creds: ServerCredentials, profile: TlsProfile) -> None:
        self.creds = creds
        self.profile = profile
        self._context = _build_context(creds, profile)

    def getContext(self) -> SSL.Context:
        return self._context


def context_factory(creds: ServerCredentials, profile: TlsProfile) -> ProfileContextFactory:
    """What `reactor.listenSSL` or `SSL4ServerEndpoint` takes for a listener of `profile`."""
    return ProfileContextFactory(creds, profile)


def cipher_list(profile: TlsProfile) -> str:
    """The OpenSSL cipher string (TLS 1.2 and below) of `profile`."""
    if profile is TlsProfile.LPE_LEGACY:
        return f"{MODERN_CIPHERS}:{LEGACY_CIPHERS}:@SECLEVEL=0"
    return MODERN_CIPHERS


def _build_context(creds: ServerCredentials, profile: TlsProfile) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_options(_OPTIONS)
    # An idle connection gives its read and write buffers back (about 34 KiB each), as
    # nginx has OpenSSL do: a fleet holds many idle keep-alive and slow download connections.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    legacy = profile is TlsProfile.LPE_LEGACY
    ctx.set_min_proto_version(SSL.TLS1_VERSION if legacy else SSL.TLS1_2_VERSION)
    ctx.set_cipher_list(cipher_list(profile).encode("ascii"))
    _set_groups(ctx)
    cert_file, key_file = creds.cert_file, creds.key_file
    if not legacy and creds.modern_pair is not None:  # a SHA-256 leaf beside a SHA-1 one
        cert_file, key_file = creds.modern_pair
    try:
        ctx.use_certificate_chain_file(str(cert_file))
        ctx.use_privatekey_file(str(key_file))
        ctx.check_privatekey()
    except SSL.Error as e:
        raise CertError(f"cannot use {cert_file} with {key_file} for TLS: {_reason(e)}") from e
    # Names the sessions this context caches: required for resumption once client
    # certificates are requested, and keeps sessions from being resumed elsewhere.
    ctx.set_session_id(f"ucupdates-{profile.value}".encode("ascii"))
    return ctx


def _set_groups(ctx: SSL.Context) -> None:
    """Prefer X25519 (and its post-quantum hybrid where OpenSSL has it), then P-256, which
    TLS 1.0 clients that do ECDHE at all support, then P-384; refuse every other group.

    pyOpenSSL's public API sets one curve only (`set_tmp_ecdh`, which cannot name X25519),
    so the list goes to OpenSSL through cryptography's documented binding (`Binding.lib`,
    the one pyOpenSSL is built on). The context's OpenSSL handle is pyOpenSSL's
    `Context._context`: no public accessor exists. A pyOpenSSL without it fails here, at
    start-up, rather than serving other groups unnoticed.
    """
    lib = Binding().lib
    for groups in GROUPS:
        if lib.SSL_CTX_set1_curves_list(ctx._context, groups) == 1:
            break
    lib.ERR_clear_error()  # a refused list leaves errors queued


def _reason(e: SSL.Error) -> str:
    try:
        return "; ".join(str(part[2]) for part in e.args[0]) or str(e)
    except (IndexError, TypeError):
        return str(e)
