"""Microsoft Cabinet files: a streaming reader with limits first, a writer, the cabextract path."""

from appliance.cab.reader import CabError, Cabinet, CabLimits, ExtractedMember, open_package
from appliance.cab.scan import Scan
from appliance.cab.writer import CabEntry, write_cab

__all__ = [
    "CabEntry",
    "CabError",
    "CabLimits",
    "Cabinet",
    "ExtractedMember",
    "Scan",
    "open_package",
    "write_cab",
]
