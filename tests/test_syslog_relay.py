"""With the Ansible roles' defaults, the collector receives RFC 5424 with structured data.

The syslog role's rsyslog configuration and the appliance role's syslog settings are
rendered by Ansible from the roles' own defaults (only the collector's address and a free
relay port given); a real rsyslogd runs that configuration as the appliance's relay and
forwards to a second rsyslogd, the collector, which writes what arrives byte for byte.
A serving appliance with those settings goes through its typical paths: import, approve,
update checks, an auth failure and a lockout, start and stop. What the collector got
parses as RFC 5424 with the `ucupdates@<enterprise number>` structured data, and no line
of serve's standard error, of the commands or of syslog shows a Python None or a tuple.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from base64 import b64encode
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from deploy import playbook
from test_syslog import listening, parse

from appliance.catalogue.sample import sample_check
from appliance.testing import REPO, free_port, run_cli, serving

HOST = "127.0.0.1"
WAIT_SECONDS = 20.0
ENTERPRISE = 64700
APPROVED = "4.0.7577.4400"
ROLES = REPO / "roles"
# Python's reprs in a line of text: None, a tuple (empty or not), a list of strings (JSON,
# as `ucupdates events` prints before and after, has `null`, `[]` and `["...`).
PYTHON_REPR = re.compile(r"\bNone\b|\('|\(\"|\(\)|\['|, \)")

RENDER = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: The syslog role's rsyslog configuration
      ansible.builtin.template:
        src: {roles}/ucupdates_syslog/templates/forward.conf.j2
        dest: {out}/forward.conf
        mode: "0644"
    - name: The appliance role's syslog settings
      ansible.builtin.copy:
        content: "{{{{ {{'enabled': ucupdates_appliance_syslog_enabled,
                       'target': ucupdates_appliance_syslog_target}} | to_json }}}}"
        dest: {out}/appliance.json
        mode: "0644"
"""


def render_roles(out: Path, collector_port: int, relay_port: int) -> dict[str, object]:
    """Ansible renders the roles' files with their defaults and the given collector."""
    book = out / "render.yml"
    book.write_text(RENDER.format(roles=ROLES, out=out))
    extra = {
        "ucupdates_syslog_target": HOST,
        "ucupdates_syslog_port": collector_port,
        "ucupdates_syslog_relay_port": relay_port,
        "ansible_python_interpreter": sys.executable,
    }
    command = [
        str(playbook.VENV_BIN / "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"@{ROLES / 'ucupdates_syslog' / 'defaults' / 'main.yml'}",
        "-e",
        f"@{ROLES / 'ucupdates_syslog' / 'vars' / 'main.yml'}",
        "-e",
        f"@{ROLES / 'ucupdates_appliance' / 'defaults' / 'main.yml'}",
        "-e",
        json.dumps(extra),
        str(book),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        env=playbook.ansible_env(out),
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    settings: dict[str, object] = json.loads((out / "appliance.json").read_text())
    return settings


@contextmanager
def rsyslogd(root: Path, conf: str, ready: list[tuple[int, str]]) -> Iterator[None]:
    """rsyslogd -n with `conf` until the block ends; waits for the (port, /proc file)s."""
    root.mkdir()
    (root / "work").mkdir()
    path = root / "rsyslog.conf"
    path.write_text(f'global(workDirectory="{root / "work"}" maxMessageSize="8k")\n' + conf)
    check = subprocess.run(["rsyslogd", "-N1", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen(
        ["rsyslogd", "-n", "-f", str(path), "-i", str(root / "rsyslogd.pid")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not all(listening(port, proc_file) for port, proc_file in ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.stdout.read() if proc.stdout else b""
                pytest.fail(f"rsyslogd did not start: {output.decode(errors='replace')}")
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(path: Path, wanted: dict[str, int]) -> list[bytes]:
    """The messages in `path` once each MSGID of `wanted` is among them as often."""
    deadline = time.monotonic() + WAIT_SECONDS
    messages: list[bytes] = []
    while time.monotonic() < deadline:
        raw = path.read_bytes() if path.exists() else b""
        messages = [m for m in raw.split(b"\n") if m.strip()]
        got = Counter(m.split(b" ")[5].decode() for m in messages if m.count(b" ") >= 6)
        if all(got[msgid] >= count for msgid, count in wanted.items()):
            return messages
        time.sleep(0.1)
    raise AssertionError(f"the collector got only {messages}")


def post(port: int, path: str, body: bytes, tls: bool, auth: str | None = None) -> int:
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            HOST, port, context=context, timeout=30
        )
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
    headers = {"Content-Type": "text/xml"} | ({"Authorization": auth} if auth else {})
    try:
        conn.request("POST", path, body=body, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_live_the_collector_gets_rfc5424_with_structured_data_from_the_role_defaults(
    tmp_path: Path,
) -> None:
    if shutil.which("rsyslogd") is None:
        pytest.skip("needs rsyslogd (Debian package rsyslog)")
    collector_port, relay_port = free_port(socket.SOCK_DGRAM), free_port()
    appliance_syslog = render_roles(tmp_path, collector_port, relay_port)
    assert appliance_syslog == {"enabled": True, "target": f"tcp://{HOST}:{relay_port}"}
    forward = (tmp_path / "forward.conf").read_text()
    assert "RSYSLOG_SyslogProtocol23Format" in forward

    received = tmp_path / "received"
    collector = (
        'module(load="imudp")\n'
        f'input(type="imudp" address="{HOST}" port="{collector_port}")\n'
        'template(name="raw" type="string" string="%rawmsg%\\n")\n'
        f'*.* action(type="omfile" file="{received}" template="raw")\n'
    )
    data = tmp_path / "data"
    package = tmp_path / "UCUpdates.cab"
    ports = {name: free_port() for name in ("internal_https", "external_https", "admin")}
    ports["internal_http"] = free_port()
    ports["dns"] = free_port(socket.SOCK_DGRAM)
    config = tmp_path / "ucupdates.toml"
    config.write_text(
        f"data_dir = {json.dumps(str(data))}\n[listeners]\n"
        + "".join(f'{name} = "{HOST}:{port}"\n' for name, port in ports.items())
        + "[syslog]\n"
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in appliance_syslog.items())
        + f'hostname = "appliance.test"\nenterprise_number = {ENTERPRISE}\n'
        + "[auth]\nmax_failures = 2\n"
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_cli(data, "--config", str(config), *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    outputs: list[str] = []
    with (
        rsyslogd(tmp_path / "collector", collector, [(collector_port, "/proc/net/udp")]),
        rsyslogd(tmp_path / "relay", forward, [(relay_port, "/proc/net/tcp")]),
    ):
        for args in (
            ("make-sample-package", str(package), "--image-size", "4096", "--version", APPROVED),
            ("import", str(package)),
            ("approve", "--all-pending"),
            ("test-device", "add", "bench phone", "--mac", "00-04-F2-00-00-07"),
            ("rules",),
            ("events",),
        ):
            done = cli(*args)
            outputs += [done.stdout, done.stderr]
        with serving(config, tmp_path / "serve.log") as served:
            check = sample_check()
            internal = served.ports["internal-http"]
            # one phone offered the update, one running it already (no version offered)
            for body in (check, sample_check(APPROVED, mac="00-04-F2-00-00-02")):
                assert post(internal, "/RequestHandler/ucdevice.upx", body, False) == 200
            wrong = "Basic " + b64encode(b"CONTOSO\\nobody:wrong").decode()
            statuses = [
                post(
                    served.ports["external-https"],
                    "/RequestHandlerExt/ucdevice.upx",
                    check,
                    True,
                    wrong,
                )
                for _ in range(3)  # the second failure locks the name out
            ]
            assert statuses[0] == 401 and set(statuses) <= {401, 429}, statuses
            wanted = {"update.check": 2, "auth.failure": 2, "auth.lockout": 1, "approve": 8}
            messages = wait_for(received, wanted | {"test-device.add": 1})
        outputs.append((tmp_path / "serve.log").read_text())

    parsed = [parse(m) for m in messages]  # each one RFC 5424, or parse fails
    assert {p.sd_id for p in parsed if p.sd_id} == {f"ucupdates@{ENTERPRISE}"}
    by_msgid = {p.msgid: p for p in parsed}
    reasons = {p.params["reason"]: p for p in parsed if p.msgid == "update.check"}
    assert set(reasons) == {"approved", "up-to-date"}
    assert "version" not in reasons["up-to-date"].params  # nothing offered: left out
    assert reasons["up-to-date"].msg.endswith(f"reported {APPROVED}: up-to-date -")
    check_message = reasons["approved"]
    assert (check_message.hostname, check_message.app) == ("appliance.test", "ucupdates")
    assert check_message.params["mac"] == "00-04-F2-00-00-01"
    assert "serial" in check_message.params and check_message.params["zone"] == "internal"
    assert by_msgid["auth.lockout"].severity == 4

    lines = [line for text in outputs for line in text.splitlines()]
    lines += [m.decode("utf-8", "replace") for m in messages]
    shown = [line for line in lines if PYTHON_REPR.search(line)]
    assert shown == [], "\n".join(shown)
    assert not [line for line in lines if "Unable to format event" in line or "Traceback" in line]
