"""What a branch node says of its pool, and the error of a write its primary cannot take.

Kept apart from `store.split` (which needs psycopg) so that the store's face can name them
without loading the PostgreSQL driver in every command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from appliance.store.errors import StoreError


class PrimaryUnavailable(StoreError):
    """A branch node cannot write: the pool's primary does not answer. str() is the line
    to show; the branch goes on serving phones from its replica."""


@dataclass(frozen=True)
class PoolState:
    """A branch node's pool (docs/pool.md), for `check`, `/health` and the Control Panel."""

    primary_reachable: bool
    unreachable_since: datetime | None  # UTC; None while the primary answers
    buffered: int  # records waiting in the spool for the primary
    lost: int  # records refused since the spool was made, because it was full
    spool_full: bool  # the latest record offered to the spool was refused
    replica_lag: float | None  # seconds the replica's data is behind; None: not known
    reason: str = ""  # why the primary is unreachable (psycopg's first line, no secret)
    refused: int = 0  # records the primary refused, set aside in the spool

    def summary(self) -> str:
        """One line: what the Control Panel's banner and `check` say."""
        if self.primary_reachable:
            head = "branch node: the primary answers"
        else:
            since = (
                f" since {self.unreachable_since:%Y-%m-%d %H:%M:%S} UTC"
                if self.unreachable_since
                else ""
            )
            why = f" ({self.reason})" if self.reason else ""
            head = (
                f"branch node: the primary is unreachable{since}{why}; phones are served"
                " from the replica, admin changes need the primary"
            )
        lag = "" if self.replica_lag is None else f"; replica {self.replica_lag:.0f} s behind"
        spool = f"; {self.buffered} records buffered"
        if self.spool_full:
            spool += " (the spool is full: new records are lost)"
        if self.lost:
            spool += f"; {self.lost} lost"
        if self.refused:
            spool += f"; {self.refused} refused by the primary (set aside in the spool)"
        return head + lag + spool
