"""TLS: the server certificate (configured, installed, or a generated test CA) and contexts."""

from appliance.tls.certificates import (
    INSTALLED_CERT,
    INSTALLED_KEY,
    PENDING_KEY,
    CertError,
    ServerCredentials,
    certificate_problems,
    certificate_warnings,
    check_expiry,
    days_left,
    describe_certificate,
    existing_credentials,
    installed_pair,
    load_credentials,
)
from appliance.tls.contexts import context_factory
from appliance.tls.generated import ensure_test_certificates
from appliance.tls.install import create_csr, install_certificate

__all__ = [
    "CertError",
    "INSTALLED_CERT",
    "INSTALLED_KEY",
    "PENDING_KEY",
    "ServerCredentials",
    "certificate_problems",
    "certificate_warnings",
    "check_expiry",
    "context_factory",
    "create_csr",
    "days_left",
    "describe_certificate",
    "ensure_test_certificates",
    "existing_credentials",
    "install_certificate",
    "installed_pair",
    "load_credentials",
]
