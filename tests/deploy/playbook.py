"""ansible-playbook runs against the chroot, and what their PLAY RECAP says."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
SITE = REPO / "ansible" / "site.yml"


def ansible_env(tmp: Path) -> dict[str, str]:
    """This machine's environment, with the project's ansible first on PATH and its
    ansible.cfg; no colour, so the output can be read."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible" / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_LOCAL_TEMP"] = str(tmp / "ansible-local")
    env["ANSIBLE_RETRY_FILES_ENABLED"] = "0"
    return env


def write_inventory(path: Path, host: str, root: Path) -> None:
    """One host in group ucupdates, reached with the chroot connection, as root."""
    path.write_text(
        "ucupdates:\n"
        "  hosts:\n"
        f"    {host}:\n"
        "      ansible_connection: community.general.chroot\n"
        f"      ansible_host: {root}\n"
        "      ansible_python_interpreter: /usr/bin/python3\n"
        "      ansible_become: false\n"
    )


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        """host -> {ok, changed, unreachable, failed, skipped, rescued, ignored}"""
        found: dict[str, dict[str, int]] = {}
        tail = self.output.rsplit("PLAY RECAP", 1)[-1] if "PLAY RECAP" in self.output else ""
        for line in tail.splitlines():
            m = re.match(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$", line.strip())
            if m:
                found[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        return found

    def changed_tasks(self) -> list[str]:
        """The task headers followed by a `changed:` line (to explain a failed idempotence)."""
        names, current = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line
            elif line.startswith("changed:") and current not in names:
                names.append(current)
        return names


def run(
    args: list[str], env: dict[str, str], timeout: float, prefix: list[str] | None = None
) -> Run:
    command = [*(prefix or []), str(VENV_BIN / "ansible-playbook"), *args]
    started = time.monotonic()
    log = Path(env["ANSIBLE_LOCAL_TEMP"]).parent / "ansible-playbook.log"  # every run, kept
    with log.open("a") as f:
        f.write(f"\n\n===== {' '.join(command)}\n")
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        out += f"\n(timed out after {timeout}s)"
        with log.open("a") as f:
            f.write(out)
        return Run(-1, out, time.monotonic() - started)
    with log.open("a") as f:
        f.write(done.stdout + done.stderr)
    return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - started)
