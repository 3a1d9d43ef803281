"""The pool as the Control Panel shows it: the store's backend, the serve processes that
use it, and this node's heartbeat.

On PostgreSQL each serve process writes its row of `pool_nodes` every HEARTBEAT_SECONDS
(in a thread): its name (the host name and the admin listener's port, so that two nodes
on one machine differ), host, role (primary, or branch for a node reading a local
replica), version, process id, start and last heartbeat. The Pool page (`/pool`) and
`GET /api/pool` list them; a node not heard from for STALE_SECONDS is shown as silent,
and one silent for a day is forgotten. A branch node adds its own pool state (whether the
primary answers, what waits in its spool). On SQLite the appliance is alone: the page
says so and nothing is written.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from html import escape
from typing import Any

from twisted.application import internet
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from appliance import __version__
from appliance.admin.accounts import iso
from appliance.admin.call import Call
from appliance.admin.web import Reply
from appliance.config import Config
from appliance.model import PoolNode
from appliance.store import Store, node_name

log = Logger(namespace="ucupdates.admin")

HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 3 * HEARTBEAT_SECONDS  # no heartbeat for this long: the node is silent
FORGET_SECONDS = 86_400.0  # and after a day it is forgotten


def node_of(config: Config) -> str:
    """This serve process's name in `pool_nodes`: host name and admin port."""
    return f"{node_name()}:{config.listeners.admin.port}"


class Heartbeat:
    """This node's `pool_nodes` row, written by `beat` (blocking: off the reactor)."""

    def __init__(
        self, config: Config, store: Store, clock: Callable[[], datetime], name: str | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.name = name or node_of(config)
        self.role = "branch" if config.store.branch else "primary"
        self.started_at = iso(clock())

    def beat(self) -> None:
        now = self.clock()
        node = PoolNode(
            name=self.name,
            host=socket.gethostname()[:255],
            role=self.role,
            version=__version__,
            pid=os.getpid(),
            started_at=self.started_at,
            last_seen_at=iso(now),
        )
        self.store.beat_pool_node(node)
        self.store.forget_pool_nodes(iso(now - timedelta(seconds=FORGET_SECONDS)))


def heartbeat_service(
    config: Config,
    store: Store,
    clock: Callable[[], datetime],
    reactor: Any,
    name: str | None = None,
) -> internet.TimerService | None:
    """The timer that writes this node's heartbeat (PostgreSQL; None on SQLite) under
    `name` (default: `node_of(config)`). A failed write is logged and the timer goes on
    (a branch node's primary may be away)."""
    if store.backend != "postgresql":
        return None
    heartbeat = Heartbeat(config, store, clock, name)
    failing = [False]  # logged when writes start failing, and when they work again

    def written(_: None) -> None:
        if failing[0]:
            failing[0] = False
            log.info("pool heartbeat written again", event="pool.heartbeat.back")

    def failed(failure: Any) -> None:
        if not failing[0]:
            failing[0] = True
            log.warn(
                "pool heartbeat not written: {error}",
                error=failure.getErrorMessage().split("\n")[0],
                event="pool.heartbeat.failed",
            )

    def tick() -> defer.Deferred[None]:
        beat = deferToThreadPool(reactor, reactor.getThreadPool(), heartbeat.beat)
        return beat.addCallbacks(written, failed)

    service = internet.TimerService(HEARTBEAT_SECONDS, tick)
    service.clock = reactor
    return service


class PoolApi:
    """`GET /api/pool` and the Pool page's body."""

    def __init__(self, config: Config, store: Store, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.store = store
        self.clock = clock

    def view(self) -> dict[str, Any]:
        """The backend, the nodes (this one first, then the live ones, by name) and a
        branch node's state."""
        now = self.clock()
        nodes = []
        pooled = self.store.backend == "postgresql"
        for node in self.store.pool_nodes() if pooled else []:
            seen = datetime.fromisoformat(node.last_seen_at.replace("Z", "+00:00"))
            ago = max(0, int((now - seen).total_seconds()))
            nodes.append(
                {
                    "name": node.name,
                    "host": node.host,
                    "role": node.role,
                    "version": node.version,
                    "pid": node.pid,
                    "started_at": node.started_at,
                    "last_seen_at": node.last_seen_at,
                    "seen_seconds_ago": ago,
                    "live": ago <= STALE_SECONDS,
                }
            )
        this = node_of(self.config)
        nodes.sort(key=lambda n: (n["name"] != this, not n["live"], n["name"]))
        return {
            "backend": self.store.backend,
            "node": this,
            "nodes": nodes,
            "branch": self._branch(),
        }

    def _branch(self) -> dict[str, Any] | None:
        state_of = getattr(self.store, "pool_state", None)
        state = state_of() if callable(state_of) else None
        if state is None:
            return None
        since = state.unreachable_since
        return {
            "primary_reachable": state.primary_reachable,
            "unreachable_since": iso(since) if since is not None else None,
            "buffered": state.buffered,
            "spool_full": state.spool_full,
            "replica_lag": state.replica_lag,
            "summary": state.summary(),
        }

    def banner(self) -> str:
        """On every page of a branch node whose primary does not answer: its pool line."""
        if self.store.backend != "postgresql":
            return ""
        branch = self._branch()
        if branch is None or branch["primary_reachable"]:
            return ""
        return (
            f'<p id="pool-banner" class="note warn" role="status">{escape(branch["summary"])}'
            ' (<a href="/pool">Pool</a>)</p>'
        )

    def pool(self, call: Call) -> Reply:
        return Reply(body=self.view())

    def page_body(self, login: Any) -> str:
        view = self.view()
        if view["backend"] != "postgresql":
            return (
                '<p id="pool-backend">Backend: <strong>SQLite</strong> (the data folder of '
                "this appliance). This appliance is alone: a pool shares one PostgreSQL "
                "store (<code>[store] backend</code>).</p>"
            )
        parts = [
            '<p id="pool-backend">Backend: <strong>PostgreSQL</strong>. This node is '
            f"<strong>{escape(view['node'])}</strong>.</p>"
        ]
        branch = view["branch"]
        if branch is not None:
            warn = "" if branch["primary_reachable"] else " warn"
            parts.append(f'<p id="pool-branch" class="note{warn}">{escape(branch["summary"])}</p>')
        rows = "".join(_node_row(n, view["node"]) for n in view["nodes"])
        if not rows:
            rows = '<tr><td colspan="6">No heartbeat yet.</td></tr>'
        parts.append(
            '<div class="table-wrap"><table id="pool-nodes" class="data">'
            "<caption>The serve processes on this store: this one, then the live ones</caption>"
            "<thead><tr>"
            '<th scope="col">Node</th><th scope="col">Host</th><th scope="col">Role</th>'
            '<th scope="col">Version</th><th scope="col">Last seen (UTC)</th>'
            '<th scope="col">State</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>"
        )
        return "".join(parts)


def _node_row(node: dict[str, Any], this: str) -> str:
    name = escape(node["name"]) + (" (this node)" if node["name"] == this else "")
    state = "live" if node["live"] else f"silent for {node['seen_seconds_ago']} s"
    return (
        f'<tr data-node="{escape(node["name"])}"><th scope="row">{name}</th>'
        f"<td>{escape(node['host'])}</td><td>{escape(node['role'])}</td>"
        f"<td>{escape(node['version'])}</td><td>{escape(node['last_seen_at'])}</td>"
        f"<td>{escape(state)}</td></tr>"
    )
