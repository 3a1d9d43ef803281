"""A throwaway PostgreSQL for tests: Debian's server in a temporary folder, on loopback.

`throwaway_postgres()` runs `initdb` into a new folder, starts the server with `pg_ctl`
listening on 127.0.0.1 at a free port (and on a socket in the folder), and makes a role
and a database for the test, reached over TCP with a password (SCRAM). `replica()` makes
a hot standby of it the way an admin would: `pg_basebackup -R` through a replication slot,
streaming from the primary. PostgreSQL refuses to run as root, so under root (CI) every
server program runs as the `postgres` system user that Debian's package creates, owner of
the folder. Every wait is bounded (`pg_ctl -w -t`, counted loops); a server that does not
start raises PostgresError with its log.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from appliance.testing.processes import free_port

PG_ROOT = Path("/usr/lib/postgresql")  # Debian: one <major>/bin per installed version
SECONDS = 60  # starting, stopping or promoting one server on a loaded 2-core machine
ROLE = "ucupdates"  # the role and database tests connect as
REPLICATOR = "replicator"  # the role replicas stream as


class PostgresError(Exception):
    """A server of the harness did not do what it was told; the message has its log."""


def postgres_bin() -> Path:
    """The bin folder of the newest PostgreSQL installed (Debian's layout)."""
    found = sorted(
        (int(d.name), d / "bin")
        for d in (PG_ROOT.iterdir() if PG_ROOT.is_dir() else [])
        if d.name.isdigit() and (d / "bin" / "initdb").is_file()
    )
    if not found:
        raise PostgresError(f"no PostgreSQL server under {PG_ROOT} (Debian's postgresql)")
    return found[-1][1]


def _server_user() -> str | None:
    """Who runs the server programs: None (this process's user) unless this is root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresError("running as root and there is no postgres system user") from None
    return "postgres"


@dataclass
class Postgres:
    """One running server of the harness: its folder (data/, log, socket) and port."""

    folder: Path
    port: int
    password: str  # of ROLE and REPLICATOR
    bin: Path
    user: str | None
    group: int | None = None  # the postmaster's pid: it leads its children's process group
    replicas: list[Postgres] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    @property
    def conninfo(self) -> str:
        """The test role's connection string over TCP with its password."""
        return (
            f"host=127.0.0.1 port={self.port} dbname={ROLE} user={ROLE} "
            f"password={self.password} connect_timeout=10"
        )

    def conninfo_of(self, database: str) -> str:
        """The test role's connection string to another database of this server."""
        return self.conninfo.replace(f"dbname={ROLE} ", f"dbname={database} ")

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database `name` owned by the test role (a copy of `template` when given,
        which no session may hold open); its connection string. On a primary it appears on
        its replicas once they replay it (`caught_up`)."""
        copy = f" TEMPLATE {template}" if template else ""
        self.sql(f"CREATE DATABASE {name}{copy} OWNER {ROLE}")
        return self.conninfo_of(name)

    def caught_up(self, standby: Postgres, seconds: float = SECONDS) -> None:
        """Wait (bounded) until `standby` has replayed everything this primary has written
        so far; PostgresError after `seconds`."""
        target = self.sql("SELECT pg_current_wal_lsn()").strip()
        deadline = time.monotonic() + seconds
        for _ in range(int(seconds * 10) + 1):
            behind = standby.sql(f"SELECT pg_last_wal_replay_lsn() < '{target}'::pg_lsn").strip()
            if behind == "f":
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise PostgresError(f"the standby did not replay up to {target} within {seconds} s")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        """A program of the server's bin folder as the server's user; its output."""
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=SECONDS + 30,
            user=self.user,
            group=self.user,
            cwd=self.folder,
            env={**os.environ, **(env or {})},
        )
        if done.returncode != 0:
            raise PostgresError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}\n"
                f"server log:\n{self.log_text()}"
            )
        return done.stdout

    def sql(self, statement: str, database: str = "postgres") -> str:
        """One statement as the superuser over the folder's socket (unaligned output)."""
        return self._run(
            *["psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"],
            str(self.folder),
            *("-p", str(self.port), "-d", database, "-c", statement),
        )

    def start(self) -> None:
        """pg_ctl start, waiting until it accepts connections (a standby: read-only ones)."""
        process = subprocess.Popen(
            [str(self.bin / "pg_ctl"), "start", "-w", "-t", str(SECONDS)]
            + ["-D", str(self.data), "-l", str(self.log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            user=self.user,
            group=self.user,
            cwd=self.folder,
            start_new_session=True,
        )
        out, _ = process.communicate(timeout=SECONDS + 30)
        if process.returncode != 0:
            raise PostgresError(
                f"PostgreSQL did not start ({process.returncode}): {out.decode(errors='replace')}"
                f"\nserver log:\n{self.log_text()}"
            )
        # the postmaster makes itself a session leader: its pid is its children's group
        self.group = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """A fast shutdown (sessions ended, a checkpoint), waited for."""
        self._run("pg_ctl", "stop", "-w", "-t", str(SECONDS), "-m", "fast", "-D", str(self.data))
        self.group = None

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend at once, like a dead machine's
        processes; waits (bounded) until none is left, so the folder can start again."""
        if self.group is None:
            return
        group, self.group = self.group, None
        deadline = time.monotonic() + SECONDS
        for _ in range(SECONDS * 20):
            if not _alive(group) or time.monotonic() > deadline:
                break
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        if _alive(group):
            raise PostgresError(f"processes of group {group} survived SIGKILL for {SECONDS} s")
        # The dead postmaster's pid may linger as a zombie nobody reaps yet, which the next
        # start takes for a running server: every process is gone, so its lock files go.
        for lock in (self.data / "postmaster.pid", self.folder / f".s.PGSQL.{self.port}.lock"):
            lock.unlink(missing_ok=True)

    def promote(self) -> None:
        """Make a standby a primary, waiting until it accepts writes."""
        self._run("pg_ctl", "promote", "-w", "-t", str(SECONDS), "-D", str(self.data))

    def replica(self, synchronous: bool = False) -> Postgres:
        """A hot standby of this server, started: `pg_basebackup -R` through a new
        replication slot, streaming over TCP as REPLICATOR. Stopped with its primary (as are
        the standbys made from it in turn, once it is promoted).

        `synchronous`: this server then names it in `synchronous_standby_names` with
        `synchronous_commit = remote_apply` (set after the copy, so the standby, once
        promoted, waits for no one): a commit returns only once the standby has applied
        it. Returns when the standby streams as the synchronous one."""
        standby = Postgres(_new_folder(self.user), free_port(), self.password, self.bin, self.user)
        slot = f"replica_{standby.port}"
        self._run(
            *("pg_basebackup", "-D", str(standby.data), "-h", "127.0.0.1", "-p", str(self.port)),
            *("-U", REPLICATOR, "-R", "-C", "-S", slot, "-X", "stream", "-c", "fast"),
            env={"PGPASSWORD": self.password},
        )
        # cluster_name is the application_name its WAL receiver gives the primary
        _append(
            standby.data / "postgresql.conf", f"cluster_name = '{slot}'\n" + _listening(standby)
        )
        self.replicas.append(standby)
        standby.start()
        if synchronous:
            self.sql(f"ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ({slot})'")
            self.sql("ALTER SYSTEM SET synchronous_commit = 'remote_apply'")
            self.sql("SELECT pg_reload_conf()")
            self._wait_for(
                f"SELECT count(*) FROM pg_stat_replication WHERE application_name = '{slot}'"
                " AND sync_state = 'sync' AND state = 'streaming'",
                "1",
            )
        return standby

    def _wait_for(self, query: str, expected: str, seconds: float = SECONDS) -> None:
        """Poll `query` (bounded) until it prints `expected`; PostgresError after `seconds`."""
        deadline = time.monotonic() + seconds
        got = ""
        for _ in range(int(seconds * 10) + 1):
            got = self.sql(query).strip()
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if got != expected:
            raise PostgresError(f"{query}: {got!r}, not {expected!r}, after {seconds} s")


def _alive(group: int) -> bool:
    """Whether a process of `group` is still running (zombies, already dead, are not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] != "Z" and int(fields[2]) == group:
            return True
    return False


def _new_folder(user: str | None) -> Path:
    """A new private folder outside pytest's (root-only) tree, owned by the server's user."""
    folder = Path(tempfile.mkdtemp(prefix="ucupdates-pg-"))
    if user is not None:
        shutil.chown(folder, user, user)
    return folder


def _listening(server: Postgres) -> str:
    return (
        "listen_addresses = '127.0.0.1'\n"
        f"port = {server.port}\n"
        f"unix_socket_directories = '{server.folder}'\n"
    )


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


# Small and quick: a test server holds a few tables. fsync off loses data only when the
# machine (not the server) dies, which no test does.
_SETTINGS = """
shared_buffers = 16MB
max_connections = 40
fsync = off
full_page_writes = off
wal_level = replica
max_wal_senders = 5
max_replication_slots = 5
hot_standby = on
logging_collector = off
log_line_prefix = '%m [%p] '
"""


@contextmanager
def throwaway_postgres() -> Iterator[Postgres]:
    """A new PostgreSQL cluster with ROLE (owner of database ROLE) and REPLICATOR, running
    until the block ends; then it and its replicas stop and their folders go."""
    user = _server_user()
    server = Postgres(_new_folder(user), free_port(), secrets.token_hex(16), postgres_bin(), user)
    try:
        server._run(
            *("initdb", "-D", str(server.data), "-U", "postgres", "-E", "UTF8", "--no-locale"),
            *("--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"),
        )
        _append(server.data / "postgresql.conf", _SETTINGS + _listening(server))
        server.start()
        server.sql(
            f"CREATE ROLE {ROLE} LOGIN PASSWORD '{server.password}';"
            f"CREATE ROLE {REPLICATOR} LOGIN REPLICATION PASSWORD '{server.password}'"
        )
        server.sql(f"CREATE DATABASE {ROLE} OWNER {ROLE}")
        yield server
    finally:
        for s in [*_replicas(server), server]:
            _shut(s)


def _replicas(server: Postgres) -> list[Postgres]:
    """Every standby made from `server`, or from one of them (a promoted one's), deepest
    first."""
    return [r for first in server.replicas for r in [*_replicas(first), first]]


def _shut(server: Postgres) -> None:
    try:
        if server.group is not None:
            try:
                server.stop()
            except (PostgresError, subprocess.TimeoutExpired):
                server.kill()
    finally:
        shutil.rmtree(server.folder, ignore_errors=True)
