"""HTTP plumbing: limits enforced as bytes arrive. The admin listener's twisted.web guard
(`guard.py`), the phone listeners' lean server (`lean.py`, `connection.py`, `request.py`,
`responses.py`)."""

from appliance.web.guard import GuardedChannel, GuardedRequest, GuardedSite, Limits, Rejection
from appliance.web.lean import LeanChannel, LeanFactory
from appliance.web.request import LeanRequest, Routes, text_answer
from appliance.web.responses import Dates, Rendered, render
from appliance.web.sendfile import SocketWriter, TlsWriter, socket_writer

__all__ = [
    "Dates",
    "GuardedChannel",
    "GuardedRequest",
    "GuardedSite",
    "LeanChannel",
    "LeanFactory",
    "LeanRequest",
    "Limits",
    "Rejection",
    "Rendered",
    "Routes",
    "SocketWriter",
    "TlsWriter",
    "render",
    "socket_writer",
    "text_answer",
]
