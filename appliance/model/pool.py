"""The records of a pool (several nodes on one PostgreSQL store): its nodes, its lockouts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolNode:
    """A serve process using the store, as its last heartbeat left it (times: ISO, UTC)."""

    name: str
    host: str
    role: str  # "primary" (writes to the store it reads), or "branch" (reads a replica)
    version: str
    pid: int
    started_at: str
    last_seen_at: str


@dataclass(frozen=True)
class Lockout:
    """A lockout a node started, which every node holds until `until` (epoch seconds)."""

    scope: str  # admin.address, phone.user, phone.pair, phone.source
    key: str
    until: float
    node: str
