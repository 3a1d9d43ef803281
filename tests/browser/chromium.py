"""Headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium.

The browser trusts exactly the test server's key (`--ignore-certificate-errors-spki-list`
with the SHA-256 of its public key, which needs a `--user-data-dir`) and resolves the
appliance's FQDN to 127.0.0.1, so pages load at `https://ucupdates-r2.example.com:PORT/`
as an admin would see them: a secure origin, where `Secure`, `__Host-` and
`SameSite=Strict` cookies behave as in production. Nothing reaches the network.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def available() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is missing (Debian packages chromium and chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


def spki_sha256(cert_file: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def start(cert_file: Path, fqdn: str, profile_dir: Path, downloads: Path) -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--window-size=1360,1000",
        f"--user-data-dir={profile_dir}",
        f"--host-resolver-rules=MAP {fqdn} 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={spki_sha256(cert_file)}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    service = Service(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)
