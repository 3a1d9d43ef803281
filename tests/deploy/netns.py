"""A network namespace with a veth pair, and the deployed service started inside it.

The service runs as its unit says it would under systemd, as far as a chroot allows: the
unit's ExecStart, Environment, WorkingDirectory, User and Group, with CAP_NET_BIND_SERVICE
as the only capability (ambient, inheritable and bounding set) and no_new_privs, through
setpriv, inside the deployed root (chroot) and the namespace (ip netns exec).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CAP_NET_BIND_SERVICE = 10


@dataclass(frozen=True)
class Namespace:
    name: str
    host_address: str  # our end of the veth pair
    address: str  # the namespace's end: where the appliance listens


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    """A namespace `ucupdates-test-<pid>` reached over 10.201.<n>.0/30; always removed,
    with any process still inside it."""
    pid = os.getpid()
    name = f"ucupdates-test-{pid}"
    host_if, ns_if = f"uct{pid % 100000}h", f"uct{pid % 100000}n"
    subnet = f"10.201.{20 + pid % 200}"
    ns = Namespace(name, f"{subnet}.1", f"{subnet}.2")
    try:
        _ip("netns", "add", name)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", name)
        _ip("addr", "add", f"{ns.host_address}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"{ns.address}/30", "dev", ns_if)
        _ip("-n", name, "link", "set", ns_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield ns
    finally:
        pids = _ip("netns", "pids", name, check=False).stdout.split()
        for leftover in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(leftover), signal.SIGKILL)
        _ip("netns", "del", name, check=False)
        _ip("link", "del", host_if, check=False)  # gone with the namespace, normally


def namespace_exists(name: str) -> bool:
    return name in _ip("netns", "list", check=False).stdout.split()


@dataclass(frozen=True)
class Unit:
    """The parts of a systemd unit the test reproduces."""

    exec_start: list[str]
    user: str
    group: str
    working_directory: str = "/"
    environment: dict[str, str] = field(default_factory=dict)
    no_new_privileges: bool = False
    ambient_capabilities: tuple[str, ...] = ()
    bounding_set: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: Path) -> Unit:
        values: dict[str, list[str]] = {}
        section = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section == "Service" and "=" in line:
                key, _, value = line.partition("=")
                values.setdefault(key.strip(), []).append(value.strip())

        def last(key: str, default: str = "") -> str:
            return values.get(key, [default])[-1]

        environment: dict[str, str] = {}
        for assignment in values.get("Environment", []):
            for word in shlex.split(assignment):
                k, _, v = word.partition("=")
                environment[k] = v
        caps = tuple(c for v in values.get("AmbientCapabilities", []) for c in v.split())
        bounding = tuple(c for v in values.get("CapabilityBoundingSet", []) for c in v.split())
        user = last("User", "root")
        return cls(
            exec_start=shlex.split(last("ExecStart").lstrip("@-:+!")),
            user=user,
            group=last("Group", user),
            working_directory=last("WorkingDirectory", "/"),
            environment=environment,
            no_new_privileges=last("NoNewPrivileges").lower() in ("yes", "true", "1", "on"),
            ambient_capabilities=caps,
            bounding_set=bounding,
        )


def _setpriv_caps(names: tuple[str, ...]) -> str:
    return ",".join("+" + n.lower().removeprefix("cap_") for n in names)


def service_command(root: Path, ns: Namespace, unit: Unit) -> list[str]:
    """ip netns exec NS chroot ROOT env -i ENV -C DIR setpriv ... -- EXECSTART"""
    setpriv = [
        "setpriv",
        f"--reuid={unit.user}",
        f"--regid={unit.group}",
        "--init-groups",
    ]
    if unit.ambient_capabilities:
        caps = _setpriv_caps(unit.ambient_capabilities)
        setpriv += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
    if unit.bounding_set:
        setpriv.append(f"--bounding-set=-all,{_setpriv_caps(unit.bounding_set)}")
    if unit.no_new_privileges:
        setpriv.append("--no-new-privs")
    env = [f"{k}={v}" for k, v in unit.environment.items()]
    path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return [
        "ip",
        "netns",
        "exec",
        ns.name,
        "chroot",
        str(root),
        "env",
        "-i",
        path,
        "LANG=C.UTF-8",
        *env,
        f"--chdir={unit.working_directory}",
        *setpriv,
        "--",
        *unit.exec_start,
    ]


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return (
            self.stdout.read_text(errors="replace")
            + "\n--- stderr ---\n"
            + self.stderr.read_text(errors="replace")[-6000:]
        )

    def status(self) -> dict[str, str]:
        """/proc/<pid>/status of the service (the same pid through every exec)."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return fields


def start(command: list[str], logs: Path, banner: str, timeout: float) -> Running:
    """Start the service and wait until its banner is complete on stdout."""
    stdout, stderr = logs / "serve.stdout", logs / "serve.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
    running = Running(process, stdout, stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if banner in stdout.read_text(errors="replace"):
            return running
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}:\n{running.output()}")
        time.sleep(0.2)
    stop(running)
    raise RuntimeError(f"serve did not start within {timeout}s:\n{running.output()}")


def stop(running: Running, timeout: float = 20) -> int:
    """SIGTERM, then SIGKILL to the whole session; returns the exit status."""
    process = running.process
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # anything it left behind in its session
    return process.returncode
