"""Pool mode end to end (docs/pool.md): real serve processes on a real PostgreSQL.

One throwaway PostgreSQL primary and one streaming hot standby for the module
(appliance/testing/postgres.py), a database for the pool, and three pool nodes
(appliance/testing/pool.py): `a` and `b` on the primary, `branch` on the standby with
writes going to the primary. Phones are curl: update checks over HTTPS (the pool's test CA,
the name ucupdates-r2.example.com sent to 127.0.0.1) and image downloads over the plain
HTTP of the answer's BaseURL.

In order, as an admin would see it:
1. the sample package imported on `a` (the CLI on a's config) is offered by `a` and `b` to
   a test device with the same answer (the nodes' own ports aside) and the same bytes;
2. the branch, started after it, serves the same answer and bytes from its replica;
3. an approval on the primary (the CLI on a's config) is offered by the branch to an
   ordinary phone;
4. with the nodes on the primary stopped and the primary itself stopped, the branch keeps
   answering checks and serving the image, and keeps the inventory of the phones it saw
   in its spool (`ucupdates check` on the branch warns and counts the records);
5. once the primary is back, that inventory arrives in the primary's database and the
   spool empties.

Every wait is bounded (WAIT seconds, counted polls); nothing is timed.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from appliance.catalogue.sample import sample_check
from appliance.store import Store
from appliance.testing import PoolNode, Postgres, pool_ca, throwaway_postgres

pytestmark = pytest.mark.slow  # PostgreSQL, a replica and three serve processes

T = TypeVar("T")
RUNNING, NEW = "4.0.7577.4366", "4.0.7577.4387"
IMAGE_SIZE = 20_000
TEST_MAC = "00-04-F2-00-00-01"  # a test device: offered pending updates
ORDINARY_MAC = "00-04-F2-00-00-02"
OUTAGE_MAC = "00-04-F2-00-00-03"  # checks the branch only while the primary is down
WAIT = 60.0  # "within N seconds": at most this long for a node to show a change
CHECK_PATH = "/RequestHandler/ucdevice.upx"
DATABASE = "pool"


@dataclass
class Pool:
    pg: Postgres
    standby: Postgres
    a: PoolNode
    b: PoolNode
    branch: PoolNode
    package: Path
    images: set[str]  # SHA-256 of every CPE.nbt the package holds

    @property
    def nodes(self) -> tuple[PoolNode, ...]:
        return (self.a, self.b, self.branch)


def cab_image_hashes(package: Path, folder: Path) -> set[str]:
    """SHA-256 of each image (CPE.nbt) in the package, as cabextract extracts it."""
    folder.mkdir()
    subprocess.run(["cabextract", "-q", "-d", str(folder), str(package)], check=True, timeout=60)
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("CPE.nbt")}


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    base = tmp_path_factory.mktemp("pool")
    with throwaway_postgres() as pg:
        standby = pg.replica()
        dsn = pg.create_database(DATABASE)
        ca = pool_ca(base / "ca")
        nodes = [PoolNode(name, base / name, dsn, ca) for name in ("a", "b")]
        branch = PoolNode("branch", base / "branch", standby.conninfo_of(DATABASE), ca, dsn)
        made = nodes[0].cli(
            "make-sample-package", str(base / "UCUpdates.cab"), "--version", NEW,
            "--image-size", str(IMAGE_SIZE),
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        images = cab_image_hashes(base / "UCUpdates.cab", base / "extracted")
        try:
            yield Pool(pg, standby, nodes[0], nodes[1], branch, base / "UCUpdates.cab", images)
        finally:
            for node in (*nodes, branch):
                if node.running:
                    try:
                        node.stop()
                    except AssertionError:
                        node.kill()
                        raise


# -- phones and admins ------------------------------------------------------------------


def cli(node: PoolNode, *args: str) -> str:
    done = node.cli(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def curl(node: PoolNode, url: str, listener: str, *options: str, body: bytes = b"") -> bytes:
    """curl as a phone: the name resolved to the node on 127.0.0.1, the pool CA trusted."""
    argv = ["curl", "-sS", "--fail", "--max-time", "20", "--resolve", node.resolve(listener)]
    argv += ["--cacert", str(node.ca_pem), *options, url]
    done = subprocess.run(argv, input=body, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"curl {url}: {done.returncode} {done.stderr!r}")
    return done.stdout


def check(node: PoolNode, mac: str) -> bytes:
    """The node's answer to a CX600 ENU phone on RUNNING checking for updates (its serial
    made of its MAC: a phone of its own in the inventory)."""
    body = sample_check(RUNNING, mac).replace(b"64167F0001", bare(mac).encode())
    return curl(
        node, node.url(CHECK_PATH), "internal_https",
        "-H", "Content-Type: text/xml", "--data-binary", "@-", body=body,
    )  # fmt: skip


def bare(mac: str | None) -> str:
    return re.sub("[^0-9a-f]", "", (mac or "").lower())


def offered(answer: bytes) -> tuple[str, str] | None:
    """The version and the image URL an answer offers, or None when it offers nothing."""
    root = ET.fromstring(answer)
    if root.findtext("Downloads") != "1":
        return None
    (module,) = root.findall("Modules/Module")
    url = f"{root.findtext('BaseURL')}/{module.findtext('FileName')}"
    return module.findtext("Version") or "", url


def same_answer(answer: bytes) -> bytes:
    """The answer without the node's own ports (each node has its listeners)."""
    return re.sub(rb":\d+/", b":PORT/", answer)


def image_hash(node: PoolNode, url: str) -> str:
    return hashlib.sha256(curl(node, url, "internal_http")).hexdigest()


def pool_check(node: PoolNode) -> dict[str, Any]:
    """The pool check of `ucupdates check --json` on the node: its status and the records
    its spool holds (perfdata pool_buffered)."""
    done = node.cli("check", "--json")
    report = json.loads(done.stdout)
    (entry,) = [c for c in report["checks"] if c["name"] == "pool"]
    (figure,) = [f for f in report["perfdata"] if f["label"] == "pool_buffered"]
    return {**entry, "buffered": figure["value"]}


def buffered(node: PoolNode) -> dict[str, Any] | None:
    state = pool_check(node)
    return state if state["buffered"] else None


def eventually(what: str, probe: Callable[[], T | None], seconds: float = WAIT) -> T:
    """probe() until it returns something (not None), at most `seconds` (bounded count)."""
    deadline = time.monotonic() + seconds
    last: object = None
    for _ in range(int(seconds * 4) + 1):
        try:
            found = probe()
        except AssertionError as e:  # a node still starting or refusing: try again
            found, last = None, e
        if found is not None:
            return found
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    raise AssertionError(f"not within {seconds} s: {what} (last: {last})")


def serves(node: PoolNode, mac: str, version: str, reference: bytes) -> str | None:
    """The image's SHA-256 once the node offers `version` to `mac` with the reference answer
    (ports aside); None until then."""
    answer = check(node, mac)
    got = offered(answer)
    if got is None or got[0] != version or same_answer(answer) != same_answer(reference):
        return None
    return image_hash(node, got[1])


# -- the pool ---------------------------------------------------------------------------


def test_an_import_on_one_node_is_served_by_the_others_on_the_primary(pool: Pool) -> None:
    pool.a.start()
    pool.b.start()
    cli(pool.a, "test-device", "add", "lab-phone", "--mac", TEST_MAC)
    assert offered(check(pool.b, TEST_MAC)) is None  # nothing imported yet
    cli(pool.a, "import", str(pool.package))
    reference = eventually("a offers the import", lambda: _offering(pool.a, TEST_MAC, NEW))
    url = offered(reference)
    assert url is not None
    digest = image_hash(pool.a, url[1])
    assert digest in pool.images
    assert eventually("b serves it", lambda: serves(pool.b, TEST_MAC, NEW, reference)) == digest
    assert offered(check(pool.b, ORDINARY_MAC)) is None  # pending: test devices only


def test_the_branch_serves_what_was_imported_from_its_replica(pool: Pool) -> None:
    pool.pg.caught_up(pool.standby)
    pool.branch.start()
    reference = check(pool.a, TEST_MAC)
    digest = serves(pool.a, TEST_MAC, NEW, reference)
    assert digest in pool.images
    got = eventually("the branch serves it", lambda: serves(pool.branch, TEST_MAC, NEW, reference))
    assert got == digest


def test_an_approval_on_the_primary_reaches_the_branch(pool: Pool) -> None:
    assert offered(check(pool.branch, ORDINARY_MAC)) is None
    cli(pool.a, "approve", "--all-pending")
    reference = eventually("a offers it", lambda: _offering(pool.a, ORDINARY_MAC, NEW))
    for node in (pool.branch, pool.b):
        eventually(f"{node.name} offers it", partial(serves, node, ORDINARY_MAC, NEW, reference))


def test_with_the_primary_down_the_branch_serves_and_spools(pool: Pool) -> None:
    reference = check(pool.branch, ORDINARY_MAC)
    digest = serves(pool.branch, ORDINARY_MAC, NEW, reference)
    assert digest in pool.images
    pool.a.stop()
    pool.b.stop()
    pool.pg.stop()
    for mac in (OUTAGE_MAC, ORDINARY_MAC):  # a phone it never saw, and one it did
        assert serves(pool.branch, mac, NEW, reference) == digest
    state = eventually("the branch's check counts spooled records", partial(buffered, pool.branch))
    assert state["status"] == "WARNING", state  # the primary unreachable: said, not failed
    assert pool.branch.running


def test_the_spooled_inventory_reaches_the_primary_when_it_is_back(pool: Pool) -> None:
    pool.pg.start()

    def arrived() -> bool | None:
        store = Store.open_postgresql(pool.a.dsn, pool_size=1, upgrade=False)
        try:
            return True if bare(OUTAGE_MAC) in {bare(d.mac) for d in store.devices()} else None
        finally:
            store.close()

    eventually("the outage's inventory on the primary", arrived)
    eventually("the spool emptied", lambda: pool_check(pool.branch)["buffered"] == 0 or None)
    assert serves(pool.branch, ORDINARY_MAC, NEW, check(pool.branch, ORDINARY_MAC))


def _offering(node: PoolNode, mac: str, version: str) -> bytes | None:
    answer = check(node, mac)
    got = offered(answer)
    return answer if got is not None and got[0] == version else None
