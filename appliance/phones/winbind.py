"""NTLM responses of Active Directory users, checked by Samba's winbind.

`ntlm_auth --helper-protocol=ntlm-server-1` is the helper Squid and FreeRADIUS use: it
takes the user, the domain, the server challenge and the client's responses, asks the
domain controller through winbindd (the appliance joined to the domain), and answers
`Authenticated: Yes` or `No`. The appliance never sees a password or a hash. One helper
process per check keeps nothing between checks (the checks run on the authenticator's
thread pool, off the reactor); each is bounded by `auth.ntlm_helper_timeout`.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Sequence

from twisted.logger import Logger

from appliance.phones.ntlm import NtlmResponse

log = Logger()

HELPER_PROTOCOL = "--helper-protocol=ntlm-server-1"


def helper_request(response: NtlmResponse) -> bytes:
    """The lines ntlm_auth's ntlm-server-1 protocol reads for one check (`::` is base64)."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode("utf-8")).decode("ascii")

    lines = [
        f"Username:: {b64(response.user)}",
        f"NT-Domain:: {b64(response.domain)}",
        f"LANMAN-Challenge: {response.server_challenge.hex()}",
        f"NT-Response: {response.nt_response.hex()}",
    ]
    if response.lm_response and not response.v2:
        lines.append(f"LANMAN-Response: {response.lm_response.hex()}")
    lines.append(".")
    return ("\n".join(lines) + "\n").encode("ascii")


def helper_answer(output: bytes) -> tuple[bool, str]:
    """(authenticated, the helper's error text) from its answer lines."""
    authenticated = False
    error = ""
    for raw in output.decode("utf-8", "replace").splitlines():
        key, _, value = raw.partition(":")
        value = value.lstrip(":").strip()
        if key == "Authenticated":
            authenticated = value == "Yes"
        elif key == "Authentication-Error":
            error = value
    return authenticated, error


class WinbindVerifier:
    """Checks NTLM responses with `command` (e.g. `ntlm_auth` or `ntlm_auth -s smb.conf`)."""

    def __init__(self, command: Sequence[str], timeout: float) -> None:
        self._command = [*command, HELPER_PROTOCOL]
        self._timeout = timeout

    def verify_ntlm(self, response: NtlmResponse) -> bool:
        if not response.user or not (response.nt_response or response.lm_response):
            return False
        try:
            done = subprocess.run(
                self._command,
                input=helper_request(response),
                capture_output=True,
                timeout=self._timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warn("ntlm_auth helper failed: {error}", error=f"{type(e).__name__}: {e}")
            raise ConnectionError(f"ntlm_auth helper failed: {e}") from e
        ok, error = helper_answer(done.stdout)
        if not ok:
            log.info(
                "winbind refused NTLM for {domain}\\{user}: {error}",
                domain=response.domain[:64],
                user=response.user[:64],
                error=error or done.stderr.decode("utf-8", "replace").strip()[-200:],
            )
        return ok
