"""A PostgreSQL primary and its hot standby, as the harness makes them (pg_basebackup -R,
streaming through a replication slot): what pool mode's branch sites will stand on.

A row committed on the primary is read on the replica; the replica refuses writes; after
the primary dies (SIGKILL to all its processes), promoting the replica makes it writable
with the row still there.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from appliance.testing import Postgres

WAIT_SECONDS = 30.0  # generous: streaming delivers within milliseconds on loopback
POLL = 0.05


def _read_until(conn: psycopg.Connection[Any], query: str, expected: object) -> None:
    """Poll `query` until it returns `expected`: at most WAIT_SECONDS and 1000 tries."""
    deadline = time.monotonic() + WAIT_SECONDS
    rows: object = None
    for _ in range(1000):
        rows = conn.execute(query).fetchall()
        if rows == expected or time.monotonic() > deadline:
            break
        time.sleep(POLL)
    assert rows == expected


def test_the_replica_streams_refuses_writes_and_takes_over_when_promoted(
    postgres: Postgres,
) -> None:
    with psycopg.connect(postgres.conninfo, autocommit=True) as primary:
        primary.execute("CREATE TABLE rules (id BIGINT PRIMARY KEY, version TEXT NOT NULL)")
    replica = postgres.replica()
    with psycopg.connect(replica.conninfo, autocommit=True) as standby:
        assert standby.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with psycopg.connect(postgres.conninfo, autocommit=True) as primary:
            primary.execute("INSERT INTO rules VALUES (1, '4.0.7577.4455')")
            slots = primary.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_type = 'physical'"
            ).fetchall()
            assert slots == [(True,)]
        _read_until(standby, "SELECT id, version FROM rules", [(1, "4.0.7577.4455")])
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            standby.execute("INSERT INTO rules VALUES (2, '4.0.7577.4463')")

    postgres.kill()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.conninfo, connect_timeout=5).close()
    replica.promote()
    with psycopg.connect(replica.conninfo, autocommit=True) as promoted:
        assert promoted.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        promoted.execute("INSERT INTO rules VALUES (2, '4.0.7577.4463')")
        assert promoted.execute("SELECT id FROM rules ORDER BY id").fetchall() == [(1,), (2,)]
