"""HTTP plumbing shared by the phone and admin listeners: limits enforced as bytes arrive."""

from appliance.web.guard import GuardedChannel, GuardedRequest, GuardedSite, Limits, Rejection
from appliance.web.sendfile import SocketWriter, sendfile_transport, transport_pending

__all__ = [
    "GuardedChannel",
    "GuardedRequest",
    "GuardedSite",
    "Limits",
    "Rejection",
    "SocketWriter",
    "sendfile_transport",
    "transport_pending",
]
