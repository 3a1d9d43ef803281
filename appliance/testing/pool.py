"""Pool nodes for tests and benchmarks: real `ucupdates serve` processes on one PostgreSQL.

A `PoolNode` is one appliance of a pool: a folder of its own (its config file, its data
folder, the files holding its connection strings, mode 0600, and serve's log), a
`[store]` with backend "postgresql" and `dsn_file`, and its listeners on 127.0.0.1 at
ports chosen once (a node started again keeps them; DNS alone binds port 0). A branch
node also gets `primary_dsn_file`: its `dsn` is then the local replica and its writes go
to the primary. Every node of a pool trusts one test CA (`pool_ca`): its `ca.pem` and
`ca.key` are copied into each node's TLS folder before the first start, and serve issues
each node's own server certificate from it, so one client context (`tls_context`) checks
them all under the name FQDN.

`start()` waits (bounded) for serve's banner; `stop()` sends SIGTERM and expects status 0
and no traceback in the log; `kill()` is SIGKILL. `cli()` runs a command of the CLI on the
node's config, as an admin on that machine would. Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from appliance.testing.processes import REPO, STARTUP_SECONDS, Serving, free_port, serving

HOST = "127.0.0.1"
FQDN = "ucupdates-r2.example.com"  # the name every node's certificate carries
TCP_LISTENERS = ("admin", "internal_https", "external_https", "internal_http")
CA_FILES = ("ca.pem", "ca.key")


def pool_ca(folder: Path) -> Path:
    """A test CA made once in `folder` (ca.pem, ca.key) for every node of a pool."""
    from appliance.tls import ensure_test_certificates

    ensure_test_certificates(folder, [FQDN])
    return folder / "ca.pem"


def tls_context(ca_pem: Path) -> ssl.SSLContext:
    """A client context trusting the pool's test CA and checking the name FQDN."""
    return ssl.create_default_context(cafile=str(ca_pem))


def _write_secret(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text + "\n", encoding="utf-8")


@dataclass
class PoolNode:
    """One appliance of the pool as a process (see the module docstring)."""

    name: str
    folder: Path
    dsn: str = field(repr=False)
    ca_pem: Path
    primary_dsn: str | None = field(default=None, repr=False)
    extra_toml: str = ""  # more tables appended to the config ("[rollouts]\n...")
    ports: dict[str, int] = field(default_factory=dict)
    _running: contextlib.ExitStack | None = field(default=None, repr=False)
    serving: Serving | None = field(default=None, repr=False)

    @property
    def config(self) -> Path:
        return self.folder / "ucupdates.toml"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "serve.log"

    @property
    def files(self) -> Path:
        """The node's DeviceUpdateStore, where it serves image bytes from."""
        return self.data / "DeviceUpdateStore"

    def write(self) -> None:
        """The config, the connection string files (0600) and the CA in the TLS folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tls = self.data / "tls"
        tls.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in CA_FILES:
            if not (tls / name).exists():
                shutil.copy2(self.ca_pem.parent / name, tls / name)
        (tls / "ca.key").chmod(0o600)
        if not self.ports:
            self.ports = {name: free_port() for name in TCP_LISTENERS}
        _write_secret(self.folder / "dsn", self.dsn)
        store = f'[store]\nbackend = "postgresql"\ndsn_file = {_q(self.folder / "dsn")}\n'
        if self.primary_dsn is not None:
            _write_secret(self.folder / "primary_dsn", self.primary_dsn)
            store += f"primary_dsn_file = {_q(self.folder / 'primary_dsn')}\n"
        listeners = "".join(f'{k} = "{HOST}:{p}"\n' for k, p in self.ports.items())
        self.config.write_text(
            f'data_dir = {_q(self.data)}\n[listeners]\ndns = "{HOST}:0"\n{listeners}'
            f"{store}{self.extra_toml}",
            encoding="utf-8",
        )

    def start(self, *options: str, startup: float = STARTUP_SECONDS) -> Serving:
        """serve on this node's config, waited for until its banner lists the listeners."""
        if self._running is not None:
            raise AssertionError(f"node {self.name} is already running")
        if not self.config.exists():
            self.write()
        stack = contextlib.ExitStack()
        self.serving = stack.enter_context(
            serving(self.config, self.log, *options, startup=startup)
        )
        self._running = stack
        return self.serving

    def stop(self) -> None:
        """SIGTERM; AssertionError (with the log) unless it ends cleanly within 15 s."""
        stack, self._running, self.serving = self._running, None, None
        if stack is not None:
            stack.close()

    def kill(self) -> None:
        """SIGKILL, like a dead machine; the log is kept, its status not checked."""
        stack, running, self._running, self.serving = self._running, self.serving, None, None
        if running is not None:
            running.process.send_signal(signal.SIGKILL)
            running.process.wait(timeout=15)
        if stack is not None:
            with contextlib.suppress(AssertionError):  # status -9: not a clean stop
                stack.close()

    @property
    def running(self) -> bool:
        return self.serving is not None and self.serving.process.poll() is None

    def url(self, path: str, listener: str = "internal_https") -> str:
        """An address of this node as phones name it (FQDN; `resolve` maps it here)."""
        scheme = "http" if listener == "internal_http" else "https"
        return f"{scheme}://{FQDN}:{self.ports[listener]}{path}"

    def resolve(self, listener: str = "internal_https") -> str:
        """curl's `--resolve` value sending FQDN of `listener` to 127.0.0.1."""
        return f"{FQDN}:{self.ports[listener]}:{HOST}"

    def cli(
        self, *args: str, stdin: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """`python -m appliance --config CONFIG ARGS...` as a process, on this node."""
        if not self.config.exists():
            self.write()
        return subprocess.run(
            [sys.executable, "-m", "appliance", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=timeout,
            cwd=REPO,
        )


def _q(path: Path) -> str:
    return json.dumps(str(path))


@contextlib.contextmanager
def pool_nodes(*nodes: PoolNode) -> Iterator[list[PoolNode]]:
    """Start every node in turn; on the way out stop each still running (killed if a stop
    fails, and the first failure raised after all are down)."""
    started: list[PoolNode] = []
    try:
        for node in nodes:
            node.start()
            started.append(node)
        yield list(nodes)
    finally:
        failures: list[AssertionError] = []
        for node in started:
            try:
                node.stop()
            except AssertionError as e:
                failures.append(e)
        if failures:
            raise failures[0]
