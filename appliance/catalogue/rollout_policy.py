"""The rollout policy's records, as the catalogue's rollout modules name them.

The records are plain data and live in `appliance.model` (model/rollouts.py explains
them: upgrade steps, staged approvals, network windows, pins, buckets), so that the store
can keep and return them; the decision that reads them is rollout.py.
"""

from appliance.model import (
    BUCKETS,
    DEFAULT_SALT,
    NO_IDENTIFIER_BUCKET,
    NetworkPolicy,
    Pin,
    PinAction,
    RolloutError,
    RolloutPolicy,
    StagedApproval,
    UpgradeStep,
    bucket,
)

__all__ = [
    "BUCKETS",
    "DEFAULT_SALT",
    "NO_IDENTIFIER_BUCKET",
    "NetworkPolicy",
    "Pin",
    "PinAction",
    "RolloutError",
    "RolloutPolicy",
    "StagedApproval",
    "UpgradeStep",
    "bucket",
]
