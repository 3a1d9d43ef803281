"""What the nodes of a pool share besides the catalogue (schema 009): the lockouts one
node started that all hold, and each serve process's heartbeat row.

On SQLite (one node) the tables exist and nothing writes them.
"""

from __future__ import annotations

import socket

from appliance.model import Lockout, PoolNode
from appliance.store.connection import Connection

_NODE_COLUMNS = "name, host, role, version, pid, started_at, last_seen_at"
KEEP_NODES_SECONDS = 86_400  # a node not seen for a day is forgotten


class PoolTables(Connection):
    """Shared lockouts and the pool's nodes."""

    def put_lockout(self, scope: str, key: str, until: float, node: str) -> None:
        """A lockout every node holds until `until` (a later end is kept); ended ones go."""
        self._conn.execute("DELETE FROM lockouts WHERE locked_until < ?", (until - 86_400,))
        self._conn.execute(
            "INSERT INTO lockouts (scope, key, locked_until, node) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (scope, key) DO UPDATE SET locked_until = excluded.locked_until,"
            " node = excluded.node WHERE lockouts.locked_until < excluded.locked_until",
            (scope, key, float(until), node),
        )

    def lockout_until(self, scope: str, key: str, now: float) -> float | None:
        """When the lockout of `key` ends, if one holds at `now`."""
        row = self._conn.execute(
            "SELECT locked_until FROM lockouts WHERE scope = ? AND key = ? AND locked_until > ?",
            (scope, key, float(now)),
        ).fetchone()
        return float(row[0]) if row else None

    def lockouts(self, scope_prefix: str, now: float) -> list[Lockout]:
        """The lockouts that hold at `now` whose scope starts with `scope_prefix`."""
        rows = self._conn.execute(
            "SELECT scope, key, locked_until, node FROM lockouts"
            " WHERE locked_until > ? AND substr(scope, 1, ?) = ? ORDER BY locked_until",
            (float(now), len(scope_prefix), scope_prefix),
        )
        return [Lockout(r[0], r[1], float(r[2]), r[3]) for r in rows]

    def clear_lockouts(self, scope: str | None = None, key: str | None = None) -> int:
        """End lockouts: of one key, of a scope, or all."""
        if scope is None:
            return int(self._conn.execute("DELETE FROM lockouts").rowcount)
        if key is None:
            return int(
                self._conn.execute("DELETE FROM lockouts WHERE scope = ?", (scope,)).rowcount
            )
        cur = self._conn.execute("DELETE FROM lockouts WHERE scope = ? AND key = ?", (scope, key))
        return int(cur.rowcount)

    def beat_pool_node(self, node: PoolNode) -> None:
        """A serve process's heartbeat: its row written (or refreshed); old rows go."""
        self._conn.execute(
            f"INSERT INTO pool_nodes ({_NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET host = excluded.host, role = excluded.role,"
            " version = excluded.version, pid = excluded.pid,"
            " started_at = excluded.started_at, last_seen_at = excluded.last_seen_at",
            (
                node.name,
                node.host,
                node.role,
                node.version,
                node.pid,
                node.started_at,
                node.last_seen_at,
            ),
        )

    def forget_pool_nodes(self, seen_before: str) -> int:
        """Delete the nodes last seen before `seen_before` (ISO, UTC)."""
        cur = self._conn.execute("DELETE FROM pool_nodes WHERE last_seen_at < ?", (seen_before,))
        return int(cur.rowcount)

    def pool_nodes(self) -> list[PoolNode]:
        rows = self._conn.execute(f"SELECT {_NODE_COLUMNS} FROM pool_nodes ORDER BY name")
        return [PoolNode(r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6]) for r in rows]


def node_name() -> str:
    """This node's name in the pool (its host name): who started a lockout, whose
    heartbeat a `pool_nodes` row is."""
    return socket.gethostname()[:255] or "localhost"
