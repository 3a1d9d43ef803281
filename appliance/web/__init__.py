"""HTTP plumbing shared by the phone and admin listeners: limits enforced as bytes arrive."""

from appliance.web.guard import GuardedChannel, GuardedRequest, GuardedSite, Limits, Rejection

__all__ = [
    "GuardedChannel",
    "GuardedRequest",
    "GuardedSite",
    "Limits",
    "Rejection",
]
