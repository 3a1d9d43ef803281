"""Where log events go in tests: the syslog sender that keeps its messages in memory."""

from appliance.ops import MemorySender

__all__ = ["MemorySender"]
