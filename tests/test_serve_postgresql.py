"""`ucupdates serve` on a PostgreSQL store, as a real process, with the reactor guard on.

Two appliances hold the same catalogue (the sample package in two versions, the older
approved): one on SQLite, one on a PostgreSQL store, both started with
UCUPDATES_REACTOR_GUARD=raise, so a store call made on the PostgreSQL node's reactor
thread fails (and its traceback fails the stop). curl asks both, over HTTPS and plain
HTTP, and gets the same answers; a rule approved by the command line on the same
PostgreSQL is offered within a bounded wait (the node learns of it by NOTIFY or by
polling the catalogue's version); the checks' devices reach the inventory; a phone user
logs in with Basic over the external listener; /metrics shows the store's figures; and
`ucupdates check` reads the PostgreSQL store.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.catalogue.sample import sample_check
from appliance.store import Store
from appliance.testing import Postgres
from appliance.testing.pool import PoolNode, pool_ca

pytestmark = pytest.mark.slow

RUNNING = "4.0.7577.4366"
APPROVED = "4.0.7577.4387"
PENDING = "4.0.7577.4400"
USER, PASSWORD = "alice@example.com", "correct horse battery staple"
WAIT_SECONDS = 15.0  # a change on the store reaching a node's answers, at most
CHECK = "/RequestHandler/ucdevice.upx"
EXT_CHECK = "/RequestHandlerExt/ucdevice.upx"


@dataclass
class Pair:
    postgresql: PoolNode
    sqlite: PoolNode
    dsn: str
    ca: Path
    folder: Path


def cli(node: PoolNode, *args: str, stdin: str | None = None) -> str:
    result = node.cli(*args, stdin=stdin)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture(scope="module")
def pair(store_postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("serve-pg")
    dsn = store_postgres.create_database("serve_pg")
    ca = pool_ca(folder / "ca")
    on_pg = PoolNode("postgresql", folder / "postgresql", dsn, ca)
    on_sqlite = PoolNode("sqlite", folder / "sqlite", "unused", ca)
    on_pg.write()
    on_sqlite.write()  # then without its [store] table: the default, SQLite
    text = on_sqlite.config.read_text(encoding="utf-8")
    on_sqlite.config.write_text(text[: text.index("[store]")], encoding="utf-8")
    for version in (APPROVED, PENDING):
        package = folder / f"UCUpdates-{version}.cab"
        cli(on_pg, "make-sample-package", str(package), "--version", version)
        for node in (on_pg, on_sqlite):
            cli(node, "import", str(package))
            if version == APPROVED:
                cli(node, "approve", "--all-pending")
    cli(on_pg, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    guard = os.environ.get("UCUPDATES_REACTOR_GUARD")
    os.environ["UCUPDATES_REACTOR_GUARD"] = "raise"  # inherited by the serve processes
    try:
        on_pg.start()
        on_sqlite.start()
    finally:
        if guard is None:
            del os.environ["UCUPDATES_REACTOR_GUARD"]
        else:
            os.environ["UCUPDATES_REACTOR_GUARD"] = guard
    try:
        yield Pair(on_pg, on_sqlite, dsn, ca, folder)
    finally:
        on_sqlite.stop()
        on_pg.stop()  # status 0, no traceback: no store call failed on the reactor
        log = on_pg.log.read_text(encoding="utf-8")
        assert "store.reactor_call" not in log and "ReactorBlockingError" not in log, log


def check_body(mac: str, model: str = "CX600", version: str = RUNNING) -> bytes:
    body = sample_check(version, mac)
    return body.replace(b"<Model>CX600</Model>", f"<Model>{model}</Model>".encode())


def curl(
    pair: Pair,
    node: PoolNode,
    body: bytes,
    listener: str = "internal_https",
    path: str = CHECK,
    user: tuple[str, str] | None = None,
) -> tuple[int, str]:
    """The status and body of a check sent with curl (the body from a file of its own)."""
    sent = pair.folder / f"check-{time.monotonic_ns()}.xml"
    sent.write_bytes(body)
    command = ["curl", "-sS", "--max-time", "10", "--resolve", node.resolve(listener)]
    command += ["--cacert", str(pair.ca), "-H", "Content-Type: text/xml"]
    command += ["--data-binary", f"@{sent}", "-w", "\n%{http_code}"]
    if user is not None:
        command += ["-u", f"{user[0]}:{user[1]}"]
    done = subprocess.run(
        [*command, node.url(path, listener)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    answer, _, status = done.stdout.rpartition("\n")
    return int(status), answer


def without_ports(answer: str) -> str:
    return re.sub(r"(example\.com):\d+/", r"\1:PORT/", answer)


def offered(answer: str) -> list[str]:
    return re.findall(r"<Version>([^<]+)</Version>", answer)


@pytest.mark.parametrize("listener", ["internal_https", "internal_http"])
def test_checks_get_the_answers_sqlite_gives(pair: Pair, listener: str) -> None:
    body = check_body("00-04-F2-00-01-01")
    status, on_pg = curl(pair, pair.postgresql, body, listener)
    assert status == 200
    assert set(offered(on_pg)) == {APPROVED}
    status, on_sqlite = curl(pair, pair.sqlite, body, listener)
    assert status == 200
    assert without_ports(on_pg) == without_ports(on_sqlite)


def test_a_rule_approved_by_the_command_line_is_offered_within_a_bounded_wait(
    pair: Pair,
) -> None:
    body = check_body("00-04-F2-00-01-02", model="CX700")
    assert set(offered(curl(pair, pair.postgresql, body)[1])) == {APPROVED}
    cli(pair.postgresql, "approve", "--model", "CX700")  # another process, same store
    deadline = time.monotonic() + WAIT_SECONDS
    versions: set[str] = set()
    for _ in range(int(WAIT_SECONDS / 0.2)):
        versions = set(offered(curl(pair, pair.postgresql, body)[1]))
        if versions == {PENDING} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert versions == {PENDING}


def test_the_checks_devices_reach_the_inventory(pair: Pair) -> None:
    mac = "00-04-F2-00-01-03"
    assert curl(pair, pair.postgresql, check_body(mac))[0] == 200
    store = Store.open_postgresql(pair.dsn, pool_size=1, upgrade=False)
    try:
        macs: set[str | None] = set()
        for _ in range(int(WAIT_SECONDS / 0.2)):  # the flush runs every second
            macs = {d.mac for d in store.devices()}
            if mac in macs:
                break
            time.sleep(0.2)
    finally:
        store.close()
    assert mac in macs


def test_a_phone_user_logs_in_with_basic_on_the_external_listener(pair: Pair) -> None:
    body = check_body("00-04-F2-00-01-04")
    status, answer = curl(
        pair, pair.postgresql, body, "external_https", EXT_CHECK, (USER, PASSWORD)
    )
    assert status == 200
    assert set(offered(answer)) == {APPROVED}
    wrong = (USER, "not the password")
    assert curl(pair, pair.postgresql, body, "external_https", EXT_CHECK, wrong)[0] == 401
    assert curl(pair, pair.postgresql, body, "external_https", EXT_CHECK)[0] == 401


def test_metrics_show_the_store_figures_read_off_the_reactor(pair: Pair) -> None:
    node = pair.postgresql
    command = ["curl", "-sS", "--max-time", "10", "--resolve", node.resolve("admin")]
    command += ["--cacert", str(pair.ca), node.url("/metrics", "admin")]
    text = ""
    for _ in range(int(WAIT_SECONDS / 0.2)):  # the first scrape starts the read
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        text = done.stdout
        if 'ucupdates_catalogue_rules{state="approved"}' in text:
            break
        time.sleep(0.2)
    assert 'ucupdates_catalogue_rules{state="approved"}' in text


def test_the_check_command_reads_the_postgresql_store(pair: Pair) -> None:
    done = pair.postgresql.cli("check", "--json")
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["store"]["status"] == "OK", checks["store"]
    assert checks["files"]["status"] == "OK", checks["files"]
    assert checks["rules"]["status"] in ("OK", "WARNING"), checks["rules"]
