"""PostgreSQL dies: nothing half-applied, nothing approved lost, the pool goes on.

A writer process (appliance/testing/churn.py) imports and approves in a loop while the
primary's postmaster and backends are killed (SIGKILL, all at once) at seeded random
moments, and twice while the writer stands inside a transaction (an import's, before its
COMMIT; an approval's, between the rule's write and its event). After each restart the
store holds every change whole or not at all (`half_applied`), and every change the
writer was told had committed. Then a synchronous replica: an approval that has returned
survives the primary's kill and the replica's promotion; nodes reach the promoted server
with the same connection string (several hosts, target_session_attrs=read-write) and
write on.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from appliance.catalogue import Action, apply_action, import_package, make_sample_package
from appliance.config import load_config
from appliance.store import RuleFilter, Store
from appliance.testing import REPO, Postgres
from appliance.testing.churn import IMAGE_SIZE, half_applied, version

pytestmark = pytest.mark.slow

SEED = 18
RANDOM_ROUNDS = 3
WAIT_SECONDS = 60.0  # for the writer to start or to notice its server died (loaded machine)


def _acks(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait_for_ack(path: Path, child: subprocess.Popen[bytes], prefix: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    for _ in range(int(WAIT_SECONDS * 20)):
        if any(a.startswith(prefix) for a in _acks(path)):
            return
        if child.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"the writer never said {prefix!r}: {_acks(path)} ({child.poll()})")


def _round(postgres: Postgres, data: Path, acks: Path, pause_at: str | None, delay: float) -> None:
    """One writer, killed with its server: at `pause_at` inside a transaction, or `delay`
    seconds after it started writing. The server starts again afterwards."""
    log = acks.with_suffix(".log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "appliance.testing.churn", postgres.conninfo, str(data)]
        + [str(acks)]
        + (["--pause-at", pause_at] if pause_at else []),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_ack(acks, child, f"paused {pause_at}" if pause_at else "ready")
        time.sleep(delay)
        postgres.kill()
        if pause_at:
            child.kill()  # it waits to be killed inside its transaction
        child.wait(WAIT_SECONDS)  # the writer fails on its dead connection and exits
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(WAIT_SECONDS)
        log.close()
    assert child.returncode != 0  # it never stops by itself
    postgres.start()


def _missing_acks(store: Store, acks: list[str]) -> list[str]:
    """The changes the writer was told had committed that the store does not hold."""
    approved = {
        (int(e.target.split()[1]), e.after["approved"])
        for e in store.events(limit=1_000_000)
        if e.action == "approve"
    }
    versions = {v for _, v in store.updates()}
    missing = []
    for ack in acks:
        verb, *words = ack.split()
        if verb == "import" and words[0] not in versions:
            missing.append(ack)
        if verb == "approve" and (int(words[0]), words[1]) not in approved:
            missing.append(ack)
    return missing


def test_kill_9_of_the_primary_at_random_moments_leaves_nothing_half_applied(
    postgres: Postgres, tmp_path: Path
) -> None:
    with closing(Store.open_postgresql(postgres.conninfo)) as store:
        base = store.data_version()
    data = tmp_path / "data"
    store_dir = load_config(None, data).store_dir
    rng = random.Random(SEED)
    rounds: list[tuple[str | None, float]] = [("import", 0.0), ("approve", 0.0)]
    rounds += [(None, rng.uniform(0.1, 1.5)) for _ in range(RANDOM_ROUNDS)]
    rng.shuffle(rounds)
    acked: list[str] = []
    for i, (pause_at, delay) in enumerate(rounds):
        acks = tmp_path / f"acks-{i}.txt"
        _round(postgres, data, acks, pause_at, delay)
        acked += [a for a in _acks(acks) if a.split()[0] in ("import", "approve")]
        with closing(Store.open_postgresql(postgres.conninfo)) as store:
            assert half_applied(store, store_dir, base) == [], f"round {i}: {pause_at or delay}"
            assert _missing_acks(store, acked) == []
            paused = [a.split()[1:] for a in _acks(acks) if a.startswith("paused")]
            if pause_at == "import":  # the import killed before its COMMIT is not there
                assert paused[0][1] not in {v for _, v in store.updates()}
            if pause_at == "approve":  # nor the approval killed between its writes
                rule = store.rule(int(paused[0][1]))
                assert rule is not None and rule.approved_version != paused[0][2]
    assert sum(a.startswith("approve") for a in acked) > 0  # the loop got going

    # The check finds each half state it looks for (written here by hand, without events).
    with psycopg.connect(postgres.conninfo, autocommit=True) as raw:
        last_staged = "SELECT max(rule_id) FROM staged_approvals"
        raw.execute(f"DELETE FROM staged_approvals WHERE rule_id = ({last_staged})")
        approved = "SELECT max(id) FROM rules WHERE approved_version IS NOT NULL AND id % 2 = 0"
        raw.execute(f"UPDATE rules SET approved_version = NULL WHERE id = ({approved})")
        raw.execute("DELETE FROM files WHERE id = (SELECT max(id) FROM files)")
    with closing(Store.open_postgresql(postgres.conninfo)) as store:
        found = half_applied(store, store_dir, base)
    for problem in ("stagings {", "its events say", "files [", "catalogue version moved"):
        assert [p for p in found if problem in p], (problem, found)


def _approve_one(store: Store) -> tuple[int, str]:
    rule = store.rules(RuleFilter(pending_only=True))[0]
    apply_action(store, Action.APPROVE, RuleFilter(ids=(rule.id,)), "admin")
    assert rule.pending_version is not None
    return rule.id, rule.pending_version


def _multi_host(*servers: Postgres) -> str:
    first = servers[0]
    hosts = ",".join("127.0.0.1" for _ in servers)
    ports = ",".join(str(s.port) for s in servers)
    return (
        first.conninfo.replace("host=127.0.0.1 ", f"host={hosts} ").replace(
            f"port={first.port} ", f"port={ports} "
        )
        + " target_session_attrs=read-write"
    )


def _server_port(store: Store) -> int:
    conn: Any = store._conn
    return int(conn.execute("SELECT inet_server_port()").fetchone()[0])


def test_an_approval_survives_the_primary_killed_as_it_returns_on_a_synchronous_replica(
    postgres: Postgres, tmp_path: Path
) -> None:
    config = load_config(None, tmp_path / "data")
    cab = tmp_path / "UCUpdates.cab"
    make_sample_package(cab, version(0), image_size=IMAGE_SIZE)
    with closing(Store.open_postgresql(postgres.conninfo)) as store:
        base = store.data_version()
        import_package(store, config, cab, "admin")
    replica = postgres.replica(synchronous=True)
    both = _multi_host(postgres, replica)
    node = Store.open_postgresql(both)  # a pool node, running through the failover
    try:
        assert _server_port(node) == postgres.port  # the standby is not read-write
        rule_id, approved = _approve_one(node)  # returns once the standby applied it
        with psycopg.connect(replica.conninfo, autocommit=True) as standby:
            found = standby.execute("SELECT approved_version FROM rules WHERE id = %s", (rule_id,))
            assert found.fetchone() == (approved,)  # remote_apply: read there already
        postgres.kill()
        replica.promote()

        with closing(Store.open_postgresql(replica.conninfo)) as promoted:
            rule = promoted.rule(rule_id)
            assert rule is not None and rule.approved_version == approved
            assert half_applied(promoted, config.store_dir, base) == []

        # The node's next statements reach the promoted server: a statement on a pooled
        # connection to the dead one fails, its replacement connects to the writable host.
        port = None
        for _ in range(8):
            try:
                port = _server_port(node)
                break
            except psycopg.OperationalError:
                continue
        assert port == replica.port
        second, _ = _approve_one(node)
        make_sample_package(cab, version(1), image_size=IMAGE_SIZE)
        import_package(node, config, cab, "admin")
        assert half_applied(node, config.store_dir, base) == []
        assert {r.pending_version for r in node.rules() if r.id != rule_id} >= {version(1)}
        assert second != rule_id

        # The old primary's place: a new synchronous standby of the promoted server, made
        # as the first was (pg_basebackup), holding what the pool wrote meanwhile.
        again = replica.replica(synchronous=True)
        third, approved = _approve_one(node)
        with psycopg.connect(again.conninfo, autocommit=True) as standby:
            found = standby.execute("SELECT approved_version FROM rules WHERE id = %s", (third,))
            assert found.fetchone() == (approved,)
    finally:
        node.close()
