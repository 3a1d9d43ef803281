"""The pool check of a branch node (docs/pool.md), for `ucupdates check` and `/health`.

A branch node reads its local replica and writes to the pool's primary. The check passes
with a warning while the primary is unreachable, records wait in the spool for it, or the
replica lags more than LAG_WARNING behind a primary that answers, and fails when the spool
is full (new records are being lost). Its figures: the records
buffered, the replica's lag and how long the primary has been unreachable. Other nodes
(SQLite, or PostgreSQL without a primary of their own) have no pool check.
"""

from __future__ import annotations

from datetime import datetime

from appliance.ops.perfdata import Perf
from appliance.ops.results import CheckResult, guarded
from appliance.store import Store

# A replica further behind than this while its primary answers is not streaming (or not
# keeping up): its phones are offered what the pool approved that long ago.
LAG_WARNING = 300.0


def check_pool(store: Store, now: datetime) -> CheckResult | None:
    """The pool check, or None when the store is not a branch node's."""
    state = store.pool_state()
    if state is None:
        return None
    away = (
        max(0.0, (now - state.unreachable_since).total_seconds())
        if state.unreachable_since is not None
        else 0.0
    )
    figures = (
        Perf("pool_buffered", state.buffered, min=0),
        Perf("replica_lag", state.replica_lag, "s", f"~:{LAG_WARNING:.0f}", min=0),
        Perf("primary_unreachable", away, "s", min=0),
    )
    detail = state.summary()
    lagging = state.primary_reachable and (state.replica_lag or 0.0) > LAG_WARNING
    if lagging:
        detail += f" (over {LAG_WARNING:.0f} s: is the replica streaming from the primary?)"
    warning = lagging or not state.primary_reachable
    warning = warning or bool(state.buffered or state.lost or state.refused)
    return CheckResult("pool", not state.spool_full, detail, warning, figures)


def pool_checks(store: Store | None, now: datetime) -> list[CheckResult]:
    """The pool check in a list (empty when there is none); a store that cannot say
    (the replica away) fails it."""
    if store is None:
        return []
    result = guarded("pool", lambda: check_pool(store, now) or _NONE)
    return [] if result is _NONE else [result]


_NONE = CheckResult("pool", True, "not a branch node")
