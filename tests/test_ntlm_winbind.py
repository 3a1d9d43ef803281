"""NTLM against Active Directory: a real Samba AD domain controller, provisioned by the test
in a temporary folder and started in its own network namespace (its LDAP, Kerberos and SMB
ports never touch the host's), checked through winbind's `ntlm_auth` helper as the
appliance runs it (`auth.ntlm_backend = "winbind"`).

The helper here is the DC's own winbindd (a DC is joined to its domain by being its DC);
a member server would run `net ads join` and winbindd, and `ntlm_auth` would then ask it
in the same way. Debian's libwbclient finds winbindd only at /run/samba/winbindd (its
socket folder is compiled in; WINBINDD_SOCKET_DIR is not read), so the test needs that
path free: it skips, saying so, when another winbindd answers there or it is not root.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import spnego

from appliance.catalogue.sample import sample_check
from appliance.config import AuthSettings
from appliance.phones import Authenticator, WinbindVerifier
from appliance.phones.auth import AuthResult
from appliance.phones.ntlm import NtlmSession
from appliance.testing import MemoryDirectory, SecondsClock, fired, inline, run_cli, serving

REALM, DOMAIN = "NTLMTEST.EXAMPLE", "NTLMTEST"
USER, PASSWORD = "dave", "Dave-Pass-2026"
ADMIN_PASSWORD = "Adm1n-Pass-2026"
SOCKET_DIR = Path("/run/samba/winbindd")
TOOLS = ("samba", "samba-tool", "ntlm_auth", "wbinfo", "unshare", "ip", "curl")
STARTUP_SECONDS = 60.0
FQDN = "ucupdates-r2.example.com"


def _skip_reason() -> str | None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (Debian packages samba, winbind, util-linux, iproute2)"
    if os.geteuid() != 0:
        return "samba needs root to start a domain controller in a network namespace"
    ping = subprocess.run(["wbinfo", "-p"], capture_output=True, timeout=10, check=False)
    if ping.returncode == 0:
        return f"another winbindd answers at {SOCKET_DIR}, the one path libwbclient uses"
    return None


@dataclass
class DomainController:
    base: Path
    config: Path  # its smb.conf, which ntlm_auth reads too

    @property
    def helper(self) -> list[str]:
        return ["ntlm_auth", f"--configfile={self.config}"]


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DomainController]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("dc")
    subprocess.run(
        [
            "samba-tool",
            "domain",
            "provision",
            f"--realm={REALM}",
            f"--domain={DOMAIN}",
            "--server-role=dc",
            "--dns-backend=NONE",
            f"--adminpass={ADMIN_PASSWORD}",
            f"--targetdir={base}",
            "--host-name=dc1",
            "--option=interfaces=lo",
            "--option=bind interfaces only=yes",
            "--option=ntlm auth=ntlmv2-only",
            f"--option=log file={base}/log.%m",
            f"--option=pid directory={base}/pid",
            "--option=server services=-dns -nbt -wrepl -ntp_signd -kcc -dnsupdate -drepl",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    config = base / "etc" / "smb.conf"
    subprocess.run(
        ["samba-tool", "user", "add", USER, PASSWORD, "-s", str(config)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    SOCKET_DIR.parent.mkdir(parents=True, exist_ok=True)
    log = base / "samba.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                "unshare",
                "--net",
                "sh",
                "-c",
                f'ip link set lo up && exec samba -s "{config}" -i -M single --debug-stdout -d1',
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while subprocess.run(["wbinfo", "-p"], capture_output=True, check=False).returncode:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"samba did not start: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield DomainController(base, config)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def ntlm(token: bytes) -> bytes:
    return b"NTLM " + base64.b64encode(token)


def handshake(auth: Authenticator, user: str, password: str, source: str) -> AuthResult:
    session = NtlmSession()
    client = spnego.client(user, password, protocol="ntlm")
    challenged = fired(auth.authenticate(ntlm(client.step() or b""), source, session))
    assert challenged.challenge is not None
    return fired(auth.authenticate(ntlm(client.step(challenged.challenge) or b""), source, session))


@pytest.fixture
def auth(dc: DomainController) -> Authenticator:
    settings = AuthSettings(max_failures=2, ntlm_domain=DOMAIN)
    return Authenticator(
        MemoryDirectory(),
        settings,
        SecondsClock(),
        run_blocking=inline,
        ntlm=WinbindVerifier(dc.helper, 20.0),
    )


def test_an_ad_user_signs_in_with_ntlmv2_through_winbind(auth: Authenticator) -> None:
    assert handshake(auth, f"{DOMAIN}\\{USER}", PASSWORD, "192.0.2.1").ok
    assert handshake(auth, f"{USER}@{REALM.lower()}", PASSWORD, "192.0.2.1").ok


def test_a_wrong_ad_password_is_refused_and_locks_out(auth: Authenticator) -> None:
    statuses = [
        handshake(auth, f"{DOMAIN}\\{USER}", "wrong", f"192.0.2.{i}").status for i in range(3)
    ]
    assert statuses == [401, 401, 429]
    assert handshake(auth, f"{DOMAIN}\\{USER}", PASSWORD, "192.0.2.9").status == 429


def test_ntlmv1_is_refused_before_the_domain_is_asked(
    auth: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LM_COMPAT_LEVEL", "1")
    refused = handshake(auth, f"{DOMAIN}\\{USER}", PASSWORD, "192.0.2.20")
    assert (refused.status, refused.reason) == (401, "ntlmv1 not allowed")


def test_curl_ntlm_updates_an_external_phone_as_an_ad_user(
    dc: DomainController, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    package = tmp_path / "UCUpdates.cab"
    for args in (
        ("make-sample-package", str(package), "--version", "4.0.7577.4387"),
        ("import", str(package)),
        ("approve", "--all-pending"),
    ):
        done = run_cli(data, *args)
        assert done.returncode == 0, done.stderr
    config = tmp_path / "ucupdates.toml"
    config.write_text(
        f"data_dir = {json.dumps(str(data))}\n"
        "[listeners]\n"
        'dns = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\ninternal_https = "127.0.0.1:0"\n'
        'external_https = "127.0.0.1:0"\ninternal_http = ""\n'
        "[auth]\n"
        'ntlm_backend = "winbind"\n'
        f"ntlm_domain = {json.dumps(DOMAIN)}\n"
        f"ntlm_helper = {json.dumps(dc.helper)}\n"
    )
    body = tmp_path / "check.xml"
    body.write_bytes(sample_check("4.0.7577.4366", "00-04-F2-00-00-09"))
    with serving(config, tmp_path / "serve.log") as running:
        port = running.ports["external-https"]

        def curl(user: str, password: str) -> tuple[str, str]:
            done = subprocess.run(
                [
                    "curl", "-sS", "-v", "--max-time", "20", "--ntlm", "-u", f"{user}:{password}",
                    "--cacert", str(data / "tls" / "ca.pem"),
                    "--resolve", f"{FQDN}:{port}:127.0.0.1",
                    "-H", "Content-Type: text/xml", "--data-binary", f"@{body}",
                    "-w", "\n%{http_code}",
                    f"https://{FQDN}:{port}/RequestHandlerExt/ucdevice.upx",
                ],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            return done.stdout.rpartition("\n")[2], done.stdout + done.stderr

        status, trace = curl(f"{DOMAIN}\\{USER}", PASSWORD)
        assert status == "200", trace
        assert "<Response" in trace and trace.count("Connected to") == 1
        status, trace = curl(f"{DOMAIN}\\{USER}", "wrong")
        assert status == "401", trace
